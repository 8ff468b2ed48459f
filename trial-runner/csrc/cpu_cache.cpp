// A caching allocator for CPU tensors, as PyTorch has one for CUDA. A
// training step allocates the same activation and gradient sizes every
// step; glibc hands blocks above its mmap threshold back to the kernel on
// free, so every step page-faults (and the kernel zeroes) its activations
// afresh, a tenth to a third of a CPU step. Blocks of 64 KiB and more are
// mapped here, kept by size class when freed and handed out again; smaller
// ones go to glibc, whose bins already serve them well. Idle blocks are
// unmapped before the machine runs short of memory. Plain C functions for
// trial-runner's cpu_cache.rs; none lets a C++ exception cross into Rust.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

// Blocks below this are not cached.
constexpr size_t kMinCached = size_t{1} << 16;
constexpr size_t kPage = 4096;

// Eight classes per power of two, so a block wastes at most an eighth.
size_t size_class(size_t bytes) {
  const int top_bit = 63 - __builtin_clzll(bytes);
  const size_t step = size_t{1} << (top_bit - 3);
  return (bytes + step - 1) & ~(step - 1);
}

// What a cached block of class `cls` maps.
size_t mapped_bytes(size_t cls) { return (cls + kPage - 1) & ~(kPage - 1); }

// The first number after `key` in the file at `path`, or -1.
int64_t read_number(const char* path, const char* key) {
  FILE* file = std::fopen(path, "r");
  if (file == nullptr) {
    return -1;
  }
  char line[256];
  int64_t value = -1;
  const size_t key_length = std::strlen(key);
  while (std::fgets(line, sizeof line, file) != nullptr) {
    if (std::strncmp(line, key, key_length) == 0) {
      long long number = 0;
      if (std::sscanf(line + key_length, "%lld", &number) == 1) {
        value = number;
      }
      break;
    }
  }
  std::fclose(file);
  return value;
}

// Bytes the process can still take: the kernel's MemAvailable, lowered to
// what is left under a cgroup-v2 memory limit where one is set; -1 when
// neither can be read.
int64_t available_bytes() {
  int64_t available = read_number("/proc/meminfo", "MemAvailable:");
  if (available >= 0) {
    available *= 1024;
  }
  const int64_t limit = read_number("/sys/fs/cgroup/memory.max", "");
  const int64_t used = read_number("/sys/fs/cgroup/memory.current", "");
  if (limit > 0 && used >= 0) {
    const int64_t left = limit > used ? limit - used : 0;
    available = available < 0 ? left : std::min(available, left);
  }
  return available;
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    if (bytes < kMinCached) {
      // glibc's own blocks, freed as c10's default allocator frees them.
      void* data = bytes == 0 ? nullptr : c10::alloc_cpu(bytes);
      return {data, data, &c10::free_cpu, c10::Device(c10::DeviceType::CPU)};
    }
    void* data = take(size_class(bytes));
    return {data, data, &release_block, c10::Device(c10::DeviceType::CPU)};
  }

  // Also what libtorch's raw_deallocate calls: oneDNN (through ideep) takes
  // raw buffers from whichever allocator is current and may free them after
  // the cache replaced the default one, so pointers the cache did not map go
  // to c10::free_cpu, as the default allocator would free them.
  c10::DeleterFnPtr raw_deleter() const override { return &release_block; }

  void copy_data(void* dest, const void* src, size_t count) const override {
    default_copy_data(dest, src, count);
  }

  void configure(size_t limit, size_t reserve) {
    std::lock_guard<std::mutex> lock(mutex_);
    limit_ = limit;
    reserve_ = reserve;
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
  // A block of class `cls`: an idle one where there is one, else a new map.
  void* take(size_t cls) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto found = free_.find(cls);
      if (found != free_.end()) {
        void* block = found->second.back();
        found->second.pop_back();
        if (found->second.empty()) {
          free_.erase(found);
        }
        cached_bytes_ -= cls;
        ++hits_;
        in_use_.emplace(block, cls);
        return block;
      }
      ++misses_;
      make_room(mapped_bytes(cls));
    }
    // Mapped here rather than by glibc, so that unmapping an idle block
    // gives its memory back to the kernel at once.
    void* block = mmap(nullptr, mapped_bytes(cls), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TORCH_CHECK(block != MAP_FAILED, "bocb's CPU cache could not map ", cls,
                " bytes: the machine is out of memory; lower the batch size");
    std::lock_guard<std::mutex> lock(mutex_);
    in_use_.emplace(block, cls);
    return block;
  }

  void give_back(void* data) {
    if (data == nullptr) {
      return;
    }
    size_t cls = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto found = in_use_.find(data);
      if (found != in_use_.end()) {
        cls = found->second;
        in_use_.erase(found);
        if (cached_bytes_ + cls <= limit_) {
          free_[cls].push_back(data);
          cached_bytes_ += cls;
          return;
        }
      }
    }
    if (cls == 0) {
      c10::free_cpu(data);
    } else {
      munmap(data, mapped_bytes(cls));
    }
  }

  // Idle blocks of the sizes a step no longer asks for would otherwise add
  // up beside the ones it does: before mapping `bytes`, unmap idle blocks,
  // largest first, until the machine has `bytes` plus the reserve free.
  void make_room(size_t bytes) {
    if (cached_bytes_ == 0) {
      return;
    }
    const int64_t available = available_bytes();
    if (available < 0) {
      return;
    }
    size_t free_now = static_cast<size_t>(available);
    while (cached_bytes_ > 0 && free_now < bytes + reserve_) {
      free_now += unmap_largest();
    }
  }

  // Unmaps one idle block of the largest class; returns its mapped size.
  size_t unmap_largest() {
    auto largest = std::prev(free_.end());
    const size_t cls = largest->first;
    munmap(largest->second.back(), mapped_bytes(cls));
    largest->second.pop_back();
    if (largest->second.empty()) {
      free_.erase(largest);
    }
    cached_bytes_ -= cls;
    return mapped_bytes(cls);
  }

  // Unmaps idle blocks, largest first, until at most `bytes` stay.
  void trim_to(size_t bytes) {
    while (cached_bytes_ > bytes) {
      unmap_largest();
    }
  }

  static void release_block(void* data);

  std::mutex mutex_;
  // Idle blocks by size class; empty classes are erased.
  std::map<size_t, std::vector<void*>> free_;
  // The class of every mapped block handed out and not yet given back.
  std::unordered_map<void*, size_t> in_use_;
  size_t cached_bytes_ = 0;
  size_t limit_ = 0;
  size_t reserve_ = 0;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

// Never destroyed: tensors may be freed during static destruction at exit.
CachingCpuAllocator* const cache = new CachingCpuAllocator();

void CachingCpuAllocator::release_block(void* data) { cache->give_back(data); }

}  // namespace

extern "C" {

// Makes the cache libtorch's CPU allocator, keeping at most `limit` idle
// bytes and unmapping idle ones rather than leaving the machine less than
// `reserve` bytes; tensors allocated before keep their own deleter.
// Returns 0, or -1.
int bocb_cpu_cache_install(int64_t limit, int64_t reserve) {
  try {
    cache->configure(static_cast<size_t>(limit), static_cast<size_t>(reserve));
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
