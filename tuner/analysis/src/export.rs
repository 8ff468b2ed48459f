//! `bocb export`: the best config of every pair, as YAML, JSON, CSV or a
//! command line for timm's `train.py`, and every trial with its per-epoch
//! metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bocb_search_spaces::Catalog;
use bocb_spec::experiment::ExperimentSpec;
use bocb_spec::KnownBackbones;
use bocb_store::{stored_spec, GridPos, PairBest, Store, StoreError, StoredSpecError, TrialRecord};
use serde::Serialize;
use thiserror::Error;

use crate::render::csv_table;

#[derive(Debug, Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spec(#[from] StoredSpecError),
    #[error("no experiment `{name}` in the store; it holds: {known}")]
    UnknownExperiment { name: String, known: String },
    #[error(
        "experiment `{0}` was imported from a results table: it has accuracies but no configs or \
         trials to export (`bocb report --experiment {0}` shows its analysis)"
    )]
    Imported(String),
    #[error("experiment `{name}` has no finished pair{filter}")]
    Nothing { name: String, filter: String },
}

/// The best config of one pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BestConfig {
    pub backbone: String,
    pub optimizer: String,
    pub lr: f64,
    pub weight_decay: f64,
    /// Every other hyperparameter of the config (momentum, betas, ...).
    pub extras: BTreeMap<String, f64>,
    /// Mean final accuracy (percent) over the seeds.
    pub accuracy_mean: f64,
    /// Population standard deviation over the seeds (0 for one).
    pub accuracy_std: f64,
    pub seeds: usize,
    /// The trials' recipe, else the backbone's default recipe.
    pub recipe: Option<String>,
    pub epochs: Option<u32>,
    pub batch_size: Option<usize>,
    pub warmup_epochs: Option<u32>,
    /// timm's model of the backbone's architecture, where timm has one.
    #[serde(skip)]
    pub timm_model: Option<String>,
    /// `torch/cifar100` or `torch/cifar10`, timm's name of the dataset.
    #[serde(skip)]
    pub timm_dataset: Option<(&'static str, u32)>,
    /// The trials' whole recipe as stored (for `--as timm-args`).
    #[serde(skip)]
    pub recipe_settings: Option<serde_json::Value>,
    pub grid: Option<GridPos>,
    pub trial_ids: Vec<String>,
}

/// Fails unless `name` is a trained experiment of the store.
fn check_trained(store: &Store, name: &str) -> Result<Option<ExperimentSpec>, ExportError> {
    let Some(record) = store.experiment(name)? else {
        let known: Vec<String> = store.experiments()?.into_iter().map(|e| e.name).collect();
        return Err(ExportError::UnknownExperiment {
            name: name.to_string(),
            known: if known.is_empty() {
                "nothing yet".into()
            } else {
                known.join(", ")
            },
        });
    };
    if store.imported(name)?.is_some() {
        return Err(ExportError::Imported(name.to_string()));
    }
    Ok(stored_spec(store, &record)?)
}

/// The best config of every pair of `name`, optionally only of one backbone
/// and/or one optimizer.
pub fn best_configs(
    store: &Store,
    registries: &dyn KnownBackbones,
    name: &str,
    backbone: Option<&str>,
    optimizer: Option<&str>,
) -> Result<Vec<BestConfig>, ExportError> {
    let spec = check_trained(store, name)?;
    let configs: Vec<BestConfig> = store
        .best_per_pair(name)?
        .into_iter()
        .filter(|b| backbone.is_none_or(|x| x == b.backbone))
        .filter(|b| optimizer.is_none_or(|x| x == b.optimizer))
        .map(|best| {
            // Only the first trial's record is read: its recipe, its classes.
            let first = match best.trial_ids.first() {
                Some(id) => store.trial(name, id)?,
                None => None,
            };
            Ok(config(spec.as_ref(), registries, best, first.as_ref()))
        })
        .collect::<Result<_, ExportError>>()?;
    if configs.is_empty() {
        let mut filter = String::new();
        if let Some(b) = backbone {
            let _ = write!(filter, " with backbone `{b}`");
        }
        if let Some(o) = optimizer {
            let _ = write!(filter, " with optimizer `{o}`");
        }
        return Err(ExportError::Nothing {
            name: name.to_string(),
            filter,
        });
    }
    Ok(configs)
}

