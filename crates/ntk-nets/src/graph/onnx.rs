//! ONNX import: a PyTorch export (`torch.onnx.export`, TorchScript or dynamo exporter) as
//! a [`Graph`].
//!
//! The file is decoded with onnx-ir's protobuf bindings of the ONNX wire format (the burn
//! project's parser). ntk interprets the standard ONNX ops itself rather than taking
//! onnx-ir's typed IR, because that IR renames the initializers (`constantN`), fuses
//! MatMul + Add into a `Linear` and folds shape arithmetic with export-time shapes — while
//! the NTK needs the initializer names (they are PyTorch's parameter names, so a
//! `state_dict` can replace them) and the batch left free.
//!
//! Rules:
//! - the graph has one float input `[batch, ...]` (batch dynamic, or fixed at 1: then a
//!   leading 1 of a constant `Reshape` target stands for the batch) and one output;
//! - **parameters** are the float initializers, except BatchNormalization's running mean
//!   and variance (buffers, as in PyTorch) and Pow exponents; integer initializers are
//!   constants. `GraphNetwork::select` (CLI `--params`/`--frozen`) narrows the kernel to
//!   some of them;
//! - only the nodes the output depends on are kept; an op outside the supported set is an
//!   error naming the node and the op type, before any computation;
//! - a BatchNorm folded into a conv by an export with constant folding cannot be told
//!   apart from a conv with a bias: export with `do_constant_folding=False` (TorchScript)
//!   or `optimize=False` (dynamo) to keep BatchNorm nodes.

use super::ops::Op;
use super::ops::conv::{AutoPad, Conv};
use super::ops::elementwise::{Binary, ElementwiseOp, Unary};
use super::ops::linear::LinearOp;
use super::ops::normalization::NormOp;
use super::ops::pooling::{PoolOp, Reduction, Window};
use super::ops::shape::ShapeOp;
use super::value::IntValue;
use super::{Constant, Graph, Node, NodeKind, ParamInfo};
use crate::array::HostArray;
use crate::error::{NetsError, Result};
use onnx_ir::{AttributeProto, Message, ModelProto, NodeProto, TensorProto};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Largest ONNX file read (a ViT-B is 350 MB).
pub const MAX_FILE_BYTES: u64 = 4 << 30;
/// Most nodes in a graph.
pub const MAX_NODES: usize = 1_000_000;

/// The op types ntk runs.
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "CastLike",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Div",
    "Dropout",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Gather",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "Identity",
    "LayerNormalization",
    "LeakyRelu",
    "MatMul",
    "MaxPool",
    "Mul",
    "Neg",
    "Pow",
    "Reciprocal",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Where",
];

/// An imported model: the graph, its parameters' values, and its buffers (constant nodes
/// that came from float initializers, by initializer name: a state dict may replace them).
#[derive(Debug, Clone)]
pub struct OnnxModel {
    pub graph: Graph,
    pub params: BTreeMap<String, HostArray>,
    pub buffers: BTreeMap<String, usize>,
    pub opset: i64,
}

fn err(path: &Path, message: impl Into<String>) -> NetsError {
    NetsError::Onnx {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads and imports an ONNX file.
pub fn load(path: impl AsRef<Path>) -> Result<OnnxModel> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|e| NetsError::io(path, e))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(err(
            path,
            format!(
                "the file has {} bytes, more than ntk reads ({MAX_FILE_BYTES})",
                meta.len()
            ),
        ));
    }
    crate::memory::check_fits("this ONNX file and its weights", meta.len() as u128 * 3)?;
    let bytes = std::fs::read(path).map_err(|e| NetsError::io(path, e))?;
    parse(&bytes, path)
}

/// Imports ONNX bytes (`path` names them in errors).
pub fn parse(bytes: &[u8], path: &Path) -> Result<OnnxModel> {
    let model = std::panic::catch_unwind(|| ModelProto::parse_from_bytes(bytes))
        .map_err(|_| err(path, "not an ONNX model: the protobuf decoder failed"))?
        .map_err(|e| err(path, format!("not an ONNX model: {e}")))?;
    import(&model, path)
}

fn opset_of(model: &ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version)
}

/// Element size and kind of an ONNX tensor data type: (bytes, is_float).
fn dtype_info(t: i32) -> Option<(usize, bool)> {
    match t {
        1 => Some((4, true)),          // FLOAT
        11 => Some((8, true)),         // DOUBLE
        10 | 16 => Some((2, true)),    // FLOAT16, BFLOAT16
        6 => Some((4, false)),         // INT32
        7 => Some((8, false)),         // INT64
        2 | 3 | 9 => Some((1, false)), // UINT8, INT8, BOOL
        _ => None,
    }
}

/// The bytes of a tensor stored as external data (the dynamo exporter's default:
/// `model.onnx.data` beside the model): `location` relative to the model's folder (no
/// absolute path, no `..`), `offset` and `length` checked against the file.
fn read_external(t: &TensorProto, path: &Path) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let name = &t.name;
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.clone())
    };
    let location = get("location").ok_or_else(|| {
        err(
            path,
            format!("tensor {name:?}: external data without a location"),
        )
    })?;
    let rel = Path::new(&location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(err(
            path,
            format!(
                "tensor {name:?}: external data location {location:?} must be a plain file name beside the model"
            ),
        ));
    }
    let file = path.parent().unwrap_or(Path::new(".")).join(rel);
    let num = |k: &str| -> Result<Option<u64>> {
        get(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    err(
                        path,
                        format!("tensor {name:?}: external {k} {v:?} is not a number"),
                    )
                })
            })
            .transpose()
    };
    let offset = num("offset")?.unwrap_or(0);
    let len_file = std::fs::metadata(&file)
        .map_err(|e| NetsError::io(&file, e))?
        .len();
    let length = num("length")?.unwrap_or(len_file.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > len_file) {
        return Err(err(
            path,
            format!(
                "tensor {name:?}: external data {}+{length} is beyond the end of {} ({len_file} bytes)",
                offset,
                file.display()
            ),
        ));
    }
    let mut f = std::fs::File::open(&file).map_err(|e| NetsError::io(&file, e))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| NetsError::io(&file, e))?;
    let mut buf = vec![0u8; length as usize];
    f.read_exact(&mut buf)
        .map_err(|e| NetsError::io(&file, e))?;
    Ok(buf)
}

