//! Rank-erased values flowing between graph nodes.
//!
//! burn tensors carry their rank in the type, ONNX graphs change rank from node to node
//! (attention reshapes to rank 4 or 5). Every float value is therefore held as a
//! `Tensor<6>` whose leading axes are 1, with its logical rank beside it: a logical
//! `[N, T, D]` is stored `[1, 1, 1, N, T, D]`. NumPy broadcasting then needs no rank
//! bookkeeping (leading ones broadcast), and an op that needs a fixed rank (conv2d:
//! rank 4) reshapes in and out. Integer values (shapes, indices) live on the host: they
//! are the operands of shape arithmetic in dynamic-batch exports, never differentiated.

use crate::error::NetsError as GraphError;
use burn::tensor::{DType, Device, Tensor, TensorData};

/// The storage rank of every float value.
pub const MAX_RANK: usize = 6;

/// A float tensor of logical rank `rank` ≤ [`MAX_RANK`], stored with leading ones.
#[derive(Debug, Clone)]
pub struct FloatValue {
    pub t: Tensor<MAX_RANK>,
    pub rank: usize,
}

/// Integer data on the host (shapes, indices, axes), row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct IntValue {
    pub shape: Vec<usize>,
    pub data: Vec<i64>,
}

/// A value of the graph: a float tensor on the device or integers on the host.
#[derive(Debug, Clone)]
pub enum Value {
    Float(FloatValue),
    Ints(IntValue),
}

/// Most elements one tensor of a graph may hold (2 GiB in f64): ops whose output would be
/// larger (a broadcast, a product, a convolution with a huge padding) refuse to run
/// instead of aborting on the allocation.
pub const MAX_ELEMENTS: u128 = 1 << 28;

/// Errors when a tensor of `shape` would exceed [`MAX_ELEMENTS`].
pub fn check_size(shape: &[usize], what: &str) -> Result<(), GraphError> {
    let n = shape
        .iter()
        .fold(1u128, |a, &d| a.saturating_mul(d as u128));
    if n > MAX_ELEMENTS {
        return Err(GraphError::op(format!(
            "{what}: the result {shape:?} would hold {n} values, more than ntk allows in one tensor ({MAX_ELEMENTS})"
        )));
    }
    Ok(())
}

/// `shape` left-padded with ones to [`MAX_RANK`].
pub fn padded(shape: &[usize]) -> [usize; MAX_RANK] {
    let mut out = [1; MAX_RANK];
    out[MAX_RANK - shape.len()..].copy_from_slice(shape);
    out
}

impl FloatValue {
    /// Wraps a stored tensor of logical rank `rank`.
    pub fn new(t: Tensor<MAX_RANK>, rank: usize) -> Self {
        debug_assert!(rank <= MAX_RANK);
        FloatValue { t, rank }
    }

    /// A value of logical `shape` from row-major f64 data, uploaded in `dtype`.
    pub fn from_host(shape: &[usize], data: Vec<f64>, device: &Device, dtype: DType) -> Self {
        let t = Tensor::from_data(
            TensorData::new(data, padded(shape).to_vec()),
            (device, dtype),
        );
        FloatValue::new(t, shape.len())
    }

    /// From a tensor of any rank ≤ 6.
    pub fn from_tensor<const D: usize>(t: Tensor<D>) -> Self {
        let dims = t.dims();
        FloatValue::new(t.reshape(padded(&dims)), D)
    }

    /// The logical shape.
    pub fn shape(&self) -> Vec<usize> {
        self.t.dims()[MAX_RANK - self.rank..].to_vec()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.t.dims().iter().product()
    }

    /// The storage axis of logical axis `axis`.
    pub fn phys(&self, axis: usize) -> usize {
        axis + MAX_RANK - self.rank
    }

    /// Resolves a possibly negative ONNX axis against this value's rank.
    pub fn axis(&self, axis: i64, what: &str) -> Result<usize, GraphError> {
        resolve_axis(axis, self.rank, what)
    }

    /// Reshapes to another logical shape (same number of elements, checked by the caller).
    pub fn reshape(self, shape: &[usize]) -> Self {
        FloatValue::new(self.t.reshape(padded(shape)), shape.len())
    }

    /// The tensor as rank `D` (the logical rank must be ≤ D; leading ones are dropped or
    /// added).
    pub fn to_rank<const D: usize>(&self) -> Tensor<D> {
        let shape = self.shape();
        let mut dims = [1usize; D];
        dims[D - shape.len()..].copy_from_slice(&shape);
        self.t.clone().reshape(dims)
    }

    /// Applies `f` to the tensor, keeping the rank.
    pub fn map(self, f: impl FnOnce(Tensor<MAX_RANK>) -> Tensor<MAX_RANK>) -> Self {
        FloatValue::new(f(self.t), self.rank)
    }
}

/// Resolves an ONNX axis (negative counts from the end) against `rank`.
pub fn resolve_axis(axis: i64, rank: usize, what: &str) -> Result<usize, GraphError> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return Err(GraphError::op(format!(
            "{what}: axis {axis} is out of range for a tensor of rank {rank}"
        )));
    }
    Ok(a as usize)
}

impl IntValue {
    /// A 1-D integer vector.
    pub fn vector(data: Vec<i64>) -> Self {
        IntValue {
            shape: vec![data.len()],
            data,
        }
    }

    /// A 0-D integer scalar.
    pub fn scalar(v: i64) -> Self {
        IntValue {
            shape: vec![],
            data: vec![v],
        }
    }
}

impl Value {
    /// The logical shape.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Value::Float(f) => f.shape(),
            Value::Ints(i) => i.shape.clone(),
        }
    }

    /// The float tensor, or an error naming what needed it.
    pub fn float(&self, what: &str) -> Result<&FloatValue, GraphError> {
        match self {
            Value::Float(f) => Ok(f),
            Value::Ints(_) => Err(GraphError::op(format!(
                "{what} must be a float tensor, got integers"
            ))),
        }
    }

    /// The integers, or an error naming what needed them (float constants holding whole
    /// numbers are not accepted: shapes must be integer tensors, as in ONNX).
    pub fn ints(&self, what: &str) -> Result<&IntValue, GraphError> {
        match self {
            Value::Ints(i) => Ok(i),
            Value::Float(_) => Err(GraphError::op(format!(
                "{what} must be an integer tensor (a shape or indices), got a float tensor computed by the network; only constant shapes are supported"
            ))),
        }
    }
}
