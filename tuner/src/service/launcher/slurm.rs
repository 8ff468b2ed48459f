//! Workers through Slurm: the service submits job arrays of pull workers
//! (`bocb worker --experiment NAME --exit-when-idle S`), one array task per
//! trial it has queued or running, up to `max_jobs`, and cancels them when
//! the experiment stops. The settings are the service's (`bocb serve
//! --launcher FILE`) or an experiment's own (`launcher: { slurm }`), which
//! replace the service's for that experiment's jobs. Slurm places, limits
//! and accounts; this module only runs `sbatch`, `squeue`, `scancel` and
//! `scontrol show config`. Job states come from `squeue`; where the cluster
//! keeps accounting, `sacct` adds how the jobs that left the queue ended,
//! for `bocb status` only. Correctness rests on the queue's heartbeat
//! leases, never on Slurm's accounting.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use bocb_spec::launcher::{Launcher, SlurmConfig};
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SlurmError {
    #[error("{origin}: {reason}")]
    Config { origin: String, reason: String },
    #[error("cannot run `{command}` ({source}); the Slurm launcher needs Slurm's commands (sbatch, squeue, scancel, scontrol) on the service's PATH")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("cannot understand `{command}`'s output: {output}")]
    Output { command: String, output: String },
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("this bocb was built without training, so its own program cannot be the workers'; set `slurm.worker_program` to a default build of bocb that the compute nodes can run")]
    NoWorkerProgram,
}

/// Reads a launcher file (`bocb serve --launcher FILE`): `slurm: { partition, gres, time, ... }`.
pub fn load_launcher_file(path: &Path) -> Result<SlurmConfig, SlurmError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SlurmError::Config {
        origin: origin.clone(),
        reason: format!("cannot read the launcher file: {e}"),
    })?;
    parse_launcher_file(&text, &origin)
}

/// A launcher file's text, `origin` naming it in errors.
pub fn parse_launcher_file(text: &str, origin: &str) -> Result<SlurmConfig, SlurmError> {
    let bad = |reason: String| SlurmError::Config {
        origin: origin.to_string(),
        reason,
    };
    let file: Launcher = serde_yaml::from_str(text).map_err(|e| {
        bad(format!(
            "{e}; a launcher file holds `slurm: {{ partition, gres, time, cpus_per_task, mem, account, qos, max_jobs, extra, signal_before_s, idle_exit_s, server, device }}` (docs/slurm.md)"
        ))
    })?;
    file.slurm.check().map_err(|e| bad(e.message))?;
    Ok(file.slurm)
}

/// One worker job (an array task) as `squeue` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmJob {
    /// `JOBID_TASK`, or `JOBID_[RANGE]` for tasks not yet split off.
    pub id: String,
    /// Slurm's state: `PENDING`, `RUNNING`, ...
    pub state: String,
    /// Why a pending job waits (`Priority`, `Resources`, `BeginTime`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Where a running job runs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

impl SlurmJob {
    fn pending(&self) -> bool {
        self.state == "PENDING"
    }

    /// A job whose worker is leaving no longer counts as one.
    fn active(&self) -> bool {
        !matches!(
            self.state.as_str(),
            "COMPLETING" | "COMPLETED" | "CANCELLED" | "FAILED" | "TIMEOUT" | "PREEMPTED"
        )
    }
}

const SQUEUE_FORMAT: &str = "%i|%T|%r|%N|%j";

/// Parses `squeue --noheader --array --format=%i|%T|%r|%N|%j` into jobs by name.
pub fn parse_squeue(output: &str) -> BTreeMap<String, Vec<SlurmJob>> {
    let mut jobs: BTreeMap<String, Vec<SlurmJob>> = BTreeMap::new();
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        // The name is last: a `|` in it stays in it.
        let fields: Vec<&str> = line.splitn(5, '|').map(str::trim).collect();
        let [id, state, reason, node, name] = fields[..] else {
            continue;
        };
        let reason = if reason == "None" { "" } else { reason };
        jobs.entry(name.to_string()).or_default().push(SlurmJob {
            id: id.to_string(),
            state: state.to_string(),
            reason: reason.to_string(),
            node: node.to_string(),
        });
    }
    jobs
}

