//! The graph spec: a network as a JSON list of named nodes (docs/graph-spec.md).
//!
//! ```json
//! {"input_shape": [3, 32, 32],
//!  "nodes": [
//!    {"name": "conv1", "type": "conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1, "bias": false},
//!    {"name": "bn1", "type": "batch_norm"},
//!    {"name": "relu1", "type": "relu"},
//!    {"name": "res", "type": "add", "inputs": ["relu1", "input"]}, ...]}
//! ```
//!
//! Each node has a `name` (unique; PyTorch module paths such as `layer1.0.conv1` make a
//! `state_dict` load by name), a `type`, its fields, and `inputs` (node names; default:
//! the previous node; `"input"` is the network input). The output is `"output"` or the
//! last node. Parameters are `"{name}.weight"`, `"{name}.bias"` (`parameter` nodes:
//! `"{name}"`); BatchNorm also has the buffers `"{name}.running_mean"`/`.running_var`.
//! Axes (`dim`) count the batch as axis 0, as in PyTorch.
//!
//! Random initialisation from a seed (ChaCha8, nodes in order): weights
//! `N(0, w_std²/fan_in)` (`w_std` default 1), biases `N(0, b_std²)` (`b_std` default 0),
//! norms' scale 1 and shift 0, running mean 0 and variance 1, `parameter` nodes
//! `N(0, std²)` (`std` default 0.02).
//!
//! `"parameterization": "ntk"` (top level; default `"standard"`, PyTorch's) makes every
//! `linear`/`conv2d` compute `(w_std/√fan_in)·(x·Wᵀ) + b_std·b` with `W`, `b` standard
//! normal at init (neural-tangents' NTK parameterization, whose kernels have a
//! width-independent limit): the same function at init, different parameters.

use super::ops::conv::Conv;
use super::ops::elementwise::{Binary, ElementwiseOp, Unary};
use super::ops::linear::LinearOp;
use super::ops::normalization::NormOp;
use super::ops::pooling::{PoolOp, Reduction, Window};
use super::ops::shape::ShapeOp;
use super::ops::{Ctx, Op};
use super::value::{FloatValue, IntValue, Value};
use super::{Constant, Graph, Node, NodeKind, ParamInfo};
use crate::array::HostArray;
use crate::error::{NetsError, Result};
use crate::spec::Parameterization;
use burn::tensor::{DType, Device};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A parsed graph spec: the graph, its buffers by name, how to draw its parameters, and
/// the spec's own nodes (for the infinite-width kernels, which work on layers, not ops).
#[derive(Debug, Clone)]
pub struct GraphSpec {
    pub graph: Graph,
    pub buffers: BTreeMap<String, usize>,
    /// Per parameter: the standard deviation of its random initialisation, or a constant
    /// fill (norm scales and shifts).
    pub init: Vec<Init>,
    /// `"parameterization"` of the spec (default `standard`, PyTorch's).
    pub parameterization: Parameterization,
    /// The spec's nodes as written, `nodes[0]` the input; in order.
    pub nodes: Vec<SpecNode>,
    /// Index in `nodes` of the output node.
    pub output: usize,
}

/// One node of a graph spec as written: its type, fields, inputs and output shape.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecNode {
    pub name: String,
    /// `"input"` for `nodes[0]`, else the spec's `type`.
    pub ty: String,
    /// Indices into [`GraphSpec::nodes`].
    pub inputs: Vec<usize>,
    /// Every field of the node (also `name`, `type`, `inputs`).
    pub fields: Map<String, Json>,
    /// Output shape of one sample (without the batch axis).
    pub shape: Vec<usize>,
}

impl SpecNode {
    /// A number field, or `default`.
    pub fn float(&self, field: &str, default: f64) -> f64 {
        self.fields
            .get(field)
            .and_then(|v| v.as_f64())
            .unwrap_or(default)
    }
    /// A boolean field, or `default`.
    pub fn boolean(&self, field: &str, default: bool) -> bool {
        self.fields
            .get(field)
            .and_then(|v| v.as_bool())
            .unwrap_or(default)
    }
}

/// How a parameter is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Normal(f64),
    Fill(f64),
}

/// Whether JSON text is a graph spec (it has `nodes`) rather than a sequential one.
pub fn is_graph_spec(text: &str) -> bool {
    serde_json::from_str::<Json>(text).is_ok_and(|v| v.get("nodes").is_some())
}

fn field_err(node: &str, ty: &str, field: &str, message: impl Into<String>) -> NetsError {
    NetsError::Node {
        node: node.into(),
        op: ty.into(),
        message: format!("field `{field}`: {}", message.into()),
    }
}

struct Fields<'a> {
    name: &'a str,
    ty: &'a str,
    map: &'a Map<String, Json>,
}

impl Fields<'_> {
    fn err(&self, field: &str, m: impl Into<String>) -> NetsError {
        field_err(self.name, self.ty, field, m)
    }
    fn uint(&self, field: &str, default: Option<usize>) -> Result<usize> {
        match self.map.get(field) {
            None => default.ok_or_else(|| self.err(field, "is required")),
            Some(v) => v
                .as_u64()
                .filter(|&x| x > 0 && x < 1 << 31)
                .map(|x| x as usize)
                .ok_or_else(|| self.err(field, format!("must be a positive integer, got {v}"))),
        }
    }
    fn pair(&self, field: &str, default: Option<[usize; 2]>, zero_ok: bool) -> Result<[usize; 2]> {
        let one = |v: &Json| {
            v.as_u64()
                .filter(|&x| (zero_ok || x > 0) && x < 1 << 20)
                .map(|x| x as usize)
        };
        match self.map.get(field) {
            None => default.ok_or_else(|| self.err(field, "is required")),
            Some(Json::Array(a)) if a.len() == 2 => match (one(&a[0]), one(&a[1])) {
                (Some(x), Some(y)) => Ok([x, y]),
                _ => Err(self.err(field, "must hold two non-negative integers")),
            },
            Some(v) => one(v)
                .map(|x| [x, x])
                .ok_or_else(|| self.err(field, format!("must be an integer or [h, w], got {v}"))),
        }
    }
    fn float(&self, field: &str, default: f64) -> Result<f64> {
        match self.map.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| self.err(field, format!("must be a finite number, got {v}"))),
        }
    }
    fn boolean(&self, field: &str, default: bool) -> Result<bool> {
        match self.map.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(field, format!("must be true or false, got {v}"))),
        }
    }
    fn int(&self, field: &str, default: Option<i64>) -> Result<i64> {
        match self.map.get(field) {
            None => default.ok_or_else(|| self.err(field, "is required")),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| self.err(field, format!("must be an integer, got {v}"))),
        }
    }
    fn ints(&self, field: &str) -> Result<Vec<i64>> {
        match self.map.get(field) {
            Some(Json::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_i64()
                        .ok_or_else(|| self.err(field, "must be a list of integers"))
                })
                .collect(),
            Some(v) => v
                .as_i64()
                .map(|x| vec![x])
                .ok_or_else(|| self.err(field, "must be a list of integers")),
            None => Err(self.err(field, "is required")),
        }
    }
}

