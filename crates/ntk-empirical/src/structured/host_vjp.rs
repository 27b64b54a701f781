//! Backward-pass steps on host buffers (CPU backends), where burn's generic kernels are
//! slow for the structured method's `N·K`-row cotangent batches:
//!
//! - [`conv_input_vjp`]: the input VJP of a stride-1 conv2d, the hot step on conv nets
//!   (every conv but the first sends `N·K` cotangent images back);
//! - [`times_per_sample`]: an elementwise product broadcast over the `K` seeds (an
//!   activation's VJP), one pass instead of burn's reshape copy plus broadcast;
//! - [`spread_over_pixels`]: the VJP of global average pooling, written out (reading
//!   burn's broadcast view back is slower than filling the array).
//!
//! ## The conv VJP
//!
//! For stride 1 the VJP is a correlation of the cotangent `g`, zero-padded by
//! `(k − 1 − pad)` on each side, with the kernel flipped in space and transposed in
//! channels: `gx[ci, y, x] = Σ_{co, a, b} W'[ci, co, a, b] · ĝ[co, y + a, x + b]`,
//! `W'[ci, co, a, b] = s · W[co, ci, kh−1−a, kw−1−b]`.
//!
//! Layout trick (no im2col): the padded cotangents are stored channel-major,
//! `ĝ[co][n][Hp·Wp]`, one row of `N·K·Hp·Wp` numbers per channel. On the flattened padded
//! grid the input of output position `t = y·Wp + x` for offset `(a, b)` is at
//! `t + a·Wp + b`, so for each offset the whole batch is ONE strided matrix product
//! `out[ci, j] += W'_{ab}[ci, co] · ĝ[co, j + a·Wp + b]` over columns `j` (positions with
//! `x ≥ W` or `y ≥ H` are computed and dropped: they read other in-buffer values, which
//! never reach a kept position).
//! Columns are processed in cache-sized chunks of whole samples, all `kh·kw` products
//! accumulating into the same chunk, chunks in parallel (rayon).

use super::host_gram::host_vec;
use burn::tensor::{DType, Element, Tensor, TensorData};
use ntk_nets::layers::Conv2d;
use rayon::prelude::*;

/// Columns (padded positions) per chunk: the chunk's output, `C_in × cols`, stays in cache
/// while the `kh·kw` products accumulate into it.
const CHUNK_COLUMNS: usize = 4096;

/// Whether [`conv_input_vjp`] handles this layer: stride 1 and padding smaller than the
/// kernel on every side.
pub fn supports(layer: &Conv2d, kernel: [usize; 2]) -> bool {
    let [(top, bottom), (left, right)] = layer.padding;
    layer.stride == [1, 1]
        && top < kernel[0]
        && bottom < kernel[0]
        && left < kernel[1]
        && right < kernel[1]
}

/// The input VJP of a stride-1 conv (see the module docs), `[N·K, C_out, H', W']` →
/// `[N·K, C_in, h, w]`, in the cotangent's dtype (f32, else f64).
pub fn conv_input_vjp(layer: &Conv2d, g: Tensor<4>, h: usize, w: usize) -> Tensor<4> {
    let device = g.device();
    if g.dtype() == DType::F32 {
        let out = vjp::<f32>(layer, g, h, w);
        Tensor::from_data(out, (&device, DType::F32))
    } else {
        let out = vjp::<f64>(layer, g, h, w);
        Tensor::from_data(out, (&device, DType::F64))
    }
}

trait Scalar: Element + Copy + Send + Sync + 'static + std::ops::Mul<Output = Self> {
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(v: f64) -> Self;
}

impl Scalar for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Scalar for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(v: f64) -> Self {
        v
    }
}

