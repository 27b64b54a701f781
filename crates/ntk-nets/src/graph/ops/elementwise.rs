//! Elementwise ops: arithmetic with NumPy broadcasting (`Add`, `Sub`, `Mul`, `Div`,
//! `Pow`), activations (`Relu`, `LeakyRelu`, `Elu`, `Gelu` in its erf and tanh forms,
//! `Erf`, `Tanh`, `Sigmoid`, `Sqrt`, `Exp`, `Neg`, `Reciprocal`), `Softmax` along an
//! axis, and the integer comparisons of shape arithmetic (`Equal`, `Where`).
//!
//! # Shapes
//! Binary ops broadcast as NumPy (trailing axes aligned, ones stretched); unary ops keep
//! the shape.

use crate::error::{NetsError, Result};
use crate::graph::ops::{Ctx, float_input, input, sum_terms, tangent};
use crate::graph::value::{FloatValue, IntValue, MAX_RANK, Value, padded};
use burn::tensor::{Tensor, activation};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Relu,
    /// `max(x, 0) + slope · min(x, 0)`.
    LeakyRelu(f64),
    /// `x` for `x > 0`, `α (eˣ − 1)` otherwise.
    Elu(f64),
    /// `x Φ(x)`; `tanh`: the tanh approximation `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`.
    Gelu {
        tanh: bool,
    },
    Erf,
    Tanh,
    Sigmoid,
    Sqrt,
    Exp,
    Neg,
    Reciprocal,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ElementwiseOp {
    Binary(Binary),
    Unary(Unary),
    /// `exp(x) / Σ_axis exp(x)`, stabilised by the maximum.
    Softmax {
        axis: i64,
    },
    /// Integer equality (shape arithmetic only).
    Equal,
    /// `cond ? a : b` on integers (shape arithmetic only).
    Where,
}

impl ElementwiseOp {
    pub fn type_name(&self) -> &'static str {
        match self {
            ElementwiseOp::Binary(b) => match b {
                Binary::Add => "Add",
                Binary::Sub => "Sub",
                Binary::Mul => "Mul",
                Binary::Div => "Div",
                Binary::Pow => "Pow",
            },
            ElementwiseOp::Unary(u) => match u {
                Unary::Relu => "Relu",
                Unary::LeakyRelu(_) => "LeakyRelu",
                Unary::Elu(_) => "Elu",
                Unary::Gelu { .. } => "Gelu",
                Unary::Erf => "Erf",
                Unary::Tanh => "Tanh",
                Unary::Sigmoid => "Sigmoid",
                Unary::Sqrt => "Sqrt",
                Unary::Exp => "Exp",
                Unary::Neg => "Neg",
                Unary::Reciprocal => "Reciprocal",
            },
            ElementwiseOp::Softmax { .. } => "Softmax",
            ElementwiseOp::Equal => "Equal",
            ElementwiseOp::Where => "Where",
        }
    }

    pub fn apply(&self, inputs: &[Option<&Value>], ctx: &Ctx) -> Result<Value> {
        match self {
            ElementwiseOp::Binary(op) => {
                let a = input(inputs, 0, "A")?;
                let b = input(inputs, 1, "B")?;
                match (a, b) {
                    (Value::Float(a), Value::Float(b)) => binary(*op, a, b).map(Value::Float),
                    (Value::Ints(a), Value::Ints(b)) => int_binary(*op, a, b).map(Value::Ints),
                    (Value::Ints(a), Value::Float(b)) => {
                        binary(*op, &ints_to_float(a, ctx), b).map(Value::Float)
                    }
                    (Value::Float(a), Value::Ints(b)) => {
                        binary(*op, a, &ints_to_float(b, ctx)).map(Value::Float)
                    }
                }
            }
            ElementwiseOp::Unary(op) => {
                let x = float_input(inputs, 0, "X")?.clone();
                Ok(Value::Float(x.map(|t| unary(*op, t))))
            }
            ElementwiseOp::Softmax { axis } => {
                let x = float_input(inputs, 0, "input")?;
                let a = x.phys(x.axis(*axis, "Softmax")?);
                Ok(Value::Float(x.clone().map(|t| activation::softmax(t, a))))
            }
            ElementwiseOp::Equal => {
                let a = input(inputs, 0, "A")?.ints("Equal's A")?;
                let b = input(inputs, 1, "B")?.ints("Equal's B")?;
                let (shape, pairs) = int_broadcast(a, b)?;
                Ok(Value::Ints(IntValue {
                    shape,
                    data: pairs.into_iter().map(|(x, y)| (x == y) as i64).collect(),
                }))
            }
            ElementwiseOp::Where => {
                let c = input(inputs, 0, "condition")?.ints("Where's condition")?;
                let a =
                    input(inputs, 1, "X")?.ints("Where's X (only integer Where is supported)")?;
                let b =
                    input(inputs, 2, "Y")?.ints("Where's Y (only integer Where is supported)")?;
                let (shape, ca) = int_broadcast(c, a)?;
                let (shape2, cb) = int_broadcast(
                    &IntValue {
                        shape: shape.clone(),
                        data: ca.iter().map(|p| p.0).collect(),
                    },
                    b,
                )?;
                if shape2 != shape {
                    return Err(NetsError::op(
                        "Where: condition, X and Y do not broadcast to one shape",
                    ));
                }
                let data = ca
                    .iter()
                    .zip(cb)
                    .map(|(&(c, x), (_, y))| if c != 0 { x } else { y })
                    .collect();
                Ok(Value::Ints(IntValue { shape, data }))
            }
        }
    }
}

