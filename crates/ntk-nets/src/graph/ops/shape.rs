//! Layout ops and shape arithmetic: `Flatten`, `Reshape`, `Transpose`, `Squeeze`,
//! `Unsqueeze`, `Concat`, `Slice`, `Gather`, `Expand`, `Identity` (and `Dropout` at
//! inference) on float tensors, and `Shape`, `Cast`, `ConstantOfShape` with the same ops on
//! the host integers of dynamic-batch exports (`x.view(x.size(0), -1)` exports as
//! `Shape → Gather → Unsqueeze → Concat → Reshape`).
//!
//! Batch-1 exports bake the export batch into constant shapes (`Reshape(x, [1, 64, -1])`);
//! when the graph's input had a fixed batch of 1, a leading 1 of a `Reshape` target is read
//! as the batch ([`Ctx::batch_one_export`]).

use crate::error::{NetsError, Result};
use crate::graph::ops::elementwise::{broadcast_shape, expand_to, ints_to_float};
use crate::graph::ops::{Ctx, input, ints_input, tangent};
use crate::graph::value::{FloatValue, IntValue, MAX_RANK, Value, resolve_axis};
use burn::tensor::{Int, Tensor, TensorData};

#[derive(Debug, Clone, PartialEq)]
pub enum ShapeOp {
    Flatten {
        axis: i64,
    },
    Reshape {
        allowzero: bool,
    },
    /// `None`: reverse the axes.
    Transpose {
        perm: Option<Vec<usize>>,
    },
    /// `axes` from the attribute (older opsets) or input 1; `None` and no input: all ones.
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Concat {
        axis: i64,
    },
    /// starts, ends, axes, steps from inputs 1–4.
    Slice,
    Gather {
        axis: i64,
    },
    Shape {
        start: i64,
        end: Option<i64>,
    },
    /// To a float type (`true`) or an integer type.
    Cast {
        to_float: bool,
    },
    /// Cast to the type (float or integer) of input 1.
    CastLike,
    Expand,
    ConstantOfShape {
        value: f64,
        float: bool,
    },
    Identity,
}