/// A decoded initializer or constant tensor.
enum Decoded {
    Float(HostArray),
    Ints(IntValue),
}

fn decode_tensor(t: &TensorProto, path: &Path) -> Result<Decoded> {
    let name = &t.name;
    let external = if !t.external_data.is_empty() || t.data_location.value() == 1 {
        Some(read_external(t, path)?)
    } else {
        None
    };
    let mut shape = Vec::with_capacity(t.dims.len());
    let mut count: u128 = 1;
    for &d in &t.dims {
        if d < 0 {
            return Err(err(
                path,
                format!("tensor {name:?} has a negative dimension {d}"),
            ));
        }
        shape.push(d as usize);
        count = count.saturating_mul(d as u128);
    }
    let (size, is_float) = dtype_info(t.data_type).ok_or_else(|| {
        err(
            path,
            format!(
                "tensor {name:?} has data type {} that ntk does not read",
                t.data_type
            ),
        )
    })?;
    let raw: &[u8] = external.as_deref().unwrap_or(&t.raw_data);
    // Check the declared size against the data actually there before allocating.
    let available: u128 = if !raw.is_empty() {
        (raw.len() / size) as u128
    } else {
        (t.float_data.len() + t.double_data.len() + t.int32_data.len() + t.int64_data.len()) as u128
    };
    if count != available {
        return Err(err(
            path,
            format!(
                "tensor {name:?} declares shape {:?} ({count} values) but holds {available}",
                t.dims
            ),
        ));
    }
    let n = count as usize;
    let le = |i: usize| &raw[i * size..(i + 1) * size];
    if is_float {
        let data: Vec<f64> = if !raw.is_empty() {
            match t.data_type {
                1 => (0..n)
                    .map(|i| f32::from_le_bytes(le(i).try_into().unwrap()) as f64)
                    .collect(),
                11 => (0..n)
                    .map(|i| f64::from_le_bytes(le(i).try_into().unwrap()))
                    .collect(),
                10 => (0..n)
                    .map(|i| f16_to_f64(u16::from_le_bytes(le(i).try_into().unwrap())))
                    .collect(),
                _ => (0..n)
                    .map(|i| {
                        f32::from_bits((u16::from_le_bytes(le(i).try_into().unwrap()) as u32) << 16)
                            as f64
                    })
                    .collect(),
            }
        } else if !t.float_data.is_empty() {
            t.float_data.iter().map(|&v| v as f64).collect()
        } else if !t.double_data.is_empty() {
            t.double_data.clone()
        } else {
            // FLOAT16/BFLOAT16 without raw data are stored in int32_data.
            t.int32_data
                .iter()
                .map(|&v| {
                    if t.data_type == 10 {
                        f16_to_f64(v as u16)
                    } else {
                        f32::from_bits((v as u32) << 16) as f64
                    }
                })
                .collect()
        };
        Ok(Decoded::Float(HostArray::new(shape, data)))
    } else {
        let data: Vec<i64> = if !raw.is_empty() {
            match size {
                8 => (0..n)
                    .map(|i| i64::from_le_bytes(le(i).try_into().unwrap()))
                    .collect(),
                4 => (0..n)
                    .map(|i| i32::from_le_bytes(le(i).try_into().unwrap()) as i64)
                    .collect(),
                _ => (0..n)
                    .map(|i| {
                        if t.data_type == 3 {
                            raw[i] as i8 as i64
                        } else {
                            raw[i] as i64
                        }
                    })
                    .collect(),
            }
        } else if !t.int64_data.is_empty() {
            t.int64_data.clone()
        } else {
            t.int32_data.iter().map(|&v| v as i64).collect()
        };
        Ok(Decoded::Ints(IntValue { shape, data }))
    }
}

/// The f64 value a float32 scalar constant of an export was rounded from.
///
/// PyTorch computes `x / math.sqrt(2)` with a Python (f64) constant, and the exporter
/// stores it as float32: run in f64 as stored, an exact GELU or an attention scale would
/// differ from PyTorch's own f64 by ~1e-8 relative. A float32 scalar is therefore widened
/// to the first candidate that rounds to it: √k, 1/√k, k^¼, k^-¼ (k = 1…4096), √(2/π),
/// π, then the shortest decimal that round-trips (0.044715, 0.5); parameters are never
/// changed. In f32 the result rounds back to the stored value.
pub fn widen_f32_constant(v: f32) -> f64 {
    if !v.is_finite() || v == 0.0 || v == v.trunc() {
        return v as f64;
    }
    let same = |c: f64| c as f32 == v;
    let a = (v as f64).abs();
    let sign = v.signum() as f64;
    let special = [
        (2.0 / std::f64::consts::PI).sqrt(),
        std::f64::consts::PI,
        1.0 / std::f64::consts::PI,
    ];
    if let Some(&c) = special.iter().find(|&&c| same(sign * c)) {
        return sign * c;
    }
    // Exponents ±1/2 and ±1/4 of an integer k: invert for k and check it is one.
    for (p, inv) in [(2.0, false), (2.0, true), (4.0, false), (4.0, true)] {
        let k = if inv { a.powf(-p) } else { a.powf(p) }.round();
        if (1.0..=4096.0).contains(&k) {
            let c = if inv {
                k.powf(-1.0 / p)
            } else {
                k.powf(1.0 / p)
            };
            if same(sign * c) {
                return sign * c;
            }
        }
    }
    format!("{v}").parse::<f64>().unwrap_or(v as f64)
}

