//! Jacobian contraction: the reference method, for ANY burn module.
//!
//! `Θ = J(x1) J(x2)ᵀ` with `J[n·K + k, :] = ∂(seed_k · f(x_n))/∂θ`, all float parameters of
//! the module flattened and concatenated (burn's [`ModuleVisitor`] order). Each row is one
//! backward pass of burn's autodiff through a fresh forward pass of one sample, so the cost
//! is `(N1 + N2)·K` forward+backward passes of batch 1 and memory `(N1 + N2)·K·P` — the
//! method is a black box and the reference the other methods are checked against, not the
//! fast path.

use crate::kernel::KernelKind;
use crate::structured::{Accumulator, seed_gram};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor};

struct GradCollector<'a> {
    grads: &'a Gradients,
    rows: Vec<Tensor<1>>,
}

/// The gradient of a tracked tensor, or zeros when the output does not depend on it
/// (without autodiff association either way).
pub fn grad_or_zero<const D: usize>(t: &Tensor<D>, grads: &Gradients) -> Tensor<D> {
    t.grad(grads).unwrap_or_else(|| t.zeros_like().inner())
}

impl ModuleVisitor for GradCollector<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let n: usize = value.dims().iter().product();
        self.rows
            .push(grad_or_zero(&value, self.grads).reshape([n]));
    }
}

/// The Jacobian `[N·K, P]` of `forward(model, x)` for seeds `K` (one-hot per output, or one
/// all-ones seed with `sum_of_logits`). `model` must live on an autodiff device
/// (`device.autodiff()`) and `x` on the same device.
///
/// # Shapes
/// `x: [N, ...]`, `forward(model, x): [N, O]` → `[N·K, P]`
pub fn jacobian<M, F, const D: usize>(
    model: &M,
    forward: &F,
    x: Tensor<D>,
    sum_of_logits: bool,
) -> Tensor<2>
where
    M: Module,
    F: Fn(&M, Tensor<D>) -> Tensor<2>,
{
    let n = x.dims()[0];
    let mut rows = Vec::new();
    for s in 0..n {
        let xs = x.clone().narrow(0, s, 1).detach();
        let probe = forward(model, xs.clone());
        let o = probe.dims()[1];
        let k = if sum_of_logits { 1 } else { o };
        for seed in 0..k {
            let y = if seed == 0 {
                probe.clone()
            } else {
                forward(model, xs.clone())
            };
            let scalar = if sum_of_logits {
                y.sum()
            } else {
                y.narrow(1, seed, 1).sum()
            };
            let grads = scalar.backward();
            let mut c = GradCollector {
                grads: &grads,
                rows: Vec::new(),
            };
            model.visit(&mut c);
            rows.push(Tensor::cat(c.rows, 0).unsqueeze::<2>());
        }
    }
    Tensor::cat(rows, 0)
}

/// The empirical NTK of any burn module by Jacobian contraction, in the accumulator layout
/// of [`crate::structured::finish`]. `x2 = None` means `x2 = x1` (Jacobian computed once).
pub fn kernel<M, F, const D: usize>(
    model: &M,
    forward: &F,
    x1: Tensor<D>,
    x2: Option<Tensor<D>>,
    kind: KernelKind,
) -> Accumulator
where
    M: Module,
    F: Fn(&M, Tensor<D>) -> Tensor<2>,
{
    let sol = kind == KernelKind::SumOfLogits;
    let n1 = x1.dims()[0];
    let j1 = jacobian(model, forward, x1, sol);
    let j2 = match x2 {
        Some(x2) => jacobian(model, forward, x2, sol),
        None => j1.clone(),
    };
    let [r1, p] = j1.dims();
    let k = r1 / n1;
    let n2 = j2.dims()[0] / k;
    seed_gram(kind, j1.reshape([n1, k, p]), j2.reshape([n2, k, p]))
}
