//! Feature matrices and an unbiased sketch of row-wise tensor products.

use rand::Rng;

/// Features of a batch, row-major: sample `n` is `data[n * cols..(n + 1) * cols]`.
///
/// # Shapes
/// `data`: `[rows, cols]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMatrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl FeatureMatrix {
    /// Zero columns (the NTK before the first layer is 0).
    pub fn empty(rows: usize) -> Self {
        FeatureMatrix {
            rows,
            cols: 0,
            data: Vec::new(),
        }
    }

    /// The features of sample `n`.
    pub fn row(&self, n: usize) -> &[f64] {
        &self.data[n * self.cols..(n + 1) * self.cols]
    }

    /// Concatenates blocks column-wise, each scaled: `[s₁ A₁, s₂ A₂, ...]`. A block given
    /// as `None` is one constant column of value `s` (a bias).
    ///
    /// # Shapes
    /// every block `[rows, ·]`; result `[rows, Σ cols]`.
    pub fn concat(rows: usize, blocks: &[(Option<&FeatureMatrix>, f64)]) -> Self {
        let cols: usize = blocks.iter().map(|(b, _)| b.map_or(1, |m| m.cols)).sum();
        let mut data = Vec::with_capacity(rows * cols);
        for n in 0..rows {
            for (block, scale) in blocks {
                match block {
                    Some(m) => data.extend(m.row(n).iter().map(|v| scale * v)),
                    None => data.push(*scale),
                }
            }
        }
        FeatureMatrix { rows, cols, data }
    }
}

/// Features of the product kernel: rows `z(x)` with `E[z(x)·z(y)] = (a(x)·a(y)) (b(x)·b(y))`.
///
/// When `a.cols · b.cols <= dim` the exact Kronecker product of the rows is returned (no
/// randomness). Otherwise each of the `dim` output features is
/// `z_k = (g_k·a)(h_k·b) / √dim` with independent Rademacher vectors `g_k`, `h_k`
/// (Kar & Karnick 2012; an unbiased stand-in for the TensorSRHT of Zandieh et al. 2021,
/// at `O(dim · (a.cols + b.cols))` per sample instead of an FFT's log factor).
///
/// # Shapes
/// `a`: `[N, p]`, `b`: `[N, q]`; result `[N, min(p·q, dim)]`.
pub fn tensor_product(
    a: &FeatureMatrix,
    b: &FeatureMatrix,
    dim: usize,
    rng: &mut impl Rng,
) -> FeatureMatrix {
    let rows = a.rows;
    let exact = a.cols.checked_mul(b.cols).is_some_and(|pq| pq <= dim);
    if exact {
        let cols = a.cols * b.cols;
        let mut data = Vec::with_capacity(rows * cols);
        for n in 0..rows {
            for &u in a.row(n) {
                data.extend(b.row(n).iter().map(|v| u * v));
            }
        }
        return FeatureMatrix { rows, cols, data };
    }
    let mut out = vec![0.0; rows * dim];
    let mut g = vec![0.0; a.cols];
    let mut h = vec![0.0; b.cols];
    let norm = 1.0 / (dim as f64).sqrt();
    for k in 0..dim {
        g.iter_mut()
            .for_each(|v| *v = if rng.random::<bool>() { 1.0 } else { -1.0 });
        h.iter_mut()
            .for_each(|v| *v = if rng.random::<bool>() { 1.0 } else { -1.0 });
        for n in 0..rows {
            let ga: f64 = g.iter().zip(a.row(n)).map(|(s, v)| s * v).sum();
            let hb: f64 = h.iter().zip(b.row(n)).map(|(s, v)| s * v).sum();
            out[n * dim + k] = norm * ga * hb;
        }
    }
    FeatureMatrix {
        rows,
        cols: dim,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn m(rows: usize, cols: usize, f: impl Fn(usize) -> f64) -> FeatureMatrix {
        FeatureMatrix {
            rows,
            cols,
            data: (0..rows * cols).map(f).collect(),
        }
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn small_products_are_exact_and_large_ones_unbiased() {
        let a = m(2, 3, |i| (i as f64 * 0.7).sin());
        let b = m(2, 4, |i| (i as f64 * 1.3).cos());
        let want = dot(a.row(0), a.row(1)) * dot(b.row(0), b.row(1));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let exact = tensor_product(&a, &b, 12, &mut rng);
        assert_eq!(exact.cols, 12);
        assert!((dot(exact.row(0), exact.row(1)) - want).abs() < 1e-14);
        // Sketched to 6 < 12 dims: unbiased, so the mean over many draws converges; the
        // bound is 4 standard errors of the mean.
        let trials = 20_000;
        let samples: Vec<f64> = (0..trials)
            .map(|_| {
                let z = tensor_product(&a, &b, 6, &mut rng);
                dot(z.row(0), z.row(1))
            })
            .collect();
        let mean = samples.iter().sum::<f64>() / trials as f64;
        let var = samples.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (trials - 1) as f64;
        let standard_error = (var / trials as f64).sqrt();
        assert!(
            (mean - want).abs() < 4.0 * standard_error,
            "{mean} vs {want} (standard error {standard_error})"
        );
    }

    #[test]
    fn concat_scales_blocks_and_adds_constant_columns() {
        let a = m(2, 2, |i| i as f64);
        let c = FeatureMatrix::concat(2, &[(Some(&a), 2.0), (None, 0.5)]);
        assert_eq!(c.cols, 3);
        assert_eq!(c.data, vec![0.0, 2.0, 0.5, 4.0, 6.0, 0.5]);
    }
}
