//! Kernel distance and kernel velocity.
//!
//! Kernel distance (Fort et al., *Deep learning versus kernel learning: an empirical study
//! of loss landscape geometry and the time evolution of the Neural Tangent Kernel*,
//! NeurIPS 2020):
//!
//! `d(K₁, K₂) = 1 − ⟨K₁, K₂⟩_F / (‖K₁‖_F ‖K₂‖_F)`
//!
//! one minus the cosine between the kernels as vectors: 0 for `K₂ = cK₁` (`c > 0`), 1 for
//! kernels with disjoint supports, 2 for `K₂ = −cK₁`; always in `[0, 2]`, symmetric, and
//! blind to the overall scale. Kernel velocity is the distance between successive
//! checkpoints divided by the time step between them.

use crate::error::{AnalysisError, Result};
use crate::matrix::{check_finite, cosine};

fn check_pair(k1: &[f64], k2: &[f64]) -> Result<()> {
    if k1.is_empty() {
        return Err(AnalysisError::Empty {
            what: "kernel 1".into(),
        });
    }
    if k1.len() != k2.len() {
        return Err(AnalysisError::SizeMismatch {
            what: "kernel 2".into(),
            detail: format!("{} values, but kernel 1 has {}", k2.len(), k1.len()),
        });
    }
    check_finite("kernel 1", k1)?;
    check_finite("kernel 2", k2)
}

/// `1 − ⟨K₁, K₂⟩_F / (‖K₁‖_F ‖K₂‖_F)` of two kernels of the same shape (any shape, square
/// or not: the kernels are compared as flat vectors).
///
/// # Shapes
/// `k1`, `k2`: the same number of values (e.g. both `[n, n]` row-major).
///
/// # Errors
/// Different lengths, empty, non-finite, or a zero kernel ([`AnalysisError::ZeroNorm`]).
pub fn kernel_distance(k1: &[f64], k2: &[f64]) -> Result<f64> {
    check_pair(k1, k2)?;
    Ok(1.0 - cosine("kernel 1", k1, "kernel 2", k2)?)
}

