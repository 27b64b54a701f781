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
//!
//! On CPU backends the full kernel is summed on the host ([`host_gram`]); a network made
//! only of dense layers and activations runs end to end on host buffers ([`host_mlp`],
//! the same rules without a tensor op per step), chosen by the engine.

pub mod conv;
pub mod cotangent;
pub mod dense;
pub mod host_gram;
pub mod host_mlp;
pub mod host_vjp;

use crate::kernel::KernelKind;
use burn::backend::DispatchDevice;
use burn::tensor::{Device, Tensor};
use ntk_nets::layers::Features;
use ntk_nets::{HostArray, Layer, Network, to_host};

pub use conv::ConvStrategy;
pub use host_gram::{FullGram, PairCoeff};

/// A kernel being summed over layers, in the layout cheapest to accumulate.
#[derive(Debug, Clone)]
pub enum Accumulator {
    /// `[N1, K, N2, K]` on the device (permuted to `[N1, N2, K, K]` at the end).
    Full(Tensor<4>),
    /// The full kernel summed on the host (CPU backends, see [`host_gram`]).
    FullHost(FullGram),
    /// `[N1, N2]`: trace (sum over k; divided by O at the end) or sum-of-logits.
    Pairs(Tensor<2>),
    /// `[K, N1, N2]` (permuted to `[N1, N2, K]` at the end).
    Diagonal(Tensor<3>),
}

impl Accumulator {
    fn add(self, other: Accumulator) -> Accumulator {
        match (self, other) {
            (Accumulator::Full(a), Accumulator::Full(b)) => Accumulator::Full(a + b),
            (Accumulator::FullHost(mut a), Accumulator::Full(b)) => {
                a.add_tensor(b);
                Accumulator::FullHost(a)
            }
            (Accumulator::Pairs(a), Accumulator::Pairs(b)) => Accumulator::Pairs(a + b),
            (Accumulator::Diagonal(a), Accumulator::Diagonal(b)) => Accumulator::Diagonal(a + b),
            _ => unreachable!("accumulators of one kernel have one layout"),
        }
    }