impl ElementwiseOp {
    /// Forward mode (see [`crate::graph::ops::Op::jvp`]):
    /// - `Add`/`Sub`: `ȧ ± ḃ`; `Mul`: `ȧ·b + a·ḃ`; `Div`: `ȧ/b − y·ḃ/b`; `Pow` with a
    ///   constant exponent `p`: `p·a^(p−1)·ȧ` (an exponent that depends on the parameters is
    ///   refused);
    /// - activations: `φ'(x)·ẋ` ([`unary_derivative`]);
    /// - `Softmax`: `s ⊙ (ẋ − Σ_axis s ⊙ ẋ)`, `s` the output.
    ///
    /// Broadcast operands are stretched to the output's shape.
    pub fn jvp(
        &self,
        inputs: &[Option<&Value>],
        tangents: &[Option<&FloatValue>],
        out: &FloatValue,
        ctx: &Ctx,
    ) -> Result<Option<FloatValue>> {
        let shape = out.shape();
        let operand = |i: usize, what: &str| -> Result<FloatValue> {
            Ok(match input(inputs, i, what)? {
                Value::Float(f) => f.clone(),
                Value::Ints(v) => ints_to_float(v, ctx),
            })
        };
        let stretched = |t: &FloatValue| expand_to(t, &shape);
        match self {
            ElementwiseOp::Binary(op) => {
                let (ta, tb) = (tangent(tangents, 0), tangent(tangents, 1));
                let (a, b) = (operand(0, "A")?, operand(1, "B")?);
                Ok(match op {
                    Binary::Add => sum_terms([ta.map(stretched), tb.map(stretched)]),
                    Binary::Sub => {
                        sum_terms([ta.map(stretched), tb.map(|t| stretched(t).map(|x| x.neg()))])
                    }
                    Binary::Mul => sum_terms([
                        ta.map(|t| binary(Binary::Mul, t, &b)).transpose()?,
                        tb.map(|t| binary(Binary::Mul, &a, t)).transpose()?,
                    ]),
                    Binary::Div => {
                        let first = ta.map(|t| binary(Binary::Div, t, &b)).transpose()?;
                        let second = match tb {
                            None => None,
                            Some(t) => {
                                let q = binary(Binary::Div, t, &b)?;
                                Some(binary(Binary::Mul, out, &q)?.map(|x| x.neg()))
                            }
                        };
                        sum_terms([first, second])
                    }
                    Binary::Pow => {
                        if tb.is_some() {
                            return Err(NetsError::op(
                                "Pow whose exponent depends on the parameters is not supported",
                            ));
                        }
                        match ta {
                            None => None,
                            Some(t) => {
                                let d = if b.numel() == 1 {
                                    let e = scalar_of(&b);
                                    a.clone().map(|x| pow_scalar(x, e - 1.0).mul_scalar(e))
                                } else {
                                    let e1 = b.clone().map(|x| x.sub_scalar(1.0));
                                    binary(Binary::Mul, &binary(Binary::Pow, &a, &e1)?, &b)?
                                };
                                Some(expand_to(&binary(Binary::Mul, t, &d)?, &shape))
                            }
                        }
                    }
                })
            }
            ElementwiseOp::Unary(op) => Ok(match tangent(tangents, 0) {
                None => None,
                Some(t) => {
                    let x = float_input(inputs, 0, "X")?;
                    let d = unary_derivative(*op, x.t.clone(), out.t.clone());
                    Some(FloatValue::new(t.t.clone() * d, out.rank))
                }
            }),
            ElementwiseOp::Softmax { axis } => Ok(match tangent(tangents, 0) {
                None => None,
                Some(t) => {
                    let a = out.phys(out.axis(*axis, "Softmax")?);
                    let st = out.t.clone() * t.t.clone();
                    let sum = st.clone().sum_dim(a);
                    Some(FloatValue::new(st - out.t.clone() * sum, out.rank))
                }
            }),
            ElementwiseOp::Equal | ElementwiseOp::Where => Ok(None),
        }
    }
}

