// Steps of plain SGD on a plain multilayer perceptron, as FusedMLPStep._plain_sgd (fused.py) takes them
// one at a time from Python: the same ATen operations in the same order (so the same results, bit for
// bit), without the Python interpreter between them and into buffers allocated once per call.
//
// x: (n, features) inputs; target: (n, classes) targets; logits: (n, classes), written; weights[i]:
// (out_i, in_i) and biases[i]: (out_i), updated in place; lrs: one learning rate per step; each step
// takes `batch` rows from `first_row` on (the last may be shorter).
#include <torch/extension.h>

#include <algorithm>
#include <vector>

void sgd_steps(const torch::Tensor& x, const torch::Tensor& target, const torch::Tensor& logits,
               std::vector<torch::Tensor> weights, std::vector<torch::Tensor> biases,
               const std::vector<double>& lrs, int64_t batch, int64_t first_row) {
  torch::NoGradGuard no_grad;
  const int64_t n = x.size(0);
  const int64_t layers = static_cast<int64_t>(weights.size());
  TORCH_CHECK(layers > 0 && static_cast<int64_t>(biases.size()) == layers, "one bias per weight");
  TORCH_CHECK(batch > 0 && first_row >= 0, "batch must be positive and first_row not negative");
  TORCH_CHECK(first_row + static_cast<int64_t>(lrs.size() - 1) * batch < n || lrs.empty(),
              "the steps go past the last row");
  // outputs[i]: layer i's ReLU output; grads[i]: the gradient at layer i's output; bias_grads[i]: its sum.
  std::vector<torch::Tensor> outputs(layers), grads(layers), bias_grads(layers), inputs(layers);
  for (int64_t i = 0; i < layers; ++i) {
    outputs[i] = torch::empty({batch, weights[i].size(0)}, x.options());
    grads[i] = torch::empty({batch, weights[i].size(0)}, x.options());
    bias_grads[i] = torch::empty({weights[i].size(0)}, x.options());
  }
  int64_t start = first_row;
  for (const double lr : lrs) {
    const int64_t stop = std::min(start + batch, n);
    const int64_t rows = stop - start;
    const double alpha = -lr / static_cast<double>(rows);
    inputs[0] = x.slice(0, start, stop);
    for (int64_t i = 0; i + 1 < layers; ++i) {
      torch::Tensor h = outputs[i].narrow(0, 0, rows);
      at::addmm_out(h, biases[i], inputs[i], weights[i].t());
      h.relu_();
      inputs[i + 1] = h;
    }
    torch::Tensor out = logits.slice(0, start, stop);
    at::addmm_out(out, biases[layers - 1], inputs[layers - 1], weights[layers - 1].t());
    torch::Tensor g = grads[layers - 1].narrow(0, 0, rows);
    at::_softmax_out(g, out, 1, false);
    g.sub_(target.slice(0, start, stop));  // rows * dLoss/dlogits (mean cross-entropy)
    for (int64_t i = layers - 1; i >= 0; --i) {
      torch::Tensor below;
      if (i > 0) {  // through the previous layer's ReLU, before this layer's weights change
        below = grads[i - 1].narrow(0, 0, rows);
        at::mm_out(below, g, weights[i]);
        at::threshold_backward_out(below, below, inputs[i], 0);
      }
      weights[i].addmm_(g.t(), inputs[i], 1.0, alpha);
      at::sum_out(bias_grads[i], g, {0});
      biases[i].add_(bias_grads[i], alpha);
      g = below;
    }
    start = stop;
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("sgd_steps", &sgd_steps, "steps of plain SGD on a plain multilayer perceptron");
}
