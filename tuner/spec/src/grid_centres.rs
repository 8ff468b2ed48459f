//! The experiment's `grid_centres`: where a backbone's stage-1 lr and
//! weight-decay grids are centred instead of at the optimizer's own centre
//! (the paper chose the centre per pair). The grids keep their spacing.
//!
//! ```yaml
//! grid_centres:
//!   vit_tiny_cifar: { lr: 1.0e-3 }              # every optimizer on this backbone
//!   resnet18_cifar:
//!     weight_decay: 1.0e-4                      # every optimizer on this backbone,
//!     sgd_m: { lr: 0.1, weight_decay: 5.0e-4 }  # but this pair's own values win
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// The keys of a centre; everything else at a backbone's level is an optimizer.
const CENTRE_KEYS: [&str; 2] = ["lr", "weight_decay"];

/// The centres of one grid pair; `None` keeps the optimizer's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Centre {
    #[serde(
        default,
        deserialize_with = "positive",
        skip_serializing_if = "Option::is_none"
    )]
    pub lr: Option<f64>,
    #[serde(
        default,
        deserialize_with = "positive",
        skip_serializing_if = "Option::is_none"
    )]
    pub weight_decay: Option<f64>,
}

impl Centre {
    /// This centre where it gives a value, else `fallback`'s.
    fn or(self, fallback: Centre) -> Centre {
        Centre {
            lr: self.lr.or(fallback.lr),
            weight_decay: self.weight_decay.or(fallback.weight_decay),
        }
    }
}

impl fmt::Display for Centre {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let value = |v: Option<f64>| v.map_or("the optimizer's".to_string(), crate::fmt_value);
        write!(
            f,
            "lr centre {}, weight_decay centre {}",
            value(self.lr),
            value(self.weight_decay)
        )
    }
}

/// One backbone's entry: centres for all its optimizers, and per optimizer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackboneCentres {
    /// `lr` / `weight_decay` given at the backbone's level.
    pub every_optimizer: Centre,
    /// Optimizer name to its own centres.
    pub optimizers: BTreeMap<String, Centre>,
}

/// `grid_centres`: backbone name (as in `backbones`) to its entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GridCentres(pub BTreeMap<String, BackboneCentres>);

/// A `grid_centres` name that is not one of the experiment's.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownName {
    /// The key as written, to locate it in the file.
    pub key: String,
    pub message: String,
}

impl GridCentres {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The centres of `backbone` (as the experiment runs it) with
    /// `optimizer`; `resolve` turns a key as written into that form (the
    /// experiment's preset).
    pub fn for_pair(
        &self,
        backbone: &str,
        optimizer: &str,
        resolve: impl Fn(&str) -> String,
    ) -> Centre {
        self.0
            .iter()
            .find(|(key, _)| resolve(key) == backbone)
            .map_or_else(Centre::default, |(_, entry)| {
                let own = entry.optimizers.get(optimizer).copied().unwrap_or_default();
                own.or(entry.every_optimizer)
            })
    }

    /// Checks that every key names one of the experiment's `backbones`
    /// (after `resolve`) and `optimizers`, each backbone once.
    pub fn check(
        &self,
        backbones: &[String],
        optimizers: &[String],
        resolve: impl Fn(&str) -> String,
    ) -> Result<(), UnknownName> {
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for (key, entry) in &self.0 {
            let backbone = resolve(key);
            if !backbones.contains(&backbone) {
                return Err(UnknownName {
                    key: key.clone(),
                    message: format!(
                        "`grid_centres`: `{key}` is not a backbone of this experiment; valid: {}",
                        backbones.join(", ")
                    ),
                });
            }
            if let Some(first) = seen.insert(backbone.clone(), key) {
                return Err(UnknownName {
                    key: key.clone(),
                    message: format!(
                        "`grid_centres`: `{first}` and `{key}` both name backbone `{backbone}`; merge them into one entry"
                    ),
                });
            }
            if let Some(optimizer) = entry.optimizers.keys().find(|o| !optimizers.contains(o)) {
                return Err(UnknownName {
                    key: optimizer.clone(),
                    message: format!(
                        "`grid_centres.{key}`: `{optimizer}` is neither `lr`, `weight_decay` nor an optimizer of this experiment; valid optimizers: {}",
                        optimizers.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }
}

impl Serialize for BackboneCentres {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(lr) = self.every_optimizer.lr {
            map.serialize_entry("lr", &lr)?;
        }
        if let Some(weight_decay) = self.every_optimizer.weight_decay {
            map.serialize_entry("weight_decay", &weight_decay)?;
        }
        for (optimizer, centre) in &self.optimizers {
            map.serialize_entry(optimizer, centre)?;
        }
        map.end()
    }
}

// Hand-written: `lr` and `weight_decay` share the level with optimizer
// names, and a repeated key must not silently replace the earlier one.
impl<'de> Deserialize<'de> for BackboneCentres {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = BackboneCentres;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping with `lr`, `weight_decay` and optimizer names, as in `{ lr: 1.0e-3, sgd_m: { lr: 0.1 } }`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BackboneCentres, A::Error> {
                let mut entry = BackboneCentres::default();
                let mut keys: Vec<String> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if keys.contains(&key) {
                        return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
                    }
                    match key.as_str() {
                        "lr" => entry.every_optimizer.lr = Some(map.next_value_seed(Positive)?),
                        "weight_decay" => {
                            entry.every_optimizer.weight_decay =
                                Some(map.next_value_seed(Positive)?)
                        }
                        _ => {
                            let centre = map.next_value_seed(OptimizerCentre(&key))?;
                            entry.optimizers.insert(key.clone(), centre);
                        }
                    }
                    keys.push(key);
                }
                Ok(entry)
            }
        }
        deserializer.deserialize_map(EntryVisitor)
    }
}

/// An optimizer's `{ lr, weight_decay }`; a bare number here is almost
/// always a misspelt `lr` or `weight_decay`, which the error says.
struct OptimizerCentre<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for OptimizerCentre<'_> {
    type Value = Centre;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Centre, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OptimizerCentre<'_> {
    type Value = Centre;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "an optimizer's `{{ lr: X, weight_decay: Y }}` (`{}` is neither `{}` nor `{}`)",
            self.0, CENTRE_KEYS[0], CENTRE_KEYS[1]
        )
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Centre, A::Error> {
        Centre::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

/// A finite, strictly positive number, checked while serde_yaml still
/// knows where it is.
struct Positive;

impl<'de> DeserializeSeed<'de> for Positive {
    type Value = f64;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<f64, D::Error> {
        deserializer.deserialize_f64(self)
    }
}

impl Visitor<'_> for Positive {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a positive number (the grid's new centre)")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(E::custom(format_args!(
                "a grid centre must be a positive number, got {v}"
            )))
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }
}

fn positive<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    Positive.deserialize(deserializer).map(Some)
}
