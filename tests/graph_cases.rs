//! Graph networks against PyTorch references: the `onnx-*` cases of `shared/cases`
//! (made by `shared/oracle/make_onnx_cases.py`: torch.func eNTK in f64 of the same f32
//! weights), for the dynamic-batch and the batch-1 exports, ONNX weights and state dicts.

mod common;

use common::{cases_dir, npy, rel_err};
use ntk::nets::graph::{GraphNetwork, load_onnx};
use ntk::nets::{BackendKind, Precision};
use std::path::{Path, PathBuf};

fn onnx_cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file() && p.join("expected_ntk_full.npy").is_file())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no onnx cases");
    v
}

fn load(case: &Path, file: &str, weights: bool, precision: Precision) -> GraphNetwork {
    let device = BackendKind::Flex.device(precision).unwrap();
    let w = case.join("state_dict.safetensors");
    load_onnx(
        case.join(file),
        weights.then_some(w.as_path()),
        &device,
        precision,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", case.display()))
}

#[test]
fn onnx_forward_matches_torch() {
    for case in onnx_cases() {
        for file in ["model.onnx", "model_b1.onnx"] {
            for weights in [false, true] {
                let net = load(&case, file, weights, Precision::F64);
                for (x, f) in [
                    ("x1.npy", "expected_f_x1.npy"),
                    ("x2.npy", "expected_f_x2.npy"),
                ] {
                    let out = net.forward_host(&npy(case.join(x))).unwrap();
                    let err = rel_err(&out, &npy(case.join(f)));
                    assert!(
                        err < 1e-10,
                        "{} {file}: {f} rel err {err:.3e}",
                        case.display()
                    );
                }
            }
            let net = load(&case, file, false, Precision::F32);
            let out = net.forward_host(&npy(case.join("x1.npy"))).unwrap();
            let err = rel_err(&out, &npy(case.join("expected_f_x1.npy")));
            assert!(
                err < 1e-5,
                "{} {file} f32: rel err {err:.3e}",
                case.display()
            );
        }
    }
}

#[test]
fn onnx_parameters_follow_pytorch() {
    for case in onnx_cases() {
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("meta.json")).unwrap())
                .unwrap();
        let want: Vec<&str> = meta["parameter_names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let net = load(&case, "model.onnx", false, Precision::F64);
        let mut got: Vec<&str> = net.graph.params.iter().map(|p| p.name.as_str()).collect();
        let mut want_sorted = want.clone();
        got.sort();
        want_sorted.sort();
        assert_eq!(got, want_sorted, "{}", case.display());
        assert_eq!(
            net.graph.n_params() as u64,
            meta["parameters"].as_u64().unwrap()
        );
    }
}

use ntk::empirical::{EmpiricalOptions, KernelKind, Method};

fn kernel(
    net: &GraphNetwork,
    x1: &ntk::nets::HostArray,
    x2: Option<&ntk::nets::HostArray>,
    method: Method,
    kind: KernelKind,
) -> ntk::nets::HostArray {
    let opts = EmpiricalOptions {
        method,
        kind,
        ..Default::default()
    };
    ntk::empirical::graph::empirical_kernel(net, x1, x2, &opts, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("{}: {e}", net.graph.source))
        .kernel
}

#[test]
fn onnx_kernels_match_torch_func() {
    for case in onnx_cases() {
        let x1 = npy(case.join("x1.npy"));
        let x2 = npy(case.join("x2.npy"));
        let full = npy(case.join("expected_ntk_full.npy"));
        let trace = npy(case.join("expected_ntk_trace.npy"));
        for file in ["model.onnx", "model_b1.onnx"] {
            for (precision, tol) in [(Precision::F64, 1e-10), (Precision::F32, 1e-4)] {
                let net = load(&case, file, false, precision);
                for method in [Method::Structured, Method::Jacobian] {
                    let k = kernel(&net, &x1, Some(&x2), method, KernelKind::Full);
                    let err = rel_err(&k, &full);
                    assert!(
                        err < tol,
                        "{} {file} {precision:?} {method:?} full: {err:.3e}",
                        case.display()
                    );
                    let k = kernel(&net, &x1, Some(&x2), method, KernelKind::Trace);
                    let err = rel_err(&k, &trace);
                    assert!(
                        err < tol,
                        "{} {file} {precision:?} {method:?} trace: {err:.3e}",
                        case.display()
                    );
                }
            }
        }
    }
}
