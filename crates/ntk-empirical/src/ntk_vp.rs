//! NTK-vector products: `Θ(x1, x2)·v = J(x1) (J(x2)ᵀ v)` without forming Θ or J.
//!
//! - `J(x2)ᵀ v` is one reverse-mode pass: burn's autodiff on `Σ f(x2) ⊙ v`, reading the
//!   gradient of every parameter (a VJP; cost ≈ 3 forward passes of batch N2).
//! - `J(x1) u` is one forward-mode pass (a JVP). burn has no forward mode, so it is
//!   written here for the layer set of [`Network`]: each layer carries `(h, ḣ)` with
//!   `ẏ = s(ẋWᵀ + x·U_Wᵀ) + b_s·U_b` (dense; conv2d the same with convolutions), `ẏ = φ'(x)ẋ`
//!   (activations) and the layer itself on `ḣ` (flatten, pooling); cost ≈ 2–3 forward passes
//!   of batch N1.
//!
//! One product therefore costs about 6 forward passes. The full kernel needs `N2·O` of them
//! (one per column), which is neural-tangents' `NTK_VECTOR_PRODUCTS` implementation; it is
//! mainly a third, independent cross-check and the building block for iterative
//! eigen-solvers (top eigenvalues need only a few dozen products).

use crate::error::Result;
use crate::jacobian::grad_or_zero;
use crate::kernel::KernelKind;
use crate::structured::Accumulator;
use crate::structured::cotangent::activation_derivative;
use burn::module::Module;
use burn::tensor::module::conv2d;
use burn::tensor::{Tensor, TensorData};
use ntk_nets::layers::{Features, StatelessOp};
use ntk_nets::{HostArray, Layer, Network};

/// A direction in parameter space, per layer `(weight, bias)` (PyTorch layout).
#[derive(Debug, Clone)]
pub enum LayerTangent {
    Dense(Tensor<2>, Option<Tensor<1>>),
    Conv2d(Tensor<4>, Option<Tensor<1>>),
    None,
}

/// `J(x)ᵀ v`: the parameter-space vector `Σ_{n,o} v[n, o] ∂f_o(x_n)/∂θ`.
///
/// # Shapes
/// `x: [N, ...]`, `v: [N, O]`
pub fn vjp(net: &Network, x: &HostArray, v: Tensor<2>) -> Result<Vec<LayerTangent>> {
    let ad = net.device().autodiff();
    let model = net.clone().fork(&ad).train();
    let input = model.input(x, &ad)?;
    let f = model.forward(input);
    let grads = (f * v.autodiff()).sum().backward();
    let bias = |b: &Option<burn::module::Param<Tensor<1>>>| {
        b.as_ref().map(|b| grad_or_zero(&b.val(), &grads))
    };
    Ok(model
        .layers
        .iter()
        .map(|l| match l {
            Layer::Dense(d) => {
                LayerTangent::Dense(grad_or_zero(&d.weight.val(), &grads), bias(&d.bias))
            }
            Layer::Conv2d(c) => {
                LayerTangent::Conv2d(grad_or_zero(&c.weight.val(), &grads), bias(&c.bias))
            }
            Layer::Stateless(_) => LayerTangent::None,
        })
        .collect())
}

/// `J(x) u`: the directional derivative of the outputs along `u`, by forward mode.
///
/// # Shapes
/// `x: [N, ...]` → `[N, O]`
pub fn jvp(net: &Network, x: Features, u: &[LayerTangent]) -> Tensor<2> {
    let mut h = x;
    let mut dh: Option<Features> = None; // ḣ = 0 at the input
    for (i, layer) in net.layers.iter().enumerate() {
        let (next, dnext) = match (layer, h, &u[i]) {
            (Layer::Dense(l), Features::Flat(x), LayerTangent::Dense(uw, ub)) => {
                let mut d = x.clone().matmul(uw.clone().transpose());
                if let Some(Features::Flat(dx)) = dh {
                    d = d + dx.matmul(l.weight.val().transpose());
                }
                let mut d = d.mul_scalar(l.weight_scale);
                if let Some(ub) = ub {
                    d = d + ub.clone().mul_scalar(l.bias_scale).unsqueeze::<2>();
                }
                (Features::Flat(l.forward(x)), Features::Flat(d))
            }
            (Layer::Conv2d(l), Features::Image(x), LayerTangent::Conv2d(uw, ub)) => {
                let mut d = conv2d(x.clone(), uw.clone(), None, l.options());
                if let Some(Features::Image(dx)) = dh {
                    d = d + conv2d(dx, l.weight.val(), None, l.options());
                }
                let mut d = d.mul_scalar(l.weight_scale);
                if let Some(ub) = ub {
                    let c = ub.dims()[0];
                    d = d + ub.clone().mul_scalar(l.bias_scale).reshape([1, c, 1, 1]);
                }
                (Features::Image(l.forward(x)), Features::Image(d))
            }
            (Layer::Stateless(s), x, _) => {
                let d = dh.map(|d| match s.op {
                    StatelessOp::Activation(a) => match (d, x.clone()) {
                        (Features::Flat(d), Features::Flat(z)) => {
                            Features::Flat(d * activation_derivative(a, z))
                        }
                        (Features::Image(d), Features::Image(z)) => {
                            Features::Image(d * activation_derivative(a, z))
                        }
                        _ => unreachable!("validated spec"),
                    },
                    _ => s.forward(d),
                });
                let y = s.forward(x);
                match d {
                    Some(d) => (y, d),
                    None => {
                        // No parameter before this layer: the tangent is still zero.
                        dh = None;
                        h = y;
                        continue;
                    }
                }
            }
            _ => unreachable!("tangent layout follows the network"),
        };
        h = next;
        dh = Some(dnext);
    }
    match dh {
        Some(Features::Flat(d)) => d,
        _ => {
            let y = h.flat().expect("vector output");
            y.zeros_like()
        }
    }
}