impl ShapeOp {
    pub fn type_name(&self) -> &'static str {
        match self {
            ShapeOp::Flatten { .. } => "Flatten",
            ShapeOp::Reshape { .. } => "Reshape",
            ShapeOp::Transpose { .. } => "Transpose",
            ShapeOp::Squeeze { .. } => "Squeeze",
            ShapeOp::Unsqueeze { .. } => "Unsqueeze",
            ShapeOp::Concat { .. } => "Concat",
            ShapeOp::Slice => "Slice",
            ShapeOp::Gather { .. } => "Gather",
            ShapeOp::Shape { .. } => "Shape",
            ShapeOp::Cast { .. } => "Cast",
            ShapeOp::CastLike => "CastLike",
            ShapeOp::Expand => "Expand",
            ShapeOp::ConstantOfShape { .. } => "ConstantOfShape",
            ShapeOp::Identity => "Identity",
        }
    }

    pub fn apply(&self, inputs: &[Option<&Value>], ctx: &Ctx) -> Result<Value> {
        let x = input(inputs, 0, "data")?;
        match self {
            ShapeOp::Identity => Ok(x.clone()),
            ShapeOp::Flatten { axis } => {
                let s = x.shape();
                let a = if *axis == s.len() as i64 {
                    s.len()
                } else {
                    resolve_axis(*axis, s.len(), "Flatten")?
                };
                let shape = vec![s[..a].iter().product(), s[a..].iter().product()];
                relayout(x, &shape)
            }
            ShapeOp::Reshape { allowzero } => {
                let target = input(inputs, 1, "shape")?.ints("Reshape's shape")?;
                let shape = reshape_target(&x.shape(), &target.data, *allowzero, ctx)?;
                relayout(x, &shape)
            }
            ShapeOp::Transpose { perm } => {
                let r = x.shape().len();
                let perm: Vec<usize> = match perm {
                    Some(p) => p.clone(),
                    None => (0..r).rev().collect(),
                };
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                if sorted != (0..r).collect::<Vec<_>>() {
                    return Err(NetsError::op(format!(
                        "Transpose: perm {perm:?} is not a permutation of {r} axes"
                    )));
                }
                match x {
                    Value::Float(f) => {
                        let off = MAX_RANK - r;
                        let mut axes = [0usize; MAX_RANK];
                        for (i, a) in axes.iter_mut().enumerate() {
                            *a = if i < off { i } else { perm[i - off] + off };
                        }
                        Ok(Value::Float(FloatValue::new(f.t.clone().permute(axes), r)))
                    }
                    Value::Ints(v) if r <= 1 => Ok(Value::Ints(v.clone())),
                    Value::Ints(_) => Err(NetsError::op(
                        "Transpose of an integer matrix is not supported",
                    )),
                }
            }
            ShapeOp::Squeeze { axes } => {
                let s = x.shape();
                let axes = axes_of(axes, inputs)?;
                let shape: Vec<usize> = match axes {
                    None => s.iter().copied().filter(|&d| d != 1).collect(),
                    Some(a) => {
                        let a = a
                            .iter()
                            .map(|&ax| resolve_axis(ax, s.len(), "Squeeze"))
                            .collect::<Result<Vec<_>>>()?;
                        for &ax in &a {
                            if s[ax] != 1 {
                                return Err(NetsError::op(format!(
                                    "Squeeze: axis {ax} of {s:?} is not 1"
                                )));
                            }
                        }
                        s.iter()
                            .enumerate()
                            .filter(|(i, _)| !a.contains(i))
                            .map(|(_, &d)| d)
                            .collect()
                    }
                };
                relayout(x, &shape)
            }
            ShapeOp::Unsqueeze { axes } => {
                let s = x.shape();
                let axes =
                    axes_of(axes, inputs)?.ok_or_else(|| NetsError::op("Unsqueeze needs axes"))?;
                let r = s.len() + axes.len();
                let mut a = axes
                    .iter()
                    .map(|&ax| resolve_axis(ax, r, "Unsqueeze"))
                    .collect::<Result<Vec<_>>>()?;
                a.sort_unstable();
                let mut shape = Vec::with_capacity(r);
                let mut it = s.iter();
                for i in 0..r {
                    if a.contains(&i) {
                        shape.push(1);
                    } else {
                        shape.push(
                            *it.next()
                                .ok_or_else(|| NetsError::op("Unsqueeze: repeated axes"))?,
                        );
                    }
                }
                relayout(x, &shape)
            }
            ShapeOp::Concat { axis } => concat(inputs, *axis, ctx),
            ShapeOp::Slice => slice(x, inputs),
            ShapeOp::Gather { axis } => gather(
                x,
                input(inputs, 1, "indices")?.ints("Gather's indices")?,
                *axis,
            ),
            ShapeOp::Shape { start, end } => {
                let s: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
                let r = s.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let (a, b) = (clamp(*start), clamp(end.unwrap_or(r)));
                Ok(Value::Ints(IntValue::vector(s[a..b.max(a)].to_vec())))
            }
            ShapeOp::CastLike => {
                let to_float = matches!(input(inputs, 1, "target_type")?, Value::Float(_));
                ShapeOp::Cast { to_float }.apply(&inputs[..1], ctx)
            }
            ShapeOp::Cast { to_float } => match (x, to_float) {
                (Value::Float(_), true) | (Value::Ints(_), false) => Ok(x.clone()),
                (Value::Ints(v), true) => Ok(Value::Float(ints_to_float(v, ctx))),
                (Value::Float(f), false) => {
                    if f.numel() > 1 << 16 {
                        return Err(NetsError::op(
                            "Cast of a large float tensor to integers is not supported",
                        ));
                    }
                    let data =
                        f.t.clone()
                            .detach()
                            .into_data()
                            .convert::<f64>()
                            .try_to_vec::<f64>()
                            .unwrap_or_default();
                    Ok(Value::Ints(IntValue {
                        shape: f.shape(),
                        data: data.into_iter().map(|v| v as i64).collect(),
                    }))
                }
            },
            ShapeOp::Expand => {
                let target = input(inputs, 1, "shape")?.ints("Expand's shape")?;
                let want: Vec<usize> = target.data.iter().map(|&d| d.max(0) as usize).collect();
                let shape = broadcast_shape(&x.shape(), &want)?;
                match x {
                    Value::Float(f) => {
                        if shape.len() > MAX_RANK {
                            return Err(NetsError::op("Expand: rank above 6"));
                        }
                        Ok(Value::Float(expand_to(
                            &f.clone().reshape(&pad_rank(&f.shape(), shape.len())),
                            &shape,
                        )))
                    }
                    Value::Ints(v) => {
                        let n: usize = shape.iter().product();
                        if v.data.len() == 1 {
                            Ok(Value::Ints(IntValue {
                                shape,
                                data: vec![v.data[0]; n],
                            }))
                        } else if v.shape == shape {
                            Ok(x.clone())
                        } else {
                            Err(NetsError::op(
                                "Expand of an integer tensor is only supported from a scalar",
                            ))
                        }
                    }
                }
            }
            ShapeOp::ConstantOfShape { value, float } => {
                let s = x.ints("ConstantOfShape's input")?;
                let shape: Vec<usize> = s.data.iter().map(|&d| d.max(0) as usize).collect();
                let n: usize = shape.iter().product();
                if n > 1 << 26 || shape.len() > MAX_RANK {
                    return Err(NetsError::op(format!(
                        "ConstantOfShape: shape {shape:?} is too large"
                    )));
                }
                if *float {
                    Ok(Value::Float(FloatValue::from_host(
                        &shape,
                        vec![*value; n],
                        ctx.device,
                        ctx.dtype,
                    )))
                } else {
                    Ok(Value::Ints(IntValue {
                        shape,
                        data: vec![*value as i64; n],
                    }))
                }
            }
        }
    }
}

