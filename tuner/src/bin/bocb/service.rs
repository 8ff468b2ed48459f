//! `bocb serve`, `worker`, and the service's clients: `submit`, `status`,
//! `stop`, `resume`, `trials`, `logs`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
#[cfg(feature = "train")]
use bocb_spec::DeviceChoice;
use bocb_tuner::reads;
use bocb_tuner::registries::Registries;
use bocb_tuner::service::client::{Client, ClientError};
use bocb_tuner::service::http::Submission;
use bocb_tuner::service::reader::{Reader, Served};
use bocb_tuner::service::{self, ExperimentStatus};

/// A service starts a worker on this machine's best device, where this
/// bocb can train.
const DEFAULT_WORKERS: &str = if cfg!(feature = "train") {
    "auto"
} else {
    "none"
};

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "./bocb-data")]
    store: PathBuf,
    /// Address to listen on (port 0: any free port; the URL is written
    /// to STORE/service-url).
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: String,
    /// The token clients must send (default: STORE/service-token, made
    /// at first start, readable by the owner only).
    #[arg(long)]
    token: Option<String>,
    /// Local workers to start, DEVICE[=COUNT] (cpu=2,cuda:0); `none`
    /// for remote workers only (the only choice of a bocb built without
    /// training).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_WORKERS)]
    workers: Vec<String>,
    /// Seconds without word from a worker before its trial is re-queued.
    #[arg(long, default_value_t = 30.0)]
    heartbeat_timeout: f64,
    /// Times a trial is re-queued after a lost worker before it fails.
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// Listen on an address beyond loopback although the service speaks
    /// plain HTTP (its token then crosses the network readable).
    #[arg(long)]
    insecure_listen: bool,
    /// Serve HTTPS with this certificate (PEM, leaf first); clients on
    /// this machine trust the copy in STORE/service-cert.pem.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The URL path a reverse proxy serves the service under (`/bocb`):
    /// every API path and the web UI start with it.
    #[arg(long, default_value = "")]
    base_path: String,
    /// Start workers through a cluster's scheduler as its trials queue:
    /// a YAML file `slurm: { partition, gres, time, ... }` (docs/slurm.md),
    /// for the experiments without their own `launcher:`. Usually with
    /// `--workers none`.
    #[arg(long)]
    launcher: Option<PathBuf>,
}

#[cfg(feature = "train")]
#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The service's URL (http://HOST:PORT, or https://).
    #[arg(long)]
    server: String,
    /// The HTTPS service's certificate or its CA (PEM; default: the
    /// BOCB_CA environment variable, else the system's roots).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The service's token (default: the BOCB_TOKEN environment variable).
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the service's token (keep it readable by its owner only).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Train only this experiment's trials.
    #[arg(long)]
    experiment: Option<String>,
    /// Exit once the service has had no trial for this worker for this
    /// many seconds (default: wait for work for good).
    #[arg(long)]
    exit_when_idle: Option<f64>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Shown in the trial logs (default: HOST-PID).
    #[arg(long)]
    name: Option<String>,
    /// Seconds the service may stay unreachable before the worker exits.
    #[arg(long, default_value_t = 60.0)]
    patience: f64,
    /// Exit when standard input closes (how `bocb serve` ends its workers).
    #[arg(long)]
    exit_with_parent: bool,
    /// Where trials keep their checkpoints while they train; each is sent
    /// to the service, and fetched from it by whichever worker continues
    /// the trial.
    #[arg(long, default_value = "bocb-worker-checkpoints")]
    checkpoints: PathBuf,
    /// The service's store directory is this machine's too (the service's
    /// own workers, or a shared filesystem): checkpoints are kept in it
    /// directly and never sent.
    #[arg(long, conflicts_with = "checkpoints")]
    shared_store: bool,
}

#[derive(clap::Args)]
pub struct SubmitArgs {
    experiment: PathBuf,
    #[command(flatten)]
    service: ServiceArgs,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    name: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    service: ServiceArgs,
}

#[derive(clap::Args)]
pub struct NameArgs {
    name: String,
    #[command(flatten)]
    service: ServiceArgs,
}

#[derive(clap::Args)]
pub struct TrialsArgs {
    name: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    service: ServiceArgs,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    trial: String,
    #[command(flatten)]
    service: ServiceArgs,
}

/// Where the service is and its token.
#[derive(clap::Args)]
struct ServiceArgs {
    /// The service's URL (default: from STORE/service-url, else http://127.0.0.1:7878).
    #[arg(long)]
    server: Option<String>,
    /// The service's token (default: BOCB_TOKEN, else STORE/service-token).
    #[arg(long)]
    token: Option<String>,
    /// The HTTPS service's certificate or its CA (PEM; default: BOCB_CA,
    /// else STORE/service-cert.pem).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The service's store directory, where its URL and token are found.
    #[arg(long, default_value = "./bocb-data")]
    store: PathBuf,
}

impl ServiceArgs {
    /// A client of the service these arguments point at.
    fn client(&self) -> Result<Client, ClientError> {
        Client::for_store(
            &self.store,
            self.server.clone(),
            self.token.clone(),
            self.ca.clone(),
        )
    }
}

