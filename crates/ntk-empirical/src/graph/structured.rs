//! Structured derivatives on graph networks.
//!
//! 1. The batch `x1 ∪ x2` is repeated K times (row `r = n·K + k`) and run forward once
//!    on burn's autodiff device with the parameters frozen; at the output of every node
//!    that consumes a selected parameter a zero probe is added, and the node's inputs are
//!    kept.
//! 2. One backward pass of `Σ_r f_{r, k(r)}` (one-hot seeds; all ones for sum-of-logits)
//!    gives each probe's gradient: the cotangents `g_r = ∂f_{k(r)}(x_n)/∂y` at every
//!    consumer, for all rows at once.
//! 3. Per parameter, the op family's rule ([`super::rules`]) gives the per-row gradient
//!    `[R, P_l]` from the node's inputs and `g`; a parameter reached through transposes
//!    is mapped back to its own layout, consumers of one parameter are summed; its Gram
//!    `J_l(x1) J_l(x2)ᵀ` is added to the kernel, one parameter at a time. A conv weight
//!    with a small output map is contracted in the pixel-pair form instead, never
//!    forming its per-row gradient (`conv` strategy, the cost model of the sequential
//!    engine).

use super::rules::{self, Site, unsupported};
use crate::error::{EmpiricalError, Result};
use crate::kernel::KernelKind;
use crate::structured::conv::ConvCostInputs;
use crate::structured::{Accumulator, Coeff, ConvStrategy, KernelSum};
use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use ntk_nets::HostArray;
use ntk_nets::graph::ops::Op;
use ntk_nets::graph::ops::shape::ShapeOp;
use ntk_nets::graph::value::{FloatValue, MAX_RANK, Value};
use ntk_nets::graph::{GraphNetwork, NodeKind, Tap};
use std::collections::BTreeMap;

/// One use of a selected parameter by an op (through layout nodes `chain`).
#[derive(Debug, Clone)]
pub struct Consumer {
    pub node: usize,
    pub slot: usize,
    pub param: usize,
    pub chain: Vec<usize>,
}

/// Every use of a selected parameter; a parameter used by an op no rule covers, or reached
/// through a reshape by more than one consumer, is an error naming the node.
pub fn consumers(net: &GraphNetwork) -> Result<Vec<Consumer>> {
    let g = &net.graph;
    let mut out = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        let NodeKind::Op(op) = &node.kind else {
            continue;
        };
        if op.is_layout() || g.is_param_scaling(i) {
            continue;
        }
        for (slot, input) in node.inputs.iter().enumerate() {
            let Some(j) = *input else { continue };
            if let Some((p, chain)) = g.param_source(j)
                && net.selected[p]
            {
                out.push(Consumer {
                    node: i,
                    slot,
                    param: p,
                    chain,
                });
            }
        }
    }
    let mut uses: BTreeMap<usize, usize> = BTreeMap::new();
    for c in &out {
        *uses.entry(c.param).or_default() += 1;
    }
    for c in &out {
        let reshaped = c.chain.iter().any(|&n| {
            !matches!(
                &g.nodes[n].kind,
                NodeKind::Op(Op::Shape(
                    ShapeOp::Transpose { .. } | ShapeOp::Identity | ShapeOp::Cast { .. }
                ))
            ) && g.scalar_factor(n).is_none()
        });
        if reshaped && uses[&c.param] > 1 {
            return Err(unsupported(format!(
                "parameter {:?} is reshaped and used by several nodes",
                g.params[c.param].name
            )));
        }
    }
    Ok(out)
}

/// What the memory plan needs to know of a network, from a dry run of one sample.
#[derive(Debug, Clone, Default)]
pub struct ProbeSizes {
    /// Outputs O.
    pub outputs: usize,
    /// Elements per sample of every consumer's inputs and output.
    pub activations: usize,
    /// `(parameter, sizes)` of the conv weights that may be contracted in the pixel-pair
    /// form (one consumer, ungrouped, no layout chain); `n1`, `n2`, `k` are left 0.
    pub convs: Vec<(usize, ConvCostInputs)>,
}

