use std::collections::BTreeMap;
use std::thread;

use tempfile::TempDir;

use crate::{
    EpochMetrics, ExperimentRecord, GradNormRow, GradNorms, GradientSummary, GridCell, GridPos,
    ProbeRecord, Store, StoreError, TrialEnd, TrialRecipe, TrialRecord, TrialStatus, TrialSummary,
};

const EXP: &str = "cifar-sweep";

fn temp_store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path().join("store")).expect("open store");
    (dir, store)
}

fn experiment(name: &str) -> ExperimentRecord {
    ExperimentRecord {
        name: name.to_owned(),
        spec_yaml: format!("name: {name}\nbackbones: [resnet18]\n"),
        created_unix_s: 1_700_000_000,
        updated_unix_s: 1_700_000_001,
        base_dir: Some("/experiments".into()),
    }
}

fn params(lr: f64, wd: f64) -> BTreeMap<String, f64> {
    BTreeMap::from([("lr".to_owned(), lr), ("weight_decay".to_owned(), wd)])
}

/// A queued stage-1 trial of resnet18/sgd.
fn trial(id: &str, lr: f64, wd: f64, grid: (u8, u8), seed: u64) -> TrialRecord {
    TrialRecord {
        params: params(lr, wd),
        grid: Some(GridPos {
            lr: grid.0,
            weight_decay: grid.1,
        }),
        seed,
        created_unix_s: 100,
        updated_unix_s: 100,
        ..TrialRecord::new(EXP, id, "resnet18", "sgd")
    }
}

/// Opens a store at `path` written by a bocb from before the trials' split
/// layout: `trials.v1` holds `records` (key `EXP\0id`) whole, written by
/// sled itself.
fn open_with_whole_trials(path: &std::path::Path, records: &[(&str, serde_json::Value)]) -> Store {
    {
        let db = sled::open(path).unwrap();
        let whole = db.open_tree("trials.v1").unwrap();
        for (id, record) in records {
            let key = [EXP.as_bytes(), b"\0", id.as_bytes()].concat();
            whole
                .insert(key, serde_json::to_vec(record).unwrap())
                .unwrap();
        }
        db.flush().unwrap();
    }
    reopen(path)
}

/// Opens the store at `path` again: a handle dropped just before keeps the
/// lock until sled's flusher thread stops.
fn reopen(path: &std::path::Path) -> Store {
    Store::open_waiting(path, crate::RELEASE_WAIT).unwrap()
}

fn epoch(n: u32, acc: f64) -> EpochMetrics {
    EpochMetrics {
        epoch: n,
        train_loss: 2.0 / f64::from(n),
        test_loss: 2.5 / f64::from(n),
        test_accuracy: acc,
        lr: 0.1,
        images_per_sec: 5000.0,
        wall_s: 12.5,
        ema_test_accuracy: None,
    }
}

/// Stores `t` and finishes it with `status` and `acc`.
fn put_finished(store: &Store, t: &TrialRecord, status: TrialStatus, acc: Option<f64>) {
    store.put_trial(t).unwrap();
    store
        .finish_trial(
            &t.experiment,
            &t.id,
            status,
            &TrialEnd {
                final_accuracy: acc,
                wall_time_s: Some(60.0),
                ..TrialEnd::default()
            },
        )
        .unwrap();
}

#[test]
fn experiments_round_trip_sorted_by_name() {
    let (_dir, store) = temp_store();
    assert_eq!(store.experiment("zeta").unwrap(), None);
    for name in ["zeta", "alpha", "mid"] {
        store.put_experiment(&experiment(name)).unwrap();
    }
    assert_eq!(store.experiment("mid").unwrap(), Some(experiment("mid")));
    let names: Vec<String> = store
        .experiments()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);

    // Replacing keeps one record with the new content.
    let mut edited = experiment("mid");
    edited.spec_yaml = "changed".to_owned();
    store.put_experiment(&edited).unwrap();
    assert_eq!(store.experiment("mid").unwrap(), Some(edited));
    assert_eq!(store.experiments().unwrap().len(), 3);
}

#[test]
fn experiment_records_written_before_base_dir_still_load() {
    let old = r#"{"name":"old","spec_yaml":"name: old\n","created_unix_s":1,"updated_unix_s":2}"#;
    let record: ExperimentRecord = serde_json::from_str(old).unwrap();
    assert_eq!(record.base_dir, None);
    assert_eq!(record.updated_unix_s, 2);
}

#[test]
fn trial_round_trips_every_field_and_nan_metrics() {
    let (_dir, store) = temp_store();
    let mut t = trial("t1", 0.1, 5e-4, (2, 3), 7);
    t.recipe = Some(TrialRecipe {
        name: "deit".to_owned(),
        settings: Some(serde_json::json!({ "epochs": 3, "mixup_alpha": 0.8 })),
    });
    t.params.insert("momentum".to_owned(), 0.9);
    // A value that needs float_roundtrip to read back bit-identical.
    t.params.insert("beta2".to_owned(), 0.999_000_000_000_000_1);
    t.stage = 2;
    t.status = TrialStatus::Diverged;
    t.epochs = vec![epoch(1, 31.5)];
    t.final_accuracy = Some(31.5);
    t.ema_accuracy = Some(30.25);
    t.wall_time_s = Some(12.5);
    t.device = Some("cuda:0".to_owned());
    t.precision = Some("bf16".to_owned());
    t.peak_memory_bytes = Some(3 << 30);
    t.error = Some("loss is NaN".to_owned());
    store.put_trial(&t).unwrap();
    assert_eq!(store.trial(EXP, "t1").unwrap(), Some(t.clone()));
    assert_eq!(store.trial(EXP, "t2").unwrap(), None);
    assert_eq!(store.trial("other", "t1").unwrap(), None);

    // A blown-up loss is stored as null and reads back as NaN, not an error.
    let mut blown = epoch(2, 10.0);
    blown.train_loss = f64::NAN;
    blown.test_loss = f64::INFINITY;
    let rec = store.record_epoch(EXP, "t1", blown).unwrap();
    assert!(rec.epochs[1].train_loss.is_nan());
    let back = store.trial(EXP, "t1").unwrap().unwrap();
    assert!(back.epochs[1].train_loss.is_nan());
    assert!(back.epochs[1].test_loss.is_nan());
    assert_eq!(back.epochs[1].test_accuracy, 10.0);
}

