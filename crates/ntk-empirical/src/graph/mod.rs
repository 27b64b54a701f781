//! Empirical NTKs of graph networks ([`ntk_nets::graph::GraphNetwork`]: ONNX imports and
//! graph specs) by Jacobian contraction ([`jacobian`], burn autodiff per sample and
//! output: the reference), structured derivatives ([`structured`]: one batched
//! backward pass gives the cotangents at every parameter-consuming node, per-op rules in
//! [`rules`] turn them into per-row parameter gradients one parameter at a time) and
//! NTK-vector products ([`ntk_vp`]: a VJP by autodiff, then a JVP by the ops' forward-mode
//! rules, per column).
//!
//! Kernel kinds, tiling and symmetry are as for sequential networks
//! ([`crate::engine`]); `--params`/`--frozen` ([`GraphNetwork::select`]) restrict the
//! kernel to some parameters.

pub mod jacobian;
pub mod ntk_vp;
pub mod per_layer;
pub mod rules;
pub mod structured;

use crate::cost::Method;
use crate::engine::{EmpiricalOptions, KernelOutput, TilePlan, place_tile, tile_jobs};
use crate::error::{EmpiricalError, Result, option_err};
use crate::kernel::KernelKind;
use crate::structured::conv::{ConvCostInputs, seed_pairs};
use crate::structured::{Accumulator, ConvStrategy, KernelSum, StructuredOptions, finish};
use burn::tensor::Tensor;
use ntk_nets::graph::GraphNetwork;
use ntk_nets::{HostArray, to_host};

/// The method `auto` resolves to on graphs (the structured method covers every op that
/// consumes a parameter in the supported set; `jacobian` is the reference).
pub fn resolve_method(method: Method) -> Result<Method> {
    match method {
        Method::Auto | Method::Structured => Ok(Method::Structured),
        Method::Jacobian => Ok(Method::Jacobian),
        Method::NtkVp => Ok(Method::NtkVp),
    }
}

/// Bytes one tile of `t` rows per side needs, roughly: the structured method keeps every
/// tapped activation and its cotangent for `sides·t·K` rows, and the per-row gradient of
/// the largest parameter (conv weights the cost model contracts in the pixel-pair form
/// instead, as `conv` or the cost model decides, count their `[t·K·L, t·K·L]` buffers);
/// the Jacobian method `sides·t·K·P`
/// numbers. `sides` is 2 for a tile between two batches, 1 for a diagonal tile of `x`
/// against itself (one batch).
pub fn tile_bytes(
    net: &GraphNetwork,
    t: usize,
    sides: usize,
    kind: KernelKind,
    method: Method,
    conv: ConvStrategy,
    sizes: &structured::ProbeSizes,
) -> f64 {
    let (activations, outputs) = (sizes.activations, sizes.outputs);
    let k = if matches!(kind, KernelKind::SumOfLogits | KernelKind::Nngp) {
        1
    } else {
        outputs
    };
    let rows = (sides * t * k) as f64;
    let elem = if net.dtype() == burn::tensor::DType::F32 {
        4.0
    } else {
        8.0
    };
    // Per parameter: the per-row gradient, or the pixel-pair buffers (two of them).
    let mut largest = 0f64;
    for (i, p) in net.graph.params.iter().enumerate() {
        let numel = p.shape.iter().product::<usize>() as f64;
        let bytes = match sizes.convs.iter().find(|(q, _)| *q == i) {
            Some((_, c)) => {
                let c = ConvCostInputs {
                    n1: t,
                    n2: t,
                    k,
                    ..*c
                };
                if conv.resolve(&c, kind) == ConvStrategy::PixelPairs {
                    2.0 * c.pixel_pair_bytes(seed_pairs(kind, k)) / 8.0 * elem
                } else {
                    2.0 * rows * numel * elem
                }
            }
            None => 2.0 * rows * numel * elem,
        };
        largest = largest.max(bytes);
    }
    let out = (t * t * kind.per_pair(outputs)) as f64 * 8.0;
    match method {
        Method::Jacobian => rows * net.graph.n_params() as f64 * elem * 2.0 + out,
        // The columns, a forward pass of t samples with tangents, and one VJP.
        Method::NtkVp => {
            ((t * k * t * outputs) as f64 + 4.0 * t as f64 * activations as f64) * elem
                + 3.0 * net.graph.n_params() as f64 * elem
                + out
        }
        _ => rows * 3.0 * activations as f64 * elem + largest + out,
    }
}

