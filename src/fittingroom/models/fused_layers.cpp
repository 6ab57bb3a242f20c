// Batch norm followed by ReLU, in training, optionally after 2x2 max pooling, on channels-last bfloat16 CPU maps:
// the sequence nn.MaxPool2d(2) -> nn.BatchNorm2d -> nn.ReLU of a convolutional network's training step (or the
// last two alone) in two passes over the map each way, with no intermediate map but the pooled one.
//
// Forward: pass 1 pools (keeping which of the four pixels each value came from, 0-3, PyTorch's choice: the first
// of equals in scan order, NaN wins) and sums each channel's moments in fixed blocks of rows, combined in order
// (the same result on any number of threads); pass 2 writes y = max(0, p * scale + shift). Backward: pass 1 sums
// g' = g where y > 0 and g' * (p - mean) per channel; pass 2 writes the input's gradient, scattered through the
// pooling's choices. Arithmetic in float32, as PyTorch computes a bfloat16 batch norm; the blocks' sums are
// combined in float64. A run that starts with the network's first 3x3 convolution (a few input channels, no
// gradient wanted for its input) computes that convolution inside pass 1, the four pixels of each window from the
// input (conv_pool_rows), and its weight's gradient from the chosen pixels' patches (conv_grad_rows), so that its
// full-size map is written neither way. fused_layers.py says when it runs; tests/test_fused_layers.py compares it
// with PyTorch.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// The row loops are compiled for several vector widths and the widest the CPU has is chosen when loaded.
#define ROWS_LOOP __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ROWS_LOOP
#endif

