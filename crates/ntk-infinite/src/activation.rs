//! Kernel rules of elementwise nonlinearities `φ`.
//!
//! If `(u, v)` is a centred Gaussian pair with `Var u = q₁`, `Var v = q₂`,
//! `Cov(u, v) = c` (the pre-activation NNGP entry and the variances of the two positions),
//! the layer maps
//!
//! - NNGP: `c ↦ E[φ(u) φ(v)]`,
//! - NTK: `Θ ↦ Θ · E[φ'(u) φ'(v)]` (the *derivative kernel*).
//!
//! Closed forms, exactly as neural-tangents `stax` v0.6.5 writes them
//! (`neural_tangents/_src/stax/elementwise.py`):
//!
//! - **relu** (`ABRelu(0, 1)`; Cho & Saul 2009, arc-cosine kernels): with
//!   `s = √(q₁q₂ − c²)` and the angle `θ = atan2(s, c) ∈ [0, π]`,
//!   `E[φ'φ'] = ½ − θ / (2π)` and `E[φφ] = s / (2π) + c · E[φ'φ']`
//!   (= `½√(q₁q₂) κ₁(ρ)`-style: `√(q₁q₂)(sin θ + (π − θ) cos θ) / (2π)`).
//! - **leaky relu** (`ABRelu(a, b)`: `φ(x) = a·min(x, 0) + b·max(x, 0)`, `LeakyRelu(α)` =
//!   `ABRelu(α, 1)`): with `s`, `θ` as for relu, `E[φ'φ'] = (a² + b²)/2 − (a − b)² θ / (2π)`
//!   and `E[φφ] = (a − b)² s / (2π) + c · E[φ'φ']`.
//! - **erf** (`Erf(a=1, b=1, c=0)`; Williams 1997): with `s = √((1 + 2q₁)(1 + 2q₂) − 4c²)`,
//!   `E[φφ] = (2/π) atan2(2c, s)` and `E[φ'φ'] = 4 / (π s)`.
//! - **gelu** (exact, `x Φ(x)`; Tsuchida et al. 2020, arXiv 2002.08517): with
//!   `δ² = (q₁ + 1)(q₂ + 1) − c²`, `α = atan2(c, δ)`,
//!   `E[φφ] = c/4 + ((c² + q₁q₂ δ²) / ((q₁ + 1)(q₂ + 1) δ) + c α) / (2π)` and
//!   `E[φ'φ'] = ¼ + α / (2π) + (1/δ² + (1 − q₁q₂) / ((q₁ + 1)(q₂ + 1)) + 1) · c / (2π δ)`.
//! - **tanh**: no closed form. Like neural-tangents' `ElementwiseNumerical(tanh, deg)` (the
//!   oracle uses `deg = 64`), a 2-D Gauss–Hermite rule over `u = √(2q₁) x`,
//!   `v = (c / √(q₁/2)) x + √(2(q₂ − c²/q₁)) y`:
//!   `E[φ(u)φ(v)] ≈ (1/π) Σ_{i,j} w_i w_j φ(u_i) φ(v_ij)`, and the same with `φ' = 1 − tanh²`.
//!   This is a quadrature, not the exact integral: it matches the oracle because it is the
//!   same rule. Its own error against the true integral is NOT small: 1e-7 up to 4e-4
//!   relative at variances of a few units, largest for the derivative kernel at |ρ| near 1
//!   (tanh's poles at ±iπ/2 limit Gauss–Hermite convergence).

use crate::covariance::PairBlock;
use crate::quadrature::GaussHermite;
use std::f64::consts::PI;

