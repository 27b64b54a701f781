//! Cost model: FLOPs and memory of each method, used by `auto` and by tiling.
//!
//! Notation: `N1`, `N2` samples, `K` seeds (O, or 1 for sum-of-logits), `P` parameters,
//! `F` = FLOPs of one forward pass of one sample (`Σ_l 2·out_l·fan_in_l·pixels_l`), `A` =
//! activations per sample (`Σ_l numel of layer outputs`).
//!
//! - Jacobian contraction: `(N1 + N2)·K` forward+backward passes of one sample (`≈ 3F`
//!   each), then a Gram of `[N1·K, P] × [P, N2·K]`:
//!   `3F(N1+N2)K + 2·N1·N2·K²·P` FLOPs, `(N1+N2)·K·P` floats.
//! - Structured derivatives: forward `(N1+N2)F`, a batched backward `≈ 2F(N1+N2)K`, then per
//!   dense layer `2·N1·N2·in + 2·N1K·N2K·out` and per conv layer the cheaper form of
//!   [`crate::structured::conv`]; floats `≈ (N1+N2)(A + 2K·A_max) + N1K·N2K`.
//! - NTK-vector products: `N2·K` products, each `≈ 3F·N2 + 3F·N1`: `3F·N2·K(N1+N2)` FLOPs.
//!
//! For every network of this crate's layer set the structured method has the smallest
//! count, which `auto` then picks (the bench `ntk bench` measures all three to check it).

use crate::kernel::KernelKind;
use crate::structured::conv::{self, ConvCostInputs};
use ntk_nets::spec::LayerSpec;
use ntk_nets::{FeatureShape, Network};

/// How the kernel is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// Per-sample Jacobians by autodiff, contracted (the reference; any burn module).
    Jacobian,
    /// Structured derivatives: never builds the Jacobian.
    Structured,
    /// NTK-vector products (`J1 (J2ᵀ v)` per column).
    NtkVp,
    /// Pick by [`choose`].
    #[default]
    Auto,
}

impl Method {
    /// Names accepted by [`Method::parse`].
    pub const NAMES: [&'static str; 4] = ["jacobian", "structured", "ntk-vp", "auto"];

    /// Parses a method name.
    pub fn parse(name: &str) -> crate::Result<Self> {
        Ok(match name {
            "jacobian" | "jacobian-contraction" => Method::Jacobian,
            "structured" | "structured-derivatives" => Method::Structured,
            "ntk-vp" | "ntk-vector-products" => Method::NtkVp,
            "auto" => Method::Auto,
            other => {
                return Err(crate::error::option_err(
                    "method",
                    format!(
                        "unknown method {other:?} (known: {})",
                        Self::NAMES.join(", ")
                    ),
                ));
            }
        })
    }

    /// The name of this method.
    pub fn name(self) -> &'static str {
        match self {
            Method::Jacobian => "jacobian",
            Method::Structured => "structured",
            Method::NtkVp => "ntk-vp",
            Method::Auto => "auto",
        }
    }
}

/// Per-sample sizes of a network used by the cost formulas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetworkSizes {
    /// Forward FLOPs of one sample.
    pub forward_flops: f64,
    /// Parameters.
    pub params: f64,
    /// Sum of all layer outputs' sizes.
    pub activations: f64,
    /// Largest layer output.
    pub max_activation: f64,
    pub outputs: usize,
}

/// Sizes of `net` for the cost model.
pub fn sizes(net: &Network) -> NetworkSizes {
    let mut s = NetworkSizes {
        forward_flops: 0.0,
        params: 0.0,
        activations: 0.0,
        max_activation: 0.0,
        outputs: net.n_outputs(),
    };
    for (g, l) in net.geometry.iter().zip(&net.spec.layers) {
        let out = g.output.numel() as f64;
        s.activations += out;
        s.max_activation = s.max_activation.max(out).max(g.input.numel() as f64);
        s.params += g
            .params
            .iter()
            .map(|(_, sh)| sh.iter().product::<usize>() as f64)
            .sum::<f64>();
        s.forward_flops += match l {
            LayerSpec::Dense(_) | LayerSpec::Conv2d(_) => 2.0 * out * g.fan_in as f64,
            _ => out,
        };
    }
    s
}

fn seeds(kind: KernelKind, o: usize) -> usize {
    if kind == KernelKind::SumOfLogits {
        1
    } else {
        o
    }
}

/// FLOPs of the structured method for an `n1 × n2` tile.
pub fn structured_flops(net: &Network, n1: usize, n2: usize, kind: KernelKind) -> f64 {
    let s = sizes(net);
    let k = seeds(kind, s.outputs);
    let pk = conv::seed_pairs(kind, k) as f64;
    let (f1, f2) = (n1 as f64, n2 as f64);
    let mut flops = 3.0 * s.forward_flops * (f1 + f2) * k as f64;
    for g in &net.geometry {
        match g.input {
            FeatureShape::Flat(din) if !g.params.is_empty() => {
                let dout = g.output.numel() as f64;
                flops += 2.0 * f1 * f2 * din as f64 + 2.0 * f1 * f2 * pk * dout;
            }
            FeatureShape::Image { .. } if !g.params.is_empty() => {
                let FeatureShape::Image { c, h, w } = g.output else {
                    continue;
                };
                let c = ConvCostInputs {
                    n1,
                    n2,
                    k,
                    out_channels: c,
                    pixels: h * w,
                    patch: g.fan_in,
                };
                let pkk = conv::seed_pairs(kind, k);
                flops += match conv::choose(&c, kind) {
                    conv::ConvStrategy::PixelPairs => c.pixel_pair_flops(pkk),
                    _ => c.im2col_flops(pkk),
                };
            }
            _ => {}
        }
    }
    flops
}

