//! Optimizer search spaces for bocb, loaded from YAML and validated on load.
//!
//! Following the BOCB paper, every (backbone, optimizer) pair is tuned in two
//! stages: stage 1 searches learning rate x weight decay on two 5-point grids
//! (with every optimizer-specific extra at its default), stage 2 searches each
//! extra (momentum, beta2, eps, ...) with lr and weight decay fixed at the
//! stage-1 best. One YAML file describes one optimizer; see
//! `search-spaces/optimizers/*.yaml` for the format.
//!
//! Validation happens inside the `Deserialize` impls, while serde_yaml still
//! knows where the offending value is, so every problem is reported as
//! `FILE:LINE:COLUMN: message`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

mod backbones;
mod recipe;

pub use backbones::{builtin_backbones, BackboneFacts};
pub use recipe::{
    parse_recipe, Count, Crop, Fraction, LayerDecay, Loss, LrSchedule, NonNegative, RandAugment,
    Recipe, RecipeBook, RecipeOverrides,
};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// The built-in spaces, embedded so the binary works from any directory:
/// every `optimizers/*.yaml`, so a new optimizer needs no line here.
static BUILTIN_DIR: include_dir::Dir<'_> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/optimizers");

/// Every built-in file as (origin shown in messages, whose stem must match
/// `name`; its text), in name order.
fn builtin_files() -> Vec<(String, &'static str)> {
    let mut files: Vec<(String, &'static str)> = BUILTIN_DIR
        .files()
        .filter(|file| file.path().extension().is_some_and(|e| e == "yaml"))
        .map(|file| {
            let origin = format!("search-spaces/optimizers/{}", file.path().display());
            let text = file
                .contents_utf8()
                .expect("the built-in search spaces are UTF-8");
            (origin, text)
        })
        .collect();
    files.sort();
    files
}

/// Everything that can go wrong while loading or looking up search spaces.
#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    /// A problem at a known place in a search-space file (syntax, unknown
    /// key, invalid value). `line` and `column` are 1-based.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file as given (path or origin label).
        file: String,
        line: usize,
        column: usize,
        /// What is wrong, prefixed by the key path (`lr[2]: ...`) where there is one.
        message: String,
    },
    /// A file or directory could not be read.
    #[error("cannot read {}: {error}", .path.display())]
    Io { path: PathBuf, error: io::Error },
    /// `Catalog::load_dir` found nothing to load; almost certainly a wrong path.
    #[error(
        "no optimizer search spaces (*.yaml) in {} or {}",
        .dir.join("optimizers").display(),
        .dir.display()
    )]
    NoOptimizers { dir: PathBuf },
    /// `Catalog::optimizer` was asked for a name it does not hold.
    #[error("unknown optimizer `{name}`; valid choices: {}", .choices.join(", "))]
    UnknownOptimizer { name: String, choices: Vec<String> },
    /// `RecipeBook::recipe` was asked for a name it does not hold.
    #[error("unknown recipe `{name}`; valid choices: {}", .choices.join(", "))]
    UnknownRecipe { name: String, choices: Vec<String> },
    /// A recipe's fields contradict each other (after overrides).
    #[error("recipe `{name}`: {message}")]
    InvalidRecipe { name: String, message: String },
}

/// The optimizer families of the paper's Table A2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Fixed learning rate with momentum (SGD-M, SGDP, LION).
    A,
    /// Adaptive learning rate with momentum (Adam, AdamW, LAMB, ...).
    B,
    /// Estimated learning rate with momentum (AdaBelief, AdaBound, LARS, ...).
    C,
    /// Adaptive learning rate without momentum (RMSProp, AdaGrad, ...).
    D,
}

impl Category {
    /// All categories, in the paper's order.
    pub const ALL: [Category; 4] = [Category::A, Category::B, Category::C, Category::D];

    /// The letter used in YAML (`a` .. `d`).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::A => "a",
            Category::B => "b",
            Category::C => "c",
            Category::D => "d",
        }
    }

    /// The paper's wording for the category.
    pub fn description(self) -> &'static str {
        match self {
            Category::A => "fixed learning rate with momentum",
            Category::B => "adaptive learning rate with momentum",
            Category::C => "estimated learning rate with momentum",
            Category::D => "adaptive learning rate without momentum",
        }
    }
}