fn vjp<T: Scalar>(layer: &Conv2d, g: Tensor<4>, h: usize, w: usize) -> TensorData {
    let weight = layer.weight.val();
    let [co, ci, kh, kw] = weight.dims();
    let [nk, gco, ho, wo] = g.dims();
    let [(top, bottom), (left, right)] = layer.padding;
    assert!(
        supports(layer, [kh, kw])
            && gco == co
            && ho + kh == h + top + bottom + 1
            && wo + kw == w + left + right + 1,
        "conv VJP on the host: stride 1, padding below the kernel, matching shapes"
    );
    if co == 0 || ci == 0 || nk == 0 || h == 0 || w == 0 {
        return TensorData::new(vec![T::ZERO; nk * ci * h * w], [nk, ci, h, w]);
    }
    // Padding of the cotangent in the correlation form.
    let (pt, pl) = (kh - 1 - top, kw - 1 - left);
    let (hp, wp) = (h + kh - 1, w + kw - 1);
    let plane = hp * wp;
    let columns = nk * plane;
    // Reads of dropped positions run past the last plane by at most this much.
    let slack = (kh - 1) * wp + (kw - 1);
    let row_len = columns + slack;

    let scale = layer.weight_scale;
    let wv = host_vec::<f64, 4>(weight);
    // w_off[(a·kw + b)][ci][co] = s · W[co, ci, kh−1−a, kw−1−b].
    let mut w_off = vec![T::ZERO; kh * kw * ci * co];
    for a in 0..kh {
        for b in 0..kw {
            for i in 0..ci {
                for o in 0..co {
                    let v = wv[((o * ci + i) * kh + (kh - 1 - a)) * kw + (kw - 1 - b)];
                    w_off[((a * kw + b) * ci + i) * co + o] = T::from_f64(scale * v);
                }
            }
        }
    }

    let gv = host_vec::<T, 4>(g);
    // ĝ[co][n][(y + pt)·wp + x + pl] = g[n, co, y, x].
    let mut padded = vec![T::ZERO; co * row_len];
    padded
        .par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(o, row)| {
            for n in 0..nk {
                let src = &gv[(n * co + o) * ho * wo..(n * co + o + 1) * ho * wo];
                let dst = &mut row[n * plane..(n + 1) * plane];
                for y in 0..ho {
                    let d0 = (y + pt) * wp + pl;
                    dst[d0..d0 + wo].copy_from_slice(&src[y * wo..(y + 1) * wo]);
                }
            }
        });

    // Output [nk, ci, h, w], in chunks of whole samples.
    let samples_per_chunk = (CHUNK_COLUMNS / plane).max(1);
    let mut out = vec![T::ZERO; nk * ci * h * w];
    let threads = rayon::current_num_threads().max(1);
    out.par_chunks_mut(samples_per_chunk * ci * h * w)
        .enumerate()
        .with_max_len(1)
        .for_each(|(chunk, out_chunk)| {
            let n0 = chunk * samples_per_chunk;
            let ns = out_chunk.len() / (ci * h * w);
            let cols = ns * plane;
            let mut acc = vec![T::ZERO; ci * cols];
            for a in 0..kh {
                for b in 0..kw {
                    let lhs = &w_off[(a * kw + b) * ci * co..(a * kw + b + 1) * ci * co];
                    let shift = n0 * plane + a * wp + b;
                    // SAFETY: acc is ci × cols (row stride cols); lhs is ci × co (row
                    // stride co); the rhs is co × cols with row stride row_len starting at
                    // `shift`, whose last read, (co−1)·row_len + shift + cols − 1, is below
                    // co·row_len because shift + cols ≤ columns + slack.
                    unsafe {
                        gemm::gemm(
                            ci,
                            cols,
                            co,
                            acc.as_mut_ptr(),
                            1,
                            cols as isize,
                            true,
                            lhs.as_ptr(),
                            1,
                            co as isize,
                            padded.as_ptr().add(shift),
                            1,
                            row_len as isize,
                            T::ONE,
                            T::ONE,
                            false,
                            false,
                            false,
                            if threads > 1 && nk <= samples_per_chunk {
                                gemm::Parallelism::Rayon(0)
                            } else {
                                gemm::Parallelism::None
                            },
                        );
                    }
                }
            }
            // Keep the valid positions: out[n, i, y, x] = acc[i, (n − n0)·plane + y·wp + x].
            for s in 0..ns {
                for i in 0..ci {
                    let src = &acc[i * cols + s * plane..];
                    let dst = &mut out_chunk[(s * ci + i) * h * w..(s * ci + i + 1) * h * w];
                    for y in 0..h {
                        dst[y * w..(y + 1) * w].copy_from_slice(&src[y * wp..y * wp + w]);
                    }
                }
            }
        });
    TensorData::new(out, [nk, ci, h, w])
}

/// `g[n·K + k, ...] · d[n, ...]` for image cotangents, `[N·K, C, H, W]` by `[N, C, H, W]`,
/// in `g`'s dtype (f32, else f64).
pub fn times_per_sample(g: Tensor<4>, d: Tensor<4>, k: usize) -> Tensor<4> {
    let device = g.device();
    if g.dtype() == DType::F32 {
        Tensor::from_data(product::<f32>(g, d, k), (&device, DType::F32))
    } else {
        Tensor::from_data(product::<f64>(g, d, k), (&device, DType::F64))
    }
}

fn product<T: Scalar>(g: Tensor<4>, d: Tensor<4>, k: usize) -> TensorData {
    let [nk, c, h, w] = g.dims();
    let per = c * h * w;
    let mut gv = host_vec::<T, 4>(g);
    let dv = host_vec::<T, 4>(d);
    gv.par_chunks_mut(k * per)
        .zip(dv.par_chunks(per))
        .for_each(|(rows, factor)| {
            for row in rows.chunks_exact_mut(per) {
                for (v, f) in row.iter_mut().zip(factor) {
                    *v = *v * *f;
                }
            }
        });
    TensorData::new(gv, [nk, c, h, w])
}

/// The VJP of global average pooling: `g[r, c] / (h·w)` at every pixel, `[R, C]` →
/// `[R, C, h, w]`, in `g`'s dtype (f32, else f64).
pub fn spread_over_pixels(g: Tensor<2>, h: usize, w: usize) -> Tensor<4> {
    let device = g.device();
    if g.dtype() == DType::F32 {
        Tensor::from_data(spread::<f32>(g, h, w), (&device, DType::F32))
    } else {
        Tensor::from_data(spread::<f64>(g, h, w), (&device, DType::F64))
    }
}

fn spread<T: Scalar>(g: Tensor<2>, h: usize, w: usize) -> TensorData {
    let [r, c] = g.dims();
    let inv = T::from_f64(1.0 / (h * w) as f64);
    let gv = host_vec::<T, 2>(g);
    let mut out = vec![T::ZERO; r * c * h * w];
    out.par_chunks_mut(h * w)
        .zip(gv.par_iter())
        .for_each(|(pixels, &v)| pixels.fill(v * inv));
    TensorData::new(out, [r, c, h, w])
}