fn f16_to_f64(h: u16) -> f64 {
    let s = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let e = ((h >> 10) & 0x1f) as i32;
    let m = (h & 0x3ff) as f64;
    match e {
        0 => s * m * 2f64.powi(-24),
        31 => {
            if m == 0.0 {
                s * f64::INFINITY
            } else {
                f64::NAN
            }
        }
        _ => s * (1.0 + m / 1024.0) * 2f64.powi(e - 15),
    }
}

/// The attributes of a node, by name.
struct Attrs<'a> {
    map: HashMap<&'a str, &'a AttributeProto>,
}

impl<'a> Attrs<'a> {
    fn new(node: &'a NodeProto) -> Self {
        Attrs {
            map: node
                .attribute
                .iter()
                .map(|a| (a.name.as_str(), a))
                .collect(),
        }
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.map.get(name).map_or(default, |a| a.i)
    }
    fn float(&self, name: &str, default: f64) -> f64 {
        // Float attributes are float32 (epsilon 1e-5, alpha 0.01): widened like constants.
        self.map
            .get(name)
            .map_or(default, |a| widen_f32_constant(a.f))
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.map.get(name).map(|a| a.ints.clone())
    }
    fn string(&self, name: &str) -> Option<String> {
        self.map
            .get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
    fn pair(&self, name: &str, default: usize) -> Result<[usize; 2]> {
        match self.ints(name) {
            None => Ok([default; 2]),
            Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 0) => {
                Ok([v[0] as usize, v[1] as usize])
            }
            Some(v) => Err(NetsError::op(format!(
                "attribute {name} = {v:?}: only 2-D windows are supported"
            ))),
        }
    }
    fn pads(&self) -> Result<[usize; 4]> {
        match self.ints("pads") {
            None => Ok([0; 4]),
            Some(v) if v.len() == 4 && v.iter().all(|&x| x >= 0) => {
                Ok([v[0] as usize, v[1] as usize, v[2] as usize, v[3] as usize])
            }
            Some(v) => Err(NetsError::op(format!(
                "pads = {v:?}: only 2-D padding (4 non-negative values) is supported"
            ))),
        }
    }
    fn auto_pad(&self) -> Result<AutoPad> {
        match self.string("auto_pad").as_deref() {
            None | Some("NOTSET") | Some("") => Ok(AutoPad::NotSet),
            Some("VALID") => Ok(AutoPad::Valid),
            Some("SAME_UPPER") => Ok(AutoPad::SameUpper),
            Some("SAME_LOWER") => Ok(AutoPad::SameLower),
            Some(o) => Err(NetsError::op(format!("auto_pad {o:?} is unknown"))),
        }
    }
}

