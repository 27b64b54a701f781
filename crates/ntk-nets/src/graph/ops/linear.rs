//! Matrix products: `MatMul` (NumPy semantics: batched over leading axes with
//! broadcasting, rank-1 operands promoted) and `Gemm` (`α·op(A)·op(B) + β·C`).
//!
//! A linear layer on tokens (`[N, T, D] · W[D, E]`) is a `MatMul` whose second operand
//! is a parameter (maybe through a `Transpose`); attention scores are a `MatMul` of two
//! activations. Both are the same op: only the structured method cares which operand is
//! a parameter.
//!
//! # Shapes
//! `MatMul`: `[.., M, K] · [.., K, N] → [.., M, N]`; `Gemm`: `[M, K] · [K, N] + C → [M, N]`.

use crate::error::{NetsError, Result};
use crate::graph::ops::elementwise::{broadcast_shape, expand_to};
use crate::graph::ops::{float_input, sum_terms, tangent};
use crate::graph::value::{FloatValue, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum LinearOp {
    MatMul,
    Gemm {
        alpha: f64,
        beta: f64,
        trans_a: bool,
        trans_b: bool,
    },
}

impl LinearOp {
    pub fn type_name(&self) -> &'static str {
        match self {
            LinearOp::MatMul => "MatMul",
            LinearOp::Gemm { .. } => "Gemm",
        }
    }

    pub fn apply(&self, inputs: &[Option<&Value>]) -> Result<FloatValue> {
        match self {
            LinearOp::MatMul => matmul(float_input(inputs, 0, "A")?, float_input(inputs, 1, "B")?),
            LinearOp::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let a = float_input(inputs, 0, "A")?;
                let b = float_input(inputs, 1, "B")?;
                if a.rank != 2 || b.rank != 2 {
                    return Err(NetsError::op(format!(
                        "Gemm needs rank-2 A and B, got {:?} and {:?}",
                        a.shape(),
                        b.shape()
                    )));
                }
                let a = if *trans_a {
                    transpose_last(a)
                } else {
                    a.clone()
                };
                let b = if *trans_b {
                    transpose_last(b)
                } else {
                    b.clone()
                };
                let mut y = matmul(&a, &b)?;
                if *alpha != 1.0 {
                    y = y.map(|t| t.mul_scalar(*alpha));
                }
                match inputs.get(2).copied().flatten() {
                    None => Ok(y),
                    Some(c) => {
                        let c = c.float("C")?;
                        let shape = broadcast_shape(&y.shape(), &c.shape())?;
                        if shape != y.shape() {
                            return Err(NetsError::op(format!(
                                "Gemm: C {:?} does not broadcast to the product {:?}",
                                c.shape(),
                                y.shape()
                            )));
                        }
                        let c = expand_to(c, &shape);
                        let c = if *beta != 1.0 {
                            c.map(|t| t.mul_scalar(*beta))
                        } else {
                            c
                        };
                        Ok(FloatValue::new(y.t + c.t, y.rank))
                    }
                }
            }
        }
    }
}

impl LinearOp {
    /// Forward mode (see [`crate::graph::ops::Op::jvp`]): the product is bilinear,
    /// `(A·B)˙ = Ȧ·B + A·Ḃ`; Gemm adds `β·Ċ` (stretched to the product's shape).
    pub fn jvp(
        &self,
        inputs: &[Option<&Value>],
        tangents: &[Option<&FloatValue>],
    ) -> Result<Option<FloatValue>> {
        let a = inputs.first().copied().flatten();
        let b = inputs.get(1).copied().flatten();
        let with = |x: Option<&Value>, y: Option<&Value>| -> Result<FloatValue> {
            match self {
                LinearOp::MatMul => self.apply(&[x, y]),
                LinearOp::Gemm { .. } => self.apply(&[x, y, None]),
            }
        };
        let ta = tangent(tangents, 0).map(|t| Value::Float(t.clone()));
        let tb = tangent(tangents, 1).map(|t| Value::Float(t.clone()));
        let first = ta.as_ref().map(|t| with(Some(t), b)).transpose()?;
        let second = tb.as_ref().map(|t| with(a, Some(t))).transpose()?;
        let mut sum = sum_terms([first, second]);
        if let (LinearOp::Gemm { beta, .. }, Some(tc)) = (self, tangent(tangents, 2)) {
            let shape = match &sum {
                Some(s) => s.shape(),
                None => self.apply(&[a, b, None])?.shape(),
            };
            let c = expand_to(tc, &shape).map(|t| t.mul_scalar(*beta));
            sum = sum_terms([sum, Some(c)]);
        }
        Ok(sum)
    }
}

/// Swaps the last two logical axes (rank ≥ 2).
pub fn transpose_last(x: &FloatValue) -> FloatValue {
    let r = crate::graph::value::MAX_RANK;
    FloatValue::new(x.t.clone().swap_dims(r - 2, r - 1), x.rank)
}

/// NumPy `matmul`.
pub fn matmul(a: &FloatValue, b: &FloatValue) -> Result<FloatValue> {
    if a.rank == 0 || b.rank == 0 {
        return Err(NetsError::op("MatMul of a scalar"));
    }
    let (sa, sb) = (a.shape(), b.shape());
    // Promote rank-1 operands: [K] → [1, K] on the left, [K] → [K, 1] on the right.
    let a2 = if a.rank == 1 {
        a.clone().reshape(&[1, sa[0]])
    } else {
        a.clone()
    };
    let b2 = if b.rank == 1 {
        b.clone().reshape(&[sb[0], 1])
    } else {
        b.clone()
    };
    let (pa, pb) = (a2.shape(), b2.shape());
    let (m, k) = (pa[pa.len() - 2], pa[pa.len() - 1]);
    let (k2, n) = (pb[pb.len() - 2], pb[pb.len() - 1]);
    if k != k2 {
        return Err(NetsError::op(format!(
            "MatMul: inner dimensions differ, {sa:?} · {sb:?}"
        )));
    }
    let batch = broadcast_shape(&pa[..pa.len() - 2], &pb[..pb.len() - 2])?;
    let mut shape_a = batch.clone();
    shape_a.extend([m, k]);
    let mut shape_b = batch.clone();
    shape_b.extend([k, n]);
    if shape_a.len() > crate::graph::value::MAX_RANK {
        return Err(NetsError::op("MatMul: rank above 6"));
    }
    let mut shape_y = batch.clone();
    shape_y.extend([m, n]);
    for (s, what) in [
        (&shape_a, "MatMul's A"),
        (&shape_b, "MatMul's B"),
        (&shape_y, "MatMul"),
    ] {
        crate::graph::value::check_size(s, what)?;
    }
    let y = expand_to(&a2, &shape_a)
        .t
        .matmul(expand_to(&b2, &shape_b).t);
    let mut out = batch;
    if a.rank > 1 {
        out.push(m);
    }
    if b.rank > 1 {
        out.push(n);
    }
    let rank = shape_a.len();
    Ok(FloatValue::new(y, rank).reshape(&out))
}
