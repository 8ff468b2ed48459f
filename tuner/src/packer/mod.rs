//! `trials_per_device: auto` at run time: every trial config of the
//! experiment is probed once, alone on its device (kept in the store, so a
//! resumed run does not probe again), then a packer per device admits
//! trials by [`crate::packing`]'s rule as they ask to start.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bocb_spec::DeviceChoice;

use crate::packing::{Demand, DeviceLoad, Hold, PackingRule};

// Probing trains: only a build with training has it.
#[cfg(feature = "train")]
mod probing;

/// How often a waiting trial looks whether the run was stopped.
const STOP_POLL: Duration = Duration::from_millis(250);

/// The probes of an experiment's configs and a packer per device.
pub struct Packing {
    packers: Vec<DevicePacker>,
    /// By backbone, optimizer and kind of device; `None` where the probe
    /// failed (those trials run alone).
    probes: BTreeMap<(String, String, &'static str), Option<Demand>>,
}

impl Packing {
    /// The packer of `device`.
    pub fn packer(&self, device: DeviceChoice) -> Option<&DevicePacker> {
        self.packers.iter().find(|p| p.device == device)
    }

    /// What a trial of the pair asks of `device`, as its probe measured.
    pub fn demand(&self, backbone: &str, optimizer: &str, device: DeviceChoice) -> Demand {
        self.probes
            .get(&(backbone.to_string(), optimizer.to_string(), kind(device)))
            .copied()
            .flatten()
            .unwrap_or(Demand {
                peak_bytes: None,
                solo_images_per_sec: None,
            })
    }
}

fn kind(device: DeviceChoice) -> &'static str {
    match device {
        DeviceChoice::Cpu => "cpu",
        DeviceChoice::Cuda(_) => "cuda",
        DeviceChoice::Auto => "auto",
    }
}