/// Parses `sacct --noheader --parsable2 --format=JobID,State,NodeList,JobName`
/// into the array tasks that have ended, by name (job steps such as
/// `12_0.batch` are left out; `CANCELLED by 0` reads as `CANCELLED`).
pub fn parse_sacct(output: &str) -> BTreeMap<String, Vec<SlurmJob>> {
    let mut jobs: BTreeMap<String, Vec<SlurmJob>> = BTreeMap::new();
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.splitn(4, '|').map(str::trim).collect();
        let [id, state, node, name] = fields[..] else {
            continue;
        };
        let state = state.split_whitespace().next().unwrap_or_default();
        let job = SlurmJob {
            id: id.to_string(),
            state: state.to_string(),
            reason: String::new(),
            node: if node == "None assigned" {
                String::new()
            } else {
                node.to_string()
            },
        };
        if !id.contains('.') && !job.active() {
            jobs.entry(name.to_string()).or_default().push(job);
        }
    }
    jobs
}

/// Whether `scontrol show config` names an accounting storage, which `sacct` reads.
pub fn parse_accounting(output: &str) -> bool {
    output.lines().any(|line| {
        line.split_once('=').is_some_and(|(key, value)| {
            key.trim() == "AccountingStorageType" && value.trim() != "accounting_storage/none"
        })
    })
}

/// `MaxArraySize` from `scontrol show config` (the highest index is one less).
pub fn parse_max_array_size(output: &str) -> Option<usize> {
    output.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "MaxArraySize").then(|| value.trim().parse().ok())?
    })
}

/// The sizes of the arrays that submit `count` tasks with indices below `max_array_size`.
pub fn array_sizes(count: usize, max_array_size: usize) -> Vec<usize> {
    let max = max_array_size.max(1);
    let mut sizes = vec![max; count / max];
    if !count.is_multiple_of(max) {
        sizes.push(count % max);
    }
    sizes
}

/// How many tasks of each experiment to submit and which pending jobs to
/// cancel, given `demand` (trials queued or running, by job name), the
/// active jobs by name and the cap on all of them.
pub fn plan(
    demand: &BTreeMap<String, usize>,
    jobs: &BTreeMap<String, Vec<SlurmJob>>,
    max_jobs: usize,
) -> (BTreeMap<String, usize>, Vec<String>) {
    let active = |name: &str| {
        jobs.get(name)
            .map_or(0, |jobs| jobs.iter().filter(|j| j.active()).count())
    };
    let mut total: usize = jobs.keys().map(|name| active(name)).sum();
    let mut submit = BTreeMap::new();
    for (name, &wanted) in demand {
        let have = active(name);
        let more = wanted
            .saturating_sub(have)
            .min(max_jobs.saturating_sub(total));
        if more > 0 {
            submit.insert(name.clone(), more);
            total += more;
        }
    }
    // Never more jobs than trials: surplus pending tasks go, newest first
    // (running ones exit by themselves once idle).
    let mut cancel = Vec::new();
    for (name, jobs) in jobs {
        let wanted = demand.get(name).copied().unwrap_or(0);
        let surplus = active(name).saturating_sub(wanted);
        cancel.extend(
            jobs.iter()
                .filter(|j| j.pending() && !j.id.contains('['))
                .rev()
                .take(surplus)
                .map(|j| j.id.clone()),
        );
    }
    (submit, cancel)
}

