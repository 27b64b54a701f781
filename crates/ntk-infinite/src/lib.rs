//! # ntk-infinite
//!
//! Exact infinite-width kernels of the networks of a [`ntk_nets::NetworkSpec`]: the NNGP
//! (the covariance of one output at random initialisation, as all widths go to infinity)
//! and the NTK (the neural tangent kernel of one output in the same limit), computed in
//! plain `f64` with the conventions of neural-tangents `stax` v0.6.5
//! (`kernel_fn(x1, x2, ("nngp", "ntk"))`; Novak et al. 2020, arXiv 1912.02803), against
//! which it is tested to 1e-10 relative (`tests/infinite_oracle.rs`).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ntk_infinite::{InfiniteOptions, kernels};
//! let spec = ntk_nets::NetworkSpec::from_file("spec.json")?;
//! let (x1, _) = ntk_nets::array::read_npy("x1.npy")?;
//! let k = kernels(&spec, &x1, None, &InfiniteOptions::default())?;
//! println!("NTK {:?}", k.ntk.shape); // [N1, N1]
//! # Ok(()) }
//! ```
//!
//! ## What is implemented
//!
//! | layer | rule | module |
//! |---|---|---|
//! | `dense` | `Σ' = σ_w² Σ + σ_b²`; NTK `Σ' + σ_w² Θ` (`ntk`) or `n_in Σ + σ_w² Θ + 1` (`standard`) | [`dense`] |
//! | `conv2d` | average over the same filter offset on both pixels, zero padding, divisor `kh·kw`; strides; `same` (XLA split) / `valid`; then the dense rule with `fan_in = C·kh·kw` | [`conv`] |
//! | `relu`, `erf`, `gelu` | closed forms (arc-cosine, Williams, Tsuchida et al.) | [`activation`] |
//! | `tanh` | 2-D Gauss–Hermite quadrature, 64 points per axis by default (what the oracle uses) | [`activation`], [`quadrature`] |
//! | `identity` | nothing | |
//! | `avg_pool2d`, `global_avg_pool`, `flatten` | means over position pairs / all pairs / same-position pairs | [`pooling`] |
//!
//! ## Conventions (those of neural-tangents)
//!
//! - **One output.** Output channels are i.i.d. in the limit; the kernels are those of any
//!   one of them. Compare with the empirical NTK traced as a MEAN over outputs.
//! - **Input covariance** `⟨x, y⟩ / d` for vectors; for images `[C, H, W]` the
//!   channel-averaged covariance per pixel pair, `Σ_c x[c,p] y[c,q] / C`.
//! - **Spatial structure.** Without pooling only same-pixel pairs are needed (the
//!   `[H, W]` "diagonal" layout; conv and activations map the diagonal to itself and
//!   flatten averages it); with `avg_pool2d` or `global_avg_pool` all pixel pairs
//!   (`[H, W, H, W]`) are kept. neural-tangents makes the same choice (`diagonal_spatial`).
//! - **Pairs are independent.** With independent samples (`diagonal_batch`), the pair
//!   `(x1[i], x2[j])` needs only the two samples and their own per-pixel variances at each
//!   nonlinearity, so the `[N1, N2, H, W, H, W]` array is never built: each pair is
//!   computed on its own (rayon over rows), with the per-sample variance chains computed
//!   once. The working memory is estimated before starting and bounded by
//!   [`InfiniteOptions::max_memory`].
//! - **Gaussian inputs to nonlinearities.** A nonlinearity must follow a dense/conv
//!   layer, possibly through identity and pooling layers; otherwise (raw input, two
//!   nonlinearities in a row, a flatten of an image in between) the kernel is not defined
//!   by these recursions and [`kernels`] returns [`InfiniteError::Unsupported`] naming the
//!   layer, where neural-tangents raises too. A `flatten` of a vector is the identity.
//! - **Standard parameterization.** The NTK uses the finite fan-ins of the spec (the
//!   weight-gradient term is `fan_in · Σ`) and `+1` per layer with a bias parameter, as
//!   neural-tangents does; it is not a width-independent limit.
//!
//! ## Graph specs
//!
//! [`graph_kernels`]: the same kernels for graph specs (`docs/graph-spec.md`): residual
//! sums (stax `FanInSum`), channel concatenation (`FanInConcat`), layer norm without
//! learned scale and shift, pooling, leaky relu; BatchNorm, max-pool and the like are
//! refused naming the node. See [`graph`].
//!
//! ## Random features
//!
//! [`features`]: explicit NNGP/NTK feature maps `φ(x) ∈ ℝ^m` of relu networks (dense and
//! conv, with pooling), after Zandieh et al., NeurIPS 2021 (arXiv 2104.00415, 2104.01351):
//! NTK random features, NTKSketch (PolySketch of the arc-cosine polynomials, layer by
//! layer so biases are handled) and CNTKSketch (per pixel, linear in the pixels); their
//! inner products converge to [`kernels`] like `1/√m`.
//!
//! ## Numerical method for tanh
//!
//! tanh has no closed-form kernel. As neural-tangents' `ElementwiseNumerical(tanh, deg)`,
//! the expectations `E[φ(u)φ(v)]`, `E[φ'(u)φ'(v)]` are computed with the tensor-product
//! Gauss–Hermite rule of `deg²` points after writing `(u, v)` through the Cholesky factor
//! of their 2×2 covariance; nodes and weights come from Newton's method on the Hermite
//! recurrence, normalised like `scipy.special.roots_hermite`. With the oracle's `deg = 64`
//! this matches it to rounding; but the rule's own error against the true integral is
//! 1e-7 up to 4e-4 relative at variances of a few units (raise [`InfiniteOptions::tanh_quadrature_degree`] to
//! approach the true integral rather than the oracle).

pub mod activation;
pub mod attention;
pub mod branching;
pub mod conv;
pub mod covariance;
pub mod dense;
pub mod engine;
pub mod error;
pub mod features;
pub mod graph;
pub mod normalization;
#[cfg(test)]
mod peak_alloc;
pub mod plan;
pub mod pooling;
pub mod quadrature;
pub mod spatial;

pub use engine::{DEFAULT_TANH_DEGREE, InfiniteKernels, InfiniteOptions, kernels};
pub use error::{InfiniteError, Result};
pub use graph::{GraphPlan, graph_kernels};
