//! Cotangents `g = ∂f_o/∂y` of every layer output, for all outputs at once.
//!
//! Instead of O separate backward passes we carry a batch of `N·K` cotangents through the
//! network, row `n·K + k` being sample `n` under output seed `k` (`K = O` one-hot seeds for
//! the full/trace/diagonal kernels, `K = 1` all-ones seed for sum-of-logits). The
//! vector-Jacobian product of each layer is written out by hand from its forward rule;
//! values of the forward pass (`N` rows) are broadcast over the `K` seeds. The independent
//! check of these rules is the Jacobian-contraction method, which uses burn's autodiff.

use burn::tensor::module::{avg_pool2d_backward, conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, PadMode};
use burn::tensor::{Tensor, TensorData};
use ntk_nets::layers::{Conv2d, Dense, Features, StatelessOp};
use ntk_nets::{Activation, Network};

/// The seeds `[N·K, O]`: one-hot `e_k` (`K = O`) or, with `sum_of_logits`, all ones (`K = 1`).
pub fn output_seeds(net: &Network, n: usize, sum_of_logits: bool) -> Tensor<2> {
    let o = net.n_outputs();
    let device = net.device();
    let (k, data): (usize, Vec<f64>) = if sum_of_logits {
        (1, vec![1.0; n * o])
    } else {
        let mut d = vec![0.0; n * o * o];
        for s in 0..n {
            for j in 0..o {
                d[(s * o + j) * o + j] = 1.0;
            }
        }
        (o, d)
    };
    Tensor::from_data(TensorData::new(data, [n * k, o]), (&device, net.dtype()))
}

/// `φ'(z)` of an activation, same shape as `z`.
pub fn activation_derivative<const D: usize>(a: Activation, z: Tensor<D>) -> Tensor<D> {
    use std::f64::consts::{PI, SQRT_2};
    match a {
        // relu'(0) = 0, as in JAX and PyTorch.
        Activation::Relu => z.sign().clamp_min(0.0),
        Activation::Erf => z.square().neg().exp().mul_scalar(2.0 / PI.sqrt()),
        Activation::Tanh => z.tanh().square().neg().add_scalar(1.0),
        Activation::Gelu => {
            let cdf = z
                .clone()
                .div_scalar(SQRT_2)
                .erf()
                .add_scalar(1.0)
                .mul_scalar(0.5);
            let pdf = z
                .clone()
                .square()
                .mul_scalar(-0.5)
                .exp()
                .mul_scalar(1.0 / (2.0 * PI).sqrt());
            cdf + z * pdf
        }
        Activation::Identity => z.ones_like(),
    }
}

/// Multiplies `[N·K, ...]` cotangents by `[N, ...]` factors, broadcast over K.
fn times_per_sample(cot: Features, factor: Features, k: usize) -> Features {
    match (cot, factor) {
        (Features::Flat(g), Features::Flat(d)) => {
            let [nk, f] = g.dims();
            let n = nk / k;
            Features::Flat((g.reshape([n, k, f]) * d.unsqueeze_dim::<3>(1)).reshape([nk, f]))
        }
        (Features::Image(g), Features::Image(d)) if super::is_cpu(&g.device()) => {
            Features::Image(super::host_vjp::times_per_sample(g, d, k))
        }
        (Features::Image(g), Features::Image(d)) => {
            let [nk, c, h, w] = g.dims();
            let n = nk / k;
            Features::Image(
                (g.reshape([n, k, c, h, w]) * d.unsqueeze_dim::<5>(1)).reshape([nk, c, h, w]),
            )
        }
        (g, d) => panic!(
            "cotangent {:?} and factor {:?} do not match",
            g.dims(),
            d.dims()
        ),
    }
}

/// VJP of a dense layer: `∂f/∂x = weight_scale · g W`, `[N·K, out] -> [N·K, in]`.
pub fn dense_input_vjp(layer: &Dense, g: Tensor<2>) -> Tensor<2> {
    g.matmul(layer.weight.val()).mul_scalar(layer.weight_scale)
}

