//! The conv2d-layer rule and its cost model.
//!
//! For `y[c, p] = s Σ_{c', δ} W[c, c', δ] x[c', p + δ] + b_s b[c]` write `P[p, :]` for the
//! im2col patch of output pixel `p` (length `Ck = in_c·kh·kw`) and `g[c, p] = ∂f/∂y[c, p]`.
//! Then `∂f/∂W = s·g Pᵀ`, `∂f/∂b = b_s Σ_p g[:, p]`, and the contribution is
//!
//! `Θ_l = s² ⟨g1 P1ᵀ, g2 P2ᵀ⟩_F + b_s² ⟨Σ_p g1, Σ_q g2⟩`.
//!
//! Two ways to contract it (Novak et al. 2022, §4 and App. C):
//! - [`ConvStrategy::Im2col`]: per-sample weight gradients `g Pᵀ` (`[Cout, Ck]`), then their
//!   Gram. FLOPs ≈ `2(N1+N2)K·Cout·Pix·Ck + 2·N1K·N2K·Cout·Ck` (full kernel).
//! - [`ConvStrategy::PixelPairs`]: `Σ_{p,q} ⟨g1[:, p], g2[:, q]⟩ (s²⟨P1[p], P2[q]⟩ + b_s²)`.
//!   FLOPs ≈ `2·N1K·N2K·Pix²·Cout + 2·N1·N2·Pix²·Ck + 2·N1K·N2K·Pix²`, and it keeps an
//!   `N1K·Pix × N2K·Pix` buffer alive. It wins when there are few output pixels and
//!   `Pix² < Ck` (late layers of a conv net with small maps and many channels).
//!
//! [`ConvStrategy::Auto`] picks the smaller FLOP count ([`choose`]); the pixel-pair form
//! is only chosen when its buffer fits in 256 MiB.

use super::{Accumulator, Coeff, KernelSum};
use crate::kernel::KernelKind;
use burn::tensor::Slice;
use burn::tensor::Tensor;
use burn::tensor::ops::PadMode;
use ntk_nets::layers::Conv2d;

/// How conv2d weight contributions are contracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvStrategy {
    /// Pick by the cost model of [`choose`].
    #[default]
    Auto,
    /// Per-sample weight gradients via im2col, then their Gram.
    Im2col,
    /// Pixel-pair form, never forming weight gradients.
    PixelPairs,
}

/// The sizes that decide the cost of a conv layer's contribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvCostInputs {
    pub n1: usize,
    pub n2: usize,
    /// Output seeds per sample (O, or 1 for sum-of-logits).
    pub k: usize,
    pub out_channels: usize,
    /// Output pixels `H'·W'`.
    pub pixels: usize,
    /// Patch length `in_c·kh·kw`.
    pub patch: usize,
}

impl ConvCostInputs {
    /// FLOPs of the im2col form for a kernel with `pairs_k` seed pairs per sample pair
    /// (K² full, K diagonal/trace).
    pub fn im2col_flops(&self, pairs_k: usize) -> f64 {
        let c = |x: usize| x as f64;
        2.0 * c(self.n1 + self.n2)
            * c(self.k)
            * c(self.out_channels)
            * c(self.pixels)
            * c(self.patch)
            + 2.0 * c(self.n1) * c(self.n2) * c(pairs_k) * c(self.out_channels) * c(self.patch)
    }
    /// FLOPs of the pixel-pair form.
    pub fn pixel_pair_flops(&self, pairs_k: usize) -> f64 {
        let c = |x: usize| x as f64;
        let pix2 = c(self.pixels) * c(self.pixels);
        2.0 * c(self.n1) * c(self.n2) * c(pairs_k) * pix2 * c(self.out_channels)
            + 2.0 * c(self.n1) * c(self.n2) * pix2 * c(self.patch)
            + 2.0 * c(self.n1) * c(self.n2) * c(pairs_k) * pix2
    }
    /// Bytes of the largest pixel-pair buffer (f64).
    pub fn pixel_pair_bytes(&self, pairs_k: usize) -> f64 {
        8.0 * (self.n1 * self.n2 * pairs_k) as f64 * (self.pixels * self.pixels) as f64
    }
}

/// Seed pairs per sample pair for a kernel kind.
pub fn seed_pairs(kind: KernelKind, k: usize) -> usize {
    if kind == KernelKind::Full { k * k } else { k }
}

impl ConvStrategy {
    /// The strategy to run: this one, or for [`ConvStrategy::Auto`] the cost model's pick.
    pub fn resolve(self, c: &ConvCostInputs, kind: KernelKind) -> ConvStrategy {
        match self {
            ConvStrategy::Auto => choose(c, kind),
            s => s,
        }
    }
}