// Hand-written so an unknown letter's error explains what each letter means.
impl<'de> Deserialize<'de> for Category {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CategoryVisitor;
        impl Visitor<'_> for CategoryVisitor {
            type Value = Category;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a category letter: a, b, c or d")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Category, E> {
                Category::ALL
                    .into_iter()
                    .find(|c| c.as_str() == v)
                    .ok_or_else(|| {
                        let choices: Vec<String> = Category::ALL
                            .iter()
                            .map(|c| format!("{} ({})", c.as_str(), c.description()))
                            .collect();
                        E::custom(format_args!(
                            "unknown value `{v}`, expected one of: {}",
                            choices.join(", ")
                        ))
                    })
            }
        }
        deserializer.deserialize_str(CategoryVisitor)
    }
}

/// How weight decay is applied; decides what a weight-decay value means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDecayStyle {
    /// L2 penalty: `weight_decay * w` is added to the gradient before the
    /// optimizer's own scaling (torch.optim.SGD, Adam).
    Coupled,
    /// Decoupled: the weights are shrunk directly by `lr * weight_decay`
    /// (torch.optim.AdamW).
    Decoupled,
}

impl<'de> Deserialize<'de> for WeightDecayStyle {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StyleVisitor;
        impl Visitor<'_> for StyleVisitor {
            type Value = WeightDecayStyle;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`coupled` or `decoupled`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WeightDecayStyle, E> {
                match v {
                    "coupled" => Ok(WeightDecayStyle::Coupled),
                    "decoupled" => Ok(WeightDecayStyle::Decoupled),
                    _ => Err(E::custom(format_args!(
                        "unknown value `{v}`, expected `coupled` (L2 added to the \
                         gradient) or `decoupled` (AdamW-style)"
                    ))),
                }
            }
        }
        deserializer.deserialize_str(StyleVisitor)
    }
}

/// Checks one number: finite, positive and, when `prev` is given, above it.
/// Runs inside serde_yaml's `deserialize_f64`, so errors carry the number's
/// own line and column.
struct Number {
    prev: Option<f64>,
}

impl<'de> DeserializeSeed<'de> for Number {
    type Value = f64;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<f64, D::Error> {
        deserializer.deserialize_f64(self)
    }
}

impl Visitor<'_> for Number {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a positive number")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        if !(v.is_finite() && v > 0.0) {
            return Err(E::custom(format_args!(
                "must be a positive number, got {v}"
            )));
        }
        match self.prev {
            Some(prev) if v <= prev => Err(E::custom(format_args!(
                "grid values must be strictly ascending, but {v} comes after {prev}"
            ))),
            _ => Ok(v),
        }
    }
    // YAML integers (`1`, `-2`) are numbers too.
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }
}

/// A 5-point search grid: five finite, strictly positive, strictly ascending
/// values, searched around the middle one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Grid5([f64; 5]);

impl Grid5 {
    /// The five values, ascending.
    pub fn values(&self) -> &[f64; 5] {
        &self.0
    }

    /// The middle value (the usual default the grid is centred on).
    pub fn centre(&self) -> f64 {
        self.0[2]
    }

    /// The same grid moved to `centre`: every point keeps its ratio to the
    /// middle one, so the spacing (x2 steps in the built-in spaces) is
    /// unchanged. `centre` must be finite and positive.
    pub fn centred_on(&self, centre: f64) -> Grid5 {
        // Ratio first: for power-of-two steps it is exact, and so is the product.
        Grid5(self.0.map(|v| centre * (v / self.centre())))
    }

    /// Position of `value` in the grid. Matches within 1e-12 relative
    /// tolerance so a value that went through text or arithmetic still maps
    /// back to its grid point.
    pub fn index_of(&self, value: f64) -> Option<usize> {
        self.0
            .iter()
            .position(|&v| v == value || (v - value).abs() <= 1e-12 * v.abs().max(value.abs()))
    }
}

impl<'de> Deserialize<'de> for Grid5 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GridVisitor;
        impl<'de> Visitor<'de> for GridVisitor {
            type Value = Grid5;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of exactly 5 ascending positive numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Grid5, A::Error> {
                let mut values = Vec::with_capacity(5);
                while let Some(v) = seq.next_element_seed(Number {
                    prev: values.last().copied(),
                })? {
                    values.push(v);
                }
                let count = values.len();
                // Raised inside deserialize_seq: the location is the list itself.
                <[f64; 5]>::try_from(values).map(Grid5).map_err(|_| {
                    de::Error::custom(format_args!(
                        "grid has {count} value{}, but exactly 5 are needed",
                        if count == 1 { "" } else { "s" }
                    ))
                })
            }
        }
        deserializer.deserialize_seq(GridVisitor)
    }
}