/// The op of an ONNX node (attributes read and checked).
fn op_of(node: &NodeProto, opset: i64) -> Result<Op> {
    let a = Attrs::new(node);
    let window = |a: &Attrs| -> Result<Window> {
        let kernel = a.pair("kernel_shape", 0)?;
        if kernel.contains(&0) {
            return Err(NetsError::op("kernel_shape is missing or zero"));
        }
        Ok(Window {
            kernel,
            strides: a.pair("strides", 1)?,
            pads: a.pads()?,
            dilations: a.pair("dilations", 1)?,
            ceil_mode: a.int("ceil_mode", 0) != 0,
            auto_pad: a.auto_pad()?,
        })
    };
    let el = |e: ElementwiseOp| Ok(Op::Elementwise(e));
    let un = |u: Unary| Ok(Op::Elementwise(ElementwiseOp::Unary(u)));
    let bin = |b: Binary| Ok(Op::Elementwise(ElementwiseOp::Binary(b)));
    let sh = |s: ShapeOp| Ok(Op::Shape(s));
    match node.op_type.as_str() {
        "Add" => bin(Binary::Add),
        "Sub" => bin(Binary::Sub),
        "Mul" => bin(Binary::Mul),
        "Div" => bin(Binary::Div),
        "Pow" => bin(Binary::Pow),
        "Relu" => un(Unary::Relu),
        "LeakyRelu" => un(Unary::LeakyRelu(a.float("alpha", 0.01))),
        "Elu" => un(Unary::Elu(a.float("alpha", 1.0))),
        "Gelu" => match a.string("approximate").as_deref() {
            None | Some("none") => un(Unary::Gelu { tanh: false }),
            Some("tanh") => un(Unary::Gelu { tanh: true }),
            Some(o) => Err(NetsError::op(format!(
                "Gelu approximate = {o:?} is unknown"
            ))),
        },
        "Erf" => un(Unary::Erf),
        "Tanh" => un(Unary::Tanh),
        "Sigmoid" => un(Unary::Sigmoid),
        "Sqrt" => un(Unary::Sqrt),
        "Exp" => un(Unary::Exp),
        "Neg" => un(Unary::Neg),
        "Reciprocal" => un(Unary::Reciprocal),
        "Softmax" => el(ElementwiseOp::Softmax {
            axis: a.int("axis", if opset >= 13 { -1 } else { 1 }),
        }),
        "Equal" => el(ElementwiseOp::Equal),
        "Where" => el(ElementwiseOp::Where),
        "MatMul" => Ok(Op::Linear(LinearOp::MatMul)),
        "Gemm" => Ok(Op::Linear(LinearOp::Gemm {
            alpha: a.float("alpha", 1.0),
            beta: a.float("beta", 1.0),
            trans_a: a.int("transA", 0) != 0,
            trans_b: a.int("transB", 0) != 0,
        })),
        "Conv" => {
            if let Some(k) = a.ints("kernel_shape")
                && k.len() != 2
            {
                return Err(NetsError::op(format!(
                    "kernel_shape {k:?}: only 2-D convolutions are supported"
                )));
            }
            let groups = a.int("group", 1);
            if groups < 1 {
                return Err(NetsError::op(format!("group = {groups}")));
            }
            Ok(Op::Conv(Conv {
                strides: a.pair("strides", 1)?,
                pads: a.pads()?,
                dilations: a.pair("dilations", 1)?,
                groups: groups as usize,
                auto_pad: a.auto_pad()?,
            }))
        }
        "BatchNormalization" => {
            if a.int("training_mode", 0) != 0 {
                return Err(NetsError::op(
                    "training_mode = 1: export in eval mode (model.eval(), training=TrainingMode.EVAL)",
                ));
            }
            Ok(Op::Norm(NormOp::BatchNorm {
                eps: a.float("epsilon", 1e-5),
            }))
        }
        "LayerNormalization" => Ok(Op::Norm(NormOp::LayerNorm {
            axis: a.int("axis", -1),
            eps: a.float("epsilon", 1e-5),
        })),
        // A used indices output is refused by the caller (only first outputs are computed).
        "MaxPool" => Ok(Op::Pool(PoolOp::MaxPool(window(&a)?))),
        "AveragePool" => Ok(Op::Pool(PoolOp::AveragePool {
            window: window(&a)?,
            count_include_pad: a.int("count_include_pad", 0) != 0,
        })),
        "GlobalAveragePool" => Ok(Op::Pool(PoolOp::GlobalAveragePool)),
        "ReduceMean" | "ReduceSum" => {
            let attr_axes = (node.op_type == "ReduceMean" && opset < 18)
                || (node.op_type == "ReduceSum" && opset < 13);
            Ok(Op::Pool(PoolOp::Reduce {
                op: if node.op_type == "ReduceMean" {
                    Reduction::Mean
                } else {
                    Reduction::Sum
                },
                axes: if attr_axes {
                    Some(a.ints("axes").unwrap_or_default())
                } else {
                    None
                },
                keepdims: a.int("keepdims", 1) != 0,
                noop_with_empty_axes: a.int("noop_with_empty_axes", 0) != 0,
            }))
        }
        "Flatten" => sh(ShapeOp::Flatten {
            axis: a.int("axis", 1),
        }),
        "Reshape" => sh(ShapeOp::Reshape {
            allowzero: a.int("allowzero", 0) != 0,
        }),
        "Transpose" => sh(ShapeOp::Transpose {
            perm: match a.ints("perm") {
                None => None,
                Some(p) if p.iter().all(|&x| x >= 0) => {
                    Some(p.iter().map(|&x| x as usize).collect())
                }
                Some(p) => return Err(NetsError::op(format!("perm {p:?} has negative entries"))),
            },
        }),
        "Squeeze" => sh(ShapeOp::Squeeze {
            axes: if opset < 13 { a.ints("axes") } else { None },
        }),
        "Unsqueeze" => sh(ShapeOp::Unsqueeze {
            axes: if opset < 13 { a.ints("axes") } else { None },
        }),
        "Concat" => sh(ShapeOp::Concat {
            axis: a.int("axis", 0),
        }),
        "Slice" => {
            if opset < 10 {
                return Err(NetsError::op(
                    "Slice before opset 10 (attributes) is not supported; export with opset ≥ 17",
                ));
            }
            sh(ShapeOp::Slice)
        }
        "Gather" => sh(ShapeOp::Gather {
            axis: a.int("axis", 0),
        }),
        "Shape" => sh(ShapeOp::Shape {
            start: a.int("start", 0),
            end: a.map.get("end").map(|x| x.i),
        }),
        "Cast" => {
            let to = a.int("to", 1) as i32;
            let (_, is_float) = dtype_info(to)
                .ok_or_else(|| NetsError::op(format!("Cast to data type {to} is not supported")))?;
            sh(ShapeOp::Cast { to_float: is_float })
        }
        "Expand" => sh(ShapeOp::Expand),
        "CastLike" => sh(ShapeOp::CastLike),
        "ConstantOfShape" => {
            let (value, float) = match a.map.get("value").and_then(|v| v.t.as_ref()) {
                None => (0.0, true),
                Some(t) => match decode_tensor(t, Path::new("<ConstantOfShape>"))? {
                    Decoded::Float(h) => (h.data.first().copied().unwrap_or(0.0), true),
                    Decoded::Ints(i) => (i.data.first().copied().unwrap_or(0) as f64, false),
                },
            };
            sh(ShapeOp::ConstantOfShape { value, float })
        }
        "Identity" | "Dropout" => sh(ShapeOp::Identity),
        other => Err(NetsError::op(format!(
            "op type {other:?} is not supported (supported: {})",
            SUPPORTED_OPS.join(", ")
        ))),
    }
}

/// The value of a `Constant` node.
fn constant_of(node: &NodeProto, path: &Path) -> Result<(Decoded, bool)> {
    let a = Attrs::new(node);
    if let Some(t) = a.map.get("value").and_then(|v| v.t.as_ref()) {
        return Ok((decode_tensor(t, path)?, t.data_type == 1));
    }
    constant_attr(&a).map(|d| (d, true))
}

