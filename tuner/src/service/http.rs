//! The service's HTTP API: JSON under `/api/`, every request with
//! `Authorization: Bearer TOKEN` (else 401, and nothing changes).
//! The read endpoints take the CLI's options as query parameters
//! ([`crate::reads`]: `experiment`, `format`, `failure_rule`, `gamma`;
//! `as`, `backbone`, `optimizer`, `trials`; `json`) and answer the bytes
//! the CLI prints.
//!
//! | method | path                              | body → answer                                  |
//! |--------|-----------------------------------|------------------------------------------------|
//! | GET    | /api/experiments                  | → [ExperimentStatus]                           |
//! | POST   | /api/experiments                  | {yaml, base, origin} → ExperimentStatus (201)  |
//! | GET    | /api/experiments/NAME             | → ExperimentStatus                             |
//! | POST   | /api/experiments/NAME/stop        | → ExperimentStatus                             |
//! | POST   | /api/experiments/NAME/resume      | → ExperimentStatus                             |
//! | POST   | /api/experiments/NAME/trials/ID/stop | → {experiment, trial, status} (409: not waiting or running) |
//! | GET    | /api/experiments/NAME/trials      | → [TrialRecord]                                |
//! | GET    | /api/trials/ID/log                | → text                                         |
//! | GET    | /api/report?QUERY                 | → `bocb report`'s output (text)                |
//! | GET    | /api/export?QUERY                 | → `bocb export`'s output (text)                |
//! | GET    | /api/patterns?QUERY               | → `bocb patterns`' output (text)               |
//! | POST   | /api/worker/claim                 | {worker, device, experiment?} → Assignment, or 204 if none |
//! | POST   | /api/worker/heartbeat             | {attempt, log} → {} (410: drop the trial)      |
//! | POST   | /api/worker/start                 | {attempt, epochs_done} → {} (410: drop it)     |
//! | POST   | /api/worker/epoch                 | {attempt, report} → {stop} (410: drop it)      |
//! | POST   | /api/worker/finish                | {attempt, result, log} → {} (410: drop it)     |
//! | POST   | /api/worker/release               | {attempt} → {} (the trial is re-queued)        |
//! | PUT    | /api/worker/checkpoint?attempt=N  | tar of the checkpoint → {} (410: drop it)      |
//! | GET    | /api/worker/checkpoint?attempt=N  | → tar of the stored checkpoint, 204 if none    |
//! | GET    | /api/ui/...                       | → the web UI's views (`ui::views`)             |
//!
//! `GET /` (and `/ui/app.js`, `/ui/app.css`) is the web UI ([`super::ui`]),
//! the one thing served without the token. Behind `--base-path BASE`, every
//! path above starts with BASE.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bocb_spec::EpochMetrics;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use thiserror::Error;
use tiny_http::{Header, Method, Request, Response, Server};

use super::checkpoints::{self, TransferError};
use super::queue::Gone;
use super::ui::{self, views, views::UiError};
use super::{Service, ServiceError};
use crate::executor::TrialResult;
use crate::export::ExportError;
use crate::reads::{self, ExportQuery, PatternsQuery, ReadError, ReportFormat, ReportQuery};

/// Threads answering requests; claims wait up to `CLAIM_WAIT` each.
const HANDLER_THREADS: usize = 16;
const CLAIM_WAIT: Duration = Duration::from_secs(2);
/// Submitted experiment files are small; this bounds a hostile one.
const MAX_BODY_BYTES: u64 = 4 << 20;

/// `POST /api/experiments`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Submission {
    /// The experiment file's text.
    pub yaml: String,
    /// The directory relative dataset paths are taken from.
    pub base: PathBuf,
    /// The file's name, for error messages.
    pub origin: String,
}

/// Why an experiment file cannot be submitted.
#[derive(Debug, Error)]
pub enum SubmissionError {
    #[error("cannot read experiment file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot resolve the directory of {path}")]
    Base {
        path: String,
        source: std::io::Error,
    },
}

