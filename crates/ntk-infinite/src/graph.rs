//! Exact infinite-width kernels of graph specs (`docs/graph-spec.md`): residual joins,
//! channel concatenation, layer norm, pooling, on the layers of the spec (not on the ops
//! it lowers to), with neural-tangents `stax` v0.6.5 semantics.
//!
//! | graph node | stax | rule |
//! |---|---|---|
//! | `linear` (vectors, or tokens `[T, D]`), `conv2d` (`[C, H, W]`; stride, padding; no dilation or groups) | `Dense`, `Conv` | [`crate::dense`], [`crate::conv`]; the spec's `parameterization` |
//! | `relu`, `leaky_relu`, `erf` (`a·erf(b·x) + c`), `sigmoid_like`, `gelu` (exact), `tanh` | `Relu`, `LeakyRelu`, `Erf(a, b, c)`, `Sigmoid_like`, `Gelu`, `ElementwiseNumerical(tanh)` | [`crate::activation`] |
//! | `layer_norm` (`elementwise_affine: false`; over channels: vectors and tokens) | `LayerNorm(axis=-1, eps)` | [`crate::normalization`] |
//! | `add` | `FanOut` + `parallel` + `FanInSum` | [`crate::branching`]: kernels add |
//! | `concat` along channels | `FanInConcat(channel axis)` | [`crate::branching`]: channel-weighted mean |
//! | `avg_pool2d` (no padding), `global_avg_pool`, `mean` over positions, `flatten` | `AvgPool`, `GlobalAvgPool`, `Flatten` | [`crate::pooling`] |
//! | `sum` over positions | `GlobalSumPool` | `P²` × the mean's |
//! | `global_self_attention` (tokens; `linear_scaling`, NTK parameterization) | `GlobalSelfAttention(linear_scaling=True)` | [`crate::attention`] |
//! | `identity`, `dropout` (inference) | `Identity`, `Dropout(mode='test')` | nothing |
//! | `scale` (`value` c), `zero` | (linear) | `c²·K`, `0` |
//!
//! Refused before any computation, naming the node, where stax has no limit or raises:
//! `batch_norm` (its statistics are those of a batch), `max_pool2d`, `softmax`, `elu`,
//! `sigmoid` (stax's `Sigmoid_like` is another function), affine layer norms, products
//! of activations (`mul`, `matmul`, `div`), layout ops (`reshape`, `permute`, `select`),
//! learned tensors (`parameter`); a nonlinearity, a layer norm or a sum whose input is not
//! Gaussian (stax's `is_gaussian`: an affine layer must come first; channel
//! concatenation and flattening an image end it); and a sum of two branches that share a
//! random layer since they split (`x + x`: stax would add the kernels as if independent).

use crate::activation::ActivationKernel;
use crate::attention::Attention;
use crate::branching::{concat_weights, weighted_sum};
use crate::conv::ConvGeometry;
use crate::covariance::{Layout, PairBlock, input_covariance};
use crate::dense::Affine;
use crate::engine::{InfiniteKernels, InfiniteOptions, PairKernel, run_pairs};
use crate::error::{InfiniteError, Result};
use crate::normalization::layer_norm;
use crate::plan::{SampleVariances, Step, apply_linear, cached_tanh_rule, entries, pixels};
use crate::quadrature::GaussHermite;
use ntk_nets::graph::spec::{GraphSpec, SIGMOID_LIKE_SCALE, SpecNode};
use ntk_nets::{FeatureShape, HostArray};
use std::collections::BTreeSet;

/// The rule of one node.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// The input covariance.
    Input,
    /// The input block unchanged (identity, dropout, a flatten of a vector).
    Same,
    /// A rule linear in the features: affine layers, pooling, flatten.
    Linear(Step),
    /// A nonlinearity (needs both samples' variances at its input).
    Activation(ActivationKernel),
    /// Layer norm over channels (needs the variances too).
    LayerNorm { eps: f64 },
    /// `Σ_b w_b K_b`: a sum (all weights 1) or a channel concatenation.
    Join { weights: Vec<f64> },
    /// `c²·K` (`scale` by `c`; `zero` is `c = 0`).
    Scale(f64),
    /// Self-attention with linear scaling (needs each sample's own `[T, T]` covariance).
    Attention(Attention),
    /// The sum over all `pixels` positions (stax's `GlobalSumPool`): `P²` times the
    /// position-averaged kernels.
    GlobalSum { pixels: usize },
}

/// One node of the compiled graph.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelNode {
    pub name: String,
    pub rule: Rule,
    pub inputs: Vec<usize>,
    /// Layout of the node's output block.
    pub layout: Layout,
    /// Index of this node's slot in [`SampleVariances`] (nonlinearities and norms).
    pub variance_slot: Option<usize>,
    /// Whether the output depends on this node (others are skipped).
    pub needed: bool,
    /// The last node that reads this one's block.
    pub last_use: usize,
}

/// A graph spec compiled for the infinite-width recursions.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphPlan {
    /// The input as the covariance sees it (tokens `[T, D]` as channels-first `[D, 1, T]`).
    pub input: FeatureShape,
    /// `Some((T, D))` when the input is a sequence of tokens (transposed first).
    pub tokens: Option<(usize, usize)>,
    pub nodes: Vec<KernelNode>,
    pub output: usize,
    pub variance_slots: usize,
    pub symmetric: bool,
}