#[test]
fn old_records_without_optional_fields_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let minimal = serde_json::json!({
        "id": "t1", "experiment": EXP, "backbone": "resnet18", "optimizer": "sgd",
        "stage": 1, "seed": 0, "status": "queued",
        "created_unix_s": 1, "updated_unix_s": 2,
    });
    let store = open_with_whole_trials(&dir.path().join("store"), &[("t1", minimal)]);
    let t = store.trial(EXP, "t1").unwrap().unwrap();
    assert_eq!(t.status, TrialStatus::Queued);
    assert!(t.params.is_empty() && t.epochs.is_empty() && t.grid.is_none());
    assert_eq!((t.ema_accuracy, t.peak_memory_bytes), (None, None));
    assert_eq!(t.precision, None);
}

#[test]
fn what_a_trial_ran_with_survives_finishing_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let trained = TrialEnd {
        final_accuracy: Some(61.5),
        ema_accuracy: Some(63.25),
        wall_time_s: Some(7.5),
        precision: Some("fp32".to_owned()),
        peak_memory_bytes: Some(734_003_200),
        optimizer_state_bytes: Some(44_724),
        classes: Some(10),
        error: None,
        grad_norms: None,
    };
    // An external trial: bocb knows neither its precision nor its memory.
    let external = TrialEnd {
        final_accuracy: Some(40.0),
        wall_time_s: Some(2.0),
        ..TrialEnd::default()
    };
    let written: Vec<TrialRecord> = {
        let store = Store::open(&path).unwrap();
        [("trained", &trained), ("external", &external)]
            .into_iter()
            .map(|(id, end)| {
                store.put_trial(&trial(id, 0.1, 0.0, (0, 0), 0)).unwrap();
                store.finish_trial(EXP, id, TrialStatus::Done, end).unwrap()
            })
            .collect()
    };
    let store = reopen(&path);
    let read = store.trial(EXP, "trained").unwrap().unwrap();
    assert_eq!(read, written[0]);
    assert_eq!(
        (
            read.final_accuracy,
            read.ema_accuracy,
            read.wall_time_s,
            read.precision.as_deref(),
            read.peak_memory_bytes,
            read.optimizer_state_bytes,
            read.classes
        ),
        (
            Some(61.5),
            Some(63.25),
            Some(7.5),
            Some("fp32"),
            Some(734_003_200),
            Some(44_724),
            Some(10)
        )
    );
    let read = store.trial(EXP, "external").unwrap().unwrap();
    assert_eq!(read, written[1]);
    assert_eq!(read.final_accuracy, Some(40.0));
    assert_eq!(
        (
            read.ema_accuracy,
            read.precision,
            read.peak_memory_bytes,
            read.classes
        ),
        (None, None, None, None)
    );

    // A record written before these fields existed reads with none of them,
    // and finishing it records them.
    let mut old = serde_json::to_value(trial("old", 0.1, 0.0, (1, 1), 0)).unwrap();
    for field in ["ema_accuracy", "precision", "peak_memory_bytes"] {
        old.as_object_mut().unwrap().remove(field).unwrap();
    }
    let store = open_with_whole_trials(&dir.path().join("old store"), &[("old", old)]);
    assert_eq!(store.trial(EXP, "old").unwrap().unwrap().precision, None);
    let finished = store
        .finish_trial(EXP, "old", TrialStatus::Done, &trained)
        .unwrap();
    assert_eq!(finished.precision.as_deref(), Some("fp32"));
    assert_eq!(finished.peak_memory_bytes, Some(734_003_200));
    assert_eq!(finished.ema_accuracy, Some(63.25));
    assert_eq!(finished.classes, Some(10));
}

#[test]
fn corrupt_record_names_its_key() {
    let (_dir, store) = temp_store();
    store
        .trials
        .insert([EXP.as_bytes(), b"\0bad"].concat(), b"{not json".to_vec())
        .unwrap();
    let err = store.trials(EXP).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("cifar-sweep/bad"), "{err}");
}

#[test]
fn trials_are_scoped_to_their_experiment_and_ordered() {
    let (_dir, store) = temp_store();
    let mut b = trial("b", 0.1, 0.0, (1, 0), 0);
    b.backbone = "vit-tiny".to_owned();
    let a_seed1 = trial("z", 0.1, 0.0, (0, 0), 1);
    let a_seed0 = trial("y", 0.1, 0.0, (0, 0), 0);
    let a_grid = trial("a", 0.1, 0.0, (0, 1), 0);
    let mut stage2 = trial("0", 0.1, 0.0, (0, 0), 0);
    stage2.stage = 2;
    // An experiment whose name extends EXP must not leak into its scan.
    let mut other = trial("x", 0.1, 0.0, (0, 0), 0);
    other.experiment = format!("{EXP}-2");
    for t in [&b, &a_seed1, &a_seed0, &a_grid, &stage2, &other] {
        store.put_trial(t).unwrap();
    }
    let ids: Vec<String> = store
        .trials(EXP)
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["y", "z", "a", "0", "b"]);
    assert_eq!(store.trials(&other.experiment).unwrap(), vec![other]);
}

