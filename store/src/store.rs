use std::cell::RefCell;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use crate::error::{ImportError, StoreError};
use crate::imported::ImportedTable;
use crate::layout::{self, ReadTrial, DETAILS_TREE, TRIALS_TREE};
use crate::query::{self, GridCell, PairBest};
use crate::record::{
    unix_now_s, ExperimentRecord, ProbeRecord, TrialEnd, TrialRecord, TrialSummary,
};
use crate::Result;
use crate::{EpochMetrics, TrialStatus, GRID_POINTS};

const EXPERIMENTS_TREE: &str = "experiments.v1";
/// Trials with their epochs inside: split into `trials.v2` and its details
/// at open ([`crate::layout`]).
const WHOLE_TRIALS_TREE: &str = "trials.v1";
const IMPORTED_TREE: &str = "imported.v1";
const PROBES_TREE: &str = "probes.v1";
const SUMMARIES_TREE: &str = "summaries.v2";
/// Present in the default tree once every trial has its summary.
const SUMMARIES_MADE: &[u8] = b"summaries.v2 made";
/// Summaries before their gradients: replaced by `summaries.v2` at open.
const OLD_SUMMARIES: [(&str, &[u8]); 1] = [("summaries.v1", b"summaries.v1 made")];
/// Bytes of pages sled keeps in memory; beyond them it evicts the least
/// recently read (sled's default, 1 GiB, would let a service that reads
/// the history keep most of it). Reads past it come from the OS's file
/// cache, at tens of microseconds a page.
const CACHE_BYTES: u64 = 64 << 20;

/// Handle on a store directory. Cheap to clone; clones share the database,
/// so several threads can record at once.
#[derive(Clone, Debug)]
pub struct Store {
    // Visible to the crate's tests, which make a store from before summaries.
    pub(crate) db: sled::Db,
    experiments: sled::Tree,
    // Visible to the crate's tests, which plant old and corrupt records.
    pub(crate) trials: sled::Tree,
    pub(crate) details: sled::Tree,
    imported: sled::Tree,
    probes: sled::Tree,
    pub(crate) summaries: sled::Tree,
    dir: PathBuf,
    revisions: Arc<Revisions>,
    /// The summaries last read per experiment, at the revision they were
    /// read: one report reads them several times, and polls again and again.
    summaries_read: Arc<Mutex<HashMap<String, SummariesAt>>>,
}

/// Summaries and the revision they were read at.
type SummariesAt = (u64, Arc<Vec<TrialSummary>>);

/// Experiments whose summaries [`Store::trial_summaries`] keeps in memory.
const SUMMARIES_KEPT: usize = 8;

/// Counts the writes of this process, so readers can cache what they
/// derive from an experiment until it changes (one process holds a store).
#[derive(Debug, Default)]
struct Revisions {
    last: AtomicU64,
    by_experiment: Mutex<HashMap<String, u64>>,
}

