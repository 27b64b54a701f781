//! The exact infinite-width kernels (`ntk-infinite`) against the neural-tangents oracle,
//! and the finite-width empirical NTK converging to them as widths grow.
//!
//! - Every case folder of `shared/cases` with `expected_nngp_analytic.npy` /
//!   `expected_ntk_analytic.npy` (the directory is scanned, so new cases are checked too):
//!   both kernels from `spec.json` (or every `spec_W*.json`: the analytic kernel does not
//!   depend on the width under the ntk parameterization) and `x1.npy`, `x2.npy`, to 1e-10
//!   relative to the largest entry of the expected kernel. Cases whose `oracle.json` marks
//!   the analytic kernel unavailable must give an error here as well.
//! - Graph specs (`docs/graph-spec.md`: residual sums, channel concat, layer norm) the same
//!   way, from the cases of `tests/graph-stax/` (made by its `make_cases.py` with stax)
//!   and any graph-spec case dropped into `shared/cases`.
//! - Monte Carlo: the mean relative Frobenius error of empirical NTKs of random wide MLPs
//!   (`wide-mlp-convergence` specs) against the exact NTK falls like `c / √width`.

mod common;

use common::{cases_dir, npy, rel_err};
use ntk::empirical::{EmpiricalOptions, KernelKind, Method, empirical_kernel};
use ntk::infinite::{InfiniteError, InfiniteKernels, InfiniteOptions, graph_kernels, kernels};
use ntk::nets::graph::spec::{GraphSpec, is_graph_spec};
use ntk::nets::{BackendKind, HostArray, NetworkConfig, NetworkSpec, Precision};
use std::path::{Path, PathBuf};

/// The spec files of a case: `spec.json`, else every `spec*.json`.
fn spec_files(case: &Path) -> Vec<PathBuf> {
    let single = case.join("spec.json");
    if single.is_file() {
        return vec![single];
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(case)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("spec") && n.ends_with(".json"))
        })
        .collect();
    v.sort();
    v
}

/// Every case folder (sorted): the shared cases, then the graph cases of this repository.
fn case_folders() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [
        cases_dir(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graph-stax"),
    ] {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        v.sort();
        out.extend(v);
    }
    out
}

/// The exact kernels of a sequential or graph spec file.
fn analytic(
    spec: &Path,
    x1: &HostArray,
    x2: Option<&HostArray>,
) -> Result<InfiniteKernels, InfiniteError> {
    let text = std::fs::read_to_string(spec).unwrap();
    let o = InfiniteOptions::default();
    if is_graph_spec(&text) {
        let g = GraphSpec::from_file(spec).map_err(InfiniteError::Spec)?;
        graph_kernels(&g, x1, x2, &o)
    } else {
        kernels(&NetworkSpec::from_json(&text).unwrap(), x1, x2, &o)
    }
}