/// What the plan tracks of the features of each node while compiling.
#[derive(Clone)]
struct Features {
    layout: Layout,
    /// stax's `is_gaussian`: centred Gaussian with i.i.d. channels (after an affine layer).
    gaussian: bool,
    /// The random layers whose fresh randomness the (Gaussian) features are linear in.
    sources: BTreeSet<usize>,
}

fn refuse(node: &SpecNode, message: impl Into<String>) -> InfiniteError {
    InfiniteError::UnsupportedNode {
        node: node.name.clone(),
        op: node.ty.clone(),
        message: message.into(),
    }
}

/// Whether a node (or one it depends on) pools over positions, so that the position pairs
/// off the diagonal are needed.
fn pools(node: &SpecNode) -> bool {
    match node.ty.as_str() {
        "avg_pool2d" | "global_avg_pool" => true,
        "mean" | "sum" => true,
        // Mixes positions: needs the covariances of every position pair.
        "global_self_attention" => true,
        _ => false,
    }
}

impl GraphPlan {
    /// Compiles a graph spec (see the module doc for what is refused).
    pub fn build(spec: &GraphSpec, tanh_degree: usize) -> Result<GraphPlan> {
        let nodes = &spec.nodes;
        let input_shape = &nodes[0].shape;
        // Which nodes the output depends on.
        let mut needed = vec![false; nodes.len()];
        needed[spec.output] = true;
        for k in (0..nodes.len()).rev() {
            if needed[k] {
                for &i in &nodes[k].inputs {
                    needed[i] = true;
                }
            }
        }
        let full = nodes.iter().zip(&needed).any(|(n, &u)| u && pools(n));
        let spatial = |h: usize, w: usize| {
            if full {
                Layout::Full { h, w }
            } else {
                Layout::Diagonal { h, w }
            }
        };
        let (input, tokens, input_layout) = match input_shape.as_slice() {
            &[d] => (FeatureShape::Flat(d), None, Layout::Vector),
            &[t, d] => (
                FeatureShape::Image { c: d, h: 1, w: t },
                Some((t, d)),
                spatial(1, t),
            ),
            &[c, h, w] => (FeatureShape::Image { c, h, w }, None, spatial(h, w)),
            other => {
                return Err(refuse(
                    &nodes[0],
                    format!(
                        "input shape {other:?}: the infinite-width kernels take vectors [D], \
                         tokens [T, D] or images [C, H, W]"
                    ),
                ));
            }
        };
        let mut tanh_rule: Option<GaussHermite> = None;
        let mut feats: Vec<Features> = Vec::with_capacity(nodes.len());
        let mut out: Vec<KernelNode> = Vec::with_capacity(nodes.len());
        let mut slots = 0;
        for (k, node) in nodes.iter().enumerate() {
            if k == 0 {
                feats.push(Features {
                    layout: input_layout,
                    gaussian: false,
                    sources: BTreeSet::new(),
                });
                out.push(KernelNode {
                    name: node.name.clone(),
                    rule: Rule::Input,
                    inputs: vec![],
                    layout: input_layout,
                    variance_slot: None,
                    needed: true,
                    last_use: 0,
                });
                continue;
            }
            if !needed[k] {
                // Not on a path to the output: never computed, never checked.
                feats.push(feats[0].clone());
                out.push(KernelNode {
                    name: node.name.clone(),
                    rule: Rule::Same,
                    inputs: vec![],
                    layout: input_layout,
                    variance_slot: None,
                    needed: false,
                    last_use: k,
                });
                continue;
            }
            let ins: Vec<&Features> = node.inputs.iter().map(|&i| &feats[i]).collect();
            let in_shape = node
                .inputs
                .first()
                .map(|&i| nodes[i].shape.clone())
                .unwrap_or_default();
            let first = ins.first().copied().cloned();
            let (rule, f) =
                compile_node(spec, node, k, &ins, &in_shape, first, spatial, &mut || {
                    cached_tanh_rule(&mut tanh_rule, tanh_degree)
                })?;
            let variance_slot = match rule {
                Rule::Activation(_) | Rule::LayerNorm { .. } | Rule::Attention(_) => {
                    slots += 1;
                    Some(slots - 1)
                }
                _ => None,
            };
            out.push(KernelNode {
                name: node.name.clone(),
                rule,
                inputs: node.inputs.clone(),
                layout: f.layout,
                variance_slot,
                needed: true,
                last_use: k,
            });
            feats.push(f);
        }
        if feats[spec.output].layout != Layout::Vector {
            let node = &nodes[spec.output];
            return Err(refuse(
                node,
                format!(
                    "the output has shape {:?}: the network must end in a vector (flatten, \
                     global_avg_pool or mean over positions first)",
                    node.shape
                ),
            ));
        }
        for k in 0..out.len() {
            if out[k].needed {
                for i in out[k].inputs.clone() {
                    out[i].last_use = out[i].last_use.max(k);
                }
            }
        }
        let symmetric = !out
            .iter()
            .any(|n| n.needed && matches!(n.rule, Rule::Activation(ActivationKernel::Tanh(_))));
        Ok(GraphPlan {
            input,
            tokens,
            nodes: out,
            output: spec.output,
            variance_slots: slots,
            symmetric,
        })
    }