/// The cost model: the strategy with fewer FLOPs; the pixel-pair form only if its buffer
/// stays under 256 MiB.
pub fn choose(c: &ConvCostInputs, kind: KernelKind) -> ConvStrategy {
    let pk = seed_pairs(kind, c.k);
    if c.pixel_pair_flops(pk) < c.im2col_flops(pk)
        && c.pixel_pair_bytes(pk) <= 256.0 * 1024.0 * 1024.0
    {
        ConvStrategy::PixelPairs
    } else {
        ConvStrategy::Im2col
    }
}

/// im2col patches of a conv layer's input: `[N, in_c·kh·kw, H'·W']`, row `c·kh·kw + i·kw + j`
/// holding `x[c, p_h·s_h + i, p_w·s_w + j]` of the zero-padded input (burn's `unfold4d`
/// order). Built from `kh·kw` strided slices of the padded input — a copy, where
/// `unfold4d` runs a convolution with a one-hot kernel (`2·N·Ck²·P` FLOPs).
pub fn patches(layer: &Conv2d, x: Tensor<4>) -> Tensor<3> {
    let [_, _, kh, kw] = layer.weight.val().dims();
    let [(top, bottom), (left, right)] = layer.padding;
    let [sh, sw] = layer.stride;
    let x = if top + bottom + left + right > 0 {
        x.pad([(top, bottom), (left, right)], PadMode::Constant(0.0))
    } else {
        x
    };
    let [n, c, hp, wp] = x.dims();
    let (ho, wo) = ((hp - kh) / sh + 1, (wp - kw) / sw + 1);
    let mut offsets = Vec::with_capacity(kh * kw);
    for i in 0..kh {
        for j in 0..kw {
            offsets.push(x.clone().slice([
                Slice::from(0..n),
                Slice::from(0..c),
                Slice::from_range_stepped(i..i + (ho - 1) * sh + 1, sh as isize),
                Slice::from_range_stepped(j..j + (wo - 1) * sw + 1, sw as isize),
            ]));
        }
    }
    // [N, C, kh·kw, H', W'] → [N, C·kh·kw, H'·W']
    Tensor::stack::<5>(offsets, 2).reshape([n, c * kh * kw, ho * wo])
}

/// Adds the contribution of a conv2d layer (see the module docs).
///
/// # Shapes
/// - `x1: [N1, in_c, H, W]`, `x2: [N2, in_c, H, W]` (`None`: `x2 = x1`): the layer's inputs
/// - `g1: [N1·K, out_c, H', W']`, `g2: [N2·K, out_c, H', W']` (`None`: `g2 = g1`):
///   cotangents of its output
#[allow(clippy::too_many_arguments)]
pub fn accumulate(
    sum: &mut KernelSum,
    layer: &Conv2d,
    x1: Tensor<4>,
    x2: Option<Tensor<4>>,
    g1: Tensor<4>,
    g2: Option<Tensor<4>>,
    k: usize,
    kind: KernelKind,
    strategy: ConvStrategy,
) {
    let n1 = x1.dims()[0];
    let n2 = x2.as_ref().map_or(n1, |x| x.dims()[0]);
    let [_, cout, ho, wo] = g1.dims();
    let pix = ho * wo;
    let p1 = patches(layer, x1);
    let p2 = x2.map(|x| patches(layer, x));
    let ck = p1.dims()[1];
    let strategy = strategy.resolve(
        &ConvCostInputs {
            n1,
            n2,
            k,
            out_channels: cout,
            pixels: pix,
            patch: ck,
        },
        kind,
    );
    let s2 = layer.weight_scale * layer.weight_scale;
    let b2 = layer
        .bias
        .as_ref()
        .map(|_| layer.bias_scale * layer.bias_scale);
    // [N, K·Cout, Pix]
    let g1 = g1.reshape([n1, k * cout, pix]);
    let g2 = g2.map(|g| g.reshape([n2, k * cout, pix]));
    match strategy {
        ConvStrategy::PixelPairs => {
            let p2 = p2.unwrap_or_else(|| p1.clone());
            let g2 = g2.unwrap_or_else(|| g1.clone());
            sum.add_term(pixel_pairs(p1, p2, g1, g2, k, cout, kind, s2, b2));
        }
        _ => {
            // Per-sample weight gradients (without the scale): [N, K, Cout·Ck].
            let wgrad = |g: Tensor<3>, p: Tensor<3>, n: usize| {
                g.matmul(p.swap_dims(1, 2)).reshape([n, k, cout * ck])
            };
            let w1 = wgrad(g1.clone(), p1.clone(), n1);
            let w2 = match (&g2, p2) {
                (Some(g2), Some(p2)) => Some(wgrad(g2.clone(), p2, n2)),
                _ => None,
            };
            sum.add_gram(w1, w2, Coeff::Scalar(s2));
            if let Some(b2) = b2 {
                let bias = |g: Tensor<3>, n: usize| g.sum_dim(2).reshape([n, k, cout]);
                sum.add_gram(bias(g1, n1), g2.map(|g| bias(g, n2)), Coeff::Scalar(b2));
            }
        }
    }
}