/// stax's `Sigmoid_like`: `½·erf(x / SIGMOID_LIKE_SCALE) + ½` (the scale fits the logistic
/// sigmoid on [−5, 5]).
pub const SIGMOID_LIKE_SCALE: f64 = 2.4020563531719796;

const KNOWN_TYPES: &str = "linear, conv2d, global_self_attention, sigmoid_like, batch_norm, layer_norm, relu, gelu, tanh, sigmoid, erf, elu, leaky_relu, softmax, identity, dropout, max_pool2d, avg_pool2d, global_avg_pool, flatten, mean, sum, add, sub, mul, div, matmul, scale, zero, reshape, permute, concat, select, parameter";

/// Builds the graph of a spec, checking every node on a zero sample as it goes (so a shape
/// error names the node that causes it).
pub fn parse(text: &str, source: &str) -> Result<GraphSpec> {
    let root: Json = serde_json::from_str(text).map_err(|e| NetsError::SpecJson(e.to_string()))?;
    let obj = root
        .as_object()
        .ok_or_else(|| NetsError::SpecJson("a graph spec is a JSON object".into()))?;
    let input_shape: Vec<usize> = obj
        .get("input_shape")
        .and_then(|v| v.as_array())
        .and_then(|a| {
            a.iter()
                .map(|d| {
                    d.as_u64()
                        .filter(|&x| x > 0 && x < 1 << 24)
                        .map(|x| x as usize)
                })
                .collect::<Option<Vec<_>>>()
        })
        .filter(|s| !s.is_empty() && s.len() < 6 && s.iter().product::<usize>() < 1 << 28)
        .ok_or_else(|| NetsError::SpecField {
            field: "input_shape".into(),
            message: "must be a list of 1 to 5 positive integers (one sample's shape)".into(),
        })?;
    for key in obj.keys() {
        if !["input_shape", "nodes", "output", "parameterization"].contains(&key.as_str()) {
            return Err(NetsError::SpecField {
                field: key.clone(),
                message: "is not a field of a graph spec (fields: input_shape, nodes, output, \
                          parameterization)"
                    .into(),
            });
        }
    }
    let parameterization = match obj.get("parameterization") {
        None => Parameterization::Standard,
        Some(v) => match v.as_str() {
            Some("standard") => Parameterization::Standard,
            Some("ntk") => Parameterization::Ntk,
            _ => {
                return Err(NetsError::SpecField {
                    field: "parameterization".into(),
                    message: format!("must be \"standard\" or \"ntk\", got {v}"),
                });
            }
        },
    };
    let specs = obj
        .get("nodes")
        .and_then(|v| v.as_array())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| NetsError::SpecField {
            field: "nodes".into(),
            message: "must be a non-empty list".into(),
        })?;
    if specs.len() > 100_000 {
        return Err(NetsError::SpecField {
            field: "nodes".into(),
            message: format!("{} nodes: at most 100000", specs.len()),
        });
    }
    let mut b = Builder::new(input_shape.clone());
    b.parameterization = parameterization;
    let mut last = "input".to_string();
    let mut nodes = vec![SpecNode {
        name: "input".into(),
        ty: "input".into(),
        inputs: vec![],
        fields: Map::new(),
        shape: input_shape.clone(),
    }];
    // Spec node name → its index in `nodes`; `graph_ids[k]` is spec node k's graph node.
    let mut spec_ids: HashMap<String, usize> = HashMap::from([("input".to_string(), 0)]);
    let mut graph_ids: Vec<usize> = vec![0];
    for (i, s) in specs.iter().enumerate() {
        let map = s.as_object().ok_or_else(|| NetsError::SpecField {
            field: format!("nodes[{i}]"),
            message: "must be an object".into(),
        })?;
        let name =
            map.get("name")
                .and_then(|v| v.as_str())
                .ok_or_else(|| NetsError::SpecField {
                    field: format!("nodes[{i}].name"),
                    message: "is required (a string)".into(),
                })?;
        let ty = map
            .get("type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| field_err(name, "?", "type", "is required (a string)"))?;
        if name == "input" || b.names.contains_key(name) {
            return Err(field_err(
                name,
                ty,
                "name",
                "is used twice (\"input\" is the network input)",
            ));
        }
        let inputs: Vec<String> = match map.get("inputs") {
            None => vec![last.clone()],
            Some(Json::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().map(String::from).ok_or_else(|| {
                        field_err(name, ty, "inputs", "must be a list of node names")
                    })
                })
                .collect::<Result<_>>()?,
            Some(Json::String(s)) => vec![s.clone()],
            Some(_) => {
                return Err(field_err(
                    name,
                    ty,
                    "inputs",
                    "must be a list of node names",
                ));
            }
        };
        // Inputs name earlier spec nodes only (a layer's internal nodes, such as
        // `"fc.weight"` or `"fc/matmul"`, are not inputs).
        let mut input_nodes = Vec::with_capacity(inputs.len());
        for n in &inputs {
            input_nodes.push(*spec_ids.get(n.as_str()).ok_or_else(|| {
                field_err(
                    name,
                    ty,
                    "inputs",
                    format!("{n:?} is not an earlier node (or \"input\")"),
                )
            })?);
        }
        let ids: Vec<usize> = input_nodes.iter().map(|&k| graph_ids[k]).collect();
        let f = Fields { name, ty, map };
        check_fields(&f)?;
        b.node(&f, &ids)?;
        if let Some(c) = b.collision.take() {
            return Err(field_err(
                name,
                ty,
                "name",
                format!(
                    "{c:?} names two nodes: a layer's parameters and internal nodes are named \
                     \"<layer>.<param>\" and \"<layer>/<step>\"; rename the node"
                ),
            ));
        }
        last = name.to_string();
        let id = b.names[name];
        graph_ids.push(id);
        nodes.push(SpecNode {
            name: name.to_string(),
            ty: ty.to_string(),
            inputs: input_nodes,
            fields: map.clone(),
            shape: if ty == "parameter" {
                b.shape(id)
            } else {
                b.shape(id).get(1..).unwrap_or_default().to_vec()
            },
        });
        spec_ids.insert(name.to_string(), nodes.len() - 1);
    }
    let output = match obj.get("output") {
        None => last,
        Some(v) => v
            .as_str()
            .map(String::from)
            .ok_or_else(|| NetsError::SpecField {
                field: "output".into(),
                message: "must be a node name".into(),
            })?,
    };
    let output_node = *spec_ids
        .get(output.as_str())
        .ok_or_else(|| NetsError::SpecField {
            field: "output".into(),
            message: format!("{output:?} is not a node"),
        })?;
    let out_id = graph_ids[output_node];
    let graph = Graph::new(
        b.nodes,
        out_id,
        input_shape,
        b.params,
        false,
        source.to_string(),
    )?;
    Ok(GraphSpec {
        graph,
        buffers: b.buffers,
        init: b.init,
        parameterization,
        nodes,
        output: output_node,
    })
}

