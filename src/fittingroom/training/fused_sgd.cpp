// Steps of plain SGD on a plain multilayer perceptron, as FusedMLPStep._plain_sgd (fused.py) takes them
// one at a time from Python: the same mathematics, without the Python interpreter between the operations
// and into buffers allocated once per call.
//
// The threads of PyTorch's pool share the first layer, which holds most of the arithmetic (784 x 300 of the
// tutorial's 266,610 weights): each owns a contiguous block of its units, computes their outputs and updates
// their weights, with no hand-off between its update and its next product. Thread 0 runs the other layers
// (ATen's operations, in the Python loop's order) between two barriers.
//
// The first layer's products: on x86-64 CPUs with AVX-512 (checked when the loop runs), kernels written for
// this shape (`own_kernels`): a batch of 32 rows is too few for a general matrix product to pay for
// repacking 940 KB of weights twice a step, so the weights stay packed for the whole call, in panels of 16
// units that both the forward product and the update stream through. Elsewhere, or with own_kernels false,
// ATen's products, which on one thread are the Python loop's operations bit for bit. Either way the sums are
// the same mathematics, rounded in another order (tests/test_native.py compares them).
//
// x: (n, features) inputs; order: (n,) the row of x for each row of the epoch (the epoch's shuffle);
// target: (n, classes) targets and logits: (n, classes), written, in the epoch's order; weights[i]:
// (out_i, in_i) and biases[i]: (out_i), updated in place; lrs: one learning rate per step; each step
// takes `batch` rows of the epoch from `first_row` on (the last may be shorter).
#include <torch/extension.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#define FITTINGROOM_KERNELS 1
#include <immintrin.h>
#endif

#include <algorithm>
#include <exception>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------------------
// The first layer's kernels (AVX-512). Panels: panels[v] is a (K, 16) block holding units 16v .. 16v + 15 of
// the weights, transposed (zero past the last unit), so that a vector of 16 units' weights for one input
// feature is one aligned load.
constexpr int64_t kLanes = 16;

#ifdef FITTINGROOM_KERNELS
#define AVX512 __attribute__((target("avx512f,fma")))

AVX512 inline __mmask16 lanes_left(int64_t left) {
  return left >= kLanes ? static_cast<__mmask16>(0xFFFF)
                        : static_cast<__mmask16>(left <= 0 ? 0 : (1u << left) - 1);
}

// out[r, u] = relu(bias[u] + sum_k xt[k, r] * w[u, k]) for ROWS rows from r0 and the units of vectors v0 .. v0 + NV.
template <int ROWS, int NV>
AVX512 void forward_tile(const float* xt, int64_t ldt, int64_t r0, int64_t K, const float* panels, const float* bias,
                         float* out, int64_t ldo, int64_t v0, int64_t units) {
  __m512 acc[ROWS][NV];
  __mmask16 mask[NV];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) {
    mask[v] = lanes_left(units - (v0 + v) * kLanes);
    const __m512 b = _mm512_maskz_loadu_ps(mask[v], bias + (v0 + v) * kLanes);
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) acc[r][v] = b;
  }
  const float* panel = panels + v0 * K * kLanes;
  for (int64_t k = 0; k < K; ++k) {
    __m512 w[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) w[v] = _mm512_load_ps(panel + (v * K + k) * kLanes);
    const float* xk = xt + k * ldt + r0;
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) {
      const __m512 xs = _mm512_set1_ps(xk[r]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(xs, w[v], acc[r][v]);
    }
  }
  const __m512 zero = _mm512_setzero_ps();  // max(0, NaN) is NaN, as in torch.relu: a diverged run stays NaN
#pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v)
      _mm512_mask_storeu_ps(out + (r0 + r) * ldo + (v0 + v) * kLanes, mask[v], _mm512_max_ps(zero, acc[r][v]));
}

// w[u, k] += sum_r xt[k, r] * gs[r, u] for KS features from k0 and the units of vectors v0 .. v0 + NV, where gs
// holds the gradient at the layer's output already scaled by -lr / rows, in rows of whole vectors.
template <int KS, int NV>
AVX512 void update_tile(const float* xt, int64_t ldt, int64_t rows, int64_t K, const float* gs, int64_t ldg,
                        float* panels, int64_t k0, int64_t v0) {
  __m512 acc[KS][NV];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v)
