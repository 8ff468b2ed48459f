//! bocb's image operations against PIL's bytes: the cases in
//! `tests/augment_cases.json` were recorded by `scripts/record_augment_cases.py`
//! through timm's RandAugment op functions and torchvision's PIL resize.
//!
//! Every case must match PIL exactly: bocb keeps PIL's integer, fixed-point
//! and single-precision arithmetic, so no tolerance is needed.

use std::collections::BTreeMap;
use std::path::Path;

use bocb_trial_runner::augment::crop::{resized_crop, CropBox, PixelLayout};
use bocb_trial_runner::augment::rand_augment::{
    auto_contrast, brightness, color, contrast, equalize, invert, posterize, sharpness, solarize,
    solarize_add, Geometry,
};
use bocb_trial_runner::augment::{ImageSize, Interpolation};
use serde::Deserialize;

#[derive(Deserialize)]
struct Record {
    fill: [u8; 3],
    images: BTreeMap<String, Image>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Image {
    height: usize,
    width: usize,
    pixels: Vec<u8>,
}

#[derive(Deserialize)]
struct Case {
    op: String,
    image: String,
    args: Vec<f64>,
    resample: Option<String>,
    output: Vec<u8>,
}

fn record() -> Record {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/augment_cases.json");
    let text = std::fs::read_to_string(&path).expect("tests/augment_cases.json exists");
    serde_json::from_str(&text).expect("the fixture parses")
}

fn run(case: &Case, image: &Image, fill: [u8; 3]) -> Vec<u8> {
    let size = ImageSize::new(image.height, image.width);
    let mut out = image.pixels.clone();
    let arg = || case.args[0];
    let interpolation = match case.resample.as_deref() {
        Some("bilinear") | None => Interpolation::Bilinear,
        Some("bicubic") => Interpolation::Bicubic,
        Some(other) => panic!("unknown resample {other}"),
    };
    let geometry = Geometry {
        size,
        interpolation,
        fill,
    };
    match case.op.as_str() {
        "invert" => invert(&mut out),
        "auto_contrast" => auto_contrast(&mut out),
        "equalize" => equalize(&mut out),
        "posterize" => posterize(&mut out, arg() as u32),
        "solarize" => solarize(&mut out, arg() as u32),
        "solarize_add" => solarize_add(&mut out, arg() as u8, 128),
        "brightness" => brightness(&mut out, arg() as f32),
        "contrast" => contrast(&mut out, arg() as f32),
        "color" => color(&mut out, arg() as f32),
        "sharpness" => sharpness(&image.pixels, &mut out, size, arg() as f32),
        "rotate" => geometry.rotate(&image.pixels, &mut out, arg()),
        "shear_x" => geometry.shear_x(&image.pixels, &mut out, arg()),
        "shear_y" => geometry.shear_y(&image.pixels, &mut out, arg()),
        "translate_x_rel" => geometry.translate_x_rel(&image.pixels, &mut out, arg()),
        "translate_y_rel" => geometry.translate_y_rel(&image.pixels, &mut out, arg()),
        "resized_crop" => {
            let a: Vec<usize> = case.args.iter().map(|&v| v as usize).collect();
            let crop = CropBox {
                top: a[0],
                left: a[1],
                height: a[2],
                width: a[3],
            };
            let out_size = ImageSize::new(a[4], a[5]);
            out = vec![0; out_size.bytes()];
            resized_crop(
                (&image.pixels, PixelLayout::Planes),
                size,
                crop,
                &mut out,
                out_size,
                interpolation,
            );
        }
        other => panic!("the fixture has an op this test does not know: {other}"),
    }
    out
}

#[test]
fn every_recorded_case_matches_pil() {
    let record = record();
    assert!(record.cases.len() > 250, "the fixture lost cases");
    let mut worst: BTreeMap<String, (u8, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in &record.cases {
        let image = &record.images[&case.image];
        let got = run(case, image, record.fill);
        assert_eq!(got.len(), case.output.len(), "{} {:?}", case.op, case.args);
        let diff = got
            .iter()
            .zip(&case.output)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        let off = got.iter().zip(&case.output).filter(|(a, b)| a != b).count();
        let entry = worst.entry(case.op.clone()).or_default();
        *entry = (entry.0.max(diff), entry.1 + off);
        if diff > 0 {
            failures.push(format!(
                "{} on {} {:?} {:?}: {off} samples off, worst by {diff}",
                case.op, case.image, case.args, case.resample
            ));
        }
    }
    for (op, (diff, off)) in &worst {
        println!("{op}: worst difference {diff}, {off} samples differ");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