impl GraphSpec {
    /// Reads a graph spec file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<GraphSpec> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| NetsError::io(path, e))?;
        parse(&text, &path.display().to_string())
    }

    /// Random parameters from a seed (see the module doc).
    pub fn random_params(&self, seed: u64) -> Result<BTreeMap<String, HostArray>> {
        crate::memory::check_fits(
            &format!("the {} parameters of this network", self.graph.n_params()),
            self.graph.n_params() as u128 * 24,
        )?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut out = BTreeMap::new();
        for (p, init) in self.graph.params.iter().zip(&self.init) {
            let n: usize = p.shape.iter().product();
            let data = match *init {
                Init::Fill(v) => vec![v; n],
                Init::Normal(s) => (0..n)
                    .map(|_| {
                        s * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, &mut rng)
                    })
                    .collect(),
            };
            out.insert(p.name.clone(), HostArray::new(p.shape.clone(), data));
        }
        Ok(out)
    }
}

/// Refuses fields a node type does not have (a typo would otherwise fall back silently to
/// the default).
fn check_fields(f: &Fields) -> Result<()> {
    let own: &[&str] = match f.ty {
        "linear" => &["out_features", "bias"],
        "conv2d" => &[
            "out_channels",
            "kernel_size",
            "stride",
            "padding",
            "dilation",
            "groups",
            "bias",
        ],
        "batch_norm" => &["eps"],
        "layer_norm" => &["eps", "elementwise_affine"],
        "gelu" => &["approximate"],
        "elu" => &["alpha"],
        "leaky_relu" => &["negative_slope"],
        "erf" => &["a", "b", "c"],
        "softmax" => &["dim"],
        "max_pool2d" | "avg_pool2d" => &[
            "kernel_size",
            "stride",
            "padding",
            "dilation",
            "ceil_mode",
            "count_include_pad",
        ],
        "flatten" => &["start_dim"],
        "mean" | "sum" => &["dim", "keepdim"],
        "scale" => &["value"],
        "reshape" => &["shape"],
        "permute" => &["dims"],
        "concat" => &["dim"],
        "select" => &["dim", "index"],
        "parameter" => &["shape", "std"],
        "global_self_attention" => &[
            "n_chan_out",
            "n_chan_key",
            "n_chan_val",
            "n_heads",
            "linear_scaling",
            "attention_mechanism",
            "w_key_std",
            "w_query_std",
            "w_value_std",
            "w_out_std",
            "bias",
        ],
        _ => &[],
    };
    let init: &[&str] = if matches!(f.ty, "linear" | "conv2d") {
        &["w_std", "b_std"]
    } else if f.ty == "global_self_attention" {
        &["b_std"]
    } else {
        &[]
    };
    for key in f.map.keys() {
        if !["name", "type", "inputs"].contains(&key.as_str())
            && !own.contains(&key.as_str())
            && !init.contains(&key.as_str())
        {
            let mut known: Vec<&str> = own.iter().chain(init).copied().collect();
            known.push("inputs");
            return Err(f.err(
                key,
                format!("is not a field of {} (fields: {})", f.ty, known.join(", ")),
            ));
        }
    }
    Ok(())
}

struct Builder {
    nodes: Vec<Node>,
    names: HashMap<String, usize>,
    params: Vec<ParamInfo>,
    init: Vec<Init>,
    buffers: BTreeMap<String, usize>,
    /// Each node's value on a zero sample (batch 1), for shapes.
    values: Vec<Value>,
    device: Device,
    parameterization: Parameterization,
    /// The first name given to two nodes (a user name equal to a layer's internal node).
    collision: Option<String>,
}

impl Builder {
    fn new(input_shape: Vec<usize>) -> Self {
        let device = Device::flex();
        let mut shape = vec![1];
        shape.extend(&input_shape);
        let n: usize = shape.iter().product();
        let x = FloatValue::from_host(&shape, vec![0.0; n], &device, DType::F32);
        Builder {
            nodes: vec![Node {
                name: "input".into(),
                kind: NodeKind::Input,
                inputs: vec![],
            }],
            names: HashMap::from([("input".to_string(), 0)]),
            params: vec![],
            init: vec![],
            buffers: BTreeMap::new(),
            values: vec![Value::Float(x)],
            device,
            parameterization: Parameterization::Standard,
            collision: None,
        }
    }

    fn shape(&self, id: usize) -> Vec<usize> {
        self.values[id].shape()
    }

