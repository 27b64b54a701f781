//! The structured method for dense networks on CPU backends, end to end on host buffers.
//!
//! For a network of dense layers and elementwise activations (an MLP ending in a dense
//! readout), full kernel, on a CPU device, everything the structured method does —
//! the forward pass that keeps each layer's input, the cotangents `g = ∂f_k/∂y` of every
//! dense output for all `K` output seeds, and the per-layer Grams — runs on host
//! buffers with the `gemm` crate, without a burn tensor op per step. The rules and the
//! order of the sums are those of [`super::kernel`] with the host contraction of
//! [`super::host_gram`]:
//!
//! - readout `L`: its cotangents are the one-hot seeds, so it adds
//!   `c_L[n1, n2] · δ_kk'` with `c_l = s_l² ⟨x1_l, x2_l⟩ + b_l²`;
//! - the last hidden dense layer: its cotangents factor as `g[n, k, :] = d[n, :] ⊙ v[k, :]`
//!   (`v = s_L W_L`, `d` the product of the activations' derivatives in between), so it
//!   adds the factored Gram [`FullGram::add_factored_gram`];
//! - every other dense layer `l` adds `c_l[n1, n2] · ⟨g1_l[n1, k], g2_l[n2, k']⟩`, after
//!   the VJPs `g ← s_{l+1} g W_{l+1}` and `g ← g ⊙ φ'(z)` carry the cotangents down.
//!
//! What it saves over the tensor path is overhead, not FLOPs: per-op dispatch and
//! allocation, host copies of every cotangent, and small-GEMM inefficiency in the forward
//! pass (measured in `ntk bench`). The cross-method and oracle tests check it with the
//! rest of the structured method.

use super::host_gram::{FullGram, Operand, PairCoeff, Real, gemm_into, host_vec, transpose};
use crate::kernel::KernelKind;
use burn::tensor::DType;
use ntk_nets::layers::StatelessOp;
use ntk_nets::{Activation, HostArray, Layer, Network};
use rayon::prelude::*;

use super::StructuredOptions;

/// Whether [`kernel`] computes this network's kernel: a full kernel, on a CPU backend
/// without the tensor contraction, of a network with flat input made only of dense layers
/// and activations, ending in a dense layer.
pub fn applies(net: &Network, kind: KernelKind, options: StructuredOptions) -> bool {
    kind == KernelKind::Full
        && !options.tensor_contraction
        && super::is_cpu(&net.device())
        && matches!(net.dtype(), DType::F32 | DType::F64)
        && net.spec.input_shape.len() == 1
        && matches!(net.layers.last(), Some(Layer::Dense(_)))
        && net.layers.iter().all(|l| match l {
            Layer::Dense(_) => true,
            Layer::Stateless(s) => matches!(s.op, StatelessOp::Activation(_)),
            Layer::Conv2d(_) => false,
        })
}

/// The full NTK between two host batches (`x2 = None`: `x2 = x1`, symmetric), summed in
/// a [`FullGram`] in the network's dtype. The caller checks [`applies`] and the inputs
/// ([`Network::check_input`]).
///
/// # Shapes
/// - `x1: [N1, d]`, `x2: [N2, d]` → `[N1, K, N2, K]` (see [`FullGram::into_host`])
pub(crate) fn kernel(net: &Network, x1: &HostArray, x2: Option<&HostArray>) -> FullGram {
    let (n1, n2) = (x1.shape[0], x2.map_or(x1.shape[0], |x| x.shape[0]));
    if n1 == 0 || n2 == 0 {
        return FullGram::zeros(n1, n2, net.n_outputs(), x2.is_none(), net.dtype());
    }
    match net.dtype() {
        DType::F32 => kernel_in::<f32>(net, x1, x2),
        _ => kernel_in::<f64>(net, x1, x2),
    }
}

/// One layer's values on the host.
enum HostLayer<T> {
    /// `y = s·x Wᵀ + b_s·b` (`s` the weight scale); `w: [out, in]` row-major, `b` already
    /// times `b_s`.
    Dense {
        w: Vec<T>,
        b: Option<Vec<T>>,
        bias_scale: f64,
        weight_scale: f64,
        out: usize,
        inp: usize,
    },
    Activation(Activation),
}

