//! The spectrum of a symmetric kernel and the statistics read off it.
//!
//! All functions take the eigenvalues in **descending** order as [`eigenvalues`] returns
//! them. A kernel Gram matrix is positive semi-definite in exact arithmetic; eigenvalues
//! that come out slightly negative from rounding are kept as they are by [`eigenvalues`]
//! and clamped to 0 where a statistic needs non-negative values (effective ranks).

use crate::error::{AnalysisError, Result};
use crate::matrix::{Matrix, symmetric_kernel};
use faer::Mat;
use serde::Serialize;

/// A symmetric eigendecomposition `K = U diag(λ) Uᵀ`.
#[derive(Debug, Clone)]
pub struct SymmetricEigen {
    /// Eigenvalues, descending.
    pub values: Vec<f64>,
    /// Orthonormal eigenvectors: column `i` belongs to `values[i]`.
    pub vectors: Mat<f64>,
}

/// The eigendecomposition of a (symmetrised) kernel, eigenvalues descending.
///
/// # Errors
/// Not square, empty, non-finite, not symmetric within [`crate::matrix::SYMMETRY_RTOL`], or
/// no convergence.
pub fn eigen(what: &str, k: &Matrix<'_>) -> Result<SymmetricEigen> {
    let sym = symmetric_kernel(what, k)?;
    eigen_of(what, &sym)
}

/// The eigendecomposition of an already validated symmetric `faer` matrix.
pub(crate) fn eigen_of(what: &str, sym: &Mat<f64>) -> Result<SymmetricEigen> {
    let evd =
        sym.self_adjoint_eigen(faer::Side::Lower)
            .map_err(|_| AnalysisError::NoConvergence {
                what: what.to_string(),
            })?;
    let n = sym.nrows();
    // faer sorts ascending; reverse to descending.
    let s = evd.S();
    let values: Vec<f64> = (0..n).rev().map(|i| s[i]).collect();
    let u = evd.U();
    let vectors = Mat::from_fn(n, n, |i, j| u[(i, n - 1 - j)]);
    Ok(SymmetricEigen { values, vectors })
}

/// Eigenvalues of a symmetric kernel `K [n, n]` (row-major), **descending**.
///
/// # Shapes
/// `k: [n, n]` → `[n]`
///
/// # Errors
/// Not square, empty, non-finite, not symmetric within [`crate::matrix::SYMMETRY_RTOL`], or
/// no convergence of the eigensolver.
pub fn eigenvalues(k: &[f64], n: usize) -> Result<Vec<f64>> {
    let m = Matrix::square("kernel", k, n)?;
    let sym = symmetric_kernel("kernel", &m)?;
    let mut v = sym
        .self_adjoint_eigenvalues(faer::Side::Lower)
        .map_err(|_| AnalysisError::NoConvergence {
            what: "kernel".into(),
        })?;
    v.reverse();
    Ok(v)
}

/// Whether a symmetric PSD kernel has an eigenvalue below `rel · λmax`, without the
/// eigendecomposition: `λmax` by power iteration (40 steps from the all-ones vector; its
/// Rayleigh quotient is within a few per cent, which moves the threshold, not the verdict
/// of a well-separated spectrum), then a Cholesky factorisation of `K − rel·λmax·I`, which
/// succeeds exactly when every eigenvalue exceeds the threshold (Sylvester). Cost
/// `n³/3` flops against the eigendecomposition's ~`9n³`.
///
/// # Shapes
/// `k: [n, n]` row-major
pub fn has_eigenvalue_below(k: &[f64], n: usize, rel: f64) -> Result<bool> {
    let m = Matrix::square("kernel", k, n)?;
    let sym = symmetric_kernel("kernel", &m)?;
    let mut v = Mat::<f64>::from_fn(n, 1, |_, _| 1.0 / (n as f64).sqrt());
    let mut lambda = 0.0;
    for _ in 0..40 {
        let w = &sym * &v;
        let norm = w.norm_l2();
        if norm == 0.0 || !norm.is_finite() {
            break;
        }
        lambda = (v.transpose() * &w)[(0, 0)];
        v = w * faer::Scale(1.0 / norm);
    }
    if lambda <= 0.0 {
        return Ok(true);
    }
    let tau = rel * lambda;
    let shifted = Mat::<f64>::from_fn(n, n, |i, j| sym[(i, j)] - if i == j { tau } else { 0.0 });
    Ok(shifted.llt(faer::Side::Lower).is_err())
}