impl Store {
    /// Opens the store in `dir`, creating the directory and an empty store
    /// if needed.
    ///
    /// Fails with [`StoreError::Locked`] while another handle (normally
    /// another bocb process) has the store open.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Self::open_waiting(dir, Duration::ZERO)
    }

    /// [`Store::open`], trying again for up to `wait` while the lock is
    /// held: a handle dropped just before (in this process, or by one that
    /// just exited) keeps it until sled's flusher thread ends at its next
    /// tick, every 500 ms.
    pub fn open_waiting(dir: impl AsRef<Path>, wait: Duration) -> Result<Store> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let deadline = Instant::now() + wait;
        let db = loop {
            let config = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES);
            match config.open() {
                Ok(db) => break db,
                Err(source) if is_lock_held(&source) && Instant::now() < deadline => {
                    drop(source);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(source) => {
                    let dir = dir.to_path_buf();
                    return Err(if is_lock_held(&source) {
                        StoreError::Locked { dir, source }
                    } else {
                        StoreError::Open { dir, source }
                    });
                }
            }
        };
        let experiments = db.open_tree(EXPERIMENTS_TREE)?;
        let trials = db.open_tree(TRIALS_TREE)?;
        let details = db.open_tree(DETAILS_TREE)?;
        let imported = db.open_tree(IMPORTED_TREE)?;
        let probes = db.open_tree(PROBES_TREE)?;
        let summaries = db.open_tree(SUMMARIES_TREE)?;
        let store = Store {
            db,
            experiments,
            trials,
            details,
            imported,
            probes,
            summaries,
            dir: dir.to_path_buf(),
            revisions: Arc::default(),
            summaries_read: Arc::default(),
        };
        if store
            .db
            .tree_names()
            .iter()
            .any(|n| n == WHOLE_TRIALS_TREE.as_bytes())
        {
            store.split_whole_trials()?;
        }
        if store.db.get(SUMMARIES_MADE)?.is_none() {
            store.make_summaries()?;
        }
        for (tree, made) in OLD_SUMMARIES {
            store.db.drop_tree(tree)?;
            store.db.remove(made)?;
        }
        Ok(store)
    }

    /// Writes the summary of every trial: a store from before summaries,
    /// or one whose making was interrupted.
    fn make_summaries(&self) -> Result<()> {
        self.summaries.clear()?;
        for key in self.trials.iter().keys() {
            let key = key?;
            if let Some(trial) = self.trial_at(&key)? {
                self.summaries
                    .insert(key, encode(&TrialSummary::of(&trial)))?;
            }
        }
        self.db.insert(SUMMARIES_MADE, &[])?;
        self.flush()
    }

    /// Moves each trial of a store written before [`crate::layout`] into
    /// it, one transaction a trial, so an interrupted move goes on at the
    /// next open; then drops the old tree.
    fn split_whole_trials(&self) -> Result<()> {
        let whole = self.db.open_tree(WHOLE_TRIALS_TREE)?;
        for entry in whole.iter() {
            let (key, value) = entry?;
            let record: TrialRecord = decode(WHOLE_TRIALS_TREE, &key, &value)?;
            (&whole, &self.trials, &self.summaries, &self.details)
                .transaction(|(whole, trials, summaries, details)| {
                    let old = layout::read_trial(trials, details, &key)?;
                    layout::write_trial(trials, details, &key, &record, old.as_ref())?;
                    summaries.insert(&key, encode(&TrialSummary::of(&record)))?;
                    whole.remove(&key)?;
                    Ok(())
                })
                .map_err(transaction_error)?;
        }
        self.flush()?;
        self.db.drop_tree(WHOLE_TRIALS_TREE)?;
        self.flush()
    }

    /// A number that changes whenever `experiment` or one of its trials is
    /// written through this handle or its clones: what is derived from the
    /// experiment at one revision holds until the revision changes. Read
    /// it before reading the records.
    pub fn revision(&self, experiment: &str) -> u64 {
        let revisions = self.revisions.by_experiment.lock().expect("revisions lock");
        revisions.get(experiment).copied().unwrap_or(0)
    }

    /// Marks `experiment` changed, after its write.
    fn changed(&self, experiment: &str) {
        let n = self.revisions.last.fetch_add(1, Ordering::SeqCst) + 1;
        let mut revisions = self.revisions.by_experiment.lock().expect("revisions lock");
        revisions.insert(experiment.to_owned(), n);
    }

    /// The store's directory; trained weights are kept below it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a trial's trained weights are kept (safetensors): below the
    /// store, by experiment and trial id.
    pub fn weights_path(&self, experiment: &str, trial_id: &str) -> PathBuf {
        self.dir
            .join("weights")
            .join(experiment)
            .join(format!("{trial_id}.safetensors"))
    }

    /// Inserts or replaces the experiment named `record.name`.
    ///
    /// Fails with [`StoreError::ExperimentIsImported`] when the name holds
    /// an imported results table.
    pub fn put_experiment(&self, record: &ExperimentRecord) -> Result<()> {
        check_name("experiment name", &record.name)?;
        self.check_not_imported(&record.name)?;
        self.experiments.insert(&record.name, encode(record))?;
        self.flush()?;
        self.changed(&record.name);
        Ok(())
    }

    /// The experiment named `name`, if stored.
    pub fn experiment(&self, name: &str) -> Result<Option<ExperimentRecord>> {
        self.experiments
            .get(name)?
            .map(|value| decode(EXPERIMENTS_TREE, name.as_bytes(), &value))
            .transpose()
    }

    /// All experiments, sorted by name.
    pub fn experiments(&self) -> Result<Vec<ExperimentRecord>> {
        // Keys are the UTF-8 names, so sled's byte order is name order.
        self.experiments
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                decode(EXPERIMENTS_TREE, &key, &value)
            })
            .collect()
    }

    /// Removes the experiment and all of its trials. Returns whether there
    /// was anything to remove.
    pub fn delete_experiment(&self, name: &str) -> Result<bool> {
        check_name("experiment name", name)?;
        let mut batch = sled::Batch::default();
        let mut removed = false;
        for key in self.trials.scan_prefix(trial_prefix(name)).keys() {
            batch.remove(key?);
            removed = true;
        }
        let mut pieces = sled::Batch::default();
        for key in self.details.scan_prefix(trial_prefix(name)).keys() {
            pieces.remove(key?);
        }
        // Trials first: a crash in between leaves the experiment listed, so
        // the delete can simply be repeated.
        (&self.trials, &self.summaries, &self.details)
            .transaction(|(trials, summaries, details)| {
                trials.apply_batch(&batch)?;
                summaries.apply_batch(&batch)?;
                details.apply_batch(&pieces)?;
                Ok(())
            })
            .map_err(transaction_error)?;
        removed |= self.imported.remove(name)?.is_some();
        removed |= self.experiments.remove(name)?.is_some();
        self.flush()?;
        self.changed(name);
        Ok(removed)
    }

    /// Inserts or replaces the trial `record.id` of `record.experiment`.
    ///
    /// Rejects records that could not be stored faithfully: empty or
    /// NUL-containing names, grid positions off the grid, non-finite params.
    pub fn put_trial(&self, record: &TrialRecord) -> Result<()> {
        self.put_trials(std::slice::from_ref(record))
    }

    /// [`Store::put_trial`] of several records at once, all or none, with
    /// one flush: for writing many (a generated store, an import).
    pub fn put_trials(&self, records: &[TrialRecord]) -> Result<()> {
        for record in records {
            check_name("experiment name", &record.experiment)?;
            check_name("trial id", &record.id)?;
            self.check_not_imported(&record.experiment)?;
            if let Some(grid) = record.grid {
                if usize::from(grid.lr) >= GRID_POINTS
                    || usize::from(grid.weight_decay) >= GRID_POINTS
                {
                    return Err(StoreError::GridOutOfRange {
                        id: record.id.clone(),
                        grid,
                    });
                }
            }
            if let Some((key, &value)) = record.params.iter().find(|(_, v)| !v.is_finite()) {
                return Err(StoreError::NonFiniteParam {
                    id: record.id.clone(),
                    key: key.clone(),
                    value,
                });
            }
        }
        let summaries: Vec<Vec<u8>> = records
            .iter()
            .map(|r| encode(&TrialSummary::of(r)))
            .collect();
        (&self.trials, &self.summaries, &self.details)
            .transaction(|(trials, summaries_tree, details)| {
                for (record, summary) in records.iter().zip(&summaries) {
                    let key = trial_key(&record.experiment, &record.id);
                    let old = layout::read_trial(trials, details, &key)?;
                    layout::write_trial(trials, details, &key, record, old.as_ref())?;
                    summaries_tree.insert(key, summary.as_slice())?;
                }
                Ok(())
            })
            .map_err(transaction_error)?;
        self.flush()?;
        let experiments: std::collections::BTreeSet<&str> =
            records.iter().map(|r| r.experiment.as_str()).collect();
        for experiment in experiments {
            self.changed(experiment);
        }
        Ok(())
    }

    /// The trial `id` of `experiment`, if stored.
    pub fn trial(&self, experiment: &str, id: &str) -> Result<Option<TrialRecord>> {
        check_name("experiment name", experiment)?;
        self.trial_at(&trial_key(experiment, id))
    }

    /// The whole trial at `key`, read in one transaction with its pieces,
    /// so a writer never shows half a history.
    fn trial_at(&self, key: &[u8]) -> Result<Option<TrialRecord>> {
        (&self.trials, &self.details)
            .transaction(|(trials, details)| {
                layout::read_trial(trials, details, key).map(|read| read.map(|r| r.record))
            })
            .map_err(transaction_error)
    }

    /// All trials of `experiment`, ordered by backbone, optimizer, stage,
    /// grid position, seed and id.
    pub fn trials(&self, experiment: &str) -> Result<Vec<TrialRecord>> {
        check_name("experiment name", experiment)?;
        let mut records = Vec::new();
        for key in self.trials.scan_prefix(trial_prefix(experiment)).keys() {
            // `None`: deleted since the scan passed it.
            records.extend(self.trial_at(&key?)?);
        }
        records.sort_by(|a, b| trial_order(a).cmp(&trial_order(b)));
        Ok(records)
    }

    /// The trials of `experiment` whose summary `keep` accepts, whole and
    /// in the order of [`Store::trials`]: one pair's trials read that pair's
    /// epochs only.
    pub fn trials_where(
        &self,
        experiment: &str,
        keep: impl Fn(&TrialSummary) -> bool,
    ) -> Result<Vec<TrialRecord>> {
        let mut records = Vec::new();
        for summary in self.trial_summaries(experiment)?.iter().filter(|s| keep(s)) {
            // `None`: deleted since the summaries were read.
            records.extend(self.trial(experiment, &summary.trial.id)?);
        }
        Ok(records)
    }

    /// The summaries of all trials of `experiment` (no epochs), in the
    /// order of [`Store::trials`], decoded once per revision of the
    /// experiment (a few microseconds a trial adds up at 10,000 trials)
    /// and shared: a reader that keeps them holds no copy of its own.
    pub fn trial_summaries(&self, experiment: &str) -> Result<Arc<Vec<TrialSummary>>> {
        check_name("experiment name", experiment)?;
        // Read before the records: a write after it makes the copy stale.
        let revision = self.revision(experiment);
        let kept = self.summaries_read.lock().expect("summaries lock");
        if let Some((at, summaries)) = kept.get(experiment) {
            if *at == revision {
                return Ok(Arc::clone(summaries));
            }
        }
        drop(kept);
        let summaries = Arc::new(self.scan_summaries(experiment)?);
        let mut kept = self.summaries_read.lock().expect("summaries lock");
        if kept.len() >= SUMMARIES_KEPT && !kept.contains_key(experiment) {
            kept.clear();
        }
        kept.insert(experiment.to_owned(), (revision, Arc::clone(&summaries)));
        Ok(summaries)
    }

    /// Every summary of `experiment`, in the order of [`Store::trials`].
    fn scan_summaries(&self, experiment: &str) -> Result<Vec<TrialSummary>> {
        let mut summaries = self
            .summaries
            .scan_prefix(trial_prefix(experiment))
            .map(|entry| {
                let (key, value) = entry?;
                decode::<TrialSummary>(SUMMARIES_TREE, &key, &value)
            })
            .collect::<Result<Vec<_>>>()?;
        summaries.sort_by(|a, b| trial_order(&a.trial).cmp(&trial_order(&b.trial)));
        Ok(summaries)
    }

    /// Records one epoch of a trial and marks it running.
    ///
    /// A run reports its epochs in order, so recorded epochs from this one
    /// on came from an earlier run (a trial trained again after a crash):
    /// they are dropped, and the epochs stay exactly those of the runs that
    /// led to this one. Atomic per trial: concurrent calls, even on the same
    /// trial, all land.
    pub fn record_epoch(
        &self,
        experiment: &str,
        id: &str,
        metrics: EpochMetrics,
    ) -> Result<TrialRecord> {
        self.update_trial(experiment, id, |trial| {
            trial.epochs.retain(|e| e.epoch < metrics.epoch);
            trial.epochs.push(metrics);
            trial.status = TrialStatus::Running;
        })
    }

    /// Drops a trial's recorded epochs after `epochs_done`: a run that
    /// continues from a checkpoint there (or starts over, at 0) trains
    /// them again, and may end before it reaches them.
    pub fn keep_epochs(&self, experiment: &str, id: &str, epochs_done: u32) -> Result<TrialRecord> {
        self.update_trial(experiment, id, |trial| {
            trial.epochs.retain(|e| e.epoch <= epochs_done)
        })
    }

    /// Records the device trial `id` is trained on (by a service's worker,
    /// known only once one claims the trial).
    pub fn set_trial_device(
        &self,
        experiment: &str,
        id: &str,
        device: &str,
    ) -> Result<TrialRecord> {
        self.update_trial(experiment, id, |trial| {
            trial.device = Some(device.to_owned())
        })
    }

    /// Ends a trial with a final `status` (done, diverged or failed) and its
    /// outcome. Fails if the trial does not exist or `status` is not final.
    ///
    /// A done trial counts in [`Store::best_per_pair`] and [`Store::grid`]
    /// only with a finite `final_accuracy`.
    pub fn finish_trial(
        &self,
        experiment: &str,
        id: &str,
        status: TrialStatus,
        end: &TrialEnd,
    ) -> Result<TrialRecord> {
        if !status.is_final() {
            return Err(StoreError::NotFinal {
                id: id.to_owned(),
                status,
            });
        }
        self.update_trial(experiment, id, |trial| {
            trial.status = status;
            trial.final_accuracy = end.final_accuracy;
            trial.ema_accuracy = end.ema_accuracy;
            trial.wall_time_s = end.wall_time_s;
            trial.precision.clone_from(&end.precision);
            trial.peak_memory_bytes = end.peak_memory_bytes;
            trial.optimizer_state_bytes = end.optimizer_state_bytes;
            trial.classes = end.classes;
            trial.error.clone_from(&end.error);
            trial.grad_norms.clone_from(&end.grad_norms);
        })
    }

    /// For each (backbone, optimizer) pair of `experiment`, the params whose
    /// done trials reach the highest mean final accuracy over their seeds.
    ///
    /// Trials group by identical params. Only done trials count, so a
    /// diverged or unfinished trial is never best however well it was doing.
    /// Equal means go to the group created first. Sorted by (backbone,
    /// optimizer); pairs without a counted trial are absent.
    pub fn best_per_pair(&self, experiment: &str) -> Result<Vec<PairBest>> {
        let summaries = self.trial_summaries(experiment)?;
        Ok(query::best_per_pair(summaries.iter().map(|s| &s.trial)))
    }

    /// The lr x weight-decay grid of one pair and stage, indexed
    /// `[lr][weight_decay]`: per position, the mean final accuracy of the
    /// done trials there (over seeds and over every param set sharing the
    /// position) and how many trials diverged or failed.
    pub fn grid(
        &self,
        experiment: &str,
        backbone: &str,
        optimizer: &str,
        stage: u8,
    ) -> Result<[[GridCell; GRID_POINTS]; GRID_POINTS]> {
        let summaries = self.trial_summaries(experiment)?;
        Ok(query::grid(
            summaries.iter().map(|s| &s.trial),
            backbone,
            optimizer,
            stage,
        ))
    }

    /// Stores an imported results table as experiment `table.experiment`,
    /// replacing a table imported there before. Its experiment record says
    /// where the table came from; the results go to their own tree, never
    /// among the trials.
    ///
    /// Fails if the experiment holds trained trials, or if a result has a
    /// non-finite accuracy, a position off the grid or an unlisted name.
    pub fn put_imported(&self, table: &ImportedTable) -> Result<()> {
        check_name("experiment name", &table.experiment)?;
        table.validate()?;
        let trials = self
            .trials
            .scan_prefix(trial_prefix(&table.experiment))
            .count();
        if trials > 0 {
            return Err(ImportError::OverTrained {
                experiment: table.experiment.clone(),
                trials,
            }
            .into());
        }
        let created_unix_s = self
            .experiment(&table.experiment)?
            .map_or(table.imported_unix_s, |e| e.created_unix_s);
        let record = ExperimentRecord {
            name: table.experiment.clone(),
            spec_yaml: format!("# imported from {}\n", table.source),
            created_unix_s,
            updated_unix_s: table.imported_unix_s,
            base_dir: None,
        };
        // Table first: a crash in between leaves it stored but unlisted, and
        // repeating the import lists it.
        self.imported.insert(&table.experiment, encode(table))?;
        self.experiments.insert(&record.name, encode(&record))?;
        self.flush()?;
        self.changed(&record.name);
        Ok(())
    }

    /// The imported results table of `experiment`, if it is an imported one.
    pub fn imported(&self, experiment: &str) -> Result<Option<ImportedTable>> {
        self.imported
            .get(experiment)?
            .map(|value| decode(IMPORTED_TREE, experiment.as_bytes(), &value))
            .transpose()
    }

    /// Inserts or replaces the probe `record.key`.
    pub fn put_probe(&self, record: &ProbeRecord) -> Result<()> {
        check_name("probe key", &record.key)?;
        self.probes.insert(&record.key, encode(record))?;
        self.flush()
    }

    /// The probe stored under `key`, if any.
    pub fn probe(&self, key: &str) -> Result<Option<ProbeRecord>> {
        self.probes
            .get(key)?
            .map(|value| decode(PROBES_TREE, key.as_bytes(), &value))
            .transpose()
    }

    /// Every stored probe, by key.
    pub fn probes(&self) -> Result<Vec<ProbeRecord>> {
        self.probes
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                decode(PROBES_TREE, &key, &value)
            })
            .collect()
    }

    fn check_not_imported(&self, experiment: &str) -> Result<()> {
        if self.imported.contains_key(experiment)? {
            return Err(StoreError::ExperimentIsImported {
                name: experiment.to_owned(),
            });
        }
        Ok(())
    }

    /// Read-modify-write of one trial and its summary in a transaction,
    /// retried until no other writer got in between; then flushed.
    /// `change` may run several times, each time on the freshly read record.
    fn update_trial(
        &self,
        experiment: &str,
        id: &str,
        change: impl FnMut(&mut TrialRecord),
    ) -> Result<TrialRecord> {
        check_name("experiment name", experiment)?;
        let key = trial_key(experiment, id);
        // The transaction takes a closure it may call again.
        let change = RefCell::new(change);
        let trial = (&self.trials, &self.summaries, &self.details)
            .transaction(|(trials, summaries, details)| {
                let old = read_existing(trials, details, &key, experiment, id)?;
                let mut trial = old.record.clone();
                (change.borrow_mut())(&mut trial);
                trial.updated_unix_s = unix_now_s();
                layout::write_trial(trials, details, &key, &trial, Some(&old))?;
                summaries.insert(key.as_slice(), encode(&TrialSummary::of(&trial)))?;
                Ok(trial)
            })
            .map_err(transaction_error)?;
        self.flush()?;
        self.changed(experiment);
        Ok(trial)
    }

    /// Makes every write so far durable; sled flushes all trees at once.
    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