namespace {

using bf16 = uint16_t;  // bfloat16's bits

inline float to_float(bf16 b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint32_t rounded_bits(float v) {  // v rounded to bfloat16, nearest even, as c10::BFloat16: its float32 bits
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return v != v ? 0x7FC00000u : (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
}

inline bf16 to_bf16(float v) { return static_cast<bf16>(rounded_bits(v) >> 16); }

inline float bf16_round(float v) {  // to_float(to_bf16(v)), in 32-bit lanes
  const uint32_t u = rounded_bits(v);
  std::memcpy(&v, &u, sizeof v);
  return v;
}

constexpr int64_t kBlocks = 64;  // reductions: fixed blocks of rows, combined in order

inline float value(bf16 v) { return to_float(v); }
inline float value(float v) { return v; }

// The 2x2 window's maximum and which of its pixels (0-3, in scan order) it is: the first of equals, NaN wins.
// (bfloat16 values for the pooling of a map; float32 ones, 32-bit choices, where 16 run at a time.)
template <typename T, typename K>
inline void choose(T a, T b, T c, T d, T& best, K& k) {
  best = a;
  float bv = value(a);
  k = 0;
  float v = value(b);
  bool take = v > bv || v != v;
  best = take ? b : best;
  bv = take ? v : bv;
  k = take ? 1 : k;
  v = value(c);
  take = v > bv || v != v;
  best = take ? c : best;
  bv = take ? v : bv;
  k = take ? 2 : k;
  v = value(d);
  take = v > bv || v != v;
  best = take ? d : best;
  k = take ? 3 : k;
}

// Pooled rows [r0, r1): p and which from x (N, H, W, C).
ROWS_LOOP void pool_rows(const bf16* x, bf16* p, uint8_t* which, int64_t r0, int64_t r1, int64_t H, int64_t W,
                         int64_t C) {
  const int64_t Ho = H / 2, Wo = W / 2;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / (Ho * Wo), i = (r / Wo) % Ho, j = r % Wo;
    const bf16* __restrict a = x + ((n * H + 2 * i) * W + 2 * j) * C;
    const bf16* __restrict b = a + C;
    const bf16* __restrict c2 = a + W * C;
    const bf16* __restrict d = c2 + C;
    bf16* __restrict o = p + r * C;
    uint8_t* __restrict w = which + r * C;
    for (int64_t c = 0; c < C; ++c) choose(a[c], b[c], c2[c], d[c], o[c], w[c]);
  }
}

// The four input rows 2i - 1 .. 2i + 2 of image n that window row i of a 3x3 convolution's pooled output reads,
// into rows (4 rows of W + 2 pixels of Cin, float32), with the zero padding.
inline void load_window_rows(const bf16* x, float* rows, int64_t n, int64_t i, int64_t H, int64_t W, int64_t Cin) {
  const int64_t Wp = W + 2;
  for (int64_t dy = 0; dy < 4; ++dy) {
    const int64_t yy = 2 * i + dy - 1;
    float* __restrict row = rows + dy * Wp * Cin;
    std::fill(row, row + Wp * Cin, 0.f);
    if (yy < 0 || yy >= H) continue;
    const bf16* __restrict in = x + (n * H + yy) * W * Cin;
    for (int64_t q = 0; q < W * Cin; ++q) row[Cin + q] = to_float(in[q]);
  }
}

constexpr int64_t kLanes = 16;  // output channels summed at a time, in registers

inline int64_t padded_channels(int64_t C) { return (C + kLanes - 1) / kLanes * kLanes; }

// For each tap (c, dy, dx) of the 3x3 convolution, in the order of its weights (c * 9 + dy * 3 + dx), and the input
// values that tap meets at the four pixels of the window at column j of load_window_rows's rows:
// tap(index, v0, v1, v2, v3).
template <typename Tap>
inline void for_each_tap(const float* rows, int64_t j, int64_t Wp, int64_t Cin, const Tap& tap) {
  for (int64_t c = 0; c < Cin; ++c) {
    for (int64_t dy = 0; dy < 3; ++dy) {
      const float* top = rows + (dy * Wp + 2 * j) * Cin + c;  // pixel 0's tap (dy, 0)
      const float* bottom = top + Wp * Cin;                  // pixel 2's
      for (int64_t dx = 0; dx < 3; ++dx)
        tap(c * 9 + dy * 3 + dx, top[dx * Cin], top[(dx + 1) * Cin], bottom[dx * Cin], bottom[(dx + 1) * Cin]);
    }
  }
}

// Pooled rows [r0, r1) of the 3x3 convolution (stride 1, zero padding 1, no bias) of x (N, H, W, Cin) by wt
// (Cin * 9 rows of Cp >= C, a multiple of kLanes, zero beyond C; bfloat16 values as float32): each window's four
// pixels summed in float32 and rounded to bfloat16, as a bfloat16 convolution rounds its output, then pooled into p
// and which as pool_rows pools. The convolution's full-size map is never written. rows: load_window_rows's.
ROWS_LOOP void conv_pool_rows(const bf16* x, const float* wt, bf16* p, uint8_t* which, int64_t r0, int64_t r1,
                              int64_t H, int64_t W, int64_t Cin, int64_t C, int64_t Cp, float* rows) {
  const int64_t Ho = H / 2, Wo = W / 2, Wp = W + 2;
  int64_t loaded = -1;  // the window row (n * Ho + i) that rows holds
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / (Ho * Wo), i = (r / Wo) % Ho, j = r % Wo;
    if (r / Wo != loaded) load_window_rows(x, rows, n, i, H, W, Cin);
    loaded = r / Wo;
    bf16* __restrict o = p + r * C;
    uint8_t* __restrict wh = which + r * C;
    for (int64_t o0 = 0; o0 < C; o0 += kLanes) {
      float s0[kLanes] = {}, s1[kLanes] = {}, s2[kLanes] = {}, s3[kLanes] = {};  // the window's pixels 0-3
      for_each_tap(rows, j, Wp, Cin, [&](int64_t t, float v0, float v1, float v2, float v3) {
        const float* __restrict w = wt + (t * Cp + o0);
        for (int64_t l = 0; l < kLanes; ++l) {
          s0[l] += v0 * w[l];
          s1[l] += v1 * w[l];
          s2[l] += v2 * w[l];
          s3[l] += v3 * w[l];
        }
      });
      float best[kLanes];
      uint32_t chosen[kLanes];  // 32-bit lanes, so that the choice runs 16 at a time
      for (int64_t l = 0; l < kLanes; ++l)
        choose(bf16_round(s0[l]), bf16_round(s1[l]), bf16_round(s2[l]), bf16_round(s3[l]), best[l], chosen[l]);
      for (int64_t l = 0, lanes = std::min(kLanes, C - o0); l < lanes; ++l) {
        uint32_t u;  // best is a bfloat16 value: its top half
        std::memcpy(&u, &best[l], sizeof u);
        o[o0 + l] = static_cast<bf16>(u >> 16);
        wh[o0 + l] = static_cast<uint8_t>(chosen[l]);
      }
    }
  }
}

// Rows [r0, r1) of p: per channel, the sums of (p - first) and (p - first)^2, shifted by the block's first row.
ROWS_LOOP void moment_rows(const bf16* p, int64_t r0, int64_t r1, int64_t C, float* first, float* s1, float* s2) {
  for (int64_t c = 0; c < C; ++c) {
    first[c] = to_float(p[r0 * C + c]);
    s1[c] = s2[c] = 0.f;
  }
  for (int64_t r = r0; r < r1; ++r) {
    const bf16* __restrict in = p + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const float d = to_float(in[c]) - first[c];
      s1[c] += d;
      s2[c] += d * d;
    }
  }
}