#pragma GCC unroll 16
    for (int kk = 0; kk < KS; ++kk) acc[kk][v] = _mm512_load_ps(panels + ((v0 + v) * K + k0 + kk) * kLanes);
  for (int64_t r = 0; r < rows; ++r) {
    __m512 g[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) g[v] = _mm512_load_ps(gs + r * ldg + (v0 + v) * kLanes);
#pragma GCC unroll 16
    for (int kk = 0; kk < KS; ++kk) {
      const __m512 xs = _mm512_set1_ps(xt[(k0 + kk) * ldt + r]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[kk][v] = _mm512_fmadd_ps(xs, g[v], acc[kk][v]);
    }
  }
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v)
#pragma GCC unroll 16
    for (int kk = 0; kk < KS; ++kk) _mm512_store_ps(panels + ((v0 + v) * K + k0 + kk) * kLanes, acc[kk][v]);
}

// The units of vectors [v0, v1) in tiles of three vectors (24 accumulators, 8 rows or features each).
template <int ROWS>
AVX512 void forward_rows(const float* xt, int64_t ldt, int64_t r0, int64_t K, const float* panels,
                         const float* bias, float* out, int64_t ldo, int64_t v0, int64_t v1, int64_t units) {
  int64_t v = v0;
  for (; v + 3 <= v1; v += 3) forward_tile<ROWS, 3>(xt, ldt, r0, K, panels, bias, out, ldo, v, units);
  if (v1 - v == 2) forward_tile<ROWS, 2>(xt, ldt, r0, K, panels, bias, out, ldo, v, units);
  if (v1 - v == 1) forward_tile<ROWS, 1>(xt, ldt, r0, K, panels, bias, out, ldo, v, units);
}

template <int KS>
AVX512 void update_features(const float* xt, int64_t ldt, int64_t rows, int64_t K, const float* gs, int64_t ldg,
                            float* panels, int64_t k0, int64_t v0, int64_t v1) {
  int64_t v = v0;
  for (; v + 3 <= v1; v += 3) update_tile<KS, 3>(xt, ldt, rows, K, gs, ldg, panels, k0, v);
  if (v1 - v == 2) update_tile<KS, 2>(xt, ldt, rows, K, gs, ldg, panels, k0, v);
  if (v1 - v == 1) update_tile<KS, 1>(xt, ldt, rows, K, gs, ldg, panels, k0, v);
}

AVX512 void first_layer_forward(const float* xt, int64_t rows, int64_t K, const float* panels, const float* bias,
                                float* out, int64_t ldo, int64_t v0, int64_t v1, int64_t units) {
  int64_t r = 0;
  for (; r + 8 <= rows; r += 8) forward_rows<8>(xt, rows, r, K, panels, bias, out, ldo, v0, v1, units);
  for (; r < rows; ++r) forward_rows<1>(xt, rows, r, K, panels, bias, out, ldo, v0, v1, units);
}

// The step of the units of vectors [v0, v1): g (rows, units) is the gradient at the layer's output; gs (rows,
// vectors * 16) receives it scaled by alpha = -lr / rows; the biases take alpha * sum_r g[r], the panels
// alpha * g^T x.
AVX512 void first_layer_update(const float* xt, int64_t rows, int64_t K, const float* g, int64_t ldg, float alpha,
                               float* gs, int64_t lds, float* bias, float* panels, int64_t v0, int64_t v1,
                               int64_t units) {
  const __m512 scale = _mm512_set1_ps(alpha);
  for (int64_t v = v0; v < v1; ++v) {
    const __mmask16 mask = lanes_left(units - v * kLanes);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t r = 0; r < rows; ++r) {
      const __m512 scaled = _mm512_mul_ps(scale, _mm512_maskz_loadu_ps(mask, g + r * ldg + v * kLanes));
      _mm512_store_ps(gs + r * lds + v * kLanes, scaled);
      sum = _mm512_add_ps(sum, scaled);
    }
    float* b = bias + v * kLanes;
    _mm512_mask_storeu_ps(b, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, b), sum));
  }
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) update_features<8>(xt, rows, rows, K, gs, lds, panels, k, v0, v1);
  for (; k < K; ++k) update_features<1>(xt, rows, rows, K, gs, lds, panels, k, v0, v1);
}

bool kernels_run_here() { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"); }
#else
bool kernels_run_here() { return false; }
#endif

// Rows order[0 .. rows) of x (n, K) -> xt (K, rows): the kernels read a feature's values for 8 rows at once.
void transpose_into(const float* x, const int64_t* order, int64_t rows, int64_t K, float* xt) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + order[r] * K;
    for (int64_t k = 0; k < K; ++k) xt[k * rows + r] = row[k];
  }
}

// Runs `work` unless an earlier piece of work on any thread failed; keeps the first failure. Every thread
// still reaches every barrier, so a failure never leaves the others waiting.
class Guard {
 public:
  template <typename Work>
  void operator()(Work&& work) {
    if (failed_) return;
    try {
      work();
    } catch (...) {
#pragma omp critical(fittingroom_sgd_failure)
      if (!failed_) {
        failure_ = std::current_exception();
        failed_ = true;
      }
    }
  }
  void rethrow() const {
    if (failure_) std::rethrow_exception(failure_);
  }

