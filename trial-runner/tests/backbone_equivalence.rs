//! Each backbone against its reference implementation: the fixtures in
//! `tests/backbone_fixtures/` (made by `scripts/export_backbone_fixtures.py`
//! from timm/torchvision) hold a small configuration's weights, an input and
//! the reference's logits; bocb's model of the same name loads the weights
//! by name and must give the same logits in eval mode.

use std::collections::BTreeMap;
use std::path::Path;

use bocb_trial_runner::models::BackboneRegistry;
use tch::nn;
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-4;

fn fixtures() -> Vec<(String, BTreeMap<String, Tensor>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/backbone_fixtures");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/backbone_fixtures exists")
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().replace('+', "@");
            let tensors = Tensor::read_safetensors(&p).unwrap().into_iter().collect();
            (name, tensors)
        })
        .collect();
    fixtures.sort_by(|a, b| a.0.cmp(&b.0));
    fixtures
}

#[test]
fn logits_match_the_reference_with_its_weights() {
    let registry = BackboneRegistry::builtin();
    let mut failures = Vec::new();
    for (name, mut tensors) in fixtures() {
        let input = tensors.remove("__input__").expect("fixture input");
        let want = tensors.remove("__logits__").expect("fixture logits");
        let classes = want.size()[1];
        let mut vs = nn::VarStore::new(Device::Cpu);
        let model = registry.build(&name, &vs.root(), classes, 0).unwrap();
        vs.freeze();
        let ours = vs.variables();
        let missing: Vec<_> = ours.keys().filter(|k| !tensors.contains_key(*k)).collect();
        let extra: Vec<_> = tensors.keys().filter(|k| !ours.contains_key(*k)).collect();
        if !missing.is_empty() || !extra.is_empty() {
            failures.push(format!(
                "{name}: not in the fixture {missing:?}; not in bocb {extra:?}"
            ));
            continue;
        }
        for (key, mut var) in ours {
            let value = &tensors[&key];
            if var.size() != value.size() {
                failures.push(format!(
                    "{name}: {key} is {:?} in bocb, {:?} in the reference",
                    var.size(),
                    value.size()
                ));
                continue;
            }
            tch::no_grad(|| var.copy_(value));
        }
        let got = tch::no_grad(|| model.net.forward_t(&input, false));
        let diff = (&got - &want).abs().max().double_value(&[]);
        if diff.is_nan() || diff > TOLERANCE {
            failures.push(format!("{name}: max |logit difference| {diff:e}"));
        }
        assert_eq!(got.kind(), Kind::Float);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_backbone_has_a_fixture() {
    let have: Vec<String> = fixtures().into_iter().map(|(name, _)| name).collect();
    for name in BackboneRegistry::builtin().names() {
        assert!(
            have.iter().any(|f| f.split('@').next() == Some(name)),
            "`{name}` has no fixture in tests/backbone_fixtures (scripts/export_backbone_fixtures.py)"
        );
    }
}
