//! Kernel rules of the parameter-free spatial layers: average pooling, global average
//! pooling and flatten.
//!
//! Reference: neural-tangents `stax.AvgPool`, `stax.GlobalAvgPool`, `stax.Flatten`
//! `kernel_fn` (`neural_tangents/_src/stax/linear.py`, v0.6.5). All three are linear in
//! the features, so the NNGP and the NTK transform the same way.

use crate::covariance::Layout;
use crate::spatial::{Axis, AxisWindow, window_pass};

/// `avg_pool2d` (no padding): the output at `a` is the mean of the inputs in its window,
/// so
///
/// `K'[a, b] = (1 / (wh·ww)²) Σ_{i, j ∈ window} K[a·s + i, b·s + j]`
///
/// over all pairs of positions of the two windows. This needs the off-diagonal pixel
/// pairs: only [`Layout::Full`] blocks can be pooled (the plan guarantees it).
///
/// # Shapes
/// `block`: `Layout::Full { h, w }.len()`; returns the pooled layout and block.
pub fn avg_pool(
    layout: Layout,
    block: &[f64],
    window: [usize; 2],
    stride: [usize; 2],
    out: [usize; 2],
) -> (Layout, Vec<f64>) {
    let mut layout = layout;
    let mut current = block.to_vec();
    for (axis, i) in [(Axis::Rows, 0), (Axis::Cols, 1)] {
        let k = window[i];
        let weight = 1.0 / (k * k) as f64;
        let taps: Vec<(usize, usize, f64)> = (0..k)
            .flat_map(|dx| (0..k).map(move |dy| (dx, dy, weight)))
            .collect();
        let w = AxisWindow {
            out: out[i],
            stride: stride[i],
            pad: 0,
        };
        let (l, next) = window_pass(layout, &current, axis, w, &taps);
        layout = l;
        current = next;
    }
    (layout, current)
}

/// `global_avg_pool`: the mean over all positions of `x` and all positions of `y`,
/// `K' = (1 / (H W)²) Σ_{p, q} K[p, q]`. (A [`Layout::Diagonal`] block stands for a
/// full one that is zero off the diagonal: its sum is divided by `(H W)²` too.)
///
/// # Shapes
/// `block`: `layout.len()`; returns a [`Layout::Vector`] value.
pub fn global_avg_pool(layout: Layout, block: &[f64]) -> f64 {
    match layout {
        Layout::Vector => block[0],
        Layout::Diagonal { .. } | Layout::Full { .. } => {
            let p = layout.pixels() as f64;
            block.iter().sum::<f64>() / p / p
        }
    }
}

/// `flatten` `[C, H, W] -> [C·H·W]`: features at different positions become different
/// features, whose pairing across `x` and `y` is by position, and the covariance of the
/// flattened vector (per feature, averaged) is the mean over SAME-position pairs,
/// `K' = (1 / (H W)) Σ_p K[p, p]`. On a vector, flatten is the identity.
///
/// # Shapes
/// `block`: `layout.len()`; returns a [`Layout::Vector`] value.
pub fn flatten(layout: Layout, block: &[f64]) -> f64 {
    let v = layout.variances(block);
    v.iter().sum::<f64>() / v.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_pool_of_a_pooled_block_is_the_global_pool_when_windows_tile() {
        // 2x2 windows tiling a 4x4 image: GAP(avgpool(K)) = GAP(K).
        let n = 16;
        let k: Vec<f64> = (0..n * n).map(|i| ((i * 13) % 29) as f64 - 3.0).collect();
        let l = Layout::Full { h: 4, w: 4 };
        let (lp, pooled) = avg_pool(l, &k, [2, 2], [2, 2], [2, 2]);
        assert_eq!(lp, Layout::Full { h: 2, w: 2 });
        let a = global_avg_pool(lp, &pooled);
        let b = global_avg_pool(l, &k);
        assert!((a - b).abs() < 1e-12);
    }

    #[test]
    fn flatten_averages_the_same_position_pairs() {
        let l = Layout::Full { h: 1, w: 2 };
        assert_eq!(flatten(l, &[1.0, 100.0, 100.0, 3.0]), 2.0);
        assert_eq!(flatten(Layout::Diagonal { h: 1, w: 2 }, &[1.0, 3.0]), 2.0);
        assert_eq!(flatten(Layout::Vector, &[5.0]), 5.0);
    }
}