    /// One sample as the input covariance reads it (tokens transposed to channels first).
    fn sample<'a>(&self, x: &'a [f64]) -> std::borrow::Cow<'a, [f64]> {
        match self.tokens {
            None => std::borrow::Cow::Borrowed(x),
            Some((t, d)) => {
                let mut y = vec![0.0; t * d];
                for i in 0..t {
                    for c in 0..d {
                        y[c * t + i] = x[i * d + c];
                    }
                }
                std::borrow::Cow::Owned(y)
            }
        }
    }

    /// Runs the rules in order on the pair `(x, y)`; with `record`, `x = y`, no NTK, and
    /// the variances at each slot are read off the block itself and stored.
    fn evaluate(
        &self,
        x: &[f64],
        y: &[f64],
        given: Option<(&SampleVariances, &SampleVariances)>,
        mut record: Option<&mut SampleVariances>,
    ) -> PairBlock {
        let n = self.nodes.len();
        let mut blocks: Vec<Option<PairBlock>> = vec![None; n];
        let layout = self.nodes[0].layout;
        let nngp = input_covariance(self.input, layout, &self.sample(x), &self.sample(y));
        blocks[0] = Some(PairBlock {
            layout,
            ntk: given.map(|_| vec![0.0; nngp.len()]),
            nngp,
        });
        for k in 1..n {
            let node = &self.nodes[k];
            if !node.needed {
                continue;
            }
            // The first input's block, moved when this is its last reader.
            let take_first = |blocks: &mut Vec<Option<PairBlock>>| -> PairBlock {
                let i = node.inputs[0];
                let once = node.inputs.iter().filter(|&&j| j == i).count() == 1;
                if self.nodes[i].last_use == k && once {
                    blocks[i].take().expect("input block computed")
                } else {
                    blocks[i].clone().expect("input block computed")
                }
            };
            let block = match &node.rule {
                Rule::Input => unreachable!("only node 0 is the input"),
                Rule::Same => take_first(&mut blocks),
                Rule::Linear(step) => {
                    let mut b = take_first(&mut blocks);
                    apply_linear(step, &mut b);
                    b
                }
                Rule::Activation(_) | Rule::LayerNorm { .. } | Rule::Attention(_) => {
                    let mut b = take_first(&mut blocks);
                    let slot = node.variance_slot.expect("slot of a variance rule");
                    let recorded;
                    let (vx, vy) = match (&given, record.as_deref_mut()) {
                        (Some((vx, vy)), _) => (&vx[slot][..], &vy[slot][..]),
                        (None, Some(rec)) => {
                            // Attention keeps the whole own covariance `[T, T]`.
                            recorded = if matches!(node.rule, Rule::Attention(_)) {
                                b.nngp.clone()
                            } else {
                                b.layout.variances(&b.nngp)
                            };
                            rec.push(recorded.clone());
                            (&recorded[..], &recorded[..])
                        }
                        (None, None) => unreachable!("variances given or recorded"),
                    };
                    match &node.rule {
                        Rule::Activation(kernel) => kernel.apply(&mut b, vx, vy),
                        Rule::LayerNorm { eps } => layer_norm(&mut b, vx, vy, *eps),
                        Rule::Attention(a) => a.apply(&mut b, vx, vy),
                        _ => unreachable!(),
                    }
                    b
                }
                Rule::Join { weights } => {
                    let ins: Vec<&PairBlock> = node
                        .inputs
                        .iter()
                        .map(|&i| blocks[i].as_ref().expect("input block computed"))
                        .collect();
                    weighted_sum(&ins, weights)
                }
                Rule::GlobalSum { pixels } => {
                    let mut b = take_first(&mut blocks);
                    apply_linear(&Step::GlobalAvgPool, &mut b);
                    let p2 = (*pixels as f64).powi(2);
                    b.nngp.iter_mut().for_each(|v| *v *= p2);
                    if let Some(t) = b.ntk.as_mut() {
                        t.iter_mut().for_each(|v| *v *= p2);
                    }
                    b
                }
                Rule::Scale(c) => {
                    let mut b = take_first(&mut blocks);
                    let c2 = c * c;
                    b.nngp.iter_mut().for_each(|v| *v *= c2);
                    if let Some(t) = b.ntk.as_mut() {
                        t.iter_mut().for_each(|v| *v *= c2);
                    }
                    b
                }
            };
            for &i in &node.inputs {
                if self.nodes[i].last_use == k {
                    blocks[i] = None;
                }
            }
            blocks[k] = Some(block);
        }
        blocks[self.output].take().expect("output block computed")
    }
}

