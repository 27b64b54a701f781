//! Structured-derivative rules: for an op that consumes a parameter, the gradient of
//! `⟨g_r, op(x_r)⟩` with respect to that parameter for each row `r` of a batch, given the
//! op's inputs `x_r` and the cotangent `g_r` at its output. The Gram of these per-row
//! gradients is the parameter's contribution to the NTK (Novak et al. 2022, structured
//! derivatives: the Jacobian of one parameter at a time, never the whole `J`).
//!
//! One file per op family, as the ops themselves: [`linear`] (MatMul, Gemm), [`conv`],
//! [`normalization`] (BatchNorm, LayerNorm scale and bias), [`elementwise`] (a parameter
//! added, subtracted, multiplied or divided: biases, position embeddings, learned scales).
//!
//! # Shapes
//! `inputs[i]`: `[R, ...]` (the op's inputs; the parameter's own slot holds its value),
//! `g: [R, ...out]` → `[R, ...parameter as the op sees it]`.

pub mod conv;
pub mod elementwise;
pub mod linear;
pub mod normalization;

use crate::error::{EmpiricalError, Result};
use ntk_nets::graph::ops::Op;
use ntk_nets::graph::value::{FloatValue, MAX_RANK};

/// The op inputs and output cotangent of one parameter consumer, for `rows` rows.
pub struct Site<'a> {
    pub op: &'a Op,
    pub slot: usize,
    pub inputs: &'a [Option<FloatValue>],
    pub g: &'a FloatValue,
    pub rows: usize,
    /// Seeds per sample: rows `n·K .. n·K + K` share sample `n` (its inputs are repeated).
    pub seeds: usize,
}

impl Site<'_> {
    /// Float input `i` (an error if it is not there).
    pub fn input(&self, i: usize) -> Result<&FloatValue> {
        self.inputs
            .get(i)
            .and_then(|v| v.as_ref())
            .ok_or_else(|| unsupported(format!("input {i} of the op is not a float tensor")))
    }
}

/// An error for an op/parameter combination the structured method does not cover.
pub fn unsupported(why: impl Into<String>) -> EmpiricalError {
    EmpiricalError::Option {
        option: "method structured".into(),
        message: format!("{}; use --method jacobian for this network", why.into()),
    }
}

/// The per-row parameter gradient at a site (see the module doc).
pub fn param_gradient(site: &Site) -> Result<FloatValue> {
    use ntk_nets::graph::ops::Op::*;
    match site.op {
        Linear(op) => linear::gradient(op, site),
        Conv(op) => conv::gradient(op, site),
        Norm(op) => normalization::gradient(op, site),
        Elementwise(op) => elementwise::gradient(op, site),
        other => Err(unsupported(format!(
            "a parameter feeds a {} node directly",
            other.type_name()
        ))),
    }
}

/// Sums a per-row tensor `v: [R, ...out]` over the axes a parameter of shape `pshape` is
/// broadcast along, giving `[R, ...pshape]` (NumPy alignment: trailing axes; a leading
/// axis of the parameter that meets the batch axis must be 1).
pub fn reduce_to(v: &FloatValue, pshape: &[usize], rows: usize) -> Result<FloatValue> {
    // Rows merged with tokens (`[R·T, N]`, as exports of a linear layer on tokens
    // reshape): split them, sample-major, so the tokens are summed too.
    let split;
    let v = match v.shape().first() {
        Some(&d) if d != rows && rows > 0 && d % rows == 0 && v.rank < MAX_RANK => {
            let mut shape = vec![rows, d / rows];
            shape.extend_from_slice(&v.shape()[1..]);
            split = v.clone().reshape(&shape);
            &split
        }
        Some(&d) if d != rows => {
            return Err(unsupported(format!(
                "an operand {:?} does not keep the batch of {rows} rows on its first axis",
                v.shape()
            )));
        }
        _ => v,
    };
    let out = v.shape();
    let r = out.len();
    if pshape.len() > r {
        return Err(unsupported(format!(
            "a parameter of shape {pshape:?} is broadcast to {out:?}"
        )));
    }
    let mut padded = vec![1; r - pshape.len()];
    padded.extend_from_slice(pshape);
    if padded[0] != 1 {
        return Err(unsupported(format!(
            "a parameter of shape {pshape:?} meets the batch axis of {out:?} with extent {}",
            padded[0]
        )));
    }
    let axes: Vec<usize> = (1..r)
        .filter(|&a| padded[a] == 1 && out[a] != 1)
        .map(|a| v.phys(a))
        .collect();
    let t = if axes.is_empty() {
        v.t.clone()
    } else {
        v.t.clone().sum_dims(&axes)
    };
    let mut shape = vec![out[0]];
    shape.extend_from_slice(pshape);
    Ok(FloatValue::new(t, r).reshape(&shape))
}

/// Reshapes `v` (`[R·T..., last]`, sample-major) to `[R, T, last]`.
pub fn rows_tokens(v: &FloatValue, rows: usize) -> Result<FloatValue> {
    let s = v.shape();
    let last = *s.last().unwrap_or(&1);
    let numel = v.numel();
    if last == 0
        || rows == 0
        || numel % (rows * last) != 0
        || s.first().is_none_or(|&d| d % rows != 0)
    {
        return Err(unsupported(format!(
            "an operand {s:?} does not keep the batch of {rows} rows on its first axis"
        )));
    }
    Ok(v.clone().reshape(&[rows, numel / (rows * last), last]))
}
