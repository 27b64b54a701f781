//! Compute backends and float precision.
//!
//! burn 0.22 picks the backend at run time through a [`Device`]. We create every tensor
//! with an explicit dtype (never the device default), so f32 and f64 networks can live in
//! one process on the same device.

use crate::error::{NetsError, Result};
use burn::tensor::{DType, Device};

/// Which burn backend runs the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// burn-flex, burn 0.22's CPU backend (gemm-based matmul). The default: it measured
    /// faster than ndarray on the forward+backward of the perf networks (see README).
    #[default]
    Flex,
    /// burn-ndarray, the classic CPU backend.
    Ndarray,
    /// burn-wgpu (GPU); only with the cargo feature `wgpu`, f32 only.
    Wgpu,
}

impl BackendKind {
    /// All backend names accepted by [`BackendKind::parse`].
    pub const NAMES: [&'static str; 3] = ["flex", "ndarray", "wgpu"];

    /// Parses `flex`, `ndarray` or `wgpu`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "flex" => Ok(BackendKind::Flex),
            "ndarray" => Ok(BackendKind::Ndarray),
            "wgpu" => Ok(BackendKind::Wgpu),
            other => Err(NetsError::Backend(format!(
                "unknown backend {other:?} (known: flex, ndarray, wgpu)"
            ))),
        }
    }

    /// The name of this backend.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
        }
    }

    /// A device of this backend (without autodiff), checking that `precision` is supported.
    pub fn device(self, precision: Precision) -> Result<Device> {
        match self {
            BackendKind::Flex => Ok(Device::flex()),
            #[allow(deprecated)]
            BackendKind::Ndarray => Ok(Device::ndarray()),
            BackendKind::Wgpu => wgpu_device(precision),
        }
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_device(precision: Precision) -> Result<Device> {
    if precision == Precision::F64 {
        return Err(NetsError::Backend(
            "the wgpu backend computes in f32 only; use --dtype f32 or a CPU backend".into(),
        ));
    }
    Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device(_precision: Precision) -> Result<Device> {
    Err(NetsError::Backend(
        "this build has no wgpu backend; rebuild with `--features wgpu`".into(),
    ))
}

/// Float precision of a computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    F32,
    #[default]
    F64,
}

impl Precision {
    /// Parses `f32` or `f64`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "f32" | "float32" => Ok(Precision::F32),
            "f64" | "float64" => Ok(Precision::F64),
            other => Err(NetsError::Backend(format!(
                "unknown dtype {other:?} (known: f32, f64)"
            ))),
        }
    }

    /// The burn dtype.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F64 => DType::F64,
        }
    }

    /// The name (`f32`, `f64`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F64 => "f64",
        }
    }
}