ROWS_LOOP void normalize_rows(const bf16* p, bf16* y, int64_t r0, int64_t r1, int64_t C, const float* scale,
                              const float* shift) {
  for (int64_t r = r0; r < r1; ++r) {
    const bf16* __restrict in = p + r * C;
    bf16* __restrict out = y + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const float z = to_float(in[c]) * scale[c] + shift[c];
      out[c] = to_bf16(z > 0.f || z != z ? z : 0.f);  // relu keeps NaN
    }
  }
}

// Rows [r0, r1): per channel, the sums of g' and g' * (p - mean), g' = g but where y <= 0 (relu's gradient).
ROWS_LOOP void grad_sum_rows(const bf16* p, const bf16* g, int64_t r0, int64_t r1, int64_t C, const float* scale,
                             const float* shift, const float* mean, float* s1, float* s2) {
  for (int64_t c = 0; c < C; ++c) s1[c] = s2[c] = 0.f;
  for (int64_t r = r0; r < r1; ++r) {
    const bf16* __restrict in = p + r * C;
    const bf16* __restrict gr = g + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const float v = to_float(in[c]);
      const float gp = v * scale[c] + shift[c] <= 0.f ? 0.f : to_float(gr[c]);
      s1[c] += gp;
      s2[c] += gp * (v - mean[c]);
    }
  }
}

// Rows [r0, r1): the gradient of the normalised map p, into dp (rows of C).
ROWS_LOOP void grad_rows(const bf16* p, const bf16* g, bf16* dp, int64_t r0, int64_t r1, int64_t C,
                         const float* scale, const float* shift, const float* mean, const float* k1, const float* k2) {
  for (int64_t r = r0; r < r1; ++r) {
    const bf16* __restrict in = p + r * C;
    const bf16* __restrict gr = g + r * C;
    bf16* __restrict out = dp + (r - r0) * C;
    for (int64_t c = 0; c < C; ++c) {
      const float v = to_float(in[c]);
      const float gp = v * scale[c] + shift[c] <= 0.f ? 0.f : to_float(gr[c]);
      out[c] = to_bf16(scale[c] * (gp - k1[c] - (v - mean[c]) * k2[c]));
    }
  }
}

// Pooled rows [r0, r1): their gradient dp (rows of C from r0) scattered through the pooling's choices into dx.
ROWS_LOOP void unpool_rows(const bf16* dp, const uint8_t* which, bf16* dx, int64_t r0, int64_t r1, int64_t H,
                           int64_t W, int64_t C) {
  const int64_t Ho = H / 2, Wo = W / 2;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / (Ho * Wo), i = (r / Wo) % Ho, j = r % Wo;
    bf16* __restrict a = dx + ((n * H + 2 * i) * W + 2 * j) * C;
    bf16* __restrict b = a + C;
    bf16* __restrict c2 = a + W * C;
    bf16* __restrict d = c2 + C;
    const bf16* __restrict v = dp + (r - r0) * C;
    const uint8_t* __restrict k = which + r * C;
    for (int64_t c = 0; c < C; ++c) {  // masks rather than branches: the choices are as good as random
      const bf16 gv = v[c];
      const bf16 kc = k[c];
      a[c] = gv & static_cast<bf16>(-static_cast<bf16>(kc == 0));
      b[c] = gv & static_cast<bf16>(-static_cast<bf16>(kc == 1));
      c2[c] = gv & static_cast<bf16>(-static_cast<bf16>(kc == 2));
      d[c] = gv & static_cast<bf16>(-static_cast<bf16>(kc == 3));
    }
  }
}