fn constant_attr(a: &Attrs) -> Result<Decoded> {
    if let Some(v) = a.map.get("value_float") {
        return Ok(Decoded::Float(HostArray::new(vec![], vec![v.f as f64])));
    }
    if let Some(v) = a.map.get("value_floats") {
        return Ok(Decoded::Float(HostArray::new(
            vec![v.floats.len()],
            v.floats.iter().map(|&x| x as f64).collect(),
        )));
    }
    if let Some(v) = a.map.get("value_int") {
        return Ok(Decoded::Ints(IntValue::scalar(v.i)));
    }
    if let Some(v) = a.map.get("value_ints") {
        return Ok(Decoded::Ints(IntValue::vector(v.ints.clone())));
    }
    Err(NetsError::op(
        "Constant without a supported value attribute",
    ))
}

fn node_name(n: &NodeProto, i: usize) -> String {
    if !n.name.is_empty() {
        n.name.clone()
    } else if let Some(o) = n.output.first().filter(|o| !o.is_empty()) {
        o.clone()
    } else {
        format!("{}_{i}", n.op_type)
    }
}

fn import(model: &ModelProto, path: &Path) -> Result<OnnxModel> {
    let opset = opset_of(model);
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| err(path, "the model has no graph"))?;
    // Float32 scalar constants (not parameters) are widened to what PyTorch computed with.
    let widen = |d: Decoded, t_is_f32: bool| match d {
        Decoded::Float(h) if t_is_f32 && h.data.len() == 1 => Decoded::Float(HostArray::new(
            h.shape,
            vec![widen_f32_constant(h.data[0] as f32)],
        )),
        d => d,
    };
    if g.node.len() > MAX_NODES {
        return Err(err(
            path,
            format!(
                "the graph has {} nodes, more than ntk takes ({MAX_NODES})",
                g.node.len()
            ),
        ));
    }
    let inits: HashMap<&str, &TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    // The model input: a graph input that is not an initializer.
    let inputs: Vec<_> = g
        .input
        .iter()
        .filter(|i| !inits.contains_key(i.name.as_str()))
        .collect();
    if inputs.len() != 1 {
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(err(
            path,
            format!(
                "ntk needs a model with exactly one input, this one has {}: {names:?}",
                inputs.len()
            ),
        ));
    }
    let input = inputs[0];
    let dims = input_dims(input).map_err(|m| err(path, format!("input {:?}: {m}", input.name)))?;
    let batch_one_export = match dims.first() {
        Some(Some(1)) => true,
        Some(None) => false,
        Some(Some(k)) => {
            return Err(err(
                path,
                format!(
                    "input {:?} has a fixed batch of {k}; export with a dynamic batch axis (dynamic_axes / dynamic_shapes) or a batch of 1",
                    input.name
                ),
            ));
        }
        None => {
            return Err(err(
                path,
                format!("input {:?} is a scalar; ntk needs [batch, ...]", input.name),
            ));
        }
    };
    let input_shape: Vec<usize> = dims[1..]
        .iter()
        .enumerate()
        .map(|(i, d)| {
            d.ok_or_else(|| {
                err(
                    path,
                    format!(
                        "input {:?}: axis {} is dynamic; only the batch axis may be",
                        input.name,
                        i + 1
                    ),
                )
            })
        })
        .collect::<Result<_>>()?;
    if g.output.len() != 1 {
        return Err(err(
            path,
            format!(
                "ntk needs a model with exactly one output, this one has {}",
                g.output.len()
            ),
        ));
    }
    let out_name = g.output[0].name.as_str();

    // Producers of each value name.
    let mut producer: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for (k, o) in n.output.iter().enumerate() {
            if !o.is_empty() && producer.insert(o.as_str(), (i, k)).is_some() {
                return Err(err(path, format!("value {o:?} is produced twice")));
            }
        }
    }
    // Nodes the output depends on, and a topological order of them (iterative DFS;
    // a cycle or a missing input is an error).
    let known =
        |name: &str| name == input.name || inits.contains_key(name) || producer.contains_key(name);
    if !known(out_name) {
        return Err(err(
            path,
            format!("the output {out_name:?} is produced by no node"),
        ));
    }
    let mut order: Vec<usize> = Vec::new();
    let mut state = vec![0u8; g.node.len()]; // 0 new, 1 on stack, 2 done
    if let Some(&(root, _)) = producer.get(out_name) {
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        state[root] = 1;
        while let Some(&mut (n, ref mut next)) = stack.last_mut() {
            let node = &g.node[n];
            if *next < node.input.len() {
                let name = node.input[*next].as_str();
                *next += 1;
                if name.is_empty() {
                    continue;
                }
                if !known(name) {
                    return Err(err(
                        path,
                        format!(
                            "node {:?} ({}) reads {name:?}, which nothing produces",
                            node_name(node, n),
                            node.op_type
                        ),
                    ));
                }
                if let Some(&(p, _)) = producer.get(name) {
                    match state[p] {
                        0 => {
                            state[p] = 1;
                            stack.push((p, 0));
                        }
                        1 => {
                            return Err(err(
                                path,
                                format!(
                                    "the graph has a cycle through node {:?}",
                                    node_name(&g.node[p], p)
                                ),
                            ));
                        }
                        _ => {}
                    }
                }
            } else {
                state[n] = 2;
                order.push(n);
                stack.pop();
            }
        }
    }

    // Buffers are classified per use: BatchNorm statistics (inputs 3, 4) and Pow
    // exponents are constants, every other use of a float initializer is a parameter (the
    // exporter may let one initializer of ones serve as a BatchNorm scale and a variance).
    let is_buffer_slot =
        |op: &str, slot: usize| matches!((op, slot), ("BatchNormalization", 3 | 4) | ("Pow", 1));
    let mut param_uses: HashSet<&str> = HashSet::from([out_name]);
    for &n in &order {
        let node = &g.node[n];
        for (slot, name) in node.input.iter().enumerate() {
            if !is_buffer_slot(&node.op_type, slot) {
                param_uses.insert(name.as_str());
            }
        }
    }

    let mut nodes: Vec<Node> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let params: Vec<ParamInfo> = Vec::new();
    let values: BTreeMap<String, HostArray> = BTreeMap::new();
    let buffers: BTreeMap<String, usize> = BTreeMap::new();
    nodes.push(Node {
        name: input.name.clone(),
        kind: NodeKind::Input,
        inputs: vec![],
    });
    index.insert(input.name.clone(), 0);
    struct Out {
        params: Vec<ParamInfo>,
        values: BTreeMap<String, HostArray>,
        buffers: BTreeMap<String, usize>,
    }
    let mut acc = Out {
        params,
        values,
        buffers,
    };
    let resolve = |name: &str,
                   as_buffer: bool,
                   nodes: &mut Vec<Node>,
                   index: &mut HashMap<String, usize>,
                   acc: &mut Out|
     -> Result<Option<usize>> {
        let Out {
            params,
            values,
            buffers,
        } = acc;
        if name.is_empty() {
            return Ok(None);
        }
        let buffer_key = format!("{name}\u{1}buffer");
        if as_buffer {
            if let Some(&i) = index.get(&buffer_key) {
                return Ok(Some(i));
            }
            // A constant copy of an initializer (or of a parameter it also feeds).
            let value = match (inits.get(name), index.get(name)) {
                (Some(t), _) => match widen(decode_tensor(t, path)?, t.data_type == 1) {
                    Decoded::Float(h) => Some(h),
                    Decoded::Ints(_) => None,
                },
                (None, Some(&i)) => match nodes[i].kind {
                    NodeKind::Param(p) => Some(values[&params[p].name].clone()),
                    _ => return Ok(Some(i)),
                },
                (None, None) => None,
            };
            if let Some(h) = value {
                // A name that is also a parameter is not registered as a buffer: a state
                // dict's entry of that name holds the parameter.
                if !param_uses.contains(name) {
                    buffers.insert(name.to_string(), nodes.len());
                }
                nodes.push(Node {
                    name: name.to_string(),
                    kind: NodeKind::Constant(Constant::Float(h)),
                    inputs: vec![],
                });
                index.insert(buffer_key, nodes.len() - 1);
                return Ok(Some(nodes.len() - 1));
            }
        }
        if let Some(&i) = index.get(name) {
            return Ok(Some(i));
        }
        let t = inits.get(name).ok_or_else(|| {
            err(
                path,
                format!("value {name:?} is used before it is produced"),
            )
        })?;
        let kind = match widen(decode_tensor(t, path)?, t.data_type == 1) {
            Decoded::Ints(v) => NodeKind::Constant(Constant::Ints(v)),
            Decoded::Float(h) => {
                params.push(ParamInfo {
                    name: name.to_string(),
                    shape: h.shape.clone(),
                });
                values.insert(name.to_string(), h);
                NodeKind::Param(params.len() - 1)
            }
        };
        nodes.push(Node {
            name: name.to_string(),
            kind,
            inputs: vec![],
        });
        index.insert(name.to_string(), nodes.len() - 1);
        Ok(Some(nodes.len() - 1))
    };
    for &n in &order {
        let node = &g.node[n];
        let name = node_name(node, n);
        let wrap = |e: NetsError| NetsError::Node {
            node: name.clone(),
            op: node.op_type.clone(),
            message: e.to_string(),
        };
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(wrap(NetsError::op(format!(
                "op domain {:?} is not supported (standard ONNX ops only)",
                node.domain
            ))));
        }
        // Only the first output of an op is computed.
        for (k, o) in node.output.iter().enumerate().skip(1) {
            if !o.is_empty()
                && (g.node.iter().any(|m| m.input.iter().any(|i| i == o)) || o == out_name)
            {
                return Err(wrap(NetsError::op(format!(
                    "its output {k} ({o:?}) is used; only the first output of an op is supported"
                ))));
            }
        }
        // The TorchScript exporter deduplicates equal initializers (BatchNorm scales all
        // ones at init, say): `layer1.0.bn2.weight = Identity(layer1.0.bn1.weight)`. Those
        // are distinct PyTorch parameters: the Identity's output becomes a parameter of
        // its own, with the same value (real weight tying reuses the initializer itself).
        // An Identity whose output only feeds buffer slots is that buffer.
        if node.op_type == "Identity"
            && let Some(src) = node.input.first()
            && let Some(out) = node.output.first().filter(|o| !o.is_empty())
            && !param_uses.contains(out.as_str())
            && inits.contains_key(src.as_str())
            && let Some(id) = resolve(src, true, &mut nodes, &mut index, &mut acc)?
        {
            index.insert(out.clone(), id);
            continue;
        }
        if node.op_type == "Identity"
            && let Some(src) = node.input.first()
            && let Some(out) = node.output.first().filter(|o| !o.is_empty())
            && param_uses.contains(out.as_str())
            && let Some(id) = resolve(src, false, &mut nodes, &mut index, &mut acc)?
            && let NodeKind::Param(p) = nodes[id].kind
        {
            let value = acc.values[&acc.params[p].name].clone();
            acc.params.push(ParamInfo {
                name: out.clone(),
                shape: value.shape.clone(),
            });
            acc.values.insert(out.clone(), value);
            nodes.push(Node {
                name: out.clone(),
                kind: NodeKind::Param(acc.params.len() - 1),
                inputs: vec![],
            });
            index.insert(out.clone(), nodes.len() - 1);
            continue;
        }
        let kind = if node.op_type == "Constant" {
            let (value, is_f32) = constant_of(node, path).map_err(wrap)?;
            match widen(value, is_f32) {
                Decoded::Float(h) => NodeKind::Constant(Constant::Float(h)),
                Decoded::Ints(v) => NodeKind::Constant(Constant::Ints(v)),
            }
        } else {
            NodeKind::Op(op_of(node, opset).map_err(wrap)?)
        };
        let mut ins = Vec::with_capacity(node.input.len());
        for (slot, i) in node.input.iter().enumerate() {
            let as_buffer = is_buffer_slot(&node.op_type, slot);
            ins.push(resolve(i, as_buffer, &mut nodes, &mut index, &mut acc)?);
        }
        nodes.push(Node {
            name: name.clone(),
            kind,
            inputs: ins,
        });
        let id = nodes.len() - 1;
        if let Some(o) = node.output.first() {
            index.insert(o.clone(), id);
        }
    }
    let output = resolve(out_name, false, &mut nodes, &mut index, &mut acc)?
        .ok_or_else(|| err(path, "empty output name"))?;
    let Out {
        params,
        values,
        buffers,
    } = acc;
    let graph = Graph::new(
        nodes,
        output,
        input_shape,
        params,
        batch_one_export,
        path.display().to_string(),
    )
    .map_err(|e| err(path, e.to_string()))?;
    Ok(OnnxModel {
        graph,
        params: values,
        buffers,
        opset,
    })
}