fn host_layers<T: Real>(net: &Network) -> Vec<HostLayer<T>> {
    net.layers
        .iter()
        .map(|l| match l {
            Layer::Dense(d) => {
                let [out, inp] = d.weight.val().dims();
                HostLayer::Dense {
                    w: host_vec::<T, 2>(d.weight.val()),
                    b: d.bias
                        .as_ref()
                        .map(|b| host_vec::<T, 1>(b.val().mul_scalar(d.bias_scale))),
                    bias_scale: d.bias_scale,
                    weight_scale: d.weight_scale,
                    out,
                    inp,
                }
            }
            Layer::Stateless(s) => match s.op {
                StatelessOp::Activation(a) => HostLayer::Activation(a),
                op => unreachable!("checked by applies: {op:?}"),
            },
            Layer::Conv2d(_) => unreachable!("checked by applies"),
        })
        .collect()
}

/// `φ(z)` and `φ'(z)` of an activation (`relu'(0) = 0`, as in JAX and PyTorch).
fn activation<T: Real>(a: Activation, z: T) -> (T, T) {
    use std::f64::consts::{FRAC_2_SQRT_PI, PI, SQRT_2};
    if a == Activation::Relu {
        return if z > T::ZERO {
            (z, T::ONE)
        } else {
            (T::ZERO, T::ZERO)
        };
    }
    let x = z.to_f64();
    let (y, dy) = match a {
        Activation::Relu => unreachable!("handled above"),
        Activation::Erf => (libm::erf(x), FRAC_2_SQRT_PI * (-x * x).exp()),
        Activation::Tanh => {
            let t = x.tanh();
            (t, 1.0 - t * t)
        }
        Activation::Gelu => {
            let cdf = 0.5 * (1.0 + libm::erf(x / SQRT_2));
            let pdf = (-0.5 * x * x).exp() / (2.0 * PI).sqrt();
            (x * cdf, cdf + x * pdf)
        }
        Activation::Identity => (x, 1.0),
    };
    (T::from_f64(y), T::from_f64(dy))
}

/// A batch's forward pass, feature-major (`[width, N]` row-major: feature `j` of sample
/// `n` at `j·N + n`, the layout every GEMM below packs fastest): the input of every
/// layer, and for every activation layer the derivative `φ'(z)` at its input.
struct Trace<T> {
    n: usize,
    inputs: Vec<Vec<T>>,
    derivatives: Vec<Option<Vec<T>>>,
}

fn forward<T: Real>(layers: &[HostLayer<T>], x: &HostArray) -> Trace<T> {
    let n = x.shape[0];
    let d = x.data.len() / n.max(1);
    let rows: Vec<T> = x.data.iter().map(|&v| T::from_f64(v)).collect();
    let mut h = transpose(&rows, n, d);
    let mut inputs = Vec::with_capacity(layers.len());
    let mut derivatives = Vec::with_capacity(layers.len());
    for layer in layers {
        match layer {
            HostLayer::Dense {
                w,
                b,
                weight_scale,
                out,
                inp,
                ..
            } => {
                let s = T::from_f64(*weight_scale);
                // yᵀ[out, N] = s · W[out, in] · hᵀ[in, N] (+ b), in bands of output features
                // on the threads (the gemm crate keeps GEMMs this small on one).
                let mut y = vec![T::ZERO; out * n];
                let band = out.div_ceil(rayon::current_num_threads()).max(1);
                y.par_chunks_mut(band * n)
                    .zip(w.par_chunks(band * inp))
                    .enumerate()
                    .for_each(|(c, (y, w))| {
                        let m = w.len() / inp;
                        gemm_into(
                            y,
                            (m, n, *inp),
                            Operand::rows(w, *inp),
                            Operand::rows(&h, n),
                            s,
                            false,
                        );
                        if let Some(b) = b {
                            for (row, &bv) in y.chunks_mut(n).zip(&b[c * band..]) {
                                row.iter_mut().for_each(|v| *v += bv);
                            }
                        }
                    });
                inputs.push(std::mem::replace(&mut h, y));
                derivatives.push(None);
            }
            HostLayer::Activation(a) => {
                let mut d = vec![T::ZERO; h.len()];
                let mut y = vec![T::ZERO; h.len()];
                y.par_chunks_mut(4096)
                    .zip(d.par_chunks_mut(4096))
                    .zip(h.par_chunks(4096))
                    .for_each(|((y, d), z)| {
                        for ((y, d), &z) in y.iter_mut().zip(d.iter_mut()).zip(z) {
                            (*y, *d) = activation(*a, z);
                        }
                    });
                inputs.push(std::mem::replace(&mut h, y));
                derivatives.push(Some(d));
            }
        }
    }
    Trace {
        n,
        inputs,
        derivatives,
    }
}

