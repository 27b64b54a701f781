//! Rules of `Conv`.
//!
//! - Weight, per-row gradient (the im2col form): `G_r = Σ_l g_r[:, l] x̃_n[:, l]ᵀ`
//!   (`x̃_n = im2col(x_n)`: `[C/g·kh·kw, L]` patches of sample n, `L = H'·W'` output
//!   pixels) — Novak et al.'s structured conv rule. The K rows of a sample share its
//!   patches, so im2col runs once per sample and one batched GEMM per sample and group
//!   gives all K rows: `[K·O/g, L] · [L, C/g·k²]`.
//! - Weight, contribution without per-row gradients (the pixel-pair form, ungrouped
//!   convs): `Θ_W[r, r'] = Σ_{l,l'} ⟨g_r[:, l], g_r'[:, l']⟩ ⟨x̃_n[:, l], x̃_n'[:, l']⟩`
//!   ([`crate::structured::conv`], Novak et al. 2022 App. C). Cheaper when the output
//!   map is small and the patches long (`L² < C·k²`: the last stage of a ResNet), where
//!   the per-row gradients `[R, O·C·k²]` are the largest arrays of the whole kernel;
//!   [`pixel_pair_cost`] gives the sizes for the cost model of
//!   [`crate::structured::conv::choose`].
//! - Bias: `Σ_l g_r[:, l]`.

use super::{Site, unsupported};
use crate::error::Result;
use crate::kernel::KernelKind;
use crate::structured::Accumulator;
use crate::structured::conv::{ConvCostInputs, pixel_pairs};
use burn::tensor::Tensor;
use burn::tensor::module::unfold4d;
use burn::tensor::ops::UnfoldOptions;
use ntk_nets::graph::ops::conv::Conv;
use ntk_nets::graph::value::FloatValue;

/// im2col patches of one copy of each sample at a weight site.
struct Patches {
    /// `[N, C·kh·kw, L]`
    cols: Tensor<3>,
    /// Samples N (rows / seeds) and seeds K per sample.
    n: usize,
    k: usize,
    /// Weight `[O, C/g, kh, kw]`.
    weight: [usize; 4],
    /// Output pixels `L`.
    pixels: usize,
}

fn patches(op: &Conv, s: &Site) -> Result<Patches> {
    let r = s.rows;
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
    // Padded here: burn unfolds unpadded, undilated inputs by views (a copy), but padded
    // ones by a convolution with a one-hot kernel, C·k² times the work.
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
    let g4: Tensor<4> = s.g.to_rank();
    let [_, _, ho, wo] = g4.dims();
    if ho * wo != l {
        return Err(unsupported("a Conv whose patches do not match its output"));
    }
    Ok(Patches {
        cols,
        n,
        k,
        weight: [o, cg, kh, kw],
        pixels: l,
    })
}

pub fn gradient(op: &Conv, s: &Site) -> Result<FloatValue> {
    let r = s.rows;
    let g4: Tensor<4> = s.g.to_rank();
    match s.slot {
        1 => {
            let Patches {
                cols,
                n,
                k,
                weight: [o, cg, kh, kw],
                pixels: l,
            } = patches(op, s)?;
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

/// The sizes that decide between the im2col and pixel-pair forms for the weight at `s`
/// (rows: `n1` samples of x1 then `n2` of x2, or `n1` when `n2` is `None`), or `None`
/// where only the im2col form applies (grouped convs, other slots).
///
/// # Shapes
/// From the site: `x: [R, C, H, W]`, `W: [O, C, kh, kw]`, `g: [R, O, H', W']`.
pub fn pixel_pair_cost(
    op: &Conv,
    s: &Site,
    n1: usize,
    n2: Option<usize>,
) -> Option<ConvCostInputs> {
    if s.slot != 1 || op.groups != 1 {
        return None;
    }
    cost_inputs(
        &s.input(1).ok()?.shape(),
        &s.g.shape(),
        n1,
        n2.unwrap_or(n1),
        s.seeds.max(1),
    )
}

/// The cost-model sizes of a conv with weight `[O, C, kh, kw]` and output `[R, O, H', W']`
/// between `n1` and `n2` samples of `k` seeds (`None` for other ranks).
pub fn cost_inputs(
    weight: &[usize],
    output: &[usize],
    n1: usize,
    n2: usize,
    k: usize,
) -> Option<ConvCostInputs> {
    match (weight, output) {
        ([o, c, kh, kw], [_, _, h, w]) => Some(ConvCostInputs {
            n1,
            n2,
            k,
            out_channels: *o,
            pixels: h * w,
            patch: c * kh * kw,
        }),
        _ => None,
    }
}

/// The weight's contribution to the kernel of `kind` in the pixel-pair form (see the
/// module doc), between the first `n1` samples of the site and the next `n2` (`None`: the
/// `n1` samples against themselves).
///
/// # Shapes
/// Returns the accumulator layout of `kind`: `[N1, K, N2, K]` (full), `[K, N1, N2]`
/// (diagonal), `[N1, N2]` (trace, sum-of-logits).
pub fn pixel_pair_term(
    op: &Conv,
    s: &Site,
    n1: usize,
    n2: Option<usize>,
    kind: KernelKind,
) -> Result<Accumulator> {
    if op.groups != 1 {
        return Err(unsupported("the pixel-pair form of a grouped Conv"));
    }
    let Patches {
        cols,
        n,
        k,
        weight: [o, ..],
        pixels: l,
    } = patches(op, s)?;
    if n != n1 + n2.unwrap_or(0) {
        return Err(unsupported(
            "a Conv site whose rows are not the two batches",
        ));
    }
    let g: Tensor<4> = s.g.to_rank();
    let g = g.reshape([n, k * o, l]); // rows n·K + k: [N, K·O, L]
    let (p1, g1) = (cols.clone().narrow(0, 0, n1), g.clone().narrow(0, 0, n1));
    let (p2, g2) = match n2 {
        Some(n2) => (cols.narrow(0, n1, n2), g.narrow(0, n1, n2)),
        None => (p1.clone(), g1.clone()),
    };
    Ok(pixel_pairs(p1, p2, g1, g2, k, o, kind, 1.0, None))
}