/// [`plan`] for each config apart: an experiment with its own (its cap in
/// `own_caps`) has its jobs to itself; the others share the service's cap
/// (`service_cap`). Without a service config no job is submitted for them
/// and their pending ones (left from an experiment that had its own) go.
pub fn plan_pools(
    demand: &BTreeMap<String, usize>,
    jobs: &BTreeMap<String, Vec<SlurmJob>>,
    service_cap: Option<usize>,
    own_caps: &BTreeMap<String, usize>,
) -> (BTreeMap<String, usize>, Vec<String>) {
    type Pool = (BTreeMap<String, usize>, BTreeMap<String, Vec<SlurmJob>>);
    // `None`: the service's config.
    let pool_of = |name: &str| own_caps.get_key_value(name).map(|(name, _)| name.as_str());
    let mut pools: BTreeMap<Option<&str>, Pool> = BTreeMap::new();
    for (name, &wanted) in demand {
        if pool_of(name).is_some() || service_cap.is_some() {
            let pool = pools.entry(pool_of(name)).or_default();
            pool.0.insert(name.clone(), wanted);
        }
    }
    for (name, list) in jobs {
        let pool = pools.entry(pool_of(name)).or_default();
        pool.1.insert(name.clone(), list.clone());
    }
    let mut submit = BTreeMap::new();
    let mut cancel = Vec::new();
    for (pool, (demand, jobs)) in pools {
        let cap = pool.map_or(service_cap.unwrap_or(0), |name| own_caps[name]);
        let (more, surplus) = plan(&demand, &jobs, cap);
        submit.extend(more);
        cancel.extend(surplus);
    }
    (submit, cancel)
}

