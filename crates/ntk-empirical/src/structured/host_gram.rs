//! The full kernel summed on the host: the contraction phase of the structured method on
//! CPU backends, written against the `gemm` crate (the GEMM that burn-flex itself calls)
//! so that three things burn's tensor ops cannot express are possible:
//!
//! 1. **Fusion.** A layer adds `c[n1, n2] · Σ_f u1[n1, k, f] u2[n2, k', f]` to the kernel.
//!    On tensors that is a Gram, a broadcast product and a sum, each a full pass over an
//!    `[N1, K, N2, K]` temporary. Here the Gram of a block of rows is written to a small
//!    scratch and added, times the coefficient, in the same pass.
//! 2. **Symmetry.** With `x2 = x1` the kernel is symmetric:
//!    `Θ[n1, k, n2, k'] = Θ[n2, k', n1, k]`. Rows are cut into blocks of samples; block
//!    `[a, b)` is contracted against the samples after it, and each half of it against the
//!    diagonal square from its own start, which with `B` blocks does
//!    `(B(B−1)/2 + 3B/4) / B²` of the work (9/16 for 4 blocks); [`FullGram::into_host`]
//!    mirrors the rest.
//! 3. **The output layer.** Its cotangents are the one-hot seeds, so its Gram is the
//!    identity in `(k, k')` and is added without a GEMM ([`FullGram::add_identity`]).
//!
//! The values are the same sums as the tensor path (only the order of floating-point
//! additions differs); the cross-method tests compare both against the Jacobian method.

use burn::tensor::{DType, Element, Tensor};
use ntk_nets::HostArray;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

static CONTRACTION_FLOPS: AtomicU64 = AtomicU64::new(0);
static CONTRACTION_NANOS: AtomicU64 = AtomicU64::new(0);

/// FLOPs done and seconds spent by host Gram contractions (the full and factored Grams of
/// [`FullGram`]: their GEMMs and fused accumulation, not the copies of tensor inputs)
/// since the last [`reset_contraction_stats`], over all threads. The benchmark divides
/// one by the other to compare the contraction phase with the machine's measured matmul
/// peak.
pub fn contraction_stats() -> (f64, f64) {
    (
        CONTRACTION_FLOPS.load(Ordering::Relaxed) as f64,
        CONTRACTION_NANOS.load(Ordering::Relaxed) as f64 * 1e-9,
    )
}

