//! Gauss–Hermite quadrature: `∫ e^{−x²} f(x) dx ≈ Σ_i w_i f(x_i)`, exact for polynomials
//! of degree `< 2n`.
//!
//! The nodes are the roots of the (physicists') Hermite polynomial `H_n`, found by Newton's
//! method on the orthonormal recurrence (numerically stable for large `n`; initial guesses
//! from Numerical Recipes §4.6, `gauher`). The weights come from the derivative at each
//! root, `w_i = 2 / (ψ_n'(x_i))²` in the orthonormal normalisation, then, like SciPy's
//! `scipy.special.roots_hermite` (what neural-tangents uses), they are rescaled to sum to
//! exactly `√π` and the rule is made exactly symmetric. Nodes are in increasing order.

/// Most points accepted (the Newton guesses are tuned for moderate `n`).
pub const MAX_DEGREE: usize = 400;

/// A Gauss–Hermite rule: `nodes[i]`, `weights[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussHermite {
    pub nodes: Vec<f64>,
    pub weights: Vec<f64>,
}

impl GaussHermite {
    /// The `n`-point rule; `None` unless `1 <= n <= MAX_DEGREE`.
    pub fn new(n: usize) -> Option<Self> {
        if n == 0 || n > MAX_DEGREE {
            return None;
        }
        let nf = n as f64;
        let m = n.div_ceil(2);
        // Largest roots first, as the guesses of gauher work from the outside in.
        let mut roots = vec![0.0f64; m];
        let mut derivs = vec![0.0f64; m];
        let mut z = 0.0f64;
        for i in 0..m {
            z = match i {
                0 => (2.0 * nf + 1.0).sqrt() - 1.85575 * (2.0 * nf + 1.0).powf(-1.0 / 6.0),
                1 => z - 1.14 * nf.powf(0.426) / z,
                2 => 1.86 * z - 0.86 * roots[0],
                3 => 1.91 * z - 0.91 * roots[1],
                _ => 2.0 * z - roots[i - 2],
            };
            let mut deriv = 0.0;
            for _ in 0..100 {
                let (p, d) = orthonormal_hermite(n, z);
                let step = p / d;
                z -= step;
                deriv = d;
                if step.abs() <= 1e-15 * z.abs().max(1.0) {
                    break;
                }
            }
            // One more evaluation at the converged root for the weight.
            let (_, d) = orthonormal_hermite(n, z);
            if d.is_finite() && d != 0.0 {
                deriv = d;
            }
            roots[i] = z;
            derivs[i] = deriv;
        }
        let mut nodes = vec![0.0; n];
        let mut weights = vec![0.0; n];
        for i in 0..m {
            let w = 2.0 / (derivs[i] * derivs[i]);
            // roots[i] is the i-th largest.
            nodes[n - 1 - i] = roots[i];
            nodes[i] = -roots[i];
            weights[n - 1 - i] = w;
            weights[i] = w;
        }
        if n % 2 == 1 {
            nodes[n / 2] = 0.0;
        }
        let total: f64 = weights.iter().sum();
        let scale = std::f64::consts::PI.sqrt() / total;
        weights.iter_mut().for_each(|w| *w *= scale);
        Some(GaussHermite { nodes, weights })
    }
}

/// The orthonormal Hermite function value `ψ_n(z)` (without the `e^{−z²/2}` factor, i.e.
/// `H_n` normalised so that `∫ e^{−x²} ψ_n² = 1`) and its derivative.
fn orthonormal_hermite(n: usize, z: f64) -> (f64, f64) {
    let mut p1 = std::f64::consts::PI.powf(-0.25);
    let mut p2 = 0.0;
    for j in 1..=n {
        let jf = j as f64;
        let p3 = p2;
        p2 = p1;
        p1 = z * (2.0 / jf).sqrt() * p2 - ((jf - 1.0) / jf).sqrt() * p3;
    }
    (p1, (2.0 * n as f64).sqrt() * p2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrates_gaussian_moments_exactly() {
        // ∫ e^{-x²} x^{2k} dx = Γ(k + 1/2) = (2k-1)!! √π / 2^k
        for n in [1usize, 2, 5, 20, 64, 101] {
            let r = GaussHermite::new(n).unwrap();
            let sqrt_pi = std::f64::consts::PI.sqrt();
            let mut want = sqrt_pi;
            for k in 0..n.min(12) {
                let got: f64 = r
                    .nodes
                    .iter()
                    .zip(&r.weights)
                    .map(|(x, w)| w * x.powi(2 * k as i32))
                    .sum();
                assert!(
                    (got - want).abs() <= 1e-12 * want,
                    "n {n} moment {}: {got} vs {want}",
                    2 * k
                );
                want *= (2 * k + 1) as f64 / 2.0;
            }
        }
    }

    #[test]
    fn matches_scipy_roots_hermite_64() {
        // scipy.special.roots_hermite(64) (SciPy 1.11.4), printed with repr().
        let r = GaussHermite::new(64).unwrap();
        let want_nodes = [
            (0, -10.526123167960545),
            (31, -0.13830224498700971),
            (50, 5.31832522463327),
            (63, 10.526123167960545),
        ];
        for (i, x) in want_nodes {
            assert!(
                (r.nodes[i] - x).abs() <= 4e-15 * x.abs(),
                "node {i}: {} vs {x}",
                r.nodes[i]
            );
        }
        let want_weights = [
            (0, 5.5357065358543034e-49),
            (63, 5.5357065358543034e-49),
            (32, 0.271377424941304),
            (45, 1.495532936727252e-07),
        ];
        for (i, w) in want_weights {
            assert!(
                (r.weights[i] - w).abs() <= 1e-12 * w,
                "weight {i}: {:e} vs {w:e}",
                r.weights[i]
            );
        }
    }

    #[test]
    fn rejects_zero_and_huge_degrees() {
        assert!(GaussHermite::new(0).is_none());
        assert!(GaussHermite::new(MAX_DEGREE + 1).is_none());
    }
}
