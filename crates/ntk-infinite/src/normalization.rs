//! Kernel rule of layer normalisation over channels (without learned scale and shift).
//!
//! Reference: neural-tangents `stax.LayerNorm(axis=channel, eps)` `kernel_fn`
//! (`neural_tangents/_src/stax/linear.py`, v0.6.5). In the infinite-width limit the
//! channel mean of a centred Gaussian layer is 0 and its channel variance at position `p`
//! is the NNGP variance `q[p]`, so `LN(h)[p] = h[p] / √(ε + q[p])`, a deterministic scale
//! per sample and position:
//!
//! `K'[p, q] = K[p, q] / √((ε + q_x[p]) (ε + q_y[q]))`
//!
//! for the NNGP and the NTK alike (the normaliser is constant to first order: its
//! fluctuation is `O(1/√width)`). The output is still Gaussian.

use crate::covariance::PairBlock;

/// Applies `K[p, q] / √((ε + var_x[p])(ε + var_y[q]))` to the NNGP and NTK of a block.
///
/// # Shapes
/// `var_x`, `var_y`: the per-position variances of the two samples at the input,
/// `[layout.pixels()]`.
pub fn layer_norm(block: &mut PairBlock, var_x: &[f64], var_y: &[f64], eps: f64) {
    let PairBlock { layout, nngp, ntk } = block;
    layout.for_each_position_pair(|k, p, q| {
        let scale = 1.0 / ((eps + var_x[p]) * (eps + var_y[q])).sqrt();
        nngp[k] *= scale;
        if let Some(t) = ntk.as_mut() {
            t[k] *= scale;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::covariance::Layout;

    #[test]
    fn same_sample_variance_becomes_q_over_eps_plus_q() {
        let mut b = PairBlock {
            layout: Layout::Full { h: 1, w: 2 },
            nngp: vec![4.0, 1.0, 1.0, 9.0],
            ntk: Some(vec![2.0, 0.0, 0.0, 3.0]),
        };
        layer_norm(&mut b, &[4.0, 9.0], &[4.0, 9.0], 0.0);
        assert_eq!(b.nngp, vec![1.0, 1.0 / 6.0, 1.0 / 6.0, 1.0]);
        assert_eq!(b.ntk.unwrap(), vec![0.5, 0.0, 0.0, 3.0 / 9.0]);
    }
}