/// Kernel velocity along a sequence of checkpoints `K_0, K_1, …` taken at `times`
/// (`None`: unit steps, i.e. per epoch/checkpoint):
/// `v_i = d(K_i, K_{i+1}) / (t_{i+1} − t_i)`, `i = 0 … T−2`.
///
/// # Shapes
/// `kernels`: `T ≥ 2` slices of one length; `times`: `[T]`, strictly increasing → `[T − 1]`.
///
/// # Errors
/// Fewer than 2 kernels, mismatched lengths, non-increasing or non-finite times, and the
/// errors of [`kernel_distance`].
pub fn kernel_velocity(kernels: &[&[f64]], times: Option<&[f64]>) -> Result<Vec<f64>> {
    if kernels.len() < 2 {
        return Err(AnalysisError::InvalidParameter {
            name: "kernels".into(),
            detail: format!("need at least 2 checkpoints, got {}", kernels.len()),
        });
    }
    if let Some(t) = times {
        if t.len() != kernels.len() {
            return Err(AnalysisError::SizeMismatch {
                what: "times".into(),
                detail: format!("{} times for {} kernels", t.len(), kernels.len()),
            });
        }
        check_finite("times", t)?;
        if let Some(i) = t.windows(2).position(|w| w[1] <= w[0]) {
            return Err(AnalysisError::InvalidParameter {
                name: "times".into(),
                detail: format!(
                    "must increase strictly, but t[{}] = {} ≥ t[{}] = {}",
                    i,
                    t[i],
                    i + 1,
                    t[i + 1]
                ),
            });
        }
    }
    (0..kernels.len() - 1)
        .map(|i| {
            let dt = times.map_or(1.0, |t| t[i + 1] - t[i]);
            kernel_distance(kernels[i], kernels[i + 1])
                .map(|d| d / dt)
                .map_err(|e| match e {
                    AnalysisError::SizeMismatch { detail, .. } => AnalysisError::SizeMismatch {
                        what: format!("kernel {}", i + 1),
                        detail,
                    },
                    AnalysisError::NonFinite { index, value, .. } => AnalysisError::NonFinite {
                        what: format!("kernel {} or {}", i, i + 1),
                        index,
                        value,
                    },
                    e => e,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scaled_kernel_has_zero_distance() {
        let k = [2.0, 0.5, -0.3, 0.5, 1.0, 0.2, -0.3, 0.2, 4.0];
        let ck: Vec<f64> = k.iter().map(|v| 7.25 * v).collect();
        assert!(kernel_distance(&k, &ck).unwrap().abs() < 1e-15);
        let nk: Vec<f64> = k.iter().map(|v| -0.5 * v).collect();
        assert!((kernel_distance(&k, &nk).unwrap() - 2.0).abs() < 1e-15);
    }

    #[test]
    fn disjoint_supports_have_distance_one() {
        let k1 = [1.0, 0.0, 0.0, 0.0];
        let k2 = [0.0, 0.0, 0.0, 3.0];
        assert_eq!(kernel_distance(&k1, &k2).unwrap(), 1.0);
    }

    #[test]
    fn closed_form_between_identity_and_ones() {
        // ⟨I, 11ᵀ⟩ = n, ‖I‖ = √n, ‖11ᵀ‖ = n  ⇒  d = 1 − 1/√n.
        let n = 4;
        let mut id = vec![0.0; n * n];
        for i in 0..n {
            id[i * n + i] = 1.0;
        }
        let ones = vec![1.0; n * n];
        assert!((kernel_distance(&id, &ones).unwrap() - 0.5).abs() < 1e-15);
    }

    #[test]
    fn velocity_divides_by_step() {
        let k0 = [1.0, 0.0, 0.0, 0.0];
        let k1 = [0.0, 0.0, 0.0, 1.0];
        let k2 = [0.0, 0.0, 0.0, 5.0];
        let v = kernel_velocity(&[&k0, &k1, &k2], Some(&[0.0, 0.5, 2.0])).unwrap();
        assert_eq!(v.len(), 2);
        assert!((v[0] - 2.0).abs() < 1e-15);
        assert!(v[1].abs() < 1e-15);
        let v = kernel_velocity(&[&k0, &k1], None).unwrap();
        assert!((v[0] - 1.0).abs() < 1e-15);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            kernel_distance(&[1.0, 2.0], &[1.0]),
            Err(AnalysisError::SizeMismatch { .. })
        ));
        assert!(matches!(
            kernel_distance(&[0.0, 0.0], &[1.0, 1.0]),
            Err(AnalysisError::ZeroNorm { .. })
        ));
        assert!(matches!(
            kernel_distance(&[1.0, f64::NAN], &[1.0, 1.0]),
            Err(AnalysisError::NonFinite { .. })
        ));
        assert!(matches!(
            kernel_distance(&[], &[]),
            Err(AnalysisError::Empty { .. })
        ));
        let k = [1.0, 2.0];
        assert!(matches!(
            kernel_velocity(&[&k], None),
            Err(AnalysisError::InvalidParameter { .. })
        ));
        assert!(matches!(
            kernel_velocity(&[&k, &k], Some(&[1.0, 1.0])),
            Err(AnalysisError::InvalidParameter { .. })
        ));
        assert!(matches!(
            kernel_velocity(&[&k, &k], Some(&[1.0])),
            Err(AnalysisError::SizeMismatch { .. })
        ));
        assert!(matches!(
            kernel_velocity(&[&k, &k, &[1.0]], None),
            Err(AnalysisError::SizeMismatch { .. })
        ));
    }

    proptest! {
        #[test]
        fn distance_is_symmetric_and_bounded(
            a in proptest::collection::vec(-1e3f64..1e3, 9),
            b in proptest::collection::vec(-1e3f64..1e3, 9),
        ) {
            if let (Ok(d1), Ok(d2)) = (kernel_distance(&a, &b), kernel_distance(&b, &a)) {
                prop_assert!((0.0..=2.0).contains(&d1));
                prop_assert!((d1 - d2).abs() <= 1e-15);
                prop_assert!(kernel_distance(&a, &a).unwrap().abs() < 1e-14);
            }
        }
    }
}