/// `c[n1, n2] = s² ⟨x1_n1, x2_n2⟩ + b_s²` (the bias term when the layer has a bias), from
/// feature-major inputs `x1t: [in, N1]`, `x2t: [in, N2]`.
fn pair_coefficient<T: Real>(
    layer: &HostLayer<T>,
    x1t: &[T],
    x2t: Option<&[T]>,
    (n1, n2): (usize, usize),
) -> PairCoeff {
    let HostLayer::Dense {
        b,
        bias_scale,
        weight_scale,
        inp,
        ..
    } = layer
    else {
        unreachable!("coefficients of dense layers")
    };
    let mut dots = vec![T::ZERO; n1 * n2];
    gemm_into(
        &mut dots,
        (n1, n2, *inp),
        Operand {
            values: x1t,
            col_stride: n1,
            row_stride: 1,
        },
        Operand::rows(x2t.unwrap_or(x1t), n2),
        T::ONE,
        n1 * n2 * inp >= 1 << 20,
    );
    let s2 = weight_scale * weight_scale;
    let b2 = if b.is_some() {
        bias_scale * bias_scale
    } else {
        0.0
    };
    PairCoeff::Pairs(dots.into_iter().map(|v| s2 * v.to_f64() + b2).collect())
}

/// `gᵀ[j, n·K + k] *= dᵀ[j, n]`: an elementwise VJP on feature-major cotangents
/// `[width, N·K]`, broadcast over the seeds.
fn times_per_sample<T: Real>(gt: &mut [T], dt: &[T], k: usize, n: usize) {
    gt.par_chunks_mut(n * k)
        .zip(dt.par_chunks(n))
        .for_each(|(g_j, d_j)| {
            for (g_n, &dv) in g_j.chunks_mut(k).zip(d_j) {
                g_n.iter_mut().for_each(|v| *v = *v * dv);
            }
        });
}

