//! Predictions of infinitely wide (or linearised) networks from their kernels, as
//! neural-tangents' `predict.gradient_descent_mse` and `predict.gp_inference`.
//!
//! # Gradient flow on MSE ([`GradientDescentMse`])
//!
//! Continuous-time gradient descent with learning rate `η` on
//! `L = 1/(2N) Σ_{i,a} (f_a(x_i) − Y_ia)²`, `N = n·c` (the mean over all `n·c` target
//! entries — the normalisation neural-tangents uses: `y_train.size`), moves a linearised
//! network in function space as `df/dt = −(η/N) Θ (f − Y)`, with the closed form
//!
//! ```text
//! f_train(t) = Y + e^{−ηΘt/N} (f0_train − Y)
//! f_test(t)  = f0_test + Θ* Θ⁻¹ (I − e^{−ηΘt/N}) (Y − f0_train)
//! ```
//!
//! computed in the eigenbasis `Θ = U diag(λ) Uᵀ`: `e^{−ηΘt/N} = U diag(e^{−λτ}) Uᵀ` and
//! `Θ⁻¹(I − e^{−ηΘt/N}) = U diag(φ(λ)) Uᵀ`, `τ = ηt/N`, `φ(λ) = (1 − e^{−λτ})/λ`
//! (evaluated with `expm1`, and `φ(0) = τ`, its limit). As in neural-tangents, eigenvalues
//! are clamped to `λ⁺ = max(λ, 0)` in the exponent (a PSD kernel's rounding noise); unlike
//! neural-tangents, which divides by `|λ|` and so returns 0 for `λ < 0` and NaN for `λ = 0`,
//! we use the continuous `φ(λ⁺)`; the two differ only on null directions `u` of `Θ`, where
//! an exact Gram kernel has `Θ* u = 0`.
//!
//! At `t = ∞`, `f_train = Y` and `f_test = f0_test + Θ*(Θ + rI)⁻¹(Y − f0_train)`: kernel
//! ridge regression on `Y` when `f0 = 0`. That needs a non-singular `Θ + rI`:
//! [`AnalysisError::Singular`] when `λmin ≤ n·ε·λmax` (the rank tolerance of numpy's
//! `matrix_rank`). Finite times never divide by a small eigenvalue (`φ ≤ τ`).
//!
//! The kernel `Θ [n, n]` acts on each of the `c` output columns independently — neural
//! tangents' `trace_axes=(-1,)` with the `trace` NTK (mean over outputs). For the exact
//! linearised dynamics of a finite network with `O` outputs, flatten the full kernel
//! `[n, n, O, O]` to `[n·O, n·O]` (row `i·O + a`, column `j·O + b`) and the targets to
//! `[n·O, 1]` (neural-tangents' `trace_axes=()`); `N = n·O` either way.
//!
//! # Diagonal regularisation ([`DiagReg`])
//!
//! `Θ → Θ + r I` before the decomposition, with `r = diag_reg · tr(Θ)/n` (the default,
//! relative to the mean diagonal) or `r = diag_reg` when `absolute` — neural-tangents'
//! `diag_reg_absolute_scale`. `Θ*` is never regularised.
//!
//! # Gaussian-process inference ([`GpInference`], [`NtkInference`])
//!
//! NNGP posterior (exact Bayesian posterior of an infinitely wide network; NTK-GP when fed
//! the NTK): mean `K*(K + rI)⁻¹Y`, covariance `K** − K*(K + rI)⁻¹K*ᵀ`. The `"ntk"` mode of
//! neural-tangents (Lee et al. 2019, eq. 16: the distribution of an infinite ensemble of
//! infinitely wide networks trained to convergence): mean `Θ*(Θ + rI)⁻¹Y`, covariance
//! `K** + Θ*Θ⁻¹ K Θ⁻¹Θ*ᵀ − (Θ*Θ⁻¹K*ᵀ + K*Θ⁻¹Θ*ᵀ)` with `Θ⁻¹ = (Θ + rI)⁻¹`. Both use a
//! Cholesky factorisation, as neural-tangents.
//!
//! # References
//! - Jacot, Gabriel & Hongler, *Neural Tangent Kernel*, NeurIPS 2018.
//! - Lee et al., *Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
//!   Descent*, NeurIPS 2019.
//! - neural-tangents, `neural_tangents/_src/predict.py` (`gradient_descent_mse`,
//!   `gp_inference`).

use crate::error::{AnalysisError, Result};
use crate::matrix::{Matrix, check_finite, symmetric_kernel, to_row_major};
use crate::spectrum::{SymmetricEigen, eigen_of};
use faer::Mat;
use faer::linalg::solvers::{Llt, Solve};

/// Diagonal regulariser `Θ → Θ + r I`; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DiagReg {
    /// Strength `diag_reg ≥ 0`.
    pub value: f64,
    /// `false` (default): `r = value · tr(Θ)/n`; `true`: `r = value`
    /// (neural-tangents' `diag_reg_absolute_scale`).
    pub absolute: bool,
}

impl DiagReg {
    /// `r = value · mean(diag Θ)`.
    pub fn relative(value: f64) -> Self {
        DiagReg {
            value,
            absolute: false,
        }
    }

