//! The error type of the crate.

/// Everything that can be wrong with the matrices handed to this crate. User data never
/// makes these functions panic: a wrong shape, a NaN, an asymmetric kernel or a singular
/// system is one of these variants, naming the argument (`what`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalysisError {
    /// A matrix that must be square is not.
    #[error("{what}: expected a square matrix, got [{rows}, {cols}]")]
    NotSquare {
        what: String,
        rows: usize,
        cols: usize,
    },
    /// The number of values does not match the declared shape, or two arguments disagree.
    #[error("{what}: size mismatch: {detail}")]
    SizeMismatch { what: String, detail: String },
    /// A matrix with no entries where at least one is needed.
    #[error("{what} is empty")]
    Empty { what: String },
    /// NaN or ±Inf in an input.
    #[error("{what}: non-finite value {value} at flat index {index}")]
    NonFinite {
        what: String,
        index: usize,
        value: f64,
    },
    /// `|K[i,j] − K[j,i]|` exceeds the tolerance (relative to `max |K|`).
    #[error(
        "{what} is not symmetric: |K[{i},{j}] - K[{j},{i}]| = {diff:.3e} > {tol:.3e} (= {rtol:e} * max|K|)"
    )]
    NotSymmetric {
        what: String,
        i: usize,
        j: usize,
        diff: f64,
        tol: f64,
        rtol: f64,
    },
    /// A linear system that cannot be solved (singular or not positive definite).
    #[error(
        "{what} is singular or not positive definite: {detail}; add a diagonal regulariser (diag_reg > 0)"
    )]
    Singular { what: String, detail: String },
    /// A quantity whose normalisation is zero (e.g. the alignment of a zero kernel).
    #[error("{what} has zero Frobenius norm; the normalised quantity is undefined")]
    ZeroNorm { what: String },
    /// A scalar parameter out of its domain (a negative time, a NaN learning rate, ...).
    #[error("invalid {name}: {detail}")]
    InvalidParameter { name: String, detail: String },
    /// The eigendecomposition did not converge (faer's iteration limit).
    #[error("eigendecomposition of {what} did not converge")]
    NoConvergence { what: String },
}

/// `Result` with [`AnalysisError`].
pub type Result<T> = std::result::Result<T, AnalysisError>;
