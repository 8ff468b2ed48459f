// ATen settings that tch 0.24 does not expose: autocast to bf16 on a chosen
// device type (tch's `autocast` only switches CUDA autocast on, in fp16),
// deterministic algorithms, and the CUDA allocator's peak statistics
// (torch.cuda.max_memory_allocated). Plain C functions for trial-runner's
// precision.rs and memory.rs; none lets a C++ exception cross into Rust.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <c10/core/CachingDeviceAllocator.h>

#include <cstdint>

namespace {
c10::DeviceType device_type(bool cuda) {
  return cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
}
}  // namespace

extern "C" {

// Switches bf16 autocast on for CPU or CUDA ops of this thread and returns
// whether it was on before (for bocb_autocast_exit), or -1 on failure.
int bocb_autocast_enter(bool cuda) {
  try {
    const auto type = device_type(cuda);
    const bool was_enabled = at::autocast::is_autocast_enabled(type);
    at::autocast::set_autocast_dtype(type, at::kBFloat16);
    at::autocast::set_autocast_enabled(type, true);
    at::autocast::increment_nesting();
    return was_enabled ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

// Leaves the autocast region bocb_autocast_enter opened, dropping the cast
// weights it cached once the outermost region ends. Returns 0, or -1.
int bocb_autocast_exit(bool cuda, bool was_enabled) {
  try {
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(device_type(cuda), was_enabled);
    return 0;
  } catch (...) {
    return -1;
  }
}

// Deterministic algorithms process-wide (torch.use_deterministic_algorithms)
// with deterministic, non-benchmarked cuDNN. Returns 0, or -1.
int bocb_set_deterministic(bool on) {
  try {
    auto& context = at::globalContext();
    context.setDeterministicAlgorithms(on, /*warn_only=*/false);
    context.setDeterministicCuDNN(on);
    if (on) {
      context.setBenchmarkCuDNN(false);
    }
    return 0;
  } catch (...) {
    return -1;
  }
}

bool bocb_deterministic() {
  return at::globalContext().deterministicAlgorithms();
}

// Starts the peak of CUDA device `index`'s allocated bytes afresh
// (torch.cuda.reset_peak_memory_stats). Returns 0, or -1.
int bocb_cuda_reset_peak(int8_t index) {
  try {
    c10::getDeviceAllocator(c10::DeviceType::CUDA)->resetPeakStats(index);
    return 0;
  } catch (...) {
    return -1;
  }
}

// The peak of CUDA device `index`'s allocated bytes since the last reset
// (torch.cuda.max_memory_allocated), or -1.
int64_t bocb_cuda_peak_allocated(int8_t index) {
  try {
    const auto stats =
        c10::getDeviceAllocator(c10::DeviceType::CUDA)->getDeviceStats(index);
    const auto aggregate =
        static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    return stats.allocated_bytes[aggregate].peak;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