// Pooled rows [r0, r1) with their gradient dp (rows of C from r0): the gradient of the 3x3 convolution (stride 1,
// zero padding 1) whose output was pooled, from its input x (N, H, W, Cin), added into acc (Cin * 9 rows of Cp, as
// conv_pool_rows's weights). Each output pixel the pooling did not choose has no gradient, so only the chosen one's
// 3x3 patch counts. rows: load_window_rows's.
ROWS_LOOP void conv_grad_rows(const bf16* dp, const uint8_t* which, const bf16* x, int64_t r0, int64_t r1,
                              int64_t H, int64_t W, int64_t Cin, int64_t C, int64_t Cp, float* rows, float* acc) {
  const int64_t Ho = H / 2, Wo = W / 2, Wp = W + 2;
  int64_t loaded = -1;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / (Ho * Wo), i = (r / Wo) % Ho, j = r % Wo;
    if (r / Wo != loaded) load_window_rows(x, rows, n, i, H, W, Cin);
    loaded = r / Wo;
    const bf16* __restrict d = dp + (r - r0) * C;
    const uint8_t* __restrict kk = which + r * C;
    for (int64_t o0 = 0; o0 < C; o0 += kLanes) {
      float g[kLanes] = {};
      uint32_t k[kLanes] = {};
      for (int64_t l = 0, lanes = std::min(kLanes, C - o0); l < lanes; ++l) {
        g[l] = to_float(d[o0 + l]);
        k[l] = kk[o0 + l];
      }
      for_each_tap(rows, j, Wp, Cin, [&](int64_t t, float v0, float v1, float v2, float v3) {
        float* __restrict a = acc + (t * Cp + o0);
        for (int64_t l = 0; l < kLanes; ++l) {
          const float v = k[l] == 0 ? v0 : k[l] == 1 ? v1 : k[l] == 2 ? v2 : v3;
          a[l] += g[l] * v;
        }
      });
    }
  }
}

void check_map(const torch::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                  x.scalar_type() == at::kBFloat16,
              "bn_relu: ", name, " must be a channels-last (N, C, H, W) bfloat16 CPU map");
}

const bf16* bits(const torch::Tensor& t) { return static_cast<const bf16*>(t.data_ptr()); }
bf16* bits_out(torch::Tensor& t) { return static_cast<bf16*>(t.data_ptr()); }

