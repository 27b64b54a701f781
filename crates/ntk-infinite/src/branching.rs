//! Kernel rules of joins: a sum of branches and a concatenation along channels.
//!
//! Reference: neural-tangents `stax.FanInSum` and `stax.FanInConcat`
//! (`neural_tangents/_src/stax/branching.py`, v0.6.5).
//!
//! - **Sum** `h = Σ_b h_b` of independent centred Gaussian branches: covariances add,
//!   `K' = Σ_b K_b`, for the NNGP and the NTK (the parameters of different branches are
//!   different, so the NTKs add too). Independence is checked by the graph plan: no two
//!   branches may share a random layer since their last common point.
//! - **Concat** along channels of branches with `n_b` channels: an output channel is a
//!   channel of branch `b` with probability `n_b / Σ n`, so `K' = Σ_b n_b K_b / Σ_b n_b`
//!   (stax weighs by the widths of the finite network; equal widths give the plain mean).

use crate::covariance::PairBlock;

/// `Σ_b w_b K_b` over branches of the same layout, for the NNGP and the NTK.
///
/// # Shapes
/// every `blocks[b]`: the same layout; `weights`: `[branches]`.
pub fn weighted_sum(blocks: &[&PairBlock], weights: &[f64]) -> PairBlock {
    let first = blocks[0];
    let mut out = PairBlock {
        layout: first.layout,
        nngp: vec![0.0; first.nngp.len()],
        ntk: first.ntk.as_ref().map(|t| vec![0.0; t.len()]),
    };
    for (b, &w) in blocks.iter().zip(weights) {
        for (o, v) in out.nngp.iter_mut().zip(&b.nngp) {
            *o += w * v;
        }
        if let (Some(o), Some(t)) = (out.ntk.as_mut(), b.ntk.as_ref()) {
            for (o, v) in o.iter_mut().zip(t) {
                *o += w * v;
            }
        }
    }
    out
}

/// The weights of a channel concatenation: `n_b / Σ n` (stax's `_concat_kernels`).
pub fn concat_weights(channels: &[usize]) -> Vec<f64> {
    let total: usize = channels.iter().sum();
    channels.iter().map(|&c| c as f64 / total as f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::covariance::Layout;

    #[test]
    fn sums_and_channel_weighted_means() {
        let a = PairBlock {
            layout: Layout::Vector,
            nngp: vec![1.0],
            ntk: Some(vec![2.0]),
        };
        let b = PairBlock {
            layout: Layout::Vector,
            nngp: vec![3.0],
            ntk: Some(vec![5.0]),
        };
        let s = weighted_sum(&[&a, &b], &[1.0, 1.0]);
        assert_eq!((s.nngp[0], s.ntk.unwrap()[0]), (4.0, 7.0));
        let w = concat_weights(&[1, 3]);
        assert_eq!(w, vec![0.25, 0.75]);
        let c = weighted_sum(&[&a, &b], &w);
        assert_eq!((c.nngp[0], c.ntk.unwrap()[0]), (2.5, 4.25));
    }
}