/// One tile: the kernel between two batches, `[n1, n2, per_pair]`.
///
/// `conv`: how the structured method contracts conv weights. `cancel` is checked between
/// parameters (structured), samples (Jacobian) and columns (NTK-vector products).
pub fn tile_kernel(
    net: &GraphNetwork,
    x1: &HostArray,
    x2: Option<&HostArray>,
    kind: KernelKind,
    method: Method,
    conv: ConvStrategy,
    cancel: &crate::Cancel,
) -> Result<HostArray> {
    let mut tiles = tile_kernels(net, x1, x2, kind, method, conv, cancel, None)?;
    Ok(tiles.pop().expect("one group"))
}

/// As [`tile_kernel`], one tile per parameter group of `groups` (`None`: one group of
/// all); groups need the structured method and a parameter kernel (not `nngp`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn tile_kernels(
    net: &GraphNetwork,
    x1: &HostArray,
    x2: Option<&HostArray>,
    kind: KernelKind,
    method: Method,
    conv: ConvStrategy,
    cancel: &crate::Cancel,
    groups: Option<&per_layer::ParamGroups>,
) -> Result<Vec<HostArray>> {
    cancel.check()?;
    net.check_input(x1)?;
    if let Some(x2) = x2 {
        net.check_input(x2)?;
    }
    let n1 = x1.len();
    let n2 = x2.map_or(n1, |x| x.len());
    let device = net.device();
    let o;
    let hosts = if kind == KernelKind::Nngp {
        if groups.is_some() {
            return Err(option_err(
                "per_layer",
                "the nngp kernel has no parameter contributions; use another kernel kind",
            ));
        }
        let f1 = net.forward(net.input(x1, &device)?)?;
        let f2 = match x2 {
            Some(x2) => net.forward(net.input(x2, &device)?)?,
            None => f1.clone(),
        };
        o = f1.dims()[1];
        vec![to_host(f1.matmul(f2.transpose()).div_scalar(o as f64))]
    } else {
        let method = resolve_method(method)?;
        if groups.is_some() && method != Method::Structured {
            return Err(option_err(
                "per_layer",
                format!(
                    "per-layer kernels are summed by the structured method, not {}",
                    method.name()
                ),
            ));
        }
        let (accs, outputs) = match method {
            Method::Jacobian => {
                let (sum, o) = jacobian::kernel(net, x1, x2, kind, cancel)?;
                (vec![sum.acc], o)
            }
            Method::NtkVp => {
                let (acc, o) = ntk_vp::kernel(net, x1, x2, kind, cancel)?;
                (vec![Some(acc)], o)
            }
            _ => {
                let (sums, o) = structured::kernel(net, x1, x2, kind, conv, cancel, groups)?;
                (sums.into_iter().map(|s| s.acc).collect(), o)
            }
        };
        o = outputs;
        accs.into_iter()
            .map(|acc| {
                let acc = acc.unwrap_or_else(|| zero_accumulator(kind, n1, n2, o, net));
                finish(acc, kind, o)
            })
            .collect()
    };
    hosts
        .into_iter()
        .map(|host| {
            if let Some((i, v)) = host.first_non_finite() {
                return Err(EmpiricalError::NonFinite {
                    place: format!(
                        "the {} kernel, flat index {i} = {v}{}",
                        kind.name(),
                        if net.dtype() == burn::tensor::DType::F32 {
                            " (f32: try --dtype f64)"
                        } else {
                            ""
                        }
                    ),
                });
            }
            Ok(HostArray::new(vec![n1, n2, kind.per_pair(o)], host.data))
        })
        .collect()
}

