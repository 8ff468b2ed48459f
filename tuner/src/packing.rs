//! The rule of `trials_per_device: auto`: whether one more trial may start
//! on a device, from what probes measured of each trial's config alone (its
//! peak memory and images/s) and what the trials running together measure.
//!
//! A trial may start on a device when nothing runs there (one trial always
//! may: one that does not fit runs alone and fails or succeeds as it
//! would), or else when
//! - its config's probe and those of all running trials measured a peak
//!   (a trial without one runs alone),
//! - fewer than `max_trials` run,
//! - the running trials' peaks and its own fit in `memory_fraction` of the
//!   memory the device had free when the run began, and
//! - throughput still grows: with n trials running, n + 1 is tried only once
//!   n has been measured, every level k from 2 to n gave at least
//!   `min_gain` more than k - 1, and n + 1 was not already measured giving
//!   less.
//!
//! Throughput is counted in solo trials: each running trial's images/s over
//! its config's probe images/s, summed. For one config that is the
//! aggregate images/s over a constant; it also keeps a fast backbone next to
//! a slow one from reading as a loss. A level is measured over the time the
//! device ran exactly that many trials, each past its first batch (so model
//! building is not counted), added up across interruptions until it reaches
//! `measure_seconds` and `measure_batches` batches per trial; its value is
//! then kept for the run.
//!
//! Everything here is pure: time is passed in, in seconds.

use std::collections::BTreeMap;

pub use bocb_spec::PackingRule;

/// What the rule knows of a trial before it starts: its config's probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    /// Peak memory in bytes; `None` where the probe failed or could not
    /// read it: the trial then runs alone.
    pub peak_bytes: Option<u64>,
    /// Images per second of the config with the device to itself.
    pub solo_images_per_sec: Option<f64>,
}

/// Why a trial may not start yet.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// A running trial or this one has no measured peak, or the device's
    /// free memory is unknown: it runs alone.
    Alone,
    /// `max_trials` run already.
    MaxTrials,
    /// The peaks would pass the cap (`memory_fraction` of the free memory).
    Memory { needed: u64, cap: u64 },
    /// The throughput of `level` trials at once is not measured yet.
    Measuring { level: usize },
    /// `level` trials at once gave `gain` (0.02: 2%) over `level - 1`, less
    /// than `min_gain`: the device settles at `level - 1`.
    NoGain { level: usize, gain: f64 },
}

/// The decision for a trial of peak `peak` when trials of peaks `running`
/// run and `throughput` holds the measured levels (trials at once to their
/// throughput).
pub fn admit(
    rule: &PackingRule,
    free_bytes: Option<u64>,
    running: &[Option<u64>],
    peak: Option<u64>,
    throughput: &BTreeMap<usize, f64>,
) -> Result<(), Hold> {
    if running.is_empty() {
        return Ok(());
    }
    let (Some(peak), Some(free)) = (peak, free_bytes) else {
        return Err(Hold::Alone);
    };
    let Some(running_bytes) = running.iter().copied().sum::<Option<u64>>() else {
        return Err(Hold::Alone);
    };
    if running.len() >= rule.max_trials {
        return Err(Hold::MaxTrials);
    }
    let cap = (free as f64 * rule.memory_fraction) as u64;
    let needed = running_bytes + peak;
    if needed > cap {
        return Err(Hold::Memory { needed, cap });
    }
    match settled_level(rule, throughput) {
        (level, _) if running.len() < level => Ok(()),
        (_, hold) => Err(hold),
    }
}

/// The most trials at once the measurements allow so far, and what holds
/// the next level back.
fn settled_level(rule: &PackingRule, throughput: &BTreeMap<usize, f64>) -> (usize, Hold) {
    let mut level = 1;
    loop {
        let Some(&now) = throughput.get(&level) else {
            return (level, Hold::Measuring { level });
        };
        if let Some(&before) = throughput.get(&(level - 1)) {
            if now < (1.0 + rule.min_gain) * before {
                let gain = now / before - 1.0;
                return (level - 1, Hold::NoGain { level, gain });
            }
        }
        level += 1;
    }
}

