//! Graph networks: a DAG of named nodes with one input and one output, from a graph spec
//! ([`spec`], JSON) or an ONNX file ([`onnx`]); ops in [`ops`], grouped by family.
//!
//! ```text
//! graph spec JSON ─┐                      ┌─ GraphNetwork::forward (burn tensors, autodiff-ready)
//!                  ├─► Graph (nodes, params,┤
//! model.onnx ──────┘   constants) ─────────└─ taps for the structured method (inputs and
//!                                               cotangent probes of parameter consumers)
//! ```
//!
//! Parameters are named (`"{node}.weight"`, or the ONNX initializer names, which are
//! PyTorch's `named_parameters()` names when exported with `do_constant_folding=False`),
//! so a `state_dict()` saved with safetensors replaces them by name. Constants (BatchNorm
//! running statistics, fixed buffers, shape operands) are not parameters.

pub mod onnx;
pub mod ops;
pub mod spec;
pub mod value;

use crate::array::HostArray;
use crate::backend::Precision;
use crate::error::{NetsError, Result};
use crate::network::to_host;
use burn::module::{Module, Param};
use burn::tensor::{DType, Device, Tensor, TensorData};
use ops::{Ctx, Op};
use std::collections::BTreeMap;
use std::sync::Arc;
use value::{FloatValue, IntValue, Value};

/// What a node is.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// The network input `[N, *input_shape]`.
    Input,
    /// Parameter `i` of [`Graph::params`].
    Param(usize),
    /// A constant: float data on the host (uploaded in the computation's dtype) or integers.
    Constant(Constant),
    /// An op applied to the node's inputs.
    Op(Op),
}

/// A constant of a graph.
#[derive(Debug, Clone)]
pub enum Constant {
    Float(HostArray),
    Ints(IntValue),
}

/// A node: a name (unique), what it is, and its inputs (node indices; `None` for an
/// omitted optional ONNX input).
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    pub inputs: Vec<Option<usize>>,
}

/// A parameter: its name and PyTorch-layout shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A validated graph: nodes in topological order (every input precedes its consumer).
#[derive(Debug, Clone)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub output: usize,
    /// Shape of one input sample.
    pub input_shape: Vec<usize>,
    pub params: Vec<ParamInfo>,
    /// The graph was exported with a fixed batch of 1 (see [`ops::Ctx::batch_one_export`]).
    pub batch_one_export: bool,
    /// For each node, the last node that reads it (values are dropped after it).
    pub last_use: Vec<usize>,
    /// Where the graph came from (for messages).
    pub source: String,
}

impl Graph {
    /// Builds the graph bookkeeping and checks the order, names and references.
    pub fn new(
        nodes: Vec<Node>,
        output: usize,
        input_shape: Vec<usize>,
        params: Vec<ParamInfo>,
        batch_one_export: bool,
        source: String,
    ) -> Result<Graph> {
        let mut last_use: Vec<usize> = (0..nodes.len()).collect();
        let mut inputs_seen = 0;
        for (i, n) in nodes.iter().enumerate() {
            for &j in n.inputs.iter().flatten() {
                if j >= i {
                    return Err(NetsError::Node {
                        node: n.name.clone(),
                        op: kind_name(&n.kind).into(),
                        message:
                            "reads a node that does not precede it (a cycle, or nodes out of order)"
                                .into(),
                    });
                }
                last_use[j] = i;
            }
            match n.kind {
                NodeKind::Input => inputs_seen += 1,
                NodeKind::Param(p) if p >= params.len() => {
                    return Err(NetsError::op(format!(
                        "node {:?} refers to a missing parameter",
                        n.name
                    )));
                }
                _ => {}
            }
        }
        if inputs_seen != 1 {
            return Err(NetsError::op(format!(
                "a graph needs exactly one input node, found {inputs_seen}"
            )));
        }
        if output >= nodes.len() {
            return Err(NetsError::op("the graph's output is not one of its nodes"));
        }
        last_use[output] = usize::MAX;
        Ok(Graph {
            nodes,
            output,
            input_shape,
            params,
            batch_one_export,
            last_use,
            source,
        })
    }

    /// Number of parameters.
    pub fn n_params(&self) -> usize {
        self.params
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }

