//! 2-D convolution (cross-correlation, as PyTorch and XLA).

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

/// `y = weight_scale · (W ⋆ x) + bias_scale · b` with zero padding `padding` and `stride`.
///
/// Scales as in [`crate::layers::Dense`], with `fan_in = in_channels · kh · kw`.
///
/// # Shapes
/// - `weight`: `[out_c, in_c, kh, kw]` (PyTorch layout), `bias`: `[out_c]`
/// - input `[N, in_c, H, W]` → output `[N, out_c, H', W']`
#[derive(Module, Debug)]
pub struct Conv2d {
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub stride: [usize; 2],
    /// Zeros before/after: `[(top, bottom), (left, right)]`.
    #[module(skip)]
    pub padding: [(usize, usize); 2],
    #[module(skip)]
    pub weight_scale: f64,
    #[module(skip)]
    pub bias_scale: f64,
}

impl Conv2d {
    /// The burn convolution options of this layer.
    pub fn options(&self) -> ConvOptions<2> {
        ConvOptions::new_with_padding(self.stride, self.padding, [1, 1], 1)
    }

    /// Applies the layer to `x: [N, in_c, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = conv2d(x, self.weight.val(), None, self.options());
        let y = if self.weight_scale != 1.0 {
            y.mul_scalar(self.weight_scale)
        } else {
            y
        };
        match &self.bias {
            Some(b) => {
                let b = b.val();
                let c = b.dims()[0];
                let b = if self.bias_scale != 1.0 {
                    b.mul_scalar(self.bias_scale)
                } else {
                    b
                };
                y + b.reshape([1, c, 1, 1])
            }
            None => y,
        }
    }
}
