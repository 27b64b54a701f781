//! The kernel rule of a random affine layer (dense, and conv after its spatial sum).
//!
//! Reference: neural-tangents `stax.Dense` / `stax.Conv` `kernel_fn`
//! (`neural_tangents/_src/stax/linear.py`, v0.6.5); Jacot et al. 2018 (NTK
//! parameterization), Sohl-Dickstein et al. 2020, arXiv 2001.07301 (standard).
//!
//! With `Σ` the input NNGP and `Θ` the input NTK (for conv: both already averaged over
//! the filter offsets, see [`crate::conv`]), `σ_w = w_std`, `σ_b = b_std`:
//!
//! - NNGP (both parameterizations): `Σ' = σ_w² Σ + σ_b²` (no `σ_b²` when the layer has
//!   no bias, `b_std: null`).
//! - NTK, `ntk` parameterization: `Θ' = Σ' + σ_w² Θ`. The weight gradient contributes
//!   `σ_w² Σ`, the bias gradient `σ_b²`, and back-propagation through the weights
//!   multiplies the incoming NTK by `σ_w²`.
//! - NTK, `standard` parameterization: `Θ' = n_in Σ + σ_w² Θ + 1` (the `+1` only when the
//!   layer has a bias parameter, whatever its `b_std`, even 0). Here the raw weights carry
//!   the variance `σ_w² / n_in`, so the weight gradient is the raw input and contributes
//!   `n_in Σ` with the FINITE fan-in `n_in` (in_features, or in_channels·kh·kw for conv),
//!   and the raw bias gradient is 1. This is not a width-independent limit: neural-tangents
//!   uses the actual layer widths, as here.

use ntk_nets::Parameterization;

/// The parameters of one affine layer that enter its kernel rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    /// `w_std²`.
    pub weight_variance: f64,
    /// `b_std²`; `None` when the layer has no bias parameter.
    pub bias_variance: Option<f64>,
    /// `in_features` (dense) or `in_channels · kh · kw` (conv).
    pub fan_in: usize,
    pub parameterization: Parameterization,
}

impl Affine {
    /// Applies the rule in place.
    ///
    /// # Shapes
    /// `nngp`, `ntk`: the same length (one pair block, any layout); they hold the input
    /// kernels on entry (for conv: after the spatial averaging) and the output kernels on
    /// return.
    pub fn apply(&self, nngp: &mut [f64], ntk: Option<&mut [f64]>) {
        let wv = self.weight_variance;
        let bias = self.bias_variance;
        match (self.parameterization, ntk) {
            (Parameterization::Ntk, ntk) => {
                for v in nngp.iter_mut() {
                    *v = wv * *v + bias.unwrap_or(0.0);
                }
                if let Some(ntk) = ntk {
                    for (t, s) in ntk.iter_mut().zip(nngp.iter()) {
                        *t = s + wv * *t;
                    }
                }
            }
            (Parameterization::Standard, ntk) => {
                if let Some(ntk) = ntk {
                    let fan_in = self.fan_in as f64;
                    let gradient_of_bias = if bias.is_some() { 1.0 } else { 0.0 };
                    for (t, s) in ntk.iter_mut().zip(nngp.iter()) {
                        *t = fan_in * s + wv * *t + gradient_of_bias;
                    }
                }
                for v in nngp.iter_mut() {
                    *v = wv * *v + bias.unwrap_or(0.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntk_parameterization_adds_the_new_nngp() {
        let a = Affine {
            weight_variance: 2.0,
            bias_variance: Some(0.25),
            fan_in: 7,
            parameterization: Parameterization::Ntk,
        };
        let mut s = vec![1.0, -0.5];
        let mut t = vec![3.0, 1.0];
        a.apply(&mut s, Some(&mut t));
        assert_eq!(s, vec![2.25, -0.75]);
        assert_eq!(t, vec![2.25 + 6.0, -0.75 + 2.0]);
    }

    #[test]
    fn standard_parameterization_uses_the_fan_in_and_a_unit_bias_gradient() {
        let a = Affine {
            weight_variance: 2.0,
            bias_variance: Some(0.0),
            fan_in: 7,
            parameterization: Parameterization::Standard,
        };
        let mut s = vec![1.0];
        let mut t = vec![3.0];
        a.apply(&mut s, Some(&mut t));
        assert_eq!(s, vec![2.0]);
        assert_eq!(t, vec![7.0 + 6.0 + 1.0]);
        // No bias parameter at all: no +1.
        let a = Affine {
            bias_variance: None,
            ..a
        };
        let mut s = vec![1.0];
        let mut t = vec![3.0];
        a.apply(&mut s, Some(&mut t));
        assert_eq!(t, vec![13.0]);
    }
}
