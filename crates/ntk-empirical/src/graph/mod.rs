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
pub mod rules;
pub mod structured;

use crate::cost::Method;
use crate::engine::{EmpiricalOptions, KernelOutput, TilePlan, place_tile, tile_jobs};
use crate::error::{EmpiricalError, Result, option_err};
use crate::kernel::KernelKind;
use crate::structured::{Accumulator, KernelSum, StructuredOptions, finish};
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
/// the largest parameter; the Jacobian method `sides·t·K·P` numbers. `sides` is 2 for a
/// tile between two batches, 1 for a diagonal tile of `x` against itself (one batch).
pub fn tile_bytes(
    net: &GraphNetwork,
    t: usize,
    sides: usize,
    kind: KernelKind,
    method: Method,
    activations: usize,
    outputs: usize,
) -> f64 {
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
    let largest = net
        .graph
        .params
        .iter()
        .map(|p| p.shape.iter().product::<usize>())
        .max()
        .unwrap_or(0) as f64;
    let out = (t * t * kind.per_pair(outputs)) as f64 * 8.0;
    match method {
        Method::Jacobian => rows * net.graph.n_params() as f64 * elem * 2.0 + out,
        // The columns, a forward pass of t samples with tangents, and one VJP.
        Method::NtkVp => {
            ((t * k * t * outputs) as f64 + 4.0 * t as f64 * activations as f64) * elem
                + 3.0 * net.graph.n_params() as f64 * elem
                + out
        }
        _ => rows * (3.0 * activations as f64 + 2.0 * largest) * elem + out,
    }
}

/// One tile: the kernel between two batches, `[n1, n2, per_pair]`.
///
/// `cancel` is checked between parameters (structured), samples (Jacobian) and columns
/// (NTK-vector products).
pub fn tile_kernel(
    net: &GraphNetwork,
    x1: &HostArray,
    x2: Option<&HostArray>,
    kind: KernelKind,
    method: Method,
    cancel: &crate::Cancel,
) -> Result<HostArray> {
    cancel.check()?;
    net.check_input(x1)?;
    if let Some(x2) = x2 {
        net.check_input(x2)?;
    }
    let n1 = x1.len();
    let n2 = x2.map_or(n1, |x| x.len());
    let device = net.device();
    let o;
    let host = if kind == KernelKind::Nngp {
        let f1 = net.forward(net.input(x1, &device)?)?;
        let f2 = match x2 {
            Some(x2) => net.forward(net.input(x2, &device)?)?,
            None => f1.clone(),
        };
        o = f1.dims()[1];
        to_host(f1.matmul(f2.transpose()).div_scalar(o as f64))
    } else {
        let (acc, outputs) = match resolve_method(method)? {
            Method::Jacobian => {
                let (sum, o) = jacobian::kernel(net, x1, x2, kind, cancel)?;
                (sum.acc, o)
            }
            Method::NtkVp => {
                let (acc, o) = ntk_vp::kernel(net, x1, x2, kind, cancel)?;
                (Some(acc), o)
            }
            _ => {
                let (sum, o) = structured::kernel(net, x1, x2, kind, cancel)?;
                (sum.acc, o)
            }
        };
        o = outputs;
        let acc = acc.unwrap_or_else(|| zero_accumulator(kind, n1, n2, o, net));
        finish(acc, kind, o)
    };
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
        let (s1, l1) = plan.block(i, plan.n1);
        let (s2, l2) = plan.block(j, plan.n2);
        let a = x1.rows(s1, l1);
        let tile = if plan.symmetric && i == j {
            tile_kernel(net, &a, None, plan.kind, plan.method, &plan.cancel)?
        } else {
            let other = if plan.symmetric { x1 } else { x2.unwrap_or(x1) };
            tile_kernel(
                net,
                &a,
                Some(&other.rows(s2, l2)),
                plan.kind,
                plan.method,
                &plan.cancel,
            )?
        };
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
    let (outputs, activations) = structured::probe_sizes(net)?;
    let budget = options
        .max_memory
        .saturating_sub(crate::engine::PROCESS_RESERVE)
        .max(options.max_memory / 2);
    let fits_sides = |t: usize, sides: usize| {
        tile_bytes(net, t, sides, kind, method, activations, outputs) <= budget as f64
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
                    needed: tile_bytes(net, 1, 2, kind, method, activations, outputs) as u64,
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
        structured: StructuredOptions::default(),
        cancel: options.cancel.clone(),
    })
}
