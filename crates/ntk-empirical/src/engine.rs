//! The kernel engine for [`Network`]s: method choice, tiling under a memory bound,
//! symmetry when `x2 = x1`, host output.

use crate::cost::{self, Method};
use crate::error::{EmpiricalError, Result, option_err};
use crate::kernel::KernelKind;
use crate::structured::{self, Accumulator, ConvStrategy, StructuredOptions};
use crate::{jacobian, ntk_vp};
use burn::module::Module;
use burn::tensor::Tensor;
use ntk_nets::layers::Features;
use ntk_nets::{HostArray, Network, to_host};
use rayon::prelude::*;

/// Options of [`empirical_kernel`].
#[derive(Debug, Clone)]
pub struct EmpiricalOptions {
    pub method: Method,
    pub kind: KernelKind,
    /// Contraction of conv2d layers in the structured method.
    pub conv: ConvStrategy,
    /// Bound on the working memory of the tiles in flight (one per rayon thread, each
    /// planned under its share), in bytes; the output array is extra.
    pub max_memory: u64,
    /// Force a tile size (rows of x1 and of x2 per tile); otherwise from `max_memory`.
    pub tile_rows: Option<usize>,
    /// Structured method: contract full kernels with burn tensor ops even on CPU
    /// backends, instead of the fused host contraction (see `structured::host_gram`).
    pub tensor_contraction: bool,
    /// Set from another thread to stop the computation ([`crate::EmpiricalError::Cancelled`]).
    pub cancel: crate::Cancel,
}

impl Default for EmpiricalOptions {
    fn default() -> Self {
        EmpiricalOptions {
            method: Method::Auto,
            kind: KernelKind::Full,
            conv: ConvStrategy::Auto,
            max_memory: 2 << 30,
            tile_rows: None,
            tensor_contraction: false,
            cancel: crate::Cancel::default(),
        }
    }
}

/// A computed kernel and how it was computed.
#[derive(Debug, Clone)]
pub struct KernelOutput {
    /// The kernel in neural-tangents' layout (see [`KernelKind`]).
    pub kernel: HostArray,
    /// The method that ran (the pick of `auto`).
    pub method: Method,
    /// Rows per tile, and number of tiles computed.
    pub tile_rows: usize,
    pub tiles: usize,
}

/// One tile: the kernel between two (small) batches, as a host array `[t1, t2, pp]`.
pub fn tile_kernel(
    net: &Network,
    x1: &HostArray,
    x2: Option<&HostArray>,
    kind: KernelKind,
    method: Method,
    structured_options: StructuredOptions,
) -> Result<HostArray> {
    let o = net.n_outputs();
    let n1 = x1.len();
    let n2 = x2.map_or(n1, |x| x.len());
    let device = net.device();
    let host: HostArray = if kind == KernelKind::Nngp {
        let f1 = net.forward(net.input(x1, &device)?);
        let f2 = match x2 {
            Some(x2) => net.forward(net.input(x2, &device)?),
            None => f1.clone(),
        };
        to_host(f1.matmul(f2.transpose()).div_scalar(o as f64))
    } else {
        let host_mlp = matches!(method, Method::Structured | Method::Auto)
            && structured::host_mlp::applies(net, kind, structured_options);
        let acc = match method {
            _ if host_mlp => {
                net.check_input(x1)?;
                if let Some(x2) = x2 {
                    net.check_input(x2)?;
                }
                Accumulator::FullHost(structured::host_mlp::kernel(net, x1, x2))
            }
            Method::Structured | Method::Auto => structured::kernel(
                net,
                net.input(x1, &device)?,
                x2.map(|x| net.input(x, &device)).transpose()?,
                kind,
                structured_options,
            ),
            Method::Jacobian => jacobian_on_network(net, x1, x2, kind)?,
            Method::NtkVp => ntk_vp::kernel(net, x1, x2, kind)?,
        };
        let t0 = std::time::Instant::now();
        let host = structured::finish(acc, kind, o);
        if crate::profiling() {
            eprintln!(
                "[profile] finish: {:.2} ms",
                t0.elapsed().as_secs_f64() * 1e3
            );
        }
        host
    };
    if let Some((i, v)) = host.first_non_finite() {
        // Only on failure: find where the first NaN/Inf appeared.
        let origin = [Some(x1), x2]
            .into_iter()
            .flatten()
            .find_map(|x| first_non_finite_layer(net, x).transpose())
            .transpose()?
            .unwrap_or_else(|| {
                format!(
                    "the forward pass is finite, so the derivatives or their contraction overflowed{}",
                    if net.dtype() == burn::tensor::DType::F32 {
                        " (f32: try --dtype f64)"
                    } else {
                        ""
                    }
                )
            });
        return Err(EmpiricalError::NonFinite {
            place: format!(
                "the {} kernel ({} method), flat index {i} = {v}; {origin}",
                kind.name(),
                method.name()
            ),
        });
    }
    Ok(HostArray::new(vec![n1, n2, kind.per_pair(o)], host.data))
}