/// Conv weights with one consumer, reached directly (no layout chain), in an ungrouped
/// Conv: the candidates of the pixel-pair form, by consumer node.
fn pixel_pair_candidates(net: &GraphNetwork, cons: &[Consumer]) -> BTreeMap<usize, usize> {
    let mut uses: BTreeMap<usize, usize> = BTreeMap::new();
    for c in cons {
        *uses.entry(c.param).or_default() += 1;
    }
    cons.iter()
        .filter(|c| {
            uses[&c.param] == 1
                && c.slot == 1
                && c.chain.is_empty()
                && matches!(&net.graph.nodes[c.node].kind, NodeKind::Op(Op::Conv(op)) if op.groups == 1)
        })
        .map(|c| (c.node, c.param))
        .collect()
}

/// Output count O, the elements per sample of every consumer's inputs and output, and
/// the pixel-pair candidates' sizes (for memory planning), from a dry run of one sample.
pub fn probe_sizes(net: &GraphNetwork) -> Result<ProbeSizes> {
    let cons = consumers(net).unwrap_or_default();
    let mut tapped = vec![false; net.graph.nodes.len()];
    for c in &cons {
        tapped[c.node] = true;
    }
    // Counts the activations a row keeps: each consumer's output (and its cotangent) and
    // its inputs other than the parameters.
    struct Count {
        numel: usize,
        params: std::collections::HashSet<(usize, usize)>,
        candidates: BTreeMap<usize, usize>,
        convs: Vec<(usize, ConvCostInputs)>,
    }
    impl Tap for Count {
        fn tap(
            &mut self,
            node: usize,
            inputs: &[Option<&Value>],
            output: FloatValue,
        ) -> FloatValue {
            self.numel += output.numel();
            for (slot, v) in inputs.iter().enumerate() {
                if let Some(Value::Float(f)) = v
                    && !self.params.contains(&(node, slot))
                {
                    self.numel += f.numel();
                }
            }
            if let (Some(&p), Some(Some(Value::Float(w)))) =
                (self.candidates.get(&node), inputs.get(1))
            {
                if let Some(c) = rules::conv::cost_inputs(&w.shape(), &output.shape(), 0, 0, 0) {
                    self.convs.push((p, c));
                }
            }
            output
        }
    }
    let numel: usize = net.input_shape().iter().product();
    let x = HostArray::new(
        std::iter::once(1)
            .chain(net.input_shape().iter().copied())
            .collect(),
        vec![0.0; numel],
    );
    let device = net.device();
    let mut count = Count {
        numel: 0,
        params: cons.iter().map(|c| (c.node, c.slot)).collect(),
        candidates: pixel_pair_candidates(net, &cons),
        convs: Vec::new(),
    };
    let f = net.forward_tapped(net.input(&x, &device)?, &tapped, &mut count)?;
    Ok(ProbeSizes {
        outputs: f.dims()[1],
        activations: count.numel,
        convs: count.convs,
    })
}

struct Probes {
    saved: BTreeMap<usize, Vec<Option<FloatValue>>>,
    probes: BTreeMap<usize, (Tensor<MAX_RANK>, usize)>,
}

impl Tap for Probes {
    fn tap(&mut self, node: usize, inputs: &[Option<&Value>], output: FloatValue) -> FloatValue {
        let kept = inputs
            .iter()
            .map(|v| match v {
                Some(Value::Float(f)) => Some(FloatValue::new(f.t.clone().inner(), f.rank)),
                _ => None,
            })
            .collect();
        self.saved.insert(node, kept);
        let probe =
            Tensor::<MAX_RANK>::zeros(output.t.dims(), (&output.t.device(), output.t.dtype()))
                .require_grad();
        self.probes.insert(node, (probe.clone(), output.rank));
        FloatValue::new(output.t + probe, output.rank)
    }
}

