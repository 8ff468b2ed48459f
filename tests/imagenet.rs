//! End-to-end: an ImageNet-style folder of photograph-sized JPEGs, streamed
//! at 224 pixels through `bocb run`, trains the ImageNet forms of ResNet-50
//! and DeiT-S at full size with their own recipes; a CIFAR form asked for
//! at 224 is refused with the name to use.

mod common;

use std::path::Path;
use std::process::Output;

use common::bocb;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run(dir: &Path, backbones: &str) -> Output {
    let file = dir.join("imagenet.yaml");
    std::fs::write(
        &file,
        format!(
            "name: imagenet\ndataset: {{ format: image-folder, path: data, resolution: 224 }}\nbackbones: [{backbones}]\noptimizers: [sgd_m]\nepochs: 1\nbatch_size: 4\nbudget: {{ trials: 1 }}\ndevice: cpu\n"
        ),
    )
    .unwrap();
    let store = dir.join("store");
    bocb(&[
        "run",
        file.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--quiet",
    ])
}

#[test]
fn a_jpeg_folder_at_224_trains_resnet50_and_deit_s_through_bocb_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let out = bocb(&[
        "data",
        "synth",
        "--out",
        data.to_str().unwrap(),
        "--format",
        "image-folder",
        "--side",
        "320",
        "--jpeg",
        "--classes",
        "2",
        "--train",
        "8",
        "--test",
        "4",
        "--seed",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jpegs = walk(&data.join("train"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "JPEG"))
        .count();
    assert_eq!(jpegs, 8, "the training split is JPEG files");

    let out = run(dir, "resnet50_cifar");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("use `resnet50`"), "{err}");

    let out = run(dir, "resnet50, deit_s");
    assert!(out.status.success(), "{}", stderr(&out));
    let export = bocb(&[
        "export",
        "--experiment",
        "imagenet",
        "--trials",
        "--store",
        dir.join("store").to_str().unwrap(),
    ]);
    assert!(export.status.success(), "{}", stderr(&export));
    let trials: Vec<serde_json::Value> = serde_json::from_slice(&export.stdout).unwrap();
    let mut trained: Vec<(String, String)> = trials
        .iter()
        .map(|t| {
            assert_eq!(t["status"], "done", "{t}");
            assert_eq!(t["epochs"].as_array().unwrap().len(), 1, "{t}");
            assert!(t["final_accuracy"].as_f64().unwrap().is_finite(), "{t}");
            (
                t["backbone"].as_str().unwrap().to_string(),
                t["recipe"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    trained.sort();
    assert_eq!(
        trained,
        [
            ("deit_s".to_string(), "deit".to_string()),
            ("resnet50".to_string(), "pytorch".to_string())
        ]
    );
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
