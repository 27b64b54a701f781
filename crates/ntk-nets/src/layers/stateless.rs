//! Parameter-free layers: activations, flatten, pooling.

use super::Features;
use crate::spec::Activation;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;

/// What a parameter-free layer computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StatelessOp {
    /// Elementwise nonlinearity.
    Activation(Activation),
    /// `[N, C, H, W] -> [N, C·H·W]` in C, H, W order; identity on vectors.
    Flatten,
    /// Mean over H and W: `[N, C, H, W] -> [N, C]`.
    GlobalAvgPool,
    /// Window means, no padding.
    AvgPool2d {
        window: [usize; 2],
        stride: [usize; 2],
    },
}

/// A layer without parameters.
#[derive(Module, Debug)]
pub struct Stateless {
    #[module(skip)]
    pub op: StatelessOp,
}

/// Applies an elementwise activation.
pub fn apply_activation<const D: usize>(a: Activation, x: Tensor<D>) -> Tensor<D> {
    match a {
        Activation::Relu => activation::relu(x),
        Activation::Erf => x.erf(),
        Activation::Tanh => x.tanh(),
        Activation::Gelu => activation::gelu(x),
        Activation::Identity => x,
    }
}

impl Stateless {
    /// Applies the layer. The caller guarantees the input kind fits (checked by the spec).
    pub fn forward(&self, x: Features) -> Features {
        match (self.op, x) {
            (StatelessOp::Activation(a), Features::Flat(t)) => {
                Features::Flat(apply_activation(a, t))
            }
            (StatelessOp::Activation(a), Features::Image(t)) => {
                Features::Image(apply_activation(a, t))
            }
            (StatelessOp::Flatten, x) => Features::Flat(x.into_rows()),
            (StatelessOp::GlobalAvgPool, Features::Image(t)) => {
                let [n, c, _, _] = t.dims();
                Features::Flat(t.mean_dims(&[2, 3]).reshape([n, c]))
            }
            (StatelessOp::AvgPool2d { window, stride }, Features::Image(t)) => Features::Image(
                avg_pool2d(t, AvgPoolOptions::new(window).with_stride(stride)),
            ),
            (op, x) => panic!("layer {op:?} cannot take features of shape {:?}", x.dims()),
        }
    }
}