/// The first layer whose output has a NaN or Inf for inputs `x`, described for an error
/// message (`None`: the forward pass is finite).
pub fn first_non_finite_layer(net: &Network, x: &HostArray) -> Result<Option<String>> {
    if let Some((i, v)) = x.first_non_finite() {
        return Ok(Some(format!("the input itself has {v} at flat index {i}")));
    }
    let mut h = net.input(x, &net.device())?;
    for (l, spec) in net.spec.layers.iter().enumerate() {
        h = net.forward_layer(l, h);
        let values = match &h {
            Features::Flat(t) => to_host(t.clone()),
            Features::Image(t) => to_host(t.clone()),
        };
        if let Some((i, v)) = values.first_non_finite() {
            let per_sample = values.data.len() / values.shape[0].max(1);
            return Ok(Some(format!(
                "{v} first appears in the output of layer {l} ({}), sample {} of the batch",
                spec.kind(),
                i / per_sample.max(1)
            )));
        }
    }
    Ok(None)
}

/// Runs the Jacobian method on a [`Network`] (a copy of it on the autodiff device).
fn jacobian_on_network(
    net: &Network,
    x1: &HostArray,
    x2: Option<&HostArray>,
    kind: KernelKind,
) -> Result<Accumulator> {
    let ad = net.device().autodiff();
    let model = net.clone().fork(&ad).train();
    let i1 = model.input(x1, &ad)?;
    let i2 = x2.map(|x| model.input(x, &ad)).transpose()?;
    Ok(match (i1, i2) {
        (Features::Flat(a), b) => {
            let f = |m: &Network, x: Tensor<2>| m.forward(Features::Flat(x));
            jacobian::kernel(&model, &f, a, b.and_then(Features::flat), kind)
        }
        (Features::Image(a), b) => {
            let f = |m: &Network, x: Tensor<4>| m.forward(Features::Image(x));
            jacobian::kernel(&model, &f, a, b.and_then(Features::image), kind)
        }
    })
}

/// Memory kept out of `max_memory` for what is not a tile: the program, the network, the
/// inputs, the allocator's slack (measured: about 100 MiB for a small MLP).
pub const PROCESS_RESERVE: u64 = 128 << 20;

/// The largest tile (rows per side) whose working set fits `max_memory`, at most `n`.
pub fn plan_tile_rows(
    net: &Network,
    n: usize,
    kind: KernelKind,
    method: Method,
    max_memory: u64,
) -> Result<usize> {
    let fits = |t: usize| cost::tile_bytes(net, t, kind, method) <= max_memory as f64;
    if !fits(1) {
        return Err(EmpiricalError::Memory {
            bound: max_memory,
            needed: cost::tile_bytes(net, 1, kind, method) as u64,
        });
    }
    let (mut lo, mut hi) = (1usize, n.max(1));
    if fits(hi) {
        return Ok(hi);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) { lo = mid } else { hi = mid }
    }
    Ok(lo)
}