/// The rule and output features of one node.
#[allow(clippy::too_many_arguments)]
fn compile_node(
    spec: &GraphSpec,
    node: &SpecNode,
    k: usize,
    ins: &[&Features],
    in_shape: &[usize],
    first: Option<Features>,
    spatial: impl Fn(usize, usize) -> Layout,
    tanh: &mut dyn FnMut() -> Result<GaussHermite>,
) -> Result<(Rule, Features)> {
    let Some(mut f) = first else {
        return Err(refuse(
            node,
            "has no input (learned tensors have no infinite-width limit)",
        ));
    };
    let need_gaussian = |f: &Features, what: &str| -> Result<()> {
        if f.gaussian {
            Ok(())
        } else {
            Err(refuse(
                node,
                format!(
                    "the input of {what} must be Gaussian: put a linear or conv2d layer before \
                     it (stax has no infinite-width kernel for one on the raw input, after \
                     another nonlinearity, after a channel concat or after flattening an image)"
                ),
            ))
        }
    };
    let affine = |fan_in: usize| -> Affine {
        let w_std = node.float("w_std", 1.0);
        let b_std = node.float("b_std", 0.0);
        Affine {
            weight_variance: w_std * w_std,
            bias_variance: node.boolean("bias", true).then_some(b_std * b_std),
            fan_in,
            parameterization: spec.parameterization,
        }
    };
    let activation = |kernel: ActivationKernel, f: &mut Features| -> Result<Rule> {
        need_gaussian(f, &format!("{} (a nonlinearity)", node.ty))?;
        f.gaussian = false;
        f.sources.clear();
        Ok(Rule::Activation(kernel))
    };
    let rule = match node.ty.as_str() {
        "linear" => {
            if in_shape.len() > 2 {
                return Err(refuse(
                    node,
                    format!(
                        "a linear layer on {in_shape:?} acts on the last axis, which is not the \
                         channels of an image: flatten or pool first"
                    ),
                ));
            }
            f.gaussian = true;
            f.sources = BTreeSet::from([k]);
            Rule::Linear(Step::Affine {
                conv: None,
                affine: affine(*in_shape.last().unwrap_or(&1)),
            })
        }
        "conv2d" => {
            let out = &node.shape;
            if in_shape.len() != 3 || out.len() != 3 || f.layout == Layout::Vector {
                return Err(refuse(
                    node,
                    format!("conv2d needs [C, H, W], got {in_shape:?}"),
                ));
            }
            let pair = |field: &str, default: usize| -> Option<[usize; 2]> {
                match node.fields.get(field) {
                    None => Some([default; 2]),
                    Some(v) if v.is_u64() => v.as_u64().map(|x| [x as usize; 2]),
                    Some(v) => {
                        let a = v.as_array()?;
                        Some([a.first()?.as_u64()? as usize, a.get(1)?.as_u64()? as usize])
                    }
                }
            };
            let kernel = pair("kernel_size", 1).unwrap_or([1, 1]);
            let stride = pair("stride", 1).unwrap_or([1, 1]);
            if pair("dilation", 1) != Some([1, 1]) || node.float("groups", 1.0) != 1.0 {
                return Err(refuse(
                    node,
                    "dilated or grouped convolutions: stax's Conv has neither",
                ));
            }
            let (h, w) = (in_shape[1], in_shape[2]);
            let pad_before = match node.fields.get("padding").and_then(|v| v.as_str()) {
                Some("same") => {
                    let total = |n: usize, o: usize, k: usize, s: usize| {
                        ((o - 1) * s + k).saturating_sub(n)
                    };
                    [
                        total(h, out[1], kernel[0], stride[0]) / 2,
                        total(w, out[2], kernel[1], stride[1]) / 2,
                    ]
                }
                Some(_) => [0, 0],
                None => {
                    let p = pair("padding", 0).unwrap_or([0, 0]);
                    [p[0], p[1]]
                }
            };
            f.layout = match f.layout {
                Layout::Full { .. } => Layout::Full {
                    h: out[1],
                    w: out[2],
                },
                _ => spatial(out[1], out[2]),
            };
            f.gaussian = true;
            f.sources = BTreeSet::from([k]);
            Rule::Linear(Step::Affine {
                conv: Some(ConvGeometry {
                    kernel,
                    stride,
                    pad_before,
                    out: [out[1], out[2]],
                }),
                affine: affine(in_shape[0] * kernel[0] * kernel[1]),
            })
        }
        "relu" => activation(ActivationKernel::Relu, &mut f)?,
        "leaky_relu" => activation(
            ActivationKernel::ABRelu {
                a: node.float("negative_slope", 0.01),
                b: 1.0,
            },
            &mut f,
        )?,
        "erf" => activation(
            ActivationKernel::Erf {
                a: node.float("a", 1.0),
                b: node.float("b", 1.0),
                c: node.float("c", 0.0),
            },
            &mut f,
        )?,
        "sigmoid_like" => activation(
            ActivationKernel::Erf {
                a: 0.5,
                b: 1.0 / SIGMOID_LIKE_SCALE,
                c: 0.5,
            },
            &mut f,
        )?,
        "gelu" => {
            if node.fields.get("approximate").and_then(|v| v.as_str()) == Some("tanh") {
                return Err(refuse(
                    node,
                    "the tanh approximation of gelu has no closed-form kernel here: use the \
                     exact gelu (approximate: none)",
                ));
            }
            activation(ActivationKernel::Gelu, &mut f)?
        }
        "tanh" => activation(ActivationKernel::Tanh(tanh()?), &mut f)?,
        "identity" | "dropout" => Rule::Same,
        "layer_norm" => {
            if node.boolean("elementwise_affine", true) {
                return Err(refuse(
                    node,
                    "a layer norm with learned scale and shift has no width-independent \
                     limit (stax's LayerNorm has none): set \"elementwise_affine\": false",
                ));
            }
            if in_shape.len() == 3 {
                return Err(refuse(
                    node,
                    "layer_norm normalises the last axis; on an image that is not the \
                     channels (stax needs the channel axis among the normalised ones)",
                ));
            }
            need_gaussian(&f, "layer_norm")?;
            Rule::LayerNorm {
                eps: node.float("eps", 1e-5),
            }
        }
        "add" => {
            if ins.len() != 2 {
                return Err(refuse(node, "add takes two inputs"));
            }
            let shapes: Vec<_> = node
                .inputs
                .iter()
                .map(|&i| spec.nodes[i].shape.clone())
                .collect();
            if shapes[0] != shapes[1] {
                return Err(refuse(
                    node,
                    format!("the branches have shapes {shapes:?}: broadcasting sums have no rule"),
                ));
            }
            for (b, &i) in ins.iter().zip(&node.inputs) {
                if !b.gaussian {
                    return Err(refuse(
                        node,
                        format!(
                            "branch {:?} is not Gaussian: stax's FanInSum needs every branch to \
                             end in a linear/conv layer (or pass one through identity, pooling, \
                             layer norm)",
                            spec.nodes[i].name
                        ),
                    ));
                }
            }
            if let Some(shared) = ins[0].sources.intersection(&ins[1].sources).next() {
                return Err(refuse(
                    node,
                    format!(
                        "both branches depend on the random layer {:?} with nothing random in \
                         between: they are not independent, and the infinite-width sum rule \
                         (kernels add) would be wrong",
                        spec.nodes[*shared].name
                    ),
                ));
            }
            f.sources = ins[0].sources.union(&ins[1].sources).copied().collect();
            Rule::Join {
                weights: vec![1.0, 1.0],
            }
        }
        "concat" => {
            let rank = in_shape.len() as i64 + 1;
            let dim = node.fields.get("dim").and_then(|v| v.as_i64()).unwrap_or(1);
            let dim = if dim < 0 { dim + rank } else { dim };
            let channel = if in_shape.len() == 3 { 1 } else { rank - 1 };
            if dim != channel {
                return Err(refuse(
                    node,
                    format!(
                        "concatenation along axis {dim}: only along channels (axis {channel}) \
                         has a rule here"
                    ),
                ));
            }
            if ins.iter().any(|b| b.layout != f.layout) {
                return Err(refuse(node, "the branches have different spatial sizes"));
            }
            let axis = (channel - 1) as usize;
            let channels: Vec<usize> = node
                .inputs
                .iter()
                .map(|&i| spec.nodes[i].shape[axis])
                .collect();
            f.gaussian = false;
            f.sources.clear();
            Rule::Join {
                weights: concat_weights(&channels),
            }
        }
        "avg_pool2d" => {
            let out = &node.shape;
            let zero_pad = match node.fields.get("padding") {
                None => true,
                Some(v) => {
                    v.as_u64() == Some(0)
                        || v.as_array()
                            .is_some_and(|a| a.iter().all(|x| x.as_u64() == Some(0)))
                }
            };
            let plain = zero_pad
                && !node.boolean("ceil_mode", false)
                && node
                    .fields
                    .get("dilation")
                    .is_none_or(|v| v.as_u64() == Some(1));
            if in_shape.len() != 3 || f.layout == Layout::Vector {
                return Err(refuse(
                    node,
                    format!("avg_pool2d on a {in_shape:?} input: the rule is for images [C, H, W]"),
                ));
            }
            if !plain {
                return Err(refuse(
                    node,
                    "avg_pool2d with padding, dilation or ceil_mode: stax's AvgPool rule here \
                     is the unpadded one",
                ));
            }
            let pair = |field: &str| -> Option<[usize; 2]> {
                let v = node.fields.get(field)?;
                if let Some(x) = v.as_u64() {
                    return Some([x as usize; 2]);
                }
                let a = v.as_array()?;
                Some([a.first()?.as_u64()? as usize, a.get(1)?.as_u64()? as usize])
            };
            let window = pair("kernel_size").unwrap_or([1, 1]);
            let stride = pair("stride").unwrap_or(window);
            f.layout = Layout::Full {
                h: out[1],
                w: out[2],
            };
            Rule::Linear(Step::AvgPool {
                window,
                stride,
                out: [out[1], out[2]],
            })
        }
        "global_avg_pool" => {
            // ONNX GlobalAveragePool averages every axis after the channels: over the
            // positions of [C, H, W], but over the features of tokens [T, D] (no limit).
            if in_shape.len() != 3 || f.layout == Layout::Vector {
                return Err(refuse(
                    node,
                    format!(
                        "global_avg_pool on a {in_shape:?} input: the rule is for images \
                         [C, H, W] (on tokens [T, D] it averages the features, which has no \
                         infinite-width limit; use mean over dim 1)"
                    ),
                ));
            }
            f.layout = Layout::Vector;
            Rule::Linear(Step::GlobalAvgPool)
        }
        "mean" | "sum" => {
            // Over all positions: [N, T, D] dim 1, [N, C, H, W] dims 2 and 3.
            let mut dims: Vec<i64> = match node.fields.get("dim") {
                Some(v) if v.is_i64() => vec![v.as_i64().unwrap_or(0)],
                Some(v) => v
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_i64()).collect())
                    .unwrap_or_default(),
                None => vec![],
            };
            let rank = in_shape.len() as i64 + 1;
            for d in dims.iter_mut() {
                if *d < 0 {
                    *d += rank;
                }
            }
            dims.sort_unstable();
            let positions: Vec<i64> = match in_shape.len() {
                2 => vec![1],
                3 => vec![2, 3],
                _ => vec![],
            };
            if dims != positions || f.layout == Layout::Vector {
                return Err(refuse(
                    node,
                    format!(
                        "a {} over {dims:?}: only the {0} over all positions ({positions:?}) \
                         has a rule (one over channels has no infinite-width limit)",
                        node.ty
                    ),
                ));
            }
            let pixels = f.layout.pixels();
            f.layout = Layout::Vector;
            if node.ty == "sum" {
                // stax's GlobalSumPool: P times the mean, P² times its kernels.
                Rule::GlobalSum { pixels }
            } else {
                Rule::Linear(Step::GlobalAvgPool)
            }
        }
        "flatten" => {
            if node
                .fields
                .get("start_dim")
                .and_then(|v| v.as_i64())
                .unwrap_or(1)
                != 1
            {
                return Err(refuse(node, "flatten with start_dim ≠ 1"));
            }
            if f.layout == Layout::Vector {
                Rule::Same
            } else {
                f.layout = Layout::Vector;
                f.gaussian = false;
                f.sources.clear();
                Rule::Linear(Step::Flatten)
            }
        }
        "global_self_attention" => {
            if in_shape.len() != 2 || !matches!(f.layout, Layout::Full { h: 1, .. }) {
                return Err(refuse(
                    node,
                    format!("global_self_attention on {in_shape:?}: the rule is for tokens [T, D]"),
                ));
            }
            if !node.boolean("linear_scaling", true) {
                return Err(refuse(
                    node,
                    "attention with 1/√n_key scaling has no closed-form limit (stax raises): \
                     set \"linear_scaling\": true (tied keys and queries, 1/n_key)",
                ));
            }
            if spec.parameterization != ntk_nets::Parameterization::Ntk {
                return Err(refuse(
                    node,
                    "stax's GlobalSelfAttention is NTK-parameterized: set the spec's \
                     \"parameterization\": \"ntk\" to compare with its limit",
                ));
            }
            let softmax = node
                .fields
                .get("attention_mechanism")
                .and_then(|v| v.as_str())
                != Some("identity");
            let b_std = node.float("b_std", 0.0);
            f.gaussian = true;
            f.sources = BTreeSet::from([k]);
            Rule::Attention(Attention {
                qk_std: node.float("w_query_std", 1.0) * node.float("w_key_std", 1.0),
                ov_std: node.float("w_out_std", 1.0) * node.float("w_value_std", 1.0),
                bias_variance: node.boolean("bias", true).then_some(b_std * b_std),
                softmax,
            })
        }
        "scale" => Rule::Scale(node.float("value", 1.0)),
        "zero" => {
            f.gaussian = true;
            f.sources.clear();
            Rule::Scale(0.0)
        }
        "batch_norm" => {
            return Err(refuse(
                node,
                "batch_norm has no infinite-width limit (its statistics are a batch's; stax has \
                 no BatchNorm): use layer_norm with \"elementwise_affine\": false, or compare \
                 the empirical kernel only",
            ));
        }
        "max_pool2d" => {
            return Err(refuse(
                node,
                "max_pool2d has no closed-form infinite-width kernel (stax has none): use \
                 avg_pool2d",
            ));
        }
        "elu" => return Err(refuse(node, "stax has no Elu kernel")),
        "sigmoid" => {
            return Err(refuse(
                node,
                "sigmoid (the logistic function) has no closed-form kernel: use \
                 sigmoid_like (stax's Sigmoid_like, ½·erf(x/2.402) + ½, within 0.02 of it), \
                 erf or tanh",
            ));
        }
        other => {
            return Err(refuse(
                node,
                format!(
                    "{other} has no infinite-width rule (products of activations, softmax, \
                     layout changes and learned tensors are not covered)"
                ),
            ));
        }
    };
    Ok((rule, f))
}

