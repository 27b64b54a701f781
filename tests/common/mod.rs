//! Shared helpers of the workspace tests.
#![allow(dead_code)]

use ntk::nets::HostArray;
use ntk::nets::array::read_npy;
use std::path::{Path, PathBuf};

/// The reference cases: `$NTK_CASES_DIR`, else `../shared/cases` beside the checkout.
pub fn cases_dir() -> PathBuf {
    if let Ok(d) = std::env::var("NTK_CASES_DIR") {
        return PathBuf::from(d);
    }
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/cases");
    assert!(
        d.is_dir(),
        "reference cases not found at {} (set NTK_CASES_DIR)",
        d.display()
    );
    d
}

/// Every case folder that has weights and expected outputs.
pub fn oracle_cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("cases dir readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.join("weights.safetensors").is_file() && p.join("expected_f_x1.npy").is_file()
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no reference cases found");
    v
}

pub fn npy(path: impl AsRef<Path>) -> HostArray {
    read_npy(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
        .0
}

/// max |a - b| / max |b|
pub fn rel_err(a: &HostArray, b: &HostArray) -> f64 {
    assert_eq!(a.shape, b.shape, "shapes differ");
    let scale = b
        .data
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    a.data
        .iter()
        .zip(&b.data)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// Deterministic inputs in [-1, 1): `[n, *shape]` from an LCG seeded with `seed`.
pub fn inputs(shape: &[usize], n: usize, seed: u64) -> HostArray {
    let per: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let data = (0..n * per)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    let mut full = vec![n];
    full.extend_from_slice(shape);
    HostArray::new(full, data)
}

/// A fresh, empty scratch folder for one test (`{prefix}-{name}-{pid}` under the temp dir).
pub fn scratch(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("{prefix}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the `ntk` binary with `args`, capturing its output.
pub fn run_ntk(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ntk"))
        .args(args)
        .output()
        .unwrap()
}