/// `Θ(x1, x2)·v`, `[N2, O]` → `[N1, O]`.
pub fn ntk_vector_product(
    net: &Network,
    x1: &HostArray,
    x2: &HostArray,
    v: Tensor<2>,
) -> Result<Tensor<2>> {
    let u = vjp(net, x2, v)?;
    let device = net.device();
    Ok(jvp(net, net.input(x1, &device)?, &u))
}

/// The kernel by `N2·O` NTK-vector products (one per column; `N2` for sum-of-logits), in
/// the accumulator layout of [`crate::structured::finish`].
pub fn kernel(
    net: &Network,
    x1: &HostArray,
    x2: Option<&HostArray>,
    kind: KernelKind,
) -> Result<Accumulator> {
    let x2 = x2.unwrap_or(x1);
    let (n1, n2, o) = (x1.len(), x2.len(), net.n_outputs());
    let device = net.device();
    let dtype = net.dtype();
    let sol = kind == KernelKind::SumOfLogits;
    let k = if sol { 1 } else { o };
    // columns[c] = Θ(x1, x2)·v_c, [N1, O], c = n2·K + k
    let mut columns = Vec::with_capacity(n2 * k);
    for s in 0..n2 {
        for seed in 0..k {
            let mut v = vec![0.0; n2 * o];
            if sol {
                v[s * o..(s + 1) * o].fill(1.0);
            } else {
                v[s * o + seed] = 1.0;
            }
            let v = Tensor::from_data(TensorData::new(v, [n2, o]), (&device, dtype));
            columns.push(ntk_vector_product(net, x1, x2, v)?);
        }
    }
    Ok(accumulate_columns(
        columns,
        (n1, n2, o),
        kind,
        &device,
        dtype,
    ))
}

/// Arranges the kernel's columns `Θ·v_c` (`[N1, O]` each, `c = n2·K + k`, K = O or 1 for
/// sum-of-logits) in the accumulator layout of [`crate::structured::finish`].
pub(crate) fn accumulate_columns(
    columns: Vec<Tensor<2>>,
    (n1, n2, o): (usize, usize, usize),
    kind: KernelKind,
    device: &burn::tensor::Device,
    dtype: burn::tensor::DType,
) -> Accumulator {
    let k = if kind == KernelKind::SumOfLogits {
        1
    } else {
        o
    };
    // [N2·K, N1, O] → [N1, O, N2, K]
    let cols: Tensor<3> = Tensor::stack(columns, 0);
    let full = cols.reshape([n2, k, n1, o]).permute([2, 3, 0, 1]);
    match kind {
        KernelKind::Full => Accumulator::Full(full),
        KernelKind::SumOfLogits => Accumulator::Pairs(full.sum_dim(1).reshape([n1, n2])),
        KernelKind::Diagonal | KernelKind::Trace => {
            // diag over (o, k): [N1, N2, O] via a mask of the identity.
            let eye = Tensor::<2>::from_data(
                TensorData::new(
                    (0..o * o)
                        .map(|i| if i / o == i % o { 1.0 } else { 0.0 })
                        .collect::<Vec<f64>>(),
                    [o, o],
                ),
                (device, dtype),
            );
            let d: Tensor<3> = (full * eye.reshape([1, o, 1, o]))
                .sum_dim(3)
                .reshape([n1, o, n2]);
            match kind {
                KernelKind::Diagonal => Accumulator::Diagonal(d.permute([1, 0, 2])),
                _ => Accumulator::Pairs(d.sum_dim(1).reshape([n1, n2])),
            }
        }
        KernelKind::Nngp => unreachable!("handled by the engine"),
    }
}
