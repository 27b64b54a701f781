//! The one error type of `ntk-empirical`.

/// What can go wrong while computing an empirical kernel.
#[derive(Debug, thiserror::Error)]
pub enum EmpiricalError {
    /// The network, its weights or its inputs are wrong.
    #[error(transparent)]
    Nets(#[from] ntk_nets::NetsError),
    /// An option does not fit the request (named).
    #[error("{option}: {message}")]
    Option { option: String, message: String },
    /// The memory bound is too small for even one sample pair.
    #[error("memory bound of {bound} bytes is too small: one tile needs at least {needed} bytes")]
    Memory { bound: u64, needed: u64 },
    /// A NaN or Inf appeared during the computation (names the place).
    #[error("non-finite values appeared in {place}")]
    NonFinite { place: String },
    /// Reading or writing a file of a tiled run failed.
    #[error("{}: {message}", path.display())]
    Io {
        path: std::path::PathBuf,
        message: String,
    },
    /// The caller cancelled the computation (its [`crate::Cancel`] was set).
    #[error("cancelled")]
    Cancelled,
    /// A tile folder does not fit the run (manifest mismatch, missing or damaged tiles).
    #[error("tile folder {}: {message}", dir.display())]
    Tiles {
        dir: std::path::PathBuf,
        message: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, EmpiricalError>;

pub(crate) fn option_err(option: &str, message: impl Into<String>) -> EmpiricalError {
    EmpiricalError::Option {
        option: option.to_string(),
        message: message.into(),
    }
}
