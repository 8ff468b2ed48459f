//! The read commands' door to a store: the store itself, or, while a
//! service holds its lock, that service's read endpoints, which print the
//! same bytes ([`crate::reads`] computes them on both sides).

use std::path::Path;

use bocb_store::{Store, StoreError, TrialRecord};
use thiserror::Error;

use super::client::{Client, ClientError, URL_FILE};
use crate::reads::{
    export_text, patterns_text, report_text, trial_records, ExportQuery, PatternsQuery, ReadError,
    ReportQuery,
};
use crate::registries::Registries;

/// Why a read through [`Reader`] failed.
#[derive(Debug, Error)]
pub enum ReaderError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(
        "no store at {0}; run an experiment first (`bocb run FILE --store {0}`) or import a table (`bocb import`)"
    )]
    NoStore(String),
    #[error("{locked}; and the service named in {url_file} did not answer ({reason}); if no service runs, another bocb process holds the store: wait for it to end")]
    LockedNoService {
        locked: String,
        url_file: String,
        reason: String,
    },
}

/// Where the read commands read: the store, or the service that holds it.
pub enum Reader {
    Local(Store),
    Service(Served),
}

/// A service the read commands read through.
pub struct Served {
    client: Client,
    /// Why the store was not read itself, when it was tried: its lock
    /// error and the file the service's URL came from.
    held: Option<(String, String)>,
}

impl Served {
    /// Reads through `client`'s service.
    pub fn new(client: Client) -> Self {
        Served { client, held: None }
    }

    fn get_text(&self, path: &str) -> Result<String, ReaderError> {
        self.client.get_text(path).map_err(|e| self.explain(e))
    }

    /// A service that does not answer, after the store was found locked,
    /// is reported with the lock: something else may hold it.
    fn explain(&self, error: ClientError) -> ReaderError {
        match (&self.held, error) {
            (Some((locked, url_file)), reason @ ClientError::Unreachable { .. }) => {
                ReaderError::LockedNoService {
                    locked: locked.clone(),
                    url_file: url_file.clone(),
                    reason: reason.to_string(),
                }
            }
            (_, error) => error.into(),
        }
    }
}

impl Reader {
    /// Opens the existing store at `dir`; when it is locked and a service
    /// wrote its URL there, reads through that service's API instead (and
    /// says so on standard error). `client` makes the service's client
    /// (URL, token and certificate as the CLI resolves them).
    pub fn open(
        dir: &Path,
        client: impl FnOnce() -> Result<Client, ClientError>,
    ) -> Result<Reader, ReaderError> {
        if !dir.exists() {
            return Err(ReaderError::NoStore(dir.display().to_string()));
        }
        let locked = match Store::open(dir) {
            Ok(store) => return Ok(Reader::Local(store)),
            Err(locked @ StoreError::Locked { .. }) => locked,
            Err(e) => return Err(ReadError::from(e).into()),
        };
        let url_file = dir.join(URL_FILE);
        if !url_file.exists() {
            return Err(ReadError::from(locked).into());
        }
        let client = client()?;
        eprintln!(
            "the store at {} is held by the service at {}: reading through its API",
            dir.display(),
            client.base()
        );
        Ok(Reader::Service(Served {
            client,
            held: Some((locked.to_string(), url_file.display().to_string())),
        }))
    }

    pub fn report(
        &self,
        registries: &Registries,
        query: &ReportQuery,
    ) -> Result<String, ReaderError> {
        match self {
            Reader::Local(store) => Ok(report_text(store, registries, query)?),
            Reader::Service(served) => {
                served.get_text(&format!("/api/report?{}", query.to_query()))
            }
        }
    }

    pub fn export(
        &self,
        registries: &Registries,
        query: &ExportQuery,
    ) -> Result<String, ReaderError> {
        match self {
            Reader::Local(store) => Ok(export_text(store, registries, query)?),
            Reader::Service(served) => {
                served.get_text(&format!("/api/export?{}", query.to_query()))
            }
        }
    }

    pub fn patterns(&self, query: &PatternsQuery) -> Result<String, ReaderError> {
        match self {
            Reader::Local(store) => Ok(patterns_text(store, query)?),
            Reader::Service(served) => {
                served.get_text(&format!("/api/patterns?{}", query.to_query()))
            }
        }
    }

    pub fn trials(&self, name: &str) -> Result<Vec<TrialRecord>, ReaderError> {
        match self {
            Reader::Local(store) => Ok(trial_records(store, name)?),
            Reader::Service(served) => served
                .client
                .get(&format!("/api/experiments/{name}/trials"))
                .map_err(|e| served.explain(e)),
        }
    }
}