/// Adds the contribution of a conv2d layer followed (up to elementwise activations) by
/// global average pooling and the dense readout — the last conv of a typical conv net —
/// without forming per-seed weight gradients.
///
/// There the cotangent of output seed `k` is `g[n, k, c, p] = v[k, c] · u[n, c, p]`:
/// `v = s_out·W_out` (`[K, C]`: the readout's rows, or their sum for sum-of-logits) and
/// `u` the cotangent of an all-ones seed at the readout's input, carried back through the
/// pooling (a `1/P` broadcast over pixels) and the activations' derivatives. So the
/// per-sample weight gradient factorises, `g Pᵀ = v[k, c] · M[n, c, :]` with
/// `M[n, c, j] = Σ_p u[n, c, p] patch[n, j, p]`, and
///
/// `Θ_l[n1, k, n2, k'] = Σ_c v[k, c] v[k', c] · R[c, n1, n2]`,
/// `R[c] = s² M1[:, c, :] M2[:, c, :]ᵀ + b_s² (Σ_p u1[:, c, p]) (Σ_p u2[:, c, p])ᵀ`.
///
/// FLOPs `2(N1+N2)·C·P·Ck + 2·C·N1·N2·Ck + 2·N1·N2·C·K²` against the im2col form's
/// `2(N1+N2)K·C·P·Ck + 2·N1K·N2K·C·Ck`: K times fewer for the gradients and about `K²`
/// fewer for the contraction (the "constant along pixels" structure of the pooling's
/// Jacobian, Novak et al. 2022 §4).
///
/// # Shapes
/// - `x1: [N1, in_c, H, W]`, `x2` (`None`: `x2 = x1`): the layer's inputs
/// - `u1: [N1, C, H', W']`, `u2` (`None`: `u2 = u1`): all-ones-seed cotangents of its output
/// - `v: [K, C]`
#[allow(clippy::too_many_arguments)]
pub fn accumulate_pooled_readout(
    sum: &mut KernelSum,
    layer: &Conv2d,
    x1: Tensor<4>,
    x2: Option<Tensor<4>>,
    u1: Tensor<4>,
    u2: Option<Tensor<4>>,
    v: Tensor<2>,
    kind: KernelKind,
) {
    let [n1, c, ho, wo] = u1.dims();
    let n2 = x2.as_ref().map_or(n1, |x| x.dims()[0]);
    let pix = ho * wo;
    let [k, _] = v.dims();
    let s2 = layer.weight_scale * layer.weight_scale;
    // M[n, c, j] and D[n, c] = Σ_p u[n, c, p]
    let factors = |x: Tensor<4>, u: Tensor<4>, n: usize| {
        let p = patches(layer, x); // [N, Ck, P]
        let u = u.reshape([n, c, pix]);
        let d = u.clone().sum_dim(2).reshape([n, c]);
        (u.matmul(p.swap_dims(1, 2)), d) // [N, C, Ck]
    };
    let clock = std::time::Instant::now();
    let lap = |what: &str| {
        if crate::profiling() {
            eprintln!(
                "[profile]   pooled readout {what}: {:.2} ms",
                clock.elapsed().as_secs_f64() * 1e3
            );
        }
    };
    let (m1, d1) = factors(x1, u1, n1);
    lap("M1");
    let (m2, d2) = match (x2, u2) {
        (Some(x2), Some(u2)) => factors(x2, u2, n2),
        _ => (m1.clone(), d1.clone()),
    };
    // R[c, n1, n2]
    let mut r = m1
        .swap_dims(0, 1)
        .matmul(m2.swap_dims(0, 1).swap_dims(1, 2))
        .mul_scalar(s2);
    if layer.bias.is_some() {
        let b2 = layer.bias_scale * layer.bias_scale;
        let outer = d1
            .transpose()
            .reshape([c, n1, 1])
            .matmul(d2.transpose().reshape([c, 1, n2]));
        r = r + outer.mul_scalar(b2);
    }
    let r = r.reshape([c, n1 * n2]);
    lap("R");
    let term = match kind {
        KernelKind::Full => {
            // A[(k, k'), c] = v[k, c] v[k', c]
            let a = v.clone().reshape([k, 1, c]) * v.reshape([1, k, c]);
            let t = a.reshape([k * k, c]).matmul(r); // [(k, k'), (n1, n2)]
            Accumulator::Full(t.reshape([k, k, n1, n2]).permute([2, 0, 3, 1]))
        }
        KernelKind::Diagonal => Accumulator::Diagonal(v.square().matmul(r).reshape([k, n1, n2])),
        _ => Accumulator::Pairs(v.square().sum_dim(0).matmul(r).reshape([n1, n2])),
    };
    lap("term");
    sum.add_term(term);
    lap("added");
}