/// The config trial `trial` of `name` trained with, as [`best_configs`]
/// gives a pair's best (its accuracy, NaN until it is done, from it alone).
pub fn trial_config(
    store: &Store,
    registries: &dyn KnownBackbones,
    name: &str,
    trial: &TrialRecord,
) -> Result<BestConfig, ExportError> {
    let spec = check_trained(store, name)?;
    let own = PairBest {
        backbone: trial.backbone.clone(),
        optimizer: trial.optimizer.clone(),
        params: trial.params.clone(),
        grid: trial.grid,
        mean_accuracy: trial
            .final_accuracy
            .filter(|_| trial.status == bocb_store::TrialStatus::Done)
            .unwrap_or(f64::NAN),
        std_accuracy: 0.0,
        seeds: 1,
        trial_ids: vec![trial.id.clone()],
        peak_memory_bytes: trial.peak_memory_bytes,
        optimizer_state_bytes: trial.optimizer_state_bytes,
    };
    Ok(config(spec.as_ref(), registries, own, Some(trial)))
}

/// The config of `best`, with what its `first` trial trained with.
fn config(
    spec: Option<&ExperimentSpec>,
    registries: &dyn KnownBackbones,
    best: PairBest,
    first: Option<&TrialRecord>,
) -> BestConfig {
    let recipe = first
        .and_then(|t| t.recipe.as_ref().map(|r| r.name.clone()))
        .or_else(|| {
            registries
                .backbone(&best.backbone)
                .map(|b| b.default_recipe)
        });
    let mut extras = best.params.clone();
    let lr = extras.remove("lr").unwrap_or(f64::NAN);
    let weight_decay = extras.remove("weight_decay").unwrap_or(f64::NAN);
    BestConfig {
        lr,
        weight_decay,
        extras,
        accuracy_mean: best.mean_accuracy,
        accuracy_std: best.std_accuracy,
        seeds: best.seeds,
        recipe,
        epochs: spec
            .as_ref()
            .map(|s| s.epochs)
            .or_else(|| first.map(|t| t.epochs.len() as u32)),
        // What the trial trained with: its stored recipe, else the experiment's.
        batch_size: recipe_field(first, "batch_size")
            .map(|b| b as usize)
            .or_else(|| spec.as_ref().and_then(|s| s.batch_size)),
        warmup_epochs: recipe_field(first, "warmup_epochs")
            .map(|w| w as u32)
            .or_else(|| spec.as_ref().and_then(|s| s.warmup_epochs)),
        timm_model: registries.backbone(&best.backbone).and_then(|b| b.timm),
        // The head's width is the data's: a synthetic set may hold
        // fewer classes than its format's name says.
        timm_dataset: spec
            .as_ref()
            .and_then(|s| timm_dataset(&s.dataset.format.to_string()))
            .map(|(dataset, classes)| (dataset, first.and_then(|t| t.classes).unwrap_or(classes))),
        recipe_settings: first
            .and_then(|t| t.recipe.as_ref())
            .and_then(|r| r.settings.clone())
            .map(|settings| resolve_crop(settings, registries, &best.backbone)),
        grid: best.grid,
        trial_ids: best.trial_ids,
        backbone: best.backbone,
        optimizer: best.optimizer,
    }
}

/// Every trial of `name` with its per-epoch metrics.
pub fn trials(store: &Store, name: &str) -> Result<Vec<TrialRecord>, ExportError> {
    check_trained(store, name)?;
    Ok(store.trials(name)?)
}

fn timm_dataset(format: &str) -> Option<(&'static str, u32)> {
    if format.starts_with("cifar100") {
        Some(("torch/cifar100", 100))
    } else if format.starts_with("cifar10") {
        Some(("torch/cifar10", 10))
    } else {
        None
    }
}

/// One row per config (extras as `name=value` joined by `;`).
pub fn render_csv(configs: &[BestConfig]) -> String {
    let header = [
        "backbone",
        "optimizer",
        "lr",
        "weight_decay",
        "extras",
        "accuracy_mean",
        "accuracy_std",
        "seeds",
        "recipe",
        "epochs",
    ];
    csv_table(
        &header,
        configs.iter().map(|c| {
            let extras: Vec<String> = c.extras.iter().map(|(k, v)| format!("{k}={v}")).collect();
            [
                c.backbone.clone(),
                c.optimizer.clone(),
                c.lr.to_string(),
                c.weight_decay.to_string(),
                extras.join(";"),
                c.accuracy_mean.to_string(),
                c.accuracy_std.to_string(),
                c.seeds.to_string(),
                c.recipe.clone().unwrap_or_default(),
                c.epochs.map(|e| e.to_string()).unwrap_or_default(),
            ]
        }),
    )
}

