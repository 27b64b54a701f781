//! Kernel-target alignment, raw and centred.
//!
//! Raw alignment (Cristianini et al., *On kernel-target alignment*, NIPS 2001):
//!
//! `A(K, YYᵀ) = ⟨K, YYᵀ⟩_F / (‖K‖_F ‖YYᵀ‖_F)`
//!
//! Centred alignment (Cortes, Mohri & Rostamizadeh, *Algorithms for Learning Kernels Based
//! on Centered Alignment*, JMLR 2012): the same cosine between `K_c = HKH` and
//! `(YYᵀ)_c = HYYᵀH`, `H = I − 11ᵀ/n`.
//!
//! Targets `Y` are `[n]` (a vector `y`, giving `yyᵀ`) or `[n, c]` (e.g. one-hot labels,
//! giving `YYᵀ = Σ_c y_c y_cᵀ`). Both alignments lie in `[−1, 1]`; for a PSD kernel they
//! lie in `[0, 1]`. Neither needs `YYᵀ` in memory: `⟨K, YYᵀ⟩ = Σ_c y_cᵀ K y_c` and
//! `‖YYᵀ‖_F = ‖YᵀY‖_F`.

use crate::error::{AnalysisError, Result};
use crate::matrix::{Matrix, check_finite, check_square, frobenius_norm};

/// Raw and centred alignment of one kernel with one target.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Alignment {
    /// `⟨K, YYᵀ⟩_F / (‖K‖_F ‖YYᵀ‖_F)`.
    pub raw: f64,
    /// The same for `HKH` and `HYYᵀH`.
    pub centered: f64,
}

fn check_inputs(k: &Matrix<'_>, y: &Matrix<'_>) -> Result<()> {
    check_square("kernel", k)?;
    check_finite("kernel", k.data())?;
    check_finite("targets", y.data())?;
    if y.rows() != k.rows() {
        return Err(AnalysisError::SizeMismatch {
            what: "targets".into(),
            detail: format!(
                "{} rows, but the kernel is [{n}, {n}]",
                y.rows(),
                n = k.rows()
            ),
        });
    }
    if y.cols() == 0 {
        return Err(AnalysisError::Empty {
            what: "targets".into(),
        });
    }
    Ok(())
}

/// `⟨K, YYᵀ⟩_F / (‖K‖_F ‖YYᵀ‖_F)` for a square `k` and any `y` with as many rows;
/// values are pre-scaled so that the products neither overflow nor underflow.
fn cosine_with_targets(k: &Matrix<'_>, y: &Matrix<'_>) -> Result<f64> {
    let (n, c) = (k.rows(), y.cols());
    let nk = frobenius_norm(k.data());
    if nk == 0.0 {
        return Err(AnalysisError::ZeroNorm {
            what: "kernel".into(),
        });
    }
    let ys = y.data().iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if ys == 0.0 {
        return Err(AnalysisError::ZeroNorm {
            what: "targets YYᵀ".into(),
        });
    }
    let yv = |i: usize, a: usize| y.at(i, a) / ys;
    // ‖YYᵀ‖_F² = ‖YᵀY‖_F² (both are Σ_ab (y_aᵀ y_b)²).
    let mut g2 = 0.0;
    for a in 0..c {
        for b in 0..c {
            let g: f64 = (0..n).map(|i| yv(i, a) * yv(i, b)).sum();
            g2 += g * g;
        }
    }
    let nyy = g2.sqrt();
    if nyy == 0.0 {
        return Err(AnalysisError::ZeroNorm {
            what: "targets YYᵀ".into(),
        });
    }
    // ⟨K, YYᵀ⟩ = Σ_c y_cᵀ K y_c.
    let mut inner = 0.0;
    for a in 0..c {
        for i in 0..n {
            let row: f64 = (0..n).map(|j| k.at(i, j) / nk * yv(j, a)).sum();
            inner += yv(i, a) * row;
        }
    }
    Ok((inner / nyy).clamp(-1.0, 1.0))
}

/// `HKH`: `K_ij − mean_i· − mean_·j + mean_··`, row-major.
pub fn center_kernel(k: &[f64], n: usize) -> Result<Vec<f64>> {
    let m = Matrix::square("kernel", k, n)?;
    check_square("kernel", &m)?;
    let row: Vec<f64> = (0..n)
        .map(|i| (0..n).map(|j| m.at(i, j)).sum::<f64>() / n as f64)
        .collect();
    let col: Vec<f64> = (0..n)
        .map(|j| (0..n).map(|i| m.at(i, j)).sum::<f64>() / n as f64)
        .collect();
    let all = row.iter().sum::<f64>() / n as f64;
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = m.at(i, j) - row[i] - col[j] + all;
        }
    }
    Ok(out)
}