impl ShapeOp {
    /// Forward mode (see [`crate::graph::ops::Op::jvp`]): every shape op is linear in its
    /// data, `ẏ = op(ẋ)` with the same shape operands; `Concat` concatenates the tangents
    /// (zeros for inputs that do not depend on the parameters); `Shape` and
    /// `ConstantOfShape` have none.
    pub fn jvp(
        &self,
        inputs: &[Option<&Value>],
        tangents: &[Option<&FloatValue>],
        ctx: &Ctx,
    ) -> Result<Option<FloatValue>> {
        let relaid = match self {
            ShapeOp::Shape { .. } | ShapeOp::ConstantOfShape { .. } => return Ok(None),
            ShapeOp::Concat { .. } => {
                let parts: Vec<Option<Value>> = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.map(|v| match (tangent(tangents, i), v) {
                            (Some(t), _) => Value::Float(t.clone()),
                            (None, Value::Float(f)) => {
                                Value::Float(f.clone().map(|x| x.zeros_like()))
                            }
                            (None, Value::Ints(n)) => Value::Float(
                                super::elementwise::ints_to_float(n, ctx).map(|x| x.zeros_like()),
                            ),
                        })
                    })
                    .collect();
                let refs: Vec<Option<&Value>> = parts.iter().map(Option::as_ref).collect();
                self.apply(&refs, ctx)?
            }
            _ => {
                let Some(t) = tangent(tangents, 0) else {
                    return Ok(None);
                };
                let tv = Value::Float(t.clone());
                let mut ins: Vec<Option<&Value>> = inputs.to_vec();
                ins[0] = Some(&tv);
                self.apply(&ins, ctx)?
            }
        };
        Ok(match relaid {
            Value::Float(f) => Some(f),
            Value::Ints(_) => None,
        })
    }
}

fn pad_rank(shape: &[usize], rank: usize) -> Vec<usize> {
    let mut out = vec![1; rank.saturating_sub(shape.len())];
    out.extend_from_slice(shape);
    out
}

fn axes_of(attr: &Option<Vec<i64>>, inputs: &[Option<&Value>]) -> Result<Option<Vec<i64>>> {
    Ok(match attr {
        Some(a) => Some(a.clone()),
        None => ints_input(inputs, 1, "axes")?.map(|v| v.data.clone()),
    })
}

