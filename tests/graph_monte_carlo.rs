//! Finite vs infinite width on graph specs: the Monte Carlo mean of empirical NTKs of a
//! residual network in the NTK parameterization approaches the exact infinite-width NTK
//! (`ntk-infinite`'s graph rules, checked against stax in `infinite_oracle.rs`) as the
//! width grows; `ntk infinite` and `ntk empirical --monte-carlo` on graph specs end to end.

mod common;

use common::{inputs, npy, rel_err};
use ntk::empirical::{EmpiricalOptions, KernelKind, Method, monte_carlo_kernel};
use ntk::infinite::graph_kernels;
use ntk::nets::array::write_npy;
use ntk::nets::graph::spec::parse;
use ntk::nets::{BackendKind, FloatKind, HostArray, Precision};
use std::path::Path;

/// A pre-activation residual MLP of hidden width `w` (NTK parameterization), with a layer
/// norm and a leaky relu.
fn residual(w: usize) -> String {
    format!(
        r#"{{"input_shape":[4],"parameterization":"ntk","nodes":[
  {{"name":"fc0","type":"linear","out_features":{w},"w_std":1.2,"b_std":0.1}},
  {{"name":"relu1","type":"relu"}},
  {{"name":"fc1","type":"linear","out_features":{w},"w_std":1.4,"b_std":0.1}},
  {{"name":"leaky","type":"leaky_relu","negative_slope":0.2}},
  {{"name":"fc2","type":"linear","out_features":{w},"w_std":1.0,"b_std":0.0}},
  {{"name":"add","type":"add","inputs":["fc2","fc0"]}},
  {{"name":"norm","type":"layer_norm","elementwise_affine":false}},
  {{"name":"relu2","type":"relu"}},
  {{"name":"head","type":"linear","out_features":1,"w_std":1.0,"b_std":0.2}}]}}"#
    )
}

fn frobenius_error(a: &HostArray, b: &HostArray) -> f64 {
    let d: f64 = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let n: f64 = b.data.iter().map(|y| y * y).sum();
    (d / n).sqrt()
}

/// The traced empirical NTK `[N, N]` of the network drawn from `seed` (f64).
fn traced_ntk(
    spec: &ntk::nets::graph::spec::GraphSpec,
    seed: u64,
    x: &HostArray,
    options: &EmpiricalOptions,
    device: &burn::tensor::Device,
) -> ntk::empirical::Result<HostArray> {
    let net = ntk::nets::graph::from_spec(spec.clone(), None, seed, device, Precision::F64)?;
    let k = ntk::empirical::graph::empirical_kernel(&net, x, None, options, &mut |_, _| {})?.kernel;
    Ok(HostArray::new(vec![x.len(), x.len()], k.data))
}

/// Structured derivatives and NTK-vector products equal the Jacobian contraction (full
/// kernel) to `tol` relative.
fn methods_agree(net: &ntk::nets::graph::GraphNetwork, x: &HostArray, tol: f64) {
    let run = |method| {
        let o = EmpiricalOptions {
            method,
            kind: KernelKind::Full,
            ..Default::default()
        };
        ntk::empirical::graph::empirical_kernel(net, x, None, &o, &mut |_, _| {})
            .unwrap()
            .kernel
    };
    let j = run(Method::Jacobian);
    for m in [Method::Structured, Method::NtkVp] {
        let e = rel_err(&run(m), &j);
        assert!(e < tol, "{m:?}: {e:.2e}");
    }
}