/// `HY`: each target column minus its mean, row-major `[n, c]`.
fn center_columns(y: &Matrix<'_>) -> Vec<f64> {
    let (n, c) = (y.rows(), y.cols());
    let mean: Vec<f64> = (0..c)
        .map(|a| (0..n).map(|i| y.at(i, a)).sum::<f64>() / n as f64)
        .collect();
    let mut out = vec![0.0; n * c];
    for i in 0..n {
        for a in 0..c {
            out[i * c + a] = y.at(i, a) - mean[a];
        }
    }
    out
}

/// Raw kernel-target alignment `⟨K, YYᵀ⟩_F / (‖K‖_F ‖YYᵀ‖_F)`.
///
/// # Shapes
/// `k: [n, n]` row-major; `y: [n, c]` row-major (`c = 1` for a vector).
///
/// # Errors
/// Shape mismatch, non-finite values, a zero kernel or zero targets
/// ([`AnalysisError::ZeroNorm`]).
pub fn kernel_target_alignment(k: &[f64], n: usize, y: &[f64], c: usize) -> Result<f64> {
    let km = Matrix::square("kernel", k, n)?;
    let ym = Matrix::new("targets", y, n, c)?;
    check_inputs(&km, &ym)?;
    cosine_with_targets(&km, &ym)
}

/// Centred kernel-target alignment (Cortes et al. 2012): the alignment of `HKH` with
/// `HYYᵀH = (HY)(HY)ᵀ`, `H = I − 11ᵀ/n`.
///
/// # Shapes
/// `k: [n, n]` row-major; `y: [n, c]` row-major (`c = 1` for a vector).
///
/// # Errors
/// As [`kernel_target_alignment`]; in particular [`AnalysisError::ZeroNorm`] when `HKH = 0`
/// (a constant kernel) or `HY = 0` (every sample has the same target).
pub fn centered_kernel_target_alignment(k: &[f64], n: usize, y: &[f64], c: usize) -> Result<f64> {
    let km = Matrix::square("kernel", k, n)?;
    let ym = Matrix::new("targets", y, n, c)?;
    check_inputs(&km, &ym)?;
    let kc = center_kernel(k, n)?;
    let yc = center_columns(&ym);
    cosine_with_targets(
        &Matrix::square("centred kernel", &kc, n)?,
        &Matrix::new("centred targets", &yc, n, c)?,
    )
    .map_err(|e| match e {
        AnalysisError::ZeroNorm { what } => AnalysisError::ZeroNorm {
            what: format!("centred {what}"),
        },
        e => e,
    })
}