#[test]
fn put_trial_rejects_records_it_cannot_store_faithfully() {
    let (_dir, store) = temp_store();
    let off_grid = trial("t", 0.1, 0.0, (5, 0), 0);
    assert!(matches!(
        store.put_trial(&off_grid),
        Err(StoreError::GridOutOfRange { .. })
    ));
    let nan_param = trial("t", f64::NAN, 0.0, (0, 0), 0);
    assert!(matches!(
        store.put_trial(&nan_param),
        Err(StoreError::NonFiniteParam { key, .. }) if key == "lr"
    ));
    let mut nul_name = trial("t", 0.1, 0.0, (0, 0), 0);
    nul_name.experiment = "a\0b".to_owned();
    assert!(matches!(
        store.put_trial(&nul_name),
        Err(StoreError::InvalidName { .. })
    ));
    assert!(store.trials(EXP).unwrap().is_empty());
}

#[test]
fn record_epoch_appends_and_drops_the_epochs_of_an_earlier_run() {
    let (_dir, store) = temp_store();
    store.put_trial(&trial("t", 0.1, 0.0, (0, 0), 0)).unwrap();
    let numbers = |rec: &TrialRecord| -> Vec<(u32, f64)> {
        rec.epochs
            .iter()
            .map(|e| (e.epoch, e.test_accuracy))
            .collect()
    };

    let rec = store.record_epoch(EXP, "t", epoch(1, 20.0)).unwrap();
    assert_eq!(rec.status, TrialStatus::Running);
    assert!(rec.updated_unix_s > 100);
    for (n, acc) in [(2, 40.0), (3, 50.0), (4, 55.0)] {
        store.record_epoch(EXP, "t", epoch(n, acc)).unwrap();
    }
    // Trained again from epoch 2 after a crash: epoch 2 is replaced, and
    // 3 and 4 of the earlier run no longer hold.
    let rec = store.record_epoch(EXP, "t", epoch(2, 42.0)).unwrap();
    assert_eq!(numbers(&rec), [(1, 20.0), (2, 42.0)]);
    assert_eq!(store.trial(EXP, "t").unwrap(), Some(rec));
}

#[test]
fn keep_epochs_drops_those_after_a_runs_start() {
    let (_dir, store) = temp_store();
    store.put_trial(&trial("t", 0.1, 0.0, (0, 0), 0)).unwrap();
    for n in 1..=4 {
        store
            .record_epoch(EXP, "t", epoch(n, f64::from(n)))
            .unwrap();
    }
    // Resumed from a checkpoint after epoch 2.
    let rec = store.keep_epochs(EXP, "t", 2).unwrap();
    assert_eq!(rec.epochs, [epoch(1, 1.0), epoch(2, 2.0)]);
    assert_eq!(store.trial(EXP, "t").unwrap(), Some(rec));
    // Started over: nothing of the earlier runs stays.
    assert!(store.keep_epochs(EXP, "t", 0).unwrap().epochs.is_empty());
    assert!(store.keep_epochs(EXP, "nope", 0).is_err());
}

#[test]
fn set_trial_device_keeps_everything_else() {
    let (_dir, store) = temp_store();
    store.put_trial(&trial("t", 0.1, 0.0, (0, 0), 0)).unwrap();
    store.record_epoch(EXP, "t", epoch(1, 20.0)).unwrap();
    let rec = store.set_trial_device(EXP, "t", "cuda:1").unwrap();
    assert_eq!(rec.device.as_deref(), Some("cuda:1"));
    let stored = store.trial(EXP, "t").unwrap().unwrap();
    assert_eq!(stored, rec);
    assert_eq!(stored.epochs, [epoch(1, 20.0)]);
    assert_eq!(stored.status, TrialStatus::Running);
    assert!(store.set_trial_device(EXP, "nope", "cpu").is_err());
}

#[test]
fn record_epoch_on_missing_trial_is_an_error() {
    let (_dir, store) = temp_store();
    let err = store.record_epoch(EXP, "nope", epoch(1, 1.0)).unwrap_err();
    assert!(
        matches!(&err, StoreError::TrialNotFound { experiment, id } if experiment == EXP && id == "nope"),
        "{err:?}"
    );
    assert!(store.trial(EXP, "nope").unwrap().is_none());
}

#[test]
fn finish_trial_sets_the_outcome() {
    let (_dir, store) = temp_store();
    store.put_trial(&trial("t", 0.1, 0.0, (0, 0), 0)).unwrap();
    store.record_epoch(EXP, "t", epoch(1, 20.0)).unwrap();
    let rec = store
        .finish_trial(
            EXP,
            "t",
            TrialStatus::Failed,
            &TrialEnd {
                wall_time_s: Some(33.0),
                error: Some("CUDA out of memory".to_owned()),
                ..TrialEnd::default()
            },
        )
        .unwrap();
    assert_eq!(rec.status, TrialStatus::Failed);
    assert_eq!(rec.wall_time_s, Some(33.0));
    assert_eq!(rec.error.as_deref(), Some("CUDA out of memory"));
    assert_eq!(rec.epochs.len(), 1, "finishing keeps the epochs");
    assert_eq!(store.trial(EXP, "t").unwrap(), Some(rec));

    let done = store
        .finish_trial(
            EXP,
            "t",
            TrialStatus::Done,
            &TrialEnd {
                final_accuracy: Some(91.2),
                wall_time_s: Some(40.0),
                ..TrialEnd::default()
            },
        )
        .unwrap();
    assert_eq!(
        (done.status, done.final_accuracy, done.error),
        (TrialStatus::Done, Some(91.2), None)
    );

    assert!(matches!(
        store.finish_trial(EXP, "missing", TrialStatus::Done, &TrialEnd::default()),
        Err(StoreError::TrialNotFound { .. })
    ));
    assert!(matches!(
        store.finish_trial(EXP, "t", TrialStatus::Running, &TrialEnd::default()),
        Err(StoreError::NotFinal { .. })
    ));
    assert_eq!(
        store.trial(EXP, "t").unwrap().unwrap().status,
        TrialStatus::Done
    );
}

