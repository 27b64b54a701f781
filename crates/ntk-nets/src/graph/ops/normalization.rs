//! Normalisations at inference: `BatchNormalization` (running statistics fixed, scale
//! and bias learned) and `LayerNormalization` (statistics of each sample over the
//! trailing axes).
//!
//! Both are `y = x̂ · γ + β`; the structured method's rules need `x̂`, which
//! [`batch_normalized`] and [`layer_normalized`] give.
//!
//! # Shapes
//! BatchNorm: `x: [N, C, ...]`, `γ, β, mean, var: [C]`; LayerNorm: `x: [..., D...]`
//! normalised over axes `axis..`, `γ, β` of the normalised shape (or broadcastable to it).

use crate::error::{NetsError, Result};
use crate::graph::ops::elementwise::{Binary, binary, broadcast_shape, expand_to};
use crate::graph::ops::{float_input, sum_terms, tangent};
use crate::graph::value::{FloatValue, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum NormOp {
    BatchNorm { eps: f64 },
    LayerNorm { axis: i64, eps: f64 },
}

/// Reshapes a per-channel vector `[C]` to broadcast along axis 1 of a rank-`rank` tensor.
pub fn per_channel(v: &FloatValue, rank: usize) -> FloatValue {
    let mut shape = vec![1; rank];
    shape[1] = v.numel();
    v.clone().reshape(&shape)
}

/// `(x − mean) / √(var + ε)` per channel (axis 1).
pub fn batch_normalized(
    x: &FloatValue,
    mean: &FloatValue,
    var: &FloatValue,
    eps: f64,
) -> Result<FloatValue> {
    let s = x.shape();
    if x.rank < 2 {
        return Err(NetsError::op(format!(
            "BatchNormalization of a tensor of shape {s:?}: needs [N, C, ...]"
        )));
    }
    for (what, v) in [("mean", mean), ("var", var)] {
        if v.shape() != [s[1]] {
            return Err(NetsError::op(format!(
                "BatchNormalization: {what} {:?} does not match {} channels",
                v.shape(),
                s[1]
            )));
        }
    }
    let inv = per_channel(var, x.rank).map(|t| t.add_scalar(eps).sqrt().recip());
    let centred = binary(Binary::Sub, x, &per_channel(mean, x.rank))?;
    binary(Binary::Mul, &centred, &inv)
}

/// `(x − μ) / √(σ² + ε)` with μ, σ² the mean and (biased) variance over axes `axis..`.
pub fn layer_normalized(x: &FloatValue, axis: usize, eps: f64) -> FloatValue {
    let axes: Vec<usize> = (axis..x.rank).map(|a| x.phys(a)).collect();
    let mean = x.t.clone().mean_dims(&axes);
    let centred = x.t.clone() - mean;
    let var = (centred.clone() * centred.clone()).mean_dims(&axes);
    FloatValue::new(centred / var.add_scalar(eps).sqrt(), x.rank)
}

impl NormOp {
    pub fn type_name(&self) -> &'static str {
        match self {
            NormOp::BatchNorm { .. } => "BatchNormalization",
            NormOp::LayerNorm { .. } => "LayerNormalization",
        }
    }

    pub fn apply(&self, inputs: &[Option<&Value>]) -> Result<FloatValue> {
        let x = float_input(inputs, 0, "X")?;
        match self {
            NormOp::BatchNorm { eps } => {
                let scale = float_input(inputs, 1, "scale")?;
                let bias = float_input(inputs, 2, "B")?;
                let mean = float_input(inputs, 3, "input_mean")?;
                let var = float_input(inputs, 4, "input_var")?;
                let xh = batch_normalized(x, mean, var, *eps)?;
                let c = x.shape()[1];
                for (what, v) in [("scale", scale), ("B", bias)] {
                    if v.shape() != [c] {
                        return Err(NetsError::op(format!(
                            "BatchNormalization: {what} {:?} does not match {c} channels",
                            v.shape()
                        )));
                    }
                }
                let y = binary(Binary::Mul, &xh, &per_channel(scale, x.rank))?;
                binary(Binary::Add, &y, &per_channel(bias, x.rank))
            }
            NormOp::LayerNorm { axis, eps } => {
                let a = x.axis(*axis, "LayerNormalization")?;
                let xh = layer_normalized(x, a, *eps);
                let normalised = &x.shape()[a..];
                let scale = float_input(inputs, 1, "Scale")?;
                if broadcast_shape(normalised, &scale.shape())? != normalised {
                    return Err(NetsError::op(format!(
                        "LayerNormalization: scale {:?} does not broadcast to the normalised shape {normalised:?}",
                        scale.shape()
                    )));
                }
                let mut y = binary(Binary::Mul, &xh, scale)?;
                if let Some(b) = inputs.get(2).copied().flatten() {
                    y = binary(Binary::Add, &y, b.float("B")?)?;
                }
                Ok(y)
            }
        }
    }

    /// Forward mode (see [`crate::graph::ops::Op::jvp`]).
    ///
    /// - BatchNorm (inference): `y = x̂·γ + β`, `x̂ = (x − μ)/√(σ² + ε)` with the running
    ///   statistics fixed: `ẏ = ẋ·γ/√(σ² + ε) + x̂·γ̇ + β̇`.
    /// - LayerNorm over the trailing axes from `axis`: `x̂ = c/σ`, `c = x − mean(x)`,
    ///   `σ = √(mean(c²) + ε)`: `x̂˙ = (ċ − x̂·mean(x̂·ċ))/σ` with `ċ = ẋ − mean(ẋ)`, and
    ///   `ẏ = x̂˙·γ + x̂·γ̇ + β̇`.
    pub fn jvp(
        &self,
        inputs: &[Option<&Value>],
        tangents: &[Option<&FloatValue>],
        out: &FloatValue,
    ) -> Result<Option<FloatValue>> {
        let x = float_input(inputs, 0, "X")?;
        let shape = out.shape();
        let scale = float_input(inputs, 1, "scale")?;
        let (tx, ts, tb) = (
            tangent(tangents, 0),
            tangent(tangents, 1),
            tangent(tangents, 2),
        );
        match self {
            NormOp::BatchNorm { eps } => {
                if tangent(tangents, 3).is_some() || tangent(tangents, 4).is_some() {
                    return Err(NetsError::op(
                        "BatchNormalization whose running mean or variance depends on the parameters is not supported (they are buffers)",
                    ));
                }
                let mean = float_input(inputs, 3, "input_mean")?;
                let var = float_input(inputs, 4, "input_var")?;
                let xh = batch_normalized(x, mean, var, *eps)?;
                let first = match tx {
                    None => None,
                    Some(t) => {
                        let g = per_channel(scale, x.rank);
                        let inv =
                            per_channel(var, x.rank).map(|v| v.add_scalar(*eps).sqrt().recip());
                        Some(binary(Binary::Mul, &binary(Binary::Mul, t, &inv)?, &g)?)
                    }
                };
                let second = ts
                    .map(|t| binary(Binary::Mul, &xh, &per_channel(t, x.rank)))
                    .transpose()?;
                let third = tb.map(|t| expand_to(&per_channel(t, x.rank), &shape));
                Ok(sum_terms([first, second, third]))
            }
            NormOp::LayerNorm { axis, eps } => {
                let a = x.axis(*axis, "LayerNormalization")?;
                let xh = layer_normalized(x, a, *eps);
                let first = match tx {
                    None => None,
                    Some(t) => {
                        let axes: Vec<usize> = (a..x.rank).map(|i| x.phys(i)).collect();
                        let mean = x.t.clone().mean_dims(&axes);
                        let c = x.t.clone() - mean;
                        let sigma = c.clone().square().mean_dims(&axes).add_scalar(*eps).sqrt();
                        let tc = t.t.clone() - t.t.clone().mean_dims(&axes);
                        let proj = (xh.t.clone() * tc.clone()).mean_dims(&axes);
                        let dxh = FloatValue::new((tc - xh.t.clone() * proj) / sigma, x.rank);
                        Some(binary(Binary::Mul, &dxh, scale)?)
                    }
                };
                let second = ts.map(|t| binary(Binary::Mul, &xh, t)).transpose()?;
                let third = tb.map(|t| expand_to(t, &shape));
                Ok(sum_terms([first, second, third]))
            }
        }
    }
}
