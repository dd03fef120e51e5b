//! A model's weights as one flat `f32` vector, in the name order of
//! [`Weights`] (a `BTreeMap`): what a federated worker and its coordinator
//! exchange, and what aggregation rules see.

use candle_core::{Device, Tensor};

use crate::engine::model::Weights;
use crate::engine::{EngineError, Result};

/// Names and shapes of a model's tensors, in flattening order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout(pub Vec<(String, Vec<usize>)>);

impl Layout {
    /// The layout of `weights`.
    pub fn of(weights: &Weights) -> Layout {
        Layout(weights.iter().map(|(n, t)| (n.clone(), t.dims().to_vec())).collect())
    }

    /// The layout of a model of geometry `cfg` (without building it).
    pub fn of_model(cfg: &crate::engine::ModelConfig) -> Layout {
        Layout(crate::engine::model::shapes(cfg))
    }

    /// Scalars in all.
    pub fn len(&self) -> usize {
        self.0.iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }

    /// Whether there are no scalars.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every tensor of `weights` (which must have this layout), concatenated.
    pub fn flatten(&self, weights: &Weights) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.len());
        for (name, shape) in &self.0 {
            let t = weights.get(name).ok_or_else(|| EngineError::Config(format!("no tensor `{name}` to flatten")))?;
            if t.dims() != shape.as_slice() {
                return Err(EngineError::Config(format!("tensor `{name}` is {:?}, expected {shape:?}", t.dims())));
            }
            out.extend(t.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Split a flat vector back into per-tensor pieces, in layout order.
    pub fn split<'a>(&self, flat: &'a [f32]) -> Result<Vec<&'a [f32]>> {
        if flat.len() != self.len() {
            return Err(EngineError::Config(format!(
                "a flat vector of {} values for a model of {}",
                flat.len(),
                self.len()
            )));
        }
        let mut rest = flat;
        let mut out = Vec::with_capacity(self.0.len());
        for (_, shape) in &self.0 {
            let (a, b) = rest.split_at(shape.iter().product());
            out.push(a);
            rest = b;
        }
        Ok(out)
    }

    /// The weights a flat vector stands for.
    pub fn unflatten(&self, flat: &[f32], device: &Device) -> Result<Weights> {
        let mut w = Weights::new();
        for ((name, shape), part) in self.0.iter().zip(self.split(flat)?) {
            w.insert(name.clone(), Tensor::from_vec(part.to_vec(), shape.clone(), device)?);
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_round_trip_through_a_flat_vector() {
        let d = Device::Cpu;
        let mut w = Weights::new();
        w.insert("b".into(), Tensor::from_vec(vec![1f32, 2.0, 3.0, 4.0], (2, 2), &d).unwrap());
        w.insert("a".into(), Tensor::from_vec(vec![9f32, 8.0], 2, &d).unwrap());
        let layout = Layout::of(&w);
        let flat = layout.flatten(&w).unwrap();
        assert_eq!(flat, [9.0, 8.0, 1.0, 2.0, 3.0, 4.0], "name order");
        let back = layout.unflatten(&flat, &d).unwrap();
        assert_eq!(layout.flatten(&back).unwrap(), flat);
        assert_eq!(back["b"].dims(), [2, 2]);
        assert!(layout.unflatten(&flat[1..], &d).unwrap_err().to_string().contains("5 values for a model of 6"));
    }
}
