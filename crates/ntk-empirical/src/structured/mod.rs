//! Structured derivatives (Novak, Sohl-Dickstein & Schoenholz 2022, "Fast Finite Width
//! Neural Tangent Kernel", §4): the NTK without ever building the Jacobian.
//!
//! The NTK is a sum over parametrised layers. For a layer `y = s·W x + b_s·b` with input
//! `x` and cotangent `g = ∂f_o/∂y`, `∂f_o/∂W = s·g xᵀ`, so its contribution is
//!
//! `Θ_l[n1, n2, o, o'] = s² (x1·x2) (g1_o·g2_o') + b_s² (g1_o·g2_o')`     (dense)
//!
//! and for a convolution the same with per-pixel sums (see [`conv`]). We run one forward
//! pass per input batch keeping every layer's input, then one batched backward pass for
//! both batches in lockstep ([`cotangent`]), adding each layer's contribution as soon as
//! its cotangents are known, so only one layer's cotangents are alive at a time.

pub mod conv;
pub mod cotangent;
pub mod dense;

use crate::kernel::KernelKind;
use burn::tensor::Tensor;
use ntk_nets::layers::Features;
use ntk_nets::{Layer, Network};

pub use conv::ConvStrategy;

/// A kernel being summed over layers, in the layout cheapest to accumulate.
#[derive(Debug, Clone)]
pub enum Accumulator {
    /// `[N1, K, N2, K]` (permuted to `[N1, N2, K, K]` at the end).
    Full(Tensor<4>),
    /// `[N1, N2]`: trace (sum over k; divided by O at the end) or sum-of-logits.
    Pairs(Tensor<2>),
    /// `[K, N1, N2]` (permuted to `[N1, N2, K]` at the end).
    Diagonal(Tensor<3>),
}

impl Accumulator {
    fn add(self, other: Accumulator) -> Accumulator {
        match (self, other) {
            (Accumulator::Full(a), Accumulator::Full(b)) => Accumulator::Full(a + b),
            (Accumulator::Pairs(a), Accumulator::Pairs(b)) => Accumulator::Pairs(a + b),
            (Accumulator::Diagonal(a), Accumulator::Diagonal(b)) => Accumulator::Diagonal(a + b),
            _ => unreachable!("accumulators of one kernel have one layout"),
        }
    }

    fn scale(self, c: f64) -> Accumulator {
        match self {
            Accumulator::Full(a) => Accumulator::Full(a.mul_scalar(c)),
            Accumulator::Pairs(a) => Accumulator::Pairs(a.mul_scalar(c)),
            Accumulator::Diagonal(a) => Accumulator::Diagonal(a.mul_scalar(c)),
        }
    }

    /// Multiplies by a per-pair coefficient `c: [N1, N2]`, broadcast over outputs.
    fn times_pairs(self, c: Tensor<2>) -> Accumulator {
        let [n1, n2] = c.dims();
        match self {
            Accumulator::Full(a) => Accumulator::Full(a * c.reshape([n1, 1, n2, 1])),
            Accumulator::Pairs(a) => Accumulator::Pairs(a * c),
            Accumulator::Diagonal(a) => Accumulator::Diagonal(a * c.unsqueeze::<3>()),
        }
    }
}

/// Gram of per-sample, per-seed vectors in the accumulator layout of `kind`:
/// `u1: [N1, K, F]`, `u2: [N2, K, F]` → `Σ_f u1[n1, k, f] u2[n2, k', f]` (full), its
/// k = k' part (diagonal), or its trace over k (trace / sum-of-logits).
pub fn seed_gram(kind: KernelKind, u1: Tensor<3>, u2: Tensor<3>) -> Accumulator {
    let [n1, k, f] = u1.dims();
    let [n2, _, _] = u2.dims();
    match kind {
        KernelKind::Full => Accumulator::Full(
            u1.reshape([n1 * k, f])
                .matmul(u2.reshape([n2 * k, f]).transpose())
                .reshape([n1, k, n2, k]),
        ),
        KernelKind::Diagonal => Accumulator::Diagonal(
            u1.swap_dims(0, 1)
                .matmul(u2.swap_dims(0, 1).swap_dims(1, 2)),
        ),
        KernelKind::Trace | KernelKind::SumOfLogits | KernelKind::Nngp => Accumulator::Pairs(
            u1.reshape([n1, k * f])
                .matmul(u2.reshape([n2, k * f]).transpose()),
        ),
    }
}

/// Options of the structured method.
#[derive(Debug, Clone, Copy, Default)]
pub struct StructuredOptions {
    /// How conv2d weight contributions are contracted.
    pub conv: ConvStrategy,
}