/// The kernel sum of the structured method, and the number of outputs O.
pub fn kernel(
    net: &GraphNetwork,
    x1: &HostArray,
    x2: Option<&HostArray>,
    kind: KernelKind,
    conv: ConvStrategy,
    cancel: &crate::Cancel,
    groups: Option<&super::per_layer::ParamGroups>,
) -> Result<(Vec<KernelSum>, usize)> {
    let t0 = std::time::Instant::now();
    let prof = crate::profiling();
    let cons = consumers(net)?;
    let n1 = x1.len();
    let n2 = x2.map_or(n1, |x| x.len());
    let both = match x2 {
        None => x1.clone(),
        Some(x2) => {
            let mut data = x1.data.clone();
            data.extend_from_slice(&x2.data);
            let mut shape = x1.shape.clone();
            shape[0] = n1 + n2;
            HostArray::new(shape, data)
        }
    };
    let n = both.len();
    let base = net.device();
    let o = net.n_outputs();
    let sol = kind == KernelKind::SumOfLogits;
    let k = if sol { 1 } else { o };
    let rows = n * k;
    // Rows r = s·K + k: every sample repeated K times.
    let numel = both.data.len() / n.max(1);
    let mut rep = Vec::with_capacity(rows * numel);
    for s in 0..n {
        for _ in 0..k {
            rep.extend_from_slice(&both.data[s * numel..(s + 1) * numel]);
        }
    }
    let ad = base.autodiff();
    let model = net.clone().fork(&ad).no_grad();
    let x = Tensor::<2>::from_data(TensorData::new(rep, [rows, numel]), (&ad, net.dtype()));
    let mut tapped = vec![false; net.graph.nodes.len()];
    for c in &cons {
        tapped[c.node] = true;
    }
    let mut probes = Probes {
        saved: BTreeMap::new(),
        probes: BTreeMap::new(),
    };
    let f = model.forward_tapped(x, &tapped, &mut probes)?;
    let mut seed = vec![0.0; rows * o];
    for r in 0..rows {
        if sol {
            seed[r * o..(r + 1) * o].fill(1.0);
        } else {
            seed[r * o + r % k] = 1.0;
        }
    }
    let seed = Tensor::<2>::from_data(TensorData::new(seed, [rows, o]), (&ad, net.dtype()));
    cancel.check()?;
    let grads = (f * seed).sum().backward();
    if prof {
        eprintln!(
            "[profile] graph forward+backward ({rows} rows): {:.2} ms",
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
    let cot: BTreeMap<usize, FloatValue> = probes
        .probes
        .iter()
        .map(|(&node, (p, rank))| {
            let g = p.grad(&grads).unwrap_or_else(|| p.zeros_like().inner());
            (node, FloatValue::new(g, *rank))
        })
        .collect();
    drop(grads);
    // Per parameter: sum of its consumers' per-row gradients, in its own layout.
    let mut by_param: BTreeMap<usize, Vec<&Consumer>> = BTreeMap::new();
    for c in &cons {
        by_param.entry(c.param).or_default().push(c);
    }
    let candidates = pixel_pair_candidates(net, &cons);
    let n_groups = groups.map_or(1, |g| g.len());
    let mut sums: Vec<KernelSum> = (0..n_groups)
        .map(|_| super::kernel_sum(net, kind, n1, n2, k, x2.is_none()))
        .collect();
    for (p, cs) in by_param {
        cancel.check()?;
        // The sum this parameter's contribution goes to (its group's, per layer).
        let sum = &mut sums[groups.map_or(0, |g| g.of(p))];
        let t1 = std::time::Instant::now();
        let candidate = match cs.as_slice() {
            [c] if conv != ConvStrategy::Im2col && candidates.contains_key(&c.node) => Some(*c),
            _ => None,
        };
        let n2_side = x2.map(|_| n2);
        if let Some(c) = candidate
            && let Some(term) = pixel_pair_term(
                net,
                c,
                &probes.saved,
                &cot,
                rows,
                k,
                n1,
                n2_side,
                kind,
                conv,
            )?
        {
            sum.add_term(term);
            if prof {
                eprintln!(
                    "[profile] parameter {} (pixel pairs): {:.2} ms",
                    net.graph.params[p].name,
                    t1.elapsed().as_secs_f64() * 1e3
                );
            }
            continue;
        }
        let mut total: Option<Tensor<2>> = None;
        for c in cs {
            let node = &net.graph.nodes[c.node];
            let NodeKind::Op(op) = &node.kind else {
                unreachable!("consumers are ops")
            };
            let site = Site {
                op,
                slot: c.slot,
                inputs: &probes.saved[&c.node],
                g: &cot[&c.node],
                rows,
                seeds: k,
            };
            let grad = rules::param_gradient(&site)
                .map_err(|e| name_node(e, &node.name, op.type_name()))?;
            let grad = back_to_param(net, c, grad)?;
            let want = net.graph.params[p].shape.iter().product::<usize>();
            if grad.shape().first() != Some(&rows) || grad.numel() != rows * want {
                return Err(name_node(
                    unsupported(format!(
                        "the per-row gradient {:?} of parameter {:?} does not fit {rows} rows × {want} values",
                        grad.shape(),
                        net.graph.params[p].name
                    )),
                    &node.name,
                    op.type_name(),
                ));
            }
            let flat = grad
                .t
                .reshape([rows, net.graph.params[p].shape.iter().product::<usize>()]);
            total = Some(match total {
                None => flat,
                Some(t) => t + flat,
            });
        }
        let Some(jp) = total else { continue };
        let width = jp.dims()[1];
        let j1 = jp.clone().narrow(0, 0, n1 * k).reshape([n1, k, width]);
        let j2 = x2.map(|_| jp.narrow(0, n1 * k, n2 * k).reshape([n2, k, width]));
        sum.add_gram(j1, j2, Coeff::Scalar(1.0));
        if prof {
            eprintln!(
                "[profile] parameter {}: {:.2} ms",
                net.graph.params[p].name,
                t1.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    Ok((sums, o))
}

/// The contribution of a conv weight in the pixel-pair form ([`rules::conv`]) when it is
/// a candidate (see [`pixel_pair_candidates`]) and `conv` or the cost model picks that
/// form; `None` otherwise (the per-row gradient path).
#[allow(clippy::too_many_arguments)]
fn pixel_pair_term(
    net: &GraphNetwork,
    c: &Consumer,
    saved: &BTreeMap<usize, Vec<Option<FloatValue>>>,
    cot: &BTreeMap<usize, FloatValue>,
    rows: usize,
    k: usize,
    n1: usize,
    n2: Option<usize>,
    kind: KernelKind,
    conv: ConvStrategy,
) -> Result<Option<Accumulator>> {
    let node = &net.graph.nodes[c.node];
    let NodeKind::Op(full @ Op::Conv(op)) = &node.kind else {
        return Ok(None);
    };
    let site = Site {
        op: full,
        slot: c.slot,
        inputs: &saved[&c.node],
        g: &cot[&c.node],
        rows,
        seeds: k,
    };
    let Some(cost) = rules::conv::pixel_pair_cost(op, &site, n1, n2) else {
        return Ok(None);
    };
    if conv.resolve(&cost, kind) != ConvStrategy::PixelPairs {
        return Ok(None);
    }
    rules::conv::pixel_pair_term(op, &site, n1, n2, kind)
        .map(Some)
        .map_err(|e| name_node(e, &node.name, "Conv"))
}

fn name_node(e: EmpiricalError, node: &str, op: &str) -> EmpiricalError {
    match e {
        EmpiricalError::Option { option, message } => EmpiricalError::Option {
            option,
            message: format!("node {node:?} ({op}): {message}"),
        },
        e => e,
    }
}

/// Maps a per-row gradient of the parameter as the consumer sees it back through the
/// chain of layout nodes (inverse transposes; reshapes keep the row-major order).
fn back_to_param(net: &GraphNetwork, c: &Consumer, grad: FloatValue) -> Result<FloatValue> {
    let mut g = grad;
    for &n in c.chain.iter().rev() {
        if let NodeKind::Op(Op::Shape(ShapeOp::Transpose { perm })) = &net.graph.nodes[n].kind {
            let r = g.rank - 1;
            let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..r).rev().collect());
            // y = transpose(x, perm): y axis i is x axis perm[i]; the inverse puts it back.
            let mut inv = vec![0; r];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            let off = MAX_RANK - r;
            let mut axes = [0usize; MAX_RANK];
            for (i, a) in axes.iter_mut().enumerate() {
                *a = if i < off { i } else { inv[i - off] + off };
            }
            g = FloatValue::new(g.t.permute(axes), g.rank);
        } else if let Some((_, c)) = net.graph.scalar_factor(n) {
            // y = c·p: the gradient of p is c times that of y.
            g = g.map(|t| t.mul_scalar(c));
        }
    }
    Ok(g)
}