impl Submission {
    /// The experiment file at `path`, with its directory made absolute so
    /// the service finds relative dataset paths wherever it runs.
    pub fn from_file(path: &Path) -> Result<Self, SubmissionError> {
        let origin = path.display().to_string();
        let yaml = std::fs::read_to_string(path).map_err(|source| SubmissionError::Read {
            path: origin.clone(),
            source,
        })?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let base = std::path::absolute(dir).map_err(|source| SubmissionError::Base {
            path: origin.clone(),
            source,
        })?;
        Ok(Submission { yaml, base, origin })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ClaimRequest {
    pub worker: String,
    /// Where the worker trains (`cpu`, `cuda:1`), recorded with the trial.
    #[serde(default)]
    pub device: Option<String>,
    /// Only this experiment's trials (a worker a launcher started for it).
    #[serde(default)]
    pub experiment: Option<String>,
}

/// `POST /api/worker/release`: the worker leaves on a signal, its trial's
/// checkpoint sent; the trial goes back to the queue at once.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub attempt: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub attempt: u64,
    #[serde(default)]
    pub log: String,
}

/// A trial's run starts after `epochs_done` epochs (its checkpoint's; 0
/// when it starts over): the store drops the epochs recorded after them.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartRequest {
    pub attempt: u64,
    pub epochs_done: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EpochRequest {
    pub attempt: u64,
    /// Non-finite numbers (a diverged loss, a metric an external trial
    /// does not report) travel as `null`.
    pub report: EpochMetrics,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EpochAnswer {
    pub stop: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FinishRequest {
    pub attempt: u64,
    pub result: TrialResult,
    #[serde(default)]
    pub log: String,
}

/// An answer: status code and JSON body (or text, for logs).
enum Reply {
    Json(u16, serde_json::Value),
    Text(String),
    Html(String),
    /// A tar archive of this many bytes.
    Archive(std::fs::File, u64),
    NoContent,
}

fn error(status: u16, message: impl ToString) -> Reply {
    Reply::Json(status, json!({ "error": message.to_string() }))
}

impl From<ServiceError> for Reply {
    fn from(e: ServiceError) -> Self {
        let status = match e {
            ServiceError::UnknownExperiment(_) => 404,
            ServiceError::Experiment(_) | ServiceError::BadRequest(_) => 400,
            ServiceError::Run(crate::executor::RunError::SettingsChanged { .. }) => 409,
            ServiceError::Conflict(_) => 409,
            _ => 500,
        };
        error(status, e)
    }
}

impl From<ReadError> for Reply {
    fn from(e: ReadError) -> Self {
        let status = match e {
            ReadError::NotFound(_) | ReadError::Export(ExportError::UnknownExperiment { .. }) => {
                404
            }
            ReadError::BadQuery(_)
            | ReadError::Export(ExportError::Imported(_) | ExportError::Nothing { .. })
            | ReadError::Patterns(crate::analysis::patterns::PatternsError::NoWeights { .. }) => {
                400
            }
            _ => 500,
        };
        error(status, e)
    }
}

impl From<UiError> for Reply {
    fn from(e: UiError) -> Self {
        match e {
            UiError::Service(e) => e.into(),
            UiError::Read(e) => e.into(),
        }
    }
}

impl From<Gone> for Reply {
    fn from(_: Gone) -> Self {
        error(
            410,
            "the service no longer knows this attempt; drop the trial",
        )
    }
}

fn ok<T: Serialize>(value: &T) -> Reply {
    Reply::Json(200, serde_json::to_value(value).expect("answers serialize"))
}

/// Serves requests on `HANDLER_THREADS` threads until the process ends.
pub fn handle_requests(service: &Arc<Service>, server: Server) {
    let server = Arc::new(server);
    let handlers: Vec<_> = (0..HANDLER_THREADS)
        .map(|_| {
            let (server, service) = (Arc::clone(&server), Arc::clone(service));
            std::thread::spawn(move || loop {
                match server.recv() {
                    Ok(request) => respond(&service, request),
                    Err(e) => tracing::warn!("HTTP receive failed: {e}"),
                }
            })
        })
        .collect();
    for handler in handlers {
        let _ = handler.join();
    }
}

fn respond(service: &Arc<Service>, mut request: Request) {
    let url = request.url().to_string();
    let (full_path, query) = url.split_once('?').unwrap_or((&url, ""));
    let Some(path) = ui::strip_base(full_path, &service.base_path) else {
        let reply = error(
            404,
            format!(
                "{full_path} is outside the service's base path {}",
                service.base_path
            ),
        );
        return send(request, reply, false);
    };
    if *request.method() == Method::Get {
        if let Some(asset) = ui::asset(path, &service.base_path) {
            // The page and its script hold no data: they load without the
            // token, then ask the API with it.
            let headers = [
                ("Content-Type", asset.content_type),
                ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
                ("X-Content-Type-Options", "nosniff"),
                ("X-Frame-Options", "DENY"),
                ("Referrer-Policy", "no-referrer"),
            ];
            let mut response = Response::from_string(asset.body);
            for (field, value) in headers {
                response.add_header(Header::from_bytes(field, value).expect("valid header"));
            }
            if let Err(e) = request.respond(response) {
                tracing::debug!("could not send a reply: {e}");
            }
            return;
        }
    }
    let route_url = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let checkpoint = path.trim_end_matches('/') == "/api/worker/checkpoint";
    let reply = if !authorized(&request, &service.token) {
        error(
            401,
            "missing or wrong token: send `Authorization: Bearer TOKEN` (the token is in STORE/service-token)",
        )
    } else if checkpoint {
        // Streamed, not read whole under the JSON body cap.
        checkpoint_route(service, &mut request)
    } else {
        let mut body = Vec::new();
        match request
            .as_reader()
            .take(MAX_BODY_BYTES)
            .read_to_end(&mut body)
        {
            Ok(_) => route(service, request.method(), &route_url, &body),
            Err(e) => error(400, format!("cannot read the request body: {e}")),
        }
    };
    let conditional = *request.method() == Method::Get;
    send(request, reply, conditional)
}

/// What the page may load: its own script and style, the report's inline
/// styles (in the analyses' frame), and data-URL images; nothing else.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-src 'self'; base-uri 'self'; form-action 'none'; frame-ancestors 'none'";

/// A tag of `body`: the same text gives the same tag within one service run.
fn etag(body: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    format!("\"{:016x}\"", hasher.finish())
}

/// Sends `reply`; a GET's text answers carry an `ETag`, and a request whose
/// `If-None-Match` names it gets `304` and no body (the page's polls).
fn send(request: Request, reply: Reply, conditional: bool) {
    let json_type = Header::from_bytes("Content-Type", "application/json").expect("valid header");
    let text_type =
        Header::from_bytes("Content-Type", "text/plain; charset=utf-8").expect("valid header");
    let html_type =
        Header::from_bytes("Content-Type", "text/html; charset=utf-8").expect("valid header");
    let (status, body, content_type) = match reply {
        Reply::Json(status, value) => (status, value.to_string(), json_type),
        Reply::Text(text) => (200, text, text_type),
        Reply::Html(text) => (200, text, html_type),
        Reply::Archive(file, length) => {
            let tar_type =
                Header::from_bytes("Content-Type", "application/x-tar").expect("valid header");
            let sent = request.respond(
                Response::new(
                    200.into(),
                    vec![tar_type],
                    file,
                    usize::try_from(length).ok(),
                    None,
                )
                // With its length announced, a worker tells a cut answer from a whole one.
                .with_chunked_threshold(usize::MAX),
            );
            if let Err(e) = sent {
                tracing::debug!("could not send a reply: {e}");
            }
            return;
        }
        Reply::NoContent => {
            if let Err(e) = request.respond(Response::empty(204)) {
                tracing::debug!("could not send a reply: {e}");
            }
            return;
        }
    };
    let sent = if conditional && status == 200 {
        let tag = etag(&body);
        let matches = request
            .headers()
            .iter()
            .any(|h| h.field.equiv("If-None-Match") && h.value.as_str() == tag);
        let tag_header = Header::from_bytes("ETag", tag.as_bytes()).expect("valid header");
        let private =
            Header::from_bytes("Cache-Control", "no-cache, private").expect("valid header");
        if matches {
            request.respond(
                Response::empty(304)
                    .with_header(tag_header)
                    .with_header(private),
            )
        } else {
            request.respond(
                Response::from_string(body)
                    .with_header(content_type)
                    .with_header(tag_header)
                    .with_header(private),
            )
        }
    } else {
        request.respond(
            Response::from_string(body)
                .with_status_code(status)
                .with_header(content_type),
        )
    };
    if let Err(e) = sent {
        tracing::debug!("could not send a reply: {e}");
    }
}

fn authorized(request: &Request, token: &str) -> bool {
    let expected = format!("Bearer {token}");
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .is_some_and(|h| constant_time_eq(h.value.as_str().trim().as_bytes(), expected.as_bytes()))
}

/// Compares without stopping at the first difference, so the time taken
/// says nothing about how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|e| error(400, format!("bad request body: {e}")))
}

fn route(service: &Arc<Service>, method: &Method, url: &str, body: &[u8]) -> Reply {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let result = match (method, parts.as_slice()) {
        (Method::Get, ["api", "experiments"]) => service.statuses().map(|s| ok(&s)),
        (Method::Post, ["api", "experiments"]) => match parse::<Submission>(body) {
            Ok(s) => service
                .submit(&s.yaml, &s.origin, &s.base)
                .map(|status| Reply::Json(201, json!(status))),
            Err(reply) => return reply,
        },
        (Method::Get, ["api", "experiments", name]) => service.status(name).map(|s| ok(&s)),
        (Method::Post, ["api", "experiments", name, "stop"]) => service.stop(name).map(|s| ok(&s)),
        (Method::Post, ["api", "experiments", name, "resume"]) => {
            service.resume(name).map(|s| ok(&s))
        }
        (Method::Post, ["api", "experiments", name, "trials", id, "stop"]) => service
            .stop_trial(name, id)
            .map(|()| ok(&json!({ "experiment": name, "trial": id, "status": "stopped" }))),
        (Method::Get, ["api", "experiments", name, "trials"]) => {
            service.trials(name).map(|t| ok(&t))
        }
        (Method::Get, ["api", "trials", id, "log"]) => {
            let valid = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric());
            let path = service.queue.log_path(id);
            return match std::fs::read_to_string(&path) {
                Ok(text) if valid => Reply::Text(text),
                _ => error(
                    404,
                    format!("no log for trial `{id}`; `bocb trials NAME` lists trial ids"),
                ),
            };
        }
        (Method::Post, ["api", "worker", action]) => return worker_route(service, action, body),
        (Method::Get, ["api", "ui", rest @ ..]) => return ui_route(service, rest, query),
        (Method::Get, ["api", read @ ("report" | "export" | "patterns")]) => {
            return read_route(service, read, query)
        }
        _ => {
            return error(
                404,
                format!("no endpoint {method} {path}; the API is listed in docs/service.md"),
            )
        }
    };
    result.unwrap_or_else(Reply::from)
}

/// `GET /api/ui/...`: the web UI's views ([`ui::views`]).
fn ui_route(service: &Service, parts: &[&str], query: &str) -> Reply {
    let param = |key: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let number = |key: &str| -> Result<u64, Reply> {
        param(key).map_or(Ok(0), |v| {
            v.parse()
                .map_err(|_| error(400, format!("`{key}={v}`: give a whole number")))
        })
    };
    let result = match parts {
        ["experiments"] => views::overview(service),
        ["experiments", name] => views::experiment(service, name),
        ["experiments", name, "pair"] => {
            let (Some(backbone), Some(optimizer)) = (param("backbone"), param("optimizer")) else {
                return error(400, "name the pair: ?backbone=B&optimizer=O");
            };
            let cursor = match number("cursor") {
                Ok(n) => n,
                Err(reply) => return reply,
            };
            views::pair(service, name, &backbone, &optimizer, cursor)
        }
        ["experiments", name, "trials"] => views::trials(service, name, query),
        ["experiments", name, "trials", id] => match number("since") {
            Ok(since) => views::trial(service, name, id, since as usize),
            Err(reply) => return reply,
        },
        ["experiments", name, "points"] => views::points(service, name),
        ["trials", id, "log"] => match number("from") {
            Ok(from) => views::log(service, id, from),
            Err(reply) => return reply,
        },
        _ => {
            return error(
                404,
                format!(
                    "no view /api/ui/{}; the UI's views are listed in docs/ui.md",
                    parts.join("/")
                ),
            )
        }
    };
    result.map(|v| ok(&v)).unwrap_or_else(Reply::from)
}

/// `GET /api/report|export|patterns?QUERY`: what the CLI would print.
fn read_route(service: &Service, read: &str, query: &str) -> Reply {
    let (store, registries) = (&service.store, &service.registries);
    let answer = match read {
        "report" => ReportQuery::from_query(query).and_then(|q| {
            let text = reads::report_text(store, registries, &q)?;
            Ok(if q.format == ReportFormat::Html {
                Reply::Html(text)
            } else {
                Reply::Text(text)
            })
        }),
        "export" => ExportQuery::from_query(query)
            .and_then(|q| reads::export_text(store, registries, &q))
            .map(Reply::Text),
        _ => PatternsQuery::from_query(query)
            .and_then(|q| reads::patterns_text(store, &q))
            .map(Reply::Text),
    };
    answer.unwrap_or_else(Reply::from)
}

/// `PUT|GET /api/worker/checkpoint?attempt=N`: the trial's checkpoint as a
/// tar archive, taken from and given to only the attempt that holds the trial.
fn checkpoint_route(service: &Service, request: &mut Request) -> Reply {
    let query = request.url().split_once('?').map_or("", |(_, q)| q);
    let attempt = form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "attempt")
        .and_then(|(_, value)| value.parse::<u64>().ok());
    let Some(attempt) = attempt else {
        return error(
            400,
            "name the attempt: /api/worker/checkpoint?attempt=N (the claim's attempt number)",
        );
    };
    let queue = &service.queue;
    let answer = match request.method() {
        Method::Put => {
            let length = request.body_length().map(|n| n as u64);
            checkpoints::receive(queue, attempt, request.as_reader(), length)
                .map(|()| ok(&json!({})))
        }
        Method::Get => checkpoints::send(queue, attempt).map(|archive| match archive {
            Some((file, length)) => Reply::Archive(file, length),
            None => Reply::NoContent,
        }),
        other => {
            return error(
                405,
                format!("no endpoint {other} /api/worker/checkpoint; it takes PUT and GET"),
            )
        }
    };
    answer.unwrap_or_else(|e| {
        let status = match e {
            TransferError::Gone => return Gone.into(),
            TransferError::NoLength => 411,
            TransferError::TooLarge { .. } => 413,
            TransferError::Damaged(_) => 400,
            TransferError::Io { .. } => 500,
        };
        error(status, e)
    })
}