    /// `r = value`.
    pub fn absolute(value: f64) -> Self {
        DiagReg {
            value,
            absolute: true,
        }
    }

    /// The amount `r` added to the diagonal of the symmetric `k`.
    fn amount(&self, k: &Mat<f64>) -> Result<f64> {
        if !(self.value.is_finite() && self.value >= 0.0) {
            return Err(AnalysisError::InvalidParameter {
                name: "diag_reg".into(),
                detail: format!("must be finite and ≥ 0, got {}", self.value),
            });
        }
        if self.absolute {
            return Ok(self.value);
        }
        let n = k.nrows();
        let mean_diag = (0..n).map(|i| k[(i, i)]).sum::<f64>() / n as f64;
        Ok(self.value * mean_diag)
    }
}

/// `(Θ + rI)` validated, symmetrised and regularised, with `r`.
fn regularised(what: &str, k: &Matrix<'_>, reg: DiagReg) -> Result<(Mat<f64>, f64)> {
    let mut sym = symmetric_kernel(what, k)?;
    let r = reg.amount(&sym)?;
    for i in 0..sym.nrows() {
        sym[(i, i)] += r;
    }
    Ok((sym, r))
}

fn check_shape(what: &str, m: &Matrix<'_>, rows: usize, cols: usize) -> Result<()> {
    if m.rows() != rows || m.cols() != cols {
        return Err(AnalysisError::SizeMismatch {
            what: what.to_string(),
            detail: format!(
                "shape [{}, {}], expected [{rows}, {cols}]",
                m.rows(),
                m.cols()
            ),
        });
    }
    check_finite(what, m.data())
}

fn check_time(t: f64) -> Result<()> {
    if t.is_nan() || t < 0.0 {
        return Err(AnalysisError::InvalidParameter {
            name: "t".into(),
            detail: format!("times must be ≥ 0 (or +inf), got {t}"),
        });
    }
    Ok(())
}

/// Test-set inputs of [`GradientDescentMse::predict`].
#[derive(Debug, Clone, Copy)]
pub struct TestSet<'a> {
    /// `Θ(x_test, x_train)`, `[m, n]`.
    pub k_test_train: Matrix<'a>,
    /// Network outputs at `t = 0` on the test set, `[m, c]`; `None` means zero.
    pub fx_test_0: Option<Matrix<'a>>,
}

/// Outputs at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The time `t` (in steps, before multiplying by the learning rate).
    pub t: f64,
    /// `f_train(t)`, `[n, c]` row-major.
    pub train: Vec<f64>,
    /// `f_test(t)`, `[m, c]` row-major, when a [`TestSet`] was given.
    pub test: Option<Vec<f64>>,
}

/// Closed-form gradient flow on MSE, as neural-tangents' `predict.gradient_descent_mse`:
/// one eigendecomposition of `Θ + rI`, then predictions at any times. See the
/// [module docs](self) for the formulas and conventions.
#[derive(Debug, Clone)]
pub struct GradientDescentMse {
    y: Mat<f64>,
    learning_rate: f64,
    normalization: f64,
    eig: SymmetricEigen,
    /// Eigenvalues below this count as zero for `t = ∞`.
    singular_tol: f64,
}

impl GradientDescentMse {
    /// Prepares predictions for kernel `k_train_train` and targets `y_train`.
    ///
    /// # Shapes
    /// `k_train_train: [n, n]`, `y_train: [n, c]`.
    ///
    /// # Errors
    /// Shapes, non-finite values, an asymmetric kernel, a learning rate that is not finite
    /// and positive, a negative or non-finite `diag_reg`.
    pub fn new(
        k_train_train: Matrix<'_>,
        y_train: Matrix<'_>,
        learning_rate: f64,
        diag_reg: DiagReg,
    ) -> Result<Self> {
        let (k, _) = regularised("k_train_train", &k_train_train, diag_reg)?;
        let n = k.nrows();
        check_shape("y_train", &y_train, n, y_train.cols())?;
        if y_train.cols() == 0 {
            return Err(AnalysisError::Empty {
                what: "y_train".into(),
            });
        }
        if !(learning_rate.is_finite() && learning_rate > 0.0) {
            return Err(AnalysisError::InvalidParameter {
                name: "learning_rate".into(),
                detail: format!("must be finite and > 0, got {learning_rate}"),
            });
        }
        let eig = eigen_of("k_train_train", &k)?;
        let singular_tol = n as f64 * f64::EPSILON * eig.values[0].abs();
        Ok(GradientDescentMse {
            y: y_train.to_faer(),
            learning_rate,
            normalization: (n * y_train.cols()) as f64,
            eig,
            singular_tol,
        })
    }

    /// Number of training points `n`.
    pub fn n(&self) -> usize {
        self.y.nrows()
    }

    /// Number of output columns `c`.
    pub fn c(&self) -> usize {
        self.y.ncols()
    }

    /// The normalisation `N = n·c` of the loss (and of time: `τ = ηt/N`).
    pub fn normalization(&self) -> f64 {
        self.normalization
    }

    /// Eigenvalues of `Θ + rI`, descending.
    pub fn eigenvalues(&self) -> &[f64] {
        &self.eig.values
    }

