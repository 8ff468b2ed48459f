// libtorch's fused optimizer kernels (what torch.optim runs with
// `fused=True`) for bocb's SGD and Adam family: one launch updates a whole
// parameter group. Plain C functions for trial-runner's optim/fused.rs; the
// tensors arrive as tch's handles (at::Tensor pointers). No C++ exception
// crosses into Rust: a failure returns -1 and leaves its message for
// bocb_fused_last_error.
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_fused_adam.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/_fused_sgd.h>

#include <cstddef>
#include <exception>
#include <string>
#include <vector>

namespace {
thread_local std::string last_error;

std::vector<at::Tensor> tensors(const at::Tensor* const* handles, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(*handles[i]);
  }
  return out;
}

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return -1;
}
}  // namespace

extern "C" {

// torch.optim.SGD's fused step over `n` parameters. `buffers` are the
// momentum buffers (ignored when momentum is 0); with `first_step` they are
// filled from the gradients, as torch's first step does.
int bocb_fused_sgd(const at::Tensor* const* params,
                   const at::Tensor* const* grads,
                   const at::Tensor* const* buffers, size_t n,
                   double weight_decay, double momentum, double lr,
                   double dampening, bool nesterov, bool first_step) {
  return guarded([&] {
    const auto momentum_buffers = momentum == 0.0
                                      ? std::vector<at::Tensor>{}
                                      : tensors(buffers, n);
    at::_fused_sgd_(tensors(params, n), tensors(grads, n), momentum_buffers,
                    weight_decay, momentum, lr, dampening, nesterov,
                    /*maximize=*/false, first_step && momentum != 0.0);
  });
}

// torch.optim.Adam's (coupled decay) or AdamW's (`decoupled`) fused step:
// the step counts (float scalars beside each parameter) advance by one, then
// one kernel updates parameters and moments. `max_exp_avg_sqs` is read only
// with `amsgrad`.
int bocb_fused_adam(const at::Tensor* const* params,
                    const at::Tensor* const* grads,
                    const at::Tensor* const* exp_avgs,
                    const at::Tensor* const* exp_avg_sqs,
                    const at::Tensor* const* max_exp_avg_sqs,
                    const at::Tensor* const* steps, size_t n, double lr,
                    double beta1, double beta2, double weight_decay, double eps,
                    bool amsgrad, bool decoupled) {
  return guarded([&] {
    auto state_steps = tensors(steps, n);
    at::_foreach_add_(state_steps, 1);
    const auto maxima =
        amsgrad ? tensors(max_exp_avg_sqs, n) : std::vector<at::Tensor>{};
    if (decoupled) {
      at::_fused_adamw_(tensors(params, n), tensors(grads, n),
                        tensors(exp_avgs, n), tensors(exp_avg_sqs, n), maxima,
                        state_steps, lr, beta1, beta2, weight_decay, eps,
                        amsgrad, /*maximize=*/false);
    } else {
      at::_fused_adam_(tensors(params, n), tensors(grads, n),
                       tensors(exp_avgs, n), tensors(exp_avg_sqs, n), maxima,
                       state_steps, lr, beta1, beta2, weight_decay, eps,
                       amsgrad, /*maximize=*/false);
    }
  });
}

const char* bocb_fused_last_error() { return last_error.c_str(); }

}  // extern "C"
