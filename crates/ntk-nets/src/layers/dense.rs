//! Fully connected layer.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

/// `y = weight_scale · x Wᵀ + bias_scale · b`.
///
/// Under the NTK parameterization `weight_scale = w_std / √fan_in` and `bias_scale = b_std`,
/// with `W`, `b` the raw (standard normal at init) variables; under the standard
/// parameterization both scales are 1 (PyTorch's `nn.Linear`).
///
/// # Shapes
/// - `weight`: `[out, in]` (PyTorch layout), `bias`: `[out]`
/// - input `[N, in]` → output `[N, out]`
#[derive(Module, Debug)]
pub struct Dense {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub weight_scale: f64,
    #[module(skip)]
    pub bias_scale: f64,
}

impl Dense {
    /// Applies the layer to `x: [N, in]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let y = x.matmul(self.weight.val().transpose());
        let y = if self.weight_scale != 1.0 {
            y.mul_scalar(self.weight_scale)
        } else {
            y
        };
        match &self.bias {
            Some(b) => {
                let b = b.val();
                let b = if self.bias_scale != 1.0 {
                    b.mul_scalar(self.bias_scale)
                } else {
                    b
                };
                y + b.unsqueeze::<2>()
            }
            None => y,
        }
    }
}