    /// Predictions at one time `t ≥ 0` (`f64::INFINITY` for the converged solution).
    ///
    /// # Shapes
    /// `fx_train_0: [n, c]` (`None`: zero); test set as [`TestSet`] → [`Prediction`].
    pub fn predict(
        &self,
        t: f64,
        fx_train_0: Option<Matrix<'_>>,
        test: Option<TestSet<'_>>,
    ) -> Result<Prediction> {
        let mut v = self.predict_times(&[t], fx_train_0, test)?;
        Ok(v.remove(0))
    }

    /// Predictions at several times, sharing the work that does not depend on `t`.
    ///
    /// # Errors
    /// Shapes, non-finite values, negative or NaN times, and [`AnalysisError::Singular`]
    /// for `t = ∞` with a singular `Θ + rI` and a test set.
    pub fn predict_times(
        &self,
        times: &[f64],
        fx_train_0: Option<Matrix<'_>>,
        test: Option<TestSet<'_>>,
    ) -> Result<Vec<Prediction>> {
        let (n, c) = (self.n(), self.c());
        for &t in times {
            check_time(t)?;
        }
        let f0 = match fx_train_0 {
            Some(f) => {
                check_shape("fx_train_0", &f, n, c)?;
                f.to_faer()
            }
            None => Mat::zeros(n, c),
        };
        // z = Uᵀ (f0 − Y), [n, c].
        let u = &self.eig.vectors;
        let resid = &f0 - &self.y;
        let z = u.transpose() * &resid;
        // Θ* U, [m, n], and f0_test.
        let test = match test {
            Some(ts) => {
                let m = ts.k_test_train.rows();
                check_shape("k_test_train", &ts.k_test_train, m, n)?;
                let f0t = match ts.fx_test_0 {
                    Some(f) => {
                        check_shape("fx_test_0", &f, m, c)?;
                        f.to_faer()
                    }
                    None => Mat::zeros(m, c),
                };
                Some((&ts.k_test_train.to_faer() * u, f0t))
            }
            None => None,
        };
        let lambda: Vec<f64> = self.eig.values.iter().map(|&l| l.max(0.0)).collect();
        let lambda_min = self.eig.values[n - 1];
        let mut out = Vec::with_capacity(times.len());
        for &t in times {
            // e = e^{−λτ} − 1 (train), phi = (1 − e^{−λτ})/λ (test).
            let (e, phi): (Vec<f64>, Vec<f64>) = if t == f64::INFINITY {
                if test.is_some() && lambda_min <= self.singular_tol {
                    return Err(AnalysisError::Singular {
                        what: "k_train_train (+ diag_reg)".into(),
                        detail: format!(
                            "t = inf needs its inverse, but λmin = {lambda_min:.3e} ≤ n·ε·λmax = {:.3e}",
                            self.singular_tol
                        ),
                    });
                }
                lambda
                    .iter()
                    .map(|&l| {
                        if l > self.singular_tol {
                            (-1.0, 1.0 / l)
                        } else {
                            (0.0, 0.0)
                        }
                    })
                    .unzip()
            } else {
                let tau = self.learning_rate * t / self.normalization;
                lambda
                    .iter()
                    .map(|&l| {
                        let e = (-l * tau).exp_m1();
                        let phi = if l * tau > 0.0 { -e / l } else { tau };
                        (e, phi)
                    })
                    .unzip()
            };
            let train = if t == f64::INFINITY && lambda_min > self.singular_tol {
                // Exactly Y, as neural-tangents (no rounding from U Uᵀ).
                self.y.clone()
            } else {
                let ez = Mat::from_fn(n, c, |i, a| e[i] * z[(i, a)]);
                &f0 + u * &ez
            };
            let test_out = test.as_ref().map(|(ku, f0t)| {
                // f_test = f0_test + Θ*U diag(φ) Uᵀ (Y − f0) = f0_test − Θ*U (φ ⊙ z).
                let pz = Mat::from_fn(n, c, |i, a| phi[i] * z[(i, a)]);
                to_row_major(&(f0t - ku * &pz))
            });
            out.push(Prediction {
                t,
                train: to_row_major(&train),
                test: test_out,
            });
        }
        Ok(out)
    }
}

/// A Gaussian over test outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    /// Mean, `[m, c]` row-major.
    pub mean: Vec<f64>,
    /// Covariance over test points, `[m, m]` row-major (shared by the `c` output columns),
    /// when `k_test_test` was given.
    pub covariance: Option<Vec<f64>>,
}

/// Cholesky of `Θ + rI`, as a [`AnalysisError::Singular`] when not positive definite.
fn cholesky(what: &str, k: &Matrix<'_>, reg: DiagReg) -> Result<Llt<f64>> {
    let (a, r) = regularised(what, k, reg)?;
    a.llt(faer::Side::Lower)
        .map_err(|e| AnalysisError::Singular {
            what: format!("{what} (+ diag_reg {r:e})"),
            detail: format!("Cholesky factorisation failed ({e:?})"),
        })
}

/// GP posterior with one kernel (NNGP, or NTK-GP when given the NTK), as neural-tangents'
/// `gp_inference(...)(get="nngp")`: mean `K*(K + rI)⁻¹Y`, covariance
/// `K** − K*(K + rI)⁻¹K*ᵀ`. The Cholesky factor of `K + rI` is computed once.
#[derive(Debug, Clone)]
pub struct GpInference {
    llt: Llt<f64>,
    /// `(K + rI)⁻¹ Y`, `[n, c]`.
    alpha: Mat<f64>,
}