/// Names become keys, and `\0` separates experiment from trial id.
fn check_name(what: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.contains('\0') {
        return Err(StoreError::InvalidName {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// [`Store::trial`] in a transaction that changes it: absent is an error.
fn read_existing(
    trials: &TransactionalTree,
    details: &TransactionalTree,
    key: &[u8],
    experiment: &str,
    id: &str,
) -> Result<ReadTrial, ConflictableTransactionError<StoreError>> {
    layout::read_trial(trials, details, key)?.ok_or_else(|| {
        ConflictableTransactionError::Abort(StoreError::TrialNotFound {
            experiment: experiment.to_owned(),
            id: id.to_owned(),
        })
    })
}

/// The order of [`Store::trials`].
fn trial_order(t: &TrialRecord) -> (&str, &str, u8, Option<crate::GridPos>, u64, &str) {
    (&t.backbone, &t.optimizer, t.stage, t.grid, t.seed, &t.id)
}

fn transaction_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

fn trial_prefix(experiment: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(experiment.len() + 1);
    prefix.extend_from_slice(experiment.as_bytes());
    prefix.push(0);
    prefix
}

fn trial_key(experiment: &str, id: &str) -> Vec<u8> {
    let mut key = trial_prefix(experiment);
    key.extend_from_slice(id.as_bytes());
    key
}

pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record)
        .expect("records have string map keys and no fallible Serialize impls")
}

pub(crate) fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    value: &[u8],
) -> Result<T> {
    serde_json::from_slice(value).map_err(|source| StoreError::Corrupt {
        tree,
        key: readable_key(key),
        source,
    })
}

/// A key for messages, with its `\0` separators shown as `/`.
pub(crate) fn readable_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace('\0', "/")
}

/// Long enough for a just-dropped handle to release the lock, for
/// [`Store::open_waiting`] where a store was closed just before.
pub const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Whether sled failed to open because another handle holds the lock
/// (sled 0.34 says so only through this message).
fn is_lock_held(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(e)
        if e.kind() == ErrorKind::Other && e.to_string().contains("could not acquire lock"))
}
