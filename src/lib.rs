//! # ntk
//!
//! Neural Tangent Kernels of real networks, built on burn: the command-line tool `ntk` and
//! the library crates it is made of.
//!
//! - [`nets`] (`ntk-nets`): networks from a JSON spec or Rust code, PyTorch-layout weights;
//! - [`empirical`] (`ntk-empirical`): finite-width NTKs (Jacobian contraction, structured
//!   derivatives, NTK-vector products);
//! - [`infinite`] (`ntk-infinite`): infinite-width kernels;
//! - [`data`]: the bundled datasets; [`demo`]: what `ntk` without arguments runs.

pub use ntk_analysis as analysis;
pub use ntk_empirical as empirical;
pub use ntk_infinite as infinite;
pub use ntk_nets as nets;

pub mod analysis_cmd;
pub mod arch;
pub mod bench;
pub mod compare_cmd;
pub mod data;
pub mod demo;
pub mod features_cmd;
pub mod infinite_cmd;
pub mod outputs;
pub mod plot;
pub mod score;
pub mod studies;
pub mod train;
pub mod train_cmd;