// y = relu(batch_norm(p)) for the map p (N, C, Ho, Wo) that fill(r0, r1) writes, rows [r0, r1) at a time, and
// per channel as rows of (5, C) float32: the batch's mean, biased variance and 1 / sqrt(var + eps), and the scale
// and shift y was computed with (y = relu(p * scale + shift)), which the backward pass takes as they are, so that
// its ReLU mask is the forward pass's.
template <typename Fill>
std::vector<torch::Tensor> normalize_map(const torch::Tensor& p, const torch::Tensor& weight, const torch::Tensor& bias,
                                         double eps, const Fill& fill) {
  const int64_t N = p.size(0), C = p.size(1), M = N * p.size(2) * p.size(3);
  TORCH_CHECK(M > 0, "bn_relu: an empty map");
  TORCH_CHECK(weight.numel() == C && bias.numel() == C, "bn_relu: one weight and bias per channel");
  torch::Tensor y = torch::empty(p.sizes(), p.options().memory_format(at::MemoryFormat::ChannelsLast));
  const auto w32 = weight.detach().to(torch::kFloat).contiguous(), b32 = bias.detach().to(torch::kFloat).contiguous();
  torch::Tensor stats = torch::empty({5, C}, p.options().dtype(torch::kFloat));

  std::vector<float> first(kBlocks * C), s1(kBlocks * C), s2(kBlocks * C);
  std::vector<int64_t> count(kBlocks);
  at::parallel_for(0, kBlocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = M * b / kBlocks, r1 = M * (b + 1) / kBlocks;
      count[b] = r1 - r0;
      if (r1 <= r0) continue;
      fill(r0, r1);
      moment_rows(bits(p), r0, r1, C, &first[b * C], &s1[b * C], &s2[b * C]);
    }
  });
  // Chan et al.'s combination of the blocks' means and squared deviations, in order, in double.
  std::vector<double> mean(C, 0.0), m2(C, 0.0);
  double n = 0;
  for (int64_t b = 0; b < kBlocks; ++b) {
    if (count[b] == 0) continue;
    const double nb = static_cast<double>(count[b]), total = n + nb;
    for (int64_t c = 0; c < C; ++c) {
      const double shift = s1[b * C + c] / nb;
      const double block_mean = first[b * C + c] + shift;
      const double block_m2 = std::max(0.0, s2[b * C + c] - nb * shift * shift);
      const double delta = block_mean - mean[c];
      mean[c] += delta * nb / total;
      m2[c] += block_m2 + delta * delta * n * nb / total;
    }
    n = total;
  }
  float* st = stats.data_ptr<float>();
  float *scale = st + 3 * C, *shift = st + 4 * C;
  for (int64_t c = 0; c < C; ++c) {
    const double var = m2[c] / n, invstd = 1.0 / std::sqrt(var + eps);
    st[c] = static_cast<float>(mean[c]);
    st[C + c] = static_cast<float>(var);
    st[2 * C + c] = static_cast<float>(invstd);
    scale[c] = static_cast<float>(w32.data_ptr<float>()[c] * invstd);
    shift[c] = static_cast<float>(b32.data_ptr<float>()[c] - mean[c] * w32.data_ptr<float>()[c] * invstd);
  }
  at::parallel_for(0, M, 256, [&](int64_t r0, int64_t r1) {
    normalize_rows(bits(p), bits_out(y), r0, r1, C, scale, shift);
  });
  return {y, stats};
}

// Returns y = relu(batch_norm(pool(x))), the map normalised (pool(x), or x itself), which pixel each pooled value
// came from (pool only), and the statistics of normalize_map.
std::vector<torch::Tensor> forward(torch::Tensor x, torch::Tensor weight, torch::Tensor bias, double eps, bool pool) {
  check_map(x, "the input");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = pool ? H / 2 : H, Wo = pool ? W / 2 : W;
  torch::Tensor p = pool ? torch::empty({N, C, Ho, Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast)) : x;
  torch::Tensor which = torch::empty({pool ? N * Ho * Wo * C : 0}, x.options().dtype(torch::kUInt8));
  auto out = normalize_map(p, weight, bias, eps, [&](int64_t r0, int64_t r1) {
    if (pool) pool_rows(bits(x), bits_out(p), which.data_ptr<uint8_t>(), r0, r1, H, W, C);
  });
  return {out[0], p, which, out[1]};
}

// conv_weight (C, Cin, 3, 3) of a convolution of x (N, Cin, H, W) as conv_pool_rows takes it: Cin * 9 rows of
// padded_channels(C) float32 values, bfloat16-rounded, zero beyond C.
torch::Tensor packed_weight(const torch::Tensor& conv_weight, const torch::Tensor& x) {
  const int64_t Cin = x.size(1), C = conv_weight.size(0);
  TORCH_CHECK(conv_weight.dim() == 4 && conv_weight.size(1) == Cin && conv_weight.size(2) == 3 &&
                  conv_weight.size(3) == 3, "bn_relu: the convolution's weight must be (C, Cin, 3, 3)");
  const auto wt = torch::zeros({Cin * 9, padded_channels(C)}, x.options().dtype(torch::kFloat));
  wt.narrow(1, 0, C).copy_(conv_weight.detach().to(torch::kBFloat16).to(torch::kFloat).reshape({C, Cin * 9}).t());
  return wt;
}