/// The `k` largest eigenvalues (all of them if `k ≥ n`), from descending `eigs`.
pub fn top_k(eigs: &[f64], k: usize) -> &[f64] {
    &eigs[..k.min(eigs.len())]
}

/// `tr K = Σ_i K_ii` of a square row-major kernel.
///
/// # Shapes
/// `k: [n, n]`
pub fn trace(k: &[f64], n: usize) -> Result<f64> {
    let m = Matrix::square("kernel", k, n)?;
    crate::matrix::check_finite("kernel", k)?;
    Ok((0..n).map(|i| m.at(i, i)).sum())
}

/// Condition number `λmax / λmin` from descending eigenvalues.
///
/// A numerically singular kernel gives `f64::INFINITY`: `λmin ≤ n·ε·λmax` (`n` the
/// number of eigenvalues, `ε` f64's machine epsilon — numpy's `matrix_rank` tolerance:
/// below it an eigenvalue is rounding noise of the eigensolver, whose sign and size say
/// nothing), so a rank-deficient kernel scores infinite whichever way its smallest
/// eigenvalue rounds; so does an empty slice.
pub fn condition_number(eigs: &[f64]) -> f64 {
    match (eigs.first(), eigs.last()) {
        (Some(&max), Some(&min)) if min > max * eigs.len() as f64 * f64::EPSILON => max / min,
        _ => f64::INFINITY,
    }
}

/// Effective rank as the **participation ratio** `(Σλ)² / Σλ²`, over `λ⁺ = max(λ, 0)`.
///
/// Equals `r` for `r` equal non-zero eigenvalues and lies in `[1, n]` for a non-zero PSD
/// kernel; 0 for the zero kernel.
pub fn effective_rank_participation(eigs: &[f64]) -> f64 {
    let scale = eigs.iter().fold(0.0f64, |m, &v| m.max(v));
    if scale <= 0.0 {
        return 0.0;
    }
    // Scaled to avoid overflow of Σλ² for huge kernels.
    let (s1, s2) = eigs
        .iter()
        .map(|&v| v.max(0.0) / scale)
        .fold((0.0, 0.0), |(a, b), v| (a + v, b + v * v));
    s1 * s1 / s2
}

