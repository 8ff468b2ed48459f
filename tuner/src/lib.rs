//! bocb's tuner: experiments, search strategies, the run loop and reports.
//! The `bocb` binary is the one door for users; this library is what it
//! drives, so tests and embedding programs can drive it too.

//!
//! The `train` feature (on by default) is everything that links libtorch
//! through the trial runner: training in this process (`local`), the
//! service's workers, the benches. Without it, the crate searches, serves
//! (to remote workers), imports, reports and lists what a store holds.

#[cfg(feature = "train")]
pub mod backbones;
#[cfg(feature = "train")]
pub mod bench;
pub mod executor;
pub mod experiment;
pub mod external;
#[cfg(feature = "train")]
pub mod local;
pub mod packer;
pub mod packing;
pub mod reads;
pub mod registries;
pub mod run;
pub mod search;
pub mod service;
pub mod transfer;
pub mod trial_command;

// Part of the experiment file's schema (bocb-spec), under its old path.
pub use bocb_spec::grid_centres;
// The analyses, reports and exports (bocb-analysis), under their old paths.
pub use bocb_analysis::{self as analysis, export, report, trial_table};

/// What the unit tests share.
#[cfg(test)]
mod test_support {
    use std::time::{Duration, Instant};

    /// Polls `done` until it holds; panics after a minute, so a hang fails
    /// the test instead of stalling CI.
    pub fn wait_for(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "gave up waiting");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