/// The pixel-pair contraction `Σ_{p,q} ⟨g1[:, p], g2[:, q]⟩ (s²⟨P1[p], P2[q]⟩ + b²)`.
///
/// # Shapes
/// - `p1: [N1, Ck, Pix]`, `p2: [N2, Ck, Pix]`: patches
/// - `g1: [N1, K·Cout, Pix]`, `g2: [N2, K·Cout, Pix]`: cotangents, seed-major per sample
/// - returns the accumulator layout of `kind`
#[allow(clippy::too_many_arguments)]
pub(crate) fn pixel_pairs(
    p1: Tensor<3>,
    p2: Tensor<3>,
    g1: Tensor<3>,
    g2: Tensor<3>,
    k: usize,
    cout: usize,
    kind: KernelKind,
    s2: f64,
    b2: Option<f64>,
) -> Accumulator {
    let [n1, ck, pix] = p1.dims();
    let n2 = p2.dims()[0];
    // Q[n1 p, n2 q] = s² ⟨P1[n1, :, p], P2[n2, :, q]⟩ + b²  → [N1, Pix, N2, Pix]
    let q = p1
        .swap_dims(1, 2)
        .reshape([n1 * pix, ck])
        .matmul(p2.swap_dims(1, 2).reshape([n2 * pix, ck]).transpose())
        .mul_scalar(s2);
    let q = match b2 {
        Some(b2) => q.add_scalar(b2),
        None => q,
    };
    // Cotangents with the pixel axis before the channel axis: [N, K, Pix, Cout].
    let h1 = g1.reshape([n1, k, cout, pix]).swap_dims(2, 3);
    let h2 = g2.reshape([n2, k, cout, pix]).swap_dims(2, 3);
    match kind {
        KernelKind::Full => {
            // M[n1 k p, n2 k' q] = ⟨g1[n1, k, :, p], g2[n2, k', :, q]⟩
            let m = h1
                .reshape([n1 * k * pix, cout])
                .matmul(h2.reshape([n2 * k * pix, cout]).transpose())
                .reshape([n1, k, pix, n2, k, pix]);
            let q = q.reshape([n1, 1, pix, n2, 1, pix]);
            let t: Tensor<6> = m * q;
            Accumulator::Full(t.sum_dim(5).sum_dim(2).reshape([n1, k, n2, k]))
        }
        _ => {
            // Per seed k: [K, N1·Pix, N2·Pix]
            let m = h1.swap_dims(0, 1).reshape([k, n1 * pix, cout]).matmul(
                h2.swap_dims(0, 1)
                    .reshape([k, n2 * pix, cout])
                    .swap_dims(1, 2),
            );
            let t = (m * q.unsqueeze::<3>()).reshape([k, n1, pix, n2, pix]);
            let d: Tensor<3> = t.sum_dim(4).sum_dim(2).reshape([k, n1, n2]);
            match kind {
                KernelKind::Diagonal => Accumulator::Diagonal(d),
                _ => Accumulator::Pairs(d.sum_dim(0).reshape([n1, n2])),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_model_prefers_im2col_for_large_maps_and_pixel_pairs_for_tiny_maps() {
        // perf-cnn's second conv: 16x16 map, 32 -> 32 channels, 3x3.
        let big = ConvCostInputs {
            n1: 32,
            n2: 32,
            k: 10,
            out_channels: 32,
            pixels: 256,
            patch: 288,
        };
        assert_eq!(choose(&big, KernelKind::Full), ConvStrategy::Im2col);
        // A 2x2 map after many channels: Pix² = 16 << Ck = 1152.
        let tiny = ConvCostInputs {
            n1: 8,
            n2: 8,
            k: 2,
            out_channels: 16,
            pixels: 4,
            patch: 1152,
        };
        assert_eq!(choose(&tiny, KernelKind::Full), ConvStrategy::PixelPairs);
        assert!(tiny.pixel_pair_flops(4) < tiny.im2col_flops(4));
    }
}
