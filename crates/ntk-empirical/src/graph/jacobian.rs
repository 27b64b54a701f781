//! Jacobian contraction on graph networks: the reference.
//!
//! `J[n·K + k, :] = ∂f_k(x_n)/∂θ` over the selected parameters (flattened, in
//! [`ntk_nets::graph::Graph::params`] order), one forward and one backward pass of burn's
//! autodiff per sample and output; `Θ = J(x1) J(x2)ᵀ` in the kind's layout.
//!
//! # Shapes
//! `x: [N, *input_shape]` → `J: [N, K, P]`, K = O (or 1 for sum-of-logits).

use crate::error::Result;
use crate::kernel::KernelKind;
use crate::structured::{Coeff, KernelSum};
use burn::module::Module;
use burn::tensor::Tensor;
use ntk_nets::HostArray;
use ntk_nets::graph::GraphNetwork;

/// The Jacobian `[N, K, P]` of the selected parameters (on the network's own device).
pub fn jacobian(
    net: &GraphNetwork,
    x: &HostArray,
    sum_of_logits: bool,
    cancel: &crate::Cancel,
) -> Result<Tensor<3>> {
    let ad = net.device().autodiff();
    let model = net.clone().fork(&ad).train();
    let n = x.len();
    let mut rows: Vec<Tensor<1>> = Vec::new();
    let mut k_out = 0;
    for s in 0..n {
        cancel.check()?;
        let xs = model.input(&x.rows(s, 1), &ad)?;
        let probe = model.forward(xs.clone())?;
        let o = probe.dims()[1];
        let k = if sum_of_logits { 1 } else { o };
        k_out = k;
        for seed in 0..k {
            let y = if seed == 0 {
                probe.clone()
            } else {
                model.forward(xs.clone())?
            };
            let scalar = if sum_of_logits {
                y.sum()
            } else {
                y.narrow(1, seed, 1).sum()
            };
            let grads = scalar.backward();
            let parts: Vec<Tensor<1>> = model
                .params
                .iter()
                .zip(&model.selected)
                .filter(|(_, s)| **s)
                .map(|(p, _)| {
                    let v = p.val();
                    v.grad(&grads).unwrap_or_else(|| v.zeros_like().inner())
                })
                .collect();
            rows.push(Tensor::cat(parts, 0));
        }
    }
    let p = rows[0].dims()[0];
    Ok(Tensor::stack::<2>(rows, 0).reshape([n, k_out, p]))
}

/// The kernel sum of the Jacobian method, and the number of outputs O.
pub fn kernel(
    net: &GraphNetwork,
    x1: &HostArray,
    x2: Option<&HostArray>,
    kind: KernelKind,
    cancel: &crate::Cancel,
) -> Result<(KernelSum, usize)> {
    let sol = kind == KernelKind::SumOfLogits;
    let j1 = jacobian(net, x1, sol, cancel)?;
    let j2 = x2.map(|x| jacobian(net, x, sol, cancel)).transpose()?;
    let [n1, k, _] = j1.dims();
    let n2 = j2.as_ref().map_or(n1, |j| j.dims()[0]);
    let o = if sol { net.n_outputs() } else { k };
    let mut sum = super::kernel_sum(net, kind, n1, n2, k, x2.is_none());
    sum.add_gram(j1, j2, Coeff::Scalar(1.0));
    Ok((sum, o))
}