    /// The parameter reached from node `id` through layout ops only (transposes,
    /// reshapes of a weight), with the layout nodes passed: `Some((param, chain))`.
    pub fn param_source(&self, mut id: usize) -> Option<(usize, Vec<usize>)> {
        let mut chain = Vec::new();
        loop {
            let n = &self.nodes[id];
            match &n.kind {
                NodeKind::Param(p) => {
                    chain.reverse();
                    return Some((*p, chain));
                }
                NodeKind::Op(op) if op.is_layout() => {
                    chain.push(id);
                    id = n.inputs.first().copied().flatten()?;
                }
                NodeKind::Op(_) => {
                    let (other, _) = self.scalar_factor(id)?;
                    chain.push(id);
                    id = other;
                }
                _ => return None,
            }
        }
    }

    /// `Some((x, c))` when node `id` is `x · c` with `c` a one-element float constant (the
    /// NTK parameterization's `b_std · b`): a parameter seen through it is still that
    /// parameter, scaled.
    pub fn scalar_factor(&self, id: usize) -> Option<(usize, f64)> {
        let n = &self.nodes[id];
        let NodeKind::Op(ops::Op::Elementwise(ops::elementwise::ElementwiseOp::Binary(
            ops::elementwise::Binary::Mul,
        ))) = &n.kind
        else {
            return None;
        };
        let (a, b) = (
            n.inputs.first().copied().flatten()?,
            n.inputs.get(1).copied().flatten()?,
        );
        let scalar = |i: usize| match &self.nodes[i].kind {
            NodeKind::Constant(Constant::Float(h)) if h.data.len() == 1 => Some(h.data[0]),
            _ => None,
        };
        match (scalar(a), scalar(b)) {
            (None, Some(c)) => Some((a, c)),
            (Some(c), None) => Some((b, c)),
            _ => None,
        }
    }

    /// Whether node `id` only scales a parameter by a constant (part of the parameter's
    /// chain, not a consumer of it).
    pub fn is_param_scaling(&self, id: usize) -> bool {
        self.scalar_factor(id)
            .is_some_and(|(x, _)| self.param_source(x).is_some())
    }
}

/// The name of a node's kind, for messages.
pub fn kind_name(k: &NodeKind) -> &'static str {
    match k {
        NodeKind::Input => "Input",
        NodeKind::Param(_) => "Parameter",
        NodeKind::Constant(_) => "Constant",
        NodeKind::Op(op) => op.type_name(),
    }
}

/// Runs an op's computation for `node`, naming the node in its errors and turning a panic
/// inside burn into an error.
fn run_node<T>(node: &Node, op: &Op, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let wrap = |e: NetsError| NetsError::Node {
        node: node.name.clone(),
        op: op.type_name().into(),
        message: e.to_string(),
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|p| wrap(NetsError::op(panic_message(p))))?
        .map_err(wrap)
}

impl Node {
    /// This node's inputs among per-node `values` (`None`: an omitted input, or a value
    /// that is absent, such as a zero tangent).
    fn gather<'a, T>(&self, values: &'a [Option<T>]) -> Vec<Option<&'a T>> {
        self.inputs
            .iter()
            .map(|j| j.and_then(|j| values[j].as_ref()))
            .collect()
    }
}

impl Graph {
    /// Drops the values (or tangents) of node `i`'s inputs that no later node reads.
    fn drop_inputs_used_up<T>(&self, i: usize, values: &mut [Option<T>]) {
        for &j in self.nodes[i].inputs.iter().flatten() {
            if self.last_use[j] == i {
                values[j] = None;
            }
        }
    }
}

/// Called by [`GraphNetwork::forward_tapped`] on the nodes it was asked to tap, after the
/// node has run: sees the node's inputs and may replace its output (to add a probe).
pub trait Tap {
    fn tap(&mut self, node: usize, inputs: &[Option<&Value>], output: FloatValue) -> FloatValue;
}

/// A graph network: a burn [`Module`] whose parameters are the graph's, one flat
/// `Param<Tensor<1>>` per named parameter (reshaped where used).
#[derive(Module, Debug)]
pub struct GraphNetwork {
    pub params: Vec<Param<Tensor<1>>>,
    #[module(skip)]
    pub graph: Arc<Graph>,
    #[module(skip)]
    pub precision: Precision,
    /// Which parameters the kernel counts (`--params`/`--frozen`); all by default.
    #[module(skip)]
    pub selected: Vec<bool>,
    /// Outputs O per sample, found by the load-time check.
    #[module(skip)]
    pub outputs: usize,
}

