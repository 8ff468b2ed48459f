//! The caching CPU allocator installed while other threads already train, as
//! it is in a test process whose first trial starts beside running tests
//! (`bocb` installs it before any tensor exists). oneDNN takes raw buffers from whichever allocator is
//! current and frees them through whichever is current later, so a buffer
//! taken before the install is freed through the cache: it must go back to
//! the system allocator rather than abort the process ("free(): invalid
//! pointer"). In a process of its own, so that the install happens here.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bocb_trial_runner::cpu_cache;
use tch::{Device, Kind, Tensor};

/// Threads that run convolutions while the cache is installed.
const WORKERS: usize = 2;
/// Steps each worker runs after the install.
const STEPS_AFTER: usize = 20;

/// A convolution's weight gradient, computed by oneDNN on CPU.
fn weight_gradient(input: &Tensor, weight: &Tensor) -> Tensor {
    let weight = weight.detach().set_requires_grad(true);
    input
        .conv2d(&weight, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)
        .square()
        .sum(Kind::Float)
        .backward();
    weight.grad()
}

#[test]
fn installing_while_convolutions_run_frees_every_buffer_through_its_own_allocator() {
    tch::manual_seed(0);
    let options = (Kind::Float, Device::Cpu);
    let input = Tensor::randn([16, 32, 24, 24], options);
    let weight = Tensor::randn([32, 32, 3, 3], options) * 0.1;
    let expected = weight_gradient(&input, &weight);

    let installed = Arc::new(AtomicBool::new(false));
    let steps = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (input, weight) = (input.copy(), weight.copy());
            let (installed, steps) = (Arc::clone(&installed), Arc::clone(&steps));
            std::thread::spawn(move || {
                let mut after = 0;
                let mut gradients = Vec::new();
                while after < STEPS_AFTER {
                    let was_installed = installed.load(Ordering::SeqCst);
                    gradients.push(weight_gradient(&input, &weight));
                    steps.fetch_add(1, Ordering::SeqCst);
                    after += usize::from(was_installed);
                }
                gradients
            })
        })
        .collect();

    // Install while both workers are inside their convolutions.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while steps.load(Ordering::SeqCst) < 2 * WORKERS {
        assert!(
            std::time::Instant::now() < deadline,
            "the workers never reached their convolutions"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(cpu_cache::install());
    installed.store(true, Ordering::SeqCst);

    for worker in workers {
        let gradients = worker.join().expect("a worker thread panicked");
        assert!(gradients.len() > STEPS_AFTER);
        for gradient in gradients {
            assert!(gradient.allclose(&expected, 1e-4, 1e-4, false));
        }
    }
    assert!(
        cpu_cache::stats().hits > 0,
        "the cache served the later steps"
    );
}
