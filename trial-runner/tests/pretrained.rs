//! Pretrained weights load by the reference's names: the reference models'
//! own weights give their logits, another class count replaces only the
//! classifier, another input size resamples the position embedding as timm
//! does, and a file that does not fit is refused with every problem listed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bocb_trial_runner::models::BackboneRegistry;
use bocb_trial_runner::pretrained::{self, Loaded, PretrainedError};
use tch::{nn, Device, Tensor};

const TOLERANCE: f64 = 1e-4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The equivalence fixtures: reference weights (micro configurations) plus
/// `__input__` and `__logits__`.
fn fixture(name: &str) -> BTreeMap<String, Tensor> {
    let path = root()
        .join("trial-runner/tests/backbone_fixtures")
        .join(format!("{}.safetensors", name.replace('@', "+")));
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

fn fixture_names() -> Vec<String> {
    let dir = root().join("trial-runner/tests/backbone_fixtures");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().replace('+', "@"))
        .collect();
    names.sort();
    names
}

/// `tensors` as a user's weights file.
fn write(dir: &Path, name: &str, tensors: &BTreeMap<String, Tensor>) -> PathBuf {
    let path = dir.join(format!("{name}.safetensors"));
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    Tensor::write_safetensors(&named, &path).unwrap();
    path
}