fn worker_route(service: &Service, action: &str, body: &[u8]) -> Reply {
    let queue = &service.queue;
    let result: Result<Reply, Reply> = (|| {
        match action {
        "claim" => {
            let claim: ClaimRequest = parse(body)?;
            let (device, experiment) = (claim.device.as_deref(), claim.experiment.as_deref());
            Ok(
                match queue.claim(&claim.worker, device, experiment, CLAIM_WAIT) {
                    Some(assignment) => ok(&assignment),
                    None => Reply::NoContent,
                },
            )
        }
        "heartbeat" => {
            let beat: HeartbeatRequest = parse(body)?;
            queue.heartbeat(beat.attempt, &beat.log)?;
            Ok(ok(&json!({})))
        }
        "start" => {
            let start: StartRequest = parse(body)?;
            queue.report_start(start.attempt, start.epochs_done)?;
            Ok(ok(&json!({})))
        }
        "epoch" => {
            let epoch: EpochRequest = parse(body)?;
            let stop = queue.report_epoch(epoch.attempt, epoch.report)?;
            Ok(ok(&EpochAnswer { stop }))
        }
        "finish" => {
            let finish: FinishRequest = parse(body)?;
            queue.finish(finish.attempt, finish.result, &finish.log)?;
            Ok(ok(&json!({})))
        }
        "release" => {
            let release: ReleaseRequest = parse(body)?;
            queue.release(release.attempt)?;
            Ok(ok(&json!({})))
        }
        other => Err(error(
            404,
            format!("no worker action `{other}`; valid: claim, heartbeat, start, epoch, finish, release"),
        )),
    }
    })();
    result.unwrap_or_else(|reply| reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submission_carries_its_file_and_absolute_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp.yaml");
        std::fs::write(&path, "name: e\n").unwrap();
        let submission = Submission::from_file(&path).unwrap();
        assert_eq!(submission.yaml, "name: e\n");
        assert_eq!(submission.base, dir.path());
        assert_eq!(submission.origin, path.display().to_string());
        // A missing file is named in the error.
        let missing = Submission::from_file(Path::new("missing.yaml")).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "cannot read experiment file missing.yaml"
        );
    }
}