fn zero_accumulator(
    kind: KernelKind,
    n1: usize,
    n2: usize,
    o: usize,
    net: &GraphNetwork,
) -> Accumulator {
    let device = net.device();
    let opts = (&device, net.dtype());
    let k = if kind == KernelKind::SumOfLogits {
        1
    } else {
        o
    };
    match kind {
        KernelKind::Full => Accumulator::Full(Tensor::zeros([n1, k, n2, k], opts)),
        KernelKind::Diagonal => Accumulator::Diagonal(Tensor::zeros([k, n1, n2], opts)),
        _ => Accumulator::Pairs(Tensor::zeros([n1, n2], opts)),
    }
}

/// A fresh kernel sum for `n1 × n2` samples and `k` seeds.
pub(crate) fn kernel_sum(
    net: &GraphNetwork,
    kind: KernelKind,
    n1: usize,
    n2: usize,
    k: usize,
    symmetric: bool,
) -> KernelSum {
    KernelSum::new(
        kind,
        (n1, n2, k),
        symmetric,
        &net.device(),
        net.dtype(),
        false,
    )
}

/// The empirical kernel of a graph network between `x1` and `x2` (`None`: `x2 = x1`,
/// only tiles on and above the diagonal computed), tiled under `options.max_memory`.
/// `progress(done, total)` is called after each tile.
pub fn empirical_kernel(
    net: &GraphNetwork,
    x1: &HostArray,
    x2: Option<&HostArray>,
    options: &EmpiricalOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<KernelOutput> {
    let plan = plan(net, x1, x2, options)?;
    let mut out = vec![0.0; plan.n1 * plan.n2 * plan.per_pair()];
    let total = plan.jobs.len();
    for (done, &(i, j)) in plan.jobs.iter().enumerate() {
        let tile = compute_tile(net, x1, x2, &plan, (i, j))?;
        place_tile(&mut out, &plan, (i, j), &tile);
        progress(done + 1, total);
    }
    Ok(KernelOutput {
        kernel: HostArray::new(plan.shape(), out),
        method: plan.method,
        tile_rows: plan.tile_rows,
        tiles: total,
    })
}

/// Tile `(i, j)` of `plan`: rows of block `i` of `x1` against block `j` of `x2` (of
/// `x1` when symmetric; a diagonal tile of a symmetric plan is one batch).
pub fn compute_tile(
    net: &GraphNetwork,
    x1: &HostArray,
    x2: Option<&HostArray>,
    plan: &TilePlan,
    job: (usize, usize),
) -> Result<HostArray> {
    let mut tiles = compute_tiles(net, x1, x2, plan, job, None)?;
    Ok(tiles.pop().expect("one group"))
}

/// As [`compute_tile`], one tile per parameter group (see [`tile_kernels`]).
pub(crate) fn compute_tiles(
    net: &GraphNetwork,
    x1: &HostArray,
    x2: Option<&HostArray>,
    plan: &TilePlan,
    (i, j): (usize, usize),
    groups: Option<&per_layer::ParamGroups>,
) -> Result<Vec<HostArray>> {
    let (s1, l1) = plan.block(i, plan.n1);
    let (s2, l2) = plan.block(j, plan.n2);
    let a = x1.rows(s1, l1);
    let (kind, method, conv) = (plan.kind, plan.method, plan.structured.conv);
    if plan.symmetric && i == j {
        tile_kernels(net, &a, None, kind, method, conv, &plan.cancel, groups)
    } else {
        let other = if plan.symmetric { x1 } else { x2.unwrap_or(x1) };
        let b = other.rows(s2, l2);
        tile_kernels(net, &a, Some(&b), kind, method, conv, &plan.cancel, groups)
    }
}

/// Plans a graph kernel: method, tile size under the memory bound, symmetry.
pub fn plan(
    net: &GraphNetwork,
    x1: &HostArray,
    x2: Option<&HostArray>,
    options: &EmpiricalOptions,
) -> Result<TilePlan> {
    let kind = options.kind;
    let n1 = x1.len();
    let n2 = x2.map_or(n1, |x| x.len());
    if n1 == 0 || n2 == 0 {
        return Err(option_err(
            "x1/x2",
            "needs at least one sample on each side",
        ));
    }
    net.check_input(x1)?;
    if let Some(x2) = x2 {
        net.check_input(x2)?;
    }
    let method = if kind == KernelKind::Nngp {
        Method::Structured
    } else {
        resolve_method(options.method)?
    };
    let sizes = structured::probe_sizes(net)?;
    let outputs = sizes.outputs;
    let budget = options
        .max_memory
        .saturating_sub(crate::engine::PROCESS_RESERVE)
        .max(options.max_memory / 2);
    let fits_sides = |t: usize, sides: usize| {
        tile_bytes(net, t, sides, kind, method, options.conv, &sizes) <= budget as f64
    };
    let fits = |t: usize| fits_sides(t, 2);
    // x against itself in one tile: one batch of n rows, not two.
    let one_batch = x2.is_none_or(|x2| x2.shape == x1.shape && x2.data == x1.data);
    let tile_rows = match options.tile_rows {
        Some(0) => return Err(option_err("tile_rows", "must be positive")),
        Some(t) => t,
        None => {
            if !fits(1) {
                return Err(EmpiricalError::Memory {
                    bound: options.max_memory,
                    needed: tile_bytes(net, 1, 2, kind, method, options.conv, &sizes) as u64,
                });
            }
            if one_batch && fits_sides(n1, 1) {
                n1
            } else {
                let mut t = n1.max(n2);
                while t > 1 && !fits(t) {
                    t = t.div_ceil(2);
                }
                t
            }
        }
    };
    let (symmetric, jobs) = tile_jobs(x1, x2, tile_rows);
    Ok(TilePlan {
        kind,
        method,
        n1,
        n2,
        outputs,
        tile_rows,
        symmetric,
        jobs,
        parallel_tiles: 1,
        structured: StructuredOptions {
            conv: options.conv,
            ..Default::default()
        },
        cancel: options.cancel.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntk_nets::Precision;
    use ntk_nets::graph::spec;

    /// A last-stage conv: a 4×4 map, 64 → 64 channels, 3×3 (`L² = 256 < C·k² = 576`).
    fn late_conv_net() -> GraphNetwork {
        let text = r#"{"input_shape": [64, 4, 4], "nodes": [
            {"name": "conv", "type": "conv2d", "out_channels": 64, "kernel_size": 3, "padding": 1},
            {"name": "act", "type": "relu"},
            {"name": "pool", "type": "global_avg_pool"},
            {"name": "flat", "type": "flatten"},
            {"name": "fc", "type": "linear", "out_features": 10}]}"#;
        let g = spec::parse(text, "<test>").unwrap();
        let params = g.random_params(0).unwrap();
        let device = ntk_nets::BackendKind::Flex.device(Precision::F64).unwrap();
        GraphNetwork::from_params(g.graph, &params, &device, Precision::F64).unwrap()
    }

    #[test]
    fn the_plan_counts_pixel_pair_buffers_instead_of_per_row_gradients() {
        let net = late_conv_net();
        let sizes = structured::probe_sizes(&net).unwrap();
        let conv = net
            .graph
            .params
            .iter()
            .position(|p| p.name == "conv.weight");
        assert_eq!(sizes.convs.len(), 1);
        assert_eq!(Some(sizes.convs[0].0), conv);
        let c = sizes.convs[0].1;
        assert_eq!((c.out_channels, c.pixels, c.patch), (64, 16, 576));
        let bytes = |conv| {
            tile_bytes(
                &net,
                8,
                1,
                KernelKind::Full,
                Method::Structured,
                conv,
                &sizes,
            )
        };
        // The largest array: per-row gradients of 8·10 rows × 36 864 weights (f64,
        // twice), or the pixel-pair buffers of (8·10·16)² numbers (twice).
        let (auto, im2col) = (bytes(ConvStrategy::Auto), bytes(ConvStrategy::Im2col));
        let saved = 2.0 * 80.0 * 36864.0 * 8.0 - 2.0 * (80.0 * 16.0f64).powi(2) * 8.0;
        assert!(
            ((im2col - auto) - saved).abs() < 1.0,
            "auto {auto} im2col {im2col}"
        );
        assert_eq!(bytes(ConvStrategy::PixelPairs), auto);
    }
}
