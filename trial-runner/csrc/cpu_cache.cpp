// A caching allocator for CPU tensors, as PyTorch has one for CUDA. A
// training step allocates the same activation and gradient sizes every
// step; glibc hands blocks above its mmap threshold back to the kernel on
// free, so every step page-faults (and the kernel zeroes) its activations
// afresh, a tenth to a third of a CPU step. Freed blocks of 64 KiB and more
// are kept here by size class and handed out again; smaller ones go back to
// glibc, whose bins already serve them well. Plain C functions for
// trial-runner's cpu_cache.rs; none lets a C++ exception cross into Rust.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

// Bytes before each block that hold its size class; 64 keeps the data at
// c10's 64-byte alignment.
constexpr size_t kHeader = 64;
// Blocks below this are not cached (size class 0).
constexpr size_t kMinCached = size_t{1} << 16;

// Eight classes per power of two, so a block wastes at most an eighth.
size_t size_class(size_t bytes) {
  if (bytes < kMinCached) {
    return 0;
  }
  const int top_bit = 63 - __builtin_clzll(bytes);
  const size_t step = size_t{1} << (top_bit - 3);
  return (bytes + step - 1) & ~(step - 1);
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    void* data = take(bytes);
    return {data, data, &release_block, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release_block; }

  void copy_data(void* dest, const void* src, size_t count) const override {
    default_copy_data(dest, src, count);
  }

  void set_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    limit_ = bytes;
    trim_to(limit_);
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mutex_);
    trim_to(0);
  }

  void stats(int64_t* cached, int64_t* hits, int64_t* misses) {
    std::lock_guard<std::mutex> lock(mutex_);
    *cached = static_cast<int64_t>(cached_bytes_);
    *hits = static_cast<int64_t>(hits_);
    *misses = static_cast<int64_t>(misses_);
  }

 private:
  void* take(size_t bytes) {
    if (bytes == 0) {
      return nullptr;
    }
    const size_t cls = size_class(bytes);
    if (cls != 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      auto found = free_.find(cls);
      if (found != free_.end() && !found->second.empty()) {
        char* base = static_cast<char*>(found->second.back());
        found->second.pop_back();
        cached_bytes_ -= cls;
        ++hits_;
        return base + kHeader;
      }
      ++misses_;
    }
    char* base = static_cast<char*>(c10::alloc_cpu(kHeader + (cls ? cls : bytes)));
    *reinterpret_cast<size_t*>(base) = cls;
    return base + kHeader;
  }

  void give_back(void* data) {
    if (data == nullptr) {
      return;
    }
    char* base = static_cast<char*>(data) - kHeader;
    const size_t cls = *reinterpret_cast<size_t*>(base);
    if (cls != 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_bytes_ + cls <= limit_) {
        free_[cls].push_back(base);
        cached_bytes_ += cls;
        return;
      }
    }
    c10::free_cpu(base);
  }

  // Frees cached blocks, largest classes first, until at most `bytes` stay.
  void trim_to(size_t bytes) {
    std::vector<size_t> classes;
    for (const auto& entry : free_) {
      classes.push_back(entry.first);
    }
    std::sort(classes.begin(), classes.end(), std::greater<size_t>());
    for (size_t cls : classes) {
      auto& blocks = free_[cls];
      while (cached_bytes_ > bytes && !blocks.empty()) {
        c10::free_cpu(blocks.back());
        blocks.pop_back();
        cached_bytes_ -= cls;
      }
    }
  }

  static void release_block(void* data);

  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_bytes_ = 0;
  size_t limit_ = 0;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

// Never destroyed: tensors may be freed during static destruction at exit.
CachingCpuAllocator* const cache = new CachingCpuAllocator();

void CachingCpuAllocator::release_block(void* data) { cache->give_back(data); }

}  // namespace

extern "C" {

// Makes the cache libtorch's CPU allocator, keeping at most `limit` idle
// bytes; tensors allocated before keep their own deleter. Returns 0, or -1.
int bocb_cpu_cache_install(int64_t limit) {
  try {
    cache->set_limit(static_cast<size_t>(limit));
    c10::SetCPUAllocator(cache, /*priority=*/1);
    return 0;
  } catch (...) {
    return -1;
  }
}

// Frees every idle cached block (between trials). Returns 0, or -1.
int bocb_cpu_cache_empty() {
  try {
    cache->empty();
    return 0;
  } catch (...) {
    return -1;
  }
}

// Idle cached bytes, and allocations served from the cache or not.
void bocb_cpu_cache_stats(int64_t* cached, int64_t* hits, int64_t* misses) {
  cache->stats(cached, hits, misses);
}

}  // extern "C"
