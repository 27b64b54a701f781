//! The kernel state between layers, for ONE pair of samples `(x, y)`.
//!
//! In the infinite-width limit all channels (features) of a layer are i.i.d. Gaussian
//! processes, so a layer's kernel is described by the covariance of ONE channel between
//! the two samples, at every pair of spatial positions. With independent samples on the
//! batch axes (neural-tangents' `diagonal_batch=True`, its default), the value for the
//! pair `(x, y)` depends only on `x`, `y` and on the per-pixel variances of `x` and of `y`
//! at every layer, so this crate computes the kernels pair by pair and never holds the
//! `[N1, N2, H, W, H, W]` array that neural-tangents builds.
//!
//! A pair block is stored in one of three [`Layout`]s; the NNGP and the NTK share it.

use ntk_nets::FeatureShape;

/// How the spatial structure of one pair block is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Vector features: one number.
    Vector,
    /// Same-position pairs only, `[H, W]`: entry `p` is the covariance between pixel `p`
    /// of `x` and pixel `p` of `y` (neural-tangents' `diagonal_spatial=True`). Enough when
    /// no layer mixes different positions of the two samples (no pooling).
    Diagonal { h: usize, w: usize },
    /// All position pairs, `[H, W, H, W]` row-major: entry `(p, q)` is the covariance
    /// between pixel `p` of `x` and pixel `q` of `y` (`diagonal_spatial=False`).
    Full { h: usize, w: usize },
}

impl Layout {
    /// Number of stored numbers.
    pub fn len(&self) -> usize {
        match *self {
            Layout::Vector => 1,
            Layout::Diagonal { h, w } => h * w,
            Layout::Full { h, w } => (h * w) * (h * w),
        }
    }

    /// Always false: a layout stores at least one number.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Number of spatial positions of one sample (1 for vectors).
    pub fn pixels(&self) -> usize {
        match *self {
            Layout::Vector => 1,
            Layout::Diagonal { h, w } | Layout::Full { h, w } => h * w,
        }
    }

    /// The per-position variances `[H*W]` held by a block computed for the pair `(x, x)`.
    ///
    /// # Shapes
    /// `block`: [`Layout::len`]; result: [`Layout::pixels`].
    pub fn variances(&self, block: &[f64]) -> Vec<f64> {
        match *self {
            Layout::Vector | Layout::Diagonal { .. } => block.to_vec(),
            Layout::Full { .. } => {
                let p = self.pixels();
                (0..p).map(|i| block[i * p + i]).collect()
            }
        }
    }

    /// The `(x-position, y-position)` indices of each stored entry, in storage order.
    ///
    /// Activations need the variance of `x` at the first and of `y` at the second.
    pub fn for_each_position_pair(&self, mut f: impl FnMut(usize, usize, usize)) {
        match *self {
            Layout::Vector => f(0, 0, 0),
            Layout::Diagonal { .. } => {
                for p in 0..self.pixels() {
                    f(p, p, p);
                }
            }
            Layout::Full { .. } => {
                let n = self.pixels();
                for p in 0..n {
                    for q in 0..n {
                        f(p * n + q, p, q);
                    }
                }
            }
        }
    }
}

/// The NNGP and (optionally) NTK blocks of one pair of samples at some layer.
///
/// # Shapes
/// `nngp`, `ntk`: [`Layout::len`] of `layout`.
#[derive(Debug, Clone, PartialEq)]
pub struct PairBlock {
    pub layout: Layout,
    pub nngp: Vec<f64>,
    /// `None` when only the NNGP is wanted (the self-covariance chains).
    pub ntk: Option<Vec<f64>>,
}

/// The input covariance of two samples, neural-tangents' convention: the inner product
/// over channels (features) divided by their number.
///
/// - vector input `[d]`: `⟨x, y⟩ / d`;
/// - image input `[C, H, W]`: per pixel pair `Σ_c x[c, p] y[c, q] / C`, for the pairs the
///   layout keeps (`q = p` for [`Layout::Diagonal`], all for [`Layout::Full`]).
///
/// (A flatten as first layer makes neural-tangents use `⟨x, y⟩ / (C H W)`, which is the
/// mean of the diagonal entries computed here, i.e. what [`crate::pooling::flatten`]
/// gives.)
///
/// # Shapes
/// `x`, `y`: one sample each, `shape.numel()` (channels first); result: `layout.len()`.
pub fn input_covariance(shape: FeatureShape, layout: Layout, x: &[f64], y: &[f64]) -> Vec<f64> {
    match (shape, layout) {
        (FeatureShape::Flat(d), _) => {
            vec![dot(x, y) / d as f64]
        }
        (FeatureShape::Image { c, h, w }, Layout::Diagonal { .. }) => {
            let p = h * w;
            let mut out = vec![0.0; p];
            for ch in 0..c {
                let xs = &x[ch * p..(ch + 1) * p];
                let ys = &y[ch * p..(ch + 1) * p];
                for ((o, a), b) in out.iter_mut().zip(xs).zip(ys) {
                    *o += a * b;
                }
            }
            out.iter_mut().for_each(|v| *v /= c as f64);
            out
        }
        (FeatureShape::Image { c, h, w }, _) => {
            // Full layout (the plan never pairs an image with `Layout::Vector`).
            let p = h * w;
            let mut out = vec![0.0; p * p];
            for ch in 0..c {
                let xs = &x[ch * p..(ch + 1) * p];
                let ys = &y[ch * p..(ch + 1) * p];
                for (i, a) in xs.iter().enumerate() {
                    let row = &mut out[i * p..(i + 1) * p];
                    for (o, b) in row.iter_mut().zip(ys) {
                        *o += a * b;
                    }
                }
            }
            out.iter_mut().for_each(|v| *v /= c as f64);
            out
        }
    }
}

fn dot(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_input_covariance_holds_the_diagonal_layout_on_its_diagonal() {
        let shape = FeatureShape::Image { c: 2, h: 2, w: 3 };
        let x: Vec<f64> = (0..12).map(|i| (i as f64 * 0.37).sin()).collect();
        let y: Vec<f64> = (0..12).map(|i| (i as f64 * 0.91).cos()).collect();
        let full = input_covariance(shape, Layout::Full { h: 2, w: 3 }, &x, &y);
        let diag = input_covariance(shape, Layout::Diagonal { h: 2, w: 3 }, &x, &y);
        for p in 0..6 {
            assert_eq!(full[p * 6 + p], diag[p]);
        }
        // Entry (p, q) by hand: pixel 1 of x, pixel 4 of y.
        let want = (x[1] * y[4] + x[7] * y[10]) / 2.0;
        assert!((full[6 + 4] - want).abs() < 1e-15);
    }

    #[test]
    fn variances_read_the_diagonal() {
        let l = Layout::Full { h: 1, w: 2 };
        assert_eq!(l.variances(&[1.0, 2.0, 3.0, 4.0]), vec![1.0, 4.0]);
        let mut seen = Vec::new();
        l.for_each_position_pair(|k, p, q| seen.push((k, p, q)));
        assert_eq!(seen, vec![(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)]);
    }
}