impl GpInference {
    /// # Shapes
    /// `k_train_train: [n, n]`, `y_train: [n, c]`.
    ///
    /// # Errors
    /// Shapes, non-finite values, asymmetry, and [`AnalysisError::Singular`] when
    /// `K + rI` is not numerically positive definite.
    pub fn new(k_train_train: Matrix<'_>, y_train: Matrix<'_>, diag_reg: DiagReg) -> Result<Self> {
        let llt = cholesky("k_train_train", &k_train_train, diag_reg)?;
        check_shape("y_train", &y_train, k_train_train.rows(), y_train.cols())?;
        let alpha = llt.solve(y_train.to_faer());
        Ok(GpInference { llt, alpha })
    }

    fn n(&self) -> usize {
        self.alpha.nrows()
    }

    /// Posterior on the test set.
    ///
    /// # Shapes
    /// `k_test_train: [m, n]`, `k_test_test: [m, m]` → mean `[m, c]`, covariance `[m, m]`.
    pub fn posterior(
        &self,
        k_test_train: Matrix<'_>,
        k_test_test: Option<Matrix<'_>>,
    ) -> Result<Gaussian> {
        let m = k_test_train.rows();
        check_shape("k_test_train", &k_test_train, m, self.n())?;
        let ks = k_test_train.to_faer();
        let mean = to_row_major(&(&ks * &self.alpha));
        let covariance = match k_test_test {
            None => None,
            Some(ktt) => {
                check_shape("k_test_test", &ktt, m, m)?;
                let v = self.llt.solve(ks.transpose().to_owned());
                Some(to_row_major(&(ktt.to_faer() - &ks * &v)))
            }
        };
        Ok(Gaussian { mean, covariance })
    }
}

/// neural-tangents' `gp_inference(...)(get="ntk")`: the output distribution of an infinite
/// ensemble of infinitely wide networks trained to convergence by gradient flow on MSE
/// (Lee et al. 2019, eq. 16). Needs the NTK `Θ` and the NNGP `K`; see the
/// [module docs](self) for the formulas.
#[derive(Debug, Clone)]
pub struct NtkInference {
    llt: Llt<f64>,
    /// `(Θ + rI)⁻¹ Y`.
    alpha: Mat<f64>,
    /// The NNGP train-train kernel `K` (symmetrised, not regularised).
    nngp_train_train: Mat<f64>,
}

impl NtkInference {
    /// # Shapes
    /// `ntk_train_train`, `nngp_train_train: [n, n]`, `y_train: [n, c]`.
    ///
    /// # Errors
    /// As [`GpInference::new`], for either kernel.
    pub fn new(
        ntk_train_train: Matrix<'_>,
        nngp_train_train: Matrix<'_>,
        y_train: Matrix<'_>,
        diag_reg: DiagReg,
    ) -> Result<Self> {
        let llt = cholesky("ntk_train_train", &ntk_train_train, diag_reg)?;
        let n = ntk_train_train.rows();
        check_shape("nngp_train_train", &nngp_train_train, n, n)?;
        let nngp_train_train = symmetric_kernel("nngp_train_train", &nngp_train_train)?;
        check_shape("y_train", &y_train, n, y_train.cols())?;
        let alpha = llt.solve(y_train.to_faer());
        Ok(NtkInference {
            llt,
            alpha,
            nngp_train_train,
        })
    }

    /// The mean `Θ*(Θ + rI)⁻¹Y`, `[m, c]`.
    ///
    /// # Shapes
    /// `ntk_test_train: [m, n]`.
    pub fn mean(&self, ntk_test_train: Matrix<'_>) -> Result<Vec<f64>> {
        let n = self.alpha.nrows();
        check_shape("ntk_test_train", &ntk_test_train, ntk_test_train.rows(), n)?;
        Ok(to_row_major(&(ntk_test_train.to_faer() * &self.alpha)))
    }