/// `φ'(x)` of an activation, from its input `x` and output `y` (elementwise).
///
/// `relu' = [x > 0]` (0 at 0, as PyTorch and JAX), `leaky' = 1 or slope`,
/// `elu' = 1 or α eˣ`, `gelu' = Φ(x) + x φ(x)` (tanh form: its exact derivative),
/// `erf' = 2/√π e^(−x²)`, `tanh' = 1 − y²`, `σ' = y(1 − y)`, `√' = 1/(2y)`, `exp' = y`,
/// `(−x)' = −1`, `(1/x)' = −y²`.
pub fn unary_derivative(op: Unary, x: Tensor<MAX_RANK>, y: Tensor<MAX_RANK>) -> Tensor<MAX_RANK> {
    use std::f64::consts::{FRAC_1_SQRT_2, PI};
    let positive = |x: Tensor<MAX_RANK>| x.sign().clamp_min(0.0);
    match op {
        Unary::Relu => positive(x),
        Unary::LeakyRelu(s) => {
            let p = positive(x);
            p.clone() + p.neg().add_scalar(1.0).mul_scalar(s)
        }
        Unary::Elu(a) => {
            let p = positive(x.clone());
            p.clone() + p.neg().add_scalar(1.0) * x.clamp_max(0.0).exp().mul_scalar(a)
        }
        Unary::Gelu { tanh: false } => {
            let cdf = x
                .clone()
                .mul_scalar(FRAC_1_SQRT_2)
                .erf()
                .add_scalar(1.0)
                .mul_scalar(0.5);
            let pdf = x
                .clone()
                .square()
                .mul_scalar(-0.5)
                .exp()
                .mul_scalar(1.0 / (2.0 * PI).sqrt());
            cdf + x * pdf
        }
        Unary::Gelu { tanh: true } => {
            // y = ½x(1 + tanh u), u = c(x + 0.044715x³):
            // y' = ½(1 + tanh u) + ½x(1 − tanh²u)·c(1 + 3·0.044715x²).
            let c = (2.0 / PI).sqrt();
            let x2 = x.clone().square();
            let u = (x.clone() + x2.clone().mul(x.clone()).mul_scalar(0.044715)).mul_scalar(c);
            let th = u.tanh();
            let du = x2.mul_scalar(3.0 * 0.044715).add_scalar(1.0).mul_scalar(c);
            th.clone().add_scalar(1.0).mul_scalar(0.5)
                + x.mul(th.square().neg().add_scalar(1.0))
                    .mul(du)
                    .mul_scalar(0.5)
        }
        Unary::Erf => x.square().neg().exp().mul_scalar(2.0 / PI.sqrt()),
        Unary::Tanh => y.square().neg().add_scalar(1.0),
        Unary::Sigmoid => y.clone() * y.neg().add_scalar(1.0),
        Unary::Sqrt => y.recip().mul_scalar(0.5),
        Unary::Exp => y,
        Unary::Neg => x.ones_like().neg(),
        Unary::Reciprocal => y.square().neg(),
    }
}

/// An integer tensor as a float tensor of the computation's dtype.
pub fn ints_to_float(v: &IntValue, ctx: &Ctx) -> FloatValue {
    FloatValue::from_host(
        &v.shape,
        v.data.iter().map(|&x| x as f64).collect(),
        ctx.device,
        ctx.dtype,
    )
}

/// The NumPy broadcast of two logical shapes, or an error naming both.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(NetsError::op(format!(
                    "shapes {a:?} and {b:?} do not broadcast"
                )));
            }
        };
    }
    crate::graph::value::check_size(&out, "broadcast")?;
    Ok(out)
}

/// Expands a value to a (broadcast-compatible) logical shape.
pub fn expand_to(x: &FloatValue, shape: &[usize]) -> FloatValue {
    if x.shape() == shape {
        return x.clone();
    }
    FloatValue::new(x.t.clone().expand(padded(shape)), shape.len())
}

