//! The spatial part of the kernel rule of a 2-D convolution with shared weights.
//!
//! Reference: neural-tangents `stax.Conv` `kernel_fn` with `_conv_kernel_full_spatial_shared`
//! and `_conv_kernel_diagonal_spatial` (`neural_tangents/_src/stax/linear.py`, v0.6.5);
//! Novak et al. 2019 (arXiv 1810.05148), Arora et al. 2019 (CNTK, arXiv 1904.11955).
//!
//! The output at pixel `p` of a conv is `Σ_d W_d · x[p·s + d − pad]` (plus bias) with
//! weights shared over positions, so the covariance of outputs at pixel `a` of `x` and `b`
//! of `y` is the covariance of inputs summed over the SAME filter offset `d` on both sides:
//!
//! `K'[a, b] = (1 / (kh·kw)) Σ_{d ∈ kh×kw} K[a·s + d − pad, b·s + d − pad]`
//!
//! with zero padding (a padded position contributes nothing, but the divisor stays
//! `kh·kw` at the borders as well). The NNGP and the NTK both go through this averaging;
//! the weight/bias variances are then applied by [`crate::dense::Affine`] with
//! `fan_in = in_channels·kh·kw`. `SAME` padding splits the zeros as XLA does (the odd one
//! at the end), taken from `ntk_nets`' layer geometry.

use crate::covariance::Layout;
use crate::spatial::{Axis, AxisWindow, window_pass};

/// Geometry of one conv layer, for the kernel rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Filter size `[kh, kw]`.
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Zeros before the first row and column (`[top, left]`).
    pub pad_before: [usize; 2],
    /// Output size `[H', W']`.
    pub out: [usize; 2],
}

impl ConvGeometry {
    /// Averages a pair block over the filter offsets (the formula above), for either
    /// spatial layout.
    ///
    /// # Shapes
    /// `block`: `layout.len()` with the input size; returns the output layout (`out`
    /// replacing H, W) and its block.
    pub fn average(&self, layout: Layout, block: &[f64]) -> (Layout, Vec<f64>) {
        let mut layout = layout;
        let mut current: Vec<f64> = block.to_vec();
        for (axis, i) in [(Axis::Rows, 0), (Axis::Cols, 1)] {
            let k = self.kernel[i];
            let weight = 1.0 / k as f64;
            let taps: Vec<(usize, usize, f64)> = (0..k).map(|d| (d, d, weight)).collect();
            let window = AxisWindow {
                out: self.out[i],
                stride: self.stride[i],
                pad: self.pad_before[i],
            };
            let (l, next) = window_pass(layout, &current, axis, window, &taps);
            layout = l;
            current = next;
        }
        (layout, current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_divides_by_the_full_filter_size_at_borders() {
        // 1x3 image, kernel 1x3, pad 1 each side: at the left border the window holds
        // (0, K[0], K[1]) on the diagonal; the divisor is still 3.
        let g = ConvGeometry {
            kernel: [1, 3],
            stride: [1, 1],
            pad_before: [0, 1],
            out: [1, 3],
        };
        let (l, d) = g.average(Layout::Diagonal { h: 1, w: 3 }, &[3.0, 6.0, 9.0]);
        assert_eq!(l, Layout::Diagonal { h: 1, w: 3 });
        assert!((d[0] - 3.0).abs() < 1e-15);
        assert!((d[1] - 6.0).abs() < 1e-15);
        assert!((d[2] - 5.0).abs() < 1e-15);
    }

    #[test]
    fn full_layout_diagonal_equals_diagonal_layout() {
        let (h, w) = (5, 4);
        let n = h * w;
        let full: Vec<f64> = (0..n * n)
            .map(|i| ((i * 31 + 7) % 17) as f64 - 8.0)
            .collect();
        let diag = Layout::Full { h, w }.variances(&full);
        let g = ConvGeometry {
            kernel: [2, 3],
            stride: [2, 1],
            pad_before: [0, 1],
            out: [3, 4],
        };
        let (lf, f) = g.average(Layout::Full { h, w }, &full);
        let (ld, d) = g.average(Layout::Diagonal { h, w }, &diag);
        assert_eq!(lf, Layout::Full { h: 3, w: 4 });
        assert_eq!(ld, Layout::Diagonal { h: 3, w: 4 });
        let fd = lf.variances(&f);
        for (a, b) in fd.iter().zip(&d) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}