/// An optimizer-specific hyperparameter searched in stage 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawExtra")]
pub struct Extra {
    /// Value used in stage 1 (the reference implementation's default).
    pub default: f64,
    /// Values tried in stage 2; non-empty, all >= 0 (0 switches a flag such
    /// as Adafactor's `relative_step` off). Need not contain `default`.
    pub candidates: Vec<f64>,
}

/// `Extra` as written in YAML; the newtypes validate each value where it is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtra {
    default: ExtraValue,
    candidates: Candidates,
}

/// An extra's value: finite and >= 0.
struct ExtraValue(f64);

impl<'de> Deserialize<'de> for ExtraValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_f64(ExtraValueVisitor)
    }
}

/// Checks the value while it is the current event, so the error points at it.
struct ExtraValueVisitor;

impl Visitor<'_> for ExtraValueVisitor {
    type Value = ExtraValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number >= 0")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ExtraValue, E> {
        if v.is_finite() && v >= 0.0 {
            Ok(ExtraValue(v))
        } else {
            Err(E::custom(format_args!(
                "must be a number >= 0 (0 switches a flag off), got {v}"
            )))
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ExtraValue, E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ExtraValue, E> {
        self.visit_f64(v as f64)
    }
}

impl From<RawExtra> for Extra {
    fn from(raw: RawExtra) -> Self {
        Extra {
            default: raw.default.0,
            candidates: raw.candidates.0,
        }
    }
}

/// A non-empty list of numbers >= 0.
struct Candidates(Vec<f64>);

impl<'de> Deserialize<'de> for Candidates {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CandidatesVisitor;
        impl<'de> Visitor<'de> for CandidatesVisitor {
            type Value = Candidates;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-empty list of numbers >= 0")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Candidates, A::Error> {
                let mut values = Vec::new();
                while let Some(ExtraValue(v)) = seq.next_element()? {
                    values.push(v);
                }
                if values.is_empty() {
                    return Err(de::Error::custom("needs at least one candidate"));
                }
                Ok(Candidates(values))
            }
        }
        deserializer.deserialize_seq(CandidatesVisitor)
    }
}

/// The `extras` mapping. Hand-written because a plain map would let a
/// repeated key silently replace the earlier one.
struct Extras(BTreeMap<String, Extra>);

impl<'de> Deserialize<'de> for Extras {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ExtrasVisitor;
        impl<'de> Visitor<'de> for ExtrasVisitor {
            type Value = Extras;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping from hyperparameter name to { default, candidates }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Extras, A::Error> {
                let mut extras = BTreeMap::new();
                while let Some(key) = map.next_key_seed(ExtraKey(&extras))? {
                    let extra = map.next_value()?;
                    extras.insert(key, extra);
                }
                Ok(Extras(extras))
            }
        }
        deserializer.deserialize_map(ExtrasVisitor)
    }
}

/// An extra's name; checked while it is the current event so the error
/// points at the key.
struct ExtraKey<'a>(&'a BTreeMap<String, Extra>);

impl<'de> DeserializeSeed<'de> for ExtraKey<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for ExtraKey<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a hyperparameter name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if v == "lr" || v == "weight_decay" {
            // They share one parameter namespace with the extras downstream.
            return Err(E::custom(format_args!(
                "`{v}` is searched in stage 1 and cannot be an extra"
            )));
        }
        if self.0.contains_key(v) {
            return Err(E::custom(format_args!("duplicate extra `{v}`")));
        }
        Ok(v.to_owned())
    }
}

/// The search space of one optimizer, as loaded from `optimizers/NAME.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptimizerSpace {
    /// The optimizer's name; equals the file stem.
    pub name: String,
    /// The optimizer's family in the paper's Table A2.
    pub category: Category,
    /// How `weight_decay` is applied.
    pub weight_decay_style: WeightDecayStyle,
    /// Stage-1 learning-rate grid.
    pub lr: Grid5,
    /// Stage-1 weight-decay grid.
    pub weight_decay: Grid5,
    /// Stage-2 hyperparameters by name; empty when the optimizer has none.
    pub extras: BTreeMap<String, Extra>,
    /// The implementation bocb's follows and is checked against
    /// (`torch.optim.AdamW`, `timm.optim.Lamb`, ...), where one is named.
    pub reference: Option<String>,
    /// timm's `--opt` name for it, where timm's optimizer factory has it.
    pub timm: Option<String>,
    /// Bytes of optimizer state per float32 parameter after one step, as
    /// the trial runner measures it (`bocb optim info`); the ranking's
    /// memory component. A test keeps the built-in values equal to the
    /// measurement.
    pub state_bytes_per_param: Option<f64>,
}