/// The trials running on one device and the throughput of each level:
/// the state [`admit`] decides on, kept up to date as trials start, report
/// batches and end.
#[derive(Debug, Clone)]
pub struct DeviceLoad {
    rule: PackingRule,
    free_bytes: Option<u64>,
    running: BTreeMap<u64, Running>,
    next_id: u64,
    /// Measured levels, kept for the run.
    throughput: BTreeMap<usize, f64>,
    /// Time counted so far towards levels not yet measured.
    counted: BTreeMap<usize, Span>,
    /// The span being counted, at the current level, and when it began.
    open: Option<(f64, Span)>,
}

#[derive(Debug, Clone)]
struct Running {
    demand: Demand,
    /// Reported a batch since it started.
    warm: bool,
    /// Another trial ran beside it at some point.
    shared: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Span {
    seconds: f64,
    /// Solo-trial seconds of work: images over the config's solo images/s.
    work: f64,
    batches: u64,
}

/// A level's throughput, just measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub level: usize,
    pub throughput: f64,
}

impl DeviceLoad {
    /// An idle device with `free_bytes` free for trials.
    pub fn new(rule: PackingRule, free_bytes: Option<u64>) -> Self {
        DeviceLoad {
            rule,
            free_bytes,
            running: BTreeMap::new(),
            next_id: 0,
            throughput: BTreeMap::new(),
            counted: BTreeMap::new(),
            open: None,
        }
    }

    /// Whether a trial of `demand` may start now.
    pub fn admission(&self, demand: &Demand) -> Result<(), Hold> {
        let peaks: Vec<Option<u64>> = self.running.values().map(|r| r.demand.peak_bytes).collect();
        admit(
            &self.rule,
            self.free_bytes,
            &peaks,
            demand.peak_bytes,
            &self.throughput,
        )
    }

    /// Records that a trial of `demand` started at `now`; its id.
    pub fn start(&mut self, demand: Demand, now: f64) -> u64 {
        self.close_span(now);
        let id = self.next_id;
        self.next_id += 1;
        self.running.insert(
            id,
            Running {
                demand,
                warm: false,
                shared: false,
            },
        );
        if self.running.len() > 1 {
            self.running.values_mut().for_each(|r| r.shared = true);
        }
        id
    }

    /// Records a training batch of `images` of trial `id` at `now`; the
    /// level it completed the measurement of, if any.
    pub fn batch(&mut self, id: u64, images: u64, now: f64) -> Option<Measured> {
        let trial = self.running.get_mut(&id)?;
        if !trial.warm {
            // Its first batch ends its start-up, which is not counted.
            trial.warm = true;
            self.open_span(now);
            return None;
        }
        let solo = trial.demand.solo_images_per_sec?;
        let (begun, span) = self.open.as_mut()?;
        span.work += images as f64 / solo;
        span.batches += 1;
        let level = self.running.len();
        let seconds = now - *begun;
        let total = self.counted.get(&level).copied().unwrap_or_default();
        let (seconds, work, batches) = (
            total.seconds + seconds,
            total.work + span.work,
            total.batches + span.batches,
        );
        let enough = seconds >= self.rule.measure_seconds
            && batches >= self.rule.measure_batches * level as u64;
        if !enough || seconds <= 0.0 {
            return None;
        }
        self.open = None;
        self.counted.remove(&level);
        let throughput = work / seconds;
        self.throughput.insert(level, throughput);
        Some(Measured { level, throughput })
    }

    /// Records that trial `id` ended at `now`; whether another trial ran
    /// beside it at some point.
    pub fn end(&mut self, id: u64, now: f64) -> bool {
        self.close_span(now);
        let shared = self.running.remove(&id).is_some_and(|r| r.shared);
        self.open_span(now);
        shared
    }

    /// Whether another trial ran beside trial `id` at some point so far.
    pub fn shared(&self, id: u64) -> bool {
        self.running.get(&id).is_some_and(|r| r.shared)
    }

    /// Trials running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// The largest measured peak among the running trials.
    pub fn largest_running_peak(&self) -> Option<u64> {
        self.running
            .values()
            .filter_map(|r| r.demand.peak_bytes)
            .max()
    }

