//! Row-major matrix views, validation and the conversions to `faer`.

use crate::error::{AnalysisError, Result};
use faer::Mat;

/// Relative tolerance of the symmetry check: `|K[i,j] − K[j,i]| ≤ SYMMETRY_RTOL · max|K|`.
///
/// Loose enough for kernels computed in f32 and stored as f64 (≈1e-7 relative asymmetry),
/// tight enough to reject a test-train kernel passed where a train-train one is expected.
/// Kernels that pass are symmetrised, `(K + Kᵀ)/2`, before any decomposition.
pub const SYMMETRY_RTOL: f64 = 1e-6;

/// A borrowed dense matrix in row-major (C) order: entry `(i, j)` is `data[i * cols + j]`.
///
/// Build it with [`Matrix::new`], which checks that `data` has `rows · cols` values.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    data: &'a [f64],
    rows: usize,
    cols: usize,
}

impl<'a> Matrix<'a> {
    /// A `[rows, cols]` view of `data`; `what` names the argument in errors.
    ///
    /// # Errors
    /// [`AnalysisError::SizeMismatch`] if `data.len() != rows · cols` (or the product overflows).
    pub fn new(what: &str, data: &'a [f64], rows: usize, cols: usize) -> Result<Self> {
        match rows.checked_mul(cols) {
            Some(len) if len == data.len() => Ok(Matrix { data, rows, cols }),
            _ => Err(AnalysisError::SizeMismatch {
                what: what.to_string(),
                detail: format!(
                    "{} values do not fill the shape [{rows}, {cols}]",
                    data.len()
                ),
            }),
        }
    }

    /// A square `[n, n]` view.
    pub fn square(what: &str, data: &'a [f64], n: usize) -> Result<Self> {
        Self::new(what, data, n, n)
    }

    /// A column vector `[len, 1]` view of `data`.
    pub fn column(data: &'a [f64]) -> Self {
        Matrix {
            data,
            rows: data.len(),
            cols: 1,
        }
    }

    /// The values, row-major.
    pub fn data(&self) -> &'a [f64] {
        self.data
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Entry `(i, j)`.
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.cols + j]
    }

    /// A `faer` copy.
    pub fn to_faer(&self) -> Mat<f64> {
        Mat::from_fn(self.rows, self.cols, |i, j| self.at(i, j))
    }
}

/// Errors on the first NaN or ±Inf of `data`.
pub fn check_finite(what: &str, data: &[f64]) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(AnalysisError::NonFinite {
            what: what.to_string(),
            index,
            value: data[index],
        }),
    }
}

/// Errors unless `m` is non-empty and square.
pub fn check_square(what: &str, m: &Matrix<'_>) -> Result<()> {
    if m.rows != m.cols {
        return Err(AnalysisError::NotSquare {
            what: what.to_string(),
            rows: m.rows,
            cols: m.cols,
        });
    }
    if m.rows == 0 {
        return Err(AnalysisError::Empty {
            what: what.to_string(),
        });
    }
    Ok(())
}

/// Checks that `k` is a non-empty, finite, square matrix, symmetric to [`SYMMETRY_RTOL`],
/// and returns its symmetrised copy `(K + Kᵀ)/2` as a `faer` matrix.
pub fn symmetric_kernel(what: &str, k: &Matrix<'_>) -> Result<Mat<f64>> {
    check_square(what, k)?;
    check_finite(what, k.data)?;
    let n = k.rows;
    let scale = k.data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let tol = SYMMETRY_RTOL * scale;
    let mut worst = (0.0f64, 0, 0);
    for i in 0..n {
        for j in 0..i {
            let d = (k.at(i, j) - k.at(j, i)).abs();
            if d > worst.0 {
                worst = (d, i, j);
            }
        }
    }
    if worst.0 > tol {
        return Err(AnalysisError::NotSymmetric {
            what: what.to_string(),
            i: worst.1,
            j: worst.2,
            diff: worst.0,
            tol,
            rtol: SYMMETRY_RTOL,
        });
    }
    Ok(Mat::from_fn(n, n, |i, j| 0.5 * (k.at(i, j) + k.at(j, i))))
}

