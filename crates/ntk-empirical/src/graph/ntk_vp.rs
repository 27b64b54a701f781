//! NTK-vector products on graph networks: `Θ(x1, x2)·v = J(x1) (J(x2)ᵀ v)` without
//! forming Θ or J (neural-tangents' `NTK_VECTOR_PRODUCTS`).
//!
//! - `J(x2)ᵀ v`: one reverse-mode pass, burn's autodiff on `Σ f(x2) ⊙ v` (a VJP);
//! - `J(x1) u`: one forward-mode pass, [`GraphNetwork::forward_jvp`], which applies each
//!   op's tangent rule (written beside the op, in `ntk_nets::graph::ops`).
//!
//! The full kernel takes `N2·K` products (one per column; K = O, or 1 for sum-of-logits).
//! A column's cotangent `v = e_(m, k)` touches one sample, so its VJP runs on that sample
//! alone. Independent of the Jacobian and structured methods, so a cross-check of both.

use crate::error::Result;
use crate::kernel::KernelKind;
use crate::ntk_vp::accumulate_columns;
use crate::structured::Accumulator;
use burn::module::Module;
use burn::tensor::Tensor;
use ntk_nets::HostArray;
use ntk_nets::graph::GraphNetwork;

/// `J(x)ᵀ v` for the selected parameters (`None` for the others: no tangent).
///
/// # Shapes
/// `x: [N, *input_shape]`, `v: [N, O]` → one flat `[numel(θ_p)]` per parameter
pub fn vjp(net: &GraphNetwork, x: &HostArray, v: Tensor<2>) -> Result<Vec<Option<Tensor<1>>>> {
    let ad = net.device().autodiff();
    let model = net.clone().fork(&ad).train();
    let f = model.forward(model.input(x, &ad)?)?;
    let grads = (f * v.autodiff()).sum().backward();
    Ok(model
        .params
        .iter()
        .zip(&model.selected)
        .map(|(p, &s)| {
            s.then(|| {
                let t = p.val();
                t.grad(&grads).unwrap_or_else(|| t.zeros_like().inner())
            })
        })
        .collect())
}

/// `Θ(x1, x2)·v`, `[N2, O]` → `[N1, O]`.
pub fn ntk_vector_product(
    net: &GraphNetwork,
    x1: &HostArray,
    x2: &HostArray,
    v: Tensor<2>,
) -> Result<Tensor<2>> {
    let u = vjp(net, x2, v)?;
    let device = net.device();
    Ok(net.forward_jvp(net.input(x1, &device)?, &u)?.1)
}

/// The kernel by `N2·K` NTK-vector products, in the accumulator layout of
/// [`crate::structured::finish`], and the number of outputs O.
pub fn kernel(
    net: &GraphNetwork,
    x1: &HostArray,
    x2: Option<&HostArray>,
    kind: KernelKind,
    cancel: &crate::Cancel,
) -> Result<(Accumulator, usize)> {
    let x2 = x2.unwrap_or(x1);
    let (n1, n2, o) = (x1.len(), x2.len(), net.n_outputs());
    let device = net.device();
    let dtype = net.dtype();
    let sol = kind == KernelKind::SumOfLogits;
    let k = if sol { 1 } else { o };
    let input1 = net.input(x1, &device)?;
    let mut columns = Vec::with_capacity(n2 * k);
    for m in 0..n2 {
        cancel.check()?;
        let sample = x2.rows(m, 1);
        for seed in 0..k {
            let v: Tensor<2> = if sol {
                Tensor::ones([1, o], (&device, dtype))
            } else {
                let mut v = vec![0.0; o];
                v[seed] = 1.0;
                Tensor::from_data(burn::tensor::TensorData::new(v, [1, o]), (&device, dtype))
            };
            let u = vjp(net, &sample, v)?;
            columns.push(net.forward_jvp(input1.clone(), &u)?.1);
        }
    }
    Ok((
        accumulate_columns(columns, (n1, n2, o), kind, &device, dtype),
        o,
    ))
}
