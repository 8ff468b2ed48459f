// What `trials_per_device: auto` reads of a CUDA device that tch 0.24 does
// not expose: the memory free for trials (torch.cuda.mem_get_info after
// torch.cuda.empty_cache). A plain C function for trial-runner's probe.rs
// that lets no C++ exception cross into Rust.
#include <c10/core/CachingDeviceAllocator.h>

#include <cstdint>

extern "C" {

// The driver's free bytes on CUDA device `index` once the caching allocator
// has returned its idle blocks, or -1.
int64_t bocb_cuda_free_memory(int8_t index) {
  try {
    auto* allocator = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    allocator->emptyCache();
    return static_cast<int64_t>(allocator->getMemoryInfo(index).first);
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