 private:
  volatile bool failed_ = false;
  std::exception_ptr failure_;
};

}  // namespace

void sgd_steps(const torch::Tensor& x, const torch::Tensor& order, const torch::Tensor& target, const torch::Tensor& logits,
               std::vector<torch::Tensor> weights, std::vector<torch::Tensor> biases,
               const std::vector<double>& lrs, int64_t batch, int64_t first_row, bool own_kernels) {
  torch::NoGradGuard no_grad;
  const int64_t n = order.size(0);
  const int64_t layers = static_cast<int64_t>(weights.size());
  TORCH_CHECK(layers > 0 && static_cast<int64_t>(biases.size()) == layers, "one bias per weight");
  TORCH_CHECK(batch > 0 && first_row >= 0, "batch must be positive and first_row not negative");
  TORCH_CHECK(first_row + static_cast<int64_t>(lrs.size() - 1) * batch < n || lrs.empty(),
              "the steps go past the last row");
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && weights[0].is_contiguous() && biases[0].is_contiguous(),
              "x (n, features) and the first layer must be contiguous");
  TORCH_CHECK(order.dim() == 1 && order.scalar_type() == torch::kLong && order.is_contiguous() && target.size(0) == n &&
              logits.size(0) == n, "order must be (n,) int64, target and logits (n, classes)");
  if (n > 0) {
    TORCH_CHECK(order.min().item<int64_t>() >= 0 && order.max().item<int64_t>() < x.size(0), "order is out of x's rows");
  }
  const int64_t last = layers - 1;
  const int64_t features = x.size(1), units = weights[0].size(0);
  // outputs[i]: layer i's ReLU output; grads[i]: the gradient at layer i's output; bias_grads[i]: its sum.
  std::vector<torch::Tensor> outputs(layers), grads(layers), bias_grads(layers);
  for (int64_t i = 0; i < layers; ++i) {
    outputs[i] = torch::empty({batch, weights[i].size(0)}, x.options());
    grads[i] = torch::empty({batch, weights[i].size(0)}, x.options());
    bias_grads[i] = torch::empty({weights[i].size(0)}, x.options());
  }
  // The first layer is shared out in blocks of units (of whole panels for the kernels); with one layer there
  // is nothing to share: thread 0 does it all, with ATen's products.
  const bool kernels = own_kernels && last > 0 && x.scalar_type() == torch::kFloat &&
                       weights[0].scalar_type() == torch::kFloat && biases[0].scalar_type() == torch::kFloat &&
                       kernels_run_here();
  const int64_t vectors = (units + kLanes - 1) / kLanes;
  const int64_t blocks = kernels ? vectors : units;
  const int64_t threads = last > 0 ? std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), blocks)) : 1;
  torch::Tensor panels;  // (vectors, features, 16): the first layer's weights while the steps run
  if (kernels) {
    torch::Tensor padded = torch::zeros({vectors * kLanes, features}, weights[0].options());
    padded.narrow(0, 0, units).copy_(weights[0]);
    panels = padded.view({vectors, kLanes, features}).transpose(1, 2).contiguous();
  }
  // For the kernels: each step's rows transposed (two buffers, used in turn) and the scaled output gradient.
  const std::vector<torch::Tensor> transposed = kernels
      ? std::vector<torch::Tensor>{torch::empty({features * batch}, x.options()), torch::empty({features * batch}, x.options())}
      : std::vector<torch::Tensor>{};
  const torch::Tensor scaled_grads = kernels ? torch::empty({batch, vectors * kLanes}, x.options()) : torch::Tensor();
  Guard guard;