/// The input's dimensions: `Some(d)` static, `None` dynamic.
fn input_dims(input: &onnx_ir::ValueInfoProto) -> std::result::Result<Vec<Option<usize>>, String> {
    let ty = input.type_.as_ref().ok_or("it has no type")?;
    let tensor = ty.tensor_type();
    match dtype_info(tensor.elem_type) {
        Some((_, true)) => {}
        _ => {
            return Err(format!(
                "it is not a float tensor (data type {})",
                tensor.elem_type
            ));
        }
    }
    let shape = tensor.shape.as_ref().ok_or("it has no shape")?;
    Ok(shape
        .dim
        .iter()
        .map(|d| {
            if d.has_dim_value() && d.dim_value() > 0 {
                Some(d.dim_value() as usize)
            } else {
                None
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cases() -> std::path::PathBuf {
        std::env::var("NTK_CASES_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/cases"))
    }

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = output.into();
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![output.to_string()];
        n
    }

    fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
        let mut t = TensorProto::new();
        t.name = name.into();
        t.dims = dims.to_vec();
        t.data_type = 1;
        t.raw_data = values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into();
        t
    }

    /// A model with input `x: [batch, d]` and output `out`.
    fn model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, d: i64) -> Vec<u8> {
        let mut m = ModelProto::new();
        m.opset_import.push(Default::default());
        m.opset_import[0].version = 17;
        let g = m.graph.mut_or_insert_default();
        g.node = nodes;
        g.initializer = inits;
        let mut x = onnx_ir::ValueInfoProto::new();
        x.name = "x".into();
        let tt = x.type_.mut_or_insert_default().mut_tensor_type();
        tt.elem_type = 1;
        let shape = tt.shape.mut_or_insert_default();
        shape.dim.push(Default::default());
        shape.dim.last_mut().unwrap().set_dim_param("batch".into());
        shape.dim.push(Default::default());
        shape.dim.last_mut().unwrap().set_dim_value(d);
        g.input.push(x);
        let mut y = onnx_ir::ValueInfoProto::new();
        y.name = "out".into();
        g.output.push(y);
        m.write_to_bytes().unwrap()
    }

    fn load_bytes(bytes: &[u8]) -> Result<crate::graph::GraphNetwork> {
        let m = parse(bytes, Path::new("test.onnx"))?;
        crate::graph::GraphNetwork::from_params(
            m.graph,
            &m.params,
            &burn::tensor::Device::flex(),
            crate::Precision::F64,
        )
    }

    fn err_of(bytes: &[u8]) -> String {
        match load_bytes(bytes) {
            Ok(_) => panic!("loaded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_small_model_runs() {
        let w = f32_tensor("fc.weight", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = f32_tensor("fc.bias", &[2], &[0.5, -0.5]);
        let mut gemm = node("Gemm", &["h", "fc.weight", "fc.bias"], "out");
        let mut t = AttributeProto::new();
        t.name = "transB".into();
        t.i = 1;
        gemm.attribute.push(t);
        let bytes = model(vec![node("Relu", &["x"], "h"), gemm], vec![w, b], 3);
        let net = load_bytes(&bytes).unwrap();
        let f = net
            .forward_host(&HostArray::new(vec![1, 3], vec![1.0, -1.0, 2.0]))
            .unwrap();
        assert_eq!(f.data, vec![1.0 + 6.0 + 0.5, 4.0 + 12.0 - 0.5]);
        assert_eq!(net.graph.params.len(), 2);
    }

    #[test]
    fn deduplicated_initializers_stay_distinct_parameters() {
        // torch's exporter writes equal initializers once: b = Identity(a).
        let a = f32_tensor("bn1.weight", &[3], &[1.0, 1.0, 1.0]);
        let bytes = model(
            vec![
                node("Identity", &["bn1.weight"], "bn2.weight"),
                node("Mul", &["x", "bn1.weight"], "h"),
                node("Mul", &["h", "bn2.weight"], "out"),
            ],
            vec![a],
            3,
        );
        let net = load_bytes(&bytes).unwrap();
        let names: Vec<&str> = net.graph.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bn1.weight", "bn2.weight"]);
    }

    #[test]
    fn a_deduplicated_buffer_stays_a_buffer() {
        // At init a BatchNorm's variance (ones) equals its scale: the exporter may write
        // `running_var = Identity(weight)`, or point the variance slot at the scale itself.
        let w = f32_tensor("bn.weight", &[3], &[1.0; 3]);
        let b = f32_tensor("bn.bias", &[3], &[0.0; 3]);
        for var in ["bn.running_var", "bn.weight"] {
            let mut nodes = vec![node("Identity", &["bn.bias"], "bn.running_mean")];
            if var == "bn.running_var" {
                nodes.push(node("Identity", &["bn.weight"], "bn.running_var"));
            }
            nodes.push(node(
                "BatchNormalization",
                &["x", "bn.weight", "bn.bias", "bn.running_mean", var],
                "out",
            ));
            let net = load_bytes(&model(nodes, vec![w.clone(), b.clone()], 3)).unwrap();
            let names: Vec<&str> = net.graph.params.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["bn.weight", "bn.bias"], "variance slot {var}");
        }
    }

    #[test]
    fn external_data_is_read_beside_the_model() {
        // The dynamo exporter's default: weights in `model.onnx.data`.
        let dir = std::env::temp_dir().join(format!("ntk-onnx-ext-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let values = [1.0f32, 2.0, 3.0];
        let mut data = vec![0u8; 8]; // an offset
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        std::fs::write(dir.join("model.onnx.data"), &data).unwrap();
        let with_location = |location: &str, length: &str| {
            let mut t = TensorProto::new();
            t.name = "scale".into();
            t.dims = vec![3];
            t.data_type = 1;
            for (k, v) in [("location", location), ("offset", "8"), ("length", length)] {
                t.external_data.push(Default::default());
                let e = t.external_data.last_mut().unwrap();
                e.key = k.into();
                e.value = v.into();
            }
            model(vec![node("Mul", &["x", "scale"], "out")], vec![t], 3)
        };
        let path = dir.join("model.onnx");
        let m = parse(&with_location("model.onnx.data", "12"), &path).unwrap();
        assert_eq!(m.params["scale"].data, vec![1.0, 2.0, 3.0]);
        for (loc, len, why) in [
            ("../model.onnx.data", "12", "plain file name"),
            ("/etc/passwd", "12", "plain file name"),
            ("model.onnx.data", "400", "beyond the end"),
        ] {
            let e = parse(&with_location(loc, len), &path)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{loc}: {e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn hostile_files_are_errors() {
        // Truncated and garbage bytes.
        let good = std::fs::read(cases().join("onnx-preact-resnet/model.onnx")).unwrap();
        for cut in [1, 7, good.len() / 3, good.len() / 2, good.len() - 5] {
            let e = err_of(&good[..cut]);
            assert!(
                e.contains("onnx") || e.contains("input") || e.contains("tensor"),
                "cut {cut}: {e}"
            );
        }
        assert!(err_of(b"definitely not protobuf \xff\xff\xff").contains("not an ONNX model"));
        // Unsupported op: named with its node.
        let e = err_of(&model(vec![node("LSTM", &["x"], "out")], vec![], 3));
        assert!(
            e.contains("\"out\"") && e.contains("LSTM") && e.contains("not supported"),
            "{e}"
        );
        // A cycle.
        let e = err_of(&model(
            vec![
                node("Relu", &["b"], "a"),
                node("Relu", &["a"], "b"),
                node("Add", &["x", "b"], "out"),
            ],
            vec![],
            3,
        ));
        assert!(e.contains("cycle"), "{e}");
        // A missing input.
        let e = err_of(&model(vec![node("Add", &["x", "ghost"], "out")], vec![], 3));
        assert!(e.contains("ghost") && e.contains("nothing produces"), "{e}");
        // A huge declared tensor with 4 bytes of data: refused before allocating.
        let mut huge = f32_tensor("w", &[1 << 20, 1 << 20], &[1.0]);
        huge.dims = vec![1 << 20, 1 << 20];
        let e = err_of(&model(
            vec![node("MatMul", &["x", "w"], "out")],
            vec![huge],
            3,
        ));
        assert!(e.contains("declares shape"), "{e}");
        // Mismatched shapes: found by the load-time check, naming the node.
        let w = f32_tensor("w", &[4, 2], &[0.0; 8]);
        let e = err_of(&model(vec![node("MatMul", &["x", "w"], "out")], vec![w], 3));
        assert!(
            e.contains("\"out\"") && e.contains("inner dimensions"),
            "{e}"
        );
        // No output producer.
        let e = err_of(&model(vec![node("Relu", &["x"], "h")], vec![], 3));
        assert!(e.contains("produced by no node"), "{e}");
    }

    #[test]
    fn a_long_chain_loads_in_linear_time() {
        let n = 100_000;
        let mut nodes: Vec<NodeProto> = (0..n - 1)
            .map(|i| {
                node(
                    "Relu",
                    &[&if i == 0 {
                        "x".to_string()
                    } else {
                        format!("h{i}")
                    }],
                    &format!("h{}", i + 1),
                )
            })
            .collect();
        nodes.push(node("Identity", &[&format!("h{}", n - 1)], "out"));
        let bytes = model(nodes, vec![], 2);
        let t = std::time::Instant::now();
        let net = load_bytes(&bytes).unwrap();
        assert_eq!(net.graph.nodes.len(), n + 1);
        let f = net
            .forward_host(&HostArray::new(vec![1, 2], vec![-1.0, 2.0]))
            .unwrap();
        assert_eq!(f.data, vec![0.0, 2.0]);
        assert!(t.elapsed().as_secs() < 60, "took {:?}", t.elapsed());
    }
}