/// Runs a Slurm command and returns its standard output.
fn slurm(program: &str, args: &[String]) -> Result<String, SlurmError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| SlurmError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(SlurmError::Failed {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// What the launcher needs of the service.
pub struct LaunchSettings {
    /// Job scripts and logs go below it.
    pub dir: PathBuf,
    /// The `bocb` program the jobs run.
    pub program: PathBuf,
    /// The service's URL (unless the config names another).
    pub server: String,
    pub token: String,
    /// The HTTPS service's certificate, for the workers.
    pub ca: Option<PathBuf>,
    /// Tells this service's jobs from others' (the same user may run several).
    pub service_id: String,
}

/// One Slurm config with the job script written for it.
#[derive(Debug, Clone)]
pub struct Pool {
    config: SlurmConfig,
    script: PathBuf,
}

/// What the cluster said when the launcher first used it.
#[derive(Debug, Clone, Copy)]
struct Cluster {
    max_array_size: usize,
    accounting: bool,
}

/// Submits, watches and cancels one service's worker jobs: those of the
/// experiments without a `launcher:` under the service's config (when it
/// has one), those of each experiment with its own under that one.
pub struct SlurmLauncher {
    settings: LaunchSettings,
    prefix: String,
    /// `bocb serve --launcher`'s config.
    service: Option<Pool>,
    /// The experiments with their own `launcher:`, by name.
    own: Mutex<BTreeMap<String, Pool>>,
    /// Asked once, at first use: a service that never launches through
    /// Slurm needs none of its commands.
    cluster: Mutex<Option<Cluster>>,
    /// The last `squeue` seen, by experiment.
    jobs: Mutex<BTreeMap<String, Vec<SlurmJob>>>,
    /// Where the cluster keeps accounting: the arrays submitted, the ended
    /// tasks `sacct` last showed (by experiment) and when it was asked.
    accounting: Mutex<Accounting>,
}

/// How many of the latest arrays `sacct` is asked about.
const SACCT_ARRAYS: usize = 32;
/// `sacct` reads the accounting database: ask it rarely.
const SACCT_INTERVAL: Duration = Duration::from_secs(30);
/// Ended tasks shown per experiment.
const ENDED_SHOWN: usize = 10;

#[derive(Default)]
struct Accounting {
    arrays: Vec<String>,
    ended: BTreeMap<String, Vec<SlurmJob>>,
    asked: Option<Instant>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SlurmError {
    let path = path.to_path_buf();
    move |source| SlurmError::Io { path, source }
}

impl SlurmLauncher {
    /// A launcher for the service; with `service` (its `--launcher`) it
    /// reaches the cluster now, so that a service started for Slurm fails
    /// at once where Slurm is missing. Otherwise the first experiment with
    /// its own `launcher:` does.
    pub fn new(service: Option<SlurmConfig>, settings: LaunchSettings) -> Result<Self, SlurmError> {
        let mut launcher = SlurmLauncher {
            prefix: format!("bocb-{}-", settings.service_id),
            settings,
            service: None,
            own: Mutex::new(BTreeMap::new()),
            cluster: Mutex::new(None),
            jobs: Mutex::new(BTreeMap::new()),
            accounting: Mutex::new(Accounting::default()),
        };
        if let Some(config) = service {
            launcher.service = Some(launcher.pool(config, "worker.sh")?);
        }
        Ok(launcher)
    }

    /// The cluster's `MaxArraySize` and accounting, from `scontrol show
    /// config` at the first call, which also writes the token file
    /// (readable by the owner only) below the launcher's directory.
    fn cluster(&self) -> Result<Cluster, SlurmError> {
        let mut cluster = self.cluster.lock().expect("cluster lock");
        if let Some(cluster) = *cluster {
            return Ok(cluster);
        }
        let shown = slurm("scontrol", &["show".into(), "config".into()])?;
        let max_array_size = parse_max_array_size(&shown).ok_or_else(|| SlurmError::Output {
            command: "scontrol show config".to_string(),
            output: "no MaxArraySize line".to_string(),
        })?;
        let dir = &self.settings.dir;
        std::fs::create_dir_all(dir.join("logs")).map_err(io_error(dir))?;
        let token_file = self.token_file();
        let _ = std::fs::remove_file(&token_file);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&token_file)
            .and_then(|mut f| f.write_all(self.settings.token.as_bytes()))
            .map_err(io_error(&token_file))?;
        let found = Cluster {
            max_array_size,
            accounting: parse_accounting(&shown),
        };
        *cluster = Some(found);
        Ok(found)
    }

    fn token_file(&self) -> PathBuf {
        self.settings.dir.join("token")
    }

    /// Reaches the cluster and writes `config`'s job script as `script`.
    fn pool(&self, config: SlurmConfig, script: &str) -> Result<Pool, SlurmError> {
        let settings = &self.settings;
        let program = match &config.worker_program {
            Some(program) => program,
            None if cfg!(feature = "train") => &settings.program,
            None => return Err(SlurmError::NoWorkerProgram),
        };
        self.cluster()?;
        let script = settings.dir.join(script);
        let text = job_script(
            program,
            config.server.as_deref().unwrap_or(&settings.server),
            &self.token_file(),
            settings.ca.as_deref(),
            config.device.as_deref().unwrap_or("auto"),
            config.idle_exit_s,
        );
        std::fs::write(&script, text).map_err(io_error(&script))?;
        Ok(Pool { config, script })
    }

    /// Readies experiment `name`'s own config (reaching the cluster, at
    /// the first, and writing its job script); `None` for an experiment
    /// without one. Nothing changes for the experiment until [`Self::assign`].
    pub fn prepare(
        &self,
        name: &str,
        own: Option<&SlurmConfig>,
    ) -> Result<Option<Pool>, SlurmError> {
        own.map(|config| self.pool(config.clone(), &format!("worker-{name}.sh")))
            .transpose()
    }

    /// From now on experiment `name`'s jobs follow `own` (from
    /// [`Self::prepare`]), or the service's config when `None`.
    pub fn assign(&self, name: &str, own: Option<Pool>) {
        let mut pools = self.own.lock().expect("own lock");
        match own {
            Some(pool) => pools.insert(name.to_string(), pool),
            None => pools.remove(name),
        };
    }

    /// The most worker jobs the service's config allows at once (0 without one).
    pub fn max_jobs(&self) -> usize {
        self.service.as_ref().map_or(0, |p| p.config.max_jobs)
    }

    fn job_name(&self, experiment: &str) -> String {
        format!("{}{experiment}", self.prefix)
    }

    /// This service's jobs by experiment, as `squeue` shows them now.
    fn squeue(&self) -> Result<BTreeMap<String, Vec<SlurmJob>>, SlurmError> {
        let args = [
            "--me",
            "--noheader",
            "--array",
            &format!("--format={SQUEUE_FORMAT}"),
        ]
        .map(String::from);
        let all = parse_squeue(&slurm("squeue", &args)?);
        let jobs: BTreeMap<String, Vec<SlurmJob>> = all
            .into_iter()
            .filter_map(|(name, jobs)| Some((name.strip_prefix(&self.prefix)?.to_string(), jobs)))
            .collect();
        *self.jobs.lock().expect("jobs lock") = jobs.clone();
        Ok(jobs)
    }

    /// The experiment's jobs as last seen, then (where the cluster keeps
    /// accounting) the latest of its tasks that ended.
    pub fn jobs(&self, experiment: &str) -> Vec<SlurmJob> {
        let mut jobs = self
            .jobs
            .lock()
            .expect("jobs lock")
            .get(experiment)
            .cloned()
            .unwrap_or_default();
        let accounting = self.accounting.lock().expect("accounting lock");
        let ended = accounting.ended.get(experiment).into_iter().flatten();
        jobs.extend(
            ended
                .filter(|e| !jobs.iter().any(|j| j.id == e.id))
                .take(ENDED_SHOWN)
                .cloned()
                .collect::<Vec<_>>(),
        );
        jobs
    }

    /// Asks `sacct` how the latest arrays' tasks ended, at most every
    /// [`SACCT_INTERVAL`]. A failure only leaves the ended list as it was.
    fn refresh_ended(&self) {
        let arrays = {
            let accounting = self.accounting.lock().expect("accounting lock");
            if accounting.arrays.is_empty()
                || accounting
                    .asked
                    .is_some_and(|t| t.elapsed() < SACCT_INTERVAL)
            {
                return;
            }
            accounting.arrays.join(",")
        };
        let args = [
            "--noheader".to_string(),
            "--parsable2".to_string(),
            format!("--jobs={arrays}"),
            "--format=JobID,State,NodeList,JobName".to_string(),
        ];
        let shown = slurm("sacct", &args);
        let mut accounting = self.accounting.lock().expect("accounting lock");
        accounting.asked = Some(Instant::now());
        match shown {
            Ok(output) => {
                accounting.ended = parse_sacct(&output)
                    .into_iter()
                    .filter_map(|(name, mut jobs)| {
                        jobs.reverse();
                        Some((name.strip_prefix(&self.prefix)?.to_string(), jobs))
                    })
                    .collect();
            }
            Err(e) => tracing::warn!("Slurm accounting: {e}"),
        }
    }

    /// Brings the jobs in line with `demand` (trials queued or running, by
    /// experiment): submits what is missing, each config up to its
    /// `max_jobs`, and cancels pending jobs beyond it. Until some
    /// experiment uses Slurm it does nothing.
    pub fn reconcile(&self, demand: &BTreeMap<String, usize>) -> Result<(), SlurmError> {
        let Some(cluster) = *self.cluster.lock().expect("cluster lock") else {
            return Ok(());
        };
        let jobs = self.squeue()?;
        if cluster.accounting {
            self.refresh_ended();
        }
        let own = self.own.lock().expect("own lock").clone();
        let own_caps: BTreeMap<String, usize> = own
            .iter()
            .map(|(name, pool)| (name.clone(), pool.config.max_jobs))
            .collect();
        let service_cap = self.service.as_ref().map(|p| p.config.max_jobs);
        let (submit, cancel) = plan_pools(demand, &jobs, service_cap, &own_caps);
        if !cancel.is_empty() {
            tracing::info!("cancelling {} surplus pending worker job(s)", cancel.len());
            slurm("scancel", &cancel)?;
        }
        let mut submitted = false;
        for (experiment, count) in submit {
            let Some(pool) = own.get(&experiment).or(self.service.as_ref()) else {
                continue;
            };
            for size in array_sizes(count, cluster.max_array_size) {
                let id = self.submit(pool, &experiment, size, cluster.accounting)?;
                submitted = true;
                tracing::info!(
                    "submitted Slurm job array {id} of {size} worker(s) for `{experiment}`"
                );
            }
        }
        // Show the new jobs at once: short trials may end before the next tick.
        if submitted {
            self.squeue()?;
        }
        Ok(())
    }

    /// Submits one array of `size` workers of `experiment` under `pool`'s
    /// config; returns its job id.
    fn submit(
        &self,
        pool: &Pool,
        experiment: &str,
        size: usize,
        accounting: bool,
    ) -> Result<String, SlurmError> {
        let config = &pool.config;
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", self.job_name(experiment)),
            format!("--array=0-{}%{}", size - 1, size.min(config.max_jobs)),
            "--requeue".to_string(),
            "--open-mode=append".to_string(),
            format!("--signal=B:USR1@{}", config.signal_before_s),
            format!(
                "--output={}",
                self.settings
                    .dir
                    .join("logs")
                    .join("%x_%A_%a.log")
                    .display()
            ),
        ];
        let options = [
            ("--partition", &config.partition),
            ("--gres", &config.gres),
            ("--time", &config.time),
            ("--mem", &config.mem),
            ("--account", &config.account),
            ("--qos", &config.qos),
        ];
        for (option, value) in options {
            if let Some(value) = value {
                args.push(format!("{option}={value}"));
            }
        }
        if let Some(cpus) = config.cpus_per_task {
            args.push(format!("--cpus-per-task={cpus}"));
        }
        args.extend(config.extra.iter().cloned());
        args.push(pool.script.display().to_string());
        args.push(experiment.to_string());
        let output = slurm("sbatch", &args)?;
        // `JOBID` or `JOBID;CLUSTER`.
        let id = output.trim().split(';').next().unwrap_or_default();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SlurmError::Output {
                command: "sbatch --parsable".to_string(),
                output: output.trim().to_string(),
            });
        }
        if accounting {
            let arrays = &mut self.accounting.lock().expect("accounting lock").arrays;
            arrays.push(id.to_string());
            let excess = arrays.len().saturating_sub(SACCT_ARRAYS);
            arrays.drain(..excess);
        }
        Ok(id.to_string())
    }

    /// Cancels every job of `experiment`; their workers save what they
    /// train. Nothing to do where no experiment has used Slurm.
    pub fn cancel(&self, experiment: &str) -> Result<(), SlurmError> {
        if self.cluster.lock().expect("cluster lock").is_none() {
            return Ok(());
        }
        slurm(
            "scancel",
            &[
                "--me".to_string(),
                format!("--name={}", self.job_name(experiment)),
            ],
        )?;
        let _ = self.squeue();
        Ok(())
    }
}

