// Free memory of a CUDA device as its driver reports it
// (torch.cuda.mem_get_info()[0]), through the generic device-allocator
// interface. A plain C function for trial-runner's memory.rs; no C++
// exception crosses into Rust.
#include <c10/core/CachingDeviceAllocator.h>

#include <cstdint>

extern "C" {

// Bytes free on CUDA device `index`, or -1.
int64_t bocb_cuda_free_bytes(int8_t index) {
  try {
    const auto info =
        c10::getDeviceAllocator(c10::DeviceType::CUDA)->getMemoryInfo(index);
    return static_cast<int64_t>(info.first);
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
