//! Rules of elementwise ops with a parameter operand `P` (broadcast against `X`):
//! `X + P`, `X − P` → `±g`; `X · P` → `g ⊙ X`; `X / P` → `−g ⊙ X / P²`; `P / X` → `g / X`;
//! each summed over the axes `P` is broadcast along (biases, position embeddings,
//! learned scales, class tokens).

use super::{Site, reduce_to, unsupported};
use crate::error::Result;
use ntk_nets::graph::ops::elementwise::{Binary, ElementwiseOp, binary};
use ntk_nets::graph::value::FloatValue;

pub fn gradient(op: &ElementwiseOp, s: &Site) -> Result<FloatValue> {
    let ElementwiseOp::Binary(b) = op else {
        return Err(unsupported(format!(
            "a parameter feeds a {} node directly",
            op.type_name()
        )));
    };
    let p = s.input(s.slot)?;
    let other = s.input(1 - s.slot.min(1))?;
    let nets = |e: ntk_nets::NetsError| crate::error::EmpiricalError::Nets(e);
    let v = match (b, s.slot) {
        (Binary::Add, _) | (Binary::Sub, 0) => s.g.clone(),
        (Binary::Sub, _) => s.g.clone().map(|t| t.neg()),
        (Binary::Mul, _) => binary(Binary::Mul, s.g, other).map_err(nets)?,
        (Binary::Div, 1) => {
            let p2 = binary(Binary::Mul, p, p).map_err(nets)?;
            let q = binary(Binary::Div, other, &p2).map_err(nets)?;
            binary(Binary::Mul, s.g, &q).map_err(nets)?.map(|t| t.neg())
        }
        (Binary::Div, _) => binary(Binary::Div, s.g, other).map_err(nets)?,
        (Binary::Pow, _) => return Err(unsupported("a parameter in a Pow")),
    };
    reduce_to(&v, &p.shape(), s.rows)
}
