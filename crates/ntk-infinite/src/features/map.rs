//! The feature map of a network spec: layer by layer, each sample carries per-position
//! NNGP features `φ_p` and NTK features `ψ_p` (`p` a pixel; one position for vectors) with
//! `φ_p(x)·φ_q(y) ≈ Σ(x_p, y_q)` and `ψ_p(x)·ψ_q(y) ≈ Θ(x_p, y_q)`, following the exact
//! recursions of this crate ([`crate::dense`], [`crate::conv`], [`crate::pooling`],
//! [`crate::activation`]) in feature form:
//!
//! | layer | NNGP features | NTK features |
//! |---|---|---|
//! | input | `x / √d`; image: `x[:, p] / √C` per pixel | none (`Θ = 0`) |
//! | dense, `ntk` | `φ' = [σ_w φ, σ_b]` | `ψ' = [φ', σ_w ψ]` |
//! | dense, `standard` | `φ' = [σ_w φ, σ_b]` | `ψ' = [√n_in φ, σ_w ψ, 1]` (`1` with a bias) |
//! | conv2d | as dense, `φ` replaced by `[φ_{p·s+d} / √(kh·kw)]_d` (zeros off the image) | likewise |
//! | relu | `√(q/2) · F₁(φ/√q)`, `q = ‖φ‖²` | `ψ ⊗ s`, `s = F₀(φ/√q) / √2` |
//! | avg_pool2d, global_avg_pool | mean over the window / all pixels | likewise |
//! | flatten (image) | `[φ_p / √P]_p` | likewise |
//!
//! where `F₁`, `F₀` are features of the arc-cosine kernels `κ₁`, `κ₀`
//! ([`super::arccos`]): the relu rule is `E[relu(u) relu(v)] = ½√(q_x q_y) κ₁(ρ)`,
//! `E[step(u) step(v)] = ½ κ₀(ρ)`. The methods differ in `F` and in nothing else:
//!
//! - **NTKRF** (Zandieh et al. 2021, §5, "NTK random features"): `m` Gaussian directions
//!   `w_i` (rows of `W`), `√(q/2)·F₁ = relu(W φ) / √m` and `s = step(W φ) / √m` (Cho & Saul's
//!   arc-cosine random features: unbiased for the relu rule given `φ`, whatever `q`);
//! - **NTKSketch / CNTKSketch** (§4, and arXiv 2104.01351 for convolutions): the degree-`q`
//!   polynomials of [`super::arccos`] sketched by [`PolySketch`]:
//!   `F(u) = [√c₀, √c₁ u, √c_j S_j(u) …]`, the heavy low-degree blocks kept exactly and
//!   the rest reduced by one SRHT to the remaining columns (`PolyReduce`). No
//!   projection with the width of the layer, so the cost per position is
//!   `O(q log q · m log m)` whatever the previous dimension. `u = φ/‖φ‖` uses the features'
//!   own norm (an estimate of `√q`), so biases need no special treatment: the one-shot
//!   polynomial of the authors assumes bias-free networks, this layer-by-layer map does not.
//!
//! `ψ ⊗ s` is a [`TensorSrht`] to `m` columns (exact when small), and any feature matrix
//! that grows past `2m` columns (conv offsets, flatten, standard parameterization) is
//! reduced by an [`Srht`] to `m`. Every random map is unbiased conditionally on its
//! input and drawn independently of it; composed, the estimate is consistent (its bias,
//! from applying the nonlinear κ's to estimated inner products, shrinks as `m` grows) but
//! not exactly unbiased beyond the first relu, and for the sketches it carries the
//! polynomial truncation and the norm estimate as well. All random
//! draws are fixed by the seed and the spec (not the data), so features of different
//! batches and calls are compatible (equal up to rounding: NTKRF's projections are GEMMs
//! over the batch). Positions are independent rows: the cost is linear
//! in the number of samples and of pixels.

use super::arccos::{ArcCosine, relu_kernel_polynomial};
use super::budget::Draws;
use super::hadamard::{Srht, TensorSrht};
use super::polysketch::{self, PolySketch};
use crate::conv::ConvGeometry;
use crate::error::{InfiniteError, Result, unsupported};
use crate::plan::Plan;
use ntk_nets::{Activation, FeatureShape, HostArray, LayerSpec, NetworkSpec, Parameterization};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

/// How relu layers are turned into features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureMethod {
    /// Gaussian arc-cosine random features (NTKRF).
    Ntkrf,
    /// PolySketch of the arc-cosine polynomials, for networks on vector inputs.
    NtkSketch,
    /// The same for conv nets on images (CNTKSketch).
    CntkSketch,
}

impl FeatureMethod {
    /// Parses `ntkrf`, `ntksketch`, `cntksketch`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "ntkrf" => Ok(FeatureMethod::Ntkrf),
            "ntksketch" => Ok(FeatureMethod::NtkSketch),
            "cntksketch" => Ok(FeatureMethod::CntkSketch),
            other => Err(InfiniteError::Option {
                option: "method".into(),
                message: format!("unknown {other:?} (ntkrf, ntksketch, cntksketch)"),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FeatureMethod::Ntkrf => "ntkrf",
            FeatureMethod::NtkSketch => "ntksketch",
            FeatureMethod::CntkSketch => "cntksketch",
        }
    }
}

/// Options of [`FeatureMap::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureOptions {
    pub method: FeatureMethod,
    /// Output dimension `m` of both maps, and the width of every internal sketch.
    pub dim: usize,
    /// Seed of all random draws.
    pub seed: u64,
    /// Degree `q` of the arc-cosine polynomials (NTKSketch, CNTKSketch).
    pub degree: usize,
}

