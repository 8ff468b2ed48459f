//! An optimizer's state as named tensors, for trial checkpoints.
//!
//! Each optimizer names its state fields once with [`optimizer_state!`];
//! every field type implements [`Saved`], which writes it under a dotted key
//! (`buffers.0.3`, `state.1.0.exp_avg`) and reads it back. Scalars (step
//! counts, running products) travel as 0-dim tensors of their exact type, so
//! a restored optimizer continues bit for bit.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use super::OptimError;

/// Named state tensors, as [`Optimizer::export_state`](super::Optimizer::export_state) returns them.
pub type StateTensors = Vec<(String, Tensor)>;

/// Saved state to restore from, with the device the optimizer's parameters
/// live on (checkpoints are read onto the CPU).
pub struct StateReader<'a> {
    tensors: &'a BTreeMap<String, Tensor>,
    device: Device,
}

impl<'a> StateReader<'a> {
    pub fn new(tensors: &'a BTreeMap<String, Tensor>, device: Device) -> Self {
        StateReader { tensors, device }
    }

    fn get(&self, key: &str) -> Result<&Tensor, OptimError> {
        self.tensors
            .get(key)
            .ok_or_else(|| OptimError::State(format!("`{key}` is missing")))
    }

    /// Whether anything was saved under `key` (itself or `key.*`).
    fn holds(&self, key: &str) -> bool {
        let prefix = format!("{key}.");
        self.tensors.contains_key(key)
            || self
                .tensors
                .range(prefix.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&prefix))
    }
}

/// A value an optimizer keeps between steps.
pub trait Saved: Sized {
    fn write_state(&self, key: &str, out: &mut StateTensors);
    /// A fresh value from what [`write_state`](Self::write_state) wrote under `key`.
    fn read_state(key: &str, from: &StateReader) -> Result<Self, OptimError>;
    /// Restores in place: collections built from the parameters (one entry
    /// per group and parameter) keep their length, which must match.
    fn read_state_into(&mut self, key: &str, from: &StateReader) -> Result<(), OptimError> {
        *self = Self::read_state(key, from)?;
        Ok(())
    }
}

impl Saved for Tensor {
    fn write_state(&self, key: &str, out: &mut StateTensors) {
        out.push((key.to_string(), self.detach().copy()));
    }
    fn read_state(key: &str, from: &StateReader) -> Result<Self, OptimError> {
        Ok(from.get(key)?.to_device(from.device).copy())
    }
}

/// Whole numbers and floats as 0-dim tensors of a kind that holds them exactly.
macro_rules! saved_scalar {
    ($($t:ty => $kind:expr, $via:ty;)+) => {$(
        impl Saved for $t {
            fn write_state(&self, key: &str, out: &mut StateTensors) {
                let value = <$via>::from(*self);
                out.push((key.to_string(), Tensor::from(value).to_kind($kind)));
            }
            fn read_state(key: &str, from: &StateReader) -> Result<Self, OptimError> {
                let value = <$via>::try_from(from.get(key)?)
                    .map_err(|e| OptimError::State(format!("`{key}`: {e}")))?;
                <$t>::try_from(value)
                    .map_err(|_| OptimError::State(format!("`{key}` = {value} is out of range")))
            }
        }
    )+};
}

saved_scalar! {
    i32 => Kind::Int64, i64;
    i64 => Kind::Int64, i64;
    f64 => Kind::Double, f64;
}