#[test]
fn status_is_final_and_displays_lowercase() {
    let all = [
        (TrialStatus::Queued, "queued", false),
        (TrialStatus::Running, "running", false),
        (TrialStatus::Done, "done", true),
        (TrialStatus::Diverged, "diverged", true),
        (TrialStatus::Stopped, "stopped", true),
        (TrialStatus::Failed, "failed", true),
    ];
    for (status, text, is_final) in all {
        assert_eq!(status.to_string(), text);
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            format!("\"{text}\"")
        );
        assert_eq!(status.is_final(), is_final, "{status}");
    }
}

#[test]
fn best_per_pair_averages_seeds_and_ignores_unfinished_trials() {
    let (_dir, store) = temp_store();
    // lr 0.1: seeds 90 and 92 -> mean 91, population std 1.
    put_finished(
        &store,
        &trial("a0", 0.1, 0.0, (2, 0), 0),
        TrialStatus::Done,
        Some(90.0),
    );
    put_finished(
        &store,
        &trial("a1", 0.1, 0.0, (2, 0), 1),
        TrialStatus::Done,
        Some(92.0),
    );
    // lr 0.05: one seed at 93 and one at 85 -> mean 89, worse despite the
    // single best run.
    put_finished(
        &store,
        &trial("b0", 0.05, 0.0, (1, 0), 0),
        TrialStatus::Done,
        Some(93.0),
    );
    put_finished(
        &store,
        &trial("b1", 0.05, 0.0, (1, 0), 1),
        TrialStatus::Done,
        Some(85.0),
    );
    // Higher accuracies that must not count: diverged, failed, running.
    put_finished(
        &store,
        &trial("c0", 0.4, 0.0, (4, 0), 0),
        TrialStatus::Diverged,
        Some(97.0),
    );
    put_finished(
        &store,
        &trial("d0", 0.3, 0.0, (3, 0), 0),
        TrialStatus::Failed,
        Some(96.0),
    );
    store.put_trial(&trial("e0", 0.2, 0.0, (3, 1), 0)).unwrap();
    store.record_epoch(EXP, "e0", epoch(1, 98.0)).unwrap();
    // Another pair, single seed.
    let mut adam = trial("f0", 1e-3, 0.05, (0, 4), 0);
    adam.optimizer = "adamw".to_owned();
    put_finished(&store, &adam, TrialStatus::Done, Some(88.0));
    // A pair with no done trial is absent.
    let mut vit = trial("g0", 0.1, 0.0, (0, 0), 0);
    vit.backbone = "vit-tiny".to_owned();
    put_finished(&store, &vit, TrialStatus::Diverged, None);

    let best = store.best_per_pair(EXP).unwrap();
    assert_eq!(best.len(), 2);
    assert_eq!(
        best[0],
        crate::PairBest {
            backbone: "resnet18".to_owned(),
            optimizer: "adamw".to_owned(),
            params: params(1e-3, 0.05),
            grid: Some(GridPos {
                lr: 0,
                weight_decay: 4
            }),
            mean_accuracy: 88.0,
            std_accuracy: 0.0,
            seeds: 1,
            trial_ids: vec!["f0".to_owned()],
            peak_memory_bytes: None,
            optimizer_state_bytes: None,
        }
    );
    let sgd = &best[1];
    assert_eq!(
        (sgd.backbone.as_str(), sgd.optimizer.as_str()),
        ("resnet18", "sgd")
    );
    assert_eq!(sgd.params, params(0.1, 0.0));
    assert_eq!(sgd.mean_accuracy, 91.0);
    assert_eq!(sgd.std_accuracy, 1.0);
    assert_eq!(sgd.seeds, 2);
    assert_eq!(sgd.trial_ids, ["a0", "a1"]);
}

#[test]
fn best_per_pair_breaks_ties_by_earlier_created_group() {
    let (_dir, store) = temp_store();
    // Same mean; the group sorting first by params is created later, so
    // key order alone would pick the wrong one.
    let mut late = trial("late", 0.01, 0.0, (0, 0), 0);
    late.created_unix_s = 500;
    let mut early = trial("early", 0.1, 0.0, (1, 0), 0);
    early.created_unix_s = 200;
    put_finished(&store, &late, TrialStatus::Done, Some(90.0));
    put_finished(&store, &early, TrialStatus::Done, Some(90.0));
    let best = store.best_per_pair(EXP).unwrap();
    assert_eq!(best.len(), 1);
    assert_eq!(best[0].trial_ids, ["early"]);
}