fn kernel_in<T: Real>(net: &Network, x1: &HostArray, x2: Option<&HostArray>) -> FullGram {
    let profile = crate::profiling();
    let mut clock = std::time::Instant::now();
    let mut lap = |what: &str| {
        if profile {
            eprintln!(
                "[profile] host mlp {what}: {:.2} ms",
                clock.elapsed().as_secs_f64() * 1e3
            );
            clock = std::time::Instant::now();
        }
    };
    let layers = host_layers::<T>(net);
    lap("weights to host");
    let k = net.n_outputs();
    let t1 = forward(&layers, x1);
    let t2 = x2.map(|x| forward(&layers, x));
    let (n1, n2) = (t1.n, t2.as_ref().map_or(t1.n, |t| t.n));
    let symmetric = t2.is_none();
    let mut sum = FullGram::zeros(n1, n2, k, symmetric, net.dtype());
    lap("forward");

    let last = layers.len() - 1;
    let inputs2 = |l: usize| t2.as_ref().map(|t| t.inputs[l].as_slice());
    // Readout: Gram of the one-hot seeds is the identity.
    sum.add_identity(&pair_coefficient(
        &layers[last],
        &t1.inputs[last],
        inputs2(last),
        (n1, n2),
    ));
    lap("readout");
    // The last hidden dense layer, and the product of the derivatives above it.
    let Some(hidden) = (0..last)
        .rev()
        .find(|&l| matches!(layers[l], HostLayer::Dense { .. }))
    else {
        return sum;
    };
    let HostLayer::Dense {
        w: w_out,
        weight_scale: s_out,
        inp: width,
        ..
    } = &layers[last]
    else {
        unreachable!("the readout is dense")
    };
    let width = *width;
    // dᵀ[j, n] = Π_l φ'_l(z_l)[j, n] over the activations between `hidden` and the readout.
    let product_of_derivatives = |t: &Trace<T>| {
        let mut d = vec![T::ONE; width * t.n];
        for l in hidden + 1..last {
            let dl = t.derivatives[l].as_ref().expect("an activation");
            for (v, &x) in d.iter_mut().zip(dl) {
                *v = *v * x;
            }
        }
        d
    };
    let d1t = product_of_derivatives(&t1);
    let d2t = t2.as_ref().map(product_of_derivatives);
    let s_out = T::from_f64(*s_out);
    let v: Vec<T> = w_out.iter().map(|&x| s_out * x).collect();
    sum.add_factored_gram_host(
        &transpose(&d1t, width, n1),
        d2t.as_deref(),
        &d1t,
        &v,
        width,
        &pair_coefficient(
            &layers[hidden],
            &t1.inputs[hidden],
            inputs2(hidden),
            (n1, n2),
        ),
    );
    lap("last hidden layer (factored)");
    let Some(lowest) = (0..hidden).find(|&l| matches!(layers[l], HostLayer::Dense { .. })) else {
        return sum;
    };
    // Cotangents at the last hidden layer's output, feature-major:
    // gᵀ[j, n·K + k] = dᵀ[j, n] v[k, j].
    let expand = |dt: &[T], n: usize| -> Vec<T> {
        let mut gt = vec![T::ZERO; width * n * k];
        gt.par_chunks_mut(n * k)
            .zip(dt.par_chunks(n))
            .enumerate()
            .for_each(|(j, (g_j, d_j))| {
                for (g_n, &dv) in g_j.chunks_mut(k).zip(d_j) {
                    for (o, v_k) in g_n.iter_mut().zip(v.chunks(width)) {
                        *o = dv * v_k[j];
                    }
                }
            });
        gt
    };
    let mut g1 = expand(&d1t, n1);
    let mut g2 = d2t.as_deref().map(|d| expand(d, n2));
    for l in (lowest..=hidden).rev() {
        match &layers[l] {
            HostLayer::Dense {
                w,
                weight_scale,
                out,
                inp,
                ..
            } => {
                let s = T::from_f64(*weight_scale);
                if l != hidden {
                    let coeff = pair_coefficient(&layers[l], &t1.inputs[l], inputs2(l), (n1, n2));
                    sum.add_gram_feature_major(&g1, g2.as_deref(), *out, &coeff);
                    lap("dense layer");
                }
                if l == lowest {
                    break;
                }
                // gᵀ ← s · Wᵀ gᵀ: [out, N·K] → [in, N·K].
                let back = |gt: &[T], n: usize| {
                    let mut gx = vec![T::ZERO; inp * n * k];
                    gemm_into(
                        &mut gx,
                        (*inp, n * k, *out),
                        Operand {
                            values: w,
                            col_stride: *inp,
                            row_stride: 1,
                        },
                        Operand::rows(gt, n * k),
                        s,
                        true,
                    );
                    gx
                };
                g1 = back(&g1, n1);
                g2 = g2.map(|g| back(&g, n2));
                lap("dense vjp");
            }
            HostLayer::Activation(_) => {
                let d1 = t1.derivatives[l].as_ref().expect("an activation");
                times_per_sample(&mut g1, d1, k, n1);
                if let (Some(g2), Some(t2)) = (g2.as_mut(), t2.as_ref()) {
                    let d2 = t2.derivatives[l].as_ref().expect("an activation");
                    times_per_sample(g2, d2, k, n2);
                }
                lap("activation vjp");
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntk_nets::{BackendKind, NetworkConfig, NetworkSpec, Precision};

    fn batch(n: usize, d: usize, seed: u64) -> HostArray {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let data = (0..n * d)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect();
        HostArray::new(vec![n, d], data)
    }

    /// The burn tensor path of the structured method (the GPU path), `[N1, N2, K, K]`.
    fn tensor_path(net: &Network, x1: &HostArray, x2: Option<&HostArray>) -> HostArray {
        let device = net.device();
        let acc = super::super::kernel(
            net,
            net.input(x1, &device).unwrap(),
            x2.map(|x| net.input(x, &device).unwrap()),
            KernelKind::Full,
            StructuredOptions {
                tensor_contraction: true,
                ..Default::default()
            },
        );
        super::super::finish(acc, KernelKind::Full, net.n_outputs())
    }

    fn max_rel(a: &HostArray, b: &HostArray) -> f64 {
        assert_eq!(a.shape, b.shape);
        let scale = b.data.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
        a.data
            .iter()
            .zip(&b.data)
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    /// Layer patterns the property tests do not draw: dense after dense, an activation
    /// on the input, the readout alone, three hidden layers with every activation.
    #[test]
    fn host_mlp_matches_the_tensor_path_on_unusual_stacks() {
        use Activation::*;
        let specs = [
            NetworkSpec::builder(&[5])
                .dense(4, 1.3, Some(0.2))
                .dense(3, 0.9, None)
                .dense(2, 1.0, Some(0.1)),
            NetworkSpec::builder(&[5])
                .activation(Tanh)
                .dense(6, 1.3, Some(0.2))
                .relu()
                .dense(3, 1.0, None),
            NetworkSpec::builder(&[5]).dense(3, 1.0, Some(0.4)),
            NetworkSpec::builder(&[5])
                .dense(7, 1.4, Some(0.1))
                .activation(Erf)
                .dense(6, 1.2, None)
                .activation(Gelu)
                .dense(5, 1.1, Some(0.3))
                .relu()
                .activation(Identity)
                .dense(4, 1.0, Some(0.05)),
            NetworkSpec::builder(&[5])
                .standard()
                .dense(6, 1.0, Some(0.5))
                .relu()
                .dense(6, 1.0, Some(0.5))
                .relu()
                .dense(2, 1.0, Some(0.5)),
        ];
        for (i, spec) in specs.into_iter().enumerate() {
            let spec = spec.build().unwrap();
            for precision in [Precision::F64, Precision::F32] {
                let tol = if precision == Precision::F64 {
                    1e-12
                } else {
                    1e-5
                };
                let device = BackendKind::Flex.device(precision).unwrap();
                let net = NetworkConfig::new(spec.clone())
                    .with_seed(i as u64)
                    .with_precision(precision)
                    .init(&device)
                    .unwrap();
                assert!(applies(
                    &net,
                    KernelKind::Full,
                    StructuredOptions::default()
                ));
                let (x1, x2) = (batch(9, 5, 2 * i as u64), batch(7, 5, 2 * i as u64 + 1));
                let got = kernel(&net, &x1, Some(&x2)).into_host();
                let e = max_rel(&got, &tensor_path(&net, &x1, Some(&x2)));
                assert!(e < tol, "stack {i} {precision:?}, x2 given: {e:.2e}");
                let got = kernel(&net, &x1, None).into_host();
                let e = max_rel(&got, &tensor_path(&net, &x1, None));
                assert!(e < tol, "stack {i} {precision:?}, symmetric: {e:.2e}");
            }
        }
    }

    /// A dense stack after a flatten is not for this module: the layer-by-layer path with
    /// its host contraction (and its factored rule for the last hidden layer) computes it.
    #[test]
    fn flattened_images_take_the_layer_by_layer_host_path() {
        let spec = NetworkSpec::builder(&[1, 2, 3])
            .flatten()
            .dense(5, 1.3, Some(0.2))
            .relu()
            .dense(4, 1.1, Some(0.1))
            .activation(Activation::Tanh)
            .dense(3, 1.0, None)
            .build()
            .unwrap();
        let device = BackendKind::Flex.device(Precision::F64).unwrap();
        let net = NetworkConfig::new(spec).with_seed(3).init(&device).unwrap();
        assert!(!applies(
            &net,
            KernelKind::Full,
            StructuredOptions::default()
        ));
        let image = |n, seed| {
            let b = batch(n, 6, seed);
            HostArray::new(vec![n, 1, 2, 3], b.data)
        };
        let (x1, x2) = (image(6, 1), image(5, 2));
        for x2 in [Some(&x2), None] {
            let host = super::super::kernel(
                &net,
                net.input(&x1, &device).unwrap(),
                x2.map(|x| net.input(x, &device).unwrap()),
                KernelKind::Full,
                StructuredOptions::default(),
            );
            assert!(matches!(host, super::super::Accumulator::FullHost(_)));
            let got = super::super::finish(host, KernelKind::Full, 3);
            let e = max_rel(&got, &tensor_path(&net, &x1, x2));
            assert!(e < 1e-12, "x2 given: {}: {e:.2e}", x2.is_some());
        }
    }

    #[test]
    fn applies_only_to_full_kernels_of_dense_stacks_on_the_cpu() {
        let device = BackendKind::Flex.device(Precision::F32).unwrap();
        let mlp = NetworkSpec::builder(&[4])
            .dense(3, 1.0, None)
            .relu()
            .dense(2, 1.0, None);
        let net = NetworkConfig::new(mlp.build().unwrap())
            .init(&device)
            .unwrap();
        let o = StructuredOptions::default();
        assert!(applies(&net, KernelKind::Full, o));
        assert!(!applies(&net, KernelKind::Trace, o));
        let tensor = StructuredOptions {
            tensor_contraction: true,
            ..o
        };
        assert!(!applies(&net, KernelKind::Full, tensor));
        let cnn = NetworkSpec::builder(&[1, 4, 4])
            .flatten()
            .dense(2, 1.0, None)
            .build()
            .unwrap();
        let net = NetworkConfig::new(cnn).init(&device).unwrap();
        assert!(!applies(&net, KernelKind::Full, o));
    }
}
