//! # ntk-analysis
//!
//! What users do with a Neural Tangent Kernel once they have it: pure `f64` linear algebra on
//! [`faer`], no burn. Kernels are row-major `&[f64]` slices (e.g. the `data` of an `.npy`
//! kernel `[n, n]`), wrapped in a checked [`Matrix`] view where a function needs shapes.
//!
//! - [`spectrum`]: eigenvalues (descending), trace, condition number, effective rank
//!   (participation ratio and entropy), largest stable learning rate `2n/λmax`;
//! - [`alignment`]: kernel-target alignment `⟨K, YYᵀ⟩_F/(‖K‖_F‖YYᵀ‖_F)`, raw and centred
//!   (Cortes et al. 2012);
//! - [`distance`]: kernel distance `1 − cos(K₁, K₂)` and kernel velocity (Fort et al. 2020);
//! - [`predict`]: closed-form gradient-flow predictions and GP inference, with the
//!   conventions of neural-tangents' `predict.gradient_descent_mse` and
//!   `predict.gp_inference` (loss normalised by `n·c`, `diag_reg` relative to the mean
//!   diagonal unless absolute);
//! - [`ridge`]: linear ridge regression on explicit features (the primal form of kernel
//!   ridge regression, for sketched NTK features).
//!
//! Bad user data — wrong shapes, NaN/Inf, an asymmetric kernel, a singular system — is an
//! [`AnalysisError`], never a panic.
//!
//! ```
//! use ntk_analysis::{Matrix, spectrum, predict};
//! let k = [2.0, 1.0, 1.0, 2.0]; // [2, 2]
//! let s = spectrum::spectrum(&k, 2).unwrap();
//! assert!((s.lambda_max - 3.0).abs() < 1e-12 && (s.condition_number - 3.0).abs() < 1e-12);
//! let y = [1.0, -1.0]; // [2, 1]
//! let gd = predict::GradientDescentMse::new(
//!     Matrix::square("K", &k, 2).unwrap(),
//!     Matrix::new("Y", &y, 2, 1).unwrap(),
//!     1.0,
//!     predict::DiagReg::default(),
//! )
//! .unwrap();
//! let p = gd.predict(f64::INFINITY, None, None).unwrap();
//! assert_eq!(p.train, vec![1.0, -1.0]);
//! ```

pub mod alignment;
pub mod distance;
pub mod error;
pub mod matrix;
pub mod predict;
pub mod ridge;
pub mod spectrum;

pub use error::{AnalysisError, Result};
pub use matrix::Matrix;
