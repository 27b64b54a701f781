//! Rule of `Conv`: the weight gradient of every row at once, as one grouped convolution
//! weight-gradient (rows stacked into channels: input `[1, R·C, H, W]`, cotangent
//! `[1, R·O, H', W']`, groups `R·groups`) — the per-sample weight gradient `[R, O, C/g,
//! kh, kw]` of Novak et al.'s structured conv rule; the bias `Σ_{h,w} g`.

use super::{Site, unsupported};
use crate::error::Result;
use burn::tensor::Tensor;
use burn::tensor::module::conv2d_weight_backward;
use ntk_nets::graph::ops::conv::Conv;
use ntk_nets::graph::value::FloatValue;

pub fn gradient(op: &Conv, s: &Site) -> Result<FloatValue> {
    let r = s.rows;
    let g4: Tensor<4> = s.g.to_rank();
    match s.slot {
        1 => {
            let w: Tensor<4> = s.input(1)?.to_rank();
            let [o, cg, kh, kw] = w.dims();
            let (x, pad) = op.prepare(s.input(0)?.to_rank::<4>(), [kh, kw]);
            let [n, c, h, wd] = x.dims();
            let [_, _, ho, wo] = g4.dims();
            if n != r {
                return Err(unsupported(
                    "a Conv input without the batch on its first axis",
                ));
            }
            let xs = x.reshape([1, r * c, h, wd]);
            let gs = g4.reshape([1, r * o, ho, wo]);
            let wz = Tensor::<4>::zeros([r * o, cg, kh, kw], (&xs.device(), xs.dtype()));
            let gw = conv2d_weight_backward(xs, wz, gs, op.options(pad, r * op.groups));
            Ok(FloatValue::from_tensor(gw.reshape([r, o * cg * kh * kw]))
                .reshape(&[r, o, cg, kh, kw]))
        }
        2 => {
            let [n, o, _, _] = g4.dims();
            Ok(FloatValue::from_tensor(
                g4.sum_dims(&[2, 3]).reshape([n, o]),
            ))
        }
        _ => Err(unsupported("a Conv with a parameter as its input")),
    }
}