impl<T: Saved> Saved for Option<T> {
    fn write_state(&self, key: &str, out: &mut StateTensors) {
        if let Some(value) = self {
            value.write_state(key, out);
        }
    }
    fn read_state(key: &str, from: &StateReader) -> Result<Self, OptimError> {
        if from.holds(key) {
            T::read_state(key, from).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl<T: Saved> Saved for Vec<T> {
    fn write_state(&self, key: &str, out: &mut StateTensors) {
        (self.len() as i64).write_state(&format!("{key}.len"), out);
        for (i, value) in self.iter().enumerate() {
            value.write_state(&format!("{key}.{i}"), out);
        }
    }
    fn read_state(key: &str, from: &StateReader) -> Result<Self, OptimError> {
        let len = i64::read_state(&format!("{key}.len"), from)?;
        (0..len)
            .map(|i| T::read_state(&format!("{key}.{i}"), from))
            .collect()
    }
    fn read_state_into(&mut self, key: &str, from: &StateReader) -> Result<(), OptimError> {
        let len = i64::read_state(&format!("{key}.len"), from)?;
        if len != self.len() as i64 {
            return Err(OptimError::State(format!(
                "`{key}` holds {len} entries, this optimizer {}: a different model or parameter split",
                self.len()
            )));
        }
        for (i, value) in self.iter_mut().enumerate() {
            value.read_state_into(&format!("{key}.{i}"), from)?;
        }
        Ok(())
    }
}

impl<A: Saved, B: Saved> Saved for (A, B) {
    fn write_state(&self, key: &str, out: &mut StateTensors) {
        self.0.write_state(&format!("{key}.0"), out);
        self.1.write_state(&format!("{key}.1"), out);
    }
    fn read_state(key: &str, from: &StateReader) -> Result<Self, OptimError> {
        Ok((
            A::read_state(&format!("{key}.0"), from)?,
            B::read_state(&format!("{key}.1"), from)?,
        ))
    }
}

impl<A: Saved, B: Saved, C: Saved> Saved for (A, B, C) {
    fn write_state(&self, key: &str, out: &mut StateTensors) {
        self.0.write_state(&format!("{key}.0"), out);
        self.1.write_state(&format!("{key}.1"), out);
        self.2.write_state(&format!("{key}.2"), out);
    }
    fn read_state(key: &str, from: &StateReader) -> Result<Self, OptimError> {
        Ok((
            A::read_state(&format!("{key}.0"), from)?,
            B::read_state(&format!("{key}.1"), from)?,
            C::read_state(&format!("{key}.2"), from)?,
        ))
    }
}

/// Implements [`Saved`] for a struct of saved fields, each under `key.field`.
#[macro_export]
macro_rules! saved_struct {
    ($name:ident { $($field:ident),+ $(,)? }) => {
        impl $crate::optim::Saved for $name {
            fn write_state(&self, key: &str, out: &mut $crate::optim::StateTensors) {
                $($crate::optim::Saved::write_state(
                    &self.$field,
                    &format!("{key}.{}", stringify!($field)),
                    out,
                );)+
            }
            fn read_state(
                key: &str,
                from: &$crate::optim::StateReader,
            ) -> Result<Self, $crate::optim::OptimError> {
                Ok($name {
                    $($field: $crate::optim::Saved::read_state(
                        &format!("{key}.{}", stringify!($field)),
                        from,
                    )?,)+
                })
            }
        }
    };
}

/// Inside `impl Optimizer for X`: `export_state` and `import_state` over
/// the listed fields of `X`, the state it keeps between steps.
#[macro_export]
macro_rules! optimizer_state {
    ($($field:ident),+ $(,)?) => {
        fn export_state(&self) -> Result<$crate::optim::StateTensors, $crate::optim::OptimError> {
            let mut out = Vec::new();
            $($crate::optim::Saved::write_state(&self.$field, stringify!($field), &mut out);)+
            Ok(out)
        }
        fn import_state(
            &mut self,
            from: &$crate::optim::StateReader,
        ) -> Result<(), $crate::optim::OptimError> {
            $($crate::optim::Saved::read_state_into(&mut self.$field, stringify!($field), from)?;)+
            Ok(())
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Optimizer, OptimizerRegistry, ParamSet};
    use bocb_search_spaces::Catalog;

    /// A matrix large enough for Adafactor to factor, a small one and a bias.
    const SHAPES: [&[i64]; 3] = [&[40, 36], &[3, 4], &[5]];

    fn params(seed: u64) -> Vec<Tensor> {
        SHAPES
            .iter()
            .map(|shape| {
                crate::seeding::with_torch_seed(seed, || {
                    Tensor::randn(*shape, (Kind::Float, Device::Cpu))
                })
                .set_requires_grad(true)
            })
            .collect()
    }

    fn build(name: &str, params: &[Tensor]) -> Box<dyn Optimizer> {
        let catalog = Catalog::builtin();
        let space = catalog.optimizer(name).unwrap();
        let mut hparams = space.default_params();
        hparams.insert("lr".into(), space.lr.centre());
        hparams.insert("weight_decay".into(), space.weight_decay.centre());
        let set = ParamSet {
            decay: params[..2].iter().map(Tensor::shallow_clone).collect(),
            no_decay: params[2..].iter().map(Tensor::shallow_clone).collect(),
            lower_layers: Vec::new(),
        };
        OptimizerRegistry::builtin()
            .build(name, &hparams, set)
            .unwrap()
    }

    /// Step `k` of every run: the same gradients (and Hessian estimates,
    /// for the optimizers that take them) whatever optimizer state it meets.
    fn step(optimizer: &mut dyn Optimizer, params: &[Tensor], k: u64) {
        let noise = |p: &Tensor, salt: u64| {
            crate::seeding::with_torch_seed(k * 10 + salt, || p.randn_like())
        };
        for p in params {
            let mut p = p.shallow_clone();
            p.zero_grad();
            (&p * noise(&p, 1)).sum(Kind::Float).backward();
        }
        if optimizer.hessian_interval().is_some() {
            let estimate: Vec<Tensor> = params.iter().map(|p| noise(p, 2).abs()).collect();
            optimizer.set_hessian(&estimate);
        }
        optimizer.step(1e-2);
    }

    #[test]
    fn every_optimizer_continues_bit_for_bit_from_its_exported_state() {
        for name in OptimizerRegistry::builtin().names() {
            let live = params(1);
            let mut original = build(name, &live);
            for k in 0..3 {
                step(original.as_mut(), &live, k);
            }
            let saved = original.export_state().unwrap();
            assert!(!saved.is_empty(), "{name} saved no state");
            let saved: BTreeMap<String, Tensor> = saved.into_iter().collect();
            // A fresh optimizer over a copy of the parameters, as a resumed trial builds.
            let copy: Vec<Tensor> = params(2);
            tch::no_grad(|| {
                for (c, l) in copy.iter().zip(&live) {
                    c.shallow_clone().copy_(l);
                }
            });
            let mut resumed = build(name, &copy);
            resumed
                .import_state(&StateReader::new(&saved, Device::Cpu))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            for k in 3..6 {
                step(original.as_mut(), &live, k);
                step(resumed.as_mut(), &copy, k);
            }
            for (a, b) in live.iter().zip(&copy) {
                assert!(a.equal(b), "{name}: the resumed run differs");
            }
            assert_eq!(original.state_bytes(), resumed.state_bytes(), "{name}");
        }
    }

    #[test]
    fn state_for_other_parameters_is_refused_by_name() {
        let live = params(1);
        let mut adam = build("adamw", &live);
        step(adam.as_mut(), &live, 0);
        let saved: BTreeMap<String, Tensor> = adam.export_state().unwrap().into_iter().collect();
        let fewer = params(1);
        let set = ParamSet {
            decay: vec![fewer[0].shallow_clone()],
            no_decay: vec![fewer[2].shallow_clone()],
            lower_layers: Vec::new(),
        };
        let hparams = [("lr".to_string(), 1e-3)].into();
        let mut other = OptimizerRegistry::builtin()
            .build("adamw", &hparams, set)
            .unwrap();
        let err = other
            .import_state(&StateReader::new(&saved, Device::Cpu))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`params.0` holds 2 entries, this optimizer 1"),
            "{err}"
        );
        let err = build("lion", &live)
            .import_state(&StateReader::new(&saved, Device::Cpu))
            .unwrap_err();
        assert_eq!(err, OptimError::State("`exp_avgs.len` is missing".into()));
    }
}