/// How a kernel is cut into tiles: resolved method, tile size and the jobs to run.
///
/// Tile `(i, j)` holds rows `blocks1[i]` of x1 against rows `blocks2[j]` of x2. With
/// `symmetric` (x2 omitted, or equal to x1) only tiles with `j ≥ i` are jobs; the others
/// are their mirror images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TilePlan {
    pub kind: KernelKind,
    pub method: Method,
    pub n1: usize,
    pub n2: usize,
    /// Outputs O of the network.
    pub outputs: usize,
    pub tile_rows: usize,
    pub symmetric: bool,
    /// `(i, j)` of every tile to compute, row-major.
    pub jobs: Vec<(usize, usize)>,
    /// Tiles computed at once (one per rayon thread).
    pub parallel_tiles: usize,
    pub structured: StructuredOptions,
    /// Checked before each tile (and inside graph tiles).
    pub cancel: crate::Cancel,
}

impl TilePlan {
    /// `(start, len)` of block `b` of `n` rows.
    pub fn block(&self, b: usize, n: usize) -> (usize, usize) {
        let start = b * self.tile_rows;
        (start, self.tile_rows.min(n - start))
    }

    /// Values per sample pair (O², O or 1).
    pub fn per_pair(&self) -> usize {
        self.kind.per_pair(self.outputs)
    }

    /// The shape of the whole kernel.
    pub fn shape(&self) -> Vec<usize> {
        self.kind.shape(self.n1, self.n2, self.outputs)
    }
}

/// Plans a kernel: resolves `auto`, sizes the tiles under `max_memory` (shared by the
/// tiles in flight), detects `x2 == x1` (same shape and values: treated as omitted).
pub fn plan(
    net: &Network,
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
    let method = match options.method {
        Method::Auto => cost::choose(net, n1, n2, kind),
        m => m,
    };
    let parallel_tiles = rayon::current_num_threads().max(1);
    let tile_rows = match options.tile_rows {
        Some(0) => return Err(option_err("tile_rows", "must be positive")),
        Some(t) => t,
        None => plan_tile_rows(
            net,
            n1.max(n2),
            kind,
            method,
            options
                .max_memory
                .saturating_sub(PROCESS_RESERVE)
                .max(options.max_memory / 2)
                / parallel_tiles as u64,
        )
        .map_err(|e| match e {
            // Name the whole bound and what it must be: one tile per thread, beside the
            // process reserve (or twice the tiles, the planner's other rule).
            EmpiricalError::Memory { needed, .. } => {
                let tiles = needed.saturating_mul(parallel_tiles as u64);
                EmpiricalError::Memory {
                    bound: options.max_memory,
                    needed: tiles
                        .saturating_add(PROCESS_RESERVE)
                        .min(tiles.saturating_mul(2)),
                }
            }
            e => e,
        })?,
    };
    let (symmetric, jobs) = tile_jobs(x1, x2, tile_rows);
    Ok(TilePlan {
        kind,
        method,
        n1,
        n2,
        outputs: net.n_outputs(),
        tile_rows,
        symmetric,
        jobs,
        parallel_tiles,
        structured: StructuredOptions {
            conv: options.conv,
            tensor_contraction: options.tensor_contraction,
        },
        cancel: options.cancel.clone(),
    })
}

/// Whether `x2` is `x1` (omitted, or the same shape and values), and the `(i, j)` tiles
/// of `tile_rows` rows to compute, row-major (only `j ≥ i` when symmetric).
pub fn tile_jobs(
    x1: &HostArray,
    x2: Option<&HostArray>,
    tile_rows: usize,
) -> (bool, Vec<(usize, usize)>) {
    let symmetric = match x2 {
        None => true,
        Some(x2) => x2.shape == x1.shape && x2.data == x1.data,
    };
    let (n1, n2) = (x1.len(), x2.map_or(x1.len(), |x| x.len()));
    let mut jobs = Vec::new();
    for i in 0..n1.div_ceil(tile_rows) {
        for j in 0..n2.div_ceil(tile_rows) {
            if !(symmetric && j < i) {
                jobs.push((i, j));
            }
        }
    }
    (symmetric, jobs)
}