// forward(conv(x), weight, bias, eps, true) for the 3x3 convolution (stride 1, zero padding 1, no bias) of x (N,
// Cin, H, W, bfloat16, channels-last) by conv_weight (C, Cin, 3, 3, rounded to bfloat16), computed window by window
// (conv_pool_rows), without the convolution's full-size map.
std::vector<torch::Tensor> conv_forward(torch::Tensor x, torch::Tensor conv_weight, torch::Tensor weight,
                                        torch::Tensor bias, double eps) {
  check_map(x, "the convolution's input");
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3), C = conv_weight.size(0);
  const int64_t Cp = padded_channels(C);
  const auto wt = packed_weight(conv_weight, x);
  torch::Tensor p = torch::empty({N, C, H / 2, W / 2}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  torch::Tensor which = torch::empty({p.numel()}, x.options().dtype(torch::kUInt8));
  auto out = normalize_map(p, weight, bias, eps, [&](int64_t r0, int64_t r1) {
    std::vector<float> rows(4 * (W + 2) * Cin);
    conv_pool_rows(bits(x), wt.data_ptr<float>(), bits_out(p), which.data_ptr<uint8_t>(), r0, r1, H, W, Cin, C, Cp,
                   rows.data());
  });
  return {out[0], p, which, out[1]};
}

