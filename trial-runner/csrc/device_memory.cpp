// Free memory of a CUDA device as its driver reports it
// (torch.cuda.mem_get_info()[0]), through the generic device-allocator
// interface. A plain C function for trial-runner's memory.rs; no C++
// exception crosses into Rust.
#include <c10/core/CachingDeviceAllocator.h>

#include <cstdint>

extern "C" {

// Bytes free on CUDA device `index`, after the caching allocator has
// returned its idle blocks when `release_idle` (torch.cuda.empty_cache()
// first), or -1.
int64_t bocb_cuda_free_bytes(int8_t index, bool release_idle) {
  try {
    auto* allocator = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    if (release_idle) {
      allocator->emptyCache();
    }
    return static_cast<int64_t>(allocator->getMemoryInfo(index).first);
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