/// Both alignments at once.
///
/// # Shapes
/// `k: [n, n]`, `y: [n, c]`, row-major.
pub fn alignment(k: &[f64], n: usize, y: &[f64], c: usize) -> Result<Alignment> {
    Ok(Alignment {
        raw: kernel_target_alignment(k, n, y, c)?,
        centered: centered_kernel_target_alignment(k, n, y, c)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn outer(y: &[f64], c: usize) -> Vec<f64> {
        let n = y.len() / c;
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                k[i * n + j] = (0..c).map(|a| y[i * c + a] * y[j * c + a]).sum();
            }
        }
        k
    }

    fn identity(n: usize) -> Vec<f64> {
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            k[i * n + i] = 1.0;
        }
        k
    }

    #[test]
    fn target_kernel_is_perfectly_aligned() {
        let y = [1.0, -2.0, 0.5, 3.0, -1.0];
        let a = alignment(&outer(&y, 1), 5, &y, 1).unwrap();
        assert!((a.raw - 1.0).abs() < 1e-15, "{}", a.raw);
        assert!((a.centered - 1.0).abs() < 1e-15, "{}", a.centered);
        // Scaled kernel, same alignment; negated kernel, −1.
        let k: Vec<f64> = outer(&y, 1).iter().map(|v| -3.5 * v).collect();
        assert!((kernel_target_alignment(&k, 5, &y, 1).unwrap() + 1.0).abs() < 1e-15);
        // One-hot targets.
        let y1 = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
        let a = alignment(&outer(&y1, 2), 4, &y1, 2).unwrap();
        assert!((a.raw - 1.0).abs() < 1e-15);
        assert!((a.centered - 1.0).abs() < 1e-15);
    }

    #[test]
    fn identity_with_centred_target() {
        // ⟨I, yyᵀ⟩ = ‖y‖², ‖I‖_F = √n, ‖yyᵀ‖_F = ‖y‖²  ⇒  raw = 1/√n.
        // With Σy = 0: HIH = H, ⟨H, yyᵀ⟩ = yᵀHy = ‖y‖², ‖H‖_F = √(n−1)  ⇒  centred = 1/√(n−1).
        let y = [1.0, -2.0, 0.5, 3.0, -2.5];
        assert_eq!(y.iter().sum::<f64>(), 0.0);
        let a = alignment(&identity(5), 5, &y, 1).unwrap();
        assert!((a.raw - 1.0 / 5f64.sqrt()).abs() < 1e-15, "{}", a.raw);
        assert!((a.centered - 0.5).abs() < 1e-15, "{}", a.centered);
    }

    #[test]
    fn one_hot_balanced_classes_with_identity() {
        // y one-hot, 2 classes of 3: YYᵀ is block-diagonal of ones, ⟨I, YYᵀ⟩ = n = 6,
        // ‖YYᵀ‖_F = √(2·9) = √18, ‖I‖_F = √6  ⇒  raw = 6/√108 = 1/√3.
        // Centred: HY has ±1/2 entries; ⟨H, HYYᵀH⟩ = tr(HYYᵀ) = ‖HY‖² = 6·(1/4 + 1/4) = 3;
        // (HY)(HY)ᵀ has entries ±1/2, ‖·‖_F = √(36/4) = 3; ‖H‖_F = √5  ⇒  centred = 1/√5.
        let y = [1., 0., 1., 0., 1., 0., 0., 1., 0., 1., 0., 1.];
        let a = alignment(&identity(6), 6, &y, 2).unwrap();
        assert!((a.raw - 1.0 / 3f64.sqrt()).abs() < 1e-15, "{}", a.raw);
        assert!(
            (a.centered - 1.0 / 5f64.sqrt()).abs() < 1e-15,
            "{}",
            a.centered
        );
    }

    #[test]
    fn centering_matches_projector() {
        let k = [4.0, 1.0, 2.0, 1.0, 3.0, 0.5, 2.0, 0.5, 5.0];
        let kc = center_kernel(&k, 3).unwrap();
        // H K H with H = I − 11ᵀ/3, written out.
        let h = |i: usize, j: usize| f64::from(u8::from(i == j)) - 1.0 / 3.0;
        for i in 0..3 {
            for j in 0..3 {
                let mut v = 0.0;
                for a in 0..3 {
                    for b in 0..3 {
                        v += h(i, a) * k[a * 3 + b] * h(b, j);
                    }
                }
                assert!((v - kc[i * 3 + j]).abs() < 1e-14);
            }
        }
    }

    #[test]
    fn errors_on_bad_data() {
        let k = identity(3);
        assert!(matches!(
            kernel_target_alignment(&k, 3, &[1.0, 2.0], 1),
            Err(AnalysisError::SizeMismatch { .. })
        ));
        assert!(matches!(
            kernel_target_alignment(&k, 3, &[1.0, f64::NAN, 0.0], 1),
            Err(AnalysisError::NonFinite { .. })
        ));
        assert!(matches!(
            kernel_target_alignment(&[0.0; 9], 3, &[1.0, 2.0, 0.0], 1),
            Err(AnalysisError::ZeroNorm { .. })
        ));
        assert!(matches!(
            kernel_target_alignment(&k, 3, &[0.0; 3], 1),
            Err(AnalysisError::ZeroNorm { .. })
        ));
        // Constant targets: HY = 0.
        assert!(matches!(
            centered_kernel_target_alignment(&k, 3, &[2.0; 3], 1),
            Err(AnalysisError::ZeroNorm { .. })
        ));
        assert!(matches!(
            kernel_target_alignment(&[1.0; 6], 2, &[1.0; 3], 1),
            Err(AnalysisError::SizeMismatch { .. })
        ));
    }

    proptest! {
        #[test]
        fn alignment_is_a_cosine(
            k in proptest::collection::vec(-5.0f64..5.0, 16),
            y in proptest::collection::vec(-3.0f64..3.0, 8),
        ) {
            // Any (not necessarily PSD) square matrix: the value is a cosine, in [−1, 1].
            if let Ok(a) = alignment(&k, 4, &y, 2) {
                prop_assert!((-1.0..=1.0).contains(&a.raw));
                prop_assert!((-1.0..=1.0).contains(&a.centered));
            }
            // A Gram matrix K = BBᵀ is PSD, so its alignment with YYᵀ is ≥ 0.
            let mut g = vec![0.0; 16];
            for i in 0..4 {
                for j in 0..4 {
                    g[i * 4 + j] = (0..4).map(|l| k[i * 4 + l] * k[j * 4 + l]).sum();
                }
            }
            if let Ok(a) = alignment(&g, 4, &y, 2) {
                prop_assert!((-1e-12..=1.0).contains(&a.raw));
                prop_assert!((-1e-12..=1.0).contains(&a.centered));
            }
        }
    }
}
