//! The caching CPU allocator, in a process of its own so that no other test
//! allocates beside it and its limit can come from the environment.

use bocb_trial_runner::cpu_cache;
use tch::{Device, Kind, Tensor};

/// An odd element count, so no other allocation shares its size class.
const ELEMENTS: i64 = 1_234_567;
/// The limit this test installs the cache with.
const LIMIT_MIB: u64 = 12;
/// A reserve no machine has free, so that every new block first unmaps the
/// idle ones.
const RESERVE_MIB: u64 = 1 << 40;

fn block() -> Tensor {
    Tensor::ones([ELEMENTS], (Kind::Float, Device::Cpu))
}

#[test]
fn freed_blocks_are_reused_kept_within_the_limits_and_emptied() {
    std::env::set_var(cpu_cache::LIMIT_VAR, LIMIT_MIB.to_string());
    std::env::set_var(cpu_cache::RESERVE_VAR, RESERVE_MIB.to_string());
    assert!(cpu_cache::install());
    let before = cpu_cache::stats();

    let first = block();
    let address = first.data_ptr() as usize;
    assert_eq!(address % 64, 0, "c10's 64-byte alignment is kept");
    drop(first);
    let idle = cpu_cache::stats();
    assert!(idle.cached_bytes >= before.cached_bytes + 4 * ELEMENTS as u64);

    // The same size again gets the same block, with its values written
    // afresh rather than left over.
    let second = Tensor::zeros([ELEMENTS], (Kind::Float, Device::Cpu));
    assert_eq!(second.data_ptr() as usize, address);
    assert_eq!(second.sum(Kind::Float).double_value(&[]), 0.0);
    assert_eq!(cpu_cache::stats().hits, idle.hits + 1);
    drop(second);

    // Four blocks of 4.7 MiB freed at once: only two fit under 12 MiB.
    let blocks: Vec<Tensor> = (0..4).map(|_| block()).collect();
    drop(blocks);
    let full = cpu_cache::stats();
    assert!(full.cached_bytes <= LIMIT_MIB << 20, "{full:?}");
    assert!(full.cached_bytes >= 2 * 4 * ELEMENTS as u64, "{full:?}");

    // A block of a size the cache does not hold is mapped only after the
    // idle ones are unmapped, as the machine has less than the reserve free.
    let other = Tensor::ones([3 * ELEMENTS], (Kind::Float, Device::Cpu));
    assert_eq!(cpu_cache::stats().cached_bytes, 0);
    assert_eq!(
        other.sum(Kind::Float).double_value(&[]),
        3.0 * ELEMENTS as f64
    );
    drop(other);

    // Gradients computed through the cache equal the closed form.
    let a = Tensor::randn([300, 400], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let b = Tensor::randn([400, 500], (Kind::Float, Device::Cpu));
    for _ in 0..3 {
        let mut a = a.shallow_clone();
        a.zero_grad();
        a.matmul(&b).relu().sum(Kind::Float).backward();
        let active = a.detach().matmul(&b).gt(0.0).to_kind(Kind::Float);
        assert!(a
            .grad()
            .allclose(&active.matmul(&b.tr()), 1e-5, 1e-4, false));
    }

    cpu_cache::empty();
    assert_eq!(cpu_cache::stats().cached_bytes, 0);
}
