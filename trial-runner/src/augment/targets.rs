//! Soft targets and the losses that read them: label smoothing (timm's
//! `one_hot`/`mixup_target`), BCE targets as timm's `BinaryCrossEntropy`
//! makes them for the RSB recipes, `SoftTargetCrossEntropy`, and binary
//! cross-entropy with logits.
//!
//! Smoothed targets with the soft-target cross-entropy give exactly timm's
//! `LabelSmoothingCrossEntropy`: `(1 - s) * nll + s * mean(-log p)`.

use tch::{Kind, Reduction, Tensor};

/// timm's `one_hot` with smoothing `s`: `1 - s + s / K` on the label,
/// `s / K` elsewhere, as a (N, K) float tensor on the labels' device.
pub fn smoothed_one_hot(labels: &Tensor, num_classes: i64, smoothing: f64) -> Tensor {
    let off = smoothing / num_classes as f64;
    let on = 1.0 - smoothing + off;
    let n = labels.size()[0];
    Tensor::full([n, num_classes], off, (Kind::Float, labels.device())).scatter_value(
        1,
        &labels.to_kind(Kind::Int64).view([-1, 1]),
        on,
    )
}

/// timm's `mixup_target`: smoothed one-hot targets mixed with those of the
/// reversed batch, `lambda * y + (1 - lambda) * flip(y)`. `lambda = 1` gives
/// the plain smoothed targets.
pub fn mixed_targets(labels: &Tensor, num_classes: i64, lambda: f64, smoothing: f64) -> Tensor {
    let targets = smoothed_one_hot(labels, num_classes, smoothing);
    &targets * lambda + targets.flip([0]) * (1.0 - lambda)
}

/// timm's `target_threshold`: 1 where a soft target exceeds `threshold`, else
/// 0 (RSB uses 0.2, so both classes of a mixed pair become positives).
pub fn binarized_targets(targets: &Tensor, threshold: f64) -> Tensor {
    targets.gt(threshold).to_kind(targets.kind())
}

/// timm's `SoftTargetCrossEntropy`: the batch mean of `-sum(t * log_softmax(x))`.
pub fn soft_target_cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    (-targets * logits.log_softmax(-1, Kind::Float))
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float)
}

/// Binary cross-entropy with logits, averaged over every element (PyTorch's
/// `binary_cross_entropy_with_logits`, reduction mean).
pub fn binary_cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    logits.binary_cross_entropy_with_logits::<Tensor>(
        &targets.to_kind(logits.kind()),
        None,
        None,
        Reduction::Mean,
    )
}

/// timm's `BinaryCrossEntropy` loss (the RSB recipes' loss): class indices
/// become smoothed one-hot targets; dense targets (from Mixup/CutMix, already
/// smoothed there) are used as they are; then optionally binarised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BceLoss {
    pub smoothing: f64,
    pub target_threshold: Option<f64>,
}