/// Default of [`FeatureOptions::degree`]. Lower degrees are faster and, on shallow nets
/// with weakly correlated inputs, as accurate (measured on 500 unit vectors in d = 32 at
/// m = 4096: relative NTK error 0.071 at degree 4 vs 0.072 at 8, L = 1, in half the time);
/// but deep nets push correlations towards 1, where the truncated κ₀ is worst: at L = 5,
/// m = 16384 degree 4 stalls at 0.074 where degree 8 reaches 0.045.
pub const DEFAULT_DEGREE: usize = 8;

impl Default for FeatureOptions {
    fn default() -> Self {
        FeatureOptions {
            method: FeatureMethod::NtkSketch,
            dim: 1024,
            seed: 0,
            degree: DEFAULT_DEGREE,
        }
    }
}

/// Features of a batch: `nngp.row(i) · nngp.row(j) ≈ Σ(x_i, x_j)`, the same for the NTK.
///
/// # Shapes
/// `nngp`, `ntk`: `[N, dim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct NtkFeatures {
    pub nngp: HostArray,
    pub ntk: HostArray,
}

/// Feature rows of a batch between layers: row `n·P + p` is position `p` of sample `n`.
#[derive(Debug, Clone)]
pub(crate) struct Rows {
    pub(crate) samples: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) kphi: usize,
    pub(crate) phi: Vec<f64>,
    pub(crate) kpsi: usize,
    pub(crate) psi: Vec<f64>,
}

impl Rows {
    pub(crate) fn pixels(&self) -> usize {
        self.h * self.w
    }
}

/// An SRHT applied when a feature matrix grows past twice the sketch width.
#[derive(Debug, Clone)]
pub(crate) struct Reduce(Option<Srht>);

impl Reduce {
    /// No reduction.
    pub(crate) fn none() -> Self {
        Reduce(None)
    }

    fn new(cols: usize, dim: usize, index: usize, kind: &str, d: &mut Draws) -> Result<Self> {
        Ok(Reduce(if cols > 2 * dim {
            Some(d.srht(cols, dim, index, kind)?)
        } else {
            None
        }))
    }

    /// The reductions of a layer's NNGP and NTK features of `cols` columns (drawn in that
    /// order), updating the running widths `k` to their outputs.
    pub(crate) fn pair(
        cols: (usize, usize),
        k: (&mut usize, &mut usize),
        dim: usize,
        index: usize,
        kind: &str,
        d: &mut Draws,
    ) -> Result<(Self, Self)> {
        let phi = Reduce::checked(cols.0, dim, index, kind, d)?;
        let psi = Reduce::checked(cols.1, dim, index, kind, d)?;
        *k.0 = phi.output_dim(cols.0);
        *k.1 = psi.output_dim(cols.1);
        Ok((phi, psi))
    }

    /// As [`Reduce::new`], refusing widths whose transform would not fit in memory.
    fn checked(cols: usize, dim: usize, index: usize, kind: &str, d: &mut Draws) -> Result<Self> {
        check_width(cols, index, kind)?;
        Reduce::new(cols, dim, index, kind, d)
    }

    fn output_dim(&self, cols: usize) -> usize {
        self.0.as_ref().map_or(cols, Srht::output_dim)
    }
}

/// How one relu layer maps features.
#[derive(Debug, Clone)]
pub(crate) enum ReluRule {
    /// `relu(W φ)/√m`, `step(W φ)/√m`; `W` `[m, in]` standard normal, drawn in blocks of
    /// [`RF_BLOCK`] rows, block `b` from the stream `(layer, b)` of the seed.
    Random { seed: u64, layer: usize, m: usize },
    Sketch {
        poly: PolySketch,
        /// `√c_j` of κ₁ and κ₀.
        sqrt_c1: Vec<f64>,
        sqrt_c0: Vec<f64>,
        reduce1: PolyReduce,
        reduce0: PolyReduce,
    },
}

/// How the polynomial features `[√c₀, √c₁ u, √c_j S_j(u), …]` of a relu layer become at
/// most `m` columns: the leading blocks (the constant, the exact linear term, exact small
/// powers) are kept as they are while they fill at most half of the `m` columns, and only
/// the rest, whose coefficients are small, goes through an SRHT into the remaining
/// columns. The SRHT's error scales with the norm of what it maps, so keeping the heavy
/// low-degree terms out of it makes shallow layers on low-dimensional inputs much more
/// accurate; on wide inputs (`u` alone over `m/2` columns) everything is reduced.
#[derive(Debug, Clone)]
pub(crate) struct PolyReduce {
    keep: usize,
    tail: Option<Srht>,
}

impl PolyReduce {
    fn new(
        block_widths: &[usize],
        m: usize,
        index: usize,
        kind: &str,
        d: &mut Draws,
    ) -> Result<Self> {
        let mut keep = 0;
        for &w in block_widths {
            if keep + w > m / 2 {
                break;
            }
            keep += w;
        }
        let total: usize = block_widths.iter().sum();
        let tail = if total > keep {
            Some(d.srht(total - keep, m - keep, index, kind)?)
        } else {
            None
        };
        Ok(PolyReduce { keep, tail })
    }

    fn output_dim(&self) -> usize {
        self.keep + self.tail.as_ref().map_or(0, Srht::output_dim)
    }

    /// `out = [full[..keep], S(full[keep..])]`.
    fn apply(&self, full: &[f64], work: &mut Vec<f64>, out: &mut [f64]) {
        out[..self.keep].copy_from_slice(&full[..self.keep]);
        if let Some(s) = &self.tail {
            s.apply(&full[self.keep..], work, &mut out[self.keep..]);
        }
    }
}

