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

use ntk::empirical::{ConvStrategy, EmpiricalOptions, KernelKind, Method};

fn kernel(
    net: &GraphNetwork,
    x1: &ntk::nets::HostArray,
    x2: Option<&ntk::nets::HostArray>,
    method: Method,
    kind: KernelKind,
) -> ntk::nets::HostArray {
    kernel_conv(net, x1, x2, method, kind, ConvStrategy::Auto)
}

fn kernel_conv(
    net: &GraphNetwork,
    x1: &ntk::nets::HostArray,
    x2: Option<&ntk::nets::HostArray>,
    method: Method,
    kind: KernelKind,
    conv: ConvStrategy,
) -> ntk::nets::HostArray {
    let opts = EmpiricalOptions {
        method,
        kind,
        conv,
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
                for method in [Method::Structured, Method::Jacobian, Method::NtkVp] {
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
                // Every ungrouped conv weight in the pixel-pair form (the cost model picks
                // it for the small maps of real networks' last stages).
                for (kind, want) in [(KernelKind::Full, &full), (KernelKind::Trace, &trace)] {
                    let k = kernel_conv(
                        &net,
                        &x1,
                        Some(&x2),
                        Method::Structured,
                        kind,
                        ConvStrategy::PixelPairs,
                    );
                    let err = rel_err(&k, want);
                    assert!(
                        err < tol,
                        "{} {file} {precision:?} pixel pairs {kind:?}: {err:.3e}",
                        case.display()
                    );
                }
            }
        }
    }
}

/// The graph-spec versions of the ONNX cases (node names = PyTorch names) with the
/// cases' state dicts give the ONNX files' kernels, and torch.func's.
#[test]
fn graph_specs_match_their_onnx_files() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/graph-specs");
    for (spec, case) in [
        ("preact-resnet.json", "onnx-preact-resnet"),
        ("tiny-encoder.json", "onnx-tiny-encoder"),
    ] {
        let case = cases_dir().join(case);
        let device = BackendKind::Flex.device(Precision::F64).unwrap();
        let w = case.join("state_dict.safetensors");
        let net = ntk::nets::graph::load(docs.join(spec), Some(&w), 0, &device, Precision::F64)
            .unwrap_or_else(|e| panic!("{spec}: {e}"));
        let x1 = npy(case.join("x1.npy"));
        let x2 = npy(case.join("x2.npy"));
        let f = net.forward_host(&x1).unwrap();
        eprintln!(
            "{spec} forward err {:.3e}",
            rel_err(&f, &npy(case.join("expected_f_x1.npy")))
        );
        assert!(
            rel_err(&f, &npy(case.join("expected_f_x1.npy"))) < 1e-10,
            "{spec} forward"
        );
        let onnx = load(&case, "model.onnx", true, Precision::F64);
        for method in [Method::Structured, Method::Jacobian, Method::NtkVp] {
            let k = kernel(&net, &x1, Some(&x2), method, KernelKind::Full);
            let err = rel_err(&k, &npy(case.join("expected_ntk_full.npy")));
            let ko = kernel(&onnx, &x1, Some(&x2), method, KernelKind::Full);
            eprintln!(
                "{spec} {method:?}: spec {err:.3e}, onnx {:.3e}, between {:.3e}",
                rel_err(&ko, &npy(case.join("expected_ntk_full.npy"))),
                rel_err(&k, &ko)
            );
            assert!(err < 1e-10, "{spec} {method:?}: {err:.3e}");
            let ko = kernel(&onnx, &x1, Some(&x2), method, KernelKind::Full);
            assert!(rel_err(&k, &ko) < 1e-12, "{spec} vs its onnx file");
        }
    }
}

/// Every example spec of docs/graph-specs loads, and its structured and NTK-vector-product
/// kernels (every kind) agree with Jacobian contraction.
#[test]
fn doc_graph_specs_methods_agree() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/graph-specs");
    for e in std::fs::read_dir(&docs).unwrap() {
        let path = e.unwrap().path();
        let device = BackendKind::Flex.device(Precision::F64).unwrap();
        let net = ntk::nets::graph::load(&path, None, 3, &device, Precision::F64)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let numel: usize = net.input_shape().iter().product();
        let mut shape = vec![2];
        shape.extend(net.input_shape());
        let x = ntk::nets::HostArray::new(
            shape,
            (0..2 * numel)
                .map(|i| ((i * 7919) % 97) as f64 / 48.0 - 1.0)
                .collect(),
        );
        for kind in [
            KernelKind::Full,
            KernelKind::Trace,
            KernelKind::Diagonal,
            KernelKind::SumOfLogits,
        ] {
            let b = kernel(&net, &x, None, Method::Jacobian, kind);
            for method in [Method::Structured, Method::NtkVp] {
                let a = kernel(&net, &x, None, method, kind);
                let err = rel_err(&a, &b);
                assert!(
                    err < 1e-10,
                    "{} {method:?} {kind:?}: {err:.3e}",
                    path.display()
                );
            }
        }
    }
}