impl GraphNetwork {
    /// Builds the network from host parameters (every one of `graph.params`, by name, with
    /// the right shape; extra keys are an error unless `ignore_extra`), then checks it by a
    /// forward pass of one zero sample, so shape errors surface before any computation.
    pub fn from_params(
        graph: Graph,
        params: &BTreeMap<String, HostArray>,
        device: &Device,
        precision: Precision,
    ) -> Result<GraphNetwork> {
        let dtype = precision.dtype();
        let mut out = Vec::with_capacity(graph.params.len());
        for p in &graph.params {
            let a = params.get(&p.name).ok_or_else(|| NetsError::Weights {
                path: graph.source.clone().into(),
                message: format!("parameter {:?} is missing", p.name),
            })?;
            if a.shape != p.shape {
                return Err(NetsError::Weights {
                    path: graph.source.clone().into(),
                    message: format!(
                        "parameter {:?} has shape {:?}, the network needs {:?}",
                        p.name, a.shape, p.shape
                    ),
                });
            }
            a.check_finite(&format!("parameter {:?}", p.name))?;
            let n = a.data.len();
            out.push(Param::from_tensor(Tensor::from_data(
                TensorData::new(a.data.clone(), [n]),
                (device, dtype),
            )));
        }
        let selected = vec![true; graph.params.len()];
        let mut net = GraphNetwork {
            params: out,
            graph: Arc::new(graph),
            precision,
            selected,
            outputs: 0,
        };
        net.outputs = net.check_runs(device)?;
        Ok(net)
    }

    /// A forward pass of one (and, for batch handling, two) zero samples, so shape errors
    /// surface before any computation; returns the outputs per sample.
    fn check_runs(&self, device: &Device) -> Result<usize> {
        let mut outputs = 0;
        for n in [1usize, 2] {
            let numel: usize = self.graph.input_shape.iter().product();
            let x = HostArray::new(
                std::iter::once(n)
                    .chain(self.graph.input_shape.iter().copied())
                    .collect(),
                vec![0.0; n * numel],
            );
            let input = self.input(&x, device)?;
            let f = self.forward(input)?;
            let d = f.dims();
            if d[0] != n {
                return Err(NetsError::op(format!(
                    "the output has {} rows for a batch of {n}: the graph mixes samples (a fixed batch size baked into a reshape?)",
                    d[0]
                )));
            }
            outputs = d[1];
        }
        Ok(outputs)
    }

    /// The parameters as named host arrays.
    pub fn params_host(&self) -> BTreeMap<String, HostArray> {
        self.graph
            .params
            .iter()
            .zip(&self.params)
            .map(|(info, p)| {
                let h = to_host(p.val());
                (
                    info.name.clone(),
                    HostArray::new(info.shape.clone(), h.data),
                )
            })
            .collect()
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.devices().into_iter().next().unwrap_or_default()
    }

    pub fn dtype(&self) -> DType {
        self.precision.dtype()
    }

    /// Shape of one input sample.
    pub fn input_shape(&self) -> &[usize] {
        &self.graph.input_shape
    }

    /// Number of outputs O (the output's elements per sample).
    pub fn n_outputs(&self) -> usize {
        self.outputs
    }

    /// Restricts the kernel to the parameters whose names match `include` (all when
    /// `None`) and not `exclude`. Errors when nothing is left.
    pub fn select(
        &mut self,
        include: Option<&regex::Regex>,
        exclude: Option<&regex::Regex>,
    ) -> Result<()> {
        self.selected = self
            .graph
            .params
            .iter()
            .map(|p| {
                include.is_none_or(|r| r.is_match(&p.name))
                    && !exclude.is_some_and(|r| r.is_match(&p.name))
            })
            .collect();
        if !self.selected.iter().any(|&s| s) {
            let names: Vec<&str> = self
                .graph
                .params
                .iter()
                .map(|p| p.name.as_str())
                .take(20)
                .collect();
            return Err(NetsError::op(format!(
                "--params/--frozen select no parameter; the parameters are {names:?}{}",
                if self.graph.params.len() > 20 {
                    " …"
                } else {
                    ""
                }
            )));
        }
        Ok(())
    }

    /// Names of the selected parameters.
    pub fn selected_names(&self) -> Vec<&str> {
        self.graph
            .params
            .iter()
            .zip(&self.selected)
            .filter(|(_, s)| **s)
            .map(|(p, _)| p.name.as_str())
            .collect()
    }

    /// Checks a host batch `[N, *input_shape]` (shape and finiteness).
    pub fn check_input(&self, x: &HostArray) -> Result<()> {
        if x.shape.len() != self.graph.input_shape.len() + 1
            || x.shape[1..] != self.graph.input_shape[..]
        {
            return Err(NetsError::InputShape {
                got: x.shape.clone(),
                expected: self.graph.input_shape.clone(),
            });
        }
        x.check_finite("input")
    }