    /// Mean and covariance on the test set.
    ///
    /// # Shapes
    /// `ntk_test_train`, `nngp_test_train: [m, n]`, `nngp_test_test: [m, m]`.
    pub fn posterior(
        &self,
        ntk_test_train: Matrix<'_>,
        nngp_test_train: Matrix<'_>,
        nngp_test_test: Matrix<'_>,
    ) -> Result<Gaussian> {
        let n = self.alpha.nrows();
        let m = ntk_test_train.rows();
        let mean = self.mean(ntk_test_train)?;
        check_shape("nngp_test_train", &nngp_test_train, m, n)?;
        check_shape("nngp_test_test", &nngp_test_test, m, m)?;
        let theta_s = ntk_test_train.to_faer();
        // T = (Θ + rI)⁻¹ Θ*ᵀ, [n, m].
        let t = self.llt.solve(theta_s.transpose().to_owned());
        let k_s = nngp_test_train.to_faer();
        // Tᵀ K T − (Tᵀ K*ᵀ + K* T) + K**.
        let tkt = t.transpose() * (&self.nngp_train_train * &t);
        let cross = t.transpose() * k_s.transpose();
        let cov = Mat::from_fn(m, m, |i, j| {
            nngp_test_test.at(i, j) + tkt[(i, j)] - cross[(i, j)] - cross[(j, i)]
        });
        Ok(Gaussian {
            mean,
            covariance: Some(to_row_major(&cov)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spectrum::tests::{householder, with_spectrum};
    use proptest::prelude::*;

    /// Solves `A X = B` by Gauss elimination with partial pivoting (independent of faer).
    fn gauss_solve(a: &[f64], n: usize, b: &[f64], c: usize) -> Vec<f64> {
        let mut a = a.to_vec();
        let mut b = b.to_vec();
        for col in 0..n {
            let p = (col..n)
                .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
                .unwrap();
            for k in 0..n {
                a.swap(col * n + k, p * n + k);
            }
            for k in 0..c {
                b.swap(col * c + k, p * c + k);
            }
            for r in col + 1..n {
                let f = a[r * n + col] / a[col * n + col];
                for k in col..n {
                    a[r * n + k] -= f * a[col * n + k];
                }
                for k in 0..c {
                    b[r * c + k] -= f * b[col * c + k];
                }
            }
        }
        let mut x = vec![0.0; n * c];
        for r in (0..n).rev() {
            for k in 0..c {
                let s: f64 = (r + 1..n).map(|j| a[r * n + j] * x[j * c + k]).sum();
                x[r * c + k] = (b[r * c + k] - s) / a[r * n + r];
            }
        }
        x
    }

    fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
            }
        }
        out
    }

    fn transpose(a: &[f64], m: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[j * m + i] = a[i * n + j];
            }
        }
        out
    }

    fn max_rel(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
        a.iter()
            .zip(b)
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    /// A PSD kernel on n train + m test points: the Gram matrix of fixed features.
    fn gram(n_points: usize, dim: usize) -> Vec<f64> {
        let feat: Vec<f64> = (0..n_points * dim)
            .map(|i| {
                // Deterministic pseudo-random values in [−0.5, 0.5).
                let s = ((i as f64 + 1.0) * 12.9898).sin() * 43758.5453;
                s - s.floor() - 0.5
            })
            .collect();
        matmul(
            &feat,
            &transpose(&feat, n_points, dim),
            n_points,
            dim,
            n_points,
        )
    }

    fn block(
        k: &[f64],
        total: usize,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) -> Vec<f64> {
        let mut out = Vec::new();
        for i in rows {
            for j in cols.clone() {
                out.push(k[i * total + j]);
            }
        }
        out
    }

    fn mat<'a>(d: &'a [f64], r: usize, c: usize) -> Matrix<'a> {
        Matrix::new("m", d, r, c).unwrap()
    }

    #[test]
    fn infinite_time_is_kernel_ridge_regression() {
        let (n, m, c) = (5, 3, 2);
        let full = gram(n + m, 7);
        let k = block(&full, n + m, 0..n, 0..n);
        let ks = block(&full, n + m, n..n + m, 0..n);
        let y: Vec<f64> = (0..n * c).map(|i| (i as f64 * 1.3).cos()).collect();
        for reg in [
            DiagReg::default(),
            DiagReg::absolute(0.3),
            DiagReg::relative(0.1),
        ] {
            let r = if reg.absolute {
                reg.value
            } else {
                reg.value * (0..n).map(|i| k[i * n + i]).sum::<f64>() / n as f64
            };
            let mut kr = k.clone();
            for i in 0..n {
                kr[i * n + i] += r;
            }
            let want = matmul(&ks, &gauss_solve(&kr, n, &y, c), m, n, c);
            let gd = GradientDescentMse::new(mat(&k, n, n), mat(&y, n, c), 0.7, reg).unwrap();
            let p = gd
                .predict(
                    f64::INFINITY,
                    None,
                    Some(TestSet {
                        k_test_train: mat(&ks, m, n),
                        fx_test_0: None,
                    }),
                )
                .unwrap();
            let err = max_rel(p.test.as_ref().unwrap(), &want);
            assert!(err < 1e-10, "reg {reg:?}: rel err {err:e}");
            assert_eq!(p.train, y);
            // The GP posterior mean is the same regression.
            let gp = GpInference::new(mat(&k, n, n), mat(&y, n, c), reg).unwrap();
            let post = gp.posterior(mat(&ks, m, n), None).unwrap();
            assert!(max_rel(&post.mean, &want) < 1e-10);
            assert!(post.covariance.is_none());
            // So is the NTK-ensemble mean.
            let ntk = NtkInference::new(mat(&k, n, n), mat(&k, n, n), mat(&y, n, c), reg).unwrap();
            assert!(max_rel(&ntk.mean(mat(&ks, m, n)).unwrap(), &want) < 1e-10);
        }
    }

    #[test]
    fn infinite_time_with_initial_outputs() {
        // f_test(∞) = f0_test + K* K⁻¹ (Y − f0_train).
        let (n, m, c) = (4, 2, 1);
        let full = gram(n + m, 6);
        let k = block(&full, n + m, 0..n, 0..n);
        let ks = block(&full, n + m, n..n + m, 0..n);
        let y = [1.0, -1.0, 0.5, 2.0];
        let f0 = [0.1, 0.2, -0.3, 0.4];
        let f0t = [0.7, -0.2];
        let rhs: Vec<f64> = y.iter().zip(&f0).map(|(a, b)| a - b).collect();
        let mut want = matmul(&ks, &gauss_solve(&k, n, &rhs, c), m, n, c);
        for (w, f) in want.iter_mut().zip(&f0t) {
            *w += f;
        }
        let gd =
            GradientDescentMse::new(mat(&k, n, n), mat(&y, n, c), 1.0, DiagReg::default()).unwrap();
        let p = gd
            .predict(
                f64::INFINITY,
                Some(mat(&f0, n, c)),
                Some(TestSet {
                    k_test_train: mat(&ks, m, n),
                    fx_test_0: Some(mat(&f0t, m, c)),
                }),
            )
            .unwrap();
        let err = max_rel(p.test.as_ref().unwrap(), &want);
        assert!(err < 1e-10, "rel err {err:e}");
    }

    #[test]
    fn time_zero_returns_initial_outputs() {
        let (n, m, c) = (4, 3, 2);
        let full = gram(n + m, 5);
        let k = block(&full, n + m, 0..n, 0..n);
        let ks = block(&full, n + m, n..n + m, 0..n);
        let y: Vec<f64> = (0..n * c).map(|i| i as f64 - 3.0).collect();
        let f0: Vec<f64> = (0..n * c).map(|i| (i as f64).sin()).collect();
        let f0t: Vec<f64> = (0..m * c).map(|i| (i as f64).cos()).collect();
        let gd =
            GradientDescentMse::new(mat(&k, n, n), mat(&y, n, c), 3.0, DiagReg::relative(0.01))
                .unwrap();
        let p = gd
            .predict(
                0.0,
                Some(mat(&f0, n, c)),
                Some(TestSet {
                    k_test_train: mat(&ks, m, n),
                    fx_test_0: Some(mat(&f0t, m, c)),
                }),
            )
            .unwrap();
        assert!(max_rel(&p.train, &f0) < 1e-14);
        assert_eq!(p.test.unwrap(), f0t);
    }

    #[test]
    fn scalar_case_is_an_exponential() {
        // n = 1: f(t) = y + e^{−η k t / N}(f0 − y), N = c; f*(t) = f0* + k*/k (1 − e^{−ηkt/N})(y − f0).
        let (k, ks, eta) = (2.5, -0.8, 0.3);
        for (c, y, f0, f0t) in [
            (1usize, vec![1.5], vec![-0.5], vec![0.25]),
            (2, vec![1.5, -2.0], vec![-0.5, 0.5], vec![0.25, 1.0]),
        ] {
            let gd =
                GradientDescentMse::new(mat(&[k], 1, 1), mat(&y, 1, c), eta, DiagReg::default())
                    .unwrap();
            let times = [0.0, 0.5, 3.0, 40.0];
            let ps = gd
                .predict_times(
                    &times,
                    Some(mat(&f0, 1, c)),
                    Some(TestSet {
                        k_test_train: mat(&[ks], 1, 1),
                        fx_test_0: Some(mat(&f0t, 1, c)),
                    }),
                )
                .unwrap();
            for (p, &t) in ps.iter().zip(&times) {
                assert_eq!(p.t, t);
                let decay = (-eta * k * t / c as f64).exp();
                for a in 0..c {
                    let want = y[a] + decay * (f0[a] - y[a]);
                    assert!((p.train[a] - want).abs() < 1e-14, "c={c} t={t}");
                    let want_t = f0t[a] + ks / k * (1.0 - decay) * (y[a] - f0[a]);
                    assert!((p.test.as_ref().unwrap()[a] - want_t).abs() < 1e-14);
                }
            }
        }
    }

    #[test]
    fn rotated_diagonal_kernel_decays_mode_by_mode() {
        // K = Q diag(d) Qᵀ: f_train(t) = Y + Q diag(e^{−d η t/N}) Qᵀ (f0 − Y), N = n·c.
        let (n, c, eta) = (4, 2, 0.5);
        let d = [3.0, 1.0, 0.25, 0.0];
        let q = householder(&[1.0, 2.0, -1.0, 0.5]);
        let k = with_spectrum(&q, &d);
        let y = [1.0, 0.0, 0.0, 1.0, -1.0, 0.5, 2.0, -0.5];
        let f0 = [0.5, 0.5, -0.5, 0.0, 0.25, 1.0, 0.0, 0.0];
        let gd =
            GradientDescentMse::new(mat(&k, n, n), mat(&y, n, c), eta, DiagReg::default()).unwrap();
        for t in [0.3, 4.0, 50.0] {
            let p = gd.predict(t, Some(mat(&f0, n, c)), None).unwrap();
            let diff: Vec<f64> = f0.iter().zip(&y).map(|(a, b)| a - b).collect();
            let qd = matmul(&transpose(&q, n, n), &diff, n, n, c);
            let scaled: Vec<f64> = (0..n * c)
                .map(|i| (-d[i / c] * eta * t / (n * c) as f64).exp() * qd[i])
                .collect();
            let back = matmul(&q, &scaled, n, n, c);
            let want: Vec<f64> = y.iter().zip(&back).map(|(a, b)| a + b).collect();
            let err = max_rel(&p.train, &want);
            assert!(err < 1e-14, "t={t}: {err:e}");
        }
        // The null mode (d = 0) never moves, even at t = ∞ (no test set: no inverse needed).
        let p = gd
            .predict(f64::INFINITY, Some(mat(&f0, n, c)), None)
            .unwrap();
        let diff: Vec<f64> = f0.iter().zip(&y).map(|(a, b)| a - b).collect();
        let qd = matmul(&transpose(&q, n, n), &diff, n, n, c);
        let kept: Vec<f64> = (0..n * c)
            .map(|i| if i / c == 3 { qd[i] } else { 0.0 })
            .collect();
        let back = matmul(&q, &kept, n, n, c);
        let want: Vec<f64> = y.iter().zip(&back).map(|(a, b)| a + b).collect();
        assert!(max_rel(&p.train, &want) < 1e-13);
    }

    #[test]
    fn singular_kernel_at_infinite_time() {
        let q = householder(&[1.0, -1.0, 2.0]);
        let k = with_spectrum(&q, &[2.0, 1.0, 0.0]);
        let ks = [0.3, 0.1, -0.2];
        let y = [1.0, 2.0, 3.0];
        let test = Some(TestSet {
            k_test_train: mat(&ks, 1, 3),
            fx_test_0: None,
        });
        let gd =
            GradientDescentMse::new(mat(&k, 3, 3), mat(&y, 3, 1), 1.0, DiagReg::default()).unwrap();
        assert!(matches!(
            gd.predict(f64::INFINITY, None, test),
            Err(AnalysisError::Singular { .. })
        ));
        // Finite times stay finite; a regulariser fixes t = ∞.
        let p = gd.predict(1e6, None, test).unwrap();
        assert!(p.test.unwrap()[0].is_finite());
        let gd =
            GradientDescentMse::new(mat(&k, 3, 3), mat(&y, 3, 1), 1.0, DiagReg::absolute(1e-3))
                .unwrap();
        assert!(gd.predict(f64::INFINITY, None, test).is_ok());
        // Cholesky-based inference reports the same.
        assert!(matches!(
            GpInference::new(
                mat(&[1.0, 1.0, 1.0, 1.0], 2, 2),
                mat(&[1.0, 2.0], 2, 1),
                DiagReg::default()
            ),
            Err(AnalysisError::Singular { .. })
        ));
    }

    #[test]
    fn relative_regulariser_scales_with_mean_diagonal() {
        let k = [1.0, 0.0, 0.0, 3.0];
        let y = [0.0, 0.0];
        let gd = GradientDescentMse::new(mat(&k, 2, 2), mat(&y, 2, 1), 1.0, DiagReg::relative(0.5))
            .unwrap();
        assert_eq!(gd.eigenvalues(), &[4.0, 2.0]);
        let gd = GradientDescentMse::new(mat(&k, 2, 2), mat(&y, 2, 1), 1.0, DiagReg::absolute(0.5))
            .unwrap();
        assert_eq!(gd.eigenvalues(), &[3.5, 1.5]);
        assert_eq!(gd.normalization(), 2.0);
    }

    #[test]
    fn gp_posterior_closed_forms() {
        let (n, m, c) = (4, 3, 1);
        let full = gram(n + m, 9);
        let k = block(&full, n + m, 0..n, 0..n);
        let ks = block(&full, n + m, n..n + m, 0..n);
        let kss = block(&full, n + m, n..n + m, n..n + m);
        let y = [0.5, -1.0, 2.0, 0.0];
        let gp = GpInference::new(mat(&k, n, n), mat(&y, n, c), DiagReg::default()).unwrap();
        let post = gp.posterior(mat(&ks, m, n), Some(mat(&kss, m, m))).unwrap();
        // K** − K* K⁻¹ K*ᵀ by Gauss elimination.
        let sol = gauss_solve(&k, n, &transpose(&ks, m, n), m);
        let red = matmul(&ks, &sol, m, n, m);
        let want: Vec<f64> = kss.iter().zip(&red).map(|(a, b)| a - b).collect();
        let cov = post.covariance.unwrap();
        let scale = kss.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let err = cov
            .iter()
            .zip(&want)
            .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()))
            / scale;
        assert!(err < 1e-10, "cov err {err:e}");
        // Noise-free posterior at the training points: mean = Y, covariance = 0.
        let at_train = gp.posterior(mat(&k, n, n), Some(mat(&k, n, n))).unwrap();
        assert!(max_rel(&at_train.mean, &y) < 1e-10);
        let kscale = k.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        assert!(
            at_train
                .covariance
                .unwrap()
                .iter()
                .all(|v| v.abs() < 1e-9 * kscale)
        );
        // NTK ensemble with Θ = K: K** + Θ*Θ⁻¹KΘ⁻¹Θ*ᵀ − 2Θ*Θ⁻¹K*ᵀ = K** − K*K⁻¹K*ᵀ.
        let ntk = NtkInference::new(
            mat(&k, n, n),
            mat(&k, n, n),
            mat(&y, n, c),
            DiagReg::default(),
        )
        .unwrap();
        let p = ntk
            .posterior(mat(&ks, m, n), mat(&ks, m, n), mat(&kss, m, m))
            .unwrap();
        let err = p
            .covariance
            .unwrap()
            .iter()
            .zip(&want)
            .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()))
            / scale;
        assert!(err < 1e-9, "ntk cov err {err:e}");
        assert!(max_rel(&p.mean, &post.mean) < 1e-10);
    }

    #[test]
    fn ntk_posterior_covariance_formula() {
        // Θ ≠ K: compare with the formula written out by Gauss elimination.
        let (n, m) = (4, 2);
        let a = gram(n + m, 8);
        let b = gram(n + m, 5);
        let th = block(&a, n + m, 0..n, 0..n);
        let ths = block(&a, n + m, n..n + m, 0..n);
        let k = block(&b, n + m, 0..n, 0..n);
        let ks = block(&b, n + m, n..n + m, 0..n);
        let kss = block(&b, n + m, n..n + m, n..n + m);
        let y = [1.0, 2.0, -1.0, 0.0];
        let t = gauss_solve(&th, n, &transpose(&ths, m, n), m); // Θ⁻¹Θ*ᵀ [n, m]
        let tkt = matmul(&transpose(&t, n, m), &matmul(&k, &t, n, n, m), m, n, m);
        let cross = matmul(&transpose(&t, n, m), &transpose(&ks, m, n), m, n, m);
        let mut want = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..m {
                want[i * m + j] =
                    kss[i * m + j] + tkt[i * m + j] - cross[i * m + j] - cross[j * m + i];
            }
        }
        let ntk = NtkInference::new(
            mat(&th, n, n),
            mat(&k, n, n),
            mat(&y, n, 1),
            DiagReg::default(),
        )
        .unwrap();
        let p = ntk
            .posterior(mat(&ths, m, n), mat(&ks, m, n), mat(&kss, m, m))
            .unwrap();
        let err = max_rel(&p.covariance.unwrap(), &want);
        assert!(err < 1e-9, "{err:e}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let k = [2.0, 1.0, 1.0, 2.0];
        let y = [1.0, 0.0];
        let reg = DiagReg::default();
        for lr in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                GradientDescentMse::new(mat(&k, 2, 2), mat(&y, 2, 1), lr, reg),
                Err(AnalysisError::InvalidParameter { .. })
            ));
        }
        assert!(matches!(
            GradientDescentMse::new(
                mat(&k, 2, 2),
                mat(&y, 2, 1),
                1.0,
                DiagReg::relative(f64::NAN)
            ),
            Err(AnalysisError::InvalidParameter { .. })
        ));
        assert!(matches!(
            GradientDescentMse::new(mat(&k, 2, 2), mat(&[1.0, 2.0, 3.0], 3, 1), 1.0, reg),
            Err(AnalysisError::SizeMismatch { .. })
        ));
        assert!(matches!(
            GradientDescentMse::new(mat(&k, 2, 2), mat(&[1.0, f64::NAN], 2, 1), 1.0, reg),
            Err(AnalysisError::NonFinite { .. })
        ));
        assert!(matches!(
            GradientDescentMse::new(mat(&[1.0, 0.0, 5.0, 1.0], 2, 2), mat(&y, 2, 1), 1.0, reg),
            Err(AnalysisError::NotSymmetric { .. })
        ));
        let gd = GradientDescentMse::new(mat(&k, 2, 2), mat(&y, 2, 1), 1.0, reg).unwrap();
        for t in [-1.0, f64::NAN, f64::NEG_INFINITY] {
            assert!(matches!(
                gd.predict(t, None, None),
                Err(AnalysisError::InvalidParameter { .. })
            ));
        }
        assert!(matches!(
            gd.predict(1.0, Some(mat(&[1.0, 2.0, 3.0], 3, 1)), None),
            Err(AnalysisError::SizeMismatch { .. })
        ));
        let bad_ks = [1.0, 2.0, 3.0];
        assert!(matches!(
            gd.predict(
                1.0,
                None,
                Some(TestSet {
                    k_test_train: mat(&bad_ks, 1, 3),
                    fx_test_0: None
                })
            ),
            Err(AnalysisError::SizeMismatch { .. })
        ));
        let nan_ks = [1.0, f64::NAN];
        assert!(matches!(
            gd.predict(
                1.0,
                None,
                Some(TestSet {
                    k_test_train: mat(&nan_ks, 1, 2),
                    fx_test_0: None
                })
            ),
            Err(AnalysisError::NonFinite { .. })
        ));
    }

    proptest! {
        #[test]
        fn training_loss_never_increases(
            d in proptest::collection::vec(0.0f64..5.0, 4),
            v in proptest::collection::vec(-1.0f64..1.0, 4),
            y in proptest::collection::vec(-2.0f64..2.0, 4),
            t1 in 0.0f64..10.0,
            dt in 0.0f64..10.0,
        ) {
            prop_assume!(v.iter().map(|x| x * x).sum::<f64>() > 1e-3);
            let k = with_spectrum(&householder(&v), &d);
            let gd = GradientDescentMse::new(mat(&k, 4, 4), mat(&y, 4, 1), 1.0, DiagReg::default()).unwrap();
            let ps = gd.predict_times(&[t1, t1 + dt], None, None).unwrap();
            let loss = |f: &[f64]| f.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
            prop_assert!(loss(&ps[1].train) <= loss(&ps[0].train) * (1.0 + 1e-12) + 1e-15);
        }
    }
}
