//! Training recipes: the paper's Table A3 (PyTorch, DeiT, ConvNeXt, RSB A2
//! and A3 settings) in their CIFAR-100 form, one YAML file per recipe in
//! `search-spaces/recipes/`.
//!
//! A recipe names everything about a trial except the optimizer's
//! hyperparameters: the tuner always replaces the recipe's default
//! optimizer, lr and weight decay with the searched ones. An experiment may
//! override any field (`recipe: { base: deit, epochs: 3 }`); overrides use
//! the same validation, so a bad override is reported at its own line.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::Path;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::{located, SpaceError};

/// The built-in recipes, embedded so the binary works from any directory.
const BUILTIN_RECIPES: &[(&str, &str)] = &[
    (
        "search-spaces/recipes/convnext.yaml",
        include_str!("../recipes/convnext.yaml"),
    ),
    (
        "search-spaces/recipes/deit.yaml",
        include_str!("../recipes/deit.yaml"),
    ),
    (
        "search-spaces/recipes/finetune.yaml",
        include_str!("../recipes/finetune.yaml"),
    ),
    (
        "search-spaces/recipes/pytorch.yaml",
        include_str!("../recipes/pytorch.yaml"),
    ),
    (
        "search-spaces/recipes/rsb_a2.yaml",
        include_str!("../recipes/rsb_a2.yaml"),
    ),
    (
        "search-spaces/recipes/rsb_a3.yaml",
        include_str!("../recipes/rsb_a3.yaml"),
    ),
];

/// Reads a number and checks it inside serde_yaml's `deserialize_f64`, so
/// an error carries the number's own line and column.
struct CheckedNumber {
    expecting: &'static str,
    check: fn(f64) -> Result<f64, String>,
}

impl de::Visitor<'_> for CheckedNumber {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        (self.check)(v).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }
}

/// A number in `[0, 1]` (a probability or a rate).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let check = |v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(format!("must be between 0 and 1, got {v}"))
            }
        };
        deserializer
            .deserialize_f64(CheckedNumber {
                expecting: "a number between 0 and 1",
                check,
            })
            .map(Fraction)
    }
}

/// A finite number `>= 0`; 0 switches the ingredient off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct NonNegative(pub f64);

impl<'de> Deserialize<'de> for NonNegative {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let check = |v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(format!(
                    "must be a finite number >= 0 (0 switches it off), got {v}"
                ))
            }
        };
        deserializer
            .deserialize_f64(CheckedNumber {
                expecting: "a number >= 0",
                check,
            })
            .map(NonNegative)
    }
}

/// A whole number `>= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Count(pub u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let check = |v: f64| {
            if v >= 1.0 && v <= f64::from(u32::MAX) && v.fract() == 0.0 {
                Ok(v)
            } else {
                Err(format!("must be a whole number >= 1, got {v}"))
            }
        };
        deserializer
            .deserialize_f64(CheckedNumber {
                expecting: "a whole number >= 1",
                check,
            })
            .map(|v| Count(v as u32))
    }
}

/// A layer-wise learning-rate decay factor in `(0, 1]` (timm's
/// `--layer-decay`): layer `i` of `n` trains at `lr * decay^(n - i)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct LayerDecay(pub f64);

impl<'de> Deserialize<'de> for LayerDecay {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let check = |v: f64| {
            if v > 0.0 && v <= 1.0 {
                Ok(v)
            } else {
                Err(format!(
                    "layer_decay must be in (0, 1] (such as 0.65-0.75 for a ViT-B; null switches it off), got {v}"
                ))
            }
        };
        deserializer
            .deserialize_f64(CheckedNumber {
                expecting: "a layer_decay in (0, 1]",
                check,
            })
            .map(LayerDecay)
    }
}

/// How training images are cropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Crop {
    /// App. A.1's CIFAR adaptation: a backbone trained at the CIFAR side
    /// (32) gets `random_padded`, one trained on up-sampled images
    /// `random_resized` (as OpenMixup's CIFAR configs do).
    Auto,
    /// torchvision's `RandomResizedCrop` (scale 0.08-1, ratio 3/4-4/3).
    RandomResized,
    /// torchvision's `RandomCrop(side, padding=4)`.
    RandomPadded,
    /// No crop.
    None,
}

/// The loss and its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Soft-target cross-entropy (label smoothing, Mixup/CutMix targets).
    CrossEntropy,
    /// Binary cross-entropy on (mixed) one-hot targets, as RSB trains.
    BinaryCrossEntropy,
}

