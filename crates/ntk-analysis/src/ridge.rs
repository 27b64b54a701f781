//! Linear ridge regression on explicit features `φ(x) ∈ ℝ^m` (e.g. sketched NTK features):
//! the primal form of kernel ridge regression with the kernel `k(x, y) = φ(x)·φ(y)`.
//!
//! With `Φ` the `[n, m]` training features and `Y` the `[n, c]` targets, the weights
//! `W = (ΦᵀΦ + λI)⁻¹ ΦᵀY` (`[m, c]`, one Cholesky of an `m × m` matrix; cost
//! `O(n m² + m³)`) give predictions `Φ* W` that equal the kernel ridge regression
//! `K*(K + λI)⁻¹ Y` of the feature kernel (`K = ΦΦᵀ`): the push-through identity
//! `(ΦᵀΦ + λI)⁻¹Φᵀ = Φᵀ(ΦΦᵀ + λI)⁻¹`. When `n < m` the dual `n × n` system is solved
//! instead, with the same result. `λ` is absolute here; [`FeatureRidge::relative`] scales
//! it by the mean diagonal of `K` (`tr(ΦᵀΦ)/n`), as neural-tangents' `diag_reg` does.

use crate::error::{AnalysisError, Result};
use crate::matrix::{Matrix, check_finite, to_row_major};
use faer::Mat;
use faer::linalg::solvers::Solve;

/// A fitted ridge regression on features.
#[derive(Debug, Clone)]
pub struct FeatureRidge {
    /// `[m, c]`.
    weights: Mat<f64>,
    /// The absolute regulariser used.
    pub lambda: f64,
}