#[test]
fn grid_cells_report_means_and_divergence() {
    let (_dir, store) = temp_store();
    // (1, 2): two seeds of one param set and a second param set at the
    // same position: all three averaged.
    put_finished(
        &store,
        &trial("a0", 0.1, 1e-4, (1, 2), 0),
        TrialStatus::Done,
        Some(80.0),
    );
    put_finished(
        &store,
        &trial("a1", 0.1, 1e-4, (1, 2), 1),
        TrialStatus::Done,
        Some(82.0),
    );
    put_finished(
        &store,
        &trial("a2", 0.1, 2e-4, (1, 2), 0),
        TrialStatus::Done,
        Some(87.0),
    );
    // (4, 0): diverged only.
    put_finished(
        &store,
        &trial("d0", 0.8, 0.0, (4, 0), 0),
        TrialStatus::Diverged,
        None,
    );
    // (3, 3): one done, one diverged seed, one failed seed, one running.
    put_finished(
        &store,
        &trial("m0", 0.4, 1e-3, (3, 3), 0),
        TrialStatus::Done,
        Some(70.0),
    );
    put_finished(
        &store,
        &trial("m1", 0.4, 1e-3, (3, 3), 1),
        TrialStatus::Diverged,
        Some(99.0),
    );
    put_finished(
        &store,
        &trial("m2", 0.4, 1e-3, (3, 3), 2),
        TrialStatus::Failed,
        None,
    );
    store.put_trial(&trial("m3", 0.4, 1e-3, (3, 3), 3)).unwrap();
    // A seed stopped early by an early-stopping rule: counted apart, never
    // in the mean, however high it got.
    put_finished(
        &store,
        &trial("m4", 0.4, 1e-3, (3, 3), 4),
        TrialStatus::Stopped,
        Some(95.0),
    );
    // Excluded: other stage, other optimizer.
    let mut stage2 = trial("s2", 0.1, 1e-4, (0, 0), 0);
    stage2.stage = 2;
    put_finished(&store, &stage2, TrialStatus::Done, Some(60.0));
    let mut adam = trial("ad", 0.1, 1e-4, (0, 0), 0);
    adam.optimizer = "adamw".to_owned();
    put_finished(&store, &adam, TrialStatus::Done, Some(61.0));

    let grid = store.grid(EXP, "resnet18", "sgd", 1).unwrap();
    assert_eq!(
        grid[1][2],
        GridCell {
            mean_accuracy: Some(83.0),
            done: 3,
            diverged: 0,
            stopped: 0,
            failed: 0
        }
    );
    assert_eq!(
        grid[4][0],
        GridCell {
            mean_accuracy: None,
            done: 0,
            diverged: 1,
            stopped: 0,
            failed: 0
        }
    );
    assert_eq!(
        grid[3][3],
        GridCell {
            mean_accuracy: Some(70.0),
            done: 1,
            diverged: 1,
            stopped: 1,
            failed: 1
        }
    );
    let filled = grid.iter().flatten().filter(|c| **c != GridCell::default());
    assert_eq!(filled.count(), 3, "{grid:?}");

    let stage2_grid = store.grid(EXP, "resnet18", "sgd", 2).unwrap();
    assert_eq!(stage2_grid[0][0].mean_accuracy, Some(60.0));
    assert_eq!(
        store.grid(EXP, "resnet18", "adamw", 1).unwrap()[0][0].mean_accuracy,
        Some(61.0)
    );
}

#[test]
fn delete_experiment_removes_it_and_only_its_trials() {
    let (_dir, store) = temp_store();
    store.put_experiment(&experiment(EXP)).unwrap();
    store.put_experiment(&experiment("keep")).unwrap();
    store.put_trial(&trial("t1", 0.1, 0.0, (0, 0), 0)).unwrap();
    store.put_trial(&trial("t2", 0.1, 0.0, (0, 0), 1)).unwrap();
    let mut kept = trial("t1", 0.1, 0.0, (0, 0), 0);
    kept.experiment = "keep".to_owned();
    store.put_trial(&kept).unwrap();

    assert!(store.delete_experiment(EXP).unwrap());
    assert_eq!(store.experiment(EXP).unwrap(), None);
    assert!(store.trials(EXP).unwrap().is_empty());
    assert_eq!(store.experiments().unwrap(), vec![experiment("keep")]);
    assert_eq!(store.trials("keep").unwrap(), vec![kept]);
    assert!(!store.delete_experiment(EXP).unwrap());
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let expected = {
        let store = Store::open(&path).unwrap();
        store.put_experiment(&experiment(EXP)).unwrap();
        store.put_trial(&trial("t", 0.1, 0.0, (0, 0), 0)).unwrap();
        store.record_epoch(EXP, "t", epoch(1, 50.0)).unwrap();
        store
            .finish_trial(
                EXP,
                "t",
                TrialStatus::Done,
                &TrialEnd {
                    final_accuracy: Some(50.0),
                    wall_time_s: Some(9.0),
                    ..TrialEnd::default()
                },
            )
            .unwrap()
    };
    let store = reopen(&path);
    assert_eq!(store.experiments().unwrap(), vec![experiment(EXP)]);
    assert_eq!(store.trials(EXP).unwrap(), vec![expected]);
    assert_eq!(store.best_per_pair(EXP).unwrap()[0].mean_accuracy, 50.0);
}

#[test]
fn concurrent_writes_all_land() {
    const EPOCHS: u32 = 25;
    let (_dir, store) = temp_store();
    for id in ["a", "b", "shared"] {
        store.put_trial(&trial(id, 0.1, 0.0, (0, 0), 0)).unwrap();
    }
    // Two writers on their own trials, and two interleaving on one shared
    // trial (its epochs and its device): a lost update would drop epochs.
    let writers: Vec<_> = ["a", "b", "shared"]
        .into_iter()
        .map(|id| {
            let store = store.clone();
            thread::spawn(move || {
                for n in 1..=EPOCHS {
                    store.record_epoch(EXP, id, epoch(n, f64::from(n))).unwrap();
                }
            })
        })
        .collect();
    let devices = {
        let store = store.clone();
        thread::spawn(move || {
            for n in 1..=EPOCHS {
                store
                    .set_trial_device(EXP, "shared", &format!("cuda:{n}"))
                    .unwrap();
            }
        })
    };
    for writer in writers.into_iter().chain([devices]) {
        writer.join().unwrap();
    }
    for id in ["a", "b", "shared"] {
        let numbers: Vec<u32> = store
            .trial(EXP, id)
            .unwrap()
            .unwrap()
            .epochs
            .iter()
            .map(|e| e.epoch)
            .collect();
        assert_eq!(numbers, (1..=EPOCHS).collect::<Vec<_>>(), "trial {id}");
    }
    let shared = store.trial(EXP, "shared").unwrap().unwrap();
    assert_eq!(shared.device.as_deref(), Some("cuda:25"));
}

