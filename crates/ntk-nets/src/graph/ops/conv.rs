//! 2-D convolution (`Conv`): stride, padding (asymmetric too, or ONNX `auto_pad`),
//! dilation and groups (depthwise included).
//!
//! # Shapes
//! `x: [N, C, H, W]`, `weight: [O, C/groups, kh, kw]`, `bias: [O]` → `[N, O, H', W']`,
//! `H' = ⌊(H + pad_top + pad_bottom − dilation·(kh − 1) − 1) / stride⌋ + 1`.

use crate::error::{NetsError, Result};
use crate::graph::ops::{float_input, sum_terms, tangent};
use crate::graph::value::{FloatValue, Value};
use burn::tensor::Tensor;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode};

/// ONNX `auto_pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoPad {
    /// Explicit `pads`.
    #[default]
    NotSet,
    Valid,
    /// Total padding `(out − 1)·stride + dilated kernel − in`, extra at the end.
    SameUpper,
    /// The same, extra at the beginning.
    SameLower,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    pub strides: [usize; 2],
    /// `[top, left, bottom, right]` (ONNX order: begins then ends).
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
    pub groups: usize,
    pub auto_pad: AutoPad,
}

impl Default for Conv {
    fn default() -> Self {
        Conv {
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
            groups: 1,
            auto_pad: AutoPad::NotSet,
        }
    }
}

/// `(before, after)` padding of one spatial axis under ONNX `auto_pad`.
pub fn same_padding(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    upper: bool,
) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let dk = dilation * (kernel - 1) + 1;
    let total = ((out - 1) * stride + dk).saturating_sub(input);
    let small = total / 2;
    if upper {
        (small, total - small)
    } else {
        (total - small, small)
    }
}

impl Conv {
    /// The resolved `[(top, bottom), (left, right)]` padding for an input `[H, W]` and a
    /// kernel `[kh, kw]`.
    pub fn padding(&self, hw: [usize; 2], k: [usize; 2]) -> [(usize, usize); 2] {
        match self.auto_pad {
            AutoPad::NotSet => [(self.pads[0], self.pads[2]), (self.pads[1], self.pads[3])],
            AutoPad::Valid => [(0, 0); 2],
            AutoPad::SameUpper | AutoPad::SameLower => {
                let up = self.auto_pad == AutoPad::SameUpper;
                [0, 1].map(|a| same_padding(hw[a], k[a], self.strides[a], self.dilations[a], up))
            }
        }
    }

    /// Checks the shapes of `x` and `weight` (and `bias`) against each other.
    pub fn check(&self, x: &[usize], w: &[usize], bias: Option<&[usize]>) -> Result<()> {
        if x.len() != 4 {
            return Err(NetsError::op(format!(
                "only 2-D convolutions are supported: input {x:?} is not [N, C, H, W]"
            )));
        }
        if w.len() != 4 {
            return Err(NetsError::op(format!(
                "weight {w:?} is not [O, C/groups, kh, kw]"
            )));
        }
        let g = self.groups;
        if g == 0 || x[1] != w[1] * g || w[0] % g != 0 {
            return Err(NetsError::op(format!(
                "input channels {} do not match weight {w:?} with groups {g}",
                x[1]
            )));
        }
        if let Some(b) = bias
            && b != [w[0]]
        {
            return Err(NetsError::op(format!(
                "bias {b:?} does not match {} output channels",
                w[0]
            )));
        }
        let pad = self.padding([x[2], x[3]], [w[2], w[3]]);
        crate::graph::value::check_size(
            &[
                x[0],
                x[1],
                x[2] + pad[0].0 + pad[0].1,
                x[3] + pad[1].0 + pad[1].1,
            ],
            "Conv (padded input)",
        )?;
        crate::graph::value::check_size(
            &[
                x[0],
                w[0],
                x[2] + pad[0].0 + pad[0].1,
                x[3] + pad[1].0 + pad[1].1,
            ],
            "Conv",
        )?;
        for a in 0..2 {
            let dk = self.dilations[a] * (w[2 + a] - 1) + 1;
            if x[2 + a] + pad[a].0 + pad[a].1 < dk || self.strides[a] == 0 {
                return Err(NetsError::op(format!(
                    "kernel {:?} (dilation {:?}) is larger than the padded input {x:?}",
                    &w[2..],
                    self.dilations
                )));
            }
        }
        Ok(())
    }

    /// Pads `x` explicitly when the padding is asymmetric, returning the input and the
    /// symmetric padding left for burn's conv.
    pub fn prepare(&self, x: Tensor<4>, k: [usize; 2]) -> (Tensor<4>, [usize; 2]) {
        let [_, _, h, w] = x.dims();
        let pad = self.padding([h, w], k);
        if pad[0].0 == pad[0].1 && pad[1].0 == pad[1].1 {
            (x, [pad[0].0, pad[1].0])
        } else {
            (
                x.pad(
                    (pad[1].0, pad[1].1, pad[0].0, pad[0].1),
                    PadMode::Constant(0.0),
                ),
                [0, 0],
            )
        }
    }

    /// burn's options for a symmetric padding.
    pub fn options(&self, padding: [usize; 2], groups: usize) -> ConvOptions<2> {
        ConvOptions::new(self.strides, padding, self.dilations, groups)
    }

    pub fn apply(&self, inputs: &[Option<&Value>]) -> Result<FloatValue> {
        let x = float_input(inputs, 0, "X")?;
        let w = float_input(inputs, 1, "W")?;
        let b = match inputs.get(2).copied().flatten() {
            Some(b) => Some(b.float("B")?),
            None => None,
        };
        let bs = b.map(|b| b.shape());
        self.check(&x.shape(), &w.shape(), bs.as_deref())?;
        let wt: Tensor<4> = w.to_rank();
        let [_, _, kh, kw] = wt.dims();
        let (xt, pad) = self.prepare(x.to_rank(), [kh, kw]);
        let y = conv2d(
            xt,
            wt,
            b.map(|b| b.to_rank::<1>()),
            self.options(pad, self.groups),
        );
        Ok(FloatValue::from_tensor(y))
    }

    /// Forward mode (see [`crate::graph::ops::Op::jvp`]): `conv(x, W) + b` is bilinear in
    /// `(x, W)` and linear in `b`: `ẏ = conv(ẋ, W) + conv(x, Ẇ) + ḃ` (per channel).
    pub fn jvp(
        &self,
        inputs: &[Option<&Value>],
        tangents: &[Option<&FloatValue>],
        out: &FloatValue,
    ) -> Result<Option<FloatValue>> {
        let x = inputs.first().copied().flatten();
        let w = inputs.get(1).copied().flatten();
        let tx = tangent(tangents, 0).map(|t| Value::Float(t.clone()));
        let tw = tangent(tangents, 1).map(|t| Value::Float(t.clone()));
        let first = tx
            .as_ref()
            .map(|t| self.apply(&[Some(t), w, None]))
            .transpose()?;
        let second = tw
            .as_ref()
            .map(|t| self.apply(&[x, Some(t), None]))
            .transpose()?;
        let bias = tangent(tangents, 2).map(|tb| {
            crate::graph::ops::elementwise::expand_to(
                &crate::graph::ops::normalization::per_channel(tb, out.rank),
                &out.shape(),
            )
        });
        Ok(sum_terms([first, second, bias]))
    }
}