/// In the NTK parameterization the layers' products and biases are scaled by constants
/// (`(w_std/√fan_in)·x·Wᵀ + b_std·b`): the structured rules see the scaled bias through its
/// scale, and agree with autodiff's Jacobian contraction and with NTK-vector products.
#[test]
fn ntk_parameterization_methods_agree() {
    let device = BackendKind::Flex.device(Precision::F64).unwrap();
    let x = inputs(&[4], 5, 3);
    let spec = parse(&residual(7), "r").unwrap();
    let net = ntk::nets::graph::from_spec(spec, None, 1, &device, Precision::F64).unwrap();
    methods_agree(&net, &x, 1e-12);
    // Convolutions too (the bias reshaped to [C, 1, 1], then scaled): the WRN-style case,
    // widened to 3 outputs.
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graph-stax/wrn-block");
    let text = std::fs::read_to_string(case.join("spec.json"))
        .unwrap()
        .replace(r#""out_features": 1"#, r#""out_features": 3"#);
    let conv = ntk::nets::graph::from_spec(
        parse(&text, "wrn").unwrap(),
        None,
        2,
        &device,
        Precision::F64,
    )
    .unwrap();
    assert_eq!(conv.n_outputs(), 3);
    let xc = inputs(&[2, 6, 6], 3, 4);
    methods_agree(&conv, &xc, 1e-12);
    // A bias of b_std 0.2 contributes 0.2² to every entry of the head's NTK.
    let only_bias = ntk::nets::graph::from_spec(
        parse(&residual(7), "r").unwrap(),
        None,
        1,
        &device,
        Precision::F64,
    )
    .unwrap();
    let mut only_bias = only_bias;
    let re = regex::Regex::new("^head\\.bias$").unwrap();
    only_bias.select(Some(&re), None).unwrap();
    let o = EmpiricalOptions {
        method: Method::Structured,
        kind: KernelKind::Full,
        ..Default::default()
    };
    let k = ntk::empirical::graph::empirical_kernel(&only_bias, &x, None, &o, &mut |_, _| {})
        .unwrap()
        .kernel;
    for v in &k.data {
        assert!((v - 0.04).abs() < 1e-15, "{v}");
    }
}

#[test]
fn monte_carlo_mean_of_a_residual_graph_approaches_the_exact_ntk() {
    let x = inputs(&[4], 6, 11);
    let exact = graph_kernels(
        &parse(&residual(8), "r").unwrap(),
        &x,
        None,
        &Default::default(),
    )
    .unwrap();
    let device = BackendKind::Flex.device(Precision::F64).unwrap();
    let options = EmpiricalOptions {
        method: Method::Structured,
        kind: KernelKind::Trace,
        ..Default::default()
    };
    let seeds: Vec<u64> = (0..12).collect();
    let mut report = Vec::new();
    let mut mean_errors = Vec::new();
    for w in [32usize, 512] {
        let spec = parse(&residual(w), "r").unwrap();
        // The infinite-width kernel does not depend on the width (NTK parameterization).
        let e = graph_kernels(&spec, &x, None, &Default::default()).unwrap();
        assert!(rel_err(&e.ntk, &exact.ntk) < 1e-14);
        let single = std::sync::Mutex::new(Vec::new());
        let mc = monte_carlo_kernel(
            &seeds,
            1,
            |seed| -> ntk::empirical::Result<HostArray> {
                let k = traced_ntk(&spec, seed, &x, &options, &device)?;
                single.lock().unwrap().push(frobenius_error(&k, &exact.ntk));
                Ok(k)
            },
            &mut |_, _| {},
        )
        .unwrap();
        let singles = single.into_inner().unwrap();
        let one = singles.iter().sum::<f64>() / singles.len() as f64;
        let mean = frobenius_error(&mc.mean, &exact.ntk);
        // The standard error bounds the distance of the mean from its expectation.
        let se = mc.std_error.unwrap();
        assert!(se.data.iter().all(|v| v.is_finite() && *v >= 0.0));
        report.push(format!(
            "width {w}: one network {one:.3e}, mean of 12 {mean:.3e}"
        ));
        assert!(mean < one, "{report:?}");
        mean_errors.push((one, mean));
    }
    eprintln!("{}", report.join("\n"));
    // 16× the width: single-network error falls ~4× (1/√w), the mean's error too.
    assert!(mean_errors[1].0 < 0.45 * mean_errors[0].0, "{report:?}");
    assert!(mean_errors[1].1 < 0.45 * mean_errors[0].1, "{report:?}");
    assert!(mean_errors[1].1 < 0.03, "{report:?}");
}

fn ok(args: &[&str]) -> std::process::Output {
    let o = common::run_ntk(args);
    assert!(
        o.status.success(),
        "ntk {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn cli_infinite_and_monte_carlo_on_graph_specs() {
    let d = common::scratch("ntk-graph-mc", "cli");
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graph-stax/wrn-block");
    let out = d.join("k.npy");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(&[
        "infinite",
        "--spec",
        &s(&case.join("spec.json")),
        "--x1",
        &s(&case.join("x1.npy")),
        "--x2",
        &s(&case.join("x2.npy")),
        "--out",
        &s(&out),
    ]);
    assert!(rel_err(&npy(&out), &npy(case.join("expected_ntk_analytic.npy"))) < 1e-10);

    let spec = d.join("res.json");
    std::fs::write(&spec, residual(16)).unwrap();
    let x = d.join("x.npy");
    write_npy(&x, &inputs(&[4], 3, 5), FloatKind::F64).unwrap();
    let (mean, se) = (d.join("mean.npy"), d.join("se.npy"));
    let o = ok(&[
        "empirical",
        "--spec",
        &s(&spec),
        "--x1",
        &s(&x),
        "--kernel",
        "trace",
        "--monte-carlo",
        "4",
        "--seed",
        "3",
        "--out",
        &s(&mean),
        "--std-error",
        &s(&se),
    ]);
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("4 initialisations (seeds 3..=6)"), "{text}");
    // The mean equals the average of the four single-seed kernels.
    let mut sum = vec![0.0; 9];
    for seed in 3..7 {
        let k = d.join(format!("k{seed}.npy"));
        ok(&[
            "empirical",
            "--spec",
            &s(&spec),
            "--x1",
            &s(&x),
            "--kernel",
            "trace",
            "--seed",
            &seed.to_string(),
            "--out",
            &s(&k),
        ]);
        for (a, b) in sum.iter_mut().zip(npy(&k).data) {
            *a += b / 4.0;
        }
    }
    let m = npy(&mean);
    for (a, b) in m.data.iter().zip(&sum) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
    }
    assert_eq!(npy(&se).shape, m.shape);
    // A --max-memory too small for the workers' tiles is said as such, before any kernel.
    let o = common::run_ntk(&[
        "empirical",
        "--spec",
        &s(&spec),
        "--x1",
        &s(&x),
        "--monte-carlo",
        "4",
        "--max-memory",
        "1KiB",
        "--out",
        &s(&mean),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Monte Carlo worker(s) gets"), "{err}");

    // Errors before any work.
    for (args, words) in [
        (vec!["--monte-carlo", "1", "--std-error", "x.npy"], "K ≥ 2"),
        (vec!["--monte-carlo", "0"], "at least 1"),
        (vec!["--std-error", "x.npy"], "needs --monte-carlo"),
    ] {
        let mut all = vec![
            "empirical",
            "--spec",
            spec.to_str().unwrap(),
            "--x1",
            x.to_str().unwrap(),
            "--out",
        ];
        let o2 = d.join("o2.npy");
        all.push(o2.to_str().unwrap());
        all.extend(args);
        let o = common::run_ntk(&all);
        assert!(!o.status.success());
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(words), "{e}");
    }
    // ntk compare on the graph spec: widths, seeds, the Monte Carlo mean, a plot.
    let (report, png) = (d.join("r.json"), d.join("r.png"));
    ok(&[
        "compare",
        "--spec",
        &s(&spec),
        "--x1",
        &s(&x),
        "--widths",
        "8,64",
        "--seeds",
        "3",
        "--out",
        &s(&report),
        "--plot",
        &s(&png),
    ]);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for (e, m) in r["empirical"]
        .as_array()
        .unwrap()
        .iter()
        .zip(r["monte_carlo"].as_array().unwrap())
    {
        // ‖mean − Θ∞‖ ≤ mean of ‖Θ_i − Θ∞‖ (triangle inequality), strictly here.
        assert!(
            m["mean"].as_f64().unwrap() < e["mean"].as_f64().unwrap(),
            "{r}"
        );
    }
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    let o = common::run_ntk(&[
        "compare",
        "--spec",
        &s(&spec),
        "--x1",
        &s(&x),
        "--features",
        "ntksketch:64",
        "--out",
        &s(&report),
    ]);
    // Feature maps of graphs cover relu networks: this one has a leaky relu.
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("relu networks only") && err.contains("leaky"),
        "{err}"
    );
    // A graph node without a limit is refused by name.
    let bn = d.join("bn.json");
    std::fs::write(
        &bn,
        r#"{"input_shape":[4],"nodes":[{"name":"fc","type":"linear","out_features":3},{"name":"bn1","type":"batch_norm"},{"name":"o","type":"linear","out_features":1}]}"#,
    )
    .unwrap();
    let o = common::run_ntk(&[
        "infinite",
        "--spec",
        &s(&bn),
        "--x1",
        &s(&x),
        "--out",
        &s(&out),
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("\"bn1\"") && e.contains("batch_norm"), "{e}");
}

/// The transformer-block case of tests/graph-stax (pre-norm softmax attention and a GELU
/// MLP, both residual) at hidden width `w` (key, value and output channels of the
/// attention too).
fn transformer(w: usize) -> ntk::nets::graph::spec::GraphSpec {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graph-stax/transformer-block");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("spec.json")).unwrap()).unwrap();
    let wide = ntk::compare_cmd::graph_with_hidden_width(&json, w);
    parse(&wide.to_string(), "transformer").unwrap()
}

/// Self-attention as ops (projections, head split, logits, softmax, head merge): every
/// method gives the same kernel.
#[test]
fn attention_methods_agree() {
    let device = BackendKind::Flex.device(Precision::F64).unwrap();
    let x = inputs(&[4, 5], 4, 8);
    let net =
        ntk::nets::graph::from_spec(transformer(6), None, 3, &device, Precision::F64).unwrap();
    let names: Vec<&str> = net.graph.params.iter().map(|p| p.name.as_str()).collect();
    for p in [
        "attn.key_weight",
        "attn.value_weight",
        "attn.out_weight",
        "attn.bias",
    ] {
        assert!(names.contains(&p), "{names:?}");
    }
    assert!(!names.contains(&"attn.query_weight"), "tied: {names:?}");
    methods_agree(&net, &x, 1e-11);
}

/// Finite vs infinite width through attention: the empirical NTK of the transformer block
/// approaches stax's linear-scaling limit (our rule, checked against stax in
/// infinite_oracle.rs) as the key/value/hidden widths grow.
#[test]
fn attention_ntk_approaches_its_limit_with_width() {
    let x = inputs(&[4, 5], 5, 21);
    let exact = graph_kernels(&transformer(8), &x, None, &Default::default()).unwrap();
    let device = BackendKind::Flex.device(Precision::F64).unwrap();
    let options = EmpiricalOptions {
        method: Method::Structured,
        kind: KernelKind::Trace,
        ..Default::default()
    };
    let seeds: Vec<u64> = (0..6).collect();
    let mut errors = Vec::new();
    for w in [16usize, 256] {
        let spec = transformer(w);
        let e = graph_kernels(&spec, &x, None, &Default::default()).unwrap();
        assert!(
            rel_err(&e.ntk, &exact.ntk) < 1e-14,
            "the limit depends on the width"
        );
        let mc = monte_carlo_kernel(
            &seeds,
            1,
            |seed| traced_ntk(&spec, seed, &x, &options, &device),
            &mut |_, _| {},
        )
        .unwrap();
        errors.push(frobenius_error(&mc.mean, &exact.ntk));
    }
    eprintln!(
        "transformer block, mean of 6 NTKs vs the limit: width 16 {:.3e}, width 256 {:.3e}",
        errors[0], errors[1]
    );
    // 16× the width: the error falls about 4× (1/√w); a wrong limit would level off.
    assert!(errors[1] < 0.45 * errors[0], "{errors:?}");
    assert!(errors[1] < 0.05, "{errors:?}");
}

/// Mean relative Frobenius error of sketched NTK features of a graph spec against its exact
/// NTK, over `seeds` feature maps of dimension `m`.
fn sketch_error(
    spec: &ntk::nets::graph::spec::GraphSpec,
    x: &HostArray,
    method: ntk::infinite::features::FeatureMethod,
    m: usize,
    seeds: u64,
) -> f64 {
    use ntk::infinite::features::{FeatureOptions, GraphFeatureMap, feature_kernel};
    let exact = graph_kernels(spec, x, None, &Default::default())
        .unwrap()
        .ntk;
    let mut total = 0.0;
    for seed in 0..seeds {
        let map = GraphFeatureMap::new(
            spec,
            &FeatureOptions {
                method,
                dim: m,
                seed,
                ..Default::default()
            },
        )
        .unwrap();
        let f = map.apply(x).unwrap().ntk;
        total += frobenius_error(&feature_kernel(&f, &f).unwrap(), &exact);
    }
    total / seeds as f64
}

/// CNTKSketch through the WideResNet-style case (identity and strided projection
/// shortcuts: sums of branches as concatenated features) and NTKSketch/NTKRF through a
/// residual relu MLP with a channel concat: the error against the exact graph kernel falls
/// like m^(−1/2).
#[test]
fn sketches_of_residual_graphs_converge_like_one_over_sqrt_m() {
    use ntk::infinite::features::FeatureMethod;
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graph-stax/wrn-block");
    let wrn = parse(
        &std::fs::read_to_string(case.join("spec.json")).unwrap(),
        "wrn",
    )
    .unwrap();
    let x = npy(case.join("x1.npy"));
    let mut report = Vec::new();
    let mut check = |what: &str, spec, x: &HostArray, method, ms: [usize; 2], seeds| {
        let e: Vec<f64> = ms
            .iter()
            .map(|&m| sketch_error(spec, x, method, m, seeds))
            .collect();
        let slope = (e[1] / e[0]).ln() / ((ms[1] as f64) / (ms[0] as f64)).ln();
        report.push(format!("{what}: m {ms:?} errors {e:?}, slope {slope:.2}"));
        assert!((-0.85..=-0.25).contains(&slope) && e[1] < 0.1, "{report:?}");
    };
    check(
        "wrn cntksketch",
        &wrn,
        &x,
        FeatureMethod::CntkSketch,
        [256, 4096],
        6,
    );
    let mlp = parse(
        r#"{"input_shape":[6],"parameterization":"ntk","nodes":[
        {"name":"fc0","type":"linear","out_features":32,"w_std":1.3,"b_std":0.1},
        {"name":"r1","type":"relu"},
        {"name":"fc1","type":"linear","out_features":32,"w_std":1.4,"b_std":0.1},
        {"name":"add","type":"add","inputs":["fc1","fc0"]},
        {"name":"r2","type":"relu"},
        {"name":"a","type":"linear","out_features":8,"w_std":1.2,"inputs":["r2"]},
        {"name":"b","type":"linear","out_features":24,"w_std":0.9,"b_std":0.2,"inputs":["r2"]},
        {"name":"rb","type":"relu"},
        {"name":"cat","type":"concat","dim":1,"inputs":["a","rb"]},
        {"name":"head","type":"linear","out_features":1,"w_std":1.0,"b_std":0.1}]}"#,
        "mlp",
    )
    .unwrap();
    let xm = inputs(&[6], 6, 13);
    check(
        "mlp ntksketch",
        &mlp,
        &xm,
        FeatureMethod::NtkSketch,
        [256, 4096],
        6,
    );
    check("mlp ntkrf", &mlp, &xm, FeatureMethod::Ntkrf, [256, 4096], 6);
    eprintln!("{}", report.join("\n"));
}