/// `a ∘ b` with broadcasting.
pub fn binary(op: Binary, a: &FloatValue, b: &FloatValue) -> Result<FloatValue> {
    let shape = broadcast_shape(&a.shape(), &b.shape())?;
    if op == Binary::Pow && b.numel() == 1 {
        let e = scalar_of(b);
        return Ok(expand_to(a, &shape).map(|t| pow_scalar(t, e)));
    }
    let (x, y) = (expand_to(a, &shape).t, expand_to(b, &shape).t);
    let t = match op {
        Binary::Add => x + y,
        Binary::Sub => x - y,
        Binary::Mul => x * y,
        Binary::Div => x / y,
        Binary::Pow => x.powf(y),
    };
    Ok(FloatValue::new(t, shape.len()))
}

fn pow_scalar(t: Tensor<MAX_RANK>, e: f64) -> Tensor<MAX_RANK> {
    if e == 2.0 {
        t.clone() * t
    } else if e == 1.0 {
        t
    } else if e == 3.0 {
        t.clone() * t.clone() * t
    } else if e == 0.5 {
        t.sqrt()
    } else {
        t.powf_scalar(e)
    }
}

/// The single value of a one-element tensor (a constant exponent).
pub fn scalar_of(v: &FloatValue) -> f64 {
    v.t.clone()
        .detach()
        .into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .ok()
        .and_then(|d| d.first().copied())
        .unwrap_or(f64::NAN)
}

/// An activation applied elementwise.
pub fn unary(op: Unary, t: Tensor<MAX_RANK>) -> Tensor<MAX_RANK> {
    match op {
        Unary::Relu => activation::relu(t),
        Unary::LeakyRelu(s) => t.clone().clamp_min(0.0) + t.clamp_max(0.0).mul_scalar(s),
        Unary::Elu(a) => {
            t.clone().clamp_min(0.0) + (t.clamp_max(0.0).exp().sub_scalar(1.0)).mul_scalar(a)
        }
        Unary::Gelu { tanh: false } => {
            // × 1/√2 rather than div_scalar: burn 0.22's div_scalar backward rounds the
            // scalar to f32, which costs f64 kernels ~1e-9.
            let phi = t
                .clone()
                .mul_scalar(std::f64::consts::FRAC_1_SQRT_2)
                .erf()
                .add_scalar(1.0);
            t.mul(phi).mul_scalar(0.5)
        }
        Unary::Gelu { tanh: true } => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let cube = t.clone() * t.clone() * t.clone();
            let inner = (t.clone() + cube.mul_scalar(0.044715)).mul_scalar(c);
            t.mul(inner.tanh().add_scalar(1.0)).mul_scalar(0.5)
        }
        Unary::Erf => t.erf(),
        Unary::Tanh => t.tanh(),
        Unary::Sigmoid => activation::sigmoid(t),
        Unary::Sqrt => t.sqrt(),
        Unary::Exp => t.exp(),
        Unary::Neg => t.neg(),
        Unary::Reciprocal => t.recip(),
    }
}

/// Broadcasts two integer tensors: the shape and the pairs of values.
fn int_broadcast(a: &IntValue, b: &IntValue) -> Result<(Vec<usize>, Vec<(i64, i64)>)> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let n: usize = shape.iter().product();
    let at = |v: &IntValue, flat: usize| -> i64 {
        // Index of `flat` (in `shape`) in the broadcast operand `v`.
        let r = shape.len();
        let mut rem = flat;
        let mut idx = 0;
        let mut stride = 1;
        for ax in (0..r).rev() {
            let c = rem % shape[ax];
            rem /= shape[ax];
            let vax = ax as isize - (r - v.shape.len()) as isize;
            if vax >= 0 {
                let d = v.shape[vax as usize];
                idx += if d == 1 { 0 } else { c } * stride;
                stride *= d;
            }
        }
        v.data[idx]
    };
    let pairs = (0..n).map(|i| (at(a, i), at(b, i))).collect();
    Ok((shape, pairs))
}

/// Integer arithmetic of shape computations.
pub fn int_binary(op: Binary, a: &IntValue, b: &IntValue) -> Result<IntValue> {
    let (shape, pairs) = int_broadcast(a, b)?;
    let data = pairs
        .into_iter()
        .map(|(x, y)| match op {
            Binary::Add => Ok(x.wrapping_add(y)),
            Binary::Sub => Ok(x.wrapping_sub(y)),
            Binary::Mul => Ok(x.wrapping_mul(y)),
            Binary::Div if y == 0 => Err(NetsError::op("integer division by zero")),
            Binary::Div => Ok(x.wrapping_div(y)),
            Binary::Pow => u32::try_from(y)
                .map(|e| x.wrapping_pow(e))
                .map_err(|_| NetsError::op("integer Pow with a negative exponent")),
        })
        .collect::<Result<_>>()?;
    Ok(IntValue { shape, data })
}