/// Effective rank as the **exponential of the spectral entropy** (Roy & Vetterli 2007):
/// `exp(−Σ p_i ln p_i)` with `p_i = λ⁺_i / Σλ⁺`, `λ⁺ = max(λ, 0)`, `0 ln 0 = 0`.
///
/// Equals `r` for `r` equal non-zero eigenvalues; never larger than the participation
/// ratio's upper bound `n`; 0 for the zero kernel.
pub fn effective_rank_entropy(eigs: &[f64]) -> f64 {
    let total: f64 = eigs.iter().map(|&v| v.max(0.0)).sum();
    if total <= 0.0 || !total.is_finite() {
        return 0.0;
    }
    let h: f64 = eigs
        .iter()
        .map(|&v| v.max(0.0) / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    h.exp()
}

/// Largest stable learning rate of full-batch gradient descent on an MSE loss,
/// `2 · normalization / λmax`.
///
/// With the loss `L = 1/(2·N) Σ‖f(x_i) − y_i‖²` the linearised network moves in function
/// space as `f ← f − (η/N) K (f − y)`, a contraction iff `η λmax / N < 2`. Pass
/// `normalization = n` (the kernel size) for `L = 1/(2n) Σ_i ‖f_i − y_i‖²`, the convention
/// of [`SpectrumStats::max_learning_rate`] and of neural-tangents' `max_learning_rate` with
/// `y_train_size=None`; pass `n · c` for neural-tangents' `gradient_descent_mse`
/// convention (the mean over all `n · c` target entries, see [`crate::predict`]).
/// `λmax ≤ 0` gives `f64::INFINITY`.
pub fn max_learning_rate(lambda_max: f64, normalization: f64) -> f64 {
    if lambda_max > 0.0 {
        2.0 * normalization / lambda_max
    } else {
        f64::INFINITY
    }
}

/// Spectral statistics of a kernel. In JSON (serde_json) infinite values become `null`.
#[derive(Debug, Clone, Serialize)]
pub struct SpectrumStats {
    /// Kernel size `n`.
    pub n: usize,
    /// `tr K` (the sum of the diagonal, equal to `Σλ` up to rounding).
    pub trace: f64,
    /// Largest eigenvalue.
    pub lambda_max: f64,
    /// Smallest eigenvalue (may be slightly negative from rounding).
    pub lambda_min: f64,
    /// [`condition_number`]: `λmax/λmin`, infinite when `λmin ≤ 0`.
    pub condition_number: f64,
    /// [`effective_rank_participation`]: `(Σλ)²/Σλ²`.
    pub effective_rank_participation: f64,
    /// [`effective_rank_entropy`]: `exp(entropy of λ/Σλ)`.
    pub effective_rank_entropy: f64,
    /// [`max_learning_rate`] with normalization `n`: `2n/λmax`, for
    /// `L = 1/(2n) Σ_i ‖f(x_i) − y_i‖²` and a kernel acting on each output alone.
    pub max_learning_rate: f64,
    /// All eigenvalues, descending.
    pub eigenvalues: Vec<f64>,
}

/// All the statistics of a symmetric kernel `K [n, n]` (row-major) in one eigendecomposition.
///
/// # Shapes
/// `k: [n, n]`
///
/// # Errors
/// As [`eigenvalues`].
pub fn spectrum(k: &[f64], n: usize) -> Result<SpectrumStats> {
    let eigenvalues = eigenvalues(k, n)?;
    Ok(SpectrumStats {
        n,
        trace: trace(k, n)?,
        lambda_max: eigenvalues[0],
        lambda_min: eigenvalues[n - 1],
        condition_number: condition_number(&eigenvalues),
        effective_rank_participation: effective_rank_participation(&eigenvalues),
        effective_rank_entropy: effective_rank_entropy(&eigenvalues),
        max_learning_rate: max_learning_rate(eigenvalues[0], n as f64),
        eigenvalues,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn eigenvalue_below_threshold_by_cholesky() {
        // Q diag(d) Qᵀ with a rotation Q, n = 3.
        let (c, s) = (0.6f64, 0.8f64);
        let q = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
        let build = |d: [f64; 3]| -> Vec<f64> {
            let mut k = vec![0.0; 9];
            for i in 0..3 {
                for j in 0..3 {
                    k[i * 3 + j] = (0..3).map(|l| q[i][l] * d[l] * q[j][l]).sum();
                }
            }
            k
        };
        assert!(!has_eigenvalue_below(&build([10.0, 1.0, 1e-3]), 3, 1e-6).unwrap());
        assert!(has_eigenvalue_below(&build([10.0, 1.0, 1e-8]), 3, 1e-6).unwrap());
        assert!(has_eigenvalue_below(&build([10.0, 1.0, 0.0]), 3, 1e-6).unwrap());
    }
    use proptest::prelude::*;

    /// Householder reflection `Q = I − 2 v vᵀ / vᵀv`, orthogonal and symmetric.
    pub(crate) fn householder(v: &[f64]) -> Vec<f64> {
        let n = v.len();
        let vv: f64 = v.iter().map(|x| x * x).sum();
        let mut q = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                q[i * n + j] = f64::from(u8::from(i == j)) - 2.0 * v[i] * v[j] / vv;
            }
        }
        q
    }

    /// `Q diag(λ) Qᵀ`, row-major.
    pub(crate) fn with_spectrum(q: &[f64], lambda: &[f64]) -> Vec<f64> {
        let n = lambda.len();
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                k[i * n + j] = (0..n)
                    .map(|l| q[i * n + l] * lambda[l] * q[j * n + l])
                    .sum();
            }
        }
        k
    }

    fn assert_close(a: f64, b: f64, rtol: f64) {
        assert!(
            (a - b).abs() <= rtol * b.abs().max(1.0),
            "{a} vs {b} (rtol {rtol:e})"
        );
    }

    #[test]
    fn eigenvalues_of_constructed_kernel() {
        let lambda = [7.0, 3.0, 2.0, 0.5, 0.25];
        let q = householder(&[1.0, -2.0, 0.5, 3.0, 1.5]);
        let k = with_spectrum(&q, &[0.5, 7.0, 0.25, 3.0, 2.0]);
        let s = spectrum(&k, 5).unwrap();
        for (got, want) in s.eigenvalues.iter().zip(lambda) {
            assert_close(*got, want, 1e-14);
        }
        assert_close(s.trace, 12.75, 1e-14);
        assert_close(s.condition_number, 28.0, 1e-13);
        // (Σλ)²/Σλ² = 12.75² / (49 + 9 + 4 + 0.25 + 0.0625)
        assert_close(
            s.effective_rank_participation,
            12.75 * 12.75 / 62.3125,
            1e-14,
        );
        let h: f64 = lambda.iter().map(|l| -(l / 12.75) * (l / 12.75).ln()).sum();
        assert_close(s.effective_rank_entropy, h.exp(), 1e-14);
        assert_close(s.max_learning_rate, 2.0 * 5.0 / 7.0, 1e-14);
        assert_eq!(top_k(&s.eigenvalues, 2).len(), 2);
        assert_close(top_k(&s.eigenvalues, 2)[1], 3.0, 1e-14);
        assert_eq!(top_k(&s.eigenvalues, 99).len(), 5);
    }

    #[test]
    fn eigenvectors_reconstruct() {
        let q = householder(&[0.3, 1.0, -0.7, 2.0]);
        let k = with_spectrum(&q, &[1.0, 4.0, 2.0, 3.0]);
        let e = eigen("K", &Matrix::square("K", &k, 4).unwrap()).unwrap();
        assert_eq!(e.values.len(), 4);
        for i in 0..4 {
            for j in 0..4 {
                let r: f64 = (0..4)
                    .map(|l| e.vectors[(i, l)] * e.values[l] * e.vectors[(j, l)])
                    .sum();
                assert!((r - k[i * 4 + j]).abs() < 1e-13);
            }
        }
    }

    #[test]
    fn equal_eigenvalues_give_integer_ranks() {
        // Rank 3 projector scaled by 2, in a rotated basis.
        let q = householder(&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        let k = with_spectrum(&q, &[2.0, 0.0, 2.0, 0.0, 2.0, 0.0]);
        let s = spectrum(&k, 6).unwrap();
        assert_close(s.effective_rank_participation, 3.0, 1e-13);
        assert_close(s.effective_rank_entropy, 3.0, 1e-13);
        assert!(s.lambda_min.abs() < 1e-14);
        assert_eq!(s.condition_number, f64::INFINITY, "rank 3 of 6");
    }

    #[test]
    fn singular_and_degenerate() {
        assert_eq!(condition_number(&[1.0, 0.0]), f64::INFINITY);
        assert_eq!(condition_number(&[1.0, -1e-17]), f64::INFINITY);
        assert_eq!(condition_number(&[]), f64::INFINITY);
        // Rounding noise above zero is singular too; just above the n·ε tolerance is not.
        assert_eq!(condition_number(&[1.0, 1e-17]), f64::INFINITY);
        assert!((condition_number(&[1.0, 1e-15]) / 1e15 - 1.0).abs() < 1e-12);
        assert_eq!(effective_rank_participation(&[0.0, 0.0]), 0.0);
        assert_eq!(effective_rank_entropy(&[0.0, -1e-18]), 0.0);
        assert_eq!(max_learning_rate(0.0, 3.0), f64::INFINITY);
        let s = spectrum(&[0.0; 4], 2).unwrap();
        assert_eq!(s.condition_number, f64::INFINITY);
        assert_eq!(s.max_learning_rate, f64::INFINITY);
    }

    #[test]
    fn one_by_one() {
        let s = spectrum(&[4.0], 1).unwrap();
        assert_eq!(s.eigenvalues, vec![4.0]);
        assert_eq!(s.condition_number, 1.0);
        assert_eq!(s.effective_rank_participation, 1.0);
        assert_eq!(s.effective_rank_entropy, 1.0);
        assert_eq!(s.max_learning_rate, 0.5);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(
            eigenvalues(&[1.0, 2.0, 3.0], 2),
            Err(AnalysisError::SizeMismatch { .. })
        ));
        assert!(matches!(
            spectrum(&[1.0, f64::NAN, f64::NAN, 1.0], 2),
            Err(AnalysisError::NonFinite { .. })
        ));
        assert!(matches!(
            spectrum(&[1.0, 0.5, 0.0, 1.0], 2),
            Err(AnalysisError::NotSymmetric { .. })
        ));
        assert!(matches!(
            trace(&[1.0, f64::INFINITY, 0.0, 1.0], 2),
            Err(AnalysisError::NonFinite { .. })
        ));
        assert!(matches!(spectrum(&[], 0), Err(AnalysisError::Empty { .. })));
    }

    proptest! {
        #[test]
        fn ranks_are_bounded(lambda in proptest::collection::vec(0.0f64..10.0, 1..8)) {
            let n = lambda.len();
            let pr = effective_rank_participation(&lambda);
            let er = effective_rank_entropy(&lambda);
            if lambda.iter().any(|&l| l > 0.0) {
                prop_assert!((1.0 - 1e-12..=n as f64 + 1e-12).contains(&pr));
                prop_assert!((1.0 - 1e-12..=n as f64 + 1e-12).contains(&er));
            }
        }
    }
}