/// The structured-derivative kernel of `net` between two input batches, in accumulator
/// layout (see [`finish`]). `x2 = None` means `x2 = x1` (cotangents computed once).
///
/// `kind` must not be [`KernelKind::Nngp`].
pub fn kernel(
    net: &Network,
    x1: Features,
    x2: Option<Features>,
    kind: KernelKind,
    options: StructuredOptions,
) -> Accumulator {
    assert!(kind != KernelKind::Nngp, "the NNGP is not an NTK");
    let sum_of_logits = kind == KernelKind::SumOfLogits;
    let same = x2.is_none();
    let n1 = x1.dims()[0];
    let (in1, _) = net.forward_trace(x1);
    let (in2, n2) = match x2 {
        Some(x2) => {
            let n2 = x2.dims()[0];
            (Some(net.forward_trace(x2).0), n2)
        }
        None => (None, n1),
    };
    let in2_ref = in2.as_ref().unwrap_or(&in1);
    let k = if sum_of_logits { 1 } else { net.n_outputs() };

    let mut g1 = Features::Flat(cotangent::output_seeds(net, n1, sum_of_logits));
    let mut g2 = if same {
        None
    } else {
        Some(Features::Flat(cotangent::output_seeds(
            net,
            n2,
            sum_of_logits,
        )))
    };
    let mut acc: Option<Accumulator> = None;
    for i in (0..net.layers.len()).rev() {
        let (a1, a2) = (&in1[i], &in2_ref[i]);
        let g2_now = g2.clone().unwrap_or_else(|| g1.clone());
        let term = match &net.layers[i] {
            Layer::Dense(layer) => Some(dense::contribution(
                layer,
                a1.clone().flat().expect("dense input"),
                a2.clone().flat().expect("dense input"),
                g1.clone().flat().expect("dense cotangent"),
                g2_now.flat().expect("dense cotangent"),
                k,
                kind,
            )),
            Layer::Conv2d(layer) => Some(conv::contribution(
                layer,
                a1.clone().image().expect("conv input"),
                a2.clone().image().expect("conv input"),
                g1.clone().image().expect("conv cotangent"),
                g2_now.image().expect("conv cotangent"),
                k,
                kind,
                options.conv,
            )),
            Layer::Stateless(_) => None,
        };
        if let Some(term) = term {
            acc = Some(match acc {
                None => term,
                Some(a) => a.add(term),
            });
        }
        if i == 0 {
            break;
        }
        let back = |g: Features, input: &Features| -> Features {
            match (&net.layers[i], g) {
                (Layer::Dense(l), Features::Flat(g)) => {
                    Features::Flat(cotangent::dense_input_vjp(l, g))
                }
                (Layer::Conv2d(l), Features::Image(g)) => {
                    let [_, _, h, w] = input.dims()[..] else {
                        unreachable!("conv input is an image")
                    };
                    Features::Image(cotangent::conv_input_vjp(l, g, h, w))
                }
                (Layer::Stateless(s), g) => cotangent::stateless_vjp(s.op, input, g, k),
                _ => unreachable!("validated spec"),
            }
        };
        g1 = back(g1, a1);
        g2 = g2.map(|g| back(g, a2));
    }
    acc.unwrap_or_else(|| {
        // A network without parameters: the NTK is zero.
        let opts = (&net.device(), net.dtype());
        match kind {
            KernelKind::Full => Accumulator::Full(Tensor::zeros([n1, k, n2, k], opts)),
            KernelKind::Diagonal => Accumulator::Diagonal(Tensor::zeros([k, n1, n2], opts)),
            _ => Accumulator::Pairs(Tensor::zeros([n1, n2], opts)),
        }
    })
}

/// Turns an accumulator into the kernel in neural-tangents' layout and normalisation:
/// full `[N1, N2, O, O]`, diagonal `[N1, N2, O]`, trace and sum-of-logits `[N1, N2]`
/// divided by O.
pub fn finish(acc: Accumulator, kind: KernelKind, n_outputs: usize) -> Tensor<4> {
    let acc = match kind {
        KernelKind::Trace | KernelKind::SumOfLogits => acc.scale(1.0 / n_outputs as f64),
        _ => acc,
    };
    match acc {
        Accumulator::Full(a) => a.permute([0, 2, 1, 3]),
        Accumulator::Diagonal(a) => a.permute([1, 2, 0]).unsqueeze_dim::<4>(3),
        Accumulator::Pairs(a) => a.unsqueeze_dims::<4>(&[2, 3]),
    }
}