/// A command line for timm's `train.py` per config. Pairs timm cannot run
/// as they are get a `#` line saying why, and settings timm has no flag for
/// are listed in a trailing comment.
/// timm's `--opt` names come from each optimizer's search space (`timm:`).
pub fn render_timm_args(configs: &[BestConfig], catalog: &Catalog) -> String {
    let mut out = String::new();
    for c in configs {
        if c.accuracy_mean.is_finite() {
            let _ = writeln!(
                out,
                "# {} x {}: {:.2}% over {} seed(s)",
                c.backbone, c.optimizer, c.accuracy_mean, c.seeds
            );
        } else {
            let _ = writeln!(
                out,
                "# {} x {}: trial {} (not done)",
                c.backbone,
                c.optimizer,
                c.trial_ids.join(", ")
            );
        }
        let space = catalog.optimizer(&c.optimizer).ok();
        let Some(opt) = space.and_then(|s| s.timm.as_deref()) else {
            let _ = writeln!(
                out,
                "# timm has no `{}` optimizer; run it with bocb (`bocb run`)",
                c.optimizer
            );
            continue;
        };
        let model = match &c.timm_model {
            Some(model) => model.clone(),
            None => {
                let _ = writeln!(
                    out,
                    "# bocb's `{}` has no known timm model; replace MODEL (see timm.list_models())",
                    c.backbone
                );
                "MODEL".into()
            }
        };
        let mut args = vec![
            "python train.py".to_string(),
            format!("--model {model}"),
            format!("--opt {opt}"),
            format!("--lr {}", c.lr),
            format!("--weight-decay {}", c.weight_decay),
        ];
        if let Some(epochs) = c.epochs {
            args.push(format!("--epochs {epochs}"));
        }
        if let Some(batch) = c.batch_size {
            args.push(format!("--batch-size {batch}"));
        }
        if let Some(warmup) = c.warmup_epochs {
            args.push(format!("--warmup-epochs {warmup}"));
        }
        args.push("--sched cosine".into());
        if let Some((dataset, classes)) = c.timm_dataset {
            args.push(format!("--dataset {dataset} --num-classes {classes}"));
        }
        let mut unmapped = Vec::new();
        let mut extras = c.extras.clone();
        if let Some(momentum) = extras.remove("momentum") {
            args.push(format!("--momentum {momentum}"));
        }
        if let Some(eps) = extras.remove("eps") {
            args.push(format!("--opt-eps {eps}"));
        }
        // timm passes --opt-betas as the whole betas tuple, so it needs
        // beta1 and beta2 (and beta3 for Adan's three).
        if let (Some(&b1), Some(&b2)) = (extras.get("beta1"), extras.get("beta2")) {
            let mut betas = format!("--opt-betas {b1} {b2}");
            extras.remove("beta1");
            extras.remove("beta2");
            if let Some(b3) = extras.remove("beta3") {
                let _ = write!(betas, " {b3}");
            }
            args.push(betas);
        }
        unmapped.extend(extras.iter().map(|(k, v)| format!("{k}={v}")));
        if let Some(settings) = &c.recipe_settings {
            timm_recipe_args(settings, &mut args, &mut unmapped);
        }
        let _ = write!(out, "{}", args.join(" "));
        if !unmapped.is_empty() {
            let _ = write!(out, "  # not passed to timm: {}", unmapped.join(", "));
        }
        out.push('\n');
    }
    out
}

/// The crop a stored `crop: auto` trained with: padded at the CIFAR side,
/// random-resized where the backbone up-samples (as the trainer decides).
fn resolve_crop(
    mut settings: serde_json::Value,
    registries: &dyn KnownBackbones,
    backbone: &str,
) -> serde_json::Value {
    if settings.get("crop").and_then(serde_json::Value::as_str) == Some("auto") {
        if let Some(summary) = registries.backbone(backbone) {
            let crop = if summary.input_size == 32 {
                "random_padded"
            } else {
                "random_resized"
            };
            settings["crop"] = crop.into();
        }
    }
    settings
}

