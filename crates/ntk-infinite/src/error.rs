//! The one error type of `ntk-infinite`.

/// Everything that can go wrong while computing infinite-width kernels.
///
/// Every variant names what is wrong: the layer (index and type) for a network the
/// closed forms do not cover, the array and position for bad inputs, the estimate and the
/// bound for a computation that would not fit in memory.
#[derive(Debug, thiserror::Error)]
pub enum InfiniteError {
    /// The spec itself is invalid (parsing or shape validation in `ntk-nets`).
    #[error(transparent)]
    Spec(#[from] ntk_nets::NetsError),
    /// An input batch does not have the shape `[N, *input_shape]`.
    #[error("{what}: shape {got:?} does not match [N, {expected:?}] (the spec's input_shape)")]
    InputShape {
        what: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    /// An input batch holds no samples.
    #[error("{what}: holds no samples (N = 0)")]
    NoSamples { what: String },
    /// An input holds NaN or ±Inf.
    #[error("{what}: non-finite value {value} at flat index {index}")]
    NonFiniteInput {
        what: String,
        index: usize,
        value: f64,
    },
    /// The network contains something the infinite-width recursions cannot handle.
    #[error("layer {index} ({kind}): {message}")]
    Unsupported {
        index: usize,
        kind: String,
        message: String,
    },
    /// A node of a graph spec has no infinite-width rule (or its input does not allow one).
    #[error("node {node:?} ({op}): {message}")]
    UnsupportedNode {
        node: String,
        op: String,
        message: String,
    },
    /// The computation would need more working memory than allowed.
    #[error(
        "the infinite-width kernels need about {needed} bytes of working memory ({detail}), \
         above the bound max_memory = {limit} bytes"
    )]
    TooMuchMemory {
        needed: u64,
        limit: u64,
        detail: String,
    },
    /// A feature map, with its outputs and working set, would pass its memory bound
    /// (checked before the transform or batch that would pass it is allocated).
    #[error("the feature map needs more than {} ({detail}), above max_memory = {}",
        crate::features::budget::size(*needed), crate::features::budget::size(*limit))]
    FeatureMemory {
        needed: u64,
        limit: u64,
        detail: String,
    },
    /// An option is out of range (named).
    #[error("option {option}: {message}")]
    Option { option: String, message: String },
    /// NaN or ±Inf appeared in a kernel (inputs so large that a layer overflows).
    #[error("the {kernel} kernel is non-finite ({value} at [{row}, {col}]): the inputs overflow")]
    NonFiniteKernel {
        kernel: &'static str,
        row: usize,
        col: usize,
        value: f64,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, InfiniteError>;

pub(crate) fn unsupported(index: usize, kind: &str, message: impl Into<String>) -> InfiniteError {
    InfiniteError::Unsupported {
        index,
        kind: kind.to_string(),
        message: message.into(),
    }
}