/// VJP of a conv2d layer with respect to its input: a transposed convolution on the padded
/// input, cropped back to the unpadded size `[h, w]`.
///
/// # Shapes
/// `g: [N·K, out_c, H', W']` → `[N·K, in_c, h, w]`
pub fn conv_input_vjp(layer: &Conv2d, g: Tensor<4>, h: usize, w: usize) -> Tensor<4> {
    let [_, _, kh, kw] = layer.weight.val().dims();
    if super::is_cpu(&g.device()) && super::host_vjp::supports(layer, [kh, kw]) {
        return super::host_vjp::conv_input_vjp(layer, g, h, w);
    }
    let [_, _, ho, wo] = g.dims();
    let [(top, bottom), (left, right)] = layer.padding;
    let [sh, sw] = layer.stride;
    if [sh, sw] == [1, 1] && top < kh && bottom < kh && left < kw && right < kw {
        // Stride 1: the VJP is a correlation of the cotangent, zero-padded by
        // (k − 1 − pad) on each side, with the kernel flipped in space and transposed in
        // channels — burn's forward conv2d, faster here than its conv_transpose2d.
        let wt = layer.weight.val().flip([2, 3]).swap_dims(0, 1);
        let pads = [
            (kh - 1 - top, kh - 1 - bottom),
            (kw - 1 - left, kw - 1 - right),
        ];
        let gx = if pads[0].0 == pads[0].1 && pads[1].0 == pads[1].1 {
            conv2d(
                g,
                wt,
                None,
                ConvOptions::new([1, 1], [pads[0].0, pads[1].0], [1, 1], 1),
            )
        } else {
            conv2d(
                g.pad(pads, PadMode::Constant(0.0)),
                wt,
                None,
                ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
            )
        };
        return gx.mul_scalar(layer.weight_scale);
    }
    let hp = h + top + bottom;
    let wp = w + left + right;
    let pad_out = [hp - ((ho - 1) * sh + kh), wp - ((wo - 1) * sw + kw)];
    let options = ConvTransposeOptions::new(layer.stride, [0, 0], pad_out, [1, 1], 1);
    let gx = conv_transpose2d(g, layer.weight.val(), None, options).mul_scalar(layer.weight_scale);
    if top == 0 && bottom == 0 && left == 0 && right == 0 {
        gx
    } else {
        gx.narrow(2, top, h).narrow(3, left, w)
    }
}

/// VJP of a parameter-free layer. `input` is the layer's forward input (`N` rows).
pub fn stateless_vjp(op: StatelessOp, input: &Features, g: Features, k: usize) -> Features {
    match op {
        StatelessOp::Activation(Activation::Identity) => g,
        StatelessOp::Activation(a) => {
            let d = match input.clone() {
                Features::Flat(z) => Features::Flat(activation_derivative(a, z)),
                Features::Image(z) => Features::Image(activation_derivative(a, z)),
            };
            times_per_sample(g, d, k)
        }
        StatelessOp::Flatten => match input {
            Features::Flat(_) => g,
            Features::Image(z) => {
                let [_, c, h, w] = z.dims();
                let g = g.flat().expect("flatten cotangent is flat");
                let nk = g.dims()[0];
                Features::Image(g.reshape([nk, c, h, w]))
            }
        },
        StatelessOp::GlobalAvgPool => {
            let [_, c, h, w] = input.dims()[..] else {
                panic!("global_avg_pool input must be an image")
            };
            let g = g.flat().expect("pool cotangent is flat");
            let nk = g.dims()[0];
            if super::is_cpu(&g.device()) {
                return Features::Image(super::host_vjp::spread_over_pixels(g, h, w));
            }
            // Divide before broadcasting: the expand stays a view.
            Features::Image(
                g.div_scalar((h * w) as f64)
                    .reshape([nk, c, 1, 1])
                    .expand([nk, c, h, w]),
            )
        }
        StatelessOp::AvgPool2d { window, stride } => {
            let g = g.image().expect("pool cotangent is an image");
            let [_, c, h, w] = input.dims()[..] else {
                panic!("avg_pool2d input must be an image")
            };
            let nk = g.dims()[0];
            // The backward only reads the input's shape.
            let shape_only = Tensor::<4>::zeros([nk, c, h, w], (&g.device(), g.dtype()));
            Features::Image(avg_pool2d_backward(
                shape_only,
                g,
                window,
                stride,
                [0, 0],
                true,
                false,
            ))
        }
    }
}