/// Batch-1 forward/backward passes through burn's autodiff reach about a quarter of the
/// throughput of batched ones (measured with `ntk bench` on perf-cnn: the Jacobian method
/// ran at 11.5 GFLOP/s against 38.7 for the structured one), so the Jacobian method's
/// per-sample passes are counted four times in [`choose`].
pub const PER_SAMPLE_PASS_PENALTY: f64 = 4.0;

/// FLOPs of the Jacobian method.
pub fn jacobian_flops(net: &Network, n1: usize, n2: usize, kind: KernelKind) -> f64 {
    let s = sizes(net);
    let k = seeds(kind, s.outputs) as f64;
    let pk = conv::seed_pairs(kind, seeds(kind, s.outputs)) as f64;
    3.0 * s.forward_flops * (n1 + n2) as f64 * k + 2.0 * (n1 * n2) as f64 * pk * s.params
}

/// The per-sample forward+backward part of [`jacobian_flops`].
pub fn jacobian_pass_flops(net: &Network, n1: usize, n2: usize, kind: KernelKind) -> f64 {
    let s = sizes(net);
    3.0 * s.forward_flops * (n1 + n2) as f64 * seeds(kind, s.outputs) as f64
}

/// FLOPs of the NTK-vector-product method.
pub fn ntk_vp_flops(net: &Network, n1: usize, n2: usize, kind: KernelKind) -> f64 {
    let s = sizes(net);
    let k = seeds(kind, s.outputs) as f64;
    3.0 * s.forward_flops * n2 as f64 * k * (n1 + n2) as f64
}

/// The method with the fewest FLOPs for an `n1 × n2` kernel (Jacobian passes weighted by
/// [`PER_SAMPLE_PASS_PENALTY`]).
pub fn choose(net: &Network, n1: usize, n2: usize, kind: KernelKind) -> Method {
    let candidates = [
        (Method::Structured, structured_flops(net, n1, n2, kind)),
        (
            Method::Jacobian,
            jacobian_flops(net, n1, n2, kind)
                + (PER_SAMPLE_PASS_PENALTY - 1.0) * jacobian_pass_flops(net, n1, n2, kind),
        ),
        (Method::NtkVp, ntk_vp_flops(net, n1, n2, kind)),
    ];
    candidates
        .into_iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|c| c.0)
        .unwrap_or(Method::Structured)
}

/// Estimated peak working bytes of one `t × t` tile (both sides `t` rows).
pub fn tile_bytes(net: &Network, t: usize, kind: KernelKind, method: Method) -> f64 {
    let s = sizes(net);
    let elt = if net.precision == ntk_nets::Precision::F64 {
        8.0
    } else {
        4.0
    };
    let k = seeds(kind, s.outputs) as f64;
    let t = t as f64;
    let pairs = t * t * kind.per_pair(s.outputs) as f64;
    let floats = match method {
        Method::Jacobian => 2.0 * t * k * s.params + 2.0 * pairs,
        Method::NtkVp => 2.0 * s.params + 2.0 * t * s.activations + 3.0 * pairs,
        _ => {
            let mut conv_extra: f64 = 0.0;
            for g in &net.geometry {
                if let (FeatureShape::Image { .. }, false) = (g.input, g.params.is_empty()) {
                    let FeatureShape::Image { c, h, w } = g.output else {
                        continue;
                    };
                    // patches + per-sample gradients, both sides
                    conv_extra = conv_extra.max(
                        2.0 * t * (g.fan_in * h * w) as f64 + 2.0 * t * k * (c * g.fan_in) as f64,
                    );
                }
            }
            // Pairs: the accumulator, each layer's coefficient and Gram temporaries, and the
            // tile's f64 copy (measured: 21–25 bytes per pair in f32 on a 20 000-sample
            // trace kernel, i.e. about 6 numbers).
            2.0 * t * s.activations + 6.0 * t * k * s.max_activation + conv_extra + 6.0 * pairs
        }
    };
    floats * elt
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntk_nets::{BackendKind, NetworkConfig, NetworkSpec, Padding, Precision};

    #[test]
    fn auto_picks_structured_on_the_perf_shapes() {
        let device = BackendKind::Flex.device(Precision::F32).unwrap();
        let cnn = NetworkSpec::builder(&[3, 16, 16])
            .conv2d(32, [3, 3], [1, 1], Padding::Same, 1.4, Some(0.1))
            .relu()
            .conv2d(32, [3, 3], [1, 1], Padding::Same, 1.4, Some(0.1))
            .relu()
            .global_avg_pool()
            .dense(10, 1.0, Some(0.0))
            .build()
            .unwrap();
        let mlp = NetworkSpec::builder(&[64])
            .dense(512, 1.4, Some(0.1))
            .relu()
            .dense(512, 1.4, Some(0.1))
            .relu()
            .dense(10, 1.0, Some(0.0))
            .build()
            .unwrap();
        for (spec, n) in [(cnn, 32), (mlp, 128)] {
            let net = NetworkConfig::new(spec)
                .with_precision(Precision::F32)
                .init(&device)
                .unwrap();
            assert_eq!(choose(&net, n, n, KernelKind::Full), Method::Structured);
            assert!(
                structured_flops(&net, n, n, KernelKind::Full)
                    < ntk_vp_flops(&net, n, n, KernelKind::Full)
            );
        }
    }
}
