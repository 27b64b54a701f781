//! Kernel kinds and their conventions (those of neural-tangents).

use crate::error::{Result, option_err};

/// Which kernel to compute, with neural-tangents' conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelKind {
    /// `Θ[n1, n2, o, o'] = Σ_p ∂f_o(x1_n1)/∂θ_p · ∂f_o'(x2_n2)/∂θ_p`, shape `[N1, N2, O, O]`
    /// (neural-tangents' `trace_axes=()`).
    #[default]
    Full,
    /// The MEAN over outputs of the diagonal, `(1/O) Σ_o Θ[n1, n2, o, o]`, shape `[N1, N2]`
    /// (neural-tangents' `trace_axes=(-1,)` divides by O).
    Trace,
    /// `Θ[n1, n2, o, o]`, shape `[N1, N2, O]` (neural-tangents' `diagonal_axes=(-1,)`, no
    /// division).
    Diagonal,
    /// The pNTK of Mohamadi et al. (2022): `(1/O) ∇θ(Σ_o f_o(x1)) · ∇θ(Σ_o f_o(x2))ᵀ
    /// = (1/O) Σ_{o,o'} Θ[n1, n2, o, o']`, shape `[N1, N2]`, computed at the cost of one
    /// output.
    SumOfLogits,
    /// The empirical NNGP `(1/O) f(x1) f(x2)ᵀ`, shape `[N1, N2]` (mean over outputs, as
    /// neural-tangents' `empirical_nngp_fn` with `trace_axes=(-1,)`).
    Nngp,
}

impl KernelKind {
    /// Names accepted by [`KernelKind::parse`].
    pub const NAMES: [&'static str; 5] = ["full", "trace", "diagonal", "sum-of-logits", "nngp"];

    /// Parses a kernel name.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "full" => KernelKind::Full,
            "trace" => KernelKind::Trace,
            "diagonal" | "diag" => KernelKind::Diagonal,
            "sum-of-logits" | "pntk" => KernelKind::SumOfLogits,
            "nngp" => KernelKind::Nngp,
            other => {
                return Err(option_err(
                    "kernel",
                    format!(
                        "unknown kernel {other:?} (known: {})",
                        Self::NAMES.join(", ")
                    ),
                ));
            }
        })
    }

    /// The name of this kind.
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Full => "full",
            KernelKind::Trace => "trace",
            KernelKind::Diagonal => "diagonal",
            KernelKind::SumOfLogits => "sum-of-logits",
            KernelKind::Nngp => "nngp",
        }
    }

    /// Output shape for `n1 × n2` samples and `o` outputs.
    pub fn shape(self, n1: usize, n2: usize, o: usize) -> Vec<usize> {
        match self {
            KernelKind::Full => vec![n1, n2, o, o],
            KernelKind::Diagonal => vec![n1, n2, o],
            _ => vec![n1, n2],
        }
    }

    /// Scalars per sample pair.
    pub fn per_pair(self, o: usize) -> usize {
        match self {
            KernelKind::Full => o * o,
            KernelKind::Diagonal => o,
            _ => 1,
        }
    }
}
