//! Rules of the normalisations `y = x̂ · γ + β`: `∂/∂γ = Σ g ⊙ x̂`, `∂/∂β = Σ g`, summed
//! over every axis but the parameter's (BatchNorm: all but the channel axis; LayerNorm:
//! the leading axes of each sample, e.g. the tokens).

use super::{Site, reduce_to, unsupported};
use crate::error::Result;
use ntk_nets::graph::ops::elementwise::{Binary, binary};
use ntk_nets::graph::ops::normalization::{NormOp, batch_normalized, layer_normalized};
use ntk_nets::graph::value::FloatValue;

pub fn gradient(op: &NormOp, s: &Site) -> Result<FloatValue> {
    let x = s.input(0)?;
    let nets = |e: ntk_nets::NetsError| crate::error::EmpiricalError::Nets(e);
    match (op, s.slot) {
        (NormOp::BatchNorm { eps }, 1 | 2) => {
            let c = x.shape()[1];
            let v = if s.slot == 1 {
                let xh = batch_normalized(x, s.input(3)?, s.input(4)?, *eps).map_err(nets)?;
                binary(Binary::Mul, s.g, &xh).map_err(nets)?
            } else {
                s.g.clone()
            };
            // Sum over everything but rows and channels: [R, 1, C, 1...] → [R, C].
            let mut shape = vec![1; x.rank];
            shape[1] = c;
            Ok(reduce_to(&v, &shape[1..], s.rows)?.reshape(&[s.rows, c]))
        }
        (NormOp::LayerNorm { axis, eps }, 1 | 2) => {
            let p = s.input(s.slot)?.shape();
            let v = if s.slot == 1 {
                let a = x.axis(*axis, "LayerNormalization").map_err(nets)?;
                binary(Binary::Mul, s.g, &layer_normalized(x, a, *eps)).map_err(nets)?
            } else {
                s.g.clone()
            };
            reduce_to(&v, &p, s.rows)
        }
        _ => Err(unsupported(
            "BatchNorm running statistics as parameters (they are buffers)",
        )),
    }
}
