//! The knobs of `trials_per_device: auto`'s packing rule (`packing:` in an
//! experiment file); the rule itself is the tuner's.

use serde::{Deserialize, Serialize};

/// The knobs of the rule (`packing:` in an experiment file).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PackingRule {
    /// Share of the device's free memory the trials' peaks may fill.
    pub memory_fraction: f64,
    /// Least throughput gain one more trial must bring (0.05: 5%).
    pub min_gain: f64,
    /// Most trials at once on one device.
    pub max_trials: usize,
    /// Least time a level is measured over.
    pub measure_seconds: f64,
    /// Least batches per running trial a level is measured over.
    pub measure_batches: u64,
}

impl Default for PackingRule {
    fn default() -> Self {
        PackingRule {
            memory_fraction: 0.9,
            min_gain: 0.05,
            max_trials: 16,
            measure_seconds: 30.0,
            measure_batches: 50,
        }
    }
}

impl PackingRule {
    /// The first knob out of range: its name and what it must be.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let fraction = self.memory_fraction;
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err((
                "memory_fraction",
                format!("`packing.memory_fraction` must be above 0 and at most 1 (0.9: 90% of the free memory), got {fraction}"),
            ));
        }
        if !(self.min_gain.is_finite() && self.min_gain >= 0.0) {
            return Err((
                "min_gain",
                format!("`packing.min_gain` must be 0 or more (0.05: one more trial must add 5% throughput), got {}", self.min_gain),
            ));
        }
        if self.max_trials == 0 {
            return Err((
                "max_trials",
                "`packing.max_trials` must be at least 1".into(),
            ));
        }
        if !(self.measure_seconds.is_finite() && self.measure_seconds >= 0.0) {
            return Err((
                "measure_seconds",
                format!(
                    "`packing.measure_seconds` must be 0 or more seconds, got {}",
                    self.measure_seconds
                ),
            ));
        }
        Ok(())
    }
}
