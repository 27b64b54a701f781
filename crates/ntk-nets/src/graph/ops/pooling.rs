//! Pooling and reductions: `MaxPool`, `AveragePool` (padding, `count_include_pad`,
//! `ceil_mode`), `GlobalAveragePool`, `ReduceMean`, `ReduceSum`.
//!
//! # Shapes
//! Pools: `[N, C, H, W] → [N, C, H', W']` (`H' = ⌊(H + pads − dilated kernel) / stride⌋ + 1`,
//! ceiling with `ceil_mode`); `GlobalAveragePool`: `[N, C, ...] → [N, C, 1, ...]`;
//! reductions over `axes` (all when omitted), kept as ones with `keepdims`.

use crate::error::{NetsError, Result};
use crate::graph::ops::{float_input, ints_input, tangent};
use crate::graph::value::{FloatValue, Value};
use burn::tensor::Tensor;
use burn::tensor::module::{avg_pool2d, max_pool2d, max_pool2d_with_indices};
use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};

#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
    pub ceil_mode: bool,
    /// ONNX `auto_pad` SAME_UPPER / SAME_LOWER / VALID.
    pub auto_pad: super::conv::AutoPad,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    Mean,
    Sum,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PoolOp {
    MaxPool(Window),
    AveragePool {
        window: Window,
        count_include_pad: bool,
    },
    GlobalAveragePool,
    /// `axes`: from the attribute (older opsets); otherwise input 1.
    Reduce {
        op: Reduction,
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
}

impl Window {
    fn padding(&self, hw: [usize; 2]) -> [(usize, usize); 2] {
        use super::conv::{AutoPad, same_padding};
        match self.auto_pad {
            AutoPad::NotSet => [(self.pads[0], self.pads[2]), (self.pads[1], self.pads[3])],
            AutoPad::Valid => [(0, 0); 2],
            a => [0, 1].map(|i| {
                same_padding(
                    hw[i],
                    self.kernel[i],
                    self.strides[i],
                    self.dilations[i],
                    a == AutoPad::SameUpper,
                )
            }),
        }
    }

    /// The checked input and burn's options of a max pooling over this window.
    fn max_pool(&self, x: &FloatValue) -> Result<(Tensor<4>, MaxPoolOptions<2>)> {
        let (t, padding) = self.check(x, "MaxPool")?;
        let options = MaxPoolOptions {
            kernel_size: self.kernel,
            stride: self.strides,
            padding,
            dilation: self.dilations,
            ceil_mode: self.ceil_mode,
        };
        Ok((t, options))
    }

    fn check(&self, x: &FloatValue, what: &str) -> Result<(Tensor<4>, [(usize, usize); 2])> {
        let s = x.shape();
        if s.len() != 4 {
            return Err(NetsError::op(format!(
                "{what}: only 2-D pooling is supported, input {s:?} is not [N, C, H, W]"
            )));
        }
        let pad = self.padding([s[2], s[3]]);
        crate::graph::value::check_size(
            &[
                s[0],
                s[1],
                s[2] + pad[0].0 + pad[0].1,
                s[3] + pad[1].0 + pad[1].1,
            ],
            what,
        )?;
        for a in 0..2 {
            let dk = self.dilations[a] * (self.kernel[a].max(1) - 1) + 1;
            if self.kernel[a] == 0 || self.strides[a] == 0 || s[2 + a] + pad[a].0 + pad[a].1 < dk {
                return Err(NetsError::op(format!(
                    "{what}: window {:?} stride {:?} does not fit the padded input {s:?}",
                    self.kernel, self.strides
                )));
            }
            if pad[a].0 >= dk || pad[a].1 >= dk {
                return Err(NetsError::op(format!(
                    "{what}: padding {pad:?} must be smaller than the window {:?}",
                    self.kernel
                )));
            }
        }
        Ok((x.to_rank(), pad))
    }
}

impl PoolOp {
    pub fn type_name(&self) -> &'static str {
        match self {
            PoolOp::MaxPool(_) => "MaxPool",
            PoolOp::AveragePool { .. } => "AveragePool",
            PoolOp::GlobalAveragePool => "GlobalAveragePool",
            PoolOp::Reduce {
                op: Reduction::Mean,
                ..
            } => "ReduceMean",
            PoolOp::Reduce {
                op: Reduction::Sum, ..
            } => "ReduceSum",
        }
    }

    pub fn apply(&self, inputs: &[Option<&Value>]) -> Result<Value> {
        let x = float_input(inputs, 0, "X")?;
        let y = match self {
            PoolOp::MaxPool(w) => {
                let (t, options) = w.max_pool(x)?;
                FloatValue::from_tensor(max_pool2d(t, options))
            }
            PoolOp::AveragePool {
                window: w,
                count_include_pad,
            } => {
                if w.dilations != [1, 1] {
                    return Err(NetsError::op("AveragePool with dilation is not supported"));
                }
                let (t, padding) = w.check(x, "AveragePool")?;
                let options = AvgPoolOptions {
                    kernel_size: w.kernel,
                    stride: w.strides,
                    padding,
                    count_include_pad: *count_include_pad,
                    ceil_mode: w.ceil_mode,
                };
                FloatValue::from_tensor(avg_pool2d(t, options))
            }
            PoolOp::GlobalAveragePool => {
                if x.rank < 3 {
                    return Err(NetsError::op(format!(
                        "GlobalAveragePool needs [N, C, spatial...], got {:?}",
                        x.shape()
                    )));
                }
                let axes: Vec<usize> = (2..x.rank).map(|a| x.phys(a)).collect();
                FloatValue::new(x.t.clone().mean_dims(&axes), x.rank)
            }
            PoolOp::Reduce {
                op,
                axes,
                keepdims,
                noop_with_empty_axes,
            } => {
                let given: Option<Vec<i64>> = match axes {
                    Some(a) => Some(a.clone()),
                    None => ints_input(inputs, 1, "axes")?.map(|v| v.data.clone()),
                };
                let logical: Vec<usize> = match given {
                    Some(a) if !a.is_empty() => {
                        let mut v = a
                            .iter()
                            .map(|&ax| x.axis(ax, self.type_name()))
                            .collect::<Result<Vec<_>>>()?;
                        v.sort_unstable();
                        v.dedup();
                        v
                    }
                    _ if *noop_with_empty_axes => return Ok(Value::Float(x.clone())),
                    _ => (0..x.rank).collect(),
                };
                let phys: Vec<usize> = logical.iter().map(|&a| x.phys(a)).collect();
                let t = match op {
                    Reduction::Mean => x.t.clone().mean_dims(&phys),
                    Reduction::Sum => x.t.clone().sum_dims(&phys),
                };
                let kept = FloatValue::new(t, x.rank);
                if *keepdims {
                    kept
                } else {
                    let shape: Vec<usize> = x
                        .shape()
                        .iter()
                        .enumerate()
                        .filter(|(a, _)| !logical.contains(a))
                        .map(|(_, &d)| d)
                        .collect();
                    kept.reshape(&shape)
                }
            }
        };
        Ok(Value::Float(y))
    }

    /// Forward mode (see [`crate::graph::ops::Op::jvp`]): average pooling and reductions
    /// are linear, `ẏ = pool(ẋ)`; max pooling passes the tangent of each window's maximum,
    /// `ẏ[n, c, i] = ẋ[n, c, argmax_i]` (burn's indices, into the unpadded `H·W`).
    pub fn jvp(
        &self,
        inputs: &[Option<&Value>],
        tangents: &[Option<&FloatValue>],
    ) -> Result<Option<FloatValue>> {
        let Some(t) = tangent(tangents, 0) else {
            return Ok(None);
        };
        match self {
            PoolOp::MaxPool(w) => {
                let x = float_input(inputs, 0, "X")?;
                let (xt, options) = w.max_pool(x)?;
                let (y, idx) = max_pool2d_with_indices(xt, options);
                let [n, c, ho, wo] = y.dims();
                let tt: Tensor<4> = t.to_rank();
                let [_, _, h, wi] = tt.dims();
                let picked = tt
                    .reshape([n, c, h * wi])
                    .gather(2, idx.reshape([n, c, ho * wo]));
                Ok(Some(FloatValue::from_tensor(
                    picked.reshape([n, c, ho, wo]),
                )))
            }
            _ => {
                let tv = Value::Float(t.clone());
                let mut ins: Vec<Option<&Value>> = inputs.to_vec();
                ins[0] = Some(&tv);
                match self.apply(&ins)? {
                    Value::Float(f) => Ok(Some(f)),
                    Value::Ints(_) => Ok(None),
                }
            }
        }
    }
}
