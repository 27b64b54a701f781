//! The op vocabulary of graph networks, one file per family (the cut of neural-tangents'
//! stax): [`linear`] (MatMul, Gemm), [`conv`], [`normalization`] (BatchNorm, LayerNorm),
//! [`pooling`] (max/average/global pooling, reductions), [`elementwise`] (arithmetic with
//! broadcasting, activations, softmax) and [`shape`] (reshapes, transposes, slicing,
//! concatenation and the integer shape arithmetic of dynamic-batch exports).
//!
//! Each op checks its inputs and returns an error instead of letting burn panic; the
//! interpreter ([`crate::graph::GraphNetwork`]) only walks nodes and names the node in
//! errors.

pub mod conv;
pub mod elementwise;
pub mod linear;
pub mod normalization;
pub mod pooling;
pub mod shape;

use crate::error::{NetsError, Result};
use crate::graph::value::{FloatValue, IntValue, Value};
use burn::tensor::{DType, Device};

/// Where and how an op runs.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub device: &'a Device,
    pub dtype: DType,
    /// Samples in the batch being computed.
    pub batch: usize,
    /// The graph was exported with a fixed batch of 1: constant shape operands whose first
    /// entry is 1 stand for the batch (see [`shape::ShapeOp::Reshape`]).
    pub batch_one_export: bool,
}

/// One op of a graph node.
#[derive(Debug, Clone)]
pub enum Op {
    Linear(linear::LinearOp),
    Conv(conv::Conv),
    Norm(normalization::NormOp),
    Pool(pooling::PoolOp),
    Elementwise(elementwise::ElementwiseOp),
    Shape(shape::ShapeOp),
}

impl Op {
    /// Runs the op on its inputs (`None`: an omitted optional input).
    pub fn apply(&self, inputs: &[Option<&Value>], ctx: &Ctx) -> Result<Value> {
        match self {
            Op::Linear(op) => op.apply(inputs).map(Value::Float),
            Op::Conv(op) => op.apply(inputs).map(Value::Float),
            Op::Norm(op) => op.apply(inputs).map(Value::Float),
            Op::Pool(op) => op.apply(inputs),
            Op::Elementwise(op) => op.apply(inputs, ctx),
            Op::Shape(op) => op.apply(inputs, ctx),
        }
    }

    /// Forward mode: the tangent of the output given the tangents of the inputs
    /// (`tangents[i]`: `None` where input `i` does not depend on the parameters, or is
    /// integer), the inputs and the computed output. `None` when the output does not
    /// depend on the parameters (a zero tangent, never materialised).
    ///
    /// `ẏ = Σ_i ∂op/∂x_i · ẋ_i`; each family states its rule beside its forward pass.
    ///
    /// # Shapes
    /// Every tangent has its primal's logical shape; the result has the output's.
    pub fn jvp(
        &self,
        inputs: &[Option<&Value>],
        tangents: &[Option<&FloatValue>],
        output: &Value,
        ctx: &Ctx,
    ) -> Result<Option<FloatValue>> {
        let Value::Float(out) = output else {
            return Ok(None);
        };
        if tangents.iter().all(Option::is_none) {
            return Ok(None);
        }
        match self {
            Op::Linear(op) => op.jvp(inputs, tangents),
            Op::Conv(op) => op.jvp(inputs, tangents, out),
            Op::Norm(op) => op.jvp(inputs, tangents, out),
            Op::Pool(op) => op.jvp(inputs, tangents),
            Op::Elementwise(op) => op.jvp(inputs, tangents, out, ctx),
            Op::Shape(op) => op.jvp(inputs, tangents, ctx),
        }
    }

    /// The op's name (ONNX's where it has one).
    pub fn type_name(&self) -> &'static str {
        match self {
            Op::Linear(op) => op.type_name(),
            Op::Conv(_) => "Conv",
            Op::Norm(op) => op.type_name(),
            Op::Pool(op) => op.type_name(),
            Op::Elementwise(op) => op.type_name(),
            Op::Shape(op) => op.type_name(),
        }
    }

    /// Whether the op only relays its first input's values in another layout (transposes,
    /// reshapes, casts, identity): the ops a parameter may pass through on its way to the
    /// op that consumes it.
    pub fn is_layout(&self) -> bool {
        matches!(
            self,
            Op::Shape(
                shape::ShapeOp::Transpose { .. }
                    | shape::ShapeOp::Reshape { .. }
                    | shape::ShapeOp::Squeeze { .. }
                    | shape::ShapeOp::Unsqueeze { .. }
                    | shape::ShapeOp::Flatten { .. }
                    | shape::ShapeOp::Identity
                    | shape::ShapeOp::Cast { .. }
            )
        )
    }
}

/// The tangent of input `i` (`None`: zero).
pub fn tangent<'a>(tangents: &[Option<&'a FloatValue>], i: usize) -> Option<&'a FloatValue> {
    tangents.get(i).copied().flatten()
}

/// The sum of tangent terms of one shape (`None` terms are zero).
pub fn sum_terms(terms: impl IntoIterator<Item = Option<FloatValue>>) -> Option<FloatValue> {
    terms
        .into_iter()
        .flatten()
        .reduce(|a, b| FloatValue::new(a.t + b.t, a.rank))
}

/// Input `i` of an op, or an error naming it.
pub fn input<'a>(inputs: &[Option<&'a Value>], i: usize, what: &str) -> Result<&'a Value> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| NetsError::op(format!("input {i} ({what}) is missing")))
}

/// Float input `i`.
pub fn float_input<'a>(
    inputs: &[Option<&'a Value>],
    i: usize,
    what: &str,
) -> Result<&'a FloatValue> {
    input(inputs, i, what)?.float(what)
}

/// Integer input `i`, if given.
pub fn ints_input<'a>(
    inputs: &[Option<&'a Value>],
    i: usize,
    what: &str,
) -> Result<Option<&'a IntValue>> {
    match inputs.get(i).copied().flatten() {
        None => Ok(None),
        Some(v) => v.ints(what).map(Some),
    }
}
