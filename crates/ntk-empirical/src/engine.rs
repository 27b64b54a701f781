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

/// Options of [`empirical_kernel`].
#[derive(Debug, Clone)]
pub struct EmpiricalOptions {
    pub method: Method,
    pub kind: KernelKind,
    /// Contraction of conv2d layers in the structured method.
    pub conv: ConvStrategy,
    /// Bound on the working memory of one tile, in bytes (the output array is extra).
    pub max_memory: u64,
    /// Force a tile size (rows of x1 and of x2 per tile); otherwise from `max_memory`.
    pub tile_rows: Option<usize>,
}

impl Default for EmpiricalOptions {
    fn default() -> Self {
        EmpiricalOptions {
            method: Method::Auto,
            kind: KernelKind::Full,
            conv: ConvStrategy::Auto,
            max_memory: 2 << 30,
            tile_rows: None,
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
    conv: ConvStrategy,
) -> Result<HostArray> {
    let o = net.n_outputs();
    let n1 = x1.len();
    let n2 = x2.map_or(n1, |x| x.len());
    let device = net.device();
    let t: Tensor<4> = if kind == KernelKind::Nngp {
        let f1 = net.forward(net.input(x1, &device)?);
        let f2 = match x2 {
            Some(x2) => net.forward(net.input(x2, &device)?),
            None => f1.clone(),
        };
        f1.matmul(f2.transpose())
            .div_scalar(o as f64)
            .unsqueeze_dims::<4>(&[2, 3])
    } else {
        let acc = match method {
            Method::Structured | Method::Auto => structured::kernel(
                net,
                net.input(x1, &device)?,
                x2.map(|x| net.input(x, &device)).transpose()?,
                kind,
                StructuredOptions { conv },
            ),
            Method::Jacobian => jacobian_on_network(net, x1, x2, kind)?,
            Method::NtkVp => ntk_vp::kernel(net, x1, x2, kind)?,
        };
        structured::finish(acc, kind, o)
    };
    let host = to_host(t);
    if let Some((i, v)) = host.first_non_finite() {
        return Err(EmpiricalError::NonFinite {
            place: format!(
                "the {} kernel ({} method), flat index {i} = {v}; the network overflows on these inputs",
                kind.name(),
                method.name()
            ),
        });
    }
    Ok(HostArray::new(vec![n1, n2, kind.per_pair(o)], host.data))
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
    let kind = options.kind;
    let o = net.n_outputs();
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
    let tile_rows = match options.tile_rows {
        Some(0) => return Err(option_err("tile_rows", "must be positive")),
        Some(t) => t,
        None => plan_tile_rows(net, n1.max(n2), kind, method, options.max_memory)?,
    };
    let pp = kind.per_pair(o);
    let blocks = |n: usize| -> Vec<(usize, usize)> {
        (0..n.div_ceil(tile_rows))
            .map(|b| (b * tile_rows, tile_rows.min(n - b * tile_rows)))
            .collect()
    };
    let (b1, b2) = (blocks(n1), blocks(n2));
    let mut jobs = Vec::new();
    for i in 0..b1.len() {
        for j in 0..b2.len() {
            if x2.is_none() && j < i {
                continue;
            }
            jobs.push((i, j));
        }
    }
    let mut out = vec![0.0; n1 * n2 * pp];
    let total = jobs.len();
    for (done, (i, j)) in jobs.into_iter().enumerate() {
        let (s1, l1) = b1[i];
        let (s2, l2) = b2[j];
        let a = x1.rows(s1, l1);
        let tile = match x2 {
            Some(x2) => tile_kernel(net, &a, Some(&x2.rows(s2, l2)), kind, method, options.conv)?,
            None if i == j => tile_kernel(net, &a, None, kind, method, options.conv)?,
            None => tile_kernel(net, &a, Some(&x1.rows(s2, l2)), kind, method, options.conv)?,
        };
        for r in 0..l1 {
            for c in 0..l2 {
                let src = &tile.data[(r * l2 + c) * pp..(r * l2 + c + 1) * pp];
                out[((s1 + r) * n2 + s2 + c) * pp..][..pp].copy_from_slice(src);
                if x2.is_none() && i != j {
                    // Θ(x_b, x_a)[o, o'] = Θ(x_a, x_b)[o', o]
                    let dst = &mut out[((s2 + c) * n2 + s1 + r) * pp..][..pp];
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
            }
        }
        progress(done + 1, total);
    }
    Ok(KernelOutput {
        kernel: HostArray::new(kind.shape(n1, n2, o), out),
        method,
        tile_rows,
        tiles: total,
    })
}