    /// Uploads a host batch as `[N, numel]` rows.
    pub fn input(&self, x: &HostArray, device: &Device) -> Result<Tensor<2>> {
        self.check_input(x)?;
        let n = x.shape[0];
        let numel = x.data.len() / n.max(1);
        Ok(Tensor::from_data(
            TensorData::new(x.data.clone(), [n, numel]),
            (device, self.dtype()),
        ))
    }

    /// The outputs `[N, O]` for input rows `[N, numel]`.
    pub fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>> {
        self.forward_tapped(x, &[], &mut NoTap)
    }

    /// Forward pass calling `tap` after each node in `tapped`.
    pub fn forward_tapped(
        &self,
        x: Tensor<2>,
        tapped: &[bool],
        tap: &mut dyn Tap,
    ) -> Result<Tensor<2>> {
        let g = &self.graph;
        let [n, _] = x.dims();
        let device = x.device();
        let ctx = self.ctx(&device, n);
        let mut values: Vec<Option<Value>> = vec![None; g.nodes.len()];
        let mut x = Some(self.input_value(x));
        for (i, node) in g.nodes.iter().enumerate() {
            let v = match &node.kind {
                NodeKind::Input => x.take().expect("one input node"),
                NodeKind::Op(op) => {
                    let ins = node.gather(&values);
                    match run_node(node, op, || op.apply(&ins, &ctx))? {
                        Value::Float(f) if tapped.get(i).copied().unwrap_or(false) => {
                            Value::Float(tap.tap(i, &ins, f))
                        }
                        v => v,
                    }
                }
                kind => self.source_value(kind, &device),
            };
            values[i] = Some(v);
            g.drop_inputs_used_up(i, &mut values);
        }
        let y = self.output_rows(values[g.output].take(), n)?;
        Ok(y)
    }

    /// Forward mode: the outputs `[N, O]` and their directional derivative
    /// `J(x)·u = Σ_p ∂f(x)/∂θ_p · u_p` `[N, O]` along parameter tangents `u` (one per
    /// parameter, flat in PyTorch layout; `None`: zero), by each op's [`Op::jvp`] rule.
    /// A network whose output does not depend on `u` returns a zero derivative.
    ///
    /// # Shapes
    /// `x: [N, numel]`, `u[p]: [numel(θ_p)]` → `([N, O], [N, O])`
    pub fn forward_jvp(
        &self,
        x: Tensor<2>,
        u: &[Option<Tensor<1>>],
    ) -> Result<(Tensor<2>, Tensor<2>)> {
        let g = &self.graph;
        if u.len() != g.params.len() {
            return Err(NetsError::op(format!(
                "{} parameter tangents given for {} parameters",
                u.len(),
                g.params.len()
            )));
        }
        let [n, _] = x.dims();
        let device = x.device();
        let ctx = self.ctx(&device, n);
        let mut values: Vec<Option<Value>> = vec![None; g.nodes.len()];
        let mut tangents: Vec<Option<FloatValue>> = vec![None; g.nodes.len()];
        let mut x = Some(self.input_value(x));
        for (i, node) in g.nodes.iter().enumerate() {
            let (v, t) = match &node.kind {
                NodeKind::Input => (x.take().expect("one input node"), None),
                NodeKind::Param(p) => {
                    let shape = &g.params[*p].shape;
                    let t = match &u[*p] {
                        Some(t) if t.dims()[0] != shape.iter().product::<usize>() => {
                            return Err(NetsError::op(format!(
                                "the tangent of parameter {:?} has {} values, the parameter {shape:?}",
                                g.params[*p].name,
                                t.dims()[0]
                            )));
                        }
                        Some(t) => Some(FloatValue::from_tensor(t.clone()).reshape(shape)),
                        None => None,
                    };
                    (self.source_value(&node.kind, &device), t)
                }
                NodeKind::Op(op) => {
                    let ins = node.gather(&values);
                    let tins = node.gather(&tangents);
                    run_node(node, op, || {
                        let out = op.apply(&ins, &ctx)?;
                        let t = op.jvp(&ins, &tins, &out, &ctx)?;
                        if let Some(t) = &t
                            && t.shape() != out.shape()
                        {
                            return Err(NetsError::op(format!(
                                "the tangent {:?} does not match the output {:?} (an unsupported broadcast)",
                                t.shape(),
                                out.shape()
                            )));
                        }
                        Ok((out, t))
                    })?
                }
                kind => (self.source_value(kind, &device), None),
            };
            values[i] = Some(v);
            tangents[i] = t;
            g.drop_inputs_used_up(i, &mut values);
            g.drop_inputs_used_up(i, &mut tangents);
        }
        let y = self.output_rows(values[g.output].take(), n)?;
        let dy = match tangents[g.output].take() {
            Some(t) => t.t.reshape(y.dims()),
            None => y.zeros_like(),
        };
        Ok((y, dy))
    }