    pub fn free_bytes(&self) -> Option<u64> {
        self.free_bytes
    }

    pub fn rule(&self) -> &PackingRule {
        &self.rule
    }

    /// The measured levels: trials at once to throughput in solo trials.
    pub fn throughput(&self) -> &BTreeMap<usize, f64> {
        &self.throughput
    }

    /// Starts counting the current level once every running trial is past
    /// its first batch and can be weighed, unless it is measured already.
    fn open_span(&mut self, now: f64) {
        let countable = self
            .running
            .values()
            .all(|r| r.warm && r.demand.solo_images_per_sec.is_some_and(|s| s > 0.0));
        let level = self.running.len();
        if self.open.is_none() && level > 0 && countable && !self.throughput.contains_key(&level) {
            self.open = Some((now, Span::default()));
        }
    }

    /// Adds the span being counted to its level's total.
    fn close_span(&mut self, now: f64) {
        if let Some((begun, span)) = self.open.take() {
            let total = self.counted.entry(self.running.len()).or_default();
            total.seconds += now - begun;
            total.work += span.work;
            total.batches += span.batches;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1 << 30;

    fn rule() -> PackingRule {
        PackingRule::default()
    }

    fn demand(peak_gb: u64, solo: f64) -> Demand {
        Demand {
            peak_bytes: Some(peak_gb * GB),
            solo_images_per_sec: Some(solo),
        }
    }

    /// A device whose trials together train `model(n)` images/s when `n`
    /// run (shared equally), fed trials of `demands` (cycled) as fast as the
    /// rule admits them, each `trial_seconds` long, in steps of 0.1 s for
    /// `seconds`. Returns how many ran at once at each step.
    fn simulate(
        rule: PackingRule,
        free_gb: u64,
        demands: &[Demand],
        model: impl Fn(usize) -> f64,
        trial_seconds: f64,
        seconds: f64,
    ) -> (DeviceLoad, Vec<usize>) {
        let mut load = DeviceLoad::new(rule, Some(free_gb * GB));
        let mut running: Vec<(u64, f64)> = Vec::new();
        let mut next = 0;
        let mut levels = Vec::new();
        let dt = 0.1;
        let mut now = 0.0;
        while now < seconds {
            running.retain(|&(id, started)| {
                let over = now - started >= trial_seconds;
                if over {
                    load.end(id, now);
                }
                !over
            });
            loop {
                let wanted = demands[next % demands.len()];
                if load.admission(&wanted).is_err() {
                    break;
                }
                running.push((load.start(wanted, now), now));
                next += 1;
            }
            levels.push(running.len());
            now += dt;
            let per_trial = model(running.len()) / running.len() as f64;
            for &(id, _) in &running {
                load.batch(id, (per_trial * dt).round() as u64, now);
            }
        }
        (load, levels)
    }

    #[test]
    fn a_memory_bound_device_stops_at_the_trials_that_fit() {
        // Throughput grows with every trial; 90% of 100 GB holds 9 of 10 GB.
        let (load, levels) = simulate(
            rule(),
            100,
            &[demand(10, 1000.0)],
            |n| 1000.0 * n as f64,
            1e9,
            2000.0,
        );
        let cap = (100.0 * 0.9 / 10.0) as usize;
        assert_eq!(cap, 9);
        assert_eq!(levels.iter().max(), Some(&cap));
        assert_eq!(levels.last(), Some(&cap));
        // Levels were tried one at a time, each after the one below was measured.
        assert!(levels.windows(2).all(|w| w[1] <= w[0] + 1), "{levels:?}");
        assert_eq!(load.throughput().len(), cap);
        assert_eq!(
            load.admission(&demand(10, 1000.0)),
            Err(Hold::Memory {
                needed: 100 * GB,
                cap: (100.0 * GB as f64 * 0.9) as u64
            })
        );
    }

    #[test]
    fn a_saturating_device_settles_where_one_more_adds_too_little() {
        // T * min(n, 3.5): 2 and 3 add 100% and 50%, 4 adds 17%, 5 adds 0%.
        let model = |n: usize| 2000.0 * (n as f64).min(3.5);
        let (load, levels) = simulate(rule(), 1000, &[demand(1, 2000.0)], model, 300.0, 3000.0);
        // 5 was tried once, measured as no gain, and not tried again.
        assert_eq!(levels.iter().max(), Some(&5));
        let after_five: Vec<usize> = levels
            .iter()
            .skip_while(|&&n| n < 5)
            .skip_while(|&&n| n == 5)
            .copied()
            .collect();
        assert!(!after_five.is_empty() && after_five.iter().all(|&n| n <= 4));
        assert_eq!(levels.last(), Some(&4));
        let throughput = load.throughput();
        for (level, measured) in throughput {
            let expected = model(*level) / 2000.0;
            assert!(
                (measured - expected).abs() < 0.02,
                "level {level}: {measured} vs {expected}"
            );
        }
        match load.admission(&demand(1, 2000.0)) {
            Err(Hold::NoGain { level: 5, gain }) => assert!(gain.abs() < 0.02, "{gain}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_gain_just_under_the_threshold_stops_and_just_over_goes_on() {
        let measured = |values: &[f64]| -> BTreeMap<usize, f64> {
            values
                .iter()
                .enumerate()
                .map(|(i, &t)| (i + 1, t))
                .collect()
        };
        let running = |n: usize| vec![Some(GB); n];
        let free = Some(1000 * GB);
        // 3 gave 4.9% over 2: back to 2 trials.
        let levels = measured(&[1.0, 1.8, 1.8 * 1.049]);
        assert!(matches!(
            admit(&rule(), free, &running(2), Some(GB), &levels),
            Err(Hold::NoGain { level: 3, .. })
        ));
        // 3 gave 5.1%: 4 may be tried once 3 runs.
        let levels = measured(&[1.0, 1.8, 1.8 * 1.051]);
        assert_eq!(admit(&rule(), free, &running(3), Some(GB), &levels), Ok(()));
        assert_eq!(
            admit(&rule(), free, &running(4), Some(GB), &levels),
            Err(Hold::Measuring { level: 4 })
        );
        // A larger `min_gain` stops earlier: 2 gave 80%, under 90%.
        let strict = PackingRule {
            min_gain: 0.9,
            ..rule()
        };
        assert!(matches!(
            admit(&strict, free, &running(2), Some(GB), &levels),
            Err(Hold::NoGain { level: 2, .. })
        ));
        // The first trial needs nothing measured; the second needs the first's level.
        let none = BTreeMap::new();
        assert_eq!(admit(&rule(), free, &[], Some(GB), &none), Ok(()));
        assert_eq!(
            admit(&rule(), free, &running(1), Some(GB), &none),
            Err(Hold::Measuring { level: 1 })
        );
        assert_eq!(
            admit(
                &PackingRule {
                    max_trials: 3,
                    ..rule()
                },
                free,
                &running(3),
                Some(GB),
                &levels
            ),
            Err(Hold::MaxTrials)
        );
    }

    #[test]
    fn mixed_peaks_fill_the_cap_and_a_finished_trial_returns_its_memory() {
        // Throughput never limits here: every level measured, doubling.
        let levels: BTreeMap<usize, f64> = (1..=16).map(|n| (n, (1u64 << n) as f64)).collect();
        let free = Some(100 * GB); // a cap of 90 GB
        let peaks = [30, 20, 20, 20, 10].map(|gb| Some(gb * GB));
        let mut running: Vec<Option<u64>> = Vec::new();
        for peak in peaks {
            if admit(&rule(), free, &running, peak, &levels).is_ok() {
                running.push(peak);
            }
        }
        // 30 + 20 + 20 + 20 = 90 fits; 10 more would not.
        assert_eq!(running, peaks[..4]);
        assert_eq!(
            admit(&rule(), free, &running, Some(10 * GB), &levels),
            Err(Hold::Memory {
                needed: 100 * GB,
                cap: 90 * GB
            })
        );
        // The 30 GB trial ends: its memory returns, and the 10 GB one fits.
        running.remove(0);
        assert_eq!(
            admit(&rule(), free, &running, Some(10 * GB), &levels),
            Ok(())
        );
        assert!(admit(&rule(), free, &running, Some(31 * GB), &levels).is_err());
        // Alone, a trial starts whatever it needs.
        assert_eq!(admit(&rule(), free, &[], Some(500 * GB), &levels), Ok(()));
    }

    #[test]
    fn a_trial_without_a_measured_peak_runs_alone() {
        let levels: BTreeMap<usize, f64> = (1..=4).map(|n| (n, n as f64)).collect();
        let free = Some(100 * GB);
        assert_eq!(admit(&rule(), free, &[], None, &levels), Ok(()));
        assert_eq!(
            admit(&rule(), free, &[None], Some(GB), &levels),
            Err(Hold::Alone)
        );
        assert_eq!(
            admit(&rule(), free, &[Some(GB)], None, &levels),
            Err(Hold::Alone)
        );
        assert_eq!(
            admit(&rule(), None, &[Some(GB)], Some(GB), &levels),
            Err(Hold::Alone)
        );
        // The simulated device never packs it.
        let unprobed = Demand {
            peak_bytes: None,
            solo_images_per_sec: None,
        };
        let (_, levels) = simulate(rule(), 100, &[unprobed], |n| n as f64 * 100.0, 50.0, 500.0);
        assert_eq!(levels.iter().max(), Some(&1));
    }

    #[test]
    fn a_level_is_measured_over_its_own_time_past_each_trials_first_batch() {
        let rule = PackingRule {
            measure_seconds: 10.0,
            measure_batches: 4,
            ..rule()
        };
        let mut load = DeviceLoad::new(rule, Some(100 * GB));
        let a = load.start(demand(1, 100.0), 0.0);
        // The first batch ends the start-up; nothing counted before it.
        assert_eq!(load.batch(a, 100, 50.0), None);
        // 4 batches, one per 2 s: 8 s counted, not yet 10.
        for i in 1..=4 {
            assert_eq!(load.batch(a, 100, 50.0 + 2.0 * f64::from(i)), None);
        }
        // A second trial starts and ends before its first batch: the span
        // at level 1 pauses, level 2 counts nothing.
        let b = load.start(demand(1, 100.0), 58.0);
        assert!(load.end(b, 70.0), "it ran beside the first");
        // Level 1 resumes at 70 s: 2 more seconds reach 10.
        assert_eq!(load.batch(a, 100, 71.0), None);
        let measured = load.batch(a, 100, 72.0).unwrap();
        assert_eq!(measured.level, 1);
        // 6 batches x 100 images at 100 images/s solo = 6 s of work in 10 s.
        assert!((measured.throughput - 0.6).abs() < 1e-9, "{measured:?}");
        // Kept: later batches at level 1 measure nothing more.
        assert_eq!(load.batch(a, 100, 200.0), None);
        assert_eq!(load.throughput().get(&1), Some(&measured.throughput));
    }

    #[test]
    fn a_trial_is_shared_once_another_ran_beside_it() {
        let mut load = DeviceLoad::new(rule(), Some(100 * GB));
        let alone = load.start(demand(1, 1.0), 0.0);
        assert!(!load.end(alone, 1.0));
        let first = load.start(demand(1, 1.0), 2.0);
        let second = load.start(demand(1, 1.0), 3.0);
        assert!(load.end(second, 4.0));
        // The first ran alone again after, but shared its device before.
        assert!(load.end(first, 9.0));
    }

    #[test]
    fn knobs_out_of_range_are_named() {
        let bad = |r: PackingRule| r.check().unwrap_err().0;
        assert_eq!(
            bad(PackingRule {
                memory_fraction: 0.0,
                ..rule()
            }),
            "memory_fraction"
        );
        assert_eq!(
            bad(PackingRule {
                memory_fraction: 1.5,
                ..rule()
            }),
            "memory_fraction"
        );
        assert_eq!(
            bad(PackingRule {
                min_gain: -0.1,
                ..rule()
            }),
            "min_gain"
        );
        assert_eq!(
            bad(PackingRule {
                max_trials: 0,
                ..rule()
            }),
            "max_trials"
        );
        assert_eq!(
            bad(PackingRule {
                measure_seconds: f64::NAN,
                ..rule()
            }),
            "measure_seconds"
        );
        assert_eq!(rule().check(), Ok(()));
    }
}