#pragma omp parallel num_threads(threads)
  {
    torch::NoGradGuard no_grad_here;  // per thread
#ifdef _OPENMP
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    const int64_t t = 0, nt = 1;
#endif
    // This thread's blocks of the first layer, and their units [lo, hi).
    const int64_t b0 = last > 0 ? blocks * t / nt : 0, b1 = last > 0 ? blocks * (t + 1) / nt : blocks;
    const int64_t lo = kernels ? std::min(b0 * kLanes, units) : b0, hi = kernels ? std::min(b1 * kLanes, units) : b1;
    // The kernels read each step's rows transposed (features, rows), made by the last thread for the next step
    // while thread 0 runs the other layers (by thread 0 itself when it is alone); two buffers, used in turn.
    const bool transposer = kernels && t == nt - 1 && nt > 1;
    std::vector<torch::Tensor> inputs(layers);
    const torch::Tensor rows_of_x = kernels ? torch::Tensor() : torch::empty({batch, features}, x.options());
    const int64_t* ordered = order.data_ptr<int64_t>();
    int64_t start = first_row, step = 0;
    for (const double lr : lrs) {
      const int64_t stop = std::min(start + batch, n);
      const int64_t rows = stop - start;
      const double alpha = -lr / static_cast<double>(rows);
      if (!kernels) {  // this step's rows of x, for ATen's products
        inputs[0] = rows_of_x.narrow(0, 0, rows);
        at::index_select_out(inputs[0], x, 0, order.slice(0, start, stop));
      }
      float* xt = kernels ? transposed[step % 2].data_ptr<float>() : nullptr;
      if (kernels && (nt == 1 || step == 0)) {
        if (t == 0) transpose_into(x.data_ptr<float>(), ordered + start, rows, features, xt);
        if (nt > 1) {
#pragma omp barrier
        }
      }
      if (last > 0) {
        guard([&] {  // this thread's units of the first layer
          torch::Tensor h = outputs[0].narrow(0, 0, rows);
          inputs[1] = h;
#ifdef FITTINGROOM_KERNELS
          if (kernels) {
            first_layer_forward(xt, rows, features, panels.data_ptr<float>(), biases[0].data_ptr<float>(),
                                h.data_ptr<float>(), units, b0, b1, units);
            return;
          }
#endif
          torch::Tensor mine = h.slice(1, lo, hi);
          at::addmm_out(mine, biases[0].slice(0, lo, hi), inputs[0], weights[0].slice(0, lo, hi).t());
          mine.relu_();
        });
#pragma omp barrier
      }
      if (transposer && step + 1 < static_cast<int64_t>(lrs.size())) {  // the next step's rows, meanwhile
        const int64_t next_rows = std::min(stop + batch, n) - stop;
        transpose_into(x.data_ptr<float>(), ordered + stop, next_rows, features,
                       transposed[(step + 1) % 2].data_ptr<float>());
      }
      if (t == 0) {
        guard([&] {  // the other layers, forward and backward; the first layer's output gradient
          for (int64_t i = 1; i < last; ++i) {
            torch::Tensor h = outputs[i].narrow(0, 0, rows);
            at::addmm_out(h, biases[i], inputs[i], weights[i].t());
            h.relu_();
            inputs[i + 1] = h;
          }
          torch::Tensor out = logits.slice(0, start, stop);
          at::addmm_out(out, biases[last], inputs[last], weights[last].t());
          torch::Tensor g = grads[last].narrow(0, 0, rows);
          at::_softmax_out(g, out, 1, false);
          g.sub_(target.slice(0, start, stop));  // rows * dLoss/dlogits (mean cross-entropy)
          for (int64_t i = last; i >= 1; --i) {
            torch::Tensor below = grads[i - 1].narrow(0, 0, rows);
            at::mm_out(below, g, weights[i]);  // through the previous layer's ReLU, before this layer's weights change
            at::threshold_backward_out(below, below, inputs[i], 0);
            weights[i].addmm_(g.t(), inputs[i], 1.0, alpha);
            at::sum_out(bias_grads[i], g, {0});
            biases[i].add_(bias_grads[i], alpha);
            g = below;
          }
          if (last == 0) {
            weights[0].addmm_(g.t(), inputs[0], 1.0, alpha);
            at::sum_out(bias_grads[0], g, {0});
            biases[0].add_(bias_grads[0], alpha);
          }
        });
      }
      if (last > 0) {
#pragma omp barrier
        guard([&] {  // this thread's units of the first layer take their step
          torch::Tensor g = grads[0].narrow(0, 0, rows);
#ifdef FITTINGROOM_KERNELS
          if (kernels) {
            first_layer_update(xt, rows, features, g.data_ptr<float>(), units, static_cast<float>(alpha),
                               scaled_grads.data_ptr<float>(), vectors * kLanes, biases[0].data_ptr<float>(),
                               panels.data_ptr<float>(), b0, b1, units);
            return;
          }
#endif
          weights[0].slice(0, lo, hi).addmm_(g.slice(1, lo, hi).t(), inputs[0], 1.0, alpha);
          torch::Tensor bias_grad = bias_grads[0].slice(0, lo, hi);
          at::sum_out(bias_grad, g.slice(1, lo, hi), {0});
          biases[0].slice(0, lo, hi).add_(bias_grad, alpha);
        });
      }
      start = stop;
      ++step;
    }
  }
  if (kernels) {  // the weights back from their panels, as far as the steps got
    weights[0].copy_(panels.transpose(1, 2).reshape({vectors * kLanes, features}).narrow(0, 0, units));
  }
  guard.rethrow();
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("sgd_steps", &sgd_steps, "steps of plain SGD on a plain multilayer perceptron");
  m.def("kernels_run_here", &kernels_run_here, "whether the first layer's own kernels run on this CPU");
}