/// The kernel rule of one nonlinearity.
#[derive(Debug, Clone, PartialEq)]
pub enum ActivationKernel {
    Relu,
    /// `a·min(x, 0) + b·max(x, 0)` (leaky relu: `a` = the negative slope, `b = 1`).
    ABRelu {
        a: f64,
        b: f64,
    },
    /// `a·erf(b·x) + c` (stax's `Erf(a, b, c)`; `Sigmoid_like` is `a = c = ½`,
    /// `b = 1/2.4020563531719796`): the erf rule on the kernel scaled by `b²`, then
    /// `a² K + c²` (NNGP) and `a² b²` on the derivative term.
    Erf {
        a: f64,
        b: f64,
        c: f64,
    },
    Gelu,
    /// tanh by Gauss–Hermite quadrature with the given rule.
    Tanh(GaussHermite),
}

impl ActivationKernel {
    /// Plain `erf(x)`.
    pub const ERF: ActivationKernel = ActivationKernel::Erf {
        a: 1.0,
        b: 1.0,
        c: 0.0,
    };

    /// `(E[φ(u) φ(v)], E[φ'(u) φ'(v)])` for covariance `c` and variances `q1`, `q2`.
    pub fn entry(&self, c: f64, q1: f64, q2: f64) -> (f64, f64) {
        match self {
            ActivationKernel::Relu => relu(c, q1, q2),
            ActivationKernel::ABRelu { a, b } => ab_relu(*a, *b, c, q1, q2),
            ActivationKernel::Erf { a, b, c: shift } => {
                let b2 = b * b;
                let (e, d) = erf(b2 * c, b2 * q1, b2 * q2);
                (a * a * e + shift * shift, a * a * b2 * d)
            }
            ActivationKernel::Gelu => gelu(c, q1, q2),
            ActivationKernel::Tanh(rule) => tanh_quadrature(rule, c, q1, q2),
        }
    }

    /// Applies the rule to every entry of a pair block in place.
    ///
    /// # Shapes
    /// `var_x`: variances of the first sample at each position, `[layout.pixels()]`;
    /// `var_y`: the same for the second sample.
    pub fn apply(&self, block: &mut PairBlock, var_x: &[f64], var_y: &[f64]) {
        let PairBlock { layout, nngp, ntk } = block;
        match ntk {
            Some(ntk) => layout.for_each_position_pair(|k, p, q| {
                let (s, d) = self.entry(nngp[k], var_x[p], var_y[q]);
                nngp[k] = s;
                ntk[k] *= d;
            }),
            None => layout.for_each_position_pair(|k, p, q| {
                nngp[k] = self.entry(nngp[k], var_x[p], var_y[q]).0;
            }),
        }
    }
}

/// `sqrt(max(x, 0))`, as neural-tangents' `_sqrt`: rounding may make `q₁q₂ − c²`
/// slightly negative when the two samples coincide.
fn sqrt_clamped(x: f64) -> f64 {
    x.max(0.0).sqrt()
}

fn relu(c: f64, q1: f64, q2: f64) -> (f64, f64) {
    let s = sqrt_clamped(q1 * q2 - c * c);
    let angle = if s == 0.0 && c == 0.0 {
        PI / 2.0
    } else {
        s.atan2(c)
    };
    let derivative = 0.5 - angle / (2.0 * PI);
    (s / (2.0 * PI) + derivative * c, derivative)
}

fn ab_relu(a: f64, b: f64, c: f64, q1: f64, q2: f64) -> (f64, f64) {
    let s = sqrt_clamped(q1 * q2 - c * c);
    let angle = if s == 0.0 && c == 0.0 {
        PI / 2.0
    } else {
        s.atan2(c)
    };
    let factor = (a - b) * (a - b) / (2.0 * PI);
    let derivative = (a * a + b * b) / 2.0 - factor * angle;
    (factor * s + derivative * c, derivative)
}

fn erf(c: f64, q1: f64, q2: f64) -> (f64, f64) {
    let s = sqrt_clamped((1.0 + 2.0 * q1) * (1.0 + 2.0 * q2) - 4.0 * c * c);
    let factor = 2.0 / PI;
    (factor * (2.0 * c).atan2(s), 2.0 * factor / s)
}