    fn param(&mut self, name: String, shape: Vec<usize>, init: Init) -> Result<usize> {
        super::value::check_size(&shape, &format!("parameter {name:?}"))?;
        let total: u128 = self
            .params
            .iter()
            .map(|p| p.shape.iter().product::<usize>() as u128)
            .sum::<u128>()
            + shape.iter().product::<usize>() as u128;
        crate::memory::check_fits(
            &format!("the {total} parameters of this network"),
            total * 24,
        )?;
        let n: usize = shape.iter().product();
        let v = FloatValue::from_host(
            &shape,
            vec![if let Init::Fill(f) = init { f } else { 0.0 }; n],
            &self.device,
            DType::F32,
        );
        self.params.push(ParamInfo {
            name: name.clone(),
            shape,
        });
        self.init.push(init);
        Ok(self.push(
            name,
            NodeKind::Param(self.params.len() - 1),
            vec![],
            Value::Float(v),
        ))
    }

    fn constant(&mut self, name: String, value: Constant) -> usize {
        let v = match &value {
            Constant::Float(h) => Value::Float(FloatValue::from_host(
                &h.shape,
                h.data.clone(),
                &self.device,
                DType::F32,
            )),
            Constant::Ints(i) => Value::Ints(i.clone()),
        };
        self.push(name, NodeKind::Constant(value), vec![], v)
    }

    fn push(
        &mut self,
        name: String,
        kind: NodeKind,
        inputs: Vec<Option<usize>>,
        value: Value,
    ) -> usize {
        self.nodes.push(Node {
            name: name.clone(),
            kind,
            inputs,
        });
        self.values.push(value);
        let id = self.nodes.len() - 1;
        if let Some(_old) = self.names.insert(name.clone(), id) {
            self.collision.get_or_insert(name);
        }
        id
    }

