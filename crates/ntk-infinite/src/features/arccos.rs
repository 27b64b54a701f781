//! Polynomial approximations of the normalised arc-cosine kernels of relu, with
//! non-negative coefficients (so that they are inner products of explicit features).
//!
//! For unit-variance Gaussians with correlation `ρ` (Cho & Saul 2009):
//!
//! - `E[relu(u) relu(v)] = ½ κ₁(ρ)`, `κ₁(ρ) = (√(1 − ρ²) + (π − arccos ρ) ρ) / π`;
//! - `E[step(u) step(v)] = ½ κ₀(ρ)`, `κ₀(ρ) = (π − arccos ρ) / π`;
//!
//! both `1` at `ρ = 1` and `0` at `ρ = −1`. Their Taylor series at 0 have non-negative
//! coefficients (with `t_k = C(2k, k) / 4^k`):
//!
//! - `κ₀(ρ) = ½ + (1/π) Σ_{k≥0} t_k / (2k + 1) · ρ^{2k+1}`,
//! - `κ₁(ρ) = 1/π + ρ/2 + (1/π) Σ_{k≥1} t_{k−1} / ((2k − 1) 2k) · ρ^{2k}`.
//!
//! [`relu_kernel_polynomial`] truncates them at a degree and moves the left-over mass
//! `κ(1) − P(1)` onto the highest kept odd (κ₀) or even (κ₁) power, so that the polynomial
//! stays exact at `ρ = ±1` (the diagonal of a kernel is exact). This is the polynomial
//! expansion NTKSketch sketches (Zandieh et al. 2021, arXiv 2104.00415, section 4); its
//! worst error over `[−1, 1]` at degree 15 is 0.028 for κ₀ and 3.5e-4 for κ₁ (near
//! `|ρ| = 1`, where κ₀ has a square-root singularity), and 2.1e-3 and 5e-5 for `|ρ| ≤ 0.8`.

use std::f64::consts::PI;

/// Which arc-cosine kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArcCosine {
    /// `κ₀`, of the step function (relu's derivative): odd powers and a constant.
    Order0,
    /// `κ₁`, of relu: even powers, a constant and `ρ/2`.
    Order1,
}

impl ArcCosine {
    /// The exact normalised kernel at correlation `rho ∈ [−1, 1]`.
    pub fn exact(self, rho: f64) -> f64 {
        let rho = rho.clamp(-1.0, 1.0);
        match self {
            ArcCosine::Order0 => (PI - rho.acos()) / PI,
            ArcCosine::Order1 => ((1.0 - rho * rho).max(0.0).sqrt() + (PI - rho.acos()) * rho) / PI,
        }
    }
}

/// Coefficients `c[0..=degree]` (`P(ρ) = Σ_j c_j ρ^j`, all `≥ 0`) of the truncated series
/// of `kernel`, exact at `ρ = ±1`. `degree` must be at least 1 (κ₀) or 2 (κ₁); smaller
/// values are raised to that.
pub fn relu_kernel_polynomial(kernel: ArcCosine, degree: usize) -> Vec<f64> {
    let degree = match kernel {
        ArcCosine::Order0 => degree.max(1),
        ArcCosine::Order1 => degree.max(2),
    };
    let mut c = vec![0.0; degree + 1];
    // t_k = C(2k, k) / 4^k by its recurrence t_k = t_{k−1} (2k − 1) / (2k).
    let t = |k: usize| -> f64 { (1..=k).fold(1.0, |t, i| t * (2 * i - 1) as f64 / (2 * i) as f64) };
    let top = match kernel {
        ArcCosine::Order0 => {
            c[0] = 0.5;
            for k in 0.. {
                let j = 2 * k + 1;
                if j > degree {
                    break;
                }
                c[j] = t(k) / (2 * k + 1) as f64 / PI;
            }
            if degree % 2 == 1 { degree } else { degree - 1 }
        }
        ArcCosine::Order1 => {
            c[0] = 1.0 / PI;
            c[1] = 0.5;
            for k in 1.. {
                let j = 2 * k;
                if j > degree {
                    break;
                }
                c[j] = t(k - 1) / ((2 * k - 1) * 2 * k) as f64 / PI;
            }
            if degree % 2 == 0 { degree } else { degree - 1 }
        }
    };
    let rest = 1.0 - c.iter().sum::<f64>();
    c[top] += rest.max(0.0);
    c
}

/// `Σ_j c_j ρ^j` (Horner).
pub fn evaluate(c: &[f64], rho: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &cj| acc * rho + cj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::ActivationKernel;

    #[test]
    fn exact_forms_agree_with_the_relu_kernel_rule() {
        for rho in [-1.0, -0.6, -0.1, 0.0, 0.3, 0.77, 1.0] {
            let (nngp, derivative) = ActivationKernel::Relu.entry(rho, 1.0, 1.0);
            assert!(
                (nngp - 0.5 * ArcCosine::Order1.exact(rho)).abs() < 1e-14,
                "{rho}"
            );
            assert!(
                (derivative - 0.5 * ArcCosine::Order0.exact(rho)).abs() < 1e-14,
                "{rho}"
            );
        }
    }

    #[test]
    fn polynomials_are_nonnegative_exact_at_the_ends_and_converge() {
        for kernel in [ArcCosine::Order0, ArcCosine::Order1] {
            let mut last = f64::INFINITY;
            for degree in [3, 7, 15, 31] {
                let c = relu_kernel_polynomial(kernel, degree);
                assert!(c.iter().all(|&v| v >= 0.0), "{c:?}");
                assert!((evaluate(&c, 1.0) - 1.0).abs() < 1e-14);
                assert!(evaluate(&c, -1.0).abs() < 1e-14);
                let err = (0..=2000)
                    .map(|i| -1.0 + i as f64 / 1000.0)
                    .map(|r| (evaluate(&c, r) - kernel.exact(r)).abs())
                    .fold(0.0, f64::max);
                assert!(err < last, "{kernel:?} degree {degree}: {err} after {last}");
                last = err;
            }
            // The series' first terms, written out by hand.
            let c = relu_kernel_polynomial(kernel, 40);
            match kernel {
                ArcCosine::Order0 => {
                    assert!((c[1] - 1.0 / PI).abs() < 1e-15);
                    assert!((c[3] - 1.0 / (6.0 * PI)).abs() < 1e-15);
                    assert!((c[5] - 3.0 / (40.0 * PI)).abs() < 1e-15);
                }
                ArcCosine::Order1 => {
                    assert!((c[2] - 1.0 / (2.0 * PI)).abs() < 1e-15);
                    assert!((c[4] - 1.0 / (24.0 * PI)).abs() < 1e-15);
                }
            }
        }
        // Small where data lives.
        let c0 = relu_kernel_polynomial(ArcCosine::Order0, 15);
        let worst = (0..=160)
            .map(|i| -0.8 + i as f64 / 100.0)
            .map(|r| (evaluate(&c0, r) - ArcCosine::Order0.exact(r)).abs())
            .fold(0.0, f64::max);
        assert!(worst < 2.5e-3, "{worst}");
    }
}
