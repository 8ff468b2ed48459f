//! How a fine-tuning experiment names what it starts from: `init: {
//! from_experiment: NAME }`, and each backbone once per pre-training
//! optimizer as `backbone~optimizer`.

/// The `init` key that names the experiment to fine-tune from.
pub const FROM_EXPERIMENT: &str = "from_experiment";

/// Separates a backbone from the optimizer that pre-trained it.
pub const PRETRAINED_WITH: char = '~';

/// `resnet18~sgd_m` as (`resnet18`, Some(`sgd_m`)); a plain backbone as
/// (itself, None).
pub fn split_pretrained(backbone: &str) -> (&str, Option<&str>) {
    match backbone.split_once(PRETRAINED_WITH) {
        Some((base, optimizer)) => (base, Some(optimizer)),
        None => (backbone, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backbone_name_carries_its_pre_training_optimizer() {
        assert_eq!(
            split_pretrained("resnet18_cifar@micro~sgd_m"),
            ("resnet18_cifar@micro", Some("sgd_m"))
        );
        assert_eq!(split_pretrained("deit_s"), ("deit_s", None));
    }
}