    /// Adds an op node, running it on the zero sample.
    fn op(&mut self, name: String, ty: &str, op: Op, inputs: Vec<usize>) -> Result<usize> {
        let ins: Vec<Option<&Value>> = inputs.iter().map(|&i| Some(&self.values[i])).collect();
        let ctx = Ctx {
            device: &self.device,
            dtype: DType::F32,
            batch: 1,
            batch_one_export: false,
        };
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op.apply(&ins, &ctx)))
            .map_err(|p| NetsError::op(super::panic_message(p)))
            .and_then(|r| r)
            .map_err(|e| NetsError::Node {
                node: name.clone(),
                op: ty.into(),
                message: e.to_string(),
            })?;
        Ok(self.push(
            name,
            NodeKind::Op(op),
            inputs.into_iter().map(Some).collect(),
            out,
        ))
    }

    /// `x · c` as a node: the NTK parameterization's scale of a layer's product or bias.
    fn times(&mut self, name: String, x: usize, c: f64) -> Result<usize> {
        let k = self.constant(
            format!("{name}/factor"),
            Constant::Float(HostArray::new(vec![], vec![c])),
        );
        self.op(
            name,
            "Mul",
            Op::Elementwise(ElementwiseOp::Binary(Binary::Mul)),
            vec![x, k],
        )
    }

    fn ints(&mut self, name: String, data: Vec<i64>) -> usize {
        self.constant(name, Constant::Ints(IntValue::vector(data)))
    }

    /// `x · W` of tokens `[N, T, D]` with a `[D, width]` weight drawn standard normal and
    /// scaled by `c` (NTK parameterization: a `Mul` node after the product; standard: the
    /// weight drawn with standard deviation `c`).
    fn token_projection(
        &mut self,
        name: String,
        x: usize,
        d: usize,
        width: usize,
        c: f64,
    ) -> Result<usize> {
        let ntk = self.parameterization == Parameterization::Ntk;
        let w = self.param(
            format!("{name}_weight"),
            vec![d, width],
            Init::Normal(if ntk { 1.0 } else { c }),
        )?;
        let mm = self.op(
            format!("{name}/matmul"),
            "MatMul",
            Op::Linear(LinearOp::MatMul),
            vec![x, w],
        )?;
        if ntk {
            self.times(format!("{name}/scaled"), mm, c)
        } else {
            Ok(mm)
        }
    }

    /// `[N, T, H·C] → [N, H, T, C]` (heads first).
    fn split_heads(
        &mut self,
        name: String,
        x: usize,
        t: usize,
        h: usize,
        c: usize,
    ) -> Result<usize> {
        let shape = self.ints(
            format!("{name}/split_shape"),
            vec![0, t as i64, h as i64, c as i64],
        );
        let r = self.op(
            format!("{name}/split"),
            "Reshape",
            Op::Shape(ShapeOp::Reshape { allowzero: false }),
            vec![x, shape],
        )?;
        self.op(
            format!("{name}/heads"),
            "Transpose",
            Op::Shape(ShapeOp::Transpose {
                perm: Some(vec![0, 2, 1, 3]),
            }),
            vec![r],
        )
    }

    /// stax's `GlobalSelfAttention` (neural-tangents v0.6.5) on tokens `[N, T, D]`, as ops.
    ///
    /// Per head `h` (of `H`): keys `K_h = c_k·x·W_K[:, h]`, queries `Q_h` (`= K_h` with
    /// `linear_scaling`: tied weights, the query weights' std only enters as
    /// `w_query_std·w_key_std`), values `V_h = c_v·x·W_V[:, h]`; attention weights
    /// `A_h = softmax_rows(Q_h K_hᵀ / n_key)` (`/√n_key` without `linear_scaling`);
    /// output `concat_h(A_h V_h)·c_o·W_O + b_std·b`. NTK scales: `c_k = √(σ_q σ_k / D)`
    /// tied (`σ_k/√D`, `σ_q/√D` untied), `c_v = σ_v/√D`, `c_o = σ_o/√(H·n_val)`, so the
    /// output scale is stax's `σ_o σ_v / √(n_val·H·D)`.
    ///
    /// # Shapes
    /// `x`: `[N, T, D]` → `[N, T, n_chan_out]`. Parameters `"{name}.key_weight"`
    /// `[D, H·n_key]` (`"{name}.query_weight"` likewise, untied), `"{name}.value_weight"`
    /// `[D, H·n_val]`, `"{name}.out_weight"` `[H·n_val, n_chan_out]`, `"{name}.bias"`
    /// `[n_chan_out]`; head `h` owns columns (rows of `out_weight`) `h·C .. (h+1)·C`.
    fn self_attention(&mut self, f: &Fields, x: usize) -> Result<usize> {
        let name = f.name.to_string();
        let s = self.shape(x);
        if s.len() != 3 {
            return Err(f.err(
                "inputs",
                format!("global_self_attention needs tokens [N, T, D], got {s:?}"),
            ));
        }
        let (t, d) = (s[1], s[2]);
        let out = f.uint("n_chan_out", None)?;
        let n_key = f.uint("n_chan_key", None)?;
        let n_val = f.uint("n_chan_val", None)?;
        let heads = f.uint("n_heads", None)?;
        let tied = f.boolean("linear_scaling", true)?;
        let softmax = match f.map.get("attention_mechanism") {
            None => true,
            Some(Json::String(m)) if m == "softmax" => true,
            Some(Json::String(m)) if m == "identity" => false,
            Some(o) => {
                return Err(f.err(
                    "attention_mechanism",
                    format!("{o}: \"softmax\" or \"identity\""),
                ));
            }
        };
        // The attention weights [N, H, T, T] and the projections must fit one tensor:
        // checked before the zero-sample run allocates them.
        super::value::check_size(&[1, heads, t, t], &format!("{name}: attention weights"))?;
        super::value::check_size(
            &[1, t, heads.saturating_mul(n_key.max(n_val))],
            &format!("{name}: projections"),
        )?;
        let std = |field: &str| -> Result<f64> {
            let v = f.float(field, 1.0)?;
            if v < 0.0 {
                return Err(f.err(field, format!("must be ≥ 0, got {v}")));
            }
            Ok(v)
        };
        let (sk, sq, sv, so) = (
            std("w_key_std")?,
            std("w_query_std")?,
            std("w_value_std")?,
            std("w_out_std")?,
        );
        let b_std = f.float("b_std", 0.0)?;
        let df = d as f64;
        let (keys, queries) = if tied {
            let k = self.token_projection(
                format!("{name}.key"),
                x,
                d,
                heads * n_key,
                (sq * sk / df).sqrt(),
            )?;
            (k, k)
        } else {
            let k =
                self.token_projection(format!("{name}.key"), x, d, heads * n_key, sk / df.sqrt())?;
            let q = self.token_projection(
                format!("{name}.query"),
                x,
                d,
                heads * n_key,
                sq / df.sqrt(),
            )?;
            (k, q)
        };
        let keys = self.split_heads(format!("{name}.key"), keys, t, heads, n_key)?;
        let queries = if tied {
            keys
        } else {
            self.split_heads(format!("{name}.query"), queries, t, heads, n_key)?
        };
        let keys_t = self.op(
            format!("{name}/keys_t"),
            "Transpose",
            Op::Shape(ShapeOp::Transpose {
                perm: Some(vec![0, 1, 3, 2]),
            }),
            vec![keys],
        )?;
        let logits = self.op(
            format!("{name}/logits"),
            "MatMul",
            Op::Linear(LinearOp::MatMul),
            vec![queries, keys_t],
        )?;
        let norm = if tied {
            n_key as f64
        } else {
            (n_key as f64).sqrt()
        };
        let logits = self.times(format!("{name}/logits_scaled"), logits, 1.0 / norm)?;
        let weights = if softmax {
            self.op(
                format!("{name}/weights"),
                "Softmax",
                Op::Elementwise(ElementwiseOp::Softmax { axis: -1 }),
                vec![logits],
            )?
        } else {
            logits
        };
        let values =
            self.token_projection(format!("{name}.value"), x, d, heads * n_val, sv / df.sqrt())?;
        let values = self.split_heads(format!("{name}.value"), values, t, heads, n_val)?;
        let mixed = self.op(
            format!("{name}/mixed"),
            "MatMul",
            Op::Linear(LinearOp::MatMul),
            vec![weights, values],
        )?;
        let merged = self.op(
            format!("{name}/merge_t"),
            "Transpose",
            Op::Shape(ShapeOp::Transpose {
                perm: Some(vec![0, 2, 1, 3]),
            }),
            vec![mixed],
        )?;
        let shape = self.ints(
            format!("{name}/merge_shape"),
            vec![0, t as i64, (heads * n_val) as i64],
        );
        let merged = self.op(
            format!("{name}/merged"),
            "Reshape",
            Op::Shape(ShapeOp::Reshape { allowzero: false }),
            vec![merged, shape],
        )?;
        let bias = f.boolean("bias", true)?;
        let projected = self.token_projection(
            format!("{name}.out"),
            merged,
            heads * n_val,
            out,
            so / ((heads * n_val) as f64).sqrt(),
        )?;
        if !bias {
            return self.op(
                name,
                "Identity",
                Op::Shape(ShapeOp::Identity),
                vec![projected],
            );
        }
        self.add_bias(name, projected, out, b_std)
    }

    /// `x + b` with a bias `"{name}.bias"` `[out]` on the last axis: drawn `N(0, b_std²)`
    /// (standard), or standard normal and scaled by `b_std` (NTK parameterization).
    fn add_bias(&mut self, name: String, x: usize, out: usize, b_std: f64) -> Result<usize> {
        let ntk = self.parameterization == Parameterization::Ntk;
        let b = self.param(
            format!("{name}.bias"),
            vec![out],
            Init::Normal(if ntk { 1.0 } else { b_std }),
        )?;
        let b = if ntk {
            self.times(format!("{name}/bias_scaled"), b, b_std)?
        } else {
            b
        };
        self.op(
            name,
            "Add",
            Op::Elementwise(ElementwiseOp::Binary(Binary::Add)),
            vec![x, b],
        )
    }

    /// `a·erf(b·x) + c` as ops (stax's `Erf(a, b, c)`); the last op is named `name`.
    fn scaled_erf(&mut self, name: String, x: usize, a: f64, b: f64, c: f64) -> Result<usize> {
        let x = if b != 1.0 {
            self.times(format!("{name}/input_scaled"), x, b)?
        } else {
            x
        };
        let last_is_erf = a == 1.0 && c == 0.0;
        let erf_name = if last_is_erf {
            name.clone()
        } else {
            format!("{name}/erf")
        };
        let y = self.op(
            erf_name,
            "Erf",
            Op::Elementwise(ElementwiseOp::Unary(Unary::Erf)),
            vec![x],
        )?;
        if last_is_erf {
            return Ok(y);
        }
        if c == 0.0 {
            return self.times(name, y, a);
        }
        let y = if a != 1.0 {
            self.times(format!("{name}/scaled"), y, a)?
        } else {
            y
        };
        let shift = self.constant(
            format!("{name}/shift"),
            Constant::Float(HostArray::new(vec![], vec![c])),
        );
        self.op(
            name,
            "Add",
            Op::Elementwise(ElementwiseOp::Binary(Binary::Add)),
            vec![y, shift],
        )
    }

    fn node(&mut self, f: &Fields, ins: &[usize]) -> Result<()> {
        let (name, ty) = (f.name.to_string(), f.ty);
        let need = |k: usize| -> Result<()> {
            if ins.len() != k {
                Err(f.err("inputs", format!("takes {k} input(s), got {}", ins.len())))
            } else {
                Ok(())
            }
        };
        let unary = |b: &mut Builder, u: Unary| -> Result<()> {
            need(1)?;
            b.op(
                name.clone(),
                ty,
                Op::Elementwise(ElementwiseOp::Unary(u)),
                ins.to_vec(),
            )
            .map(|_| ())
        };
        let w_std = f.float("w_std", 1.0)?;
        let b_std = f.float("b_std", 0.0)?;
        match ty {
            "linear" => {
                need(1)?;
                let s = self.shape(ins[0]);
                let d = *s.last().unwrap_or(&0);
                if s.len() < 2 {
                    return Err(f.err(
                        "inputs",
                        format!("a linear layer needs [N, ..., features], got {s:?}"),
                    ));
                }
                let out = f.uint("out_features", None)?;
                let ntk = self.parameterization == Parameterization::Ntk;
                let (w_init, w_scale) = if ntk {
                    (1.0, w_std / (d as f64).sqrt())
                } else {
                    (w_std / (d as f64).sqrt(), 1.0)
                };
                let w = self.param(format!("{name}.weight"), vec![out, d], Init::Normal(w_init))?;
                let wt = self.op(
                    format!("{name}/weight_t"),
                    "Transpose",
                    Op::Shape(ShapeOp::Transpose {
                        perm: Some(vec![1, 0]),
                    }),
                    vec![w],
                )?;
                let bias = f.boolean("bias", true)?;
                let product = if bias || ntk {
                    format!("{name}/matmul")
                } else {
                    name.clone()
                };
                let mm = self.op(
                    product,
                    "MatMul",
                    Op::Linear(LinearOp::MatMul),
                    vec![ins[0], wt],
                )?;
                let mm = if ntk {
                    let scaled = if bias {
                        format!("{name}/scaled")
                    } else {
                        name.clone()
                    };
                    self.times(scaled, mm, w_scale)?
                } else {
                    mm
                };
                if bias {
                    self.add_bias(name, mm, out, b_std)?;
                }
            }
            "conv2d" => {
                need(1)?;
                let s = self.shape(ins[0]);
                if s.len() != 4 {
                    return Err(f.err("inputs", format!("conv2d needs [N, C, H, W], got {s:?}")));
                }
                let out = f.uint("out_channels", None)?;
                let k = f.pair("kernel_size", None, false)?;
                let groups = f.uint("groups", Some(1))?;
                if s[1] % groups != 0 || out % groups != 0 {
                    return Err(f.err(
                        "groups",
                        format!(
                            "{groups} does not divide {} input and {out} output channels",
                            s[1]
                        ),
                    ));
                }
                let stride = f.pair("stride", Some([1, 1]), false)?;
                let dilation = f.pair("dilation", Some([1, 1]), false)?;
                let mut conv = Conv {
                    strides: stride,
                    dilations: dilation,
                    groups,
                    ..Conv::default()
                };
                match f.map.get("padding") {
                    Some(Json::String(p)) if p == "same" => {
                        conv.auto_pad = super::ops::conv::AutoPad::SameUpper
                    }
                    Some(Json::String(p)) if p == "valid" => {}
                    _ => {
                        let p = f.pair("padding", Some([0, 0]), true)?;
                        conv.pads = [p[0], p[1], p[0], p[1]];
                    }
                }
                let fan_in = s[1] / groups * k[0] * k[1];
                let ntk = self.parameterization == Parameterization::Ntk;
                let (w_init, w_scale) = if ntk {
                    (1.0, w_std / (fan_in as f64).sqrt())
                } else {
                    (w_std / (fan_in as f64).sqrt(), 1.0)
                };
                let w = self.param(
                    format!("{name}.weight"),
                    vec![out, s[1] / groups, k[0], k[1]],
                    Init::Normal(w_init),
                )?;
                let bias = f.boolean("bias", true)?;
                if !ntk {
                    let mut inputs = vec![ins[0], w];
                    if bias {
                        inputs.push(self.param(
                            format!("{name}.bias"),
                            vec![out],
                            Init::Normal(b_std),
                        )?);
                    }
                    self.op(name, ty, Op::Conv(conv), inputs)?;
                } else {
                    // NTK parameterization: `(w_std/√fan_in)·conv(x, W) + b_std·b`.
                    let c = self.op(format!("{name}/conv"), ty, Op::Conv(conv), vec![ins[0], w])?;
                    let scaled = if bias {
                        format!("{name}/scaled")
                    } else {
                        name.clone()
                    };
                    let c = self.times(scaled, c, w_scale)?;
                    if bias {
                        let b = self.param(format!("{name}.bias"), vec![out], Init::Normal(1.0))?;
                        let shape = self.ints(format!("{name}/bias_shape"), vec![out as i64, 1, 1]);
                        let b = self.op(
                            format!("{name}/bias_reshaped"),
                            "Reshape",
                            Op::Shape(ShapeOp::Reshape { allowzero: false }),
                            vec![b, shape],
                        )?;
                        let b = self.times(format!("{name}/bias_scaled"), b, b_std)?;
                        self.op(
                            name,
                            "Add",
                            Op::Elementwise(ElementwiseOp::Binary(Binary::Add)),
                            vec![c, b],
                        )?;
                    }
                }
            }
            "batch_norm" => {
                need(1)?;
                let s = self.shape(ins[0]);
                if s.len() < 2 {
                    return Err(f.err("inputs", format!("batch_norm needs [N, C, ...], got {s:?}")));
                }
                let c = s[1];
                let w = self.param(format!("{name}.weight"), vec![c], Init::Fill(1.0))?;
                let b = self.param(format!("{name}.bias"), vec![c], Init::Fill(0.0))?;
                let m = self.constant(
                    format!("{name}.running_mean"),
                    Constant::Float(HostArray::new(vec![c], vec![0.0; c])),
                );
                let v = self.constant(
                    format!("{name}.running_var"),
                    Constant::Float(HostArray::new(vec![c], vec![1.0; c])),
                );
                self.buffers.insert(format!("{name}.running_mean"), m);
                self.buffers.insert(format!("{name}.running_var"), v);
                self.op(
                    name,
                    ty,
                    Op::Norm(NormOp::BatchNorm {
                        eps: f.float("eps", 1e-5)?,
                    }),
                    vec![ins[0], w, b, m, v],
                )?;
            }
            "layer_norm" => {
                need(1)?;
                let d = *self.shape(ins[0]).last().unwrap_or(&1);
                let eps = f.float("eps", 1e-5)?;
                if f.boolean("elementwise_affine", true)? {
                    let w = self.param(format!("{name}.weight"), vec![d], Init::Fill(1.0))?;
                    let b = self.param(format!("{name}.bias"), vec![d], Init::Fill(0.0))?;
                    self.op(
                        name,
                        ty,
                        Op::Norm(NormOp::LayerNorm { axis: -1, eps }),
                        vec![ins[0], w, b],
                    )?;
                } else {
                    let one = self.constant(
                        format!("{name}/one"),
                        Constant::Float(HostArray::new(vec![1], vec![1.0])),
                    );
                    self.op(
                        name,
                        ty,
                        Op::Norm(NormOp::LayerNorm { axis: -1, eps }),
                        vec![ins[0], one],
                    )?;
                }
            }
            "relu" => unary(self, Unary::Relu)?,
            "gelu" => {
                let tanh = match f.map.get("approximate").and_then(|v| v.as_str()) {
                    None | Some("none") => false,
                    Some("tanh") => true,
                    Some(o) => return Err(f.err("approximate", format!("{o:?}: none or tanh"))),
                };
                unary(self, Unary::Gelu { tanh })?
            }
            "tanh" => unary(self, Unary::Tanh)?,
            "sigmoid" => unary(self, Unary::Sigmoid)?,
            "erf" | "sigmoid_like" => {
                need(1)?;
                let (a, b, c) = if ty == "sigmoid_like" {
                    (0.5, 1.0 / SIGMOID_LIKE_SCALE, 0.5)
                } else {
                    (f.float("a", 1.0)?, f.float("b", 1.0)?, f.float("c", 0.0)?)
                };
                self.scaled_erf(name, ins[0], a, b, c)?;
            }
            "elu" => unary(self, Unary::Elu(f.float("alpha", 1.0)?))?,
            "leaky_relu" => unary(self, Unary::LeakyRelu(f.float("negative_slope", 0.01)?))?,
            "identity" | "dropout" => {
                need(1)?;
                self.op(name, ty, Op::Shape(ShapeOp::Identity), ins.to_vec())?;
            }
            "softmax" => {
                need(1)?;
                self.op(
                    name,
                    ty,
                    Op::Elementwise(ElementwiseOp::Softmax {
                        axis: f.int("dim", Some(-1))?,
                    }),
                    ins.to_vec(),
                )?;
            }
            "max_pool2d" | "avg_pool2d" => {
                need(1)?;
                let kernel = f.pair("kernel_size", None, false)?;
                let p = f.pair("padding", Some([0, 0]), true)?;
                let w = Window {
                    kernel,
                    strides: f.pair("stride", Some(kernel), false)?,
                    pads: [p[0], p[1], p[0], p[1]],
                    dilations: f.pair("dilation", Some([1, 1]), false)?,
                    ceil_mode: f.boolean("ceil_mode", false)?,
                    auto_pad: Default::default(),
                };
                let op = if ty == "max_pool2d" {
                    PoolOp::MaxPool(w)
                } else {
                    PoolOp::AveragePool {
                        window: w,
                        count_include_pad: f.boolean("count_include_pad", true)?,
                    }
                };
                self.op(name, ty, Op::Pool(op), ins.to_vec())?;
            }
            "global_avg_pool" => {
                need(1)?;
                self.op(name, ty, Op::Pool(PoolOp::GlobalAveragePool), ins.to_vec())?;
            }
            "flatten" => {
                need(1)?;
                self.op(
                    name,
                    ty,
                    Op::Shape(ShapeOp::Flatten {
                        axis: f.int("start_dim", Some(1))?,
                    }),
                    ins.to_vec(),
                )?;
            }
            "mean" | "sum" => {
                need(1)?;
                let axes = f.ints("dim")?;
                if axes
                    .iter()
                    .any(|&a| a == 0 || a == -(self.shape(ins[0]).len() as i64))
                {
                    return Err(f.err("dim", "cannot reduce over the batch axis 0"));
                }
                let op = PoolOp::Reduce {
                    op: if ty == "mean" {
                        Reduction::Mean
                    } else {
                        Reduction::Sum
                    },
                    axes: Some(axes),
                    keepdims: f.boolean("keepdim", false)?,
                    noop_with_empty_axes: false,
                };
                self.op(name, ty, Op::Pool(op), ins.to_vec())?;
            }
            "add" | "sub" | "mul" | "div" | "matmul" => {
                need(2)?;
                let op = match ty {
                    "add" => Op::Elementwise(ElementwiseOp::Binary(Binary::Add)),
                    "sub" => Op::Elementwise(ElementwiseOp::Binary(Binary::Sub)),
                    "mul" => Op::Elementwise(ElementwiseOp::Binary(Binary::Mul)),
                    "div" => Op::Elementwise(ElementwiseOp::Binary(Binary::Div)),
                    _ => Op::Linear(LinearOp::MatMul),
                };
                self.op(name, ty, op, ins.to_vec())?;
            }
            "scale" | "zero" => {
                need(1)?;
                let v = if ty == "zero" {
                    0.0
                } else {
                    f.float("value", 1.0)?
                };
                let c = self.constant(
                    format!("{name}/value"),
                    Constant::Float(HostArray::new(vec![], vec![v])),
                );
                self.op(
                    name,
                    ty,
                    Op::Elementwise(ElementwiseOp::Binary(Binary::Mul)),
                    vec![ins[0], c],
                )?;
            }
            "reshape" => {
                need(1)?;
                let shape = f.ints("shape")?;
                let s = self.ints(format!("{name}/shape"), shape);
                self.op(
                    name,
                    ty,
                    Op::Shape(ShapeOp::Reshape { allowzero: false }),
                    vec![ins[0], s],
                )?;
            }
            "permute" => {
                need(1)?;
                let dims = f.ints("dims")?;
                if dims.first() != Some(&0) || dims.iter().any(|&d| d < 0) {
                    return Err(f.err(
                        "dims",
                        "must start with 0 (the batch stays first) and be non-negative",
                    ));
                }
                self.op(
                    name,
                    ty,
                    Op::Shape(ShapeOp::Transpose {
                        perm: Some(dims.iter().map(|&d| d as usize).collect()),
                    }),
                    ins.to_vec(),
                )?;
            }
            "concat" => {
                if ins.is_empty() {
                    return Err(f.err("inputs", "needs at least one input"));
                }
                self.op(
                    name,
                    ty,
                    Op::Shape(ShapeOp::Concat {
                        axis: f.int("dim", Some(1))?,
                    }),
                    ins.to_vec(),
                )?;
            }
            "select" => {
                need(1)?;
                let dim = f.int("dim", None)?;
                let idx = self.constant(
                    format!("{name}/index"),
                    Constant::Ints(IntValue::scalar(f.int("index", None)?)),
                );
                self.op(
                    name,
                    ty,
                    Op::Shape(ShapeOp::Gather { axis: dim }),
                    vec![ins[0], idx],
                )?;
            }
            "global_self_attention" => {
                need(1)?;
                self.self_attention(f, ins[0])?;
            }
            "parameter" => {
                if !ins.is_empty() && f.map.contains_key("inputs") {
                    return Err(f.err("inputs", "a parameter node takes no inputs"));
                }
                let shape: Vec<usize> = f
                    .ints("shape")?
                    .iter()
                    .map(|&d| usize::try_from(d).ok().filter(|&d| d > 0))
                    .collect::<Option<_>>()
                    .ok_or_else(|| f.err("shape", "must be positive integers"))?;
                let std = f.float("std", 0.02)?;
                self.param(name, shape, Init::Normal(std))?;
            }
            other => {
                return Err(f.err(
                    "type",
                    format!("{other:?} is unknown (known: {KNOWN_TYPES})"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match parse(text, "test") {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn internal_nodes_are_not_inputs() {
        // "fc.weight" and "fc/matmul" are the linear layer's own nodes, not spec nodes.
        for internal in ["fc.weight", "fc/matmul"] {
            let text = format!(
                r#"{{"input_shape": [3], "nodes": [
                    {{"name": "fc", "type": "linear", "out_features": 2}},
                    {{"name": "r", "type": "relu", "inputs": ["{internal}"]}}]}}"#
            );
            let e = err(&text);
            assert!(e.contains("is not an earlier node"), "{e}");
            assert!(e.contains(internal), "{e}");
        }
        let e = err(r#"{"input_shape": [3], "output": "fc.weight", "nodes": [
            {"name": "fc", "type": "linear", "out_features": 2}]}"#);
        assert!(e.contains("is not a node"), "{e}");
    }

    #[test]
    fn user_names_equal_to_internal_names_are_refused() {
        // A node named like the next layer's internal node, in either order.
        let e = err(
            r#"{"input_shape": [3], "parameterization": "ntk", "nodes": [
            {"name": "b/scaled", "type": "relu"},
            {"name": "b", "type": "linear", "out_features": 2}]}"#,
        );
        assert!(e.contains("\"b/scaled\" names two nodes"), "{e}");
        let e = err(r#"{"input_shape": [3], "nodes": [
            {"name": "b", "type": "linear", "out_features": 2},
            {"name": "b.weight", "type": "relu"}]}"#);
        assert!(e.contains("is used twice"), "{e}");
    }

    #[test]
    fn attention_fields_are_checked_before_any_work() {
        let attn = |extra: &str, input: &str| {
            format!(
                r#"{{"input_shape": {input}, "nodes": [
                {{"name": "t", "type": "global_self_attention", "n_chan_out": 4, "n_chan_key": 2,
                  "n_chan_val": 2, "n_heads": 8{extra}}}]}}"#
            )
        };
        let e = err(&attn(r#", "attention_mechanism": 1"#, "[3, 4]"));
        assert!(
            e.contains("attention_mechanism") && e.contains("\"softmax\""),
            "{e}"
        );
        let e = err(&attn(r#", "attention_mechanism": "relu""#, "[3, 4]"));
        assert!(e.contains("attention_mechanism"), "{e}");
        let e = err(&attn(r#", "w_key_std": -1"#, "[3, 4]"));
        assert!(e.contains("must be ≥ 0"), "{e}");
        let e = err(&attn("", "[12]"));
        assert!(e.contains("tokens [N, T, D]"), "{e}");
        // 8 heads of [16384, 16384] weights: refused by size, not allocated.
        let e = err(&attn("", "[16384, 4]"));
        assert!(
            e.contains("attention weights") && e.contains("more than ntk allows"),
            "{e}"
        );
        let g = parse(&attn(r#", "linear_scaling": false"#, "[3, 4]"), "t").unwrap();
        let names: Vec<&str> = g.graph.params.iter().map(|p| p.name.as_str()).collect();
        assert!(
            names.contains(&"t.query_weight") && names.contains(&"t.key_weight"),
            "{names:?}"
        );
        assert_eq!(g.nodes[1].shape, [3, 4]);
    }

    #[test]
    fn spec_nodes_keep_their_inputs() {
        let g = parse(
            r#"{"input_shape": [3], "parameterization": "ntk", "nodes": [
                {"name": "fc", "type": "linear", "out_features": 4},
                {"name": "r", "type": "relu"},
                {"name": "sum", "type": "add", "inputs": ["fc", "r"]}]}"#,
            "test",
        )
        .unwrap();
        let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["input", "fc", "r", "sum"]);
        assert_eq!(g.nodes[3].inputs, [1, 2]);
        assert_eq!(g.nodes[2].inputs, [1]);
        assert_eq!(g.output, 3);
        assert_eq!(g.nodes[3].shape, [4]);
    }
}