fn gelu(c: f64, q1: f64, q2: f64) -> (f64, f64) {
    let prod = q1 * q2;
    let prod_plus_1 = (q1 + 1.0) * (q2 + 1.0);
    let delta_squared = prod_plus_1 - c * c;
    let delta = sqrt_clamped(delta_squared);
    let angle = c.atan2(delta);
    let mut nngp = (c * c + prod * delta_squared) / (prod_plus_1 * delta);
    nngp += c * angle;
    nngp /= 2.0 * PI;
    nngp += 0.25 * c;
    let second = 0.25 + angle / (2.0 * PI);
    let first = (1.0 / delta_squared + (1.0 - prod) / prod_plus_1 + 1.0) * c / delta / (2.0 * PI);
    (nngp, first + second)
}

fn tanh_quadrature(rule: &GaussHermite, c: f64, q1: f64, q2: f64) -> (f64, f64) {
    let xs = &rule.nodes;
    let ws = &rule.weights;
    // u = a x, v = b x + e y with x, y standard normal up to the √2 of the e^{-x²} weight.
    let a = (2.0 * q1).max(0.0).sqrt();
    let b = c / (q1 / 2.0).max(1e-30).sqrt();
    // q1 = 0 forces c = 0 (Cauchy–Schwarz); neural-tangents would give 0/0 = NaN there.
    let explained = if q1 > 0.0 { c * c / q1 } else { 0.0 };
    let e = sqrt_clamped(2.0 * (q2 - explained));
    let mut nngp = 0.0;
    let mut derivative = 0.0;
    for (x, wx) in xs.iter().zip(ws) {
        let fu = (a * x).tanh();
        let dfu = 1.0 - fu * fu;
        let base = b * x;
        let mut row_f = 0.0;
        let mut row_df = 0.0;
        for (y, wy) in xs.iter().zip(ws) {
            let fv = (base + e * y).tanh();
            row_f += wy * fv;
            row_df += wy * (1.0 - fv * fv);
        }
        nngp += wx * fu * row_f;
        derivative += wx * dfu * row_df;
    }
    (nngp / PI, derivative / PI)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf to ~1e-15 (Taylor series near 0, continued fraction for erfc beyond).
    fn erf_ref(x: f64) -> f64 {
        let ax = x.abs();
        let v = if ax < 2.5 {
            let mut term = ax;
            let mut sum = ax;
            let x2 = ax * ax;
            for n in 1..200 {
                term *= -x2 / n as f64;
                let t = term / (2 * n + 1) as f64;
                sum += t;
                if t.abs() < 1e-18 * sum.abs() {
                    break;
                }
            }
            sum * 2.0 / PI.sqrt()
        } else {
            // erfc(x) = exp(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
            let mut f = 0.0;
            for k in (1..120).rev() {
                f = (k as f64 / 2.0) / (ax + f);
            }
            1.0 - (-ax * ax).exp() / PI.sqrt() / (ax + f)
        };
        v.copysign(x)
    }

    fn normal_cdf(x: f64) -> f64 {
        0.5 * (1.0 + erf_ref(x / 2f64.sqrt()))
    }

    /// E[f(u) g(v)] by a dense Gauss–Hermite rule (Cholesky of the 2x2 covariance).
    fn expect_smooth(
        f: impl Fn(f64) -> f64,
        g: impl Fn(f64) -> f64,
        c: f64,
        q1: f64,
        q2: f64,
    ) -> f64 {
        let r = GaussHermite::new(160).unwrap();
        let l11 = q1.sqrt();
        let l21 = c / l11;
        let l22 = (q2 - l21 * l21).sqrt();
        let mut acc = 0.0;
        for (x, wx) in r.nodes.iter().zip(&r.weights) {
            for (y, wy) in r.nodes.iter().zip(&r.weights) {
                let z1 = x * 2f64.sqrt();
                let z2 = y * 2f64.sqrt();
                acc += wx * wy * f(l11 * z1) * g(l21 * z1 + l22 * z2);
            }
        }
        acc / PI
    }

    /// E[f(u) g(v)] in polar coordinates for positively homogeneous f, g of degree k
    /// (relu: 1, step: 0): E = (1/2π) ∫ f(a(φ)) g(b(φ)) dφ · ∫ r^{2k+1} e^{-r²/2} dr.
    fn expect_homogeneous(
        f: impl Fn(f64) -> f64,
        g: impl Fn(f64) -> f64,
        degree: i32,
        c: f64,
        q1: f64,
        q2: f64,
    ) -> f64 {
        let l11 = q1.sqrt();
        let l21 = c / l11;
        let l22 = (q2 - l21 * l21).sqrt();
        let n = 400_000;
        let h = 2.0 * PI / n as f64;
        let mut acc = 0.0;
        for i in 0..n {
            let phi = (i as f64 + 0.5) * h;
            let (s, co) = phi.sin_cos();
            acc += f(l11 * co) * g(l21 * co + l22 * s);
        }
        let radial = if degree == 1 { 2.0 } else { 1.0 };
        acc * h / (2.0 * PI) * radial
    }

    const PAIRS: [(f64, f64, f64); 5] = [
        (0.3, 1.0, 0.8),
        (-0.5, 0.9, 1.7),
        (1.2, 2.0, 1.5),
        (0.0, 0.4, 3.0),
        (-2.9, 3.1, 2.8),
    ];

    #[test]
    fn relu_arc_cosine_matches_polar_integration() {
        let relu_f = |x: f64| x.max(0.0);
        let step = |x: f64| if x > 0.0 { 1.0 } else { 0.0 };
        for (c, q1, q2) in PAIRS {
            let (s, d) = relu(c, q1, q2);
            let s_ref = expect_homogeneous(relu_f, relu_f, 1, c, q1, q2);
            let d_ref = expect_homogeneous(step, step, 0, c, q1, q2);
            assert!((s - s_ref).abs() < 1e-8, "{c} {q1} {q2}: {s} vs {s_ref}");
            assert!((d - d_ref).abs() < 1e-5, "{c} {q1} {q2}: {d} vs {d_ref}");
        }
        // Same sample: E[relu(u)²] = q/2, E[step²] = 1/2, exactly.
        assert_eq!(relu(1.7, 1.7, 1.7), (0.85, 0.5));
        // Orthogonal with zero variance: the fill value π/2 gives ¼ for the derivative.
        assert_eq!(relu(0.0, 0.0, 1.0), (0.0, 0.25));
    }

    #[test]
    fn leaky_relu_matches_polar_integration() {
        for (a, b) in [(0.1, 1.0), (-0.5, 2.0)] {
            let f = move |x: f64| if x > 0.0 { b * x } else { a * x };
            let df = move |x: f64| if x > 0.0 { b } else { a };
            for (c, q1, q2) in PAIRS {
                let (s, d) = ab_relu(a, b, c, q1, q2);
                let s_ref = expect_homogeneous(f, f, 1, c, q1, q2);
                let d_ref = expect_homogeneous(df, df, 0, c, q1, q2);
                assert!((s - s_ref).abs() < 1e-8, "{a} {b} {c}: {s} vs {s_ref}");
                assert!((d - d_ref).abs() < 1e-5, "{a} {b} {c}: {d} vs {d_ref}");
            }
        }
        // ABRelu(0, 1) is relu.
        for (c, q1, q2) in PAIRS {
            let (s, d) = ab_relu(0.0, 1.0, c, q1, q2);
            let (s0, d0) = relu(c, q1, q2);
            assert!((s - s0).abs() < 1e-15 && (d - d0).abs() < 1e-15);
        }
    }

    #[test]
    fn erf_closed_form_matches_quadrature() {
        let df = |x: f64| 2.0 / PI.sqrt() * (-x * x).exp();
        for (c, q1, q2) in PAIRS {
            let (s, d) = erf(c, q1, q2);
            let s_ref = expect_smooth(erf_ref, erf_ref, c, q1, q2);
            let d_ref = expect_smooth(df, df, c, q1, q2);
            // The reference quadrature itself is good to ~1e-12 (less at |ρ| near 1).
            assert!((s - s_ref).abs() < 1e-10, "{c} {q1} {q2}: {s} vs {s_ref}");
            assert!((d - d_ref).abs() < 1e-10, "{c} {q1} {q2}: {d} vs {d_ref}");
        }
    }

    #[test]
    fn gelu_closed_form_matches_quadrature() {
        let f = |x: f64| x * normal_cdf(x);
        let df = |x: f64| normal_cdf(x) + x * (-x * x / 2.0).exp() / (2.0 * PI).sqrt();
        for (c, q1, q2) in PAIRS {
            let (s, d) = gelu(c, q1, q2);
            let s_ref = expect_smooth(f, f, c, q1, q2);
            let d_ref = expect_smooth(df, df, c, q1, q2);
            assert!((s - s_ref).abs() < 1e-10, "{c} {q1} {q2}: {s} vs {s_ref}");
            assert!((d - d_ref).abs() < 1e-10, "{c} {q1} {q2}: {d} vs {d_ref}");
        }
    }

    #[test]
    fn tanh_quadrature_converges_to_the_integral() {
        // tanh has poles at ±iπ/2, so Gauss–Hermite converges only geometrically, slower
        // for larger variances and |ρ| near 1: the oracle's 64-point rule is 1e-7 .. 4e-4
        // relative off the true integral here (the derivative kernel, a sharper integrand,
        // is the worse one);
        // the 160-point reference is far closer. Agreement with the oracle's own rule is
        // what tests/infinite_oracle.rs checks (1e-10).
        let rule64 = GaussHermite::new(64).unwrap();
        let rule128 = GaussHermite::new(128).unwrap();
        let df = |x: f64| 1.0 - x.tanh() * x.tanh();
        for (c, q1, q2) in PAIRS {
            let (s, d) = tanh_quadrature(&rule64, c, q1, q2);
            let (s2, d2) = tanh_quadrature(&rule128, c, q1, q2);
            let s_ref = expect_smooth(f64::tanh, f64::tanh, c, q1, q2);
            let d_ref = expect_smooth(df, df, c, q1, q2);
            assert!(
                (s - s_ref).abs() < 1e-4 * s_ref.abs() + 1e-12,
                "{c} {q1} {q2}: {s} vs {s_ref}"
            );
            assert!(
                (d - d_ref).abs() < 1e-3 * d_ref,
                "{c} {q1} {q2}: {d} vs {d_ref}"
            );
            assert!((s2 - s_ref).abs() < 0.1 * (s - s_ref).abs().max(1e-12));
            assert!((d2 - d_ref).abs() < 0.1 * (d - d_ref).abs().max(1e-12));
        }
    }

    #[test]
    fn kernels_are_symmetric_in_the_two_samples() {
        let rule = GaussHermite::new(64).unwrap();
        let all = [
            ActivationKernel::Relu,
            ActivationKernel::ERF,
            ActivationKernel::Gelu,
            ActivationKernel::Tanh(rule),
        ];
        for k in &all {
            // The quadrature is symmetric only up to its own (tiny) error.
            let tol = if matches!(k, ActivationKernel::Tanh(_)) {
                1e-3
            } else {
                1e-14
            };
            for (c, q1, q2) in PAIRS {
                let (a, da) = k.entry(c, q1, q2);
                let (b, db) = k.entry(c, q2, q1);
                assert!((a - b).abs() <= tol * a.abs().max(1.0), "{k:?}");
                assert!((da - db).abs() <= tol * da.abs().max(1.0), "{k:?}");
            }
        }
    }
}