/// Computes tile `(i, j)` of a plan: `[l1, l2, per_pair]`.
pub fn compute_tile(
    net: &Network,
    x1: &HostArray,
    x2: Option<&HostArray>,
    plan: &TilePlan,
    (i, j): (usize, usize),
) -> Result<HostArray> {
    plan.cancel.check()?;
    let (s1, l1) = plan.block(i, plan.n1);
    let (s2, l2) = plan.block(j, plan.n2);
    let a = x1.rows(s1, l1);
    let other = if plan.symmetric { x1 } else { x2.unwrap_or(x1) };
    let (kind, method, so) = (plan.kind, plan.method, plan.structured);
    if plan.symmetric && i == j {
        tile_kernel(net, &a, None, kind, method, so)
    } else {
        tile_kernel(net, &a, Some(&other.rows(s2, l2)), kind, method, so)
    }
}

/// Writes tile `(i, j)` into the whole kernel `out` (row-major, [`TilePlan::shape`]),
/// and its mirror image when the plan is symmetric.
pub fn place_tile(out: &mut [f64], plan: &TilePlan, (i, j): (usize, usize), tile: &HostArray) {
    let (s1, l1) = plan.block(i, plan.n1);
    let (s2, l2) = plan.block(j, plan.n2);
    let (n2, pp, o) = (plan.n2, plan.per_pair(), plan.outputs);
    for r in 0..l1 {
        for c in 0..l2 {
            let src = &tile.data[(r * l2 + c) * pp..(r * l2 + c + 1) * pp];
            out[((s1 + r) * n2 + s2 + c) * pp..][..pp].copy_from_slice(src);
            if plan.symmetric && i != j {
                mirror_pair(
                    &mut out[((s2 + c) * n2 + s1 + r) * pp..][..pp],
                    src,
                    plan.kind,
                    o,
                );
            }
        }
    }
}

/// `Θ(x_b, x_a)` from `Θ(x_a, x_b)`: the same values, with `[o, o']` transposed for full
/// kernels.
pub fn mirror_pair(dst: &mut [f64], src: &[f64], kind: KernelKind, o: usize) {
    if kind == KernelKind::Full {
        for p in 0..o {
            for q in 0..o {
                dst[p * o + q] = src[q * o + p];
            }
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// The empirical kernel of `net` between `x1` and `x2` (`None`: `x2 = x1`, and only the
/// tiles on and above the diagonal are computed; the rest is their mirror image).
///
/// `progress(done, total)` is called after each tile.
pub fn empirical_kernel(
    net: &Network,
    x1: &HostArray,
    x2: Option<&HostArray>,
    options: &EmpiricalOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<KernelOutput> {
    let plan = plan(net, x1, x2, options)?;
    let total = plan.jobs.len();
    if total == 1 {
        // One tile covering both sides is already the kernel, in its final layout.
        let tile = compute_tile(net, x1, x2, &plan, plan.jobs[0])?;
        progress(1, 1);
        return Ok(KernelOutput {
            kernel: HostArray::new(plan.shape(), tile.data),
            method: plan.method,
            tile_rows: plan.tile_rows,
            tiles: 1,
        });
    }
    let mut out = vec![0.0; plan.n1 * plan.n2 * plan.per_pair()];
    let compute = |&job: &(usize, usize)| compute_tile(net, x1, x2, &plan, job);
    // Tiles run `parallel_tiles` at a time on rayon's pool (each tile's own GEMMs use the
    // same pool); results are placed and reported in order.
    let mut done = 0;
    for chunk in plan.jobs.chunks(plan.parallel_tiles) {
        let tiles: Vec<HostArray> = if chunk.len() == 1 {
            vec![compute(&chunk[0])?]
        } else {
            chunk.par_iter().map(compute).collect::<Result<_>>()?
        };
        for (&job, tile) in chunk.iter().zip(tiles) {
            place_tile(&mut out, &plan, job, &tile);
            done += 1;
            progress(done, total);
        }
    }
    Ok(KernelOutput {
        kernel: HostArray::new(plan.shape(), out),
        method: plan.method,
        tile_rows: plan.tile_rows,
        tiles: total,
    })
}
