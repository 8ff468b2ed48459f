//! `grid_centres` as experiment files write it, parsed whole with the
//! built-in registries: kept out of `grid_centres.rs`, so that module does
//! not import back the experiment module that uses it.

use std::path::Path;

use bocb_search_spaces::Catalog;

use bocb_tuner::experiment::{Experiment, ExperimentError};
use bocb_tuner::registries::Registries;

const BASE: &str = "\
name: centred
dataset: { format: cifar100-bin, path: . }
backbones: [resnet18_cifar, vit_tiny_cifar]
preset: micro
optimizers: [sgd_m, adamw]
epochs: 3
";

fn parse(centres: &str) -> Result<Experiment, ExperimentError> {
    Experiment::parse(
        &format!("{BASE}{centres}"),
        "exp.yaml",
        Path::new("."),
        &Registries::builtin(),
    )
}

fn error(centres: &str) -> String {
    parse(centres).unwrap_err().to_string()
}

fn grids(e: &Experiment, backbone: &str, optimizer: &str) -> ([f64; 5], [f64; 5]) {
    let catalog = Catalog::builtin();
    let space = e
        .spec
        .pair_space(backbone, catalog.optimizer(optimizer).unwrap());
    (*space.lr.values(), *space.weight_decay.values())
}

#[test]
fn pairs_get_their_backbones_centres_and_their_own_win() {
    let e = parse(
        "grid_centres:\n  vit_tiny_cifar: { lr: 4.0e-3 }\n  resnet18_cifar@micro:\n    weight_decay: 1.0e-3\n    sgd_m: { lr: 0.2, weight_decay: 2.5e-4 }\n",
    )
    .unwrap();
    let (vit, r18) = ("vit_tiny_cifar@micro", "resnet18_cifar@micro");
    // The backbone's lr centre for every optimizer, spacing kept (x2).
    assert_eq!(
        grids(&e, vit, "adamw"),
        (
            [1.0e-3, 2.0e-3, 4.0e-3, 8.0e-3, 1.6e-2],
            [0.0125, 0.025, 0.05, 0.1, 0.2]
        )
    );
    assert_eq!(
        grids(&e, vit, "sgd_m").0,
        [1.0e-3, 2.0e-3, 4.0e-3, 8.0e-3, 1.6e-2]
    );
    // The pair's own centres win over the backbone's.
    assert_eq!(
        grids(&e, r18, "sgd_m"),
        (
            [0.05, 0.1, 0.2, 0.4, 0.8],
            [6.25e-5, 1.25e-4, 2.5e-4, 5.0e-4, 1.0e-3]
        )
    );
    // The backbone's weight-decay centre; lr stays the optimizer's.
    assert_eq!(
        grids(&e, r18, "adamw"),
        (
            [2.5e-4, 5.0e-4, 1.0e-3, 2.0e-3, 4.0e-3],
            [2.5e-4, 5.0e-4, 1.0e-3, 2.0e-3, 4.0e-3]
        )
    );
    // Without the field every pair searches the optimizer's own grids.
    let plain = parse("").unwrap();
    assert!(plain.spec.grid_centres.is_empty());
    assert_eq!(grids(&plain, r18, "sgd_m").0, [0.025, 0.05, 0.1, 0.2, 0.4]);
}

#[test]
fn the_field_serializes_back_to_the_same_centres() {
    let e = parse(
        "grid_centres: { vit_tiny_cifar: { lr: 1.0e-3, sgd_m: { weight_decay: 1.0e-4 } } }\n",
    )
    .unwrap();
    let yaml = serde_yaml::to_string(&e.spec).unwrap();
    let again: bocb_tuner::experiment::ExperimentSpec = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(again.grid_centres, e.spec.grid_centres);
    let centre = again.grid_centre("vit_tiny_cifar@micro", "sgd_m");
    assert_eq!(
        (centre.lr, centre.weight_decay),
        (Some(1.0e-3), Some(1.0e-4))
    );
    let plain = serde_yaml::to_string(&parse("").unwrap().spec).unwrap();
    assert!(!plain.contains("grid_centres"), "{plain}");
}

#[test]
fn unknown_names_are_located_and_list_the_valid_ones() {
    let err = error("grid_centres:\n  vit_base: { lr: 1.0e-3 }\n");
    assert!(
        err.starts_with("exp.yaml:8:3: `grid_centres`: `vit_base` is not a backbone of this experiment; valid: resnet18_cifar@micro, vit_tiny_cifar@micro"),
        "{err}"
    );
    let err = error("grid_centres:\n  vit_tiny_cifar:\n    adam: { lr: 1.0e-3 }\n");
    assert!(err.starts_with("exp.yaml:9:5: `grid_centres.vit_tiny_cifar`: `adam` is neither `lr`, `weight_decay` nor an optimizer of this experiment; valid optimizers: sgd_m, adamw"), "{err}");
    let err = error(
        "grid_centres:\n  vit_tiny_cifar: { lr: 1.0e-3 }\n  vit_tiny_cifar@micro: { lr: 2.0e-3 }\n",
    );
    assert!(
        err.contains("both name backbone `vit_tiny_cifar@micro`; merge them"),
        "{err}"
    );
}

#[test]
fn bad_values_and_keys_are_refused_where_they_are() {
    for bad in ["0", "-1.0e-3", ".inf", ".nan"] {
        let err = error(&format!(
            "grid_centres:\n  vit_tiny_cifar: {{ lr: {bad} }}\n"
        ));
        assert!(err.starts_with("exp.yaml:8:"), "{err}");
        assert!(
            err.contains("a grid centre must be a positive number"),
            "{err}"
        );
    }
    let err = error("grid_centres:\n  vit_tiny_cifar:\n    sgd_m: { lr: -2 }\n");
    assert!(err.starts_with("exp.yaml:9:"), "{err}");
    assert!(err.contains("must be a positive number, got -2"), "{err}");
    // Only `lr` and `weight_decay` within an optimizer's entry.
    let err = error("grid_centres:\n  vit_tiny_cifar:\n    sgd_m: { momentum: 0.8 }\n");
    assert!(err.starts_with("exp.yaml:9:"), "{err}");
    assert!(
        err.contains("unknown field `momentum`, expected `lr` or `weight_decay`"),
        "{err}"
    );
    // A misspelt `weight_decay` is explained, not taken for an optimizer.
    let err = error("grid_centres:\n  vit_tiny_cifar: { weight_decy: 1.0e-4 }\n");
    assert!(err.starts_with("exp.yaml:8:"), "{err}");
    assert!(
        err.contains("floating point `0.0001`, expected an optimizer's `{ lr: X, weight_decay: Y }` (`weight_decy` is neither `lr` nor `weight_decay`)"),
        "{err}"
    );
    let err = error("grid_centres:\n  vit_tiny_cifar: { lr: 1.0e-3, lr: 2.0e-3 }\n");
    assert!(err.contains("duplicate key `lr`"), "{err}");
}