/// Reshapes a float or integer value to `shape` (same number of elements).
fn relayout(x: &Value, shape: &[usize]) -> Result<Value> {
    let from = x.shape();
    if from.iter().product::<usize>() != shape.iter().product::<usize>() {
        return Err(NetsError::op(format!(
            "cannot reshape {from:?} to {shape:?}"
        )));
    }
    if shape.len() > MAX_RANK {
        return Err(NetsError::op(format!("shape {shape:?} has rank above 6")));
    }
    Ok(match x {
        Value::Float(f) => Value::Float(f.clone().reshape(shape)),
        Value::Ints(v) => Value::Ints(IntValue {
            shape: shape.to_vec(),
            data: v.data.clone(),
        }),
    })
}

/// ONNX `Reshape` target: `0` copies the input dimension (unless `allowzero`), one `-1`
/// is inferred; in batch-1 exports a leading `1` is the batch.
pub fn reshape_target(
    from: &[usize],
    target: &[i64],
    allowzero: bool,
    ctx: &Ctx,
) -> Result<Vec<usize>> {
    let numel: usize = from.iter().product();
    let mut out: Vec<i64> = target.to_vec();
    if ctx.batch_one_export
        && ctx.batch != 1
        && out.first() == Some(&1)
        && from.first() == Some(&ctx.batch)
    {
        out[0] = ctx.batch as i64;
    }
    let mut infer = None;
    for (i, d) in out.iter_mut().enumerate() {
        match *d {
            0 if !allowzero => {
                *d = *from.get(i).ok_or_else(|| {
                    NetsError::op(format!("Reshape: 0 at axis {i} beyond the input's rank"))
                })? as i64
            }
            -1 if infer.is_none() => infer = Some(i),
            d if d < 0 => return Err(NetsError::op(format!("Reshape: invalid target {target:?}"))),
            _ => {}
        }
    }
    if let Some(i) = infer {
        let known: i64 = out
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, &d)| d)
            .product();
        if known == 0 || numel as i64 % known != 0 {
            return Err(NetsError::op(format!(
                "Reshape: cannot reshape {from:?} to {target:?}"
            )));
        }
        out[i] = numel as i64 / known;
    }
    let shape: Vec<usize> = out.iter().map(|&d| d as usize).collect();
    if shape.iter().product::<usize>() != numel {
        return Err(NetsError::op(format!(
            "Reshape: cannot reshape {from:?} to {target:?}"
        )));
    }
    Ok(shape)
}

fn concat(inputs: &[Option<&Value>], axis: i64, ctx: &Ctx) -> Result<Value> {
    let vals: Vec<&Value> = inputs.iter().copied().flatten().collect();
    if vals.is_empty() {
        return Err(NetsError::op("Concat of nothing"));
    }
    let rank = vals[0].shape().len();
    let a = resolve_axis(axis, rank, "Concat")?;
    for v in &vals {
        let s = v.shape();
        let s0 = vals[0].shape();
        if s.len() != rank
            || s.iter()
                .zip(&s0)
                .enumerate()
                .any(|(i, (x, y))| i != a && x != y)
        {
            return Err(NetsError::op(format!(
                "Concat: shapes {s0:?} and {s:?} differ off axis {a}"
            )));
        }
    }
    if vals.iter().all(|v| matches!(v, Value::Ints(_))) {
        if rank != 1 {
            return Err(NetsError::op(
                "Concat of integer tensors of rank above 1 is not supported",
            ));
        }
        let data: Vec<i64> = vals
            .iter()
            .flat_map(|v| match v {
                Value::Ints(i) => i.data.clone(),
                Value::Float(_) => vec![],
            })
            .collect();
        return Ok(Value::Ints(IntValue::vector(data)));
    }
    let floats: Vec<FloatValue> = vals
        .iter()
        .map(|v| match v {
            Value::Float(f) => f.clone(),
            Value::Ints(i) => ints_to_float(i, ctx),
        })
        .collect();
    let phys = floats[0].phys(a);
    Ok(Value::Float(FloatValue::new(
        Tensor::cat(floats.into_iter().map(|f| f.t).collect(), phys),
        rank,
    )))
}