/// `ntk empirical --spec model.onnx` end to end: the kernel file equals torch.func's; a
/// missing output folder is refused before any work; `--params` narrows the kernel.
#[test]
fn cli_empirical_on_onnx() {
    let case = cases_dir().join("onnx-preact-resnet");
    let dir = std::env::temp_dir().join(format!("ntk-graph-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |extra: &[&str], out: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ntk"))
            .args(["empirical", "--spec"])
            .arg(case.join("model.onnx"))
            .arg("--x1")
            .arg(case.join("x1.npy"))
            .arg("--x2")
            .arg(case.join("x2.npy"))
            .args(extra)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let out = dir.join("K.npy");
    let r = run(&[], &out);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let err = rel_err(&npy(&out), &npy(case.join("expected_ntk_full.npy")));
    assert!(err < 1e-10, "cli kernel: {err:.3e}");
    let r = run(&["--params", "^fc\\."], &out);
    assert!(r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("2 of 12 parameters"));
    let fc_alone = dir.join("K_fc.npy");
    let r = run(&["--params", "^fc\\.", "--method", "jacobian"], &fc_alone);
    assert!(r.status.success());
    // Per layer: the parts sum to torch.func's kernel, and the head's part equals the
    // kernel of the head's parameters alone by the Jacobian method.
    let parts = dir.join("K_layers.npy");
    let r = run(&["--per-layer", parts.to_str().unwrap()], &out);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("K_layers.json")).unwrap()).unwrap();
    let groups: Vec<&str> = record["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    let fc = groups.iter().position(|g| *g == "fc").expect("an fc group");
    assert_eq!(
        record["parameters"][fc],
        serde_json::json!(["fc.weight", "fc.bias"])
    );
    let (stack, shape) = {
        let (a, _) = ntk::nets::array::read_npy(&parts).unwrap();
        (a.data, a.shape)
    };
    let expected = npy(case.join("expected_ntk_full.npy"));
    assert_eq!(shape[0], groups.len());
    assert_eq!(shape[1..], expected.shape[..]);
    let size = expected.data.len();
    let mut sum = vec![0.0; size];
    for part in stack.chunks(size) {
        sum.iter_mut().zip(part).for_each(|(s, v)| *s += v);
    }
    let err = rel_err(
        &ntk::nets::HostArray::new(expected.shape.clone(), sum),
        &expected,
    );
    assert!(err < 1e-10, "per-layer sum: {err:.3e}");
    assert!(rel_err(&npy(&out), &expected) < 1e-10);
    let fc_part = ntk::nets::HostArray::new(
        expected.shape.clone(),
        stack[fc * size..(fc + 1) * size].to_vec(),
    );
    let err = rel_err(&fc_part, &npy(&fc_alone));
    assert!(err < 1e-10, "fc part against --params '^fc.': {err:.3e}");
    let r = run(
        &["--per-layer", parts.to_str().unwrap(), "--kernel", "nngp"],
        &out,
    );
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("nngp"));
    let r = run(&[], &dir.join("missing/K.npy"));
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("does not exist"));
    std::fs::remove_dir_all(&dir).ok();
}

/// The trace kernel of `net` on `x` by Jacobian contraction (the reference method).
fn trace_by_jacobian(net: &GraphNetwork, x: &ntk::nets::HostArray) -> f64 {
    let k = kernel(net, x, None, Method::Jacobian, KernelKind::Trace);
    let n = x.len();
    (0..n).map(|i| k.data[i * n + i]).sum()
}