/// `backbone` for `classes` with the file's weights, and what loading did.
fn load(
    backbone: &str,
    classes: i64,
    path: &Path,
) -> Result<(nn::VarStore, Box<dyn nn::ModuleT + Send>, Loaded), PretrainedError> {
    let registry = BackboneRegistry::builtin();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = registry.build(backbone, &vs.root(), classes, 7).unwrap();
    let weights = pretrained::read(path)?;
    let loaded = pretrained::load(&registry, backbone, classes, &vs, &weights, path)?;
    Ok((vs, model.net, loaded))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn every_reference_model_loads_by_its_names_and_gives_its_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for name in fixture_names() {
        let mut tensors = fixture(&name);
        let input = tensors.remove("__input__").unwrap();
        let want = tensors.remove("__logits__").unwrap();
        let path = write(dir.path(), &name, &tensors);
        let (_, net, loaded) = load(&name, want.size()[1], &path).unwrap();
        assert_eq!(loaded, Loaded::default(), "{name}");
        let got = tch::no_grad(|| net.forward_t(&input, false));
        let diff = max_diff(&got, &want);
        if diff.is_nan() || diff > TOLERANCE {
            failures.push(format!("{name}: max |logit difference| {diff:e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn another_class_count_replaces_only_the_classifier() {
    let dir = tempfile::tempdir().unwrap();
    for (name, head) in [
        ("vit_tiny_cifar@micro", vec!["head.bias", "head.weight"]),
        ("resnet18_cifar@micro", vec!["fc.bias", "fc.weight"]),
        ("convnext_t@micro", vec!["head.fc.bias", "head.fc.weight"]),
        (
            "vgg13_bn@micro",
            vec!["classifier.6.bias", "classifier.6.weight"],
        ),
    ] {
        let mut tensors = fixture(name);
        tensors.retain(|k, _| !k.starts_with("__"));
        let path = write(dir.path(), name, &tensors);
        let (vs, _, loaded) = load(name, 7, &path).unwrap();
        assert_eq!(loaded.fresh, head, "{name}");
        for (key, var) in vs.variables() {
            let file = &tensors[&key];
            if head.contains(&key.as_str()) {
                assert_eq!(var.size()[0], 7, "{name}: {key}");
            } else {
                assert!(var.equal(file), "{name}: {key} differs from the file");
            }
        }
    }
}

#[test]
fn a_file_that_does_not_fit_is_refused_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = fixture("resnet18_cifar@micro");
    tensors.retain(|k, _| !k.starts_with("__"));
    tensors.remove("conv1.weight");
    tensors.insert(
        "extra.weight".into(),
        Tensor::zeros([2, 3], tch::kind::FLOAT_CPU),
    );
    tensors.insert(
        "layer1.0.conv1.weight".into(),
        Tensor::zeros([5, 16, 3, 3], tch::kind::FLOAT_CPU),
    );
    let path = write(dir.path(), "wrong", &tensors);
    let err = load("resnet18_cifar@micro", 10, &path)
        .err()
        .unwrap()
        .to_string();
    for want in [
        "missing: conv1.weight [16, 3, 3, 3]",
        "unexpected: extra.weight [2, 3]",
        "mis-shaped: layer1.0.conv1.weight is [5, 16, 3, 3] in the file, [16, 16, 3, 3] in bocb",
    ] {
        assert!(err.contains(want), "`{want}` not in:\n{err}");
    }
    let err = load("resnet18_cifar@micro", 10, &dir.path().join("none.pth"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("pth_to_safetensors.py"), "{err}");
}

fn python() -> PathBuf {
    match std::env::var_os("VIRTUAL_ENV") {
        Some(venv) => Path::new(&venv).join("bin/python"),
        None => root().join(".venv/bin/python"),
    }
}

fn run_script(script: &str, args: &[&Path]) {
    let status = Command::new(python())
        .arg(root().join("scripts").join(script))
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running {script} with {}: {e}", python().display()));
    assert!(status.success(), "{script} {args:?} failed");
}

/// Full-size models as PyTorch builds them with random weights, saved as a
/// user's `.pth` and converted by the script the docs name: every backbone
/// whose reference is timm's or torchvision's. moganet_s, unireplknet_t and
/// transnext_t are left out: their references are read from clones of their
/// own repositories, which the test cannot count on.
#[test]
fn full_size_checkpoints_converted_from_pth_give_the_reference_logits() {
    let mut cases: Vec<(&str, &str, Vec<&str>)> = [
        "alexnet",
        "attenformer_s12",
        "caformer_s12",
        "convformer_s12",
        "convnext_t",
        "convnextv2_t",
        "deit_s",
        "densenet121",
        "densenet121_cifar",
        "efficientnet_b0",
        "identityformer_s12",
        "mlp_mixer_s",
        "mobilenet_v2",
        "poolformerv2_s12",
        "repvgg_a1",
        "resnet18",
        "resnet18_cifar",
        "resnet50",
        "resnet50_cifar",
        "swin_t",
        "vgg13_bn",
        "vit_tiny",
        "vit_tiny_cifar",
    ]
    .into_iter()
    .map(|backbone| (backbone, backbone, vec![]))
    .collect();
    cases.push(("vit_tiny_cifar_from48", "vit_tiny_cifar", vec!["pos_embed"]));
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![dir.path()];
    args.extend(cases.iter().map(|(file, _, _)| Path::new(file)));
    run_script("export_pretrained_fixtures.py", &args);
    let mut failures = Vec::new();
    for (file, backbone, resampled) in cases {
        let pth = dir.path().join(format!("{file}.pth"));
        let converted = dir.path().join(format!("{file}.safetensors"));
        let expected = dir.path().join(format!("{file}.expect.safetensors"));
        run_script("pth_to_safetensors.py", &[&pth, &converted]);
        let expect: BTreeMap<String, Tensor> = Tensor::read_safetensors(&expected)
            .unwrap()
            .into_iter()
            .collect();
        match load(backbone, 100, &converted) {
            Err(e) => failures.push(format!("{file}: {e}")),
            Ok((_, net, loaded)) => {
                if loaded.resampled != resampled || !loaded.fresh.is_empty() {
                    failures.push(format!("{file}: loading did {loaded:?}"));
                }
                let got = tch::no_grad(|| net.forward_t(&expect["input"], false));
                let diff = max_diff(&got, &expect["logits"]);
                if diff.is_nan() || diff > TOLERANCE {
                    failures.push(format!("{file}: max |logit difference| {diff:e}"));
                }
            }
        }
        // The checkpoints come to 2 GB (VGG's 0.5 GB): each model's files
        // go once it is checked, so that the conversions do not double that.
        for path in [pth, converted, expected] {
            std::fs::remove_file(path).unwrap();
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