/// The indices `start, start+step, …` selected by an ONNX slice on an axis of length `dim`.
fn slice_indices(dim: usize, start: i64, end: i64, step: i64) -> Result<Vec<usize>> {
    if step == 0 {
        return Err(NetsError::op("Slice: step 0"));
    }
    let d = dim as i64;
    let norm = |v: i64| if v < 0 { v + d } else { v };
    let mut out = Vec::new();
    if step > 0 {
        let (mut i, e) = (norm(start).clamp(0, d), norm(end).clamp(0, d));
        while i < e {
            out.push(i as usize);
            i += step;
        }
    } else {
        let (mut i, e) = (norm(start).clamp(-1, d - 1), norm(end).clamp(-1, d - 1));
        while i > e {
            out.push(i as usize);
            i += step;
        }
    }
    Ok(out)
}

fn slice(x: &Value, inputs: &[Option<&Value>]) -> Result<Value> {
    let s = x.shape();
    let starts = input(inputs, 1, "starts")?
        .ints("Slice's starts")?
        .data
        .clone();
    let ends = input(inputs, 2, "ends")?.ints("Slice's ends")?.data.clone();
    let axes: Vec<i64> = match ints_input(inputs, 3, "axes")? {
        Some(a) => a.data.clone(),
        None => (0..starts.len() as i64).collect(),
    };
    let steps: Vec<i64> = match ints_input(inputs, 4, "steps")? {
        Some(st) => st.data.clone(),
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(NetsError::op(
            "Slice: starts, ends, axes and steps differ in length",
        ));
    }
    let mut out = x.clone();
    for i in 0..starts.len() {
        let a = resolve_axis(axes[i], s.len(), "Slice")?;
        let idx = slice_indices(s[a], starts[i], ends[i], steps[i])?;
        out = take(&out, a, &idx)?;
    }
    Ok(out)
}

/// The entries `idx` along axis `a` (a contiguous run is a narrow, otherwise a select).
fn take(x: &Value, a: usize, idx: &[usize]) -> Result<Value> {
    let s = x.shape();
    match x {
        Value::Float(f) => {
            let phys = f.phys(a);
            let contiguous = idx.windows(2).all(|w| w[1] == w[0] + 1);
            if idx.is_empty() {
                return Err(NetsError::op(format!(
                    "Slice: empty result on axis {a} of {s:?}"
                )));
            }
            let t = if contiguous {
                f.t.clone().narrow(phys, idx[0], idx.len())
            } else {
                let data: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
                let ind =
                    Tensor::<1, Int>::from_data(TensorData::new(data, [idx.len()]), &f.t.device());
                f.t.clone().select(phys, ind)
            };
            Ok(Value::Float(FloatValue::new(t, f.rank)))
        }
        Value::Ints(v) => {
            let outer: usize = s[..a].iter().product();
            let inner: usize = s[a + 1..].iter().product();
            let mut data = Vec::with_capacity(outer * idx.len() * inner);
            for o in 0..outer {
                for &i in idx {
                    let base = (o * s[a] + i) * inner;
                    data.extend_from_slice(&v.data[base..base + inner]);
                }
            }
            let mut shape = s.clone();
            shape[a] = idx.len();
            Ok(Value::Ints(IntValue { shape, data }))
        }
    }
}

fn gather(x: &Value, indices: &IntValue, axis: i64) -> Result<Value> {
    let s = x.shape();
    let a = resolve_axis(axis, s.len(), "Gather")?;
    let idx = indices
        .data
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + s[a] as i64 } else { i };
            if j < 0 || j >= s[a] as i64 {
                Err(NetsError::op(format!(
                    "Gather: index {i} out of range for axis {a} of {s:?}"
                )))
            } else {
                Ok(j as usize)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let picked = if idx.is_empty() {
        return Err(NetsError::op("Gather with no indices"));
    } else {
        take(x, a, &idx)?
    };
    // Output shape: data.shape[..a] + indices.shape + data.shape[a+1..].
    let mut shape = s[..a].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&s[a + 1..]);
    relayout(&picked, &shape)
}
