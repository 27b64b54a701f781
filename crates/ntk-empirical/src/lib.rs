//! # ntk-empirical
//!
//! Finite-width empirical Neural Tangent Kernels, after Novak, Sohl-Dickstein & Schoenholz,
//! *Fast Finite Width Neural Tangent Kernel* (ICML 2022):
//! `Θ(x1, x2) = J(x1) J(x2)ᵀ`, `J = ∂f/∂θ`.
//!
//! Three methods ([`Method`]):
//! - [`jacobian`]: Jacobian contraction, for any burn [`burn::module::Module`] (the reference);
//! - [`structured`]: structured derivatives, never building `J` (the fast path);
//! - [`ntk_vp`]: NTK-vector products `Θ·v`;
//!
//! and the kernel kinds of neural-tangents ([`KernelKind`]): full `[N1, N2, O, O]`, trace
//! (mean over outputs) `[N1, N2]`, diagonal `[N1, N2, O]`, sum-of-logits (pNTK) and the
//! empirical NNGP. [`empirical_kernel`] tiles large inputs under a memory bound and uses
//! the symmetry of `Θ(x, x)`.

pub mod cancel;
pub mod cost;
pub mod engine;
pub mod error;
pub mod graph;
pub mod jacobian;
pub mod kernel;
pub mod linearize;
pub mod monte_carlo;
pub mod ntk_vp;
pub mod structured;
pub mod tiles;

pub use cancel::Cancel;
pub use cost::Method;
pub use engine::{
    EmpiricalOptions, KernelOutput, TilePlan, compute_tile, empirical_kernel, place_tile, plan,
    tile_kernel,
};
pub use error::{EmpiricalError, Result};
pub use kernel::KernelKind;
pub use linearize::Linearized;
pub use monte_carlo::{MonteCarlo, monte_carlo_kernel};
pub use structured::ConvStrategy;

/// Whether `NTK_PROFILE` is set: the structured method then prints the time of each phase
/// (forward, each layer's contribution and VJP, each GEMM block) to stderr.
pub fn profiling() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("NTK_PROFILE").is_some())
}