#[test]
fn opening_a_regular_file_names_the_path() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = Store::open(file.path()).unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&file.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn opening_a_store_in_use_says_so() {
    let (dir, _store) = temp_store();
    let path = dir.path().join("store");
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("another bocb process"), "{message}");
}

#[test]
fn opening_a_directory_that_is_not_a_store_names_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("conf"), b"this is not a sled config file").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn a_recipe_stored_as_its_name_alone_still_reads() {
    let (_dir, store) = temp_store();
    let t = trial("t1", 0.1, 5e-4, (2, 3), 7);
    let mut json = serde_json::to_value(&t).unwrap();
    json["recipe"] = serde_json::json!("pytorch");
    let old: TrialRecord = serde_json::from_value(json).unwrap();
    assert_eq!(old.recipe, Some(TrialRecipe::from("pytorch")));
    store.put_trial(&old).unwrap();
    let back = store.trial(&t.experiment, "t1").unwrap().unwrap();
    assert_eq!(back.recipe.unwrap().to_string(), "pytorch");
}

fn probe(key: &str, peak: Option<u64>) -> ProbeRecord {
    ProbeRecord {
        key: key.to_owned(),
        config: "resnet18 × sgd at batch 128, fp32".to_owned(),
        device: "cuda:0".to_owned(),
        peak_memory_bytes: peak,
        images_per_sec: 9000.5,
        measured_unix_s: 1_700_000_000,
    }
}

#[test]
fn probes_are_kept_by_key_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.probe("a").unwrap(), None);
        store.put_probe(&probe("a", Some(3 << 30))).unwrap();
        store.put_probe(&probe("b", None)).unwrap();
        // The same key again replaces it.
        store.put_probe(&probe("a", Some(2 << 30))).unwrap();
        assert!(matches!(
            store.put_probe(&probe("", None)),
            Err(StoreError::InvalidName { .. })
        ));
    }
    let store = reopen(&path);
    assert_eq!(store.probe("a").unwrap(), Some(probe("a", Some(2 << 30))));
    assert_eq!(
        store.probes().unwrap(),
        [probe("a", Some(2 << 30)), probe("b", None)]
    );
}

#[test]
fn a_store_written_before_probes_opens_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        // The trees of a store from before `probes.v1`, written by sled itself.
        let db = sled::open(&path).unwrap();
        let record = experiment(EXP);
        db.open_tree("experiments.v1")
            .unwrap()
            .insert(EXP, serde_json::to_vec(&record).unwrap())
            .unwrap();
        db.open_tree("trials.v1").unwrap();
        db.flush().unwrap();
    }
    let store = reopen(&path);
    assert_eq!(store.experiment(EXP).unwrap(), Some(experiment(EXP)));
    assert_eq!(store.probes().unwrap(), []);
}

#[test]
fn summaries_follow_every_write_and_the_revision_changes() {
    let (_dir, store) = temp_store();
    let before = store.revision(EXP);
    let mut t = trial("t", 0.1, 0.0, (0, 0), 0);
    t.recipe = Some(TrialRecipe {
        name: "deit".to_owned(),
        settings: Some(serde_json::json!({ "epochs": 300 })),
    });
    store
        .put_trials(&[t, trial("u", 0.1, 0.0, (0, 0), 1)])
        .unwrap();
    let after_put = store.revision(EXP);
    assert_ne!(after_put, before);
    store.record_epoch(EXP, "t", epoch(1, 40.0)).unwrap();
    store.record_epoch(EXP, "t", epoch(2, 50.0)).unwrap();
    assert_ne!(store.revision(EXP), after_put);
    assert_eq!(store.revision("other"), 0);
    let full = store
        .finish_trial(
            EXP,
            "t",
            TrialStatus::Done,
            &TrialEnd {
                final_accuracy: Some(50.0),
                ..TrialEnd::default()
            },
        )
        .unwrap();
    let summaries = store.trial_summaries(EXP).unwrap();
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[0], TrialSummary::of(&full));
    assert_eq!(summaries[0].epochs, 2);
    assert!(summaries[0].trial.epochs.is_empty());
    assert_eq!(summaries[0].trial.recipe, Some("deit".into()));
    assert_eq!(summaries[0].trial.status, TrialStatus::Done);
    assert_eq!(summaries[1].epochs, 0);
    assert!(store.delete_experiment(EXP).unwrap());
    assert!(store.trial_summaries(EXP).unwrap().is_empty());
}