impl OptimizerSpace {
    /// Every extra at its default: the values used throughout stage 1.
    pub fn default_params(&self) -> BTreeMap<String, f64> {
        self.extras
            .iter()
            .map(|(name, extra)| (name.clone(), extra.default))
            .collect()
    }

    /// This space with its stage-1 grids moved to the given centres (see
    /// [`Grid5::centred_on`]); `None` leaves a grid where it is.
    pub fn with_grid_centres(&self, lr: Option<f64>, weight_decay: Option<f64>) -> OptimizerSpace {
        let mut space = self.clone();
        if let Some(centre) = lr {
            space.lr = space.lr.centred_on(centre);
        }
        if let Some(centre) = weight_decay {
            space.weight_decay = space.weight_decay.centred_on(centre);
        }
        space
    }
}

/// Top-level keys of an optimizer file.
#[derive(Clone, Copy, PartialEq)]
enum Field {
    Name,
    Category,
    WeightDecayStyle,
    Lr,
    WeightDecay,
    Extras,
    Reference,
    Timm,
    StateBytesPerParam,
}

const FIELDS: &[&str] = &[
    "name",
    "category",
    "weight_decay_style",
    "lr",
    "weight_decay",
    "extras",
    "reference",
    "timm",
    "state_bytes_per_param",
];

/// Reads a top-level key, rejecting unknown and repeated keys while the key
/// is the current event, so the error points at the key.
struct FieldSeed<'a>(&'a [Field]);

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Field;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Field, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for FieldSeed<'_> {
    type Value = Field;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
        let field = match v {
            "name" => Field::Name,
            "category" => Field::Category,
            "weight_decay_style" => Field::WeightDecayStyle,
            "lr" => Field::Lr,
            "weight_decay" => Field::WeightDecay,
            "extras" => Field::Extras,
            "reference" => Field::Reference,
            "timm" => Field::Timm,
            "state_bytes_per_param" => Field::StateBytesPerParam,
            _ => return Err(E::unknown_field(v, FIELDS)),
        };
        if self.0.contains(&field) {
            return Err(E::custom(format_args!("duplicate field `{v}`")));
        }
        Ok(field)
    }
}

/// The `name` value, which must equal the file stem.
struct NameSeed<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for NameSeed<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the optimizer's name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if v != self.0 {
            // The catalog is keyed by name and users find files by name.
            return Err(E::custom(format_args!(
                "`{v}` differs from the file name; it must equal the file stem `{}`",
                self.0
            )));
        }
        Ok(v.to_owned())
    }
}

/// Deserializes a whole optimizer file. Hand-written (rather than derived)
/// so the `name` check can know the file stem.
struct SpaceSeed<'a> {
    stem: &'a str,
}

impl<'de> DeserializeSeed<'de> for SpaceSeed<'_> {
    type Value = OptimizerSpace;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SpaceSeed<'_> {
    type Value = OptimizerSpace;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an optimizer search space (a mapping with keys ")?;
        f.write_str(&FIELDS.join(", "))?;
        f.write_str(")")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OptimizerSpace, A::Error> {
        let mut seen = Vec::with_capacity(FIELDS.len());
        let (mut name, mut category, mut style) = (None, None, None);
        let (mut lr, mut weight_decay, mut extras) = (None, None, None);
        let (mut reference, mut timm, mut state_bytes) = (None, None, None);
        while let Some(field) = map.next_key_seed(FieldSeed(&seen))? {
            seen.push(field);
            match field {
                Field::Name => name = Some(map.next_value_seed(NameSeed(self.stem))?),
                Field::Category => category = Some(map.next_value()?),
                Field::WeightDecayStyle => style = Some(map.next_value()?),
                Field::Lr => lr = Some(map.next_value()?),
                Field::WeightDecay => weight_decay = Some(map.next_value()?),
                Field::Extras => extras = Some(map.next_value::<Extras>()?.0),
                Field::Reference => reference = Some(map.next_value()?),
                Field::Timm => timm = Some(map.next_value()?),
                Field::StateBytesPerParam => {
                    let bytes: f64 = map.next_value()?;
                    if !(bytes.is_finite() && bytes >= 0.0) {
                        return Err(de::Error::custom(format_args!(
                            "state_bytes_per_param must be a finite number >= 0 (bytes of state per parameter, see `bocb optim info`), got {bytes}"
                        )));
                    }
                    state_bytes = Some(bytes);
                }
            }
        }
        let missing = |key| de::Error::missing_field(key);
        Ok(OptimizerSpace {
            name: name.ok_or_else(|| missing("name"))?,
            category: category.ok_or_else(|| missing("category"))?,
            weight_decay_style: style.ok_or_else(|| missing("weight_decay_style"))?,
            lr: lr.ok_or_else(|| missing("lr"))?,
            weight_decay: weight_decay.ok_or_else(|| missing("weight_decay"))?,
            extras: extras.unwrap_or_default(),
            reference,
            timm,
            state_bytes_per_param: state_bytes,
        })
    }
}