/// `ntk features` on a graph spec: the features' kernel is the exact graph NTK to the
/// sketch's accuracy; a token input is refused by name.
#[test]
fn cli_features_of_a_graph_spec() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graph-stax/wrn-block");
    let out = std::env::temp_dir().join(format!("ntk-graph-features-{}.npy", std::process::id()));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let o = ok(&[
        "features",
        "--spec",
        &s(&case.join("spec.json")),
        "--x",
        &s(&case.join("x1.npy")),
        "--method",
        "cntksketch",
        "--dim",
        "4096",
        "--out",
        &s(&out),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("[5, 4096]"));
    let f = npy(&out);
    let k = ntk::infinite::features::feature_kernel(&f, &f).unwrap();
    let spec = parse(
        &std::fs::read_to_string(case.join("spec.json")).unwrap(),
        "wrn",
    )
    .unwrap();
    let exact = graph_kernels(&spec, &npy(case.join("x1.npy")), None, &Default::default())
        .unwrap()
        .ntk;
    let e = frobenius_error(&k, &exact);
    assert!(e < 0.15, "{e}");
    let t = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graph-stax/transformer-block");
    let o = common::run_ntk(&[
        "features",
        "--spec",
        &s(&t.join("spec.json")),
        "--x",
        &s(&t.join("x1.npy")),
        "--out",
        &s(&out),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not tokens [T, D]"));
    let _ = std::fs::remove_file(out);
}