/// A store from before summaries, or from before `summaries.v2` (whose
/// summaries lacked the gradients), gets them made when opened, and the
/// old tree goes.
#[test]
fn a_store_from_before_summaries_gets_them_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let norms = GradNorms {
        groups: vec!["embedding".into(), "blocks.0".into(), "head".into()],
        steps: vec![GradNormRow {
            step: 0,
            epoch: 1,
            norms: vec![4.0, 1.0, 3.0],
        }],
        epochs: Vec::new(),
    };
    {
        let store = Store::open(&path).unwrap();
        store
            .put_trial(&TrialRecord {
                grad_norms: Some(norms.clone()),
                ..trial("t", 0.1, 0.0, (0, 0), 0)
            })
            .unwrap();
        store.record_epoch(EXP, "t", epoch(1, 40.0)).unwrap();
        store.summaries.clear().unwrap();
        store.db.remove(b"summaries.v2 made").unwrap();
        let v1 = store.db.open_tree("summaries.v1").unwrap();
        v1.insert("stale", "{}").unwrap();
        store.db.insert(b"summaries.v1 made", &[]).unwrap();
        store.db.flush().unwrap();
    }
    let store = reopen(&path);
    let summaries = store.trial_summaries(EXP).unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].epochs, 1);
    assert_eq!(summaries[0].trial.grad_norms, None);
    assert_eq!(
        summaries[0].gradients,
        Some(GradientSummary {
            embedding_ratio: norms.embedding_ratio()
        })
    );
    assert!(norms.embedding_ratio().is_some());
    let names = store.db.tree_names();
    assert!(!names.iter().any(|n| n.as_ref() == b"summaries.v1"));
    assert!(store.db.get(b"summaries.v1 made").unwrap().is_none());
}

/// Summaries are decoded once per revision and kept: every write, through
/// any clone of the handle, shows in the next read, as do the bests and
/// grids derived from them.
#[test]
fn kept_summaries_follow_every_write() {
    let (_dir, store) = temp_store();
    let reader = store.clone();
    store.put_trial(&trial("t", 0.1, 0.0, (0, 0), 0)).unwrap();
    assert_eq!(reader.trial_summaries(EXP).unwrap()[0].epochs, 0);
    assert!(reader.best_per_pair(EXP).unwrap().is_empty());
    store.record_epoch(EXP, "t", epoch(1, 40.0)).unwrap();
    assert_eq!(reader.trial_summaries(EXP).unwrap()[0].epochs, 1);
    let end = TrialEnd {
        final_accuracy: Some(40.0),
        ..TrialEnd::default()
    };
    store
        .finish_trial(EXP, "t", TrialStatus::Done, &end)
        .unwrap();
    assert_eq!(
        reader.trial_summaries(EXP).unwrap()[0].trial.status,
        TrialStatus::Done
    );
    assert_eq!(reader.best_per_pair(EXP).unwrap()[0].mean_accuracy, 40.0);
    assert_eq!(
        reader.grid(EXP, "resnet18", "sgd", 1).unwrap()[0][0].mean_accuracy,
        Some(40.0)
    );
    // More experiments than are kept: each still reads its own.
    for n in 0..10 {
        let other = format!("other-{n}");
        store
            .put_trial(&TrialRecord::new(&other, "t", "resnet18", "sgd"))
            .unwrap();
        assert_eq!(reader.trial_summaries(&other).unwrap().len(), 1);
    }
    assert_eq!(reader.trial_summaries(EXP).unwrap()[0].epochs, 1);
    assert!(store.delete_experiment(EXP).unwrap());
    assert!(reader.trial_summaries(EXP).unwrap().is_empty());
}

fn norms_over(epochs: u32) -> GradNorms {
    GradNorms {
        groups: vec!["embedding".into(), "blocks.0".into(), "head".into()],
        steps: (0..20)
            .map(|step| GradNormRow {
                step,
                epoch: 1,
                norms: vec![4.0, 1.0, 3.0 + step as f64],
            })
            .collect(),
        epochs: (1..=epochs)
            .map(|epoch| GradNormRow {
                step: u64::from(epoch) * 100,
                epoch,
                norms: vec![0.5, 0.25, f64::from(epoch)],
            })
            .collect(),
    }
}

/// The largest value any tree of the store holds.
fn largest_value(store: &Store) -> usize {
    store
        .db
        .tree_names()
        .iter()
        .flat_map(|name| store.db.open_tree(name).unwrap().iter().values())
        .map(|value| value.unwrap().len())
        .max()
        .unwrap_or(0)
}

/// A long history lies in small entries (what keeps sled's leaves inline
/// and evictable), reads back exactly, and shrinking or deleting it leaves
/// no piece behind.
#[test]
fn long_histories_lie_in_small_pieces_and_read_back_whole() {
    let (_dir, store) = temp_store();
    store
        .put_trial(&trial("long", 0.1, 0.0, (0, 0), 0))
        .unwrap();
    for n in 1..=500 {
        store
            .record_epoch(EXP, "long", epoch(n, f64::from(n) / 10.0))
            .unwrap();
    }
    let end = TrialEnd {
        final_accuracy: Some(50.0),
        grad_norms: Some(norms_over(500)),
        ..TrialEnd::default()
    };
    let finished = store
        .finish_trial(EXP, "long", TrialStatus::Done, &end)
        .unwrap();
    let read = store.trial(EXP, "long").unwrap().unwrap();
    assert_eq!(read, finished);
    assert_eq!(read.epochs.len(), 500);
    assert_eq!(read.epochs[499], epoch(500, 50.0));
    assert_eq!(read.grad_norms, Some(norms_over(500)));
    let whole_json = serde_json::to_vec(&read).unwrap().len();
    assert!(whole_json > 100_000, "{whole_json} bytes");
    assert!(
        largest_value(&store) <= crate::layout::PIECE_BYTES,
        "largest value {} bytes",
        largest_value(&store)
    );
    let pieces = store.details.len();
    assert!(pieces > 20, "{pieces} pieces");

    // A rerun from epoch 3 keeps two epochs; the pieces past them go.
    let kept = store.keep_epochs(EXP, "long", 2).unwrap();
    assert_eq!(kept.epochs, [epoch(1, 0.1), epoch(2, 0.2)]);
    let shrunk = store.details.len();
    assert!(shrunk < pieces, "{shrunk} of {pieces} pieces left");
    assert_eq!(store.trial(EXP, "long").unwrap().unwrap(), kept);
    // Replacing the record with one that has no epochs leaves none.
    store
        .put_trial(&trial("long", 0.1, 0.0, (0, 0), 0))
        .unwrap();
    assert_eq!(store.details.len(), 0);
    store.record_epoch(EXP, "long", epoch(1, 1.0)).unwrap();
    assert!(store.delete_experiment(EXP).unwrap());
    assert_eq!((store.details.len(), store.trials.len()), (0, 0));
}

