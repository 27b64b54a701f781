//! Kernel rule of global self-attention with linear scaling (tied keys and queries).
//!
//! Reference: neural-tangents `stax.GlobalSelfAttention(linear_scaling=True)` `kernel_fn`
//! (`neural_tangents/_src/stax/linear.py`, v0.6.5), after Hron, Bahri, Sohl-Dickstein,
//! Novak, *Infinite attention: NNGP and NTK for deep attention networks* (ICML 2020).
//!
//! With the key/query logits scaled by `1/n_key` and the key and query weights tied, the
//! logits of sample `x` converge to `σ_qk · Σ_x[s, t]`, a multiple of the input's own
//! position-position covariance, so the attention weights are deterministic:
//! `G_x = φ(σ_qk Σ_x)` (`φ` the softmax over each row `s`, or the identity). The output is
//! an affine layer of `G_x · values` with fresh weights (NTK parameterization):
//!
//! - NNGP: `K'(x, y) = σ_ov² · G_x K(x, y) G_yᵀ + σ_b²`;
//! - NTK: `Θ'(x, y) = σ_ov² · G_x Θ(x, y) G_yᵀ + σ_b² + 2 σ_ov² · G_x K(x, y) G_yᵀ`
//!   (the value and output weights each add `σ_ov² G_x K G_yᵀ`; the key weights' share
//!   vanishes in the limit),
//!
//! with `σ_qk = σ_q σ_k`, `σ_ov = σ_o σ_v`.

use crate::covariance::PairBlock;

/// The constants of one attention layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attention {
    /// `σ_q σ_k` (`w_query_std · w_key_std`).
    pub qk_std: f64,
    /// `σ_o σ_v` (`w_out_std · w_value_std`).
    pub ov_std: f64,
    /// `σ_b²`, `None` without a bias.
    pub bias_variance: Option<f64>,
    /// Softmax over each row (else the logits themselves).
    pub softmax: bool,
}

impl Attention {
    /// The attention weights `G = φ(σ_qk Σ)` of one sample.
    ///
    /// # Shapes
    /// `cov`: the sample's own covariance `[T, T]` row-major; result `[T, T]`.
    pub fn weights(&self, cov: &[f64], t: usize) -> Vec<f64> {
        let mut g: Vec<f64> = cov.iter().map(|v| self.qk_std * v).collect();
        if self.softmax {
            for row in g.chunks_mut(t) {
                let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                let mut sum = 0.0;
                for v in row.iter_mut() {
                    *v = (*v - m).exp();
                    sum += *v;
                }
                row.iter_mut().for_each(|v| *v /= sum);
            }
        }
        g
    }

    /// Applies the layer to a pair block (tokens: `Layout::Full { h: 1, w: T }`).
    ///
    /// # Shapes
    /// `block.nngp`, `block.ntk`: `[T, T]` (row: position of `x`, column: of `y`);
    /// `cov_x`, `cov_y`: each sample's own covariance at the input, `[T, T]`.
    pub fn apply(&self, block: &mut PairBlock, cov_x: &[f64], cov_y: &[f64]) {
        let t = block.layout.pixels();
        let gx = self.weights(cov_x, t);
        let gy = self.weights(cov_y, t);
        let ov2 = self.ov_std * self.ov_std;
        let b2 = self.bias_variance.unwrap_or(0.0);
        let nngp = sandwich(&gx, &block.nngp, &gy, t);
        if let Some(ntk) = block.ntk.as_mut() {
            let theta = sandwich(&gx, ntk, &gy, t);
            for ((o, th), k) in ntk.iter_mut().zip(&theta).zip(&nngp) {
                *o = ov2 * th + b2 + 2.0 * ov2 * k;
            }
        }
        for (o, k) in block.nngp.iter_mut().zip(&nngp) {
            *o = ov2 * k + b2;
        }
    }
}

/// `A M Bᵀ` for `[T, T]` row-major matrices.
fn sandwich(a: &[f64], m: &[f64], b: &[f64], t: usize) -> Vec<f64> {
    // (A M)[s, j] then (A M) Bᵀ [s, s'] = Σ_j (A M)[s, j] B[s', j].
    let mut am = vec![0.0; t * t];
    for s in 0..t {
        for k in 0..t {
            let a_sk = a[s * t + k];
            if a_sk == 0.0 {
                continue;
            }
            let row = &m[k * t..(k + 1) * t];
            for (o, v) in am[s * t..(s + 1) * t].iter_mut().zip(row) {
                *o += a_sk * v;
            }
        }
    }
    let mut out = vec![0.0; t * t];
    for s in 0..t {
        let r = &am[s * t..(s + 1) * t];
        for s2 in 0..t {
            let bs = &b[s2 * t..(s2 + 1) * t];
            out[s * t + s2] = r.iter().zip(bs).map(|(x, y)| x * y).sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::covariance::Layout;

    #[test]
    fn softmax_rows_sum_to_one_and_follow_the_covariance() {
        let a = Attention {
            qk_std: 2.0,
            ov_std: 1.0,
            bias_variance: None,
            softmax: true,
        };
        let g = a.weights(&[1.0, 0.0, 0.0, 0.5], 2);
        assert!((g[0] + g[1] - 1.0).abs() < 1e-15);
        // Row 0: softmax(2, 0) = (e², 1)/(e² + 1).
        let e2 = 2f64.exp();
        assert!((g[0] - e2 / (e2 + 1.0)).abs() < 1e-15);
        assert!((g[3] - 1f64.exp() / (1f64.exp() + 1.0)).abs() < 1e-15);
    }

    #[test]
    fn uniform_attention_averages_positions() {
        // σ_qk = 0: every row of G is 1/T, so K' = σ_ov² · mean(K) + σ_b² everywhere,
        // Θ' = σ_ov² · mean(Θ) + σ_b² + 2 σ_ov² mean(K).
        let a = Attention {
            qk_std: 0.0,
            ov_std: 1.5,
            bias_variance: Some(0.1),
            softmax: true,
        };
        let k = vec![1.0, 2.0, 3.0, 4.0];
        let th = vec![0.5, 0.0, 1.0, 2.5];
        let mut b = PairBlock {
            layout: Layout::Full { h: 1, w: 2 },
            nngp: k.clone(),
            ntk: Some(th.clone()),
        };
        a.apply(&mut b, &[9.0, 1.0, 1.0, 9.0], &[3.0, 0.0, 0.0, 3.0]);
        let mk: f64 = k.iter().sum::<f64>() / 4.0;
        let mt: f64 = th.iter().sum::<f64>() / 4.0;
        for v in &b.nngp {
            assert!((v - (2.25 * mk + 0.1)).abs() < 1e-14);
        }
        for v in b.ntk.as_ref().unwrap() {
            assert!((v - (2.25 * mt + 0.1 + 4.5 * mk)).abs() < 1e-14);
        }
    }

    #[test]
    fn sandwich_is_a_m_b_transposed() {
        let a = [1.0, 2.0, 0.0, 1.0];
        let m = [1.0, 0.0, 3.0, 1.0];
        let b = [2.0, 0.0, 1.0, 1.0];
        // A M = [[7, 2], [3, 1]]; (A M) Bᵀ = [[14, 9], [6, 4]].
        assert_eq!(sandwich(&a, &m, &b, 2), vec![14.0, 9.0, 6.0, 4.0]);
    }
}
