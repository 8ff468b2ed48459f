//! The experiment file kept with each experiment, read back.

use bocb_spec::experiment::ExperimentSpec;
use thiserror::Error;

use crate::{ExperimentRecord, Store, StoreError};

/// An experiment file kept in the store that no longer reads: an error that
/// names the experiment, never a silent skip.
#[derive(Debug, Error)]
pub enum StoredSpecError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "experiment `{name}`: the experiment file stored with it does not parse ({source}); it was \
         written by another bocb version or edited in the store: run its YAML again under a new \
         name, or restore the file it was run from"
    )]
    Unparsable {
        name: String,
        source: serde_yaml::Error,
    },
}

/// The experiment file stored with `record`, or `None` for a results table
/// imported without one.
pub fn stored_spec(
    store: &Store,
    record: &ExperimentRecord,
) -> Result<Option<ExperimentSpec>, StoredSpecError> {
    if store.imported(&record.name)?.is_some() {
        return Ok(None);
    }
    serde_yaml::from_str(&record.spec_yaml)
        .map(Some)
        .map_err(|source| StoredSpecError::Unparsable {
            name: record.name.clone(),
            source,
        })
}