const RF_BLOCK: usize = 256;

/// The most bytes of NTKRF weights one thread holds while drawing a block.
const RF_DRAW_BYTES: usize = 4 << 20;

/// Widest feature vector a layer may produce before its SRHT (`2^24` numbers: 128 MiB
/// per row in f64, with the random signs of the transform as large).
pub const MAX_FEATURE_WIDTH: usize = 1 << 24;

pub(crate) fn check_width(cols: usize, index: usize, kind: &str) -> Result<()> {
    if cols > MAX_FEATURE_WIDTH {
        return Err(unsupported(
            index,
            kind,
            format!(
                "its features would be {cols} numbers per position (at most {MAX_FEATURE_WIDTH}); \
                 the layer is too wide or the image too large for feature maps"
            ),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub(crate) enum Step {
    Affine {
        conv: Option<ConvGeometry>,
        /// `(kh, kw)`; `(1, 1)` for dense.
        kernel: [usize; 2],
        weight_std: f64,
        bias_std: Option<f64>,
        fan_in: usize,
        parameterization: Parameterization,
        reduce_phi: Reduce,
        reduce_psi: Reduce,
    },
    Relu {
        rule: ReluRule,
        tensor: TensorSrht,
    },
    AvgPool {
        window: [usize; 2],
        stride: [usize; 2],
        out: [usize; 2],
    },
    GlobalAvgPool,
    Flatten {
        reduce_phi: Reduce,
        reduce_psi: Reduce,
    },
}

/// What one layer does to the features: the layers of a sequential spec and the nodes of
/// a graph spec ([`super::graph`]) alike.
#[derive(Debug, Clone)]
pub(crate) enum LayerRule {
    /// `linear`/`dense` (`conv: None`, kernel `[1, 1]`) or `conv2d`.
    Affine {
        conv: Option<ConvGeometry>,
        kernel: [usize; 2],
        w_std: f64,
        b_std: Option<f64>,
        fan_in: usize,
        parameterization: Parameterization,
    },
    Relu,
    AvgPool {
        window: [usize; 2],
        stride: [usize; 2],
        out: [usize; 2],
    },
    GlobalAvgPool,
    /// Flatten of an image of `pixels` positions.
    Flatten {
        pixels: usize,
    },
    Identity,
}

/// The step of one layer, drawing its random maps from `rng` and updating the running
/// feature widths `k = (φ columns, ψ columns)` (`None`: the layer leaves the features as
/// they are). `index` and `kind` name the layer in errors; `index` also seeds NTKRF's
/// projections.
pub(crate) fn compile_step(
    rule: &LayerRule,
    index: usize,
    kind: &str,
    k: (&mut usize, &mut usize),
    options: &FeatureOptions,
    d: &mut Draws,
) -> Result<Option<Step>> {
    let m = options.dim;
    let (kphi, kpsi) = k;
    Ok(match rule {
        LayerRule::Affine {
            conv,
            kernel,
            w_std,
            b_std,
            fan_in,
            parameterization,
        } => {
            let taps = kernel[0] * kernel[1];
            let cols = affine_dims(*kphi, *kpsi, taps, b_std.is_some(), *parameterization);
            let (reduce_phi, reduce_psi) = Reduce::pair(cols, (kphi, kpsi), m, index, kind, d)?;
            Some(Step::Affine {
                conv: *conv,
                kernel: *kernel,
                weight_std: *w_std,
                bias_std: *b_std,
                fan_in: *fan_in,
                parameterization: *parameterization,
                reduce_phi,
                reduce_psi,
            })
        }
        LayerRule::Identity => None,
        LayerRule::Relu => {
            let (rule, phi_cols, step_cols) = match options.method {
                FeatureMethod::Ntkrf => (
                    ReluRule::Random {
                        seed: options.seed,
                        layer: index,
                        m,
                    },
                    m,
                    m,
                ),
                FeatureMethod::NtkSketch | FeatureMethod::CntkSketch => {
                    let poly = d.polysketch(*kphi, options.degree, m, index, kind)?;
                    let sqrt = |k| -> Vec<f64> {
                        relu_kernel_polynomial(k, options.degree)
                            .iter()
                            .map(|c| c.sqrt())
                            .collect()
                    };
                    let (sqrt_c1, sqrt_c0) = (sqrt(ArcCosine::Order1), sqrt(ArcCosine::Order0));
                    // [√c₀, √c₁ u, √c_j S_j(u) for the c_j > 0, j ≥ 2]
                    let widths = |c: &[f64]| -> Vec<usize> {
                        [1, *kphi]
                            .into_iter()
                            .chain(
                                c.iter()
                                    .skip(2)
                                    .filter(|&&v| v > 0.0)
                                    .map(|_| poly.output_dim()),
                            )
                            .collect()
                    };
                    let reduce1 = PolyReduce::new(&widths(&sqrt_c1), m, index, kind, d)?;
                    let reduce0 = PolyReduce::new(&widths(&sqrt_c0), m, index, kind, d)?;
                    let (phi_cols, step_cols) = (reduce1.output_dim(), reduce0.output_dim());
                    let rule = ReluRule::Sketch {
                        poly,
                        sqrt_c1,
                        sqrt_c0,
                        reduce1,
                        reduce0,
                    };
                    (rule, phi_cols, step_cols)
                }
            };
            let tensor = d.tensor_srht(*kpsi, step_cols, m, index, kind)?;
            *kpsi = tensor.output_dim();
            *kphi = phi_cols;
            Some(Step::Relu { rule, tensor })
        }
        LayerRule::AvgPool {
            window,
            stride,
            out,
        } => Some(Step::AvgPool {
            window: *window,
            stride: *stride,
            out: *out,
        }),
        LayerRule::GlobalAvgPool => Some(Step::GlobalAvgPool),
        LayerRule::Flatten { pixels } => {
            let cols = (kphi.saturating_mul(*pixels), kpsi.saturating_mul(*pixels));
            let (reduce_phi, reduce_psi) = Reduce::pair(cols, (kphi, kpsi), m, index, kind, d)?;
            Some(Step::Flatten {
                reduce_phi,
                reduce_psi,
            })
        }
    })
}

/// A compiled feature map (all random draws made).
#[derive(Debug, Clone)]
pub struct FeatureMap {
    input: FeatureShape,
    steps: Vec<Step>,
    out_nngp: Srht,
    out_ntk: Srht,
    /// Columns before the output projections.
    final_dims: (usize, usize),
    options: FeatureOptions,
    /// Bytes of the random transforms (counted as they were drawn).
    map_bytes: u64,
}

impl FeatureMap {
    /// Compiles the map of `spec` (which must be valid for the exact kernels) and draws its
    /// random parameters.
    ///
    /// # Errors
    /// [`InfiniteError::Unsupported`] naming the layer for erf/gelu/tanh (no arc-cosine
    /// features), for CNTKSketch on vector inputs or NTKSketch/NTKRF on images, and for
    /// features wider than [`MAX_FEATURE_WIDTH`]; [`InfiniteError::Option`] for `dim`
    /// outside `1..=MAX_FEATURE_WIDTH` or `degree` outside `2..=64` (checked for every
    /// method; NTKRF does not use it).
    pub fn new(spec: &NetworkSpec, options: &FeatureOptions) -> Result<FeatureMap> {
        FeatureMap::new_within(spec, options, None)
    }

    /// As [`FeatureMap::new`], refusing with [`InfiniteError::FeatureMemory`] — before
    /// drawing it — the first transform that takes the map's random transforms past
    /// `max_bytes` (see [`FeatureMap::map_bytes`]).
    pub fn new_within(
        spec: &NetworkSpec,
        options: &FeatureOptions,
        max_bytes: Option<u64>,
    ) -> Result<FeatureMap> {
        Plan::build(spec, crate::DEFAULT_TANH_DEGREE)?;
        check_options(options)?;
        let input = spec.input_feature_shape()?;
        let image = matches!(input, FeatureShape::Image { .. });
        let first = spec.layers.first().map_or("?", |l| l.kind());
        check_method(options.method, image, first)?;
        let m = options.dim;
        let mut draws = Draws::new(options.seed, max_bytes);
        let geometry = spec.analyse()?;
        let (mut kphi, mut kpsi) = match input {
            FeatureShape::Flat(d) => (d, 0),
            FeatureShape::Image { c, .. } => (c, 0),
        };
        check_width(kphi, 0, first)?;
        let mut steps = Vec::new();
        let mut image_now = image;
        for (layer, geo) in spec.layers.iter().zip(&geometry) {
            let rule = match layer {
                LayerSpec::Dense(d) => LayerRule::Affine {
                    conv: None,
                    kernel: [1, 1],
                    w_std: d.w_std,
                    b_std: d.b_std,
                    fan_in: geo.fan_in,
                    parameterization: spec.parameterization,
                },
                LayerSpec::Conv2d(c) => {
                    let FeatureShape::Image { h, w, .. } = geo.output else {
                        return Err(unsupported(
                            geo.index,
                            layer.kind(),
                            "conv2d without an image output",
                        ));
                    };
                    LayerRule::Affine {
                        conv: Some(ConvGeometry {
                            kernel: c.kernel,
                            stride: c.stride,
                            pad_before: [geo.padding[0].0, geo.padding[1].0],
                            out: [h, w],
                        }),
                        kernel: c.kernel,
                        w_std: c.w_std,
                        b_std: c.b_std,
                        fan_in: geo.fan_in,
                        parameterization: spec.parameterization,
                    }
                }
                LayerSpec::Activation(Activation::Identity) => LayerRule::Identity,
                LayerSpec::Activation(Activation::Relu) => LayerRule::Relu,
                LayerSpec::Activation(a) => {
                    return Err(unsupported(
                        geo.index,
                        layer.kind(),
                        format!(
                            "random features cover relu networks only ({} has no arc-cosine features); use the exact kernels (`ntk infinite`)",
                            a.name()
                        ),
                    ));
                }
                LayerSpec::AvgPool2d { window, stride } => {
                    let FeatureShape::Image { h, w, .. } = geo.output else {
                        return Err(unsupported(
                            geo.index,
                            layer.kind(),
                            "avg_pool2d without an image output",
                        ));
                    };
                    LayerRule::AvgPool {
                        window: *window,
                        stride: *stride,
                        out: [h, w],
                    }
                }
                LayerSpec::GlobalAvgPool => {
                    image_now = false;
                    LayerRule::GlobalAvgPool
                }
                LayerSpec::Flatten if !image_now => LayerRule::Identity,
                LayerSpec::Flatten => {
                    let FeatureShape::Image { h, w, .. } = geo.input else {
                        unreachable!("an image before flatten")
                    };
                    image_now = false;
                    LayerRule::Flatten { pixels: h * w }
                }
            };
            if let Some(s) = compile_step(
                &rule,
                geo.index,
                layer.kind(),
                (&mut kphi, &mut kpsi),
                options,
                &mut draws,
            )? {
                steps.push(s);
            }
        }
        let last = spec.layers.len();
        let out_nngp = draws.srht(kphi, m, last, "output projection")?;
        let out_ntk = draws.srht(kpsi.max(1), m, last, "output projection")?;
        Ok(FeatureMap {
            input,
            steps,
            out_nngp,
            out_ntk,
            final_dims: (kphi, kpsi),
            options: options.clone(),
            map_bytes: draws.spent(),
        })
    }

    /// Bytes of the map's random transforms (an upper bound, sampling scratch included),
    /// held for its lifetime beside the [`FeatureMap::numbers_per_sample`] of a batch.
    pub fn map_bytes(&self) -> u64 {
        self.map_bytes
    }

    /// The options the map was built with.
    pub fn options(&self) -> &FeatureOptions {
        &self.options
    }

    /// Output dimension (of both maps).
    pub fn dim(&self) -> usize {
        self.options.dim
    }

    /// The input shape of one sample.
    pub fn input_shape(&self) -> Vec<usize> {
        self.input.dims()
    }

    /// About the numbers held per sample by the widest step (for choosing batch sizes): a
    /// relu layer holds its input φ and ψ (up to `2m` each), the projections or
    /// polynomial blocks, and its outputs, about `10 m` per position.
    pub fn numbers_per_sample(&self) -> usize {
        numbers_per_branch(self.input, self.options.dim)
    }

    /// The features of `x` `[N, *input_shape]` in batches sized so that the map, the
    /// features of all `N` inputs and one batch's working set stay within `max_bytes`
    /// ([`super::budget::batch_within`]).
    ///
    /// # Errors
    /// [`InfiniteError::FeatureMemory`] when not even one input fits, before any work; as
    /// [`FeatureMap::apply`].
    pub fn apply_within(&self, x: &HostArray, max_bytes: u64) -> Result<NtkFeatures> {
        check_batch(self.input, x)?;
        let batch = super::budget::batch_within(
            self.map_bytes,
            self.numbers_per_sample(),
            self.dim(),
            x.shape[0],
            true,
            max_bytes,
        )?;
        super::budget::apply_in_batches(x, batch, |b| self.apply(b))
    }

    /// The features of a batch `x` `[N, *input_shape]`.
    ///
    /// # Errors
    /// [`InfiniteError::InputShape`], [`InfiniteError::NonFiniteInput`] on bad inputs.
    pub fn apply(&self, x: &HostArray) -> Result<NtkFeatures> {
        check_batch(self.input, x)?;
        let mut rows = input_rows(self.input, x);
        for step in &self.steps {
            rows = apply_step(step, rows);
        }
        debug_assert_eq!(rows.pixels(), 1);
        debug_assert_eq!((rows.kphi, rows.kpsi), self.final_dims);
        Ok(project(
            &rows,
            &self.out_nngp,
            &self.out_ntk,
            self.options.dim,
        ))
    }
}

/// About `10·max(m, C)` numbers per position of the input (see
/// [`FeatureMap::numbers_per_sample`]).
pub(crate) fn numbers_per_branch(input: FeatureShape, m: usize) -> usize {
    let (pixels, channels) = match input {
        FeatureShape::Flat(d) => (1, d),
        FeatureShape::Image { c, h, w } => (h * w, c),
    };
    pixels * 10 * m.max(channels)
}

/// Refuses CNTKSketch on vector inputs and NTKSketch/NTKRF on images (`first`: the kind
/// of the first layer, named in the error).
pub(crate) fn check_method(method: FeatureMethod, image: bool, first: &str) -> Result<()> {
    match (method, image) {
        (FeatureMethod::CntkSketch, false) => {
            return Err(unsupported(
                0,
                first,
                "cntksketch is for conv nets on images; use ntksketch for vector inputs",
            ));
        }
        (FeatureMethod::NtkSketch, true) | (FeatureMethod::Ntkrf, true) => {
            return Err(unsupported(
                0,
                first,
                "this network takes images: use cntksketch (ntkrf and ntksketch are for vector inputs)",
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Refuses a feature dimension outside `1..=MAX_FEATURE_WIDTH` or a degree outside
/// `2..=64` (for every method; NTKRF does not use the degree).
pub(crate) fn check_options(options: &FeatureOptions) -> Result<()> {
    if options.dim == 0 {
        return Err(InfiniteError::Option {
            option: "dim".into(),
            message: "must be positive".into(),
        });
    }
    if options.dim > MAX_FEATURE_WIDTH {
        return Err(InfiniteError::Option {
            option: "dim".into(),
            message: format!("at most {MAX_FEATURE_WIDTH}, got {}", options.dim),
        });
    }
    if options.degree < 2 || options.degree > 64 {
        return Err(InfiniteError::Option {
            option: "degree".into(),
            message: format!("must be in 2..=64, got {}", options.degree),
        });
    }
    Ok(())
}

/// Refuses a batch that is not `[N, *input]`, or not finite.
pub(crate) fn check_batch(input: FeatureShape, x: &HostArray) -> Result<()> {
    let dims = input.dims();
    if x.shape.len() != dims.len() + 1 || x.shape[1..] != dims[..] {
        return Err(InfiniteError::InputShape {
            what: "x".into(),
            got: x.shape.clone(),
            expected: dims,
        });
    }
    if x.data.len() != x.shape.iter().product::<usize>() {
        return Err(InfiniteError::InputShape {
            what: format!("x (data length {})", x.data.len()),
            got: x.shape.clone(),
            expected: dims,
        });
    }
    if let Some((index, value)) = x.first_non_finite() {
        return Err(InfiniteError::NonFiniteInput {
            what: "x".into(),
            index,
            value,
        });
    }
    Ok(())
}

/// The output projections of the final (one-position) rows to `m` columns each.
pub(crate) fn project(rows: &Rows, out_nngp: &Srht, out_ntk: &Srht, m: usize) -> NtkFeatures {
    let n = rows.samples;
    let project = |data: &[f64], cols: usize, s: &Srht| -> HostArray {
        let mut out = vec![0.0; n * m];
        let width = s.output_dim().min(m);
        out.par_chunks_mut(m).enumerate().for_each_init(
            || (Vec::new(), vec![0.0; s.output_dim()]),
            |(work, buf), (i, row)| {
                if cols == 0 {
                    return;
                }
                s.apply(&data[i * cols..(i + 1) * cols], work, buf);
                row[..width].copy_from_slice(&buf[..width]);
            },
        );
        HostArray::new(vec![n, m], out)
    };
    NtkFeatures {
        nngp: project(&rows.phi, rows.kphi, out_nngp),
        ntk: project(&rows.psi, rows.kpsi, out_ntk),
    }
}

/// Columns of `[σ_w φ_taps, σ_b]` and of the NTK features after an affine layer.
fn affine_dims(
    kphi: usize,
    kpsi: usize,
    taps: usize,
    bias: bool,
    parameterization: Parameterization,
) -> (usize, usize) {
    let phi = taps * kphi + usize::from(bias);
    let psi = match parameterization {
        Parameterization::Ntk => phi + taps * kpsi,
        Parameterization::Standard => taps * kphi + taps * kpsi + usize::from(bias),
    };
    (phi, psi)
}

pub(crate) fn input_rows(input: FeatureShape, x: &HostArray) -> Rows {
    let n = x.shape[0];
    match input {
        FeatureShape::Flat(d) => {
            let s = 1.0 / (d as f64).sqrt();
            Rows {
                samples: n,
                h: 1,
                w: 1,
                kphi: d,
                phi: x.data.iter().map(|v| v * s).collect(),
                kpsi: 0,
                psi: Vec::new(),
            }
        }
        FeatureShape::Image { c, h, w } => {
            let s = 1.0 / (c as f64).sqrt();
            let p = h * w;
            let mut phi = vec![0.0; n * p * c];
            phi.par_chunks_mut(p * c)
                .zip(x.data.par_chunks(c * p))
                .for_each(|(dst, src)| {
                    for ch in 0..c {
                        for q in 0..p {
                            dst[q * c + ch] = src[ch * p + q] * s;
                        }
                    }
                });
            Rows {
                samples: n,
                h,
                w,
                kphi: c,
                phi,
                kpsi: 0,
                psi: Vec::new(),
            }
        }
    }
}

/// Fills `out` (`rows × cols`) row by row in parallel, each row from `fill(row, scratch,
/// out_row)`; with `reduce`, `fill` writes the unreduced row into a scratch of `width`
/// numbers that the SRHT then maps into the output row.
pub(crate) fn fill_rows(
    rows: usize,
    width: usize,
    reduce: &Reduce,
    fill: impl Fn(usize, &mut [f64]) + Sync,
) -> (usize, Vec<f64>) {
    let cols = reduce.output_dim(width);
    let mut out = vec![0.0; rows * cols];
    if cols == 0 {
        return (0, out);
    }
    match &reduce.0 {
        None => out
            .par_chunks_mut(cols)
            .enumerate()
            .for_each(|(r, row)| fill(r, row)),
        Some(s) => out.par_chunks_mut(cols).enumerate().for_each_init(
            || (vec![0.0; width], Vec::new()),
            |(full, work), (r, row)| {
                full.fill(0.0);
                fill(r, full);
                s.apply(full, work, row);
            },
        ),
    }
    (cols, out)
}

pub(crate) fn apply_step(step: &Step, rows: Rows) -> Rows {
    match step {
        Step::Affine {
            conv,
            kernel,
            weight_std,
            bias_std,
            fan_in,
            parameterization,
            reduce_phi,
            reduce_psi,
        } => {
            let taps = kernel[0] * kernel[1];
            let (out_h, out_w) = conv.map_or((1, 1), |g| (g.out[0], g.out[1]));
            let out_rows = rows.samples * out_h * out_w;
            let tap_scale = 1.0 / (taps as f64).sqrt();
            let (phi_width, psi_width) = affine_dims(
                rows.kphi,
                rows.kpsi,
                taps,
                bias_std.is_some(),
                *parameterization,
            );
            // Writes the taps of row r of `data` (k columns per position), each scaled by
            // `scale`, into dst[0..taps·k].
            let gather = |data: &[f64], k: usize, r: usize, scale: f64, dst: &mut [f64]| {
                let Some(g) = conv else {
                    for (d, v) in dst.iter_mut().zip(&data[r * k..(r + 1) * k]) {
                        *d = scale * v;
                    }
                    return;
                };
                let (n, o) = (r / (out_h * out_w), r % (out_h * out_w));
                let (oy, ox) = (o / out_w, o % out_w);
                let base = n * rows.h * rows.w;
                for a in 0..kernel[0] {
                    for b in 0..kernel[1] {
                        let dst = &mut dst[(a * kernel[1] + b) * k..(a * kernel[1] + b + 1) * k];
                        let y = (oy * g.stride[0] + a) as isize - g.pad_before[0] as isize;
                        let x = (ox * g.stride[1] + b) as isize - g.pad_before[1] as isize;
                        if y < 0 || x < 0 || y as usize >= rows.h || x as usize >= rows.w {
                            dst.fill(0.0);
                            continue;
                        }
                        let q = base + y as usize * rows.w + x as usize;
                        for (d, v) in dst.iter_mut().zip(&data[q * k..(q + 1) * k]) {
                            *d = scale * v;
                        }
                    }
                }
            };
            let (kphi, kpsi) = (rows.kphi, rows.kpsi);
            let (phi_cols, phi) = fill_rows(out_rows, phi_width, reduce_phi, |r, dst| {
                gather(
                    &rows.phi,
                    kphi,
                    r,
                    weight_std * tap_scale,
                    &mut dst[..taps * kphi],
                );
                if let Some(b) = bias_std {
                    dst[taps * kphi] = *b;
                }
            });
            let (psi_cols, psi) = fill_rows(out_rows, psi_width, reduce_psi, |r, dst| {
                match parameterization {
                    Parameterization::Ntk => {
                        // [φ', σ_w ψ]: φ' recomputed rather than read back (it may be reduced).
                        gather(
                            &rows.phi,
                            kphi,
                            r,
                            weight_std * tap_scale,
                            &mut dst[..taps * kphi],
                        );
                        let mut at = taps * kphi;
                        if let Some(b) = bias_std {
                            dst[at] = *b;
                            at += 1;
                        }
                        gather(
                            &rows.psi,
                            kpsi,
                            r,
                            weight_std * tap_scale,
                            &mut dst[at..at + taps * kpsi],
                        );
                    }
                    Parameterization::Standard => {
                        let s = (*fan_in as f64).sqrt() * tap_scale;
                        gather(&rows.phi, kphi, r, s, &mut dst[..taps * kphi]);
                        let at = taps * kphi;
                        gather(
                            &rows.psi,
                            kpsi,
                            r,
                            weight_std * tap_scale,
                            &mut dst[at..at + taps * kpsi],
                        );
                        if bias_std.is_some() {
                            dst[at + taps * kpsi] = 1.0;
                        }
                    }
                }
            });
            Rows {
                samples: rows.samples,
                h: out_h,
                w: out_w,
                kphi: phi_cols,
                phi,
                kpsi: psi_cols,
                psi,
            }
        }
        Step::Relu { rule, tensor } => {
            let n_rows = rows.samples * rows.pixels();
            let (kphi, phi, steps) = match rule {
                ReluRule::Random { seed, layer, m } => random_relu(&rows, *seed, *layer, *m),
                ReluRule::Sketch {
                    poly,
                    sqrt_c1,
                    sqrt_c0,
                    reduce1,
                    reduce0,
                } => sketch_relu(&rows, poly, sqrt_c1, sqrt_c0, reduce1, reduce0),
            };
            let ks = steps.len() / n_rows.max(1);
            let kpsi = tensor.output_dim();
            let mut psi = vec![0.0; n_rows * kpsi];
            if kpsi > 0 {
                psi.par_chunks_mut(kpsi).enumerate().for_each_init(
                    || (Vec::new(), Vec::new()),
                    |(wa, wb), (r, out)| {
                        tensor.apply(
                            &rows.psi[r * rows.kpsi..(r + 1) * rows.kpsi],
                            &steps[r * ks..(r + 1) * ks],
                            wa,
                            wb,
                            out,
                        );
                    },
                );
            }
            Rows {
                kphi,
                phi,
                kpsi,
                psi,
                ..rows
            }
        }
        Step::AvgPool {
            window,
            stride,
            out,
        } => {
            let pool = |data: &[f64], k: usize| -> Vec<f64> {
                let per = out[0] * out[1];
                let mut res = vec![0.0; rows.samples * per * k];
                let inv = 1.0 / (window[0] * window[1]) as f64;
                res.par_chunks_mut(k.max(1))
                    .enumerate()
                    .for_each(|(r, dst)| {
                        if k == 0 {
                            return;
                        }
                        let (n, o) = (r / per, r % per);
                        let (oy, ox) = (o / out[1], o % out[1]);
                        for a in 0..window[0] {
                            for b in 0..window[1] {
                                let q = n * rows.h * rows.w
                                    + (oy * stride[0] + a) * rows.w
                                    + ox * stride[1]
                                    + b;
                                for (d, v) in dst.iter_mut().zip(&data[q * k..(q + 1) * k]) {
                                    *d += inv * v;
                                }
                            }
                        }
                    });
                res
            };
            Rows {
                phi: pool(&rows.phi, rows.kphi),
                psi: pool(&rows.psi, rows.kpsi),
                h: out[0],
                w: out[1],
                ..rows
            }
        }
        Step::GlobalAvgPool => {
            let p = rows.pixels();
            let mean = |data: &[f64], k: usize| -> Vec<f64> {
                let mut res = vec![0.0; rows.samples * k];
                if k == 0 {
                    return res;
                }
                res.par_chunks_mut(k)
                    .zip(data.par_chunks(p * k))
                    .for_each(|(dst, src)| {
                        for row in src.chunks_exact(k) {
                            for (d, v) in dst.iter_mut().zip(row) {
                                *d += v;
                            }
                        }
                        dst.iter_mut().for_each(|d| *d /= p as f64);
                    });
                res
            };
            Rows {
                phi: mean(&rows.phi, rows.kphi),
                psi: mean(&rows.psi, rows.kpsi),
                h: 1,
                w: 1,
                ..rows
            }
        }
        Step::Flatten {
            reduce_phi,
            reduce_psi,
        } => {
            let p = rows.pixels();
            let scale = 1.0 / (p as f64).sqrt();
            let concat = |data: &[f64], k: usize, reduce: &Reduce| {
                fill_rows(rows.samples, p * k, reduce, |n, dst| {
                    for (d, v) in dst[..p * k]
                        .iter_mut()
                        .zip(&data[n * p * k..(n + 1) * p * k])
                    {
                        *d = scale * v;
                    }
                })
            };
            let (kphi, phi) = concat(&rows.phi, rows.kphi, reduce_phi);
            let (kpsi, psi) = concat(&rows.psi, rows.kpsi, reduce_psi);
            Rows {
                samples: rows.samples,
                h: 1,
                w: 1,
                kphi,
                phi,
                kpsi,
                psi,
            }
        }
    }
}

/// NTKRF relu: `relu(W φ)/√m` and `step(W φ)/√m` for every row, `W` drawn block by block
/// (the same blocks for every batch), each block one GEMM over all rows.
fn random_relu(rows: &Rows, seed: u64, layer: usize, m: usize) -> (usize, Vec<f64>, Vec<f64>) {
    let n_rows = rows.samples * rows.pixels();
    let k = rows.kphi;
    let norm = 1.0 / (m as f64).sqrt();
    let blocks = m.div_ceil(RF_BLOCK);
    let parts: Vec<(Vec<f64>, Vec<f64>)> = (0..blocks)
        .into_par_iter()
        .map(|b| {
            let width = RF_BLOCK.min(m - b * RF_BLOCK);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            // Streams from 2^32 on: stream 0 is the map's own generator.
            rng.set_stream((((layer as u64) + 1) << 32) | b as u64);
            // proj[r, i] = φ_r · w_i, the block's weights drawn a few units at a time (the
            // stream's order: unit i's k weights in turn) so that at most RF_DRAW_BYTES of
            // them are held, however wide the layer's input.
            let mut proj = vec![0.0; n_rows * width];
            let chunk = (RF_DRAW_BYTES / (8 * k.max(1))).clamp(1, width);
            let mut w: Vec<f64> = Vec::with_capacity(chunk * k);
            for i0 in (0..width).step_by(chunk) {
                let units = chunk.min(width - i0);
                w.clear();
                w.extend((0..units * k).map(|_| -> f64 { StandardNormal.sample(&mut rng) }));
                // SAFETY: proj is n_rows × width (row stride width), written at columns
                // i0..i0 + units; φ is n_rows × k (row stride k); w read as its k × units
                // transpose (column stride k, row stride 1).
                unsafe {
                    gemm::gemm(
                        n_rows,
                        units,
                        k,
                        proj.as_mut_ptr().add(i0),
                        1,
                        width as isize,
                        false,
                        rows.phi.as_ptr(),
                        1,
                        k as isize,
                        w.as_ptr(),
                        k as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
            let relu: Vec<f64> = proj
                .iter()
                .map(|&u| if u > 0.0 { norm * u } else { 0.0 })
                .collect();
            let step: Vec<f64> = proj
                .iter()
                .map(|&u| if u > 0.0 { norm } else { 0.0 })
                .collect();
            (relu, step)
        })
        .collect();
    let mut phi = vec![0.0; n_rows * m];
    let mut step = vec![0.0; n_rows * m];
    for (b, (rb, sb)) in parts.iter().enumerate() {
        let width = RF_BLOCK.min(m - b * RF_BLOCK);
        for r in 0..n_rows {
            let at = r * m + b * RF_BLOCK;
            phi[at..at + width].copy_from_slice(&rb[r * width..(r + 1) * width]);
            step[at..at + width].copy_from_slice(&sb[r * width..(r + 1) * width]);
        }
    }
    (m, phi, step)
}

/// NTKSketch relu: per row, `u = φ/‖φ‖`, the PolySketch powers of `u`, and the two
/// polynomial feature vectors reduced to `m` columns.
fn sketch_relu(
    rows: &Rows,
    poly: &PolySketch,
    sqrt_c1: &[f64],
    sqrt_c0: &[f64],
    reduce1: &PolyReduce,
    reduce0: &PolyReduce,
) -> (usize, Vec<f64>, Vec<f64>) {
    let n_rows = rows.samples * rows.pixels();
    let k = rows.kphi;
    let (k1, k0) = (reduce1.output_dim(), reduce0.output_dim());
    let mut phi = vec![0.0; n_rows * k1];
    let mut step = vec![0.0; n_rows * k0];
    phi.par_chunks_mut(k1)
        .zip(step.par_chunks_mut(k0))
        .enumerate()
        .for_each_init(
            || {
                (
                    polysketch::Scratch::default(),
                    Vec::new(),
                    Vec::new(),
                    vec![0.0; k],
                )
            },
            |(scratch, full, work, u), (r, (phi_row, step_row))| {
                let row = &rows.phi[r * k..(r + 1) * k];
                let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
                if norm > 0.0 {
                    for (d, v) in u.iter_mut().zip(row) {
                        *d = v / norm;
                    }
                } else {
                    u.fill(0.0);
                }
                let powers = if norm > 0.0 {
                    poly.powers(u, scratch)
                } else {
                    Vec::new()
                };
                // [√c₀, √c₁ u, √c_j S_j(u) for c_j > 0], times `scale`.
                let features = |sqrt_c: &[f64], scale: f64, full: &mut Vec<f64>| {
                    full.clear();
                    full.push(scale * sqrt_c[0]);
                    full.extend(u.iter().map(|v| scale * sqrt_c[1] * v));
                    for (j, &c) in sqrt_c.iter().enumerate().skip(2) {
                        if c > 0.0 {
                            match powers.get(j - 2) {
                                Some(p) => full.extend(p.iter().map(|v| scale * c * v)),
                                None => full.extend(std::iter::repeat_n(0.0, poly.output_dim())),
                            }
                        }
                    }
                };
                let half = std::f64::consts::FRAC_1_SQRT_2;
                features(sqrt_c1, norm * half, full);
                reduce1.apply(full, work, phi_row);
                features(sqrt_c0, half, full);
                reduce0.apply(full, work, step_row);
            },
        );
    (k1, phi, step)
}