impl FeatureRidge {
    /// Fits `W` with the absolute regulariser `lambda ≥ 0` (`> 0` unless `ΦᵀΦ` or `ΦΦᵀ`
    /// is invertible).
    ///
    /// # Shapes
    /// `features: [n, m]`, `targets: [n, c]`.
    ///
    /// # Errors
    /// Shapes, non-finite values, a negative `lambda`, and [`AnalysisError::Singular`].
    pub fn fit(features: Matrix<'_>, targets: Matrix<'_>, lambda: f64) -> Result<Self> {
        let (n, m) = (features.rows(), features.cols());
        if n == 0 || m == 0 {
            return Err(AnalysisError::Empty {
                what: "features".into(),
            });
        }
        if targets.rows() != n {
            return Err(AnalysisError::SizeMismatch {
                what: "targets".into(),
                detail: format!("{} rows for {n} feature rows", targets.rows()),
            });
        }
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(AnalysisError::InvalidParameter {
                name: "lambda".into(),
                detail: format!("must be finite and >= 0, got {lambda}"),
            });
        }
        check_finite("features", features.data())?;
        check_finite("targets", targets.data())?;
        let phi = features.to_faer();
        let y = targets.to_faer();
        let singular = |what: &str| AnalysisError::Singular {
            what: what.into(),
            detail: format!("Cholesky failed with lambda = {lambda:e}"),
        };
        let weights = if n >= m {
            let mut a = phi.transpose() * &phi;
            for i in 0..m {
                a[(i, i)] += lambda;
            }
            let llt = a
                .llt(faer::Side::Lower)
                .map_err(|_| singular("features' Gram ΦᵀΦ + λI"))?;
            llt.solve(phi.transpose() * &y)
        } else {
            let mut a = &phi * phi.transpose();
            for i in 0..n {
                a[(i, i)] += lambda;
            }
            let llt = a
                .llt(faer::Side::Lower)
                .map_err(|_| singular("feature kernel ΦΦᵀ + λI"))?;
            phi.transpose() * llt.solve(&y)
        };
        Ok(FeatureRidge { weights, lambda })
    }

    /// Fits with `lambda = r · tr(ΦᵀΦ) / n` (the mean diagonal of the feature kernel).
    pub fn relative(features: Matrix<'_>, targets: Matrix<'_>, r: f64) -> Result<Self> {
        let n = features.rows().max(1);
        let trace: f64 = features.data().iter().map(|v| v * v).sum();
        Self::fit(features, targets, r * trace / n as f64)
    }

    /// Predictions `Φ* W`, `[n*, c]` row-major.
    ///
    /// # Shapes
    /// `features: [n*, m]`.
    pub fn predict(&self, features: Matrix<'_>) -> Result<Vec<f64>> {
        if features.cols() != self.weights.nrows() {
            return Err(AnalysisError::SizeMismatch {
                what: "test features".into(),
                detail: format!(
                    "{} columns, the model has {}",
                    features.cols(),
                    self.weights.nrows()
                ),
            });
        }
        check_finite("test features", features.data())?;
        Ok(to_row_major(&(features.to_faer() * &self.weights)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f64> {
        (0..len)
            .map(|i| ((i as f64 + 1.0) * (seed as f64 + 0.37) * 1.713).sin())
            .collect()
    }

    /// Kernel ridge regression `K*(K + λI)⁻¹Y` by Gaussian elimination, written out.
    fn krr(
        phi: &[f64],
        test: &[f64],
        y: &[f64],
        n: usize,
        t: usize,
        m: usize,
        lambda: f64,
    ) -> Vec<f64> {
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let row = |a: &[f64], i: usize| a[i * m..(i + 1) * m].to_vec();
        let mut a: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let mut r: Vec<f64> = (0..n).map(|j| dot(&row(phi, i), &row(phi, j))).collect();
                r[i] += lambda;
                r.push(y[i]);
                r
            })
            .collect();
        for col in 0..n {
            let pivot = (col..n)
                .max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))
                .unwrap();
            a.swap(col, pivot);
            for r in 0..n {
                if r != col {
                    let f = a[r][col] / a[col][col];
                    for k in col..=n {
                        a[r][k] -= f * a[col][k];
                    }
                }
            }
        }
        let alpha: Vec<f64> = (0..n).map(|i| a[i][n] / a[i][i]).collect();
        (0..t)
            .map(|s| {
                (0..n)
                    .map(|i| dot(&row(test, s), &row(phi, i)) * alpha[i])
                    .sum()
            })
            .collect()
    }

    #[test]
    fn primal_and_dual_forms_equal_kernel_ridge_regression() {
        for (n, m) in [(12, 5), (5, 12)] {
            let (phi, test, y) = (values(n * m, 1), values(4 * m, 2), values(n, 3));
            let fit = FeatureRidge::fit(
                Matrix::new("phi", &phi, n, m).unwrap(),
                Matrix::new("y", &y, n, 1).unwrap(),
                0.3,
            )
            .unwrap();
            let got = fit
                .predict(Matrix::new("test", &test, 4, m).unwrap())
                .unwrap();
            let want = krr(&phi, &test, &y, n, 4, m, 0.3);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-10, "n={n} m={m}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let phi = values(6, 1);
        let y = values(3, 2);
        let f = Matrix::new("phi", &phi, 3, 2).unwrap();
        assert!(FeatureRidge::fit(f, Matrix::new("y", &y[..2], 2, 1).unwrap(), 0.1).is_err());
        assert!(FeatureRidge::fit(f, Matrix::new("y", &y, 3, 1).unwrap(), -1.0).is_err());
        let mut nan = phi.clone();
        nan[1] = f64::NAN;
        assert!(matches!(
            FeatureRidge::fit(
                Matrix::new("phi", &nan, 3, 2).unwrap(),
                Matrix::new("y", &y, 3, 1).unwrap(),
                0.1
            ),
            Err(AnalysisError::NonFinite { .. })
        ));
        // Rank-deficient without regularisation.
        let dup = [1.0, 2.0, 1.0, 2.0, 1.0, 2.0];
        assert!(matches!(
            FeatureRidge::fit(
                Matrix::new("phi", &dup, 3, 2).unwrap(),
                Matrix::new("y", &y, 3, 1).unwrap(),
                0.0
            ),
            Err(AnalysisError::Singular { .. })
        ));
        let fit = FeatureRidge::fit(f, Matrix::new("y", &y, 3, 1).unwrap(), 0.1).unwrap();
        assert!(
            fit.predict(Matrix::new("t", &phi[..3], 1, 3).unwrap())
                .is_err()
        );
    }
}