/// Measured f32 throughput (GFLOP/s) of the `gemm` crate on this machine: the median of
/// five `n×n` by `n×n` products on host buffers, all threads, with the operands in the
/// layouts the contraction uses (left column-major, right row-major).
pub fn host_gemm_gflops(n: usize) -> f64 {
    let a: Vec<f32> = (0..n * n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let mut c = vec![0.0f32; n * n];
    let mut times: Vec<f64> = (0..6)
        .map(|_| {
            let t0 = Instant::now();
            gemm_into(
                &mut c,
                (n, n, n),
                Operand {
                    values: &a,
                    col_stride: n,
                    row_stride: 1,
                },
                Operand::rows(&a, n),
                1.0,
                true,
            );
            t0.elapsed().as_secs_f64()
        })
        .collect();
    times.remove(0); // warm-up
    times.sort_by(|x, y| x.total_cmp(y));
    2.0 * (n as f64).powi(3) / times[times.len() / 2] / 1e9
}

/// Runs a contraction that returns its FLOPs, adding them and its time to
/// [`contraction_stats`].
fn counted(contraction: impl FnOnce() -> f64) {
    let t0 = Instant::now();
    let flops = contraction();
    CONTRACTION_FLOPS.fetch_add(flops as u64, Ordering::Relaxed);
    CONTRACTION_NANOS.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// Zeroes [`contraction_stats`].
pub fn reset_contraction_stats() {
    CONTRACTION_FLOPS.store(0, Ordering::Relaxed);
    CONTRACTION_NANOS.store(0, Ordering::Relaxed);
}

/// Rows (`samples · K`) of one GEMM block: a quarter of all rows, within these bounds —
/// at least 4 blocks to share among the threads and to skip most of the lower triangle
/// in the symmetric schedule, at most 320 rows (measured on the perf cases: 4 blocks of
/// 320 rows beat 8 of 160 for 1280 rows, 4 of 160 beat 2 of 320 for 640 rows).
const BLOCK_ROWS: (usize, usize) = (160, 320);

/// Parts a diagonal block is cut into (see [`pieces`]): more parts skip more of the lower
/// triangle, larger ones run closer to the GEMM peak (measured on the perf MLPs: 4 parts
/// of 80 rows are not faster than 2).
const DIAGONAL_PARTS: usize = 2;

/// How the rows of the accumulator are cut: blocks of `samples` samples (the unit of
/// parallel work), and with symmetry each diagonal block into parts of `part` samples.
#[derive(Debug, Clone, Copy)]
struct Blocking {
    samples: usize,
    part: usize,
}

/// GEMMs with fewer multiply-adds than this run on one thread.
const PARALLEL_MACS: usize = 1 << 21;

/// A floating-point type the host path computes in.
pub(crate) trait Real:
    Element
    + Copy
    + Send
    + Sync
    + PartialOrd
    + 'static
    + std::ops::AddAssign
    + std::ops::Mul<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// The accumulator buffer of this type.
    fn buffer(b: &mut Buffer) -> &mut Vec<Self>;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn buffer(b: &mut Buffer) -> &mut Vec<Self> {
        match b {
            Buffer::F32(v) => v,
            Buffer::F64(_) => panic!("an f64 kernel summed from f32 values"),
        }
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn buffer(b: &mut Buffer) -> &mut Vec<Self> {
        match b {
            Buffer::F64(v) => v,
            Buffer::F32(_) => panic!("an f32 kernel summed from f64 values"),
        }
    }
}

/// A tensor's values on the host, converted to `T`, row-major.
pub(crate) fn host_vec<T: Element, const D: usize>(t: Tensor<D>) -> Vec<T> {
    t.into_data()
        .convert::<T>()
        .try_into_vec::<T>()
        .expect("converted tensor data has the requested type")
}

/// The per-pair coefficient of a layer's contribution: `c[n1, n2]`, a row-major
/// `[N1, N2]` host matrix, or one number for every pair.
#[derive(Debug, Clone)]
pub enum PairCoeff {
    Scalar(f64),
    Pairs(Vec<f64>),
}

impl PairCoeff {
    /// Reads a `[N1, N2]` coefficient tensor to the host.
    pub fn from_tensor(t: Tensor<2>) -> PairCoeff {
        PairCoeff::Pairs(host_vec::<f64, 2>(t))
    }

    fn at(&self, a: usize, b: usize, n2: usize) -> f64 {
        match self {
            PairCoeff::Scalar(c) => *c,
            PairCoeff::Pairs(c) => c[a * n2 + b],
        }
    }

    fn at_as<T: Real>(&self, a: usize, b: usize, n2: usize) -> T {
        T::from_f64(self.at(a, b, n2))
    }

    fn row<T: Real>(&self, n1: usize, n2: usize) -> Vec<T> {
        match self {
            PairCoeff::Scalar(c) => vec![T::from_f64(*c); n2],
            PairCoeff::Pairs(c) => c[n1 * n2..(n1 + 1) * n2]
                .iter()
                .map(|&v| T::from_f64(v))
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Buffer {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// A full kernel being summed over layers, on the host, in `[N1, K, N2, K]` order.
///
/// With `symmetric` (`x2 = x1`) only the entries whose `n2` is at or after the start of
/// `n1`'s row block are kept; [`FullGram::into_host`] fills in the rest by symmetry.
#[derive(Debug, Clone)]
pub struct FullGram {
    n1: usize,
    n2: usize,
    k: usize,
    symmetric: bool,
    data: Buffer,
}

impl FullGram {
    /// A zero kernel computed in `dtype` (f32 stays f32; anything else is f64).
    pub fn zeros(n1: usize, n2: usize, k: usize, symmetric: bool, dtype: DType) -> FullGram {
        assert!(!symmetric || n1 == n2, "a symmetric kernel is square");
        assert!(k > 0, "at least one output");
        let len = n1 * k * n2 * k;
        let data = if dtype == DType::F32 {
            Buffer::F32(vec![0.0; len])
        } else {
            Buffer::F64(vec![0.0; len])
        };
        FullGram {
            n1,
            n2,
            k,
            symmetric,
            data,
        }
    }

    /// Samples per GEMM row block, and per part of a diagonal block.
    fn blocking(&self) -> Blocking {
        let rows = (self.n1 * self.k / 4).clamp(BLOCK_ROWS.0, BLOCK_ROWS.1);
        let samples = (rows / self.k).max(1);
        Blocking {
            samples,
            part: samples.div_ceil(DIAGONAL_PARTS).max(1),
        }
    }

    /// `Θ[n1, k, n2, k'] += c[n1, n2] · Σ_f u1[n1, k, f] u2[n2, k', f]`.
    ///
    /// # Shapes
    /// - `u1: [N1, K, F]`; `u2: [N2, K, F]`, `None` when the kernel is symmetric (`u2 = u1`)
    pub fn add_gram(&mut self, u1: Tensor<3>, u2: Option<Tensor<3>>, coeff: &PairCoeff) {
        let [n1, k, f] = u1.dims();
        assert_eq!((n1, k), (self.n1, self.k), "gram rows match the kernel");
        assert_eq!(
            u2.is_none(),
            self.symmetric,
            "u2 = None exactly when symmetric"
        );
        match self.data {
            Buffer::F32(_) => {
                let b = u2.map(host_vec::<f32, 3>);
                self.add_gram_host(&host_vec::<f32, 3>(u1), b.as_deref(), f, coeff);
            }
            Buffer::F64(_) => {
                let b = u2.map(host_vec::<f64, 3>);
                self.add_gram_host(&host_vec::<f64, 3>(u1), b.as_deref(), f, coeff);
            }
        }
    }

    /// `Θ[n1, k, n2, k'] += c[n1, n2] · Σ_f d1[n1, f] d2[n2, f] v[k, f] v[k', f]`: the
    /// Gram of cotangents that factor as `g[n, k, f] = d[n, f] v[k, f]` (a layer followed
    /// only by elementwise activations and the dense readout: `v` the readout's scaled
    /// weight rows, `d` the product of the activations' derivatives). Contracted against
    /// the `K(K+1)/2` products `v[k] ⊙ v[k']` (`k ≤ k'`; the term is symmetric in `k, k'`)
    /// and, for each row sample, only over the features where `d1[n1] ≠ 0`, it costs
    /// `(K+1)/(2K) · |supp d1[n1]| / F` of [`FullGram::add_gram`]'s GEMM (about a quarter
    /// for `K = 10` after a ReLU).
    ///
    /// # Shapes
    /// - `d1: [N1, F]`; `d2: [N2, F]`, `None` when the kernel is symmetric; `v: [K, F]`
    pub fn add_factored_gram(
        &mut self,
        d1: Tensor<2>,
        d2: Option<Tensor<2>>,
        v: Tensor<2>,
        coeff: &PairCoeff,
    ) {
        let [n1, f] = d1.dims();
        assert_eq!(n1, self.n1, "rows match the kernel");
        assert_eq!(v.dims(), [self.k, f], "one v row per output");
        assert_eq!(
            d2.is_none(),
            self.symmetric,
            "d2 = None exactly when symmetric"
        );
        fn run<T: Real>(
            g: &mut FullGram,
            d1: Tensor<2>,
            d2: Option<Tensor<2>>,
            v: Tensor<2>,
            coeff: &PairCoeff,
        ) {
            let [n1, f] = d1.dims();
            let (a, v) = (host_vec::<T, 2>(d1), host_vec::<T, 2>(v));
            let at = transpose(&a, n1, f);
            let bt = d2.map(|d| {
                let n2 = d.dims()[0];
                transpose(&host_vec::<T, 2>(d), n2, f)
            });
            g.add_factored_gram_host(&a, bt.as_deref(), &at, &v, f, coeff);
        }
        match self.data {
            Buffer::F32(_) => run::<f32>(self, d1, d2, v, coeff),
            Buffer::F64(_) => run::<f64>(self, d1, d2, v, coeff),
        }
    }

    /// [`FullGram::add_gram`] on host values: `u1` row-major `[N1, K, f]`, `u2` `[N2, K, f]`
    /// (`None` when symmetric). `T` must be the kernel's own type.
    pub(crate) fn add_gram_host<T: Real>(
        &mut self,
        u1: &[T],
        u2: Option<&[T]>,
        f: usize,
        coeff: &PairCoeff,
    ) {
        let u1t = transpose(u1, u1.len() / f.max(1), f);
        let u2t = u2.map(|u| transpose(u, u.len() / f.max(1), f));
        self.add_gram_feature_major(&u1t, u2t.as_deref(), f, coeff);
    }

    /// [`FullGram::add_gram`] on feature-major host values: `u1t` `[f, N1·K]` (row-major:
    /// feature `j` of row `n·K + k` at `j·N1·K + n·K + k`), `u2t` `[f, N2·K]` (`None` when
    /// symmetric). `T` must be the kernel's own type.
    pub(crate) fn add_gram_feature_major<T: Real>(
        &mut self,
        u1t: &[T],
        u2t: Option<&[T]>,
        f: usize,
        coeff: &PairCoeff,
    ) {
        let (n1, n2, k, symmetric, bs) =
            (self.n1, self.n2, self.k, self.symmetric, self.blocking());
        assert_eq!(u1t.len(), n1 * k * f, "u1t is [f, N1·K]");
        assert!(
            u2t.is_none_or(|u| u.len() == n2 * k * f),
            "u2t is [f, N2·K]"
        );
        assert_eq!(
            u2t.is_none(),
            symmetric,
            "u2t = None exactly when symmetric"
        );
        let acc = T::buffer(&mut self.data);
        counted(|| gram_into(acc, u1t, u2t, n1, n2, k, f, bs, symmetric, coeff));
    }

    /// [`FullGram::add_factored_gram`] on host values: `d1` row-major `[N1, f]` and its
    /// feature-major transpose `d1t` `[f, N1]`, `d2t` `[f, N2]` feature-major (`None` when
    /// symmetric), `v` `[K, f]`. `T` must be the kernel's own type.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_factored_gram_host<T: Real>(
        &mut self,
        d1: &[T],
        d2t: Option<&[T]>,
        d1t: &[T],
        v: &[T],
        f: usize,
        coeff: &PairCoeff,
    ) {
        let (n1, n2, k, symmetric, bs) =
            (self.n1, self.n2, self.k, self.symmetric, self.blocking());
        assert_eq!(d1.len(), n1 * f, "d1 is [N1, f]");
        assert_eq!(d1t.len(), n1 * f, "d1t is [f, N1]");
        assert!(d2t.is_none_or(|d| d.len() == n2 * f), "d2t is [f, N2]");
        assert_eq!(v.len(), k * f, "v is [K, f]");
        assert_eq!(
            d2t.is_none(),
            symmetric,
            "d2t = None exactly when symmetric"
        );
        let acc = T::buffer(&mut self.data);
        let cols_t = d2t.unwrap_or(d1t);
        counted(|| factored_into(acc, d1, cols_t, v, (n1, n2, k, f), bs, symmetric, coeff));
    }

    /// `Θ[n1, k, n2, k] += c[n1, n2]` for every `k`: the contribution of a layer whose
    /// cotangents are the one-hot output seeds (Gram = identity in `(k, k')`).
    pub fn add_identity(&mut self, coeff: &PairCoeff) {
        let (n2, k) = (self.n2, self.k);
        match &mut self.data {
            Buffer::F32(acc) => identity_into(acc, n2, k, coeff),
            Buffer::F64(acc) => identity_into(acc, n2, k, coeff),
        }
    }

    /// Adds a kernel computed elsewhere.
    ///
    /// # Shapes
    /// - `t: [N1, K, N2, K]`
    pub fn add_tensor(&mut self, t: Tensor<4>) {
        match &mut self.data {
            Buffer::F32(acc) => add_values(acc, &host_vec::<f32, 4>(t)),
            Buffer::F64(acc) => add_values(acc, &host_vec::<f64, 4>(t)),
        }
    }

    /// Multiplies every entry by `c`.
    pub fn scale(&mut self, c: f64) {
        match &mut self.data {
            Buffer::F32(acc) => acc.par_iter_mut().for_each(|v| *v = *v * c as f32),
            Buffer::F64(acc) => acc.par_iter_mut().for_each(|v| *v *= c),
        }
    }

    /// The kernel in neural-tangents' layout `[N1, N2, K, K]`, in f64, the lower
    /// triangle mirrored from the upper one when symmetric.
    pub fn into_host(self) -> HostArray {
        let values = match &self.data {
            Buffer::F32(acc) => self.permuted(acc),
            Buffer::F64(acc) => self.permuted(acc),
        };
        HostArray::new(vec![self.n1, self.n2, self.k, self.k], values)
    }

    fn permuted<T: Real>(&self, acc: &[T]) -> Vec<f64> {
        let (n2, k, bs) = (self.n2, self.k, self.blocking());
        let row = n2 * k;
        let len = self.n1 * n2 * k * k;
        // Every entry is written below, so the output is not zeroed first (a full pass
        // over the largest buffer of the run).
        let mut out: Vec<f64> = Vec::with_capacity(len);
        if len == 0 {
            return out;
        }
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(n2 * k * k)
            .enumerate()
            .for_each(|(a, out_a)| {
                let first = computed_from(bs, self.n1, a);
                for b in 0..n2 {
                    // Entries before `first` were not computed: read the mirror.
                    let mirrored = self.symmetric && b < first;
                    for p in 0..k {
                        let dst = &mut out_a[(b * k + p) * k..(b * k + p + 1) * k];
                        if mirrored {
                            for (q, d) in dst.iter_mut().enumerate() {
                                d.write(acc[(b * k + q) * row + a * k + p].to_f64());
                            }
                        } else {
                            let src = &acc[(a * k + p) * row + b * k..][..k];
                            for (d, &v) in dst.iter_mut().zip(src) {
                                d.write(v.to_f64());
                            }
                        }
                    }
                }
            });
        // SAFETY: the loop above wrote all `len` entries (each chunk of n2·k·k values is
        // covered by b < n2, p < k, q < k).
        unsafe { out.set_len(len) };
        out
    }
}

fn add_values<T: Real>(acc: &mut [T], v: &[T]) {
    assert_eq!(acc.len(), v.len(), "kernel sizes match");
    acc.par_iter_mut().zip(v).for_each(|(a, &b)| *a += b);
}

fn identity_into<T: Real>(acc: &mut [T], n2: usize, k: usize, coeff: &PairCoeff) {
    let row = n2 * k;
    if acc.is_empty() {
        return;
    }
    // The K rows of one sample share its coefficients.
    acc.par_chunks_mut(k * row)
        .enumerate()
        .for_each(|(a, acc_rows)| {
            let c = coeff.row::<T>(a, n2);
            for (p, acc_row) in acc_rows.chunks_mut(row).enumerate() {
                for (b, &cb) in c.iter().enumerate() {
                    acc_row[b * k + p] += cb;
                }
            }
        });
}

/// A matrix operand of [`gemm_into`]: its values and the strides (in elements) between
/// its columns and between its rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operand<'a, T> {
    pub values: &'a [T],
    pub col_stride: usize,
    pub row_stride: usize,
}

impl<'a, T> Operand<'a, T> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(values: &'a [T], cols: usize) -> Self {
        Operand {
            values,
            col_stride: 1,
            row_stride: cols,
        }
    }

    /// Whether an `m × n` matrix read with these strides stays inside `values`.
    fn holds(&self, m: usize, n: usize) -> bool {
        m == 0
            || n == 0
            || (m - 1) * self.row_stride + (n - 1) * self.col_stride < self.values.len()
    }
}

/// `dst[m, n] = scale · a[m, f] b[f, n]` (`dst` row-major), by the `gemm` crate, on this
/// thread only or (`parallel`) on all of rayon's threads.
pub(crate) fn gemm_into<T: Real>(
    dst: &mut [T],
    (m, n, f): (usize, usize, usize),
    a: Operand<'_, T>,
    b: Operand<'_, T>,
    scale: T,
    parallel: bool,
) {
    assert!(
        dst.len() >= m * n && a.holds(m, f) && b.holds(f, n),
        "operand sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the assert above: dst is m×n with row stride n, and every element of a
    // (m×f) and b (f×n) read at their strides lies inside their slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            f,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.values.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.values.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            T::ZERO,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `src` row-major `[rows, cols]` → row-major `[cols, rows]`, in parallel over bands of
/// output rows (each band reads whole cache lines of `src`).
pub(crate) fn transpose<T: Copy + Default + Send + Sync>(
    src: &[T],
    rows: usize,
    cols: usize,
) -> Vec<T> {
    assert_eq!(src.len(), rows * cols, "transpose: [rows, cols]");
    const BAND: usize = 16;
    let mut out = vec![T::default(); src.len()];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(BAND * rows)
        .enumerate()
        .for_each(|(band, dst)| {
            let j0 = band * BAND;
            let width = dst.len() / rows;
            for r in 0..rows {
                let from = &src[r * cols + j0..r * cols + j0 + width];
                for (jj, &v) in from.iter().enumerate() {
                    dst[jj * rows + r] = v;
                }
            }
        });
    out
}

/// The first sample column computed for row sample `a` of a symmetric kernel: the start
/// of `a`'s part of its diagonal block. Each block `[s, e)` is contracted as rectangles
/// ([`pieces`]): its rows against the columns after it, and each of its `P` parts against
/// the diagonal square from the part's own start, so most of the lower triangle of each
/// diagonal block is skipped too (`(P + 1) / 2P` of the square is computed; with `B`
/// blocks `(B·(B−1)/2 + B(P+1)/2P) / B²` of the work, 9/16 for `B = 4, P = 2`).
fn computed_from(bl: Blocking, n1: usize, a: usize) -> usize {
    let start = a / bl.samples * bl.samples;
    (start + (a - start) / bl.part * bl.part).min(n1)
}

/// The rectangles `(rows r0..r1, columns c0..c1)` (sample indices) block `[start, end)`
/// contracts: all columns when not symmetric, else those of [`computed_from`].
fn pieces(
    (start, end): (usize, usize),
    (n1, n2): (usize, usize),
    bl: Blocking,
    symmetric: bool,
) -> Vec<(usize, usize, usize, usize)> {
    if !symmetric {
        return vec![(start, end, 0, n2)];
    }
    let end = end.min(n1);
    let mut out = vec![(start, end, end, n2)];
    let mut p0 = start;
    while p0 < end {
        let p1 = (p0 + bl.part).min(end);
        out.push((p0, p1, p0, end));
        p0 = p1;
    }
    out.retain(|&(r0, r1, c0, c1)| r1 > r0 && c1 > c0);
    out
}

/// Runs `work(start, end, rows, single)` for every row block `[start, end)` of
/// `blocking.samples` samples of the `[N1·K, N2·K]` accumulator, in parallel; `rows` is the
/// block's part of `acc`. Returns the sum of what `work` returns (FLOPs).
///
/// With `symmetric` the blocks' work ([`pieces`]) shrinks along the diagonal. They are
/// handed out from a queue, largest first (longest-processing-time scheduling: each
/// thread takes the next block when it is free), which balances the threads better than
/// rayon's halving of a list. Measured on the perf MLPs: parallel single-threaded blocks
/// 19.5–21 ms (perf-mlp) and 9.6–9.8 ms (perf-mlp-deep), against 24–25 and 13–14 ms for
/// the same pieces one after the other with multi-threaded GEMMs. `work` learns from `single` whether it is the only block
/// (then its GEMM should use all threads itself).
fn for_each_block<T: Real>(
    acc: &mut [T],
    (n1, n2, k): (usize, usize, usize),
    blocking: Blocking,
    symmetric: bool,
    work: impl Fn(usize, usize, &mut [T], bool) -> f64 + Sync,
) -> f64 {
    if acc.is_empty() {
        return 0.0;
    }
    let row = n2 * k;
    let mut blocks: Vec<(usize, usize, &mut [T])> = acc
        .chunks_mut(blocking.samples * k * row)
        .enumerate()
        .map(|(b, chunk)| {
            let start = b * blocking.samples;
            let end = (start + blocking.samples).min(n1);
            let size: usize = pieces((start, end), (n1, n2), blocking, symmetric)
                .iter()
                .map(|&(r0, r1, c0, c1)| (r1 - r0) * (c1 - c0))
                .sum();
            (size, start, chunk)
        })
        .collect();
    let single = blocks.len() == 1;
    blocks.sort_by(|a, b| b.0.cmp(&a.0));
    let queue: Vec<std::sync::Mutex<Option<(usize, &mut [T])>>> = blocks
        .into_iter()
        .map(|(_, start, chunk)| std::sync::Mutex::new(Some((start, chunk))))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = rayon::current_num_threads().min(queue.len()).max(1);
    (0..threads)
        .into_par_iter()
        .with_max_len(1)
        .map(|_| {
            let mut flops = 0.0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(slot) = queue.get(i) else { break };
                let (start, rows) = slot
                    .lock()
                    .expect("no panics while holding a block")
                    .take()
                    .expect("each block taken once");
                let end = (start + blocking.samples).min(n1);
                flops += work(start, end, rows, single);
            }
            flops
        })
        .sum()
}

/// The fused, blocked, optionally symmetric Gram (see the module docs); returns the
/// GEMM FLOPs done. One single-threaded GEMM per row block into its own scratch (they run
/// closer to the peak than one multi-threaded GEMM at a time), then the fused add.
#[allow(clippy::too_many_arguments)]
fn gram_into<T: Real>(
    acc: &mut [T],
    u1t: &[T],
    u2t: Option<&[T]>,
    n1: usize,
    n2: usize,
    k: usize,
    f: usize,
    blocking: Blocking,
    symmetric: bool,
    coeff: &PairCoeff,
) -> f64 {
    let u2t = u2t.unwrap_or(u1t);
    let row = n2 * k;
    let profile = crate::profiling();
    for_each_block(
        acc,
        (n1, n2, k),
        blocking,
        symmetric,
        |start, end, acc_block, single| {
            let (mut scratch, mut expanded): (Vec<T>, Vec<T>) = (Vec::new(), Vec::new());
            let mut flops = 0.0;
            for (r0, r1, c0, c1) in pieces((start, end), (n1, n2), blocking, symmetric) {
                let (m, n) = ((r1 - r0) * k, (c1 - c0) * k);
                scratch.clear();
                scratch.resize(m * n, T::ZERO);
                let tg = Instant::now();
                // Both operands feature-major: rows r0·k.. of u1 are columns of u1t (read
                // column-major), columns c0·k.. of u2 are rows of u2t — the layouts the
                // GEMM packs fastest (measured: 20–40% faster than row-major u1 · u2ᵀ).
                gemm_into(
                    &mut scratch,
                    (m, n, f),
                    Operand {
                        values: &u1t[r0 * k..],
                        col_stride: n1 * k,
                        row_stride: 1,
                    },
                    Operand {
                        values: &u2t[c0 * k..],
                        col_stride: 1,
                        row_stride: n2 * k,
                    },
                    T::ONE,
                    single && m * n * f >= PARALLEL_MACS,
                );
                let tg = tg.elapsed().as_secs_f64();
                let ta = Instant::now();
                let rows = &mut acc_block[(r0 - start) * k * row..(r1 - start) * k * row];
                for (a, (acc_rows, g_rows)) in
                    (r0..r1).zip(rows.chunks_mut(k * row).zip(scratch.chunks(k * n)))
                {
                    // The coefficient of every column of this sample's rows: c[a, b] for
                    // the k columns of sample b, so the add below is one contiguous loop.
                    expanded.clear();
                    for b in c0..c1 {
                        let cb = coeff.at_as::<T>(a, b, n2);
                        expanded.extend(std::iter::repeat_n(cb, k));
                    }
                    for (acc_row, g_row) in acc_rows.chunks_mut(row).zip(g_rows.chunks(n)) {
                        let acc_row = &mut acc_row[c0 * k..c1 * k];
                        for ((d, &s), &c) in acc_row.iter_mut().zip(g_row).zip(&expanded) {
                            *d += c * s;
                        }
                    }
                }
                if profile && std::env::var_os("NTK_PROFILE_PIECES").is_some() {
                    eprintln!(
                        "[profile]   rows {r0}..{r1} cols {c0}..{c1}: gemm {m}x{n}x{f} {:.2} ms, fused add {:.2} ms",
                        tg * 1e3,
                        ta.elapsed().as_secs_f64() * 1e3
                    );
                }
                flops += 2.0 * (m * n * f) as f64;
            }
            flops
        },
    )
}

/// The factored Gram (see [`FullGram::add_factored_gram`]); returns the FLOPs done.
///
/// Row sample `a` at a time: `Σ_f d1[a, f] d2[b, f] v[k, f] v[k', f]` only involves the
/// features where `d1[a, f] ≠ 0`, its support `S_a` (about half of them after a ReLU, whose
/// derivative is 0 or 1). So for each `a` one GEMM of `d2[b, S_a]` (`b` over the columns
/// `a` needs) against `d1[a, S_a] · v[k, S_a] v[k', S_a]` (`k ≤ k'`) gives all its
/// `(b, k, k')` terms: `|S_a| / F` of the work of contracting over every feature. Both
/// operands are kept feature-major, so the support selects whole rows (copies, not
/// gathers); for activations without zero derivatives `d2` is used in place.
#[allow(clippy::too_many_arguments)]
fn factored_into<T: Real>(
    acc: &mut [T],
    d1: &[T],
    d2t: &[T],
    v: &[T],
    (n1, n2, k, f): (usize, usize, usize, usize),
    blocking: Blocking,
    symmetric: bool,
    coeff: &PairCoeff,
) -> f64 {
    let row = n2 * k;
    // The output pairs (p, q), p ≤ q, and vv[f][(p, q)] = v[p, f] v[q, f].
    let pq: Vec<(usize, usize)> = (0..k).flat_map(|p| (p..k).map(move |q| (p, q))).collect();
    let kk = pq.len();
    let mut vv = vec![T::ZERO; f * kk];
    for (i, vv_i) in vv.chunks_mut(kk).enumerate() {
        for (o, &(p, q)) in vv_i.iter_mut().zip(&pq) {
            *o = v[p * f + i] * v[q * f + i];
        }
    }
    for_each_block(
        acc,
        (n1, n2, k),
        blocking,
        symmetric,
        |start, end, acc_block, single| {
            let mut flops = 0.0;
            let (mut support, mut weights, mut gathered, mut g) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for a in start..end {
                let c0 = if symmetric {
                    computed_from(blocking, n1, a)
                } else {
                    0
                };
                let cols = n2 - c0;
                let da = &d1[a * f..(a + 1) * f];
                support.clear();
                support.extend((0..f).filter(|&i| da[i] != T::ZERO));
                let s = support.len();
                if s == 0 || cols == 0 {
                    continue;
                }
                // weights[t][(p, q)] = d1[a, i] v[p, i] v[q, i] for the t-th feature i of S_a.
                weights.clear();
                for &i in &support {
                    let w = da[i];
                    weights.extend(vv[i * kk..(i + 1) * kk].iter().map(|&x| w * x));
                }
                // lhs[b, t] = d2[c0 + b, S_a[t]], read at (column stride, row stride).
                let (lhs, lhs_strides): (&[T], _) = if s == f {
                    (&d2t[c0..], (n2, 1))
                } else {
                    gathered.clear();
                    for &i in &support {
                        gathered.extend_from_slice(&d2t[i * n2 + c0..(i + 1) * n2]);
                    }
                    (&gathered, (cols, 1))
                };
                g.clear();
                g.resize(cols * kk, T::ZERO);
                gemm_into(
                    &mut g,
                    (cols, kk, s),
                    Operand {
                        values: lhs,
                        col_stride: lhs_strides.0,
                        row_stride: lhs_strides.1,
                    },
                    Operand::rows(&weights, kk),
                    T::ONE,
                    single && cols * kk * s >= PARALLEL_MACS,
                );
                flops += 2.0 * (cols * kk * s) as f64;
                let base_a = (a - start) * k * row;
                for (b, gb) in (c0..n2).zip(g.chunks(kk)) {
                    let c = coeff.at_as::<T>(a, b, n2);
                    let base = base_a + b * k;
                    for (&(p, q), &val) in pq.iter().zip(gb) {
                        let val = c * val;
                        acc_block[base + p * row + q] += val;
                        if p != q {
                            acc_block[base + q * row + p] += val;
                        }
                    }
                }
            }
            flops
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain triple loop the fused path replaces.
    fn reference(
        u1: &[f64],
        u2: &[f64],
        n1: usize,
        n2: usize,
        k: usize,
        f: usize,
        c: &[f64],
    ) -> Vec<f64> {
        let mut out = vec![0.0; n1 * n2 * k * k];
        for a in 0..n1 {
            for b in 0..n2 {
                for p in 0..k {
                    for q in 0..k {
                        let dot: f64 = (0..f)
                            .map(|i| u1[(a * k + p) * f + i] * u2[(b * k + q) * f + i])
                            .sum();
                        out[((a * n2 + b) * k + p) * k + q] = c[a * n2 + b] * dot;
                    }
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u64) -> Vec<f64> {
        // A small deterministic generator is enough for a layout test.
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
            })
            .collect()
    }

    fn tensor3(v: &[f64], shape: [usize; 3]) -> Tensor<3> {
        let device = burn::tensor::Device::flex();
        Tensor::from_data(
            burn::tensor::TensorData::new(v.to_vec(), shape),
            (&device, DType::F64),
        )
    }

    #[test]
    fn fused_blocked_gram_matches_the_triple_loop_with_and_without_symmetry() {
        // k = 7 → 22 samples per block; n = 50 → three blocks, the last one partial.
        let (n1, n2, k, f) = (50, 31, 7, 5);
        let u1 = values(n1 * k * f, 1);
        let u2 = values(n2 * k * f, 2);
        let c = values(n1 * n2, 3);
        let mut g = FullGram::zeros(n1, n2, k, false, DType::F64);
        g.add_gram(
            tensor3(&u1, [n1, k, f]),
            Some(tensor3(&u2, [n2, k, f])),
            &PairCoeff::Pairs(c.clone()),
        );
        let want = reference(&u1, &u2, n1, n2, k, f, &c);
        let got = g.into_host();
        let err = got
            .data
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-13, "non-symmetric: max error {err}");

        // Symmetric: coefficient symmetric too, as it is for x2 = x1.
        let c0 = values(n1 * n1, 4);
        let mut cs = vec![0.0; n1 * n1];
        for a in 0..n1 {
            for b in 0..n1 {
                cs[a * n1 + b] = c0[a * n1 + b] + c0[b * n1 + a];
            }
        }
        let mut g = FullGram::zeros(n1, n1, k, true, DType::F64);
        g.add_gram(
            tensor3(&u1, [n1, k, f]),
            None,
            &PairCoeff::Pairs(cs.clone()),
        );
        g.add_identity(&PairCoeff::Scalar(0.25));
        let mut want = reference(&u1, &u1, n1, n1, k, f, &cs);
        for a in 0..n1 {
            for b in 0..n1 {
                for p in 0..k {
                    want[((a * n1 + b) * k + p) * k + p] += 0.25;
                }
            }
        }
        let got = g.into_host();
        let err = got
            .data
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-13, "symmetric: max error {err}");
    }

    #[test]
    fn symmetric_pieces_cover_each_needed_pair_once_and_mirror_the_rest() {
        for (n, samples, part) in [(50, 22, 11), (37, 10, 3), (9, 4, 4), (64, 16, 8), (5, 8, 3)] {
            let bl = Blocking { samples, part };
            let mut hits = vec![0u32; n * n];
            for start in (0..n).step_by(samples) {
                let end = (start + samples).min(n);
                for (r0, r1, c0, c1) in pieces((start, end), (n, n), bl, true) {
                    for a in r0..r1 {
                        for b in c0..c1 {
                            hits[a * n + b] += 1;
                        }
                    }
                }
            }
            for a in 0..n {
                let first = computed_from(bl, n, a);
                assert!(
                    first <= a,
                    "the diagonal is computed ({n}, {samples}, {part})"
                );
                for b in 0..n {
                    let want = u32::from(b >= first);
                    assert_eq!(
                        hits[a * n + b],
                        want,
                        "pair ({a}, {b}) of ({n}, {samples}, {part})"
                    );
                    if b < first {
                        // The mirror read by into_host was computed.
                        assert!(a >= computed_from(bl, n, b), "mirror of ({a}, {b})");
                    }
                }
            }
        }
    }

    #[test]
    fn factored_gram_equals_the_gram_of_the_factored_cotangents() {
        let (n1, n2, k, f) = (50, 31, 7, 5);
        let (mut d1, mut d2, v) = (values(n1 * f, 5), values(n2 * f, 6), values(k * f, 7));
        // Zeros as after a ReLU (the support of each row sample is gathered), including a
        // row with none left and one with all of them.
        for (i, x) in d1.iter_mut().enumerate() {
            if *x < 0.0 || i / f == 3 {
                *x = 0.0;
            }
        }
        d1[7 * f..8 * f].fill(0.75);
        for x in d2.iter_mut().step_by(3) {
            *x = 0.0;
        }
        let expand = |d: &[f64], n: usize| -> Vec<f64> {
            (0..n * k * f)
                .map(|i| {
                    let (s, rest) = (i / (k * f), i % (k * f));
                    d[s * f + rest % f] * v[(rest / f) * f + rest % f]
                })
                .collect()
        };
        let max_err = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max)
        };
        let tensor2 = |v: &[f64], shape: [usize; 2]| {
            Tensor::<2>::from_data(
                burn::tensor::TensorData::new(v.to_vec(), shape),
                (&burn::tensor::Device::flex(), DType::F64),
            )
        };
        let c = values(n1 * n2, 8);
        let mut g = FullGram::zeros(n1, n2, k, false, DType::F64);
        g.add_factored_gram(
            tensor2(&d1, [n1, f]),
            Some(tensor2(&d2, [n2, f])),
            tensor2(&v, [k, f]),
            &PairCoeff::Pairs(c.clone()),
        );
        let want = reference(&expand(&d1, n1), &expand(&d2, n2), n1, n2, k, f, &c);
        let err = max_err(&g.into_host().data, &want);
        assert!(err < 1e-13, "non-symmetric: {err}");

        let mut g = FullGram::zeros(n1, n1, k, true, DType::F64);
        g.add_factored_gram(
            tensor2(&d1, [n1, f]),
            None,
            tensor2(&v, [k, f]),
            &PairCoeff::Scalar(1.5),
        );
        let u = expand(&d1, n1);
        let want = reference(&u, &u, n1, n1, k, f, &vec![1.5; n1 * n1]);
        let err = max_err(&g.into_host().data, &want);
        assert!(err < 1e-13, "symmetric: {err}");
    }
}