impl PairKernel for GraphPlan {
    fn sample_len(&self) -> usize {
        self.input.numel()
    }

    fn sample_variances(&self, x: &[f64]) -> SampleVariances {
        let mut rec = Vec::with_capacity(self.variance_slots);
        self.evaluate(x, x, None, Some(&mut rec));
        rec
    }

    fn pair(&self, x: &[f64], y: &[f64], vx: &SampleVariances, vy: &SampleVariances) -> (f64, f64) {
        let b = self.evaluate(x, y, Some((vx, vy)), None);
        (b.nngp[0], b.ntk.as_ref().map_or(0.0, |t| t[0]))
    }

    fn is_symmetric(&self) -> bool {
        self.symmetric
    }

    /// Per thread: the blocks alive at once at the worst node (each kept until its last
    /// reader), plus a conv's row-pass intermediate, for the NNGP and the NTK; plus the
    /// per-sample variances and the outputs.
    fn memory_estimate(&self, n1: usize, n2: usize, threads: usize) -> (u128, String) {
        let mut peak: u128 = 1;
        // Blocks alive at node k: computed at i ≤ k, last read at ≥ k (one sweep).
        let mut ends = vec![0u128; self.nodes.len() + 1];
        let mut live: u128 = 0;
        for k in 0..self.nodes.len() {
            live -= ends[k];
            if self.nodes[k].needed {
                let e = entries(self.nodes[k].layout);
                live += e;
                ends[self.nodes[k].last_use + 1] += e;
            }
            let mut inter = self.nodes[k]
                .inputs
                .iter()
                .map(|&i| entries(self.nodes[i].layout))
                .max()
                .unwrap_or(0);
            if matches!(self.nodes[k].rule, Rule::Attention(_)) {
                // Both samples' weights, and two [T, T] products per kernel.
                inter += 6 * entries(self.nodes[k].layout);
            }
            peak = peak.max(live + inter);
        }
        let per_thread = peak * 2 * 8;
        let per_sample: u128 = self
            .nodes
            .iter()
            .filter(|n| n.variance_slot.is_some())
            .map(|n| match n.rule {
                Rule::Attention(_) => entries(self.nodes[n.inputs[0]].layout),
                _ => pixels(self.nodes[n.inputs[0]].layout),
            })
            .sum::<u128>()
            * 8;
        let samples = (n1 as u128 + n2 as u128) * per_sample;
        let output = 2 * 8 * n1 as u128 * n2 as u128;
        let total = threads as u128 * per_thread + samples + output;
        let detail = format!(
            "{threads} thread(s) × {per_thread} bytes for the pair blocks alive at once \
             (position-pair covariances), {samples} bytes of per-sample variances, {output} \
             bytes of output"
        );
        (total, detail)
    }
}