pub fn serve(args: ServeArgs, registries: Registries) -> Result<()> {
    let heartbeat_timeout = args.heartbeat_timeout;
    if !(heartbeat_timeout.is_finite() && heartbeat_timeout > 0.0) {
        bail!("--heartbeat-timeout must be a positive number of seconds, got {heartbeat_timeout}");
    }
    let config = service::ServeConfig {
        store_dir: args.store,
        listen: args.listen,
        token: args.token,
        workers: service::parse_workers(&args.workers)
            .context("--workers takes DEVICE[=COUNT],... (cpu=2,cuda:0) or `none`")?,
        heartbeat_timeout: Duration::from_secs_f64(heartbeat_timeout),
        retries: args.retries,
        insecure_listen: args.insecure_listen,
        // clap requires both or neither.
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| service::TlsFiles { cert, key }),
        base_path: service::ui::normalize_base_path(&args.base_path)?,
        launcher: args
            .launcher
            .map(|path| service::launcher::slurm::load_launcher_file(&path))
            .transpose()?,
    };
    service::serve(&config, registries)?;
    Ok(())
}

#[cfg(feature = "train")]
pub fn worker(args: WorkerArgs, registries: &Registries) -> Result<()> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {} (--token-file)", path.display()))?
            .trim()
            .to_string(),
        None => args
            .token
            .or_else(|| std::env::var("BOCB_TOKEN").ok())
            .context("no service token: pass --token-file, --token or set BOCB_TOKEN (it is in the service's STORE/service-token)")?,
    };
    if token.is_empty() {
        bail!("the service token is empty; give the one in the service's STORE/service-token");
    }
    let exit_when_idle = args
        .exit_when_idle
        .map(|idle| {
            if idle.is_finite() && idle > 0.0 {
                Ok(Duration::from_secs_f64(idle))
            } else {
                Err(anyhow::anyhow!(
                    "--exit-when-idle must be a positive number of seconds, got {idle}"
                ))
            }
        })
        .transpose()?;
    let patience = args.patience;
    if !(patience.is_finite() && patience >= 0.0) {
        bail!("--patience must be a number of seconds, got {patience}");
    }
    if args.exit_with_parent {
        std::thread::spawn(|| {
            // Standard input closes when the service that started us dies.
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            bocb_tuner::external::end_running_programs();
            std::process::exit(0);
        });
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_string());
    let config = service::worker::WorkerConfig {
        device: args.device,
        name: args
            .name
            .unwrap_or_else(|| format!("{host}-{}", std::process::id())),
        patience: Duration::from_secs_f64(patience),
        checkpoints: (!args.shared_store).then_some(args.checkpoints),
        experiment: args.experiment,
        exit_when_idle,
    };
    let ca = args
        .ca
        .or_else(|| std::env::var_os("BOCB_CA").map(PathBuf::from));
    service::worker::run_worker(
        &Client::new(&args.server, &token, ca.as_deref())?,
        &config,
        registries,
    )?;
    Ok(())
}

pub fn submit(args: SubmitArgs) -> Result<()> {
    let submission = Submission::from_file(&args.experiment)?;
    let status: ExperimentStatus = args
        .service
        .client()?
        .post("/api/experiments", &submission)?
        .context("empty answer")?;
    eprintln!("submitted `{}`", status.name);
    print_statuses(&[status]);
    Ok(())
}

pub fn status(args: StatusArgs) -> Result<()> {
    let client = args.service.client()?;
    let statuses: Vec<ExperimentStatus> = match &args.name {
        Some(name) => vec![client.get(&format!("/api/experiments/{name}"))?],
        None => client.get("/api/experiments")?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
    } else if statuses.is_empty() {
        println!("no experiments; submit one with `bocb submit FILE`");
    } else {
        print_statuses(&statuses);
    }
    Ok(())
}

/// Posts `action` (`stop`, `resume`) for the experiment and prints the
/// status the service answers with.
pub fn experiment_action(args: NameArgs, action: &str) -> Result<()> {
    let status: ExperimentStatus = args
        .service
        .client()?
        .post(&format!("/api/experiments/{}/{action}", args.name), &())?
        .context("empty answer")?;
    print_statuses(&[status]);
    Ok(())
}

/// `bocb trials`: from the store, or through the service that holds it
/// (or the one `--server` names).
pub fn trials(args: TrialsArgs) -> Result<()> {
    let service = &args.service;
    let reader = if service.server.is_some() || !service.store.exists() {
        Reader::Service(Served::new(service.client()?))
    } else {
        Reader::open(&service.store, || service.client())?
    };
    print!(
        "{}",
        reads::trials_text(&reader.trials(&args.name)?, args.json)?
    );
    Ok(())
}

pub fn logs(args: LogsArgs) -> Result<()> {
    let path = format!("/api/trials/{}/log", args.trial);
    print!("{}", args.service.client()?.get_text(&path)?);
    Ok(())
}

fn print_statuses(statuses: &[ExperimentStatus]) {
    println!(
        "{:<24} {:<8} {:>7}  trials",
        "experiment", "state", "epochs"
    );
    for s in statuses {
        let trials: Vec<String> = s.trials.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!(
            "{:<24} {:<8} {:>7}  {}",
            s.name,
            serde_json::to_value(s.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            s.epochs_recorded,
            if trials.is_empty() {
                "none yet".to_string()
            } else {
                trials.join(", ")
            }
        );
        if let Some(error) = &s.error {
            println!("  error: {error}");
        }
        for job in &s.jobs {
            let state = job.state.to_lowercase();
            match (job.node.is_empty(), job.reason.is_empty()) {
                (false, _) => println!("  slurm job {} {state} on {}", job.id, job.node),
                (true, false) => println!("  slurm job {} {state} ({})", job.id, job.reason),
                (true, true) => println!("  slurm job {} {state}", job.id),
            }
        }
    }
}