// In evaluation: relu(p * scale + shift) (batch norm with its running statistics, as a scale and a shift per
// channel, float32) for p = pool(conv(x)) when conv_weight is given (as conv_forward, without the full-size map),
// pool(x) with pool, or x itself; each block of rows pooled and normalised while in cache.
torch::Tensor infer(torch::Tensor x, c10::optional<torch::Tensor> conv_weight, torch::Tensor scale,
                    torch::Tensor shift, bool pool) {
  check_map(x, "the input");
  const bool conv = conv_weight.has_value();
  TORCH_CHECK(pool || !conv, "bn_relu: a convolution is taken with its pooling");
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t C = conv ? conv_weight->size(0) : Cin, Ho = pool ? H / 2 : H, Wo = pool ? W / 2 : W;
  const auto sc = scale.detach().to(torch::kFloat).contiguous(), sh = shift.detach().to(torch::kFloat).contiguous();
  TORCH_CHECK(sc.numel() == C && sh.numel() == C, "bn_relu: one scale and shift per channel");
  torch::Tensor y = torch::empty({N, C, Ho, Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t M = N * Ho * Wo, Cp = padded_channels(C);
  if (M == 0) return y;
  const torch::Tensor wt = conv ? packed_weight(*conv_weight, x) : torch::Tensor();
  torch::Tensor p = pool ? torch::empty({M * C}, x.options()) : x;
  torch::Tensor which = torch::empty({pool ? M * C : 0}, x.options().dtype(torch::kUInt8));
  at::parallel_for(0, M, 64, [&](int64_t r0, int64_t r1) {
    std::vector<float> rows(conv ? 4 * (W + 2) * Cin : 0);
    if (conv)
      conv_pool_rows(bits(x), wt.data_ptr<float>(), bits_out(p), which.data_ptr<uint8_t>(), r0, r1, H, W, Cin, C,
                     Cp, rows.data());
    else if (pool)
      pool_rows(bits(x), bits_out(p), which.data_ptr<uint8_t>(), r0, r1, H, W, C);
    normalize_rows(bits(p), bits_out(y), r0, r1, C, sc.data_ptr<float>(), sh.data_ptr<float>());
  });
  return y;
}

// What the gradient of the normalised map needs: per channel, the forward pass's mean, scale and shift (rows of
// forward's statistics) and the two sums' terms (k1, k2); and the gradients of the batch norm's weight and bias.
struct GradTerms {
  const float *mean, *scale, *shift;
  std::vector<float> k1, k2;
  torch::Tensor dweight, dbias;
};

GradTerms grad_terms(const torch::Tensor& g, const torch::Tensor& p, const torch::Tensor& stats) {
  const int64_t C = p.size(1), M = p.numel() / C;
  TORCH_CHECK(g.sizes() == p.sizes(), "bn_relu: the gradient's shape is not the output's");
  TORCH_CHECK(stats.dim() == 2 && stats.size(0) == 5 && stats.size(1) == C && stats.is_contiguous() &&
                  stats.scalar_type() == at::kFloat, "bn_relu: the statistics forward returned");
  const float* st = stats.data_ptr<float>();
  GradTerms out{st, st + 3 * C, st + 4 * C, std::vector<float>(C), std::vector<float>(C),
                torch::empty({C}, p.options().dtype(torch::kFloat)), torch::empty({C}, p.options().dtype(torch::kFloat))};
  std::vector<float> s1(kBlocks * C), s2(kBlocks * C);
  at::parallel_for(0, kBlocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      grad_sum_rows(bits(p), bits(g), M * b / kBlocks, M * (b + 1) / kBlocks, C, out.scale, out.shift, out.mean,
                    &s1[b * C], &s2[b * C]);
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    double sg = 0, sgx = 0;
    for (int64_t b = 0; b < kBlocks; ++b) {
      sg += s1[b * C + c];
      sgx += s2[b * C + c];
    }
    const double invstd = st[2 * C + c];
    out.dbias.data_ptr<float>()[c] = static_cast<float>(sg);
    out.dweight.data_ptr<float>()[c] = static_cast<float>(sgx * invstd);
    out.k1[c] = static_cast<float>(sg / M);
    out.k2[c] = static_cast<float>(sgx / M * invstd * invstd);
  }
  return out;
}

// The gradients of x, weight and bias, from the gradient g of forward's y and what forward returned.
std::vector<torch::Tensor> backward(torch::Tensor g, torch::Tensor p, torch::Tensor which, torch::Tensor stats,
                                    bool pool, int64_t H, int64_t W) {
  check_map(p, "the saved map");
  g = g.to(at::kBFloat16).contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t N = p.size(0), C = p.size(1), Ho = p.size(2), Wo = p.size(3), M = N * Ho * Wo;
  TORCH_CHECK(!pool || (H / 2 == Ho && W / 2 == Wo), "bn_relu: the input's size does not pool to the output's");
  const GradTerms terms = grad_terms(g, p, stats);
  const float *mean = terms.mean, *scale = terms.scale, *shift = terms.shift, *k1 = terms.k1.data(),
              *k2 = terms.k2.data();
  const auto opts = p.options().memory_format(at::MemoryFormat::ChannelsLast);
  torch::Tensor dx = pool ? torch::empty({N, C, H, W}, opts) : torch::empty({N, C, Ho, Wo}, opts);
  at::parallel_for(0, M, 256, [&](int64_t r0, int64_t r1) {
    if (!pool) {
      grad_rows(bits(p), bits(g), bits_out(dx) + r0 * C, r0, r1, C, scale, shift, mean, k1, k2);
      return;
    }
    std::vector<bf16> dp(64 * C);  // 64 rows at a time, while they are in cache
    for (int64_t q0 = r0; q0 < r1; q0 += 64) {
      const int64_t q1 = std::min(r1, q0 + 64);
      grad_rows(bits(p), bits(g), dp.data(), q0, q1, C, scale, shift, mean, k1, k2);
      unpool_rows(dp.data(), which.data_ptr<uint8_t>(), bits_out(dx), q0, q1, H, W, C);
    }
  });
  if (pool && (H % 2 || W % 2)) {  // the last row or column, left out of the pooling, gets no gradient
    bf16* base = bits_out(dx);
    at::parallel_for(0, N * H, 16, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        bf16* row = base + q * W * C;
        if (H % 2 && q % H == H - 1) std::memset(row, 0, W * C * sizeof(bf16));
        else if (W % 2) std::memset(row + (W - 1) * C, 0, C * sizeof(bf16));
      }
    });
  }
  return {dx, terms.dweight, terms.dbias};
}