/// Parses one optimizer space from YAML text. `origin` is the file's path,
/// shown in error messages; its stem must equal the `name` in the file.
pub fn parse_optimizer(src: &str, origin: &str) -> Result<OptimizerSpace, SpaceError> {
    let stem = Path::new(origin)
        .file_stem()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default();
    SpaceSeed { stem: &stem }
        .deserialize(serde_yaml::Deserializer::from_str(src))
        .map_err(|err| located(origin, &err))
}

/// Turns a serde_yaml error into `FILE:LINE:COLUMN: message`.
fn located(file: &str, err: &serde_yaml::Error) -> SpaceError {
    // Errors without a mark (empty input, several documents) concern the
    // file as a whole; point at its start.
    let (line, column) = err
        .location()
        .map_or((1, 1), |loc| (loc.line(), loc.column()));
    // serde_yaml appends the position in words; it is already in front.
    let message = err
        .to_string()
        .replacen(&format!(" at line {line} column {column}"), "", 1);
    SpaceError::Invalid {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

/// Reads and parses one optimizer file; the file stem must equal its `name`.
pub fn load_optimizer_file(path: impl AsRef<Path>) -> Result<OptimizerSpace, SpaceError> {
    let path = path.as_ref();
    let src = fs::read_to_string(path).map_err(|error| SpaceError::Io {
        path: path.to_owned(),
        error,
    })?;
    parse_optimizer(&src, &path.display().to_string())
}

/// Optimizer search spaces by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    spaces: BTreeMap<String, OptimizerSpace>,
}

impl Catalog {
    /// The spaces shipped with bocb (`search-spaces/optimizers/*.yaml`,
    /// embedded at compile time).
    pub fn builtin() -> Catalog {
        let mut catalog = Catalog::default();
        for (origin, src) in builtin_files() {
            // The unit tests parse every embedded file, so this cannot fire.
            let space = parse_optimizer(src, &origin)
                .unwrap_or_else(|err| panic!("built-in search space is invalid: {err}"));
            catalog.insert(space);
        }
        catalog
    }

    /// Loads every `*.yaml` in `DIR/optimizers/`, or in `DIR` itself when it
    /// has no `optimizers/` subfolder. Files are read in name order and the
    /// first invalid one is reported.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Catalog, SpaceError> {
        let dir = dir.as_ref();
        let sub = dir.join("optimizers");
        let folder = if sub.is_dir() { sub } else { dir.to_owned() };
        let io_error = |error| SpaceError::Io {
            path: folder.clone(),
            error,
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(&folder).map_err(io_error)? {
            let path = entry.map_err(io_error)?.path();
            if path.extension().is_some_and(|e| e == "yaml") && path.is_file() {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(SpaceError::NoOptimizers {
                dir: dir.to_owned(),
            });
        }
        files.sort();
        let mut catalog = Catalog::default();
        for file in files {
            catalog.insert(load_optimizer_file(&file)?);
        }
        Ok(catalog)
    }

    /// Adds `other`'s spaces; where both have a name, `other`'s wins (so a
    /// user's directory can override a built-in space).
    pub fn merge(&mut self, other: Catalog) {
        self.spaces.extend(other.spaces);
    }

    /// The space of optimizer `name`; the error lists the valid names.
    pub fn optimizer(&self, name: &str) -> Result<&OptimizerSpace, SpaceError> {
        self.spaces
            .get(name)
            .ok_or_else(|| SpaceError::UnknownOptimizer {
                name: name.to_owned(),
                choices: self.optimizer_names().map(str::to_owned).collect(),
            })
    }

    /// The optimizer names, sorted.
    pub fn optimizer_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.spaces.keys().map(String::as_str)
    }

    /// Adds (or replaces) `space` under its `name`: how a user's own
    /// optimizer (a `torchscript:PATH` module) gets its space.
    pub fn insert(&mut self, space: OptimizerSpace) {
        self.spaces.insert(space.name.clone(), space);
    }
}

#[cfg(test)]
mod tests;