/// timm `train.py` flags for a stored recipe's regularisation and
/// augmentation (its optimizer, lr, epochs and batch are the config's own);
/// what timm cannot express goes to `unmapped`.
fn timm_recipe_args(
    settings: &serde_json::Value,
    args: &mut Vec<String>,
    unmapped: &mut Vec<String>,
) {
    let number = |field: &str| settings.get(field).and_then(serde_json::Value::as_f64);
    let positive = |field: &str| number(field).filter(|&v| v > 0.0);
    if let Some(v) = positive("label_smoothing") {
        args.push(format!("--smoothing {v}"));
    }
    // `null` keeps each architecture's own dropout, as timm's default does.
    if let Some(v) = number("dropout") {
        args.push(format!("--drop {v}"));
    }
    if let Some(v) = positive("drop_path") {
        args.push(format!("--drop-path {v}"));
    }
    if let Some(ra) = settings.get("rand_augment").filter(|v| !v.is_null()) {
        let field = |name: &str| {
            ra.get(name)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0)
        };
        args.push(format!(
            "--aa rand-m{}-n{}-mstd{}-inc1",
            field("magnitude"),
            field("ops"),
            field("magnitude_std")
        ));
    }
    if let Some(v) = number("hflip") {
        args.push(format!("--hflip {v}"));
    }
    let (mixup, cutmix) = (positive("mixup_alpha"), positive("cutmix_alpha"));
    if mixup.is_some() || cutmix.is_some() {
        args.push(format!("--mixup {}", mixup.unwrap_or(0.0)));
        args.push(format!("--cutmix {}", cutmix.unwrap_or(0.0)));
        if let Some(v) = number("mix_prob") {
            args.push(format!("--mixup-prob {v}"));
        }
        if let Some(v) = number("mix_switch_prob") {
            args.push(format!("--mixup-switch-prob {v}"));
        }
    }
    if let Some(v) = positive("random_erasing") {
        args.push(format!("--reprob {v}"));
    }
    if let Some(n) = number("repeated_augmentation").filter(|&n| n > 1.0) {
        args.push(format!("--aug-repeats {n}"));
    }
    if let Some(v) = positive("grad_clip_norm") {
        args.push(format!("--clip-grad {v}"));
    }
    // `null` trains every layer at one lr, as timm's default does.
    if let Some(v) = number("layer_decay") {
        args.push(format!("--layer-decay {v}"));
    }
    if let Some(v) = number("ema_decay") {
        args.push(format!("--model-ema --model-ema-decay {v}"));
    }
    if settings.get("loss").and_then(serde_json::Value::as_str) == Some("binary_cross_entropy") {
        args.push("--bce-loss".into());
    }
    if settings.get("bf16").and_then(serde_json::Value::as_bool) == Some(true) {
        args.push("--amp --amp-dtype bfloat16".into());
    }
    if let Some(v) = number("test_crop_ratio") {
        args.push(format!("--crop-pct {v}"));
    }
    // timm's train.py always crops RandomResized; CIFAR's padded crop has no flag.
    if let Some(crop) = settings.get("crop").and_then(serde_json::Value::as_str) {
        if crop != "random_resized" {
            unmapped.push(format!("crop={crop}"));
        }
    }
}