// For a run that starts with a 3x3 convolution (stride 1, zero padding 1, no bias) whose input needs no gradient:
// the gradients of the convolution's weight (C, Cin, 3, 3, float32), and of the batch norm's weight and bias, from
// g, what forward returned (pooled) and the convolution's input x (bfloat16, channels-last).
std::vector<torch::Tensor> conv_backward(torch::Tensor g, torch::Tensor p, torch::Tensor which, torch::Tensor stats,
                                         torch::Tensor x) {
  check_map(p, "the saved map");
  check_map(x, "the convolution's input");
  g = g.to(at::kBFloat16).contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3), C = p.size(1);
  TORCH_CHECK(p.size(0) == N && p.size(2) == H / 2 && p.size(3) == W / 2, "bn_relu: the input does not pool to the output");
  const int64_t M = N * (H / 2) * (W / 2), Cp = padded_channels(C), K = Cin * 9 * Cp;
  const GradTerms terms = grad_terms(g, p, stats);
  std::vector<float> acc(kBlocks * K, 0.f);
  at::parallel_for(0, kBlocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<bf16> dp(64 * C);
    std::vector<float> rows(4 * (W + 2) * Cin);
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t q0 = M * b / kBlocks, end = M * (b + 1) / kBlocks; q0 < end; q0 += 64) {
        const int64_t q1 = std::min(end, q0 + 64);
        grad_rows(bits(p), bits(g), dp.data(), q0, q1, C, terms.scale, terms.shift, terms.mean, terms.k1.data(),
                  terms.k2.data());
        conv_grad_rows(dp.data(), which.data_ptr<uint8_t>(), bits(x), q0, q1, H, W, Cin, C, Cp, rows.data(),
                       &acc[b * K]);
      }
    }
  });
  torch::Tensor dconv = torch::empty({C, Cin, 3, 3}, p.options().dtype(torch::kFloat));
  float* out = dconv.data_ptr<float>();
  for (int64_t o = 0; o < C; ++o) {
    for (int64_t ct = 0; ct < Cin * 9; ++ct) {
      double sum = 0;
      for (int64_t b = 0; b < kBlocks; ++b) sum += acc[b * K + ct * Cp + o];
      out[o * Cin * 9 + ct] = static_cast<float>(sum);
    }
  }
  return {dconv, terms.dweight, terms.dbias};
}

// x (N, C, H, W), bfloat16, channels-last, as (C, N, H, W) contiguous: the batch as the channels of the forward
// convolution that gives a small map's weight gradient (small_map_conv in fused_layers.py). Each image's (H * W, C)
// block is read while in cache and written one channel's run of H * W values at a time.
ROWS_LOOP void transpose_images(const bf16* x, bf16* out, int64_t n0, int64_t n1, int64_t N, int64_t HW, int64_t C) {
  for (int64_t n = n0; n < n1; ++n) {
    const bf16* src = x + n * HW * C;
    for (int64_t c = 0; c < C; ++c) {
      bf16* dst = out + (c * N + n) * HW;
      for (int64_t p = 0; p < HW; ++p) dst[p] = src[p * C + c];
    }
  }
}

torch::Tensor batch_channel_transpose(torch::Tensor x) {
  check_map(x, "the map");
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  torch::Tensor out = torch::empty({C, N, x.size(2), x.size(3)}, x.options().memory_format(at::MemoryFormat::Contiguous));
  at::parallel_for(0, N, 8, [&](int64_t n0, int64_t n1) { transpose_images(bits(x), bits_out(out), n0, n1, N, HW, C); });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "relu(batch_norm(max_pool_2x2(x))) in training, and what the backward pass needs");
  m.def("conv_forward", &conv_forward, "forward of a 3x3 convolution's output, computed without its full-size map");
  m.def("backward", &backward, "the gradients of forward's input, weight and bias");
  m.def("conv_backward", &conv_backward, "the gradients of a 3x3 convolution's weight before forward, and of its own");
  m.def("infer", &infer, "relu(batch_norm(max_pool_2x2(conv(x)))) in evaluation, the convolution and pooling optional",
        py::arg("x"), py::arg("conv_weight"), py::arg("scale"), py::arg("shift"), py::arg("pool"));
  m.def("batch_channel_transpose", &batch_channel_transpose, "a channels-last (N, C, H, W) map as (C, N, H, W)");
}
