//! # ntk-nets
//!
//! Networks for Neural Tangent Kernel work, defined in burn: dense, conv2d, activations
//! (relu, erf, tanh, gelu, identity), flatten, global average pooling and average pooling,
//! under the NTK or the standard parameterization, f32 or f64.
//!
//! A network comes from the JSON spec of `shared/spec/network-spec.md` ([`NetworkSpec`])
//! or from Rust code ([`NetworkSpec::builder`]); its parameters from a seed
//! ([`NetworkConfig::init`]) or a PyTorch-layout safetensors file ([`Network::load`]).
//! Inputs are `.npy` arrays `[N, *input_shape]` ([`array::read_inputs`]).
//!
//! Every error on user data is a [`NetsError`] naming the layer index and field, the
//! weights key, or the file and field; nothing here panics on user data.

pub mod array;
pub mod backend;
pub mod builder;
pub mod error;
pub mod graph;
pub mod layers;
pub mod memory;
pub mod network;
pub mod npy_header;
pub mod spec;
pub mod weights;

pub use array::{FloatKind, HostArray};
pub use backend::{BackendKind, Precision};
pub use builder::SpecBuilder;
pub use error::{NetsError, Result};
pub use layers::Features;
pub use network::{Layer, Network, NetworkConfig, random_params, to_host};
pub use spec::{Activation, FeatureShape, LayerSpec, NetworkSpec, Padding, Parameterization};

/// Re-export of burn, so users build modules and devices with the same version.
pub use burn;
