// ATen settings that tch 0.24 does not expose: autocast to bf16 on a chosen
// device type (tch's `autocast` only switches CUDA autocast on, in fp16),
// deterministic algorithms, the CUDA allocator's statistics
// (torch.cuda.max_memory_allocated) and per-thread CUDA streams. Plain C
// functions for trial-runner's precision.rs, memory.rs and device.rs; none
// lets a C++ exception cross into Rust. CUDA is reached through c10's
// device-generic interfaces only, so this builds without CUDA headers.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

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

// Makes a stream of libtorch's pool (torch.cuda.Stream's pool: non-blocking
// streams, handed out round-robin) the current stream of this thread on CUDA
// device `index`, so that trials in different threads overlap instead of
// queueing on the default stream. Returns the stream's id, or -1.
int64_t bocb_cuda_use_pool_stream(int8_t index) {
  try {
    const auto* impl = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
    const c10::Device device(c10::DeviceType::CUDA, index);
    const auto stream = impl->getStreamFromGlobalPool(device, false);
    impl->exchangeStream(stream);
    return stream.id();
  } catch (...) {
    return -1;
  }
}

// The id of this thread's current stream on CUDA device `index` (0 is the
// default stream), or -1.
int64_t bocb_cuda_current_stream(int8_t index) {
  try {
    const auto* impl = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
    return impl->getStream(c10::Device(c10::DeviceType::CUDA, index)).id();
  } catch (...) {
    return -1;
  }
}

// Waits for the work queued on this thread's current stream of CUDA device
// `index` (not the whole device, as cudaDeviceSynchronize would). 0, or -1.
int bocb_cuda_synchronize_current_stream(int8_t index) {
  try {
    const auto* impl = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
    impl->synchronizeStream(
        impl->getStream(c10::Device(c10::DeviceType::CUDA, index)));
    return 0;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
