//! Reproducible randomness for trials that share a process.
//!
//! libtorch has one process-wide generator and tch exposes no per-trial one,
//! so two trials training side by side (or a test beside a trial) would
//! take their initial weights, dropout masks and stochastic-depth draws from
//! it in whatever order their threads run. Every draw from torch's generator
//! in bocb therefore holds [`with_torch_seed`]'s lock and reseeds first: the
//! weights from the trial's seed, each training-time draw from the next value
//! of its thread's own stream. A trial then draws the same numbers whatever
//! runs beside it.

use std::cell::RefCell;
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

static TORCH_GENERATOR: Mutex<()> = Mutex::new(());

thread_local! {
    /// Seeds for this thread's training-time draws (see [`start_stream`]).
    static STREAM: RefCell<StdRng> = RefCell::new(StdRng::seed_from_u64(0));
}

/// Runs `draw` with torch's generator seeded from `seed` and held by this
/// thread alone.
pub fn with_torch_seed<T>(seed: u64, draw: impl FnOnce() -> T) -> T {
    // A panic while drawing leaves nothing half-updated to protect.
    let _held = TORCH_GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(seed as i64);
    draw()
}

/// Restarts this thread's stream of training-time seeds from `seed`.
pub fn start_stream(seed: u64) {
    // Apart from the weights' seed, which draws from the same torch generator.
    STREAM.with(|stream| *stream.borrow_mut() = StdRng::seed_from_u64(seed ^ 0x5eed_d2a3));
}

/// Runs `draw` with torch's generator seeded from the next value of this
/// thread's stream: dropout, stochastic depth, Hessian noise.
pub fn draw<T>(draw: impl FnOnce() -> T) -> T {
    let seed = STREAM.with(|stream| stream.borrow_mut().next_u64());
    with_torch_seed(seed, draw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn a_stream_repeats_its_draws_whatever_other_threads_draw() {
        let draws = || {
            start_stream(7);
            (0..20)
                .map(|_| draw(|| Tensor::rand([4], (Kind::Float, tch::Device::Cpu))))
                .collect::<Vec<_>>()
        };
        let alone = draws();
        let noise = std::thread::spawn(|| {
            for _ in 0..2000 {
                let _ = draw(|| Tensor::rand([64], (Kind::Float, tch::Device::Cpu)));
            }
        });
        let beside = draws();
        noise.join().unwrap();
        for (a, b) in alone.iter().zip(&beside) {
            assert!(a.equal(b));
        }
        start_stream(8);
        let other = draw(|| Tensor::rand([4], (Kind::Float, tch::Device::Cpu)));
        assert!(!other.equal(&alone[0]));
    }
}