/// `ntk score` takes ONNX files and graph specs beside sequential specs (an ONNX file is
/// scored at its own weights, one seed), and fails when every candidate fails;
/// `ntk analyze --checkpoints` takes an ONNX file with PyTorch-named state dicts.
#[test]
fn cli_score_and_checkpoints_on_graphs() {
    let case = cases_dir().join("onnx-preact-resnet");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/graph-specs");
    let dir = std::env::temp_dir().join(format!("ntk-graph-score-{}", std::process::id()));
    let cands = dir.join("cands");
    std::fs::create_dir_all(&cands).unwrap();
    std::fs::copy(case.join("model.onnx"), cands.join("a-resnet.onnx")).unwrap();
    std::fs::copy(
        docs.join("preact-resnet.json"),
        cands.join("b-resnet-spec.json"),
    )
    .unwrap();
    std::fs::write(cands.join("c-broken.json"), "{\"nodes\": [{\"name\": 3}]}").unwrap();
    let ntk = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ntk"))
            .args(args)
            .output()
            .unwrap()
    };
    let x1 = case.join("x1.npy");
    let csv = dir.join("scores.csv");
    let r = ntk(&[
        "score".as_ref(),
        "--specs".as_ref(),
        cands.as_os_str(),
        "--x".as_ref(),
        x1.as_os_str(),
        "--seeds".as_ref(),
        "2".as_ref(),
        "--out".as_ref(),
        csv.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{stderr}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let header: Vec<&str> = lines[0].split(',').collect();
    let col = |line: &str, name: &str| -> String {
        let i = header.iter().position(|h| *h == name).unwrap();
        line.split(',').nth(i).unwrap_or("").to_string()
    };
    assert!(lines[1].starts_with("a-resnet"), "{text}");
    assert_eq!(col(lines[1], "seeds"), "1", "an ONNX file is one network");
    assert_eq!(col(lines[2], "seeds"), "2");
    assert!(lines[3].starts_with("c-broken,"), "{text}");
    assert!(stderr.contains("c-broken: error"), "{stderr}");
    // The ONNX candidate's trace score against the Jacobian-contraction kernel.
    let x = npy(&x1);
    let net = load(&case, "model.onnx", false, Precision::F64);
    let expected = trace_by_jacobian(&net, &x) * net.n_outputs() as f64 / x.len() as f64;
    let got: f64 = col(lines[1], "ntk_trace_norm").parse().unwrap();
    assert!(
        ((got - expected) / expected).abs() < 1e-8,
        "score trace {got} vs {expected}"
    );
    // Every candidate failing is a failure of the command.
    let only_broken = dir.join("broken");
    std::fs::create_dir_all(&only_broken).unwrap();
    std::fs::copy(cands.join("c-broken.json"), only_broken.join("c.json")).unwrap();
    let r = ntk(&[
        "score".as_ref(),
        "--specs".as_ref(),
        only_broken.as_os_str(),
        "--x".as_ref(),
        x1.as_os_str(),
        "--out".as_ref(),
        dir.join("s2.csv").as_os_str(),
    ]);
    assert_eq!(r.status.code(), Some(1), "all failed must not exit 0");
    assert!(String::from_utf8_lossy(&r.stderr).contains("every candidate failed"));

    // Checkpoints: the case's own state dict, then a re-initialised one (graph spec, seed 7,
    // PyTorch names), against the ONNX file.
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::copy(
        case.join("state_dict.safetensors"),
        run.join("epoch-0.safetensors"),
    )
    .unwrap();
    let device = BackendKind::Flex.device(Precision::F64).unwrap();
    let other = ntk::nets::graph::load(
        docs.join("preact-resnet.json"),
        None,
        7,
        &device,
        Precision::F64,
    )
    .unwrap();
    other.save(run.join("epoch-2.safetensors"), false).unwrap();
    let json = dir.join("ck.json");
    let r = ntk(&[
        "analyze".as_ref(),
        "--checkpoints".as_ref(),
        run.as_os_str(),
        "--spec".as_ref(),
        case.join("model.onnx").as_os_str(),
        "--x".as_ref(),
        x1.as_os_str(),
        "--json".as_ref(),
        json.as_os_str(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let cks = report["checkpoints"].as_array().unwrap();
    assert_eq!(cks.len(), 2);
    let with =
        |w: &Path| load_onnx(case.join("model.onnx"), Some(w), &device, Precision::F64).unwrap();
    for (ck, file) in cks
        .iter()
        .zip(["epoch-0.safetensors", "epoch-2.safetensors"])
    {
        let expected = trace_by_jacobian(&with(&run.join(file)), &x);
        let got = ck["trace"].as_f64().unwrap();
        assert!(
            ((got - expected) / expected).abs() < 1e-8,
            "{file}: trace {got} vs {expected}"
        );
    }
    assert!(cks[1]["distance_from_init"].as_f64().unwrap() > 1e-6);
    std::fs::remove_dir_all(&dir).ok();
}
