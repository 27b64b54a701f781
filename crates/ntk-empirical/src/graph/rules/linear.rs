//! Rules of the linear family.
//!
//! - `MatMul(X, W)`, `W: [K, N]` a parameter, `X: [R, T..., K]` (tokens share `W`):
//!   `∂/∂W ⟨g, XW⟩ = Σ_t x_tᵀ g_t`, `[R, K, N]` — the token-pair form
//!   `Σ_{t,t'} ⟨x_t, x'_t'⟩⟨g_t, g'_t'⟩` of the notes, contracted per row first;
//! - `MatMul(W, X)`, `W: [M, K]`, `X: [R, T..., K, N]`: `Σ_t g_t x_tᵀ`, `[R, M, K]`;
//! - `Gemm(A, B, C)`: `B` (weight, `transB` honoured) `α a_rᵀ g_r`; `C` (bias) `β g_r`
//!   summed over its broadcast axes.

use super::{Site, reduce_to, rows_tokens, unsupported};
use crate::error::Result;
use ntk_nets::graph::ops::linear::LinearOp;
use ntk_nets::graph::value::FloatValue;

pub fn gradient(op: &LinearOp, s: &Site) -> Result<FloatValue> {
    let r = s.rows;
    match (op, s.slot) {
        (LinearOp::MatMul, 1) => {
            let w = s.input(1)?;
            if w.rank != 2 {
                return Err(unsupported(format!(
                    "MatMul with a parameter of shape {:?} (only 2-D weights)",
                    w.shape()
                )));
            }
            let x = rows_tokens(s.input(0)?, r)?; // [R, T, K]
            let g = rows_tokens(s.g, r)?; // [R, T, N]
            let x3 = x.to_rank::<3>();
            let g3 = g.to_rank::<3>();
            Ok(FloatValue::from_tensor(x3.swap_dims(1, 2).matmul(g3)))
        }
        (LinearOp::MatMul, 0) => {
            let w = s.input(0)?;
            if w.rank != 2 {
                return Err(unsupported(format!(
                    "MatMul with a parameter of shape {:?} (only 2-D weights)",
                    w.shape()
                )));
            }
            let xs = s.input(1)?.shape();
            let gs = s.g.shape();
            if xs.len() < 3 || xs[0] != r {
                return Err(unsupported("MatMul(W, X) with X not [R, ..., K, N]"));
            }
            let (k, n) = (xs[xs.len() - 2], xs[xs.len() - 1]);
            let m = gs[gs.len() - 2];
            let t = s.input(1)?.numel() / (r * k * n);
            let x4 = s.input(1)?.clone().reshape(&[r, t, k, n]).to_rank::<4>();
            let g4 = s.g.clone().reshape(&[r, t, m, n]).to_rank::<4>();
            let prod = g4.matmul(x4.swap_dims(2, 3)); // [R, T, M, K]
            Ok(FloatValue::from_tensor(prod.sum_dim(1).reshape([r, m, k])))
        }
        (
            LinearOp::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            },
            slot,
        ) => match slot {
            1 => {
                if *trans_a {
                    return Err(unsupported("Gemm with transA and a parameter B"));
                }
                // A: [R·T, K] (T > 1 when tokens were merged into rows), g: [R·T, N].
                let a = rows_tokens(s.input(0)?, r)?.to_rank::<3>(); // [R, T, K]
                let g = rows_tokens(s.g, r)?.to_rank::<3>(); // [R, T, N]
                let outer = a.swap_dims(1, 2).matmul(g); // [R, K, N]
                let outer = if *trans_b {
                    outer.swap_dims(1, 2)
                } else {
                    outer
                };
                let outer = if *alpha != 1.0 {
                    outer.mul_scalar(*alpha)
                } else {
                    outer
                };
                Ok(FloatValue::from_tensor(outer))
            }
            2 => {
                let c = s.input(2)?.shape();
                let red = reduce_to(s.g, &c, s.rows)?;
                Ok(if *beta != 1.0 {
                    red.map(|t| t.mul_scalar(*beta))
                } else {
                    red
                })
            }
            _ => Err(unsupported("Gemm with a parameter as A")),
        },
        _ => Err(unsupported("a MatMul parameter in an unexpected slot")),
    }
}
