//! libtorch's CPU tensors through a caching allocator (`csrc/cpu_cache.cpp`),
//! as PyTorch's CUDA tensors are: glibc returns large freed blocks to the
//! kernel, so without it every CPU training step page-faults its
//! activations in afresh. `BOCB_CPU_CACHE_MIB` sets how much idle memory it
//! may keep (default half the machine's memory; 0 leaves libtorch's own
//! allocator in place); idle blocks are unmapped before a new block would
//! leave the machine less than `BOCB_CPU_CACHE_RESERVE_MIB` (default a tenth
//! of its memory, at least 1 GiB).

use std::sync::OnceLock;

extern "C" {
    fn bocb_cpu_cache_install(limit: i64, reserve: i64) -> i32;
    fn bocb_cpu_cache_empty() -> i32;
    fn bocb_cpu_cache_stats(cached: *mut i64, hits: *mut i64, misses: *mut i64);
}

/// The environment variable that limits the cache's idle bytes, in MiB.
pub const LIMIT_VAR: &str = "BOCB_CPU_CACHE_MIB";
/// The environment variable that sets the memory, in MiB, the cache leaves
/// the machine (it unmaps idle blocks before a new one would take it).
pub const RESERVE_VAR: &str = "BOCB_CPU_CACHE_RESERVE_MIB";

/// Where the limit is neither set nor readable from `/proc/meminfo`.
const FALLBACK_LIMIT: u64 = 4 << 30;
/// The least memory the cache leaves the machine before it maps a new
/// block (it unmaps idle ones first): a tenth of it, at least this.
const MIN_RESERVE: u64 = 1 << 30;

/// What the cache holds and has served since it was installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Idle bytes kept for reuse.
    pub cached_bytes: u64,
    /// Allocations served from cached blocks.
    pub hits: u64,
    /// Cacheable allocations that had to ask the system.
    pub misses: u64,
}

/// Makes the cache libtorch's CPU allocator (once per process) unless
/// `BOCB_CPU_CACHE_MIB` is 0. Returns whether it is in place.
pub fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let Some(limit) = limit_from_env() else {
            return false;
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let reserve = i64::try_from(reserve_from_env()).unwrap_or(i64::MAX);
        // SAFETY: a plain C function of the shim, run once per process.
        unsafe { bocb_cpu_cache_install(limit, reserve) == 0 }
    })
}

/// Frees every idle cached block, so a trial's peak memory starts from what
/// is in use (and an idle process gives its memory back).
pub fn empty() {
    // SAFETY: a plain C function of the shim; safe whether installed or not.
    unsafe {
        bocb_cpu_cache_empty();
    }
}

/// The cache's counters (all zero while it is not installed).
pub fn stats() -> CacheStats {
    let (mut cached, mut hits, mut misses) = (0i64, 0i64, 0i64);
    // SAFETY: the shim writes the three counters it is given.
    unsafe { bocb_cpu_cache_stats(&mut cached, &mut hits, &mut misses) };
    let count = |v: i64| u64::try_from(v).unwrap_or(0);
    CacheStats {
        cached_bytes: count(cached),
        hits: count(hits),
        misses: count(misses),
    }
}

/// The idle-byte limit: `BOCB_CPU_CACHE_MIB` where set (`None` for 0), else
/// half of `MemTotal`.
fn limit_from_env() -> Option<u64> {
    match bytes_from_env(
        LIMIT_VAR,
        "half the machine's memory; 0 turns the CPU cache off",
    ) {
        Some(0) => None,
        None => Some(default_limit()),
        limit => limit,
    }
}

/// `BOCB_CPU_CACHE_RESERVE_MIB` where set, else a tenth of `MemTotal` (at
/// least 1 GiB).
fn reserve_from_env() -> u64 {
    bytes_from_env(
        RESERVE_VAR,
        "a tenth of the machine's memory, at least 1 GiB",
    )
    .unwrap_or_else(|| memory_total().map_or(MIN_RESERVE, |total| (total / 10).max(MIN_RESERVE)))
}

/// `var`'s whole number of MiB in bytes; `None` where it is unset or
/// unreadable. An unreadable value falls back to the default (`default`
/// says which) with a warning rather than stopping training.
fn bytes_from_env(var: &str, default: &str) -> Option<u64> {
    let text = std::env::var(var).ok()?;
    match text.trim().parse::<u64>() {
        Ok(mib) => Some(mib.saturating_mul(1 << 20)),
        Err(_) => {
            tracing::warn!(
                "{var}={text:?} is not a whole number of MiB; using the default ({default})"
            );
            None
        }
    }
}

fn default_limit() -> u64 {
    memory_total().map_or(FALLBACK_LIMIT, |total| total / 2)
}

/// The machine's memory in bytes (`MemTotal`).
fn memory_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