    fn ctx<'a>(&self, device: &'a Device, batch: usize) -> Ctx<'a> {
        Ctx {
            device,
            dtype: self.dtype(),
            batch,
            batch_one_export: self.graph.batch_one_export,
        }
    }

    /// Input rows `[N, numel]` as the input node's value `[N, *input_shape]`.
    fn input_value(&self, x: Tensor<2>) -> Value {
        let mut shape = vec![x.dims()[0]];
        shape.extend_from_slice(&self.graph.input_shape);
        Value::Float(FloatValue::from_tensor(x).reshape(&shape))
    }

    /// The value of a parameter or constant node.
    fn source_value(&self, kind: &NodeKind, device: &Device) -> Value {
        match kind {
            NodeKind::Param(p) => Value::Float(
                FloatValue::from_tensor(self.params[*p].val())
                    .reshape(&self.graph.params[*p].shape),
            ),
            NodeKind::Constant(Constant::Float(a)) => Value::Float(FloatValue::from_host(
                &a.shape,
                a.data.clone(),
                device,
                self.dtype(),
            )),
            NodeKind::Constant(Constant::Ints(v)) => Value::Ints(v.clone()),
            NodeKind::Input | NodeKind::Op(_) => unreachable!("not a source node"),
        }
    }

    /// The output value as rows `[N, O]`, checked to have the batch first.
    fn output_rows(&self, out: Option<Value>, n: usize) -> Result<Tensor<2>> {
        let out = out.ok_or_else(|| NetsError::op("the output was not computed"))?;
        let f = out.float("the network output")?;
        let s = f.shape();
        if s.first() != Some(&n) {
            return Err(NetsError::op(format!(
                "the network output {s:?} does not have the batch ({n}) as its first axis"
            )));
        }
        let o = f.numel() / n.max(1);
        Ok(f.t.clone().reshape([n, o]))
    }

    /// Convenience: outputs `[N, O]` on the host for a host batch.
    pub fn forward_host(&self, x: &HostArray) -> Result<HostArray> {
        let device = self.device();
        Ok(to_host(self.forward(self.input(x, &device)?)?))
    }

    /// Saves the parameters as safetensors (F64, or F32 with `f32_out`).
    pub fn save(&self, path: impl AsRef<std::path::Path>, f32_out: bool) -> Result<()> {
        crate::weights::write_safetensors(path, &self.params_host(), f32_out)
    }
}

struct NoTap;
impl Tap for NoTap {
    fn tap(&mut self, _: usize, _: &[Option<&Value>], output: FloatValue) -> FloatValue {
        output
    }
}

/// The message of a caught panic.
pub fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    let m = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the op failed".into());
    format!(
        "cannot run on these inputs: {}",
        m.lines().next().unwrap_or("")
    )
}

/// Loads an ONNX file as a [`GraphNetwork`], its parameters from the file's initializers
/// or, with `weights`, from a safetensors state dict (PyTorch names; every parameter must
/// be there, BatchNorm statistics are replaced when present, integer entries such as
/// `num_batches_tracked` and unknown keys are ignored).
pub fn load_onnx(
    path: impl AsRef<std::path::Path>,
    weights: Option<&std::path::Path>,
    device: &Device,
    precision: Precision,
) -> Result<GraphNetwork> {
    let mut model = onnx::load(path)?;
    if let Some(w) = weights {
        apply_state_dict(&mut model.graph, &mut model.params, &model.buffers, w)?;
    }
    GraphNetwork::from_params(model.graph, &model.params, device, precision)
}

/// Replaces parameters (all required) and buffers (when present) from a state dict file.
pub fn apply_state_dict(
    graph: &mut Graph,
    params: &mut BTreeMap<String, HostArray>,
    buffers: &BTreeMap<String, usize>,
    file: &std::path::Path,
) -> Result<()> {
    let dict = crate::weights::read_safetensors_floats(file)?;
    apply_state_dict_map(graph, params, buffers, &dict, file)
}