/// The learning-rate decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Cosine decay to zero, per step (every recipe of Table A3).
    Cosine,
}

/// timm's RandAugment (`rand-m{magnitude}-mstd{magnitude_std}-inc1`, `ops`
/// operations per image).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandAugment {
    /// Operations applied to each image (timm's default 2).
    pub ops: Count,
    /// Magnitude out of 10.
    pub magnitude: NonNegative,
    /// Standard deviation of the Gaussian noise added to the magnitude.
    pub magnitude_std: NonNegative,
}

/// Deserializes a present field, so `Option<T>` in an override means
/// "given" (even when `T` is itself an `Option` given as `null`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Declares `Recipe` and `RecipeOverrides` from one field list, so the two
/// can never disagree about which fields exist.
macro_rules! recipe_fields {
    ($( $(#[doc = $doc:literal])* $field:ident : $ty:ty, )*) => {
        /// A complete training recipe. It deserializes unchecked (from a
        /// trial spec that was built from a checked one).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Recipe {
            /// The recipe's name; equals its file stem.
            pub name: String,
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        /// Fields an experiment replaces in its recipe; absent ones keep
        /// the recipe's value.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct RecipeOverrides {
            $(
                #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        /// A recipe file: `name` plus every field (checked by `complete`).
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RecipeFile {
            name: String,
            $(
                #[serde(default, deserialize_with = "present")]
                $field: Option<$ty>,
            )*
        }

        impl RecipeFile {
            fn fields(self) -> (String, RecipeOverrides) {
                (self.name, RecipeOverrides { $( $field: self.$field, )* })
            }
        }

        impl RecipeOverrides {
            /// Whether no field is overridden.
            pub fn is_empty(&self) -> bool {
                true $( && self.$field.is_none() )*
            }
        }

        impl Recipe {
            /// This recipe with `overrides` applied.
            pub fn with(&self, overrides: &RecipeOverrides) -> Result<Recipe, SpaceError> {
                let mut recipe = self.clone();
                $( if let Some(v) = &overrides.$field { recipe.$field = v.clone(); } )*
                recipe.check().map_err(|message| SpaceError::InvalidRecipe {
                    name: recipe.name.clone(),
                    message,
                })?;
                Ok(recipe)
            }

            /// Builds a recipe from a file's fields, naming every missing one.
            fn complete(name: String, fields: RecipeOverrides) -> Result<Recipe, String> {
                let mut missing: Vec<&str> = Vec::new();
                $( if fields.$field.is_none() { missing.push(stringify!($field)); } )*
                if !missing.is_empty() {
                    return Err(format!(
                        "missing field{} {}; a recipe file sets every field",
                        if missing.len() == 1 { "" } else { "s" },
                        missing.join(", ")
                    ));
                }
                Ok(Recipe { name, $( $field: fields.$field.expect("checked above"), )* })
            }
        }
    };
}

recipe_fields! {
    /// Training epochs.
    epochs: Count,
    /// Images per optimizer step.
    batch_size: Count,
    /// The recipe's own optimizer (`sgd_m`, `adamw`, `lamb`); a trial always
    /// replaces it, with its lr, weight decay and extras, by the searched one.
    optimizer: String,
    /// The recipe's learning rate for its own optimizer.
    lr: NonNegative,
    /// The recipe's weight decay for its own optimizer.
    weight_decay: NonNegative,
    /// The recipe's other optimizer settings (`momentum`, `beta1`, `beta2`).
    optimizer_extras: BTreeMap<String, f64>,
    /// Decay after warm-up.
    lr_schedule: LrSchedule,
    /// Linear warm-up epochs.
    warmup_epochs: u32,
    /// Label-smoothing epsilon.
    label_smoothing: Fraction,
    /// Dropout on the pooled features before the classifier (timm's
    /// `drop_rate`), replacing the backbone's own (AlexNet's and VGG's
    /// classifier dropouts included) or adding one where it has none;
    /// `null` keeps each architecture's own.
    dropout: Option<Fraction>,
    /// Stochastic-depth rate of the last block.
    drop_path: Fraction,
    /// Repeated augmentation: each image this many times per epoch (1 = off;
    /// timm's RepeatAugSampler uses 3).
    repeated_augmentation: Count,
    /// Gradient clipping by global L2 norm (0 = off).
    grad_clip_norm: NonNegative,
    /// Horizontal-flip probability.
    hflip: Fraction,
    /// Training crop.
    crop: Crop,
    /// Test-time centre-crop ratio (1.0 on CIFAR: no crop).
    test_crop_ratio: Fraction,
    /// RandAugment, or `null` for none.
    rand_augment: Option<RandAugment>,
    /// Mixup's Beta(α, α) (0 = off).
    mixup_alpha: NonNegative,
    /// CutMix's Beta(α, α) (0 = off).
    cutmix_alpha: NonNegative,
    /// Probability that a batch is mixed at all.
    mix_prob: Fraction,
    /// Probability of CutMix rather than Mixup when both are on.
    mix_switch_prob: Fraction,
    /// Random-erasing probability (per image).
    random_erasing: Fraction,
    /// Decay of the exponential moving average of the weights, evaluated
    /// beside the raw weights; `null` for none.
    ema_decay: Option<Fraction>,
    /// The loss.
    loss: Loss,
    /// Whether CUDA trials may run under bf16 autocast.
    bf16: bool,
    /// Layer-wise lr decay (timm's `layer_decay`): the head trains at the
    /// scheduled lr, each layer below it at `layer_decay` times the one
    /// above; `null` (or absent from a recipe file) trains every layer at
    /// the same lr.
    layer_decay: Option<LayerDecay>,
}

impl Recipe {
    /// Checks relations between fields, which single values cannot show.
    fn check(&self) -> Result<(), String> {
        if self.warmup_epochs >= self.epochs.0 {
            return Err(format!(
                "warmup_epochs ({}) must be below epochs ({}); lower warmup_epochs or raise epochs",
                self.warmup_epochs, self.epochs.0
            ));
        }
        if let Some(Fraction(decay)) = self.ema_decay {
            if decay == 0.0 || decay == 1.0 {
                return Err(format!(
                    "ema_decay {decay} makes the average useless; use a value such as 0.9999, or null for no EMA"
                ));
            }
        }
        Ok(())
    }
}

/// Parses one recipe from YAML text; `origin` is its path, whose stem must
/// equal the `name` in the file.
pub fn parse_recipe(src: &str, origin: &str) -> Result<Recipe, SpaceError> {
    let stem = Path::new(origin)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file: RecipeFile = serde_yaml::from_str(src).map_err(|err| located(origin, &err))?;
    let (name, mut fields) = file.fields();
    // Recipe files written before `layer_decay` existed leave it out: off.
    fields.layer_decay.get_or_insert(None);
    let whole_file = |message: String| SpaceError::Invalid {
        file: origin.to_owned(),
        line: 1,
        column: 1,
        message,
    };
    if name != stem {
        return Err(whole_file(format!(
            "name `{name}` differs from the file name; it must equal the file stem `{stem}`"
        )));
    }
    let recipe = Recipe::complete(name, fields).map_err(whole_file)?;
    recipe.check().map_err(whole_file)?;
    Ok(recipe)
}

/// Recipes by name.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipeBook {
    recipes: BTreeMap<String, Recipe>,
}

impl RecipeBook {
    /// The recipes shipped with bocb (`search-spaces/recipes/*.yaml`).
    pub fn builtin() -> RecipeBook {
        let recipes = BUILTIN_RECIPES
            .iter()
            .map(|(origin, src)| {
                // The unit tests parse every embedded file, so this cannot fire.
                let recipe = parse_recipe(src, origin)
                    .unwrap_or_else(|err| panic!("built-in recipe is invalid: {err}"));
                (recipe.name.clone(), recipe)
            })
            .collect();
        RecipeBook { recipes }
    }

    /// Adds the recipe in `path`, replacing a built-in one of the same name.
    pub fn load_file(&mut self, path: impl AsRef<Path>) -> Result<&Recipe, SpaceError> {
        let path = path.as_ref();
        let src = fs::read_to_string(path).map_err(|error| SpaceError::Io {
            path: path.to_owned(),
            error,
        })?;
        let recipe = parse_recipe(&src, &path.display().to_string())?;
        let name = recipe.name.clone();
        self.recipes.insert(name.clone(), recipe);
        Ok(&self.recipes[&name])
    }

    /// The recipe called `name`; the error lists the valid names.
    pub fn recipe(&self, name: &str) -> Result<&Recipe, SpaceError> {
        self.recipes
            .get(name)
            .ok_or_else(|| SpaceError::UnknownRecipe {
                name: name.to_owned(),
                choices: self.names().map(str::to_owned).collect(),
            })
    }

    /// The recipe names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.recipes.keys().map(String::as_str)
    }
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Loss::CrossEntropy => "cross-entropy",
            Loss::BinaryCrossEntropy => "binary cross-entropy",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_recipes_follow_table_a3() {
        let book = RecipeBook::builtin();
        assert_eq!(
            book.names().collect::<Vec<_>>(),
            ["convnext", "deit", "finetune", "pytorch", "rsb_a2", "rsb_a3"]
        );
        let finetune = book.recipe("finetune").unwrap();
        assert_eq!((finetune.epochs.0, finetune.batch_size.0), (12, 16));
        assert_eq!((finetune.rand_augment, finetune.mixup_alpha.0), (None, 0.0));
        let pytorch = book.recipe("pytorch").unwrap();
        assert_eq!(pytorch.optimizer, "sgd_m");
        assert_eq!(pytorch.lr.0, 0.1);
        assert_eq!(pytorch.optimizer_extras["momentum"], 0.9);
        assert_eq!(pytorch.rand_augment, None);
        assert_eq!(pytorch.loss, Loss::CrossEntropy);
        assert_eq!((pytorch.epochs.0, pytorch.batch_size.0), (200, 100));

        let deit = book.recipe("deit").unwrap();
        assert_eq!(deit.optimizer, "adamw");
        assert_eq!(deit.warmup_epochs, 5);
        assert_eq!(deit.grad_clip_norm.0, 5.0);
        assert_eq!(deit.repeated_augmentation.0, 3);
        let ra = deit.rand_augment.unwrap();
        assert_eq!(
            (ra.ops.0, ra.magnitude.0, ra.magnitude_std.0),
            (2, 9.0, 0.5)
        );
        assert_eq!((deit.mixup_alpha.0, deit.cutmix_alpha.0), (0.8, 1.0));
        assert_eq!(deit.random_erasing.0, 0.25);
        assert!(deit.ema_decay.is_some());

        let convnext = book.recipe("convnext").unwrap();
        assert_eq!(convnext.warmup_epochs, 20);
        assert_eq!(convnext.grad_clip_norm.0, 0.0);

        let a2 = book.recipe("rsb_a2").unwrap();
        assert_eq!(a2.loss, Loss::BinaryCrossEntropy);
        assert_eq!(a2.optimizer, "lamb");
        assert_eq!(a2.drop_path.0, 0.05);
        let a3 = book.recipe("rsb_a3").unwrap();
        assert_eq!(a3.drop_path.0, 0.0);
        assert_eq!(a3.rand_augment.unwrap().magnitude.0, 6.0);
        assert_eq!(a3.repeated_augmentation.0, 1);
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let book = RecipeBook::builtin();
        let deit = book.recipe("deit").unwrap();
        let overrides: RecipeOverrides =
            serde_yaml::from_str("epochs: 3\nwarmup_epochs: 1\nrand_augment: null\n").unwrap();
        assert!(!overrides.is_empty());
        let short = deit.with(&overrides).unwrap();
        assert_eq!((short.epochs.0, short.warmup_epochs), (3, 1));
        assert_eq!(short.rand_augment, None);
        assert_eq!(short.mixup_alpha, deit.mixup_alpha);
        assert!(RecipeOverrides::default().is_empty());
        assert_eq!(deit.with(&RecipeOverrides::default()).unwrap(), *deit);
    }

    #[test]
    fn overrides_are_validated_where_they_are_written() {
        let err = serde_yaml::from_str::<RecipeOverrides>("epochs: 3\nmixup_alpha: -1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be a finite number >= 0"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = serde_yaml::from_str::<RecipeOverrides>("epoch: 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `epoch`"), "{err}");
        assert!(err.contains("epochs"), "the valid fields are listed: {err}");
        let err = serde_yaml::from_str::<RecipeOverrides>("hflip: 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("between 0 and 1"), "{err}");
    }

    #[test]
    fn dropout_is_the_architectures_own_unless_a_rate_is_given() {
        let book = RecipeBook::builtin();
        for name in book.names() {
            assert_eq!(book.recipe(name).unwrap().dropout, None, "{name}");
        }
        let deit = book.recipe("deit").unwrap();
        let overrides: RecipeOverrides = serde_yaml::from_str("dropout: 0.1\n").unwrap();
        let with_rate = deit.with(&overrides).unwrap();
        assert_eq!(with_rate.dropout, Some(Fraction(0.1)));
        // `null` brings back the architecture's own, and says so when stored.
        let overrides: RecipeOverrides = serde_yaml::from_str("dropout: null\n").unwrap();
        assert!(!overrides.is_empty());
        assert_eq!(with_rate.with(&overrides).unwrap().dropout, None);
        let stored = serde_yaml::to_string(deit).unwrap();
        assert!(stored.contains("\ndropout: null\n"), "{stored}");
        let err = serde_yaml::from_str::<RecipeOverrides>("dropout: 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("between 0 and 1"), "{err}");
        // A recipe file keeps its rate as written.
        let src = BUILTIN_RECIPES[3]
            .1
            .replace("dropout: null", "dropout: 0.3");
        assert_eq!(
            parse_recipe(&src, "x/pytorch.yaml").unwrap().dropout,
            Some(Fraction(0.3))
        );
    }

    #[test]
    fn layer_decay_is_off_unless_given_and_checked_for_its_range() {
        let book = RecipeBook::builtin();
        for name in book.names() {
            assert_eq!(book.recipe(name).unwrap().layer_decay, None, "{name}");
        }
        let finetune = book.recipe("finetune").unwrap();
        let overrides: RecipeOverrides = serde_yaml::from_str("layer_decay: 0.75\n").unwrap();
        let decayed = finetune.with(&overrides).unwrap();
        assert_eq!(decayed.layer_decay, Some(LayerDecay(0.75)));
        let overrides: RecipeOverrides = serde_yaml::from_str("layer_decay: null\n").unwrap();
        assert_eq!(decayed.with(&overrides).unwrap().layer_decay, None);
        for bad in ["0", "-0.5", "1.5"] {
            let err = serde_yaml::from_str::<RecipeOverrides>(&format!(
                "epochs: 3\nlayer_decay: {bad}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains("layer_decay must be in (0, 1]"), "{err}");
            assert!(err.contains("line 2"), "{err}");
        }
        // A recipe file written before the field existed leaves it out: off.
        let src = BUILTIN_RECIPES[1].1.replace("layer_decay: null", "");
        assert_eq!(parse_recipe(&src, "x/deit.yaml").unwrap().layer_decay, None);
        // A stored trial spec from then, too.
        let mut stored = serde_yaml::to_value(book.recipe("deit").unwrap()).unwrap();
        stored.as_mapping_mut().unwrap().remove("layer_decay");
        let old: Recipe = serde_yaml::from_value(stored).unwrap();
        assert_eq!(old.layer_decay, None);
    }

    #[test]
    fn warmup_must_end_before_training_does() {
        let deit = RecipeBook::builtin().recipe("deit").unwrap().clone();
        let overrides: RecipeOverrides = serde_yaml::from_str("epochs: 3").unwrap();
        let err = deit.with(&overrides).unwrap_err().to_string();
        assert!(
            err.contains("deit") && err.contains("warmup_epochs (5) must be below epochs (3)"),
            "{err}"
        );
    }

    #[test]
    fn recipe_files_must_be_complete_and_named_after_the_file() {
        let src = BUILTIN_RECIPES[1].1;
        let err = parse_recipe(src, "my/other.yaml").unwrap_err().to_string();
        assert!(err.starts_with("my/other.yaml:1:1: name `deit`"), "{err}");
        let partial = src
            .lines()
            .filter(|l| !l.starts_with("loss:") && !l.starts_with("bf16:"))
            .collect::<Vec<_>>()
            .join("\n");
        let err = parse_recipe(&partial, "x/deit.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing fields loss, bf16"), "{err}");
        let typo = src.replace("hflip:", "hflipp:");
        let err = parse_recipe(&typo, "x/deit.yaml").unwrap_err().to_string();
        assert!(err.contains("unknown field `hflipp`"), "{err}");
        assert!(err.starts_with("x/deit.yaml:"), "{err}");
    }

    #[test]
    fn a_users_recipe_file_replaces_the_builtin_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pytorch.yaml");
        let (_, pytorch) = BUILTIN_RECIPES
            .iter()
            .find(|(origin, _)| origin.ends_with("/pytorch.yaml"))
            .unwrap();
        let src = pytorch.replace("epochs: 200", "epochs: 90");
        fs::write(&path, src).unwrap();
        let mut book = RecipeBook::builtin();
        assert_eq!(book.load_file(&path).unwrap().epochs.0, 90);
        assert_eq!(book.recipe("pytorch").unwrap().epochs.0, 90);
        let err = book.recipe("deit3").unwrap_err().to_string();
        assert!(
            err.contains("unknown recipe `deit3`")
                && err.contains("convnext, deit, finetune, pytorch"),
            "{err}"
        );
    }
}