/// Quotes `text` for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The batch script: one pull worker of the experiment named by its
/// argument. Slurm signals only the script (`--signal=B:`), which passes
/// USR1 and TERM on to the worker and waits for it to save and exit.
fn job_script(
    program: &Path,
    server: &str,
    token_file: &Path,
    ca: Option<&Path>,
    device: &str,
    idle_exit_s: u32,
) -> String {
    let ca = ca
        .map(|ca| format!(" --ca {}", shell_quote(&ca.display().to_string())))
        .unwrap_or_default();
    format!(
        r#"#!/bin/bash
# Written by `bocb serve`: one pull worker per array task.
# The token comes from a file only its owner reads, never the command line.
experiment=$1
task="${{SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}}_${{SLURM_ARRAY_TASK_ID:-0}}"
checkpoints="${{TMPDIR:-/tmp}}/bocb-worker-$SLURM_JOB_ID"
echo "[job $task] start $(date -u +%FT%TZ) on $(hostname) (restart ${{SLURM_RESTART_COUNT:-0}}, CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}})"
{program} worker --server {server} --token-file {token} --device {device} \
    --experiment "$experiment" --exit-when-idle {idle_exit_s} \
    --name "slurm-$task-r${{SLURM_RESTART_COUNT:-0}}" --checkpoints "$checkpoints"{ca} &
worker=$!
trap 'kill -USR1 $worker 2>/dev/null' USR1
trap 'kill -TERM $worker 2>/dev/null' TERM
# A trapped signal ends `wait` early: wait again until the worker is gone.
while true; do
    wait $worker
    status=$?
    kill -0 $worker 2>/dev/null || break
done
rm -rf "$checkpoints"
echo "[job $task] worker exited with status $status"
exit $status
"#,
        program = shell_quote(&program.display().to_string()),
        server = shell_quote(server),
        token = shell_quote(&token_file.display().to_string()),
        device = shell_quote(device),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launcher_file_is_checked_as_an_experiments_block_is() {
        let config =
            parse_launcher_file("slurm: { gres: \"gpu:1\", max_jobs: 16 }", "l.yaml").unwrap();
        assert_eq!(
            (config.gres.as_deref(), config.max_jobs),
            (Some("gpu:1"), 16)
        );
        let error = |text: &str| parse_launcher_file(text, "l.yaml").unwrap_err().to_string();
        let unknown = error("slurm: { partitio: gpu }");
        assert!(
            unknown.starts_with("l.yaml: ") && unknown.contains("unknown field `partitio`"),
            "{unknown}"
        );
        assert!(error("slurm: { max_jobs: 0 }").starts_with("l.yaml: slurm.max_jobs"));
        assert!(error("local: {}").contains("a launcher file holds `slurm:"));
    }

    /// A service without training refuses a config whose jobs would run
    /// its own program, before it asks anything of Slurm.
    #[cfg(not(feature = "train"))]
    #[test]
    fn without_training_the_workers_need_a_program_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let settings = || LaunchSettings {
            dir: dir.path().to_path_buf(),
            program: PathBuf::from("/opt/light/bocb"),
            server: "http://127.0.0.1:1".into(),
            token: "t".into(),
            ca: None,
            service_id: "s".into(),
        };
        let config = parse_launcher_file("slurm: { gres: \"gpu:1\" }", "l.yaml").unwrap();
        let refused = SlurmLauncher::new(Some(config), settings()).err().unwrap();
        assert!(matches!(refused, SlurmError::NoWorkerProgram), "{refused}");
        assert!(refused.to_string().contains("slurm.worker_program"));
        let config =
            parse_launcher_file("slurm: { worker_program: /opt/bocb/bocb }", "l.yaml").unwrap();
        assert_eq!(
            config.worker_program.as_deref(),
            Some(Path::new("/opt/bocb/bocb"))
        );
    }

    #[test]
    fn squeue_and_scontrol_output_parse() {
        let jobs = parse_squeue(
            "12_3|PENDING|JobArrayTaskLimit||bocb-a-x\n12_0|RUNNING|None|node7|bocb-a-x\n\n13_1|PENDING|BeginTime||other|name\n",
        );
        assert_eq!(jobs["bocb-a-x"].len(), 2);
        assert_eq!(jobs["bocb-a-x"][0].reason, "JobArrayTaskLimit");
        assert_eq!(jobs["bocb-a-x"][1].reason, "");
        assert_eq!(jobs["bocb-a-x"][1].node, "node7");
        assert_eq!(jobs["other|name"][0].reason, "BeginTime");
        let config = "MaxArraySizeX = 3\nMaxArraySize            = 1001\nMaxJobCount = 10000\n";
        assert_eq!(parse_max_array_size(config), Some(1001));
        assert_eq!(parse_max_array_size("nothing"), None);
        assert!(!parse_accounting(
            "AccountingStorageType   = accounting_storage/none\n"
        ));
        assert!(parse_accounting(
            "AccountingStorageHost = db\nAccountingStorageType   = accounting_storage/slurmdbd\n"
        ));
        assert!(!parse_accounting(config));
    }

    /// As `sacct --parsable2` prints an array with its steps: the ended
    /// tasks stay, steps and tasks still in the queue go.
    #[test]
    fn sacct_output_gives_the_ended_tasks() {
        let ended = parse_sacct(
            "12_0|COMPLETED|node7|bocb-a-x\n12_0.batch|COMPLETED|node7|batch\n12_1|CANCELLED by 0|node8|bocb-a-x\n12_2|RUNNING|node9|bocb-a-x\n12_[3-4]|PENDING|None assigned|bocb-a-x\n13_0|TIMEOUT|None assigned|other\n",
        );
        let x = &ended["bocb-a-x"];
        assert_eq!(
            x.iter()
                .map(|j| (j.id.as_str(), j.state.as_str(), j.node.as_str()))
                .collect::<Vec<_>>(),
            [
                ("12_0", "COMPLETED", "node7"),
                ("12_1", "CANCELLED", "node8")
            ]
        );
        assert_eq!(ended["other"][0].node, "");
        assert!(!ended.contains_key("batch"));
    }

    #[test]
    fn arrays_split_at_max_array_size() {
        assert_eq!(array_sizes(10, 4), vec![4, 4, 2]);
        assert_eq!(array_sizes(4, 4), vec![4]);
        assert_eq!(array_sizes(0, 4), Vec::<usize>::new());
    }

    fn job(id: &str, state: &str) -> SlurmJob {
        SlurmJob {
            id: id.to_string(),
            state: state.to_string(),
            reason: String::new(),
            node: String::new(),
        }
    }

    #[test]
    fn the_plan_follows_the_queue_within_max_jobs() {
        let demand: BTreeMap<String, usize> = [("a".to_string(), 5), ("b".to_string(), 3)].into();
        let jobs: BTreeMap<String, Vec<SlurmJob>> = [(
            "a".to_string(),
            vec![job("1_0", "RUNNING"), job("1_1", "COMPLETING")],
        )]
        .into();
        let (submit, cancel) = plan(&demand, &jobs, 6);
        assert_eq!(submit, [("a".to_string(), 4), ("b".to_string(), 1)].into());
        assert!(cancel.is_empty());

        // Fewer trials than jobs: the newest pending ones go, running ones stay.
        let demand: BTreeMap<String, usize> = [("a".to_string(), 1)].into();
        let jobs: BTreeMap<String, Vec<SlurmJob>> = [(
            "a".to_string(),
            vec![
                job("1_0", "RUNNING"),
                job("1_1", "PENDING"),
                job("1_2", "PENDING"),
            ],
        )]
        .into();
        let (submit, cancel) = plan(&demand, &jobs, 6);
        assert!(submit.is_empty());
        assert_eq!(cancel, vec!["1_2".to_string(), "1_1".to_string()]);
    }

    /// Each config caps its own experiments: an experiment's own cap its
    /// jobs alone, the service's those of the experiments without one.
    #[test]
    fn each_config_caps_its_own_experiments() {
        let demand: BTreeMap<String, usize> = [
            ("own".to_string(), 5),
            ("b".to_string(), 3),
            ("c".to_string(), 2),
        ]
        .into();
        let jobs: BTreeMap<String, Vec<SlurmJob>> = [
            ("own".to_string(), vec![job("1_0", "PENDING")]),
            ("b".to_string(), vec![job("2_0", "RUNNING")]),
            (
                "gone".to_string(),
                vec![job("3_0", "RUNNING"), job("3_1", "PENDING")],
            ),
        ]
        .into();
        let own: BTreeMap<String, usize> = [("own".to_string(), 2)].into();
        // The service's 6: b's job, gone's two (one leaving), two more of b, one of c.
        let (submit, cancel) = plan_pools(&demand, &jobs, Some(6), &own);
        assert_eq!(
            submit,
            [
                ("b".to_string(), 2),
                ("c".to_string(), 1),
                ("own".to_string(), 1)
            ]
            .into()
        );
        assert_eq!(cancel, vec!["3_1".to_string()]);

        // Without the service's config, only the experiment with its own gets jobs.
        let (submit, cancel) = plan_pools(&demand, &jobs, None, &own);
        assert_eq!(submit, [("own".to_string(), 1)].into());
        assert_eq!(cancel, vec!["3_1".to_string()]);
        // Its own cap is its alone: the service's full pool takes nothing from it.
        let (submit, _) = plan_pools(&demand, &jobs, Some(1), &own);
        assert_eq!(submit, [("own".to_string(), 1)].into());
    }

    #[test]
    fn the_job_script_quotes_and_keeps_the_token_off_the_command_line() {
        let script = job_script(
            Path::new("/opt/bocb it's/bocb"),
            "http://h:1",
            Path::new("/s/slurm/token"),
            None,
            "auto",
            60,
        );
        assert!(script.contains(r"'/opt/bocb it'\''s/bocb' worker"));
        assert!(script.contains("--token-file '/s/slurm/token'"));
        assert!(!script.contains("--token "));
        assert!(script.contains("trap 'kill -USR1 $worker"));
    }
}