/// A state dict in memory: PyTorch names to float arrays (`model.state_dict()` handed
/// over without a file).
pub type StateDict = BTreeMap<String, HostArray>;

/// As [`apply_state_dict`], from a state dict in memory; `source` names it in errors.
pub fn apply_state_dict_map(
    graph: &mut Graph,
    params: &mut BTreeMap<String, HostArray>,
    buffers: &BTreeMap<String, usize>,
    dict: &StateDict,
    source: &std::path::Path,
) -> Result<()> {
    let file = source;
    let werr = |message: String| NetsError::Weights {
        path: file.to_path_buf(),
        message,
    };
    let missing: Vec<&str> = graph
        .params
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| !dict.contains_key(*n))
        .collect();
    if !missing.is_empty() {
        let found: Vec<&str> = dict.keys().map(|k| k.as_str()).take(8).collect();
        let hint = graph
            .params
            .first()
            .and_then(|p| dict.keys().find(|k| k.ends_with(&format!(".{}", p.name))))
            .map(|k| {
                let prefix = &k[..k.len() - graph.params[0].name.len()];
                format!("; the keys seem to carry the prefix {prefix:?} (save the inner module's state_dict)")
            })
            .unwrap_or_default();
        return Err(werr(format!(
            "{} of {} parameters are missing, e.g. {:?}; the file has {} float keys, e.g. {found:?}{hint}",
            missing.len(),
            graph.params.len(),
            &missing[..missing.len().min(5)],
            dict.len()
        )));
    }
    for p in &graph.params {
        let a = &dict[&p.name];
        if a.data.len() != p.shape.iter().product::<usize>() {
            return Err(werr(format!(
                "key {:?} has shape {:?}, the network needs {:?}",
                p.name, a.shape, p.shape
            )));
        }
        params.insert(
            p.name.clone(),
            HostArray::new(p.shape.clone(), a.data.clone()),
        );
    }
    let graph_nodes = &mut graph.nodes;
    for (name, &node) in buffers {
        if let Some(a) = dict.get(name) {
            if let NodeKind::Constant(Constant::Float(old)) = &mut graph_nodes[node].kind {
                if old.data.len() != a.data.len() {
                    return Err(werr(format!(
                        "buffer {name:?} has shape {:?}, the network needs {:?}",
                        a.shape, old.shape
                    )));
                }
                a.check_finite(&format!("buffer {name:?}"))?;
                *old = HostArray::new(old.shape.clone(), a.data.clone());
            }
        }
    }
    Ok(())
}

/// Loads a graph network from an ONNX file or a graph spec (JSON with `nodes`); weights
/// from a safetensors state dict, else the ONNX initializers or random from `seed`.
pub fn load(
    path: impl AsRef<std::path::Path>,
    weights: Option<&std::path::Path>,
    seed: u64,
    device: &Device,
    precision: Precision,
) -> Result<GraphNetwork> {
    let path = path.as_ref();
    if is_onnx(path) {
        return load_onnx(path, weights, device, precision);
    }
    from_spec(
        spec::GraphSpec::from_file(path)?,
        weights,
        seed,
        device,
        precision,
    )
}

/// Builds a graph network from a parsed graph spec: weights from a safetensors state dict,
/// else random from `seed`.
pub fn from_spec(
    mut s: spec::GraphSpec,
    weights: Option<&std::path::Path>,
    seed: u64,
    device: &Device,
    precision: Precision,
) -> Result<GraphNetwork> {
    let mut params = s.random_params(seed)?;
    if let Some(w) = weights {
        apply_state_dict(&mut s.graph, &mut params, &s.buffers, w)?;
    }
    GraphNetwork::from_params(s.graph, &params, device, precision)
}

/// Builds a graph network from a parsed graph spec with the weights of a state dict in
/// memory (every parameter by name; BatchNorm statistics when present).
pub fn from_spec_with_state(
    mut s: spec::GraphSpec,
    state: &StateDict,
    device: &Device,
    precision: Precision,
) -> Result<GraphNetwork> {
    let mut params = s.random_params(0)?;
    apply_state_dict_map(
        &mut s.graph,
        &mut params,
        &s.buffers,
        state,
        std::path::Path::new("<state dict>"),
    )?;
    GraphNetwork::from_params(s.graph, &params, device, precision)
}

/// Whether a path names an ONNX file (by extension).
pub fn is_onnx(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}