/// Row-major values of a `faer` matrix.
pub fn to_row_major(m: &Mat<f64>) -> Vec<f64> {
    let mut out = Vec::with_capacity(m.nrows() * m.ncols());
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            out.push(m[(i, j)]);
        }
    }
    out
}

/// The Frobenius inner product `⟨A, B⟩_F = Σ_ij A_ij B_ij` of two equally long slices.
pub fn frobenius_inner(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The Frobenius norm `‖A‖_F`, computed with scaling so that huge or tiny entries neither
/// overflow nor underflow.
pub fn frobenius_norm(a: &[f64]) -> f64 {
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale == 0.0 || !scale.is_finite() {
        return scale;
    }
    scale * a.iter().map(|v| (v / scale).powi(2)).sum::<f64>().sqrt()
}

/// The cosine `⟨A, B⟩_F / (‖A‖_F ‖B‖_F)`, scale-safe; errors if either norm is zero.
pub(crate) fn cosine(what_a: &str, a: &[f64], what_b: &str, b: &[f64]) -> Result<f64> {
    let na = frobenius_norm(a);
    let nb = frobenius_norm(b);
    for (what, norm) in [(what_a, na), (what_b, nb)] {
        if norm == 0.0 {
            return Err(AnalysisError::ZeroNorm {
                what: what.to_string(),
            });
        }
    }
    let c: f64 = a.iter().zip(b).map(|(x, y)| (x / na) * (y / nb)).sum();
    // Rounding can push |c| a few ulps past 1.
    Ok(c.clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_checks_length() {
        let d = [1.0, 2.0, 3.0];
        assert!(matches!(
            Matrix::new("A", &d, 2, 2),
            Err(AnalysisError::SizeMismatch { .. })
        ));
        assert!(matches!(
            Matrix::new("A", &d, usize::MAX, 2),
            Err(AnalysisError::SizeMismatch { .. })
        ));
        let m = Matrix::new("A", &d, 1, 3).unwrap();
        assert_eq!(m.at(0, 2), 3.0);
    }

    #[test]
    fn symmetric_kernel_rejects_bad_input() {
        let asym = [1.0, 2.0, 0.0, 1.0];
        let e = symmetric_kernel("K", &Matrix::square("K", &asym, 2).unwrap()).unwrap_err();
        assert!(
            matches!(e, AnalysisError::NotSymmetric { i: 1, j: 0, .. }),
            "{e}"
        );
        let nan = [1.0, f64::NAN, f64::NAN, 1.0];
        let e = symmetric_kernel("K", &Matrix::square("K", &nan, 2).unwrap()).unwrap_err();
        assert!(
            matches!(e, AnalysisError::NonFinite { index: 1, .. }),
            "{e}"
        );
        let rect = [1.0; 6];
        let e = symmetric_kernel("K", &Matrix::new("K", &rect, 2, 3).unwrap()).unwrap_err();
        assert!(matches!(
            e,
            AnalysisError::NotSquare {
                rows: 2,
                cols: 3,
                ..
            }
        ));
        let e = symmetric_kernel("K", &Matrix::square("K", &[], 0).unwrap()).unwrap_err();
        assert!(matches!(e, AnalysisError::Empty { .. }));
    }

    #[test]
    fn symmetrises_within_tolerance() {
        let k = [2.0, 1.0 + 1e-9, 1.0 - 1e-9, 3.0];
        let s = symmetric_kernel("K", &Matrix::square("K", &k, 2).unwrap()).unwrap();
        assert_eq!(s[(0, 1)], s[(1, 0)]);
        assert!((s[(0, 1)] - 1.0).abs() < 1e-15);
    }

    #[test]
    fn frobenius_norm_is_scale_safe() {
        assert!((frobenius_norm(&[3e200, 4e200]) / 5e200 - 1.0).abs() < 1e-15);
        assert!((frobenius_norm(&[3e-200, 4e-200]) / 5e-200 - 1.0).abs() < 1e-15);
        assert_eq!(frobenius_norm(&[0.0, 0.0]), 0.0);
    }
}