    fn scale(self, c: f64) -> Accumulator {
        match self {
            Accumulator::Full(a) => Accumulator::Full(a.mul_scalar(c)),
            Accumulator::FullHost(mut a) => {
                a.scale(c);
                Accumulator::FullHost(a)
            }
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
            Accumulator::FullHost(_) => unreachable!("host sums take coefficients in add_gram"),
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

/// The coefficient multiplying a Gram of cotangent-derived vectors.
#[derive(Debug, Clone)]
pub enum Coeff {
    /// The same number for every sample pair.
    Scalar(f64),
    /// `[N1, N2]`, one number per sample pair.
    Pairs(Tensor<2>),
}

/// The running sum of layer contributions.
#[derive(Debug)]
pub struct KernelSum {
    pub(crate) kind: KernelKind,
    pub(crate) acc: Option<Accumulator>,
}

impl KernelSum {
    /// An empty sum; full kernels on CPU backends are summed on the host ([`host_gram`])
    /// unless `tensor_contraction` is set. `symmetric` means `x2 = x1`.
    pub(crate) fn new(
        kind: KernelKind,
        dims: (usize, usize, usize),
        symmetric: bool,
        device: &Device,
        dtype: burn::tensor::DType,
        tensor_contraction: bool,
    ) -> KernelSum {
        let (n1, n2, k) = dims;
        let acc = (kind == KernelKind::Full && !tensor_contraction && is_cpu(device))
            .then(|| Accumulator::FullHost(FullGram::zeros(n1, n2, k, symmetric, dtype)));
        KernelSum { kind, acc }
    }

    /// Adds `c[n1, n2] · Σ_f u1[n1, k, f] u2[n2, k', f]` (in the layout of the kind);
    /// `u2 = None` means `u2 = u1`.
    pub fn add_gram(&mut self, u1: Tensor<3>, u2: Option<Tensor<3>>, coeff: Coeff) {
        if let Some(Accumulator::FullHost(g)) = &mut self.acc {
            let coeff = match coeff {
                Coeff::Scalar(c) => PairCoeff::Scalar(c),
                Coeff::Pairs(c) => PairCoeff::from_tensor(c),
            };
            g.add_gram(u1, u2, &coeff);
            return;
        }
        let u2 = u2.unwrap_or_else(|| u1.clone());
        let term = seed_gram(self.kind, u1, u2);
        let term = match coeff {
            Coeff::Scalar(c) => term.scale(c),
            Coeff::Pairs(c) => term.times_pairs(c),
        };
        self.add_term(term);
    }

    /// Adds `c[n1, n2] · Σ_f d1[n1, f] d2[n2, f] v[k, f] v[k', f]` to a full kernel summed
    /// on the host (see [`FullGram::add_factored_gram`]); only valid when [`Self::on_host`].
    pub fn add_factored_gram(
        &mut self,
        d1: Tensor<2>,
        d2: Option<Tensor<2>>,
        v: Tensor<2>,
        coeff: Tensor<2>,
    ) {
        let Some(Accumulator::FullHost(g)) = &mut self.acc else {
            unreachable!("factored Grams are only used on the host path")
        };
        g.add_factored_gram(d1, d2, v, &PairCoeff::from_tensor(coeff));
    }

    /// Adds the contribution of a layer whose cotangents are the output seeds `g`
    /// (`[N·K, O]`): on the host the Gram of one-hot seeds is the identity and costs
    /// nothing.
    pub fn add_seed_gram(&mut self, g1: Tensor<2>, g2: Option<Tensor<2>>, k: usize, coeff: Coeff) {
        if let Some(Accumulator::FullHost(g)) = &mut self.acc {
            let coeff = match coeff {
                Coeff::Scalar(c) => PairCoeff::Scalar(c),
                Coeff::Pairs(c) => PairCoeff::from_tensor(c),
            };
            g.add_identity(&coeff);
            return;
        }
        let split = |g: Tensor<2>| {
            let [rows, o] = g.dims();
            g.reshape([rows / k, k, o])
        };
        self.add_gram(split(g1), g2.map(split), coeff);
    }

    /// Adds a term already in accumulator layout.
    pub fn add_term(&mut self, term: Accumulator) {
        self.acc = Some(match self.acc.take() {
            None => term,
            Some(a) => a.add(term),
        });
    }

    /// Whether full kernels are summed on the host.
    pub fn on_host(&self) -> bool {
        matches!(self.acc, Some(Accumulator::FullHost(_)))
    }
}

/// Whether a device runs on the CPU (where the host contraction is the fast path).
pub fn is_cpu(device: &Device) -> bool {
    matches!(
        device.as_dispatch(),
        DispatchDevice::Flex(_) | DispatchDevice::NdArray(_)
    )
}

/// Options of the structured method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StructuredOptions {
    /// How conv2d weight contributions are contracted.
    pub conv: ConvStrategy,
    /// Contract full kernels with burn tensor ops even on CPU backends (the GPU path),
    /// instead of the fused host contraction of [`host_gram`].
    pub tensor_contraction: bool,
}

/// The structured-derivative kernel of `net` between two input batches, in accumulator
/// layout (see [`finish`]). `x2 = None` means `x2 = x1` (cotangents computed once, and
/// on CPU backends only the upper half of a full kernel is contracted).
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
    let t_start = std::time::Instant::now();
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
    let device = net.device();
    let mut sum = KernelSum::new(
        kind,
        (n1, n2, k),
        same,
        &device,
        net.dtype(),
        options.tensor_contraction,
    );

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
    // Only the last layer's output cotangents are the seeds themselves.
    let mut at_seeds = true;
    let profile = crate::profiling();
    let mut clock = std::time::Instant::now();
    let mut lap = |what: String| {
        if profile {
            eprintln!(
                "[profile] {what}: {:.2} ms",
                clock.elapsed().as_secs_f64() * 1e3
            );
            clock = std::time::Instant::now();
        }
    };
    if profile {
        eprintln!(
            "[profile] forward + seeds + setup: {:.2} ms",
            t_start.elapsed().as_secs_f64() * 1e3
        );
    }
    for i in (0..net.layers.len()).rev() {
        let (a1, a2) = (&in1[i], &in2_ref[i]);
        let x2_of = |a2: &Features| (!same).then(|| a2.clone());
        match &net.layers[i] {
            Layer::Dense(layer) if sum.on_host() && !at_seeds && factored_readout_after(net, i) => {
                // g[n, k, :] = d[n, :] ⊙ v[k, :]: the activations' derivatives carried back
                // from an all-ones seed, times the readout's scaled weight rows.
                let Layer::Dense(readout) = &net.layers[net.layers.len() - 1] else {
                    unreachable!("checked by factored_readout_after")
                };
                let v = readout.weight.val().mul_scalar(readout.weight_scale);
                let f = v.dims()[1];
                let carry = |ins: &[Features], n: usize| {
                    ones_carried_back(net, ins, i, n, f)
                        .flat()
                        .expect("dense output cotangent")
                };
                let d1 = carry(&in1, n1);
                let d2 = (!same).then(|| carry(in2_ref, n2));
                dense::accumulate_factored(
                    &mut sum,
                    layer,
                    a1.clone().flat().expect("dense input"),
                    x2_of(a2).map(|a| a.flat().expect("dense input")),
                    d1,
                    d2,
                    v,
                );
            }
            Layer::Dense(layer) => dense::accumulate(
                &mut sum,
                layer,
                a1.clone().flat().expect("dense input"),
                x2_of(a2).map(|a| a.flat().expect("dense input")),
                g1.clone().flat().expect("dense cotangent"),
                g2.clone().map(|g| g.flat().expect("dense cotangent")),
                k,
                at_seeds && !sum_of_logits,
            ),
            Layer::Conv2d(layer) if pooled_readout_after(net, i) => {
                // All-ones seed at the readout's input, carried back to this layer's output.
                let v = readout_seeds(net, sum_of_logits);
                let c = v.dims()[1];
                let carry = |ins: &[Features], n: usize| {
                    ones_carried_back(net, ins, i, n, c)
                        .image()
                        .expect("conv output cotangent")
                };
                let u1 = carry(&in1, n1);
                let u2 = (!same).then(|| carry(in2_ref, n2));
                conv::accumulate_pooled_readout(
                    &mut sum,
                    layer,
                    a1.clone().image().expect("conv input"),
                    x2_of(a2).map(|a| a.image().expect("conv input")),
                    u1,
                    u2,
                    v,
                    kind,
                );
            }
            Layer::Conv2d(layer) => conv::accumulate(
                &mut sum,
                layer,
                a1.clone().image().expect("conv input"),
                x2_of(a2).map(|a| a.image().expect("conv input")),
                g1.clone().image().expect("conv cotangent"),
                g2.clone().map(|g| g.image().expect("conv cotangent")),
                k,
                kind,
                options.conv,
            ),
            Layer::Stateless(_) => {}
        }
        lap(format!("layer {i} contribution"));
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
        at_seeds = false;
        g1 = back(g1, a1);
        g2 = g2.map(|g| back(g, a2));
        lap(format!("layer {i} vjp"));
    }
    match sum.acc {
        Some(acc) => acc,
        None => {
            // A network without parameters: the NTK is zero.
            let opts = (&device, net.dtype());
            match kind {
                KernelKind::Full => Accumulator::Full(Tensor::zeros([n1, k, n2, k], opts)),
                KernelKind::Diagonal => Accumulator::Diagonal(Tensor::zeros([k, n1, n2], opts)),
                _ => Accumulator::Pairs(Tensor::zeros([n1, n2], opts)),
            }
        }
    }
}

/// Whether conv layer `i` is followed only by activations, one global average pooling
/// (and flattens/activations after it) and then the final dense readout: the pattern of
/// [`conv::accumulate_pooled_readout`].
pub fn pooled_readout_after(net: &Network, i: usize) -> bool {
    use ntk_nets::layers::StatelessOp;
    let last = net.layers.len() - 1;
    if i >= last || !matches!(net.layers[last], Layer::Dense(_)) {
        return false;
    }
    let mut pooled = false;
    for l in &net.layers[i + 1..last] {
        match l {
            Layer::Stateless(s) => match s.op {
                StatelessOp::Activation(_) => {}
                StatelessOp::GlobalAvgPool if !pooled => pooled = true,
                StatelessOp::Flatten if pooled => {}
                _ => return false,
            },
            _ => return false,
        }
    }
    pooled
}

/// An all-ones cotangent `[n, width]` at the readout's input, carried back through the
/// parameter-free layers between layer `i` and the readout to layer `i`'s output (one
/// seed, `K = 1`). `ins`: the forward inputs of every layer. The callers check that only
/// stateless layers lie in between ([`factored_readout_after`], [`pooled_readout_after`]).
fn ones_carried_back(
    net: &Network,
    ins: &[Features],
    i: usize,
    n: usize,
    width: usize,
) -> Features {
    let mut u = Features::Flat(Tensor::ones([n, width], (&net.device(), net.dtype())));
    for l in (i + 1..net.layers.len() - 1).rev() {
        let Layer::Stateless(st) = &net.layers[l] else {
            unreachable!("only parameter-free layers between layer i and the readout")
        };
        u = cotangent::stateless_vjp(st.op, &ins[l], u, 1);
    }
    u
}

/// Whether dense layer `i` is followed only by elementwise activations and then the final
/// dense readout, so that its cotangents factor as `d[n, :] ⊙ v[k, :]` (see
/// [`host_gram::FullGram::add_factored_gram`]).
pub fn factored_readout_after(net: &Network, i: usize) -> bool {
    use ntk_nets::layers::StatelessOp;
    let last = net.layers.len() - 1;
    i < last
        && matches!(net.layers[i], Layer::Dense(_))
        && matches!(net.layers[last], Layer::Dense(_))
        && net.layers[i + 1..last]
            .iter()
            .all(|l| matches!(l, Layer::Stateless(s) if matches!(s.op, StatelessOp::Activation(_))))
}

/// The readout's seed vectors at its input, `s_out·W_out` (`[O, C]`), or their sum over
/// outputs (`[1, C]`) for sum-of-logits.
fn readout_seeds(net: &Network, sum_of_logits: bool) -> Tensor<2> {
    let Layer::Dense(d) = &net.layers[net.layers.len() - 1] else {
        unreachable!("checked by pooled_readout_after")
    };
    let v = d.weight.val().mul_scalar(d.weight_scale);
    if sum_of_logits { v.sum_dim(0) } else { v }
}

/// Turns an accumulator into the kernel in neural-tangents' layout and normalisation,
/// on the host in f64: full `[N1, N2, O, O]`, diagonal `[N1, N2, O]`, trace and
/// sum-of-logits `[N1, N2]` divided by O.
pub fn finish(acc: Accumulator, kind: KernelKind, n_outputs: usize) -> HostArray {
    let acc = match kind {
        KernelKind::Trace | KernelKind::SumOfLogits => acc.scale(1.0 / n_outputs as f64),
        _ => acc,
    };
    match acc {
        Accumulator::Full(a) => to_host(a.permute([0, 2, 1, 3])),
        Accumulator::FullHost(a) => a.into_host(),
        Accumulator::Diagonal(a) => to_host(a.permute([1, 2, 0])),
        Accumulator::Pairs(a) => to_host(a),
    }
}