impl BceLoss {
    /// `targets` is either (N) class indices or (N, K) soft targets.
    pub fn loss(&self, logits: &Tensor, targets: &Tensor) -> Tensor {
        let dense = if targets.dim() == 1 {
            let num_classes = *logits.size().last().expect("logits are (N, K)");
            smoothed_one_hot(targets, num_classes, self.smoothing)
        } else {
            targets.shallow_clone()
        };
        let dense = match self.target_threshold {
            Some(threshold) => binarized_targets(&dense, threshold),
            None => dense,
        };
        binary_cross_entropy(logits, &dense)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(t: &Tensor) -> Vec<Vec<f64>> {
        Vec::<Vec<f64>>::try_from(&t.to_kind(Kind::Double)).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn smoothing_moves_mass_evenly_and_keeps_rows_summing_to_one() {
        let labels = Tensor::from_slice(&[2i64, 0]);
        let t = rows(&smoothed_one_hot(&labels, 4, 0.1));
        let want = [[0.025, 0.025, 0.925, 0.025], [0.925, 0.025, 0.025, 0.025]];
        for (row, want) in t.iter().zip(want) {
            for (a, b) in row.iter().zip(want) {
                assert!(close(*a, b), "{row:?}");
            }
            assert!(close(row.iter().sum(), 1.0));
        }
        let hard = rows(&smoothed_one_hot(&labels, 4, 0.0));
        assert_eq!(hard[0], vec![0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn mixed_targets_pair_each_sample_with_its_mirror() {
        let labels = Tensor::from_slice(&[1i64, 3, 0]);
        let t = rows(&mixed_targets(&labels, 4, 0.7, 0.0));
        // Sample 0 mixes with sample 2 (label 0), the middle one with itself.
        assert!(close(t[0][1], 0.7) && close(t[0][0], 0.3));
        assert!(close(t[1][3], 1.0));
        assert!(close(t[2][0], 0.7) && close(t[2][1], 0.3));
        for row in &t {
            assert!(close(row.iter().sum(), 1.0));
        }
    }

    #[test]
    fn soft_cross_entropy_matches_a_hand_computation() {
        // softmax([0, ln 3]) = [1/4, 3/4]; second row: softmax([0, 0]) = [1/2, 1/2].
        let logits = Tensor::from_slice(&[0.0f32, 3f32.ln(), 0.0, 0.0]).view([2, 2]);
        let targets = Tensor::from_slice(&[0.5f32, 0.5, 1.0, 0.0]).view([2, 2]);
        let loss = soft_target_cross_entropy(&logits, &targets).double_value(&[]);
        let first = -(0.5 * 0.25f64.ln() + 0.5 * 0.75f64.ln());
        let second = -(0.5f64.ln());
        assert!(close(loss, (first + second) / 2.0), "{loss}");
        // With hard targets it is the usual cross-entropy.
        let hard = logits.cross_entropy_for_logits(&Tensor::from_slice(&[1i64, 0]));
        let soft = soft_target_cross_entropy(
            &logits,
            &smoothed_one_hot(&Tensor::from_slice(&[1i64, 0]), 2, 0.0),
        );
        assert!(close(hard.double_value(&[]), soft.double_value(&[])));
    }

    #[test]
    fn binary_cross_entropy_matches_a_hand_computation() {
        let logits = Tensor::from_slice(&[0.0f32, 2.0]).view([1, 2]);
        let targets = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
        let loss = binary_cross_entropy(&logits, &targets).double_value(&[]);
        // -ln sigmoid(0) = ln 2; -ln(1 - sigmoid(2)) = ln(1 + e^2).
        let want = (2f64.ln() + (1.0 + 2f64.exp()).ln()) / 2.0;
        assert!(close(loss, want), "{loss} vs {want}");
    }

    #[test]
    fn rsb_targets_binarise_above_the_threshold() {
        let soft = Tensor::from_slice(&[0.1f32, 0.25, 0.65]).view([1, 3]);
        assert_eq!(
            rows(&binarized_targets(&soft, 0.2)),
            vec![vec![0.0, 1.0, 1.0]]
        );
        let logits = Tensor::from_slice(&[0.5f32, -1.0, 2.0]).view([1, 3]);
        let rsb = BceLoss {
            smoothing: 0.1,
            target_threshold: Some(0.2),
        };
        let from_dense = rsb.loss(&logits, &soft).double_value(&[]);
        let want = binary_cross_entropy(
            &logits,
            &Tensor::from_slice(&[0.0f32, 1.0, 1.0]).view([1, 3]),
        );
        assert!(close(from_dense, want.double_value(&[])));
        // Class indices are smoothed (0.9 + 0.1/3 on, 0.1/3 off), then binarised.
        let from_labels = rsb
            .loss(&logits, &Tensor::from_slice(&[2i64]))
            .double_value(&[]);
        let one_hot = Tensor::from_slice(&[0.0f32, 0.0, 1.0]).view([1, 3]);
        assert!(close(
            from_labels,
            binary_cross_entropy(&logits, &one_hot).double_value(&[])
        ));
        // Without a threshold the smoothed targets themselves are the BCE targets.
        let smooth = BceLoss {
            smoothing: 0.3,
            target_threshold: None,
        };
        let got = smooth
            .loss(&logits, &Tensor::from_slice(&[2i64]))
            .double_value(&[]);
        let targets = Tensor::from_slice(&[0.1f32, 0.1, 0.8]).view([1, 3]);
        assert!(close(
            got,
            binary_cross_entropy(&logits, &targets).double_value(&[])
        ));
    }
}
