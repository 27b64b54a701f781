//! The linearised network: the first-order Taylor model of a network in its parameters
//! around `θ0`,
//!
//! `f_lin(θ, x) = f(θ0, x) + J(θ0, x)(θ − θ0)`,
//!
//! neural-tangents' `linearize` (Lee et al. 2019, *Wide neural networks of any depth
//! evolve as linear models under gradient descent*). The forward pass is one JVP at `θ0`
//! along `θ − θ0` ([`crate::ntk_vp::jvp`]); the gradient of any loss of `f_lin` is a VJP at
//! `θ0`, `J(θ0, x)ᵀ ∂L/∂f_lin`, which does not depend on `θ` (burn has no second-order
//! gradients, and none are needed). Training `θ` with these gradients trains the linear
//! model with any optimiser.

use crate::error::{EmpiricalError, Result};
use crate::ntk_vp::{LayerTangent, jvp, vjp};
use burn::tensor::Tensor;
use ntk_nets::{HostArray, Layer, Network, to_host};

/// A network linearised around its parameters `θ0` (the network given to [`new`]).
///
/// [`new`]: Linearized::new
#[derive(Debug, Clone)]
pub struct Linearized {
    base: Network,
}

impl Linearized {
    /// The Taylor model around `base`'s parameters.
    pub fn new(base: Network) -> Self {
        Linearized { base }
    }

    /// The network at `θ0`.
    pub fn base(&self) -> &Network {
        &self.base
    }

    /// `θ − θ0`, per layer (PyTorch layout), from a network of the same spec.
    ///
    /// # Errors
    /// `params` is not the same architecture.
    pub fn displacement(&self, params: &Network) -> Result<Vec<LayerTangent>> {
        if params.spec != self.base.spec {
            return Err(EmpiricalError::Option {
                option: "linearize".into(),
                message: "the parameters are of another architecture than θ0".into(),
            });
        }
        Ok(self
            .base
            .layers
            .iter()
            .zip(&params.layers)
            .map(|(a, b)| match (a, b) {
                (Layer::Dense(a), Layer::Dense(b)) => LayerTangent::Dense(
                    b.weight.val() - a.weight.val(),
                    a.bias
                        .as_ref()
                        .zip(b.bias.as_ref())
                        .map(|(a, b)| b.val() - a.val()),
                ),
                (Layer::Conv2d(a), Layer::Conv2d(b)) => LayerTangent::Conv2d(
                    b.weight.val() - a.weight.val(),
                    a.bias
                        .as_ref()
                        .zip(b.bias.as_ref())
                        .map(|(a, b)| b.val() - a.val()),
                ),
                _ => LayerTangent::None,
            })
            .collect())
    }

    /// `f_lin(θ, x) = f(θ0, x) + J(θ0, x)(θ − θ0)`.
    ///
    /// # Shapes
    /// `x: [N, *input_shape]` → `[N, O]`
    pub fn forward(&self, params: &Network, x: &HostArray) -> Result<Tensor<2>> {
        let u = self.displacement(params)?;
        let device = self.base.device();
        let input = self.base.input(x, &device)?;
        let f0 = self.base.forward(input.clone());
        let du = jvp(&self.base, input, &u);
        Ok(f0 + du)
    }

    /// [`Linearized::forward`] on the host.
    pub fn forward_host(&self, params: &Network, x: &HostArray) -> Result<HostArray> {
        Ok(to_host(self.forward(params, x)?))
    }

