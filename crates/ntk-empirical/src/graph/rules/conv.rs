//! Rule of `Conv`: the per-row weight gradient `G_r = Σ_l g_r[:, l] x̃_n[:, l]ᵀ`
//! (`x̃_n = im2col(x_n)`: `[C/g·kh·kw, L]` patches of sample n, `L = H'·W'` output pixels)
//! — Novak et al.'s structured conv rule. The K rows of a sample share its patches, so
//! im2col runs once per sample and one batched GEMM per sample and group gives all K
//! rows: `[K·O/g, L] · [L, C/g·k²]`. The bias: `Σ_l g_r[:, l]`.

use super::{Site, unsupported};
use crate::error::Result;
use burn::tensor::Tensor;
use burn::tensor::module::unfold4d;
use burn::tensor::ops::UnfoldOptions;
use ntk_nets::graph::ops::conv::Conv;
use ntk_nets::graph::value::FloatValue;

pub fn gradient(op: &Conv, s: &Site) -> Result<FloatValue> {
    let r = s.rows;
    let g4: Tensor<4> = s.g.to_rank();
    match s.slot {
        1 => {
            let w: Tensor<4> = s.input(1)?.to_rank();
            let [o, cg, kh, kw] = w.dims();
            let k = s.seeds.max(1);
            if r % k != 0 {
                return Err(unsupported("rows that are not whole samples"));
            }
            let n = r / k;
            let (x, pad) = op.prepare(s.input(0)?.to_rank::<4>(), [kh, kw]);
            let [rx, c, h, wd] = x.dims();
            if rx != r {
                return Err(unsupported(
                    "a Conv input without the batch on its first axis",
                ));
            }
            // One copy of each sample (rows n·K + k repeat sample n).
            let xs = x.reshape([n, k * c, h, wd]).narrow(1, 0, c);
            // Padded here: burn unfolds unpadded, undilated inputs by views (a copy), but
            // padded ones by a convolution with a one-hot kernel, C·k² times the work.
            let (xs, pad) = if pad != [0, 0] {
                let p = (pad[1], pad[1], pad[0], pad[0]);
                (xs.pad(p, burn::tensor::ops::PadMode::Constant(0.0)), [0, 0])
            } else {
                (xs, pad)
            };
            let cols = unfold4d(
                xs,
                [kh, kw],
                UnfoldOptions::new(op.strides, pad, op.dilations),
            ); // [N, C·k², L]
            let [_, _, l] = cols.dims();
            let [_, _, ho, wo] = g4.dims();
            if ho * wo != l {
                return Err(unsupported("a Conv whose patches do not match its output"));
            }
            let gr = op.groups;
            let (og, ck) = (o / gr, cg * kh * kw);
            // [N, g, L, C/g·k²] and [N, g, K·O/g, L].
            let cols = cols.reshape([n, gr, ck, l]).swap_dims(2, 3);
            let gs = g4
                .reshape([n, k, gr, og, l])
                .permute([0, 2, 1, 3, 4])
                .reshape([n, gr, k * og, l]);
            let grad = gs.matmul(cols); // [N, g, K·O/g, C/g·k²]
            let grad = grad
                .reshape([n, gr, k, og * ck])
                .swap_dims(1, 2)
                .reshape([r, o * ck]);
            Ok(FloatValue::from_tensor(grad).reshape(&[r, o, cg, kh, kw]))
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
