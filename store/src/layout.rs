//! How a trial lies in the store: its record without the parts that grow
//! with training in `trials.v2`, and those parts (epochs, gradient norms)
//! as JSON cut into pieces of [`PIECE_BYTES`] in `trial_details.v1`.
//!
//! Why pieces: sled 0.34 writes a leaf (up to 16 entries) larger than a
//! quarter of its 512 KiB segment as a blob, and its page cache counts a
//! blob page at the size of its pointer in the log, so it never evicts one
//! (spacejam/sled#986). Whole records of 200 epochs made such leaves and the
//! service kept every epoch it had read. Leaves of small entries stay
//! inline, count at their size and are evicted beyond the cache capacity.

use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::IVec;

use bocb_spec::{EpochMetrics, GradNorms};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::record::TrialRecord;

/// The tree of the trials' records.
pub(crate) const TRIALS_TREE: &str = "trials.v2";
/// The tree of the pieces.
pub(crate) const DETAILS_TREE: &str = "trial_details.v1";

/// Bytes of one entry of a trial's details: 16 of them (a leaf) stay far
/// below sled's inline limit of 128 KiB.
pub(crate) const PIECE_BYTES: usize = 4096;

/// A trial as `trials.v2` holds it.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredTrial {
    /// The record with `epochs` empty and no `grad_norms`.
    pub trial: TrialRecord,
    /// How many pieces its details fill (0 when it has none yet).
    pub pieces: u32,
}

/// What of a trial grows with its training.
#[derive(Serialize, Deserialize)]
struct TrialDetails {
    epochs: Vec<EpochMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grad_norms: Option<GradNorms>,
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// The key of piece `index` of the trial at `trial_key`: after the trial's
/// key and a `\0`, so an experiment's prefix covers its pieces too.
fn piece_key(trial_key: &[u8], index: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(trial_key.len() + 5);
    key.extend_from_slice(trial_key);
    key.push(0);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// A trial read in a transaction, with the pieces it was read from.
pub(crate) struct ReadTrial {
    pub record: TrialRecord,
    pieces: Vec<IVec>,
}

/// Reads the trial at `key` whole, or `None` where there is none.
pub(crate) fn read_trial(
    trials: &TransactionalTree,
    details: &TransactionalTree,
    key: &[u8],
) -> TxResult<Option<ReadTrial>> {
    let Some(value) = trials.get(key)? else {
        return Ok(None);
    };
    let stored: StoredTrial = crate::store::decode(TRIALS_TREE, key, &value).map_err(abort)?;
    let pieces = (0..stored.pieces)
        .map(|index| {
            details.get(piece_key(key, index))?.ok_or_else(|| {
                abort(StoreError::MissingPiece {
                    key: crate::store::readable_key(key),
                    index,
                    pieces: stored.pieces,
                })
            })
        })
        .collect::<TxResult<Vec<IVec>>>()?;
    let mut record = stored.trial;
    if !pieces.is_empty() {
        let joined = pieces.concat();
        let details: TrialDetails =
            crate::store::decode(DETAILS_TREE, key, &joined).map_err(abort)?;
        record.epochs = details.epochs;
        record.grad_norms = details.grad_norms;
    }
    Ok(Some(ReadTrial { record, pieces }))
}

/// Writes `record` at `key` over `old` (what was read there, if anything),
/// replacing only the pieces whose bytes changed: a new epoch rewrites the
/// last piece or two, not the trial's history.
pub(crate) fn write_trial(
    trials: &TransactionalTree,
    details: &TransactionalTree,
    key: &[u8],
    record: &TrialRecord,
    old: Option<&ReadTrial>,
) -> TxResult<()> {
    let grows = !record.epochs.is_empty() || record.grad_norms.is_some();
    let bytes = if grows {
        crate::store::encode(&TrialDetailsRef {
            epochs: &record.epochs,
            grad_norms: record.grad_norms.as_ref(),
        })
    } else {
        Vec::new()
    };
    let old_pieces: &[IVec] = old.map_or(&[], |o| &o.pieces);
    let pieces: Vec<&[u8]> = bytes.chunks(PIECE_BYTES).collect();
    for (index, piece) in (0u32..).zip(&pieces) {
        if old_pieces.get(index as usize).map(|o| o.as_ref()) != Some(*piece) {
            details.insert(piece_key(key, index), *piece)?;
        }
    }
    for index in pieces.len()..old_pieces.len() {
        details.remove(piece_key(key, index as u32))?;
    }
    let light = record.without_details();
    trials.insert(
        key,
        crate::store::encode(&StoredTrial {
            trial: light,
            pieces: pieces.len() as u32,
        }),
    )?;
    Ok(())
}

/// [`TrialDetails`] borrowed from a record, for writing.
#[derive(Serialize)]
struct TrialDetailsRef<'a> {
    epochs: &'a [EpochMetrics],
    #[serde(skip_serializing_if = "Option::is_none")]
    grad_norms: Option<&'a GradNorms>,
}

fn abort(error: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(error)
}