    /// The gradient `∂/∂θ Σ_{n,o} v[n, o] f_lin(θ, x_n)_o = J(θ0, x)ᵀ v` (the same for every
    /// `θ`), per layer in PyTorch layout.
    ///
    /// # Shapes
    /// `x: [N, *input_shape]`, `v: [N, O]`
    pub fn vjp(&self, x: &HostArray, v: Tensor<2>) -> Result<Vec<LayerTangent>> {
        vjp(&self.base, x, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use ntk_nets::{BackendKind, NetworkConfig, NetworkSpec, Precision};

    fn net(seed: u64) -> Network {
        let spec = NetworkSpec::from_json(
            r#"{"input_shape":[3],"parameterization":"ntk","layers":[{"type":"dense","width":6,"w_std":1.3,"b_std":0.2},{"type":"tanh"},{"type":"dense","width":2,"w_std":1.0,"b_std":0.1}]}"#,
        )
        .unwrap();
        let device = BackendKind::Flex.device(Precision::F64).unwrap();
        NetworkConfig::new(spec)
            .with_seed(seed)
            .with_precision(Precision::F64)
            .init(&device)
            .unwrap()
    }

    fn x() -> HostArray {
        HostArray::new(
            vec![4, 3],
            (0..12).map(|i| (i as f64 * 0.7).sin()).collect(),
        )
    }

    #[test]
    fn at_theta0_it_is_the_network() {
        let n = net(1);
        let lin = Linearized::new(n.clone());
        let a = lin.forward_host(&n, &x()).unwrap();
        let b = n.forward_host(&x()).unwrap();
        assert_eq!(a.data, b.data);
    }

    /// `θ = θ0 + ε(θ1 − θ0)`: `f_lin` is exactly linear in ε, and agrees with the network
    /// to first order (the error falls as ε²).
    #[test]
    fn first_order_taylor_model() {
        let (n0, n1) = (net(1), net(2));
        let lin = Linearized::new(n0.clone());
        let mix = |eps: f64| -> Network {
            let mut m = n0.clone();
            for (l, (a, b)) in m.layers.iter_mut().zip(n0.layers.iter().zip(&n1.layers)) {
                if let (Layer::Dense(m), Layer::Dense(a), Layer::Dense(b)) = (l, a, b) {
                    let w = a.weight.val() + (b.weight.val() - a.weight.val()).mul_scalar(eps);
                    m.weight = m.weight.clone().map(|_| w.clone());
                    if let (Some(mb), Some(ab), Some(bb)) = (&mut m.bias, &a.bias, &b.bias) {
                        let v = ab.val() + (bb.val() - ab.val()).mul_scalar(eps);
                        *mb = mb.clone().map(|_| v.clone());
                    }
                }
            }
            m
        };
        let f0 = n0.forward_host(&x()).unwrap();
        let l1 = lin.forward_host(&mix(1e-2), &x()).unwrap();
        let l2 = lin.forward_host(&mix(2e-2), &x()).unwrap();
        for ((a, b), c) in f0.data.iter().zip(&l1.data).zip(&l2.data) {
            // Linear in ε: f_lin(2ε) − f0 = 2 (f_lin(ε) − f0).
            assert!(((c - a) - 2.0 * (b - a)).abs() < 1e-13, "{a} {b} {c}");
        }
        let err = |eps: f64| -> f64 {
            let f = mix(eps).forward_host(&x()).unwrap();
            let l = lin.forward_host(&mix(eps), &x()).unwrap();
            f.data
                .iter()
                .zip(&l.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
        };
        let (e1, e2) = (err(1e-2), err(1e-3));
        assert!(
            e1 > 0.0 && e2 < e1 / 50.0,
            "second-order remainder: {e1:.3e} {e2:.3e}"
        );
    }

    /// The VJP is the transpose of the JVP: `⟨v, J u⟩ = ⟨Jᵀ v, u⟩`.
    #[test]
    fn vjp_is_the_adjoint_of_the_forward_map() {
        let (n0, n1) = (net(3), net(4));
        let lin = Linearized::new(n0.clone());
        let f0 = n0.forward_host(&x()).unwrap();
        let fl = lin.forward_host(&n1, &x()).unwrap();
        let v: Vec<f64> = (0..8).map(|i| (i as f64 * 1.3).cos()).collect();
        let lhs: f64 = v
            .iter()
            .zip(fl.data.iter().zip(&f0.data))
            .map(|(v, (a, b))| v * (a - b))
            .sum();
        let device = n0.device();
        let vt = Tensor::<2>::from_data(TensorData::new(v, [4, 2]), (&device, n0.dtype()));
        let g = lin.vjp(&x(), vt).unwrap();
        let u = lin.displacement(&n1).unwrap();
        let dot = |a: Tensor<2>, b: Tensor<2>| -> f64 { to_host(a * b).data.iter().sum() };
        let dot1 = |a: Tensor<1>, b: Tensor<1>| -> f64 { to_host(a * b).data.iter().sum() };
        let mut rhs = 0.0;
        for (g, u) in g.into_iter().zip(u) {
            if let (LayerTangent::Dense(gw, gb), LayerTangent::Dense(uw, ub)) = (g, u) {
                rhs += dot(gw, uw);
                if let (Some(gb), Some(ub)) = (gb, ub) {
                    rhs += dot1(gb, ub);
                }
            }
        }
        assert!(
            (lhs - rhs).abs() < 1e-12 * lhs.abs().max(1.0),
            "{lhs} {rhs}"
        );
    }
}
