//! The worker processes a service with training starts on its own machine
//! (`--workers`), restarted when they exit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use bocb_spec::DeviceChoice;
use bocb_trial_runner::device::ResolveDevice;

use super::{io_error, ServiceError, WorkerGroup, CERT_FILE};

/// The worker processes the service started, restarted when they exit.
pub(super) struct LocalWorkers {
    children: Vec<LocalWorker>,
    url: String,
    token: String,
    logs_dir: PathBuf,
    /// The service's certificate, for HTTPS.
    ca: Option<PathBuf>,
}

struct LocalWorker {
    /// As asked for (`--workers auto` or an experiment's `cpu`).
    device: DeviceChoice,
    /// What `device` is on this machine; `None` when it has no such device
    /// (the worker says why in its log).
    resolved: Option<DeviceChoice>,
    /// Numbers the workers of one `device`, for their names.
    index: usize,
    child: Child,
}

impl LocalWorkers {
    pub(super) fn start(
        groups: &[WorkerGroup],
        url: &str,
        token: &str,
        store_dir: &Path,
        tls: bool,
    ) -> Result<Self, ServiceError> {
        let mut workers = LocalWorkers {
            children: Vec::new(),
            url: url.to_string(),
            token: token.to_string(),
            logs_dir: store_dir.join("logs").join("workers"),
            ca: tls.then(|| store_dir.join(CERT_FILE)),
        };
        std::fs::create_dir_all(&workers.logs_dir)
            .map_err(io_error("cannot create", &workers.logs_dir))?;
        for group in groups {
            for _ in 0..group.count {
                workers.add(group.device)?;
            }
        }
        Ok(workers)
    }

    /// Starts one more worker on `device`.
    fn add(&mut self, device: DeviceChoice) -> Result<(), ServiceError> {
        let index = self.children.iter().filter(|w| w.device == device).count();
        let child = self.spawn(device, index)?;
        self.children.push(LocalWorker {
            device,
            resolved: device.resolve_choice().ok(),
            index,
            child,
        });
        Ok(())
    }

    /// Starts workers until each device of `slots` (resolved, as
    /// [`crate::experiment::ExperimentSpec::device_slots`] gives them) has
    /// a local worker per slot; workers already there count, whatever
    /// started them. Returns how many it started.
    pub(super) fn ensure(&mut self, slots: &[DeviceChoice]) -> Result<usize, ServiceError> {
        let mut started = 0;
        for (i, &device) in slots.iter().enumerate() {
            if slots[..i].contains(&device) {
                continue;
            }
            let wanted = slots.iter().filter(|&&d| d == device).count();
            let present = self
                .children
                .iter()
                .filter(|w| w.resolved == Some(device))
                .count();
            for _ in present..wanted {
                self.add(device)?;
                started += 1;
            }
        }
        Ok(started)
    }

    fn spawn(&self, device: DeviceChoice, index: usize) -> Result<Child, ServiceError> {
        let device = String::from(device);
        let name = format!("local-{}-{index}", device.replace(':', ""));
        let log_path = self.logs_dir.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error("cannot open", &log_path))?;
        let err_log = log
            .try_clone()
            .map_err(io_error("cannot open", &log_path))?;
        let exe = std::env::current_exe().map_err(io_error("cannot find", Path::new("bocb")))?;
        let mut command = Command::new(exe);
        command
            .args(["worker", "--server", &self.url, "--device", &device])
            .args(["--name", &name, "--exit-with-parent", "--shared-store"]);
        if let Some(ca) = &self.ca {
            command.arg("--ca").arg(ca);
        }
        command
            // Not on the command line, where other users could read it.
            .env("BOCB_TOKEN", &self.token)
            // The worker exits when this pipe closes: when the service dies.
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(io_error("cannot start a worker", &log_path))
    }

    /// Restarts local workers that exit; the trial a dead one held is
    /// re-queued by the heartbeat timeout.
    pub(super) fn supervise(workers: &Mutex<LocalWorkers>) {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let mut workers = workers.lock().expect("workers lock");
            for i in 0..workers.children.len() {
                if !matches!(workers.children[i].child.try_wait(), Ok(Some(_))) {
                    continue;
                }
                let (device, index) = (workers.children[i].device, workers.children[i].index);
                tracing::warn!("local worker {index} on {device} exited; restarting it");
                match workers.spawn(device, index) {
                    Ok(child) => workers.children[i].child = child,
                    Err(e) => tracing::error!("cannot restart a local worker: {e}"),
                }
            }
        }
    }
}