/// A whole-number field of a trial's stored recipe.
fn recipe_field(trial: Option<&TrialRecord>, field: &str) -> Option<u64> {
    trial?
        .recipe
        .as_ref()?
        .settings
        .as_ref()?
        .get(field)?
        .as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(optimizer: &str, extras: &[(&str, f64)]) -> BestConfig {
        BestConfig {
            backbone: "resnet50_cifar@micro".into(),
            optimizer: optimizer.into(),
            lr: 0.001,
            weight_decay: 0.05,
            extras: extras.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
            accuracy_mean: 71.234,
            accuracy_std: 0.5,
            seeds: 3,
            recipe: Some("torch".into()),
            epochs: Some(200),
            batch_size: Some(128),
            warmup_epochs: Some(5),
            timm_model: Some("resnet50".to_string()),
            timm_dataset: Some(("torch/cifar100", 100)),
            recipe_settings: None,
            grid: None,
            trial_ids: vec!["a".into()],
        }
    }

    #[test]
    fn timm_command_lines() {
        let text = render_timm_args(
            &[
                config("adamw", &[("beta1", 0.9), ("beta2", 0.999), ("eps", 1e-8)]),
                config("lars", &[("momentum", 0.9), ("trust_coeff", 0.001)]),
                config("sophia", &[]),
            ],
            &Catalog::builtin(),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "# resnet50_cifar@micro x adamw: 71.23% over 3 seed(s)"
        );
        assert_eq!(
            lines[1],
            "python train.py --model resnet50 --opt adamw --lr 0.001 --weight-decay 0.05 \
             --epochs 200 --batch-size 128 --warmup-epochs 5 --sched cosine \
             --dataset torch/cifar100 --num-classes 100 --opt-eps 0.00000001 --opt-betas 0.9 0.999"
                .replace("0.00000001", &1e-8_f64.to_string())
        );
        assert!(
            lines[3].contains("--opt lars") && lines[3].contains("--momentum 0.9"),
            "{}",
            lines[3]
        );
        assert!(
            lines[3].ends_with("# not passed to timm: trust_coeff=0.001"),
            "{}",
            lines[3]
        );
        assert_eq!(
            lines[5],
            "# timm has no `sophia` optimizer; run it with bocb (`bocb run`)"
        );
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn timm_command_lines_carry_the_recipe() {
        let recipes = bocb_search_spaces::RecipeBook::builtin();
        let registries = bocb_search_spaces::builtin_backbones();
        let line = |recipe: &str, backbone: &str| {
            let settings = serde_json::to_value(recipes.recipe(recipe).unwrap()).unwrap();
            let mut c = config("adamw", &[]);
            c.backbone = backbone.into();
            c.recipe_settings = Some(resolve_crop(settings, &registries, backbone));
            render_timm_args(&[c], &Catalog::builtin())
                .lines()
                .nth(1)
                .unwrap()
                .to_string()
        };
        let deit = line("deit", "deit_s");
        for flag in [
            "--smoothing 0.1",
            "--drop-path 0.1",
            "--aa rand-m9-n2-mstd0.5-inc1",
            "--hflip 0.5",
            "--mixup 0.8 --cutmix 1 --mixup-prob 1 --mixup-switch-prob 0.5",
            "--reprob 0.25",
            "--aug-repeats 3",
            "--clip-grad 5",
            "--model-ema --model-ema-decay 0.99996",
            "--amp --amp-dtype bfloat16",
            "--crop-pct 1",
        ] {
            assert!(deit.contains(flag), "{flag} missing: {deit}");
        }
        // DeiT's `dropout: null` keeps the model's own; it crops as timm does.
        assert!(
            !deit.contains("--drop ") && !deit.contains("not passed"),
            "{deit}"
        );
        let rsb = line("rsb_a2", "resnet50_cifar");
        assert!(rsb.contains("--bce-loss"), "{rsb}");
        assert!(
            rsb.ends_with("# not passed to timm: crop=random_padded"),
            "{rsb}"
        );
        let plain = line("pytorch", "resnet18_cifar");
        assert!(
            !plain.contains("--mixup")
                && !plain.contains("--aa")
                && !plain.contains("--layer-decay"),
            "{plain}"
        );
        // A layer decay set by the experiment's overrides goes along.
        let mut finetune = recipes.recipe("finetune").unwrap().clone();
        finetune.layer_decay = Some(bocb_search_spaces::LayerDecay(0.75));
        let mut c = config("adamw", &[]);
        c.backbone = "vit_tiny".into();
        c.recipe_settings = Some(serde_json::to_value(&finetune).unwrap());
        let decayed = render_timm_args(&[c], &Catalog::builtin());
        assert!(decayed.contains("--layer-decay 0.75"), "{decayed}");
    }

    #[test]
    fn every_timm_optimizer_name_is_in_timms_factory() {
        // Names registered in timm 1.0.31's optim/_optim_factory.py.
        let timm = [
            "momentum",
            "sgdp",
            "lion",
            "adam",
            "adamax",
            "nadam",
            "adamw",
            "lamb",
            "radam",
            "adamp",
            "adan",
            "lars",
            "adafactor",
            "adabelief",
            "novograd",
            "adagrad",
            "adadelta",
            "rmsprop",
        ];
        let mut missing = Vec::new();
        let catalog = Catalog::builtin();
        for name in catalog.optimizer_names() {
            match catalog.optimizer(name).unwrap().timm.as_deref() {
                Some(opt) => assert!(timm.contains(&opt), "{name} -> {opt}"),
                None => missing.push(name.to_string()),
            }
        }
        missing.sort();
        assert_eq!(missing, ["adabound", "sophia"]);
        let registries = bocb_search_spaces::builtin_backbones();
        let timm_model = |name| registries.backbone(name).unwrap().timm;
        assert_eq!(timm_model("alexnet@micro"), None);
        assert_eq!(
            timm_model("mobilenet_v2@micro").as_deref(),
            Some("mobilenetv2_100")
        );
    }

    #[test]
    fn csv_rows() {
        let csv = render_csv(&[config("sgd_m", &[("momentum", 0.9)])]);
        assert_eq!(
            csv.lines().nth(1).unwrap(),
            "resnet50_cifar@micro,sgd_m,0.001,0.05,momentum=0.9,71.234,0.5,3,torch,200"
        );
    }
}