/// The exact infinite-width NNGP and NTK of one output of a graph spec between the samples
/// of `x1` and `x2` (`None`: `x2 = x1`), with stax's conventions (see the module doc and
/// [`crate::kernels`]).
///
/// # Shapes
/// `x1`: `[N1, *input_shape]`, `x2`: `[N2, *input_shape]`; outputs `[N1, N2]`.
///
/// # Errors
/// A node without a rule (named), bad inputs, the memory bound, overflowing kernels.
pub fn graph_kernels(
    spec: &GraphSpec,
    x1: &HostArray,
    x2: Option<&HostArray>,
    options: &InfiniteOptions,
) -> Result<InfiniteKernels> {
    let plan = GraphPlan::build(spec, options.tanh_quadrature_degree)?;
    run_pairs(&plan, &spec.nodes[0].shape, x1, x2, options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntk_nets::graph::spec::parse;

    fn spec(nodes: &str, input: &str) -> GraphSpec {
        let text =
            format!(r#"{{"input_shape": {input}, "parameterization": "ntk", "nodes": {nodes}}}"#);
        parse(&text, "test").unwrap()
    }

    fn refused(nodes: &str, input: &str) -> (String, String) {
        match GraphPlan::build(&spec(nodes, input), 64).unwrap_err() {
            InfiniteError::UnsupportedNode { node, message, .. } => (node, message),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn nodes_without_a_limit_are_refused_by_name() {
        let cases = [
            (
                r#"[{"name":"c","type":"conv2d","out_channels":2,"kernel_size":3},{"name":"bn","type":"batch_norm"},{"name":"f","type":"flatten"},{"name":"o","type":"linear","out_features":1}]"#,
                "[1,4,4]",
                "bn",
                "batch_norm",
            ),
            (
                r#"[{"name":"c","type":"conv2d","out_channels":2,"kernel_size":1},{"name":"mp","type":"max_pool2d","kernel_size":2},{"name":"f","type":"flatten"},{"name":"o","type":"linear","out_features":1}]"#,
                "[1,4,4]",
                "mp",
                "max_pool2d",
            ),
            (
                r#"[{"name":"a","type":"linear","out_features":3},{"name":"ln","type":"layer_norm"},{"name":"o","type":"linear","out_features":1}]"#,
                "[4]",
                "ln",
                "elementwise_affine",
            ),
            (
                r#"[{"name":"r","type":"relu"},{"name":"o","type":"linear","out_features":1}]"#,
                "[4]",
                "r",
                "Gaussian",
            ),
            (
                r#"[{"name":"a","type":"linear","out_features":4},{"name":"s","type":"add","inputs":["a","a"]},{"name":"o","type":"linear","out_features":1}]"#,
                "[4]",
                "s",
                "\"a\"",
            ),
            (
                r#"[{"name":"a","type":"linear","out_features":4},{"name":"r","type":"relu"},{"name":"s","type":"add","inputs":["r","a"]},{"name":"o","type":"linear","out_features":1}]"#,
                "[4]",
                "s",
                "not Gaussian",
            ),
            (
                r#"[{"name":"a","type":"linear","out_features":4},{"name":"e","type":"elu"},{"name":"o","type":"linear","out_features":1}]"#,
                "[4]",
                "e",
                "Elu",
            ),
            (
                r#"[{"name":"a","type":"linear","out_features":4},{"name":"m","type":"mul","inputs":["a","a"]},{"name":"o","type":"linear","out_features":1}]"#,
                "[4]",
                "m",
                "no infinite-width rule",
            ),
            (
                r#"[{"name":"a","type":"linear","out_features":4}]"#,
                "[3,4]",
                "a",
                "end in a vector",
            ),
            (
                // On tokens GlobalAveragePool averages the features.
                r#"[{"name":"a","type":"linear","out_features":4},{"name":"g","type":"global_avg_pool"},{"name":"f","type":"flatten"},{"name":"o","type":"linear","out_features":1}]"#,
                "[3,4]",
                "g",
                "tokens [T, D]",
            ),
        ];
        for (nodes, input, node, words) in cases {
            let (n, m) = refused(nodes, input);
            assert_eq!(n, node, "{m}");
            assert!(m.contains(words), "{node}: {m}");
        }
        // Attention: 1/√n_key scaling has no closed form; the standard parameterization
        // is not stax's.
        let attn = |extra: &str| {
            format!(
                r#"[{{"name":"a","type":"linear","out_features":4}},{{"name":"t","type":"global_self_attention","n_chan_out":4,"n_chan_key":2,"n_chan_val":2,"n_heads":2{extra}}},{{"name":"m","type":"mean","dim":[1]}},{{"name":"o","type":"linear","out_features":1}}]"#
            )
        };
        let (n, m) = refused(&attn(r#","linear_scaling":false"#), "[3,4]");
        assert_eq!(n, "t");
        assert!(m.contains("no closed-form limit"), "{m}");
        let text = format!(
            r#"{{"input_shape": [3,4], "parameterization": "standard", "nodes": {}}}"#,
            attn("")
        );
        match GraphPlan::build(&parse(&text, "test").unwrap(), 64).unwrap_err() {
            InfiniteError::UnsupportedNode { node, message, .. } => {
                assert_eq!(node, "t");
                assert!(message.contains("NTK-parameterized"), "{message}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn branches_off_the_output_path_are_not_checked() {
        // "bn" feeds nothing that reaches the output.
        let s = spec(
            r#"[{"name":"a","type":"linear","out_features":3},{"name":"bn","type":"batch_norm","inputs":["a"]},{"name":"o","type":"linear","out_features":1,"inputs":["a"]}]"#,
            "[4]",
        );
        let plan = GraphPlan::build(&s, 64).unwrap();
        assert!(!plan.nodes[2].needed);
    }

    #[test]
    fn a_chain_equals_the_sequential_recursion() {
        // The same MLP as a graph and as a sequential spec (both NTK parameterization).
        let g = spec(
            r#"[{"name":"a","type":"linear","out_features":5,"w_std":1.3,"b_std":0.2},{"name":"r","type":"relu"},{"name":"b","type":"linear","out_features":5,"w_std":1.1,"b_std":0.1},{"name":"e","type":"erf"},{"name":"o","type":"linear","out_features":1,"w_std":0.9,"b_std":0.3}]"#,
            "[3]",
        );
        let seq = ntk_nets::NetworkSpec::from_json(
            r#"{"input_shape":[3],"parameterization":"ntk","layers":[{"type":"dense","width":5,"w_std":1.3,"b_std":0.2},{"type":"relu"},{"type":"dense","width":5,"w_std":1.1,"b_std":0.1},{"type":"erf"},{"type":"dense","width":1,"w_std":0.9,"b_std":0.3}]}"#,
        )
        .unwrap();
        let x = HostArray::new(
            vec![3, 3],
            vec![0.3, -1.2, 0.8, 1.5, 0.1, -0.4, -0.7, 0.9, 2.0],
        );
        let o = InfiniteOptions::default();
        let a = graph_kernels(&g, &x, None, &o).unwrap();
        let b = crate::kernels(&seq, &x, None, &o).unwrap();
        for (u, v) in a
            .ntk
            .data
            .iter()
            .zip(&b.ntk.data)
            .chain(a.nngp.data.iter().zip(&b.nngp.data))
        {
            assert!((u - v).abs() <= 1e-14 * v.abs(), "{u} vs {v}");
        }
    }

    #[test]
    fn scale_and_zero_edges() {
        // A NAS-Bench-201-like join of a dense edge with a scaled or a zero edge.
        let with = |edge: &str| {
            spec(
                &format!(
                    r#"[{{"name":"a","type":"linear","out_features":4}},{{"name":"b","type":"linear","out_features":4,"inputs":["input"]}},{{"name":"e",{edge},"inputs":["b"]}},{{"name":"s","type":"add","inputs":["a","e"]}},{{"name":"o","type":"linear","out_features":1}}]"#
                ),
                "[2]",
            )
        };
        let x = HostArray::new(vec![2, 2], vec![1.0, 0.5, -0.3, 0.8]);
        let o = InfiniteOptions::default();
        let zero = graph_kernels(&with(r#""type":"zero""#), &x, None, &o).unwrap();
        let scaled = graph_kernels(&with(r#""type":"scale","value":2.0"#), &x, None, &o).unwrap();
        // NNGP of a dense layer on the input: <x, y>/d; the zero edge leaves only "a", the
        // scale-2 edge adds 4× the same.
        for i in 0..4 {
            assert!((scaled.nngp.data[i] - 5.0 * zero.nngp.data[i]).abs() < 1e-14);
        }
    }
}