/// A reader never sees part of a history being written: every read of a
/// trial recording epochs shows epochs 1 to n, whole.
#[test]
fn readers_see_whole_histories_while_epochs_arrive() {
    let (_dir, store) = temp_store();
    store.put_trial(&trial("t", 0.1, 0.0, (0, 0), 0)).unwrap();
    let writer = {
        let store = store.clone();
        thread::spawn(move || {
            for n in 1..=300 {
                store
                    .record_epoch(EXP, "t", epoch(n, f64::from(n)))
                    .unwrap();
            }
        })
    };
    let mut reads = 0;
    loop {
        let done = writer.is_finished();
        let read = store.trial(EXP, "t").unwrap().unwrap();
        let numbers: Vec<u32> = read.epochs.iter().map(|e| e.epoch).collect();
        assert_eq!(numbers, (1..=numbers.len() as u32).collect::<Vec<_>>());
        // Scans read each trial whole too, and a later read never less.
        let scanned = store.trials(EXP).unwrap().remove(0).epochs;
        assert!(scanned.len() >= numbers.len());
        assert!(scanned.iter().zip(1..).all(|(e, n)| e.epoch == n));
        reads += 1;
        if done {
            assert_eq!(numbers.len(), 300);
            break;
        }
    }
    writer.join().unwrap();
    assert!(reads > 1);
}

/// A store written whole (`trials.v1`) is split when opened, its epochs
/// and gradient norms kept exactly; a split interrupted part-way goes on.
#[test]
fn a_store_of_whole_trials_is_split_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut long = trial("long", 0.1, 0.0, (0, 0), 0);
    long.epochs = (1..=300).map(|n| epoch(n, f64::from(n) / 10.0)).collect();
    long.grad_norms = Some(norms_over(300));
    long.status = TrialStatus::Done;
    let short = TrialRecord {
        epochs: vec![epoch(1, 10.0)],
        ..trial("short", 0.4, 0.0, (1, 0), 0)
    };
    let queued = trial("queued", 1.6, 0.0, (2, 0), 0);
    let records =
        [&long, &short, &queued].map(|t| (t.id.as_str(), serde_json::to_value(t).unwrap()));
    let store = open_with_whole_trials(&path, &records);
    assert_eq!(
        store.trials(EXP).unwrap(),
        [long.clone(), short.clone(), queued.clone()]
    );
    assert_eq!(
        store.trial_summaries(EXP).unwrap()[0],
        TrialSummary::of(&long)
    );
    assert!(largest_value(&store) <= crate::layout::PIECE_BYTES);
    let names = store.db.tree_names();
    assert!(!names.iter().any(|n| n.as_ref() == b"trials.v1"));
    drop(store);

    // Interrupted: "short" still whole beside the split others.
    let store = reopen(&path);
    let key = [EXP.as_bytes(), b"\0short"].concat();
    store.trials.remove(&key).unwrap();
    for piece in store
        .details
        .scan_prefix([key.as_slice(), b"\0"].concat())
        .keys()
    {
        store.details.remove(piece.unwrap()).unwrap();
    }
    let whole = store.db.open_tree("trials.v1").unwrap();
    whole
        .insert(&key, serde_json::to_vec(&short).unwrap())
        .unwrap();
    store.db.flush().unwrap();
    drop((whole, store));
    let store = reopen(&path);
    assert_eq!(store.trials(EXP).unwrap(), [long, short, queued]);
}

/// A trial whose pieces were removed behind the store's back fails with an
/// error that names it, rather than reading as a shorter history.
#[test]
fn a_missing_piece_names_its_trial() {
    let (_dir, store) = temp_store();
    store.put_trial(&trial("t", 0.1, 0.0, (0, 0), 0)).unwrap();
    for n in 1..=100 {
        store.record_epoch(EXP, "t", epoch(n, 1.0)).unwrap();
    }
    let (first, _) = store.details.first().unwrap().unwrap();
    store.details.remove(first).unwrap();
    let err = store.trial(EXP, "t").unwrap_err();
    assert!(
        matches!(err, StoreError::MissingPiece { index: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("cifar-sweep/t"), "{err}");
}

/// `trials_where` reads the trials its filter keeps, whole, in trial order.
#[test]
fn trials_where_reads_the_kept_trials_whole() {
    let (_dir, store) = temp_store();
    let mut other_pair = trial("v", 0.1, 0.0, (0, 0), 0);
    other_pair.optimizer = "adamw".to_owned();
    store
        .put_trials(&[
            trial("b", 0.4, 0.0, (1, 0), 0),
            other_pair,
            trial("a", 0.1, 0.0, (0, 0), 0),
        ])
        .unwrap();
    store.record_epoch(EXP, "b", epoch(1, 30.0)).unwrap();
    let sgd = store
        .trials_where(EXP, |s| s.trial.optimizer == "sgd")
        .unwrap();
    let ids: Vec<&str> = sgd.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(sgd[1].epochs, [epoch(1, 30.0)]);
    assert_eq!(sgd, store.trials(EXP).unwrap()[1..]);
    assert!(store.trials_where(EXP, |_| false).unwrap().is_empty());
}