/// The `analytic` note of `oracle.json` (or `meta.json`), if any.
fn analytic_note(case: &Path) -> Option<String> {
    for file in ["oracle.json", "meta.json"] {
        let Ok(text) = std::fs::read_to_string(case.join(file)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if let Some(s) = v.get("analytic").and_then(|a| a.as_str()) {
            return Some(s.to_string());
        }
    }
    None
}

#[test]
fn exact_kernels_match_the_oracle() {
    let mut checked = 0;
    let mut report = Vec::new();
    for case in case_folders() {
        let nngp_file = case.join("expected_nngp_analytic.npy");
        let ntk_file = case.join("expected_ntk_analytic.npy");
        let note = analytic_note(&case).unwrap_or_default();
        if !nngp_file.is_file() || !ntk_file.is_file() {
            if note.starts_with("unavailable") {
                // neural-tangents refused this network: so must we.
                let x1 = npy(case.join("x1.npy"));
                let err = analytic(&case.join("spec.json"), &x1, None).unwrap_err();
                assert!(
                    matches!(
                        err,
                        InfiniteError::Unsupported { .. } | InfiniteError::UnsupportedNode { .. }
                    ),
                    "{}: expected an unsupported-layer error, got {err}",
                    case.display()
                );
                report.push(format!("{}: refused like the oracle", case.display()));
            }
            continue;
        }
        let want_nngp = npy(&nngp_file);
        let want_ntk = npy(&ntk_file);
        let x1 = npy(case.join("x1.npy"));
        let x2 = npy(case.join("x2.npy"));
        let specs = spec_files(&case);
        assert!(!specs.is_empty(), "{}: no spec", case.display());
        for spec_path in specs {
            let got = analytic(&spec_path, &x1, Some(&x2))
                .unwrap_or_else(|e| panic!("{}: {e}", spec_path.display()));
            let e_nngp = rel_err(&got.nngp, &want_nngp);
            let e_ntk = rel_err(&got.ntk, &want_ntk);
            report.push(format!(
                "{}: nngp {e_nngp:.2e} ntk {e_ntk:.2e} ({note})",
                spec_path.display()
            ));
            assert!(
                e_nngp <= 1e-10 && e_ntk <= 1e-10,
                "{}: rel err nngp {e_nngp:.3e}, ntk {e_ntk:.3e}{}",
                spec_path.display(),
                coincidence_hint(&got.ntk, &want_ntk, &x1, &x2)
            );
            checked += 1;
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(checked >= 10, "only {checked} analytic cases found");
}

/// The finite-width forward pass of each graph-stax case equals stax's `apply_fn` with the
/// same parameters (`forward_weights.safetensors`, in the spec's layout): the graph nodes
/// mean what the stax layers of the oracle mean (attention included), through `ntk forward`.
#[test]
fn graph_forward_matches_stax_apply() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graph-stax");
    let mut checked = Vec::new();
    for case in case_folders() {
        let weights = case.join("forward_weights.safetensors");
        if !case.starts_with(&dir) || !weights.is_file() {
            continue;
        }
        let out = std::env::temp_dir().join(format!(
            "ntk-stax-forward-{}-{}.npy",
            case.file_name().unwrap().to_string_lossy(),
            std::process::id()
        ));
        let o = common::run_ntk(&[
            "forward",
            "--spec",
            case.join("spec.json").to_str().unwrap(),
            "--weights",
            weights.to_str().unwrap(),
            "--x",
            case.join("x1.npy").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "{}: {}",
            case.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let got = npy(&out);
        let want = npy(case.join("expected_forward.npy"));
        assert_eq!(got.shape, want.shape, "{}", case.display());
        let e = rel_err(&got, &want);
        assert!(e <= 1e-10, "{}: forward rel err {e:.3e}", case.display());
        checked.push(case.file_name().unwrap().to_string_lossy().into_owned());
        let _ = std::fs::remove_file(&out);
    }
    for name in [
        "transformer-block",
        "attention-identity",
        "attention-untied",
        "erf-family-mlp",
        "wrn-block",
    ] {
        assert!(
            checked.iter().any(|c| c == name),
            "{name} not checked: {checked:?}"
        );
    }
}

/// `x2 = None` (upper triangle, mirrored) gives the same kernels as passing `x1` twice.
#[test]
fn symmetric_call_equals_explicit_pair() {
    for case in case_folders() {
        if !case.join("expected_ntk_analytic.npy").is_file() {
            continue;
        }
        let spec = &spec_files(&case)[0];
        let x1 = npy(case.join("x1.npy"));
        let a = analytic(spec, &x1, None).unwrap();
        let b = analytic(spec, &x1, Some(&x1)).unwrap();
        assert!(rel_err(&a.ntk, &b.ntk) <= 1e-13, "{}", case.display());
        assert!(rel_err(&a.nngp, &b.nngp) <= 1e-13, "{}", case.display());
    }
}

/// If the worst NTK entry pairs two identical samples, says so: at correlation 1 the relu
/// derivative kernel has infinite slope (`~ 1/sqrt(1 - rho)`), so the 1e-16 rounding with
/// which neural-tangents computes a sample's variance and its covariance with an identical
/// sample (two different XLA ops) becomes 1e-10..1e-8 there; this crate computes both the
/// same way and gets correlation exactly 1.
fn coincidence_hint(got: &HostArray, want: &HostArray, x1: &HostArray, x2: &HostArray) -> String {
    let n2 = want.shape[1];
    let worst = (0..got.data.len())
        .max_by(|&a, &b| {
            let da = (got.data[a] - want.data[a]).abs();
            let db = (got.data[b] - want.data[b]).abs();
            da.total_cmp(&db)
        })
        .unwrap_or(0);
    let (i, j) = (worst / n2, worst % n2);
    let len = x1.data.len() / x1.shape[0];
    if x1.data[i * len..(i + 1) * len] == x2.data[j * len..(j + 1) * len] {
        format!(
            "; the worst entry [{i}, {j}] pairs two identical samples (correlation 1, where \
             the arc-cosine kernels amplify the oracle's rounding to ~sqrt(eps))"
        )
    } else {
        format!("; worst entry [{i}, {j}]")
    }
}

fn frobenius(a: &[f64]) -> f64 {
    a.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Least-squares slope of `ys` against `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    sxy / sxx
}

#[test]
fn empirical_ntk_converges_like_one_over_sqrt_width() {
    let case = cases_dir().join("wide-mlp-convergence");
    let x = npy(case.join("x1.npy"));
    let device = BackendKind::Flex.device(Precision::F64).unwrap();
    let spec64 = NetworkSpec::from_file(case.join("spec_W64.json")).unwrap();
    let exact = kernels(&spec64, &x, None, &InfiniteOptions::default()).unwrap();
    let norm = frobenius(&exact.ntk.data);
    let widths = [64usize, 256, 1024, 4096];
    let seeds = 0..12u64;
    let options = EmpiricalOptions {
        method: Method::Structured,
        kind: KernelKind::Trace,
        ..Default::default()
    };
    let mut log_w = Vec::new();
    let mut log_err = Vec::new();
    let mut lines = Vec::new();
    for &w in &widths {
        let spec = NetworkSpec::from_file(case.join(format!("spec_W{w}.json"))).unwrap();
        let errs: Vec<f64> = seeds
            .clone()
            .map(|seed| {
                let net = NetworkConfig::new(spec.clone())
                    .with_seed(seed)
                    .with_precision(Precision::F64)
                    .init(&device)
                    .unwrap();
                let k = empirical_kernel(&net, &x, None, &options, &mut |_, _| {}).unwrap();
                let diff: Vec<f64> = k
                    .kernel
                    .data
                    .iter()
                    .zip(&exact.ntk.data)
                    .map(|(a, b)| a - b)
                    .collect();
                frobenius(&diff) / norm
            })
            .collect();
        let mean = errs.iter().sum::<f64>() / errs.len() as f64;
        lines.push(format!(
            "W {w}: mean rel Frobenius error {mean:.4} (× √W = {:.3})",
            mean * (w as f64).sqrt()
        ));
        log_w.push((w as f64).ln());
        log_err.push(mean.ln());
    }
    let s = slope(&log_w, &log_err);
    eprintln!("{}\nlog-log slope {s:.3}", lines.join("\n"));
    assert!((s + 0.5).abs() <= 0.1, "slope {s:.3}, expected -0.5 ± 0.1");
}
