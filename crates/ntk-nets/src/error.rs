//! The one error type of `ntk-nets`.

use std::path::PathBuf;

/// Everything that can go wrong while reading a spec, weights or inputs, or running a network.
///
/// Every variant names what is wrong: the layer index and field for a spec, the key for a
/// weights file, the file and field for an array.
#[derive(Debug, thiserror::Error)]
pub enum NetsError {
    /// The spec is not valid JSON, or not an object of the expected form.
    #[error("spec: {0}")]
    SpecJson(String),
    /// A field at the top level of the spec is missing or wrong.
    #[error("spec field `{field}`: {message}")]
    SpecField { field: String, message: String },
    /// A layer of the spec is wrong; `index` is its position in `layers`.
    #[error("spec layer {index} ({kind}), field `{field}`: {message}")]
    SpecLayer {
        index: usize,
        kind: String,
        field: String,
        message: String,
    },
    /// A file could not be read or written: the path and what went wrong, said once
    /// (see [`describe_io`]).
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// A weights file is malformed, or does not match the network (key named).
    #[error("weights {}: {message}", path.display())]
    Weights { path: PathBuf, message: String },
    /// A `.npy` array is malformed or does not fit (file and field named).
    #[error("array {}: {message}", path.display())]
    Array { path: PathBuf, message: String },
    /// An input holds NaN or ±Inf.
    #[error("{what}: non-finite value {value} at flat index {index}")]
    NonFinite {
        what: String,
        index: usize,
        value: f64,
    },
    /// The input batch does not have the shape the network expects.
    #[error("input shape {got:?} does not match the network's input shape [N, {expected:?}]")]
    InputShape {
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    /// Something the spec asks for would not fit in memory.
    #[error(
        "{what} need {:.1} GiB but only {:.1} GiB of memory are available; use a smaller network",
        *needed as f64 / 1073741824.0,
        *available as f64 / 1073741824.0
    )]
    TooLarge {
        what: String,
        needed: u128,
        available: u64,
    },
    /// A backend could not be set up or is not compiled in.
    #[error("backend: {0}")]
    Backend(String),
    /// An op of a graph network cannot run on its inputs (wrapped in [`NetsError::Node`]
    /// by the interpreter, which knows the node).
    #[error("{0}")]
    Op(String),
    /// A node of a graph network is wrong: its name, op type and what is wrong.
    #[error("node {node:?} ({op}): {message}")]
    Node {
        node: String,
        op: String,
        message: String,
    },
    /// An ONNX file cannot be read, or uses what ntk does not support.
    #[error("onnx {}: {message}", path.display())]
    Onnx { path: PathBuf, message: String },
}

impl NetsError {
    /// An op error (see [`NetsError::Op`]).
    pub fn op(message: impl Into<String>) -> Self {
        NetsError::Op(message.into())
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        NetsError::Io {
            message: describe_io(&path, &source),
            path,
        }
    }
}

/// What an I/O error on `path` means to a user: a missing folder is named ("the folder
/// `out/run` does not exist"), otherwise the OS's own words, once.
pub fn describe_io(path: &std::path::Path, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound
        && let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.is_dir()
    {
        return format!(
            "the folder {} does not exist (create it first)",
            parent.display()
        );
    }
    e.to_string()
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, NetsError>;