/// `bytes` for people: GiB, or MiB below one.
fn bytes(bytes: u64) -> String {
    let gib = bytes as f64 / f64::from(1u32 << 30);
    if gib >= 1.0 {
        format!("{gib:.1} GiB")
    } else {
        format!("{:.0} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

/// Admits trials onto one device, first come first served, by the rule.
pub struct DevicePacker {
    device: DeviceChoice,
    /// Where the rule's clock starts.
    origin: Instant,
    state: Mutex<PackerState>,
    /// Signalled when a trial starts, ends, or a level is measured.
    changed: Condvar,
}

struct PackerState {
    load: DeviceLoad,
    /// Tickets of the trials waiting to start, in arrival order.
    waiting: VecDeque<u64>,
    next_waiter: u64,
    /// The level the device settled at and why, as last announced.
    announced: Option<(usize, &'static str)>,
}

impl DevicePacker {
    pub fn new(device: DeviceChoice, rule: PackingRule, free_bytes: Option<u64>) -> Self {
        DevicePacker {
            device,
            origin: Instant::now(),
            state: Mutex::new(PackerState {
                load: DeviceLoad::new(rule, free_bytes),
                waiting: VecDeque::new(),
                next_waiter: 0,
                announced: None,
            }),
            changed: Condvar::new(),
        }
    }

    /// Waits until a trial of `demand` may start, after those that asked
    /// before it; `None` once `stop` says so first. When the device settles
    /// (one more trial would not fit or not pay), `announce` gets a line.
    pub fn admit(
        &self,
        demand: Demand,
        stop: &dyn Fn() -> bool,
        announce: &dyn Fn(&str),
    ) -> Option<Ticket<'_>> {
        let mut state = self.lock();
        let me = state.next_waiter;
        state.next_waiter += 1;
        state.waiting.push_back(me);
        loop {
            if stop() {
                state.waiting.retain(|&w| w != me);
                self.changed.notify_all();
                return None;
            }
            if state.waiting.front() == Some(&me) {
                match state.load.admission(&demand) {
                    Ok(()) => {
                        state.waiting.pop_front();
                        let id = state.load.start(demand, self.now());
                        // The next in line may fit too.
                        self.changed.notify_all();
                        return Some(Ticket {
                            packer: self,
                            id,
                            probe_peak: demand.peak_bytes,
                        });
                    }
                    Err(hold) => {
                        if let Some((settled, line)) = self.settled(&state.load, &hold) {
                            if state.announced != Some(settled) {
                                state.announced = Some(settled);
                                announce(&line);
                            }
                        }
                    }
                }
            }
            state = self
                .changed
                .wait_timeout(state, STOP_POLL)
                .expect("packer lock")
                .0;
        }
    }

    /// The level the device settled at, why, and the line that says so;
    /// `None` while it is still measuring or a trial runs alone.
    fn settled(&self, load: &DeviceLoad, hold: &Hold) -> Option<((usize, &'static str), String)> {
        let running = load.running();
        let rule = load.rule();
        let memory = format!(
            "peaks up to {} of {} free",
            load.largest_running_peak().map_or("?".into(), bytes),
            load.free_bytes().map_or("?".into(), bytes)
        );
        let device = self.device;
        match *hold {
            Hold::NoGain { level, gain } => Some((
                (level - 1, "gain"),
                format!(
                    "{device}: {} trial(s) at once ({memory}; {level} at once added {:.0}% throughput, under the {:.0}% one more must add)",
                    level - 1,
                    gain * 100.0,
                    rule.min_gain * 100.0
                ),
            )),
            Hold::Memory { needed, cap } => Some((
                (running, "memory"),
                format!(
                    "{device}: {running} trial(s) at once ({memory}; one more would need {}, over {:.0}% of it: {})",
                    bytes(needed),
                    rule.memory_fraction * 100.0,
                    bytes(cap)
                ),
            )),
            Hold::MaxTrials => Some((
                (running, "max"),
                format!(
                    "{device}: {running} trials at once ({memory}; packing.max_trials is {})",
                    rule.max_trials
                ),
            )),
            Hold::Alone | Hold::Measuring { .. } => None,
        }
    }

    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    fn lock(&self) -> MutexGuard<'_, PackerState> {
        // The state stays consistent: every change is one call on the load.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A trial's place on its device, from its start until it is dropped.
pub struct Ticket<'a> {
    packer: &'a DevicePacker,
    id: u64,
    probe_peak: Option<u64>,
}

impl Ticket<'_> {
    /// Records a training batch of `images`.
    pub fn batch(&self, images: u64) {
        let mut state = self.packer.lock();
        if state
            .load
            .batch(self.id, images, self.packer.now())
            .is_some()
        {
            self.packer.changed.notify_all();
        }
    }

    /// The peak memory the trial records: its config's probe peak when
    /// another trial ran beside it at some point (the device's peak then
    /// mixes them), else `measured`.
    pub fn own_peak(&self, measured: Option<u64>) -> Option<u64> {
        if self.packer.lock().load.shared(self.id) {
            self.probe_peak
        } else {
            measured
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut state = self.packer.lock();
        state.load.end(self.id, self.packer.now());
        self.packer.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::wait_for;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    const GB: u64 = 1 << 30;

    fn demand(peak: u64) -> Demand {
        Demand {
            peak_bytes: Some(peak),
            solo_images_per_sec: Some(100.0),
        }
    }

    #[test]
    fn a_waiting_trial_starts_when_the_one_before_ends_and_stop_releases_waiters() {
        // Nothing is measured within the test: the second trial waits
        // for level 1's measurement, or for the first to end.
        let rule = PackingRule {
            measure_seconds: 1e6,
            ..PackingRule::default()
        };
        let packer = DevicePacker::new(DeviceChoice::Cpu, rule, Some(100 * GB));
        let never = || false;
        let first = packer.admit(demand(GB), &never, &|_| {}).unwrap();
        let started = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let second = scope.spawn(|| {
                let ticket = packer.admit(demand(GB), &never, &|_| {});
                started.fetch_add(1, Ordering::SeqCst);
                ticket
            });
            let third = scope.spawn(|| {
                // Behind the second in line; it is stopped instead.
                wait_for(|| packer.lock().waiting.len() == 1);
                packer
                    .admit(demand(GB), &|| stop.load(Ordering::SeqCst), &|_| {})
                    .is_some()
            });
            wait_for(|| packer.lock().waiting.len() == 2);
            assert_eq!(started.load(Ordering::SeqCst), 0);
            // Alone it was: it keeps its measured peak.
            assert_eq!(first.own_peak(Some(7)), Some(7));
            drop(first);
            let second = second.join().unwrap();
            assert!(second.is_some());
            stop.store(true, Ordering::SeqCst);
            assert!(!third.join().unwrap());
            assert_eq!(packer.lock().load.running(), 1);
        });
        assert_eq!(packer.lock().waiting.len(), 0);
        assert_eq!(packer.lock().load.running(), 0);
    }

    #[test]
    fn trials_packed_together_record_their_probe_peak_and_settling_is_announced_once() {
        let rule = PackingRule {
            measure_seconds: 0.0,
            measure_batches: 1,
            ..PackingRule::default()
        };
        // Room for two 40 GB trials in 90% of 100 GB.
        let packer = DevicePacker::new(DeviceChoice::Cuda(0), rule, Some(100 * GB));
        let never = || false;
        let first = packer.admit(demand(40 * GB), &never, &|_| {}).unwrap();
        // Past its first batch, then measured over the next ones.
        wait_for(|| {
            first.batch(100);
            !packer.lock().load.throughput().is_empty()
        });
        let second = packer.admit(demand(40 * GB), &never, &|_| {}).unwrap();
        assert_eq!(first.own_peak(Some(99 * GB)), Some(40 * GB));
        assert_eq!(second.own_peak(Some(99 * GB)), Some(40 * GB));
        let lines = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            let third = scope.spawn(|| {
                packer
                    .admit(demand(40 * GB), &never, &|line| {
                        lines.lock().unwrap().push(line.to_string())
                    })
                    .is_some()
            });
            wait_for(|| !lines.lock().unwrap().is_empty());
            drop(second);
            assert!(third.join().unwrap());
        });
        let lines = lines.into_inner().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("cuda:0: 2 trial(s) at once (peaks up to 40.0 GiB of 100.0 GiB free; one more would need 120.0 GiB, over 90% of it: 90.0 GiB)"),
            "{}",
            lines[0]
        );
    }
}
