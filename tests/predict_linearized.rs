//! `ntk_analysis::predict::GradientDescentMse` (closed-form exponentials in the kernel's
//! eigenbasis) against direct numerical integration of the training dynamics of the
//! linearised `mlp-relu` reference network (x1 = train, x2 = test), f64:
//!
//! 1. the exact linearised model `f_lin(x) = f0(x) + J(x)(θ − θ0)`, gradient flow in
//!    **parameter space** on `L = 1/(2N) ‖f_lin(x_train) − Y‖²` (N = n·O, neural-tangents'
//!    normalisation) by RK4, `J` from burn's autodiff (`ntk_empirical::jacobian`), against
//!    `predict` with the FULL empirical NTK flattened to `[n·O, n·O]` (neural-tangents'
//!    `trace_axes=()`), computed by the structured method;
//! 2. the trace NTK (outputs independent, neural-tangents' `trace_axes=(-1,)`), with and
//!    without `diag_reg`: the **function-space** ODE `df/dt = −(η/N) Θ(·, train)(f_train − Y)`
//!    integrated by RK4 on train ∪ test jointly with the joint kernel over train ∪ test.
//!
//! Both must agree with the closed form to 1e-8 relative (max |Δ| / max |f|) at every t.

mod common;

use burn::module::Module;
use burn::tensor::Tensor;
use common::{cases_dir, npy};
use ntk::empirical::jacobian::jacobian;
use ntk::empirical::{EmpiricalOptions, KernelKind, empirical_kernel};
use ntk::nets::layers::Features;
use ntk::nets::{BackendKind, HostArray, Network, NetworkSpec, Precision, to_host};
use ntk_analysis::Matrix;
use ntk_analysis::predict::{DiagReg, GradientDescentMse, TestSet};

struct Case {
    net: Network,
    x1: HostArray,
    x2: HostArray,
    f0_train: HostArray,
    f0_test: HostArray,
}

fn load() -> Case {
    let case = cases_dir().join("mlp-relu");
    let device = BackendKind::Flex.device(Precision::F64).unwrap();
    let spec = NetworkSpec::from_file(case.join("spec.json")).unwrap();
    let net = Network::load(
        spec,
        case.join("weights.safetensors"),
        &device,
        Precision::F64,
    )
    .unwrap();
    let x1 = npy(case.join("x1.npy"));
    let x2 = npy(case.join("x2.npy"));
    let f0_train = net.forward_host(&x1).unwrap();
    let f0_test = net.forward_host(&x2).unwrap();
    Case {
        net,
        x1,
        x2,
        f0_train,
        f0_test,
    }
}

/// Targets `[n, O]`: fixed values of order one.
fn targets(n: usize, o: usize) -> Vec<f64> {
    (0..n * o).map(|i| (1.7 * i as f64 + 0.4).sin()).collect()
}

fn kernel(net: &Network, x1: &HostArray, x2: Option<&HostArray>, kind: KernelKind) -> HostArray {
    let opts = EmpiricalOptions {
        kind,
        ..Default::default()
    };
    empirical_kernel(net, x1, x2, &opts, &mut |_, _| {})
        .unwrap()
        .kernel
}

/// `[a, b, O, O]` → `[a·O, b·O]`, row `i·O + o`, column `j·O + p`.
fn flatten_full(k: &HostArray, a: usize, b: usize, o: usize) -> Vec<f64> {
    assert_eq!(k.data.len(), a * b * o * o, "full kernel size");
    let mut out = vec![0.0; a * o * b * o];
    for i in 0..a {
        for j in 0..b {
            for p in 0..o {
                for q in 0..o {
                    out[(i * o + p) * (b * o) + j * o + q] = k.data[((i * b + j) * o + p) * o + q];
                }
            }
        }
    }
    out
}

/// The Jacobian `[n·O, P]` (row `i·O + o`) from burn's autodiff.
fn jacobian_host(net: &Network, x: &HostArray) -> HostArray {
    let ad = net.device().autodiff();
    let model = net.clone().fork(&ad).train();
    let Features::Flat(xt) = model.input(x, &ad).unwrap() else {
        panic!("mlp-relu takes flat inputs");
    };
    let f = |m: &Network, x: Tensor<2>| m.forward(Features::Flat(x));
    to_host(jacobian(&model, &f, xt, false))
}

/// Classic RK4 on `dy/dt = rhs(y)` from 0 through `times` (ascending), step ≤ `h`; returns
/// the state at each time.
fn rk4(y0: Vec<f64>, times: &[f64], h: f64, rhs: impl Fn(&[f64], &mut [f64])) -> Vec<Vec<f64>> {
    let d = y0.len();
    let mut y = y0;
    let (mut k1, mut k2, mut k3, mut k4, mut tmp) = (
        vec![0.0; d],
        vec![0.0; d],
        vec![0.0; d],
        vec![0.0; d],
        vec![0.0; d],
    );
    let mut now = 0.0;
    let mut out = Vec::new();
    for &t in times {
        let steps = ((t - now) / h).ceil().max(0.0) as usize;
        let dt = if steps > 0 {
            (t - now) / steps as f64
        } else {
            0.0
        };
        for _ in 0..steps {
            rhs(&y, &mut k1);
            for i in 0..d {
                tmp[i] = y[i] + 0.5 * dt * k1[i];
            }
            rhs(&tmp, &mut k2);
            for i in 0..d {
                tmp[i] = y[i] + 0.5 * dt * k2[i];
            }
            rhs(&tmp, &mut k3);
            for i in 0..d {
                tmp[i] = y[i] + dt * k3[i];
            }
            rhs(&tmp, &mut k4);
            for i in 0..d {
                y[i] += dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
            }
        }
        now = t;
        out.push(y.clone());
    }
    out
}

/// max |a − b| / max |b|
fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn full_kernel_prediction_matches_parameter_space_gradient_flow() {
    let c = load();
    let (n, m, o) = (c.x1.len(), c.x2.len(), c.net.n_outputs());
    let (nn, mm) = (n * o, m * o);
    let big_n = nn as f64; // N = n·O: the flattened targets are [n·O, 1]
    let y = targets(n, o);
    let eta = 0.5;

    // Closed form from the structured-method full NTK.
    let k_tt = flatten_full(&kernel(&c.net, &c.x1, None, KernelKind::Full), n, n, o);
    let k_st = flatten_full(
        &kernel(&c.net, &c.x2, Some(&c.x1), KernelKind::Full),
        m,
        n,
        o,
    );
    let gd = GradientDescentMse::new(
        Matrix::square("k", &k_tt, nn).unwrap(),
        Matrix::new("y", &y, nn, 1).unwrap(),
        eta,
        DiagReg::default(),
    )
    .unwrap();
    let rate = eta * gd.eigenvalues()[0] / big_n; // fastest mode
    let times: Vec<f64> = [0.0, 0.5, 2.0, 8.0, 40.0]
        .iter()
        .map(|s| s / rate)
        .collect();
    let preds = gd
        .predict_times(
            &times,
            Some(Matrix::new("f0", &c.f0_train.data, nn, 1).unwrap()),
            Some(TestSet {
                k_test_train: Matrix::new("ks", &k_st, mm, nn).unwrap(),
                fx_test_0: Some(Matrix::new("f0t", &c.f0_test.data, mm, 1).unwrap()),
            }),
        )
        .unwrap();

    // Parameter space: w = θ − θ0, dw/dt = −(η/N) J1ᵀ (f0 + J1 w − Y).
    let j1 = jacobian_host(&c.net, &c.x1);
    let j2 = jacobian_host(&c.net, &c.x2);
    let p = j1.shape[1];
    assert_eq!(j1.shape, vec![nn, p]);
    assert_eq!(j2.shape, vec![mm, p]);
    let apply = |j: &[f64], rows: usize, w: &[f64], out: &mut [f64]| {
        for (r, o) in out.iter_mut().enumerate().take(rows) {
            *o = j[r * p..(r + 1) * p]
                .iter()
                .zip(w)
                .map(|(a, b)| a * b)
                .sum();
        }
    };
    let ws = rk4(vec![0.0; p], &times, 0.01 / rate, |w, dw| {
        let mut r = vec![0.0; nn];
        apply(&j1.data, nn, w, &mut r);
        for i in 0..nn {
            r[i] += c.f0_train.data[i] - y[i];
        }
        dw.fill(0.0);
        for (row, ri) in r.iter().enumerate() {
            let s = -eta / big_n * ri;
            for (d, jv) in dw.iter_mut().zip(&j1.data[row * p..(row + 1) * p]) {
                *d += s * jv;
            }
        }
    });

    let mut worst = 0.0f64;
    for ((t, w), pred) in times.iter().zip(&ws).zip(&preds) {
        let mut ftr = vec![0.0; nn];
        apply(&j1.data, nn, w, &mut ftr);
        ftr.iter_mut()
            .zip(&c.f0_train.data)
            .for_each(|(a, b)| *a += b);
        let mut fte = vec![0.0; mm];
        apply(&j2.data, mm, w, &mut fte);
        fte.iter_mut()
            .zip(&c.f0_test.data)
            .for_each(|(a, b)| *a += b);
        let e_tr = rel(&pred.train, &ftr);
        let e_te = rel(pred.test.as_ref().unwrap(), &fte);
        eprintln!("full NTK, t = {t:9.3}: rel err train {e_tr:.2e}, test {e_te:.2e}");
        assert!(e_tr < 1e-8 && e_te < 1e-8, "t = {t}: {e_tr:e} {e_te:e}");
        worst = worst.max(e_tr).max(e_te);
    }
    // The dynamics moved: the last prediction is far from f0 (the check is not vacuous).
    let moved = rel(&preds[times.len() - 1].train, &c.f0_train.data);
    assert!(moved > 0.1, "train outputs moved only {moved:e}");
    eprintln!("full NTK vs parameter-space RK4: worst rel err {worst:.2e}");
}

#[test]
fn trace_kernel_prediction_matches_function_space_ode() {
    let c = load();
    let (n, m, o) = (c.x1.len(), c.x2.len(), c.net.n_outputs());
    let y = targets(n, o);
    let eta = 2.0;
    let big_n = (n * o) as f64;

    // Joint trace kernel over train ∪ test, [n+m, n+m].
    let mut xall = c.x1.data.clone();
    xall.extend_from_slice(&c.x2.data);
    let mut shape = c.x1.shape.clone();
    shape[0] = n + m;
    let xall = HostArray::new(shape, xall);
    let joint = kernel(&c.net, &xall, None, KernelKind::Trace);
    assert_eq!(joint.data.len(), (n + m) * (n + m));
    let s = n + m;
    let k_tt: Vec<f64> = (0..n * n)
        .map(|i| joint.data[(i / n) * s + i % n])
        .collect();
    let k_st: Vec<f64> = (0..m * n)
        .map(|i| joint.data[(n + i / n) * s + i % n])
        .collect();

    for reg in [DiagReg::default(), DiagReg::absolute(0.05)] {
        let gd = GradientDescentMse::new(
            Matrix::square("k", &k_tt, n).unwrap(),
            Matrix::new("y", &y, n, o).unwrap(),
            eta,
            reg,
        )
        .unwrap();
        let rate = eta * gd.eigenvalues()[0] / big_n;
        let times: Vec<f64> = [0.0, 0.3, 3.0, 30.0, 200.0]
            .iter()
            .map(|s| s / rate)
            .collect();
        let preds = gd
            .predict_times(
                &times,
                Some(Matrix::new("f0", &c.f0_train.data, n, o).unwrap()),
                Some(TestSet {
                    k_test_train: Matrix::new("ks", &k_st, m, n).unwrap(),
                    fx_test_0: Some(Matrix::new("f0t", &c.f0_test.data, m, o).unwrap()),
                }),
            )
            .unwrap();

        // State [f_train; f_test], [(n+m), O]; df/dt = −(η/N) Θ(·, train) (f_train − Y), with
        // the regulariser on the train-train block only.
        let mut f0 = c.f0_train.data.clone();
        f0.extend_from_slice(&c.f0_test.data);
        let r = reg.value;
        let fs = rk4(f0, &times, 0.005 / rate, |f, df| {
            for i in 0..s {
                for a in 0..o {
                    let mut acc = 0.0;
                    for j in 0..n {
                        let kij = joint.data[i * s + j] + if i == j { r } else { 0.0 };
                        acc += kij * (f[j * o + a] - y[j * o + a]);
                    }
                    df[i * o + a] = -eta / big_n * acc;
                }
            }
        });
        for ((t, f), pred) in times.iter().zip(&fs).zip(&preds) {
            let e_tr = rel(&pred.train, &f[..n * o]);
            let e_te = rel(pred.test.as_ref().unwrap(), &f[n * o..]);
            eprintln!("trace NTK {reg:?}, t = {t:9.3}: rel err train {e_tr:.2e}, test {e_te:.2e}");
            assert!(
                e_tr < 1e-8 && e_te < 1e-8,
                "{reg:?} t = {t}: {e_tr:e} {e_te:e}"
            );
        }
        let last = &preds[times.len() - 1].train;
        let fit = rel(last, &y);
        eprintln!("trace NTK {reg:?}: train fit at the last time, rel err vs Y {fit:.2e}");
    }
}

/// `ntk predict` and `ntk analyze` end to end on the full kernels written as `.npy`
/// `[n, n, O, O]`: the CLI flattens them as neural-tangents' `trace_axes=()` and must
/// give the library's predictions (checked above against the parameter-space flow).
#[test]
fn cli_predict_and_analyze_on_full_kernels() {
    use ntk::nets::FloatKind;
    use ntk::nets::array::{read_npy, write_npy};
    use std::process::Command;

    let c = load();
    let (n, m, o) = (c.x1.len(), c.x2.len(), c.net.n_outputs());
    let tmp = std::env::temp_dir().join(format!("ntk-cli-predict-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let k_full = kernel(&c.net, &c.x1, None, KernelKind::Full);
    let ks_full = kernel(&c.net, &c.x2, Some(&c.x1), KernelKind::Full);
    let y = HostArray::new(vec![n, o], targets(n, o));
    for (name, a) in [
        ("k.npy", &k_full),
        ("ks.npy", &ks_full),
        ("y.npy", &y),
        ("f0.npy", &c.f0_train),
        ("f0t.npy", &c.f0_test),
    ] {
        write_npy(tmp.join(name), a, FloatKind::F64).unwrap();
    }
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ntk"))
            .args(args)
            .current_dir(&tmp)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ntk {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "predict",
        "--k-train",
        "k.npy",
        "--k-test",
        "ks.npy",
        "--y",
        "y.npy",
        "--f0-train",
        "f0.npy",
        "--f0-test",
        "f0t.npy",
        "--t",
        "0,3,inf",
        "--lr",
        "0.5",
        "--diag-reg",
        "0.01",
        "--out",
        "p.npy",
        "--out-train",
        "pt.npy",
    ]);
    let p = read_npy(tmp.join("p.npy")).unwrap().0;
    let pt = read_npy(tmp.join("pt.npy")).unwrap().0;
    assert_eq!(p.shape, vec![3, m, o]);
    assert_eq!(pt.shape, vec![3, n, o]);

    let k_tt = flatten_full(&k_full, n, n, o);
    let k_st = flatten_full(&ks_full, m, n, o);
    let gd = GradientDescentMse::new(
        Matrix::square("k", &k_tt, n * o).unwrap(),
        Matrix::new("y", &y.data, n * o, 1).unwrap(),
        0.5,
        DiagReg::relative(0.01),
    )
    .unwrap();
    let preds = gd
        .predict_times(
            &[0.0, 3.0, f64::INFINITY],
            Some(Matrix::new("f0", &c.f0_train.data, n * o, 1).unwrap()),
            Some(TestSet {
                k_test_train: Matrix::new("ks", &k_st, m * o, n * o).unwrap(),
                fx_test_0: Some(Matrix::new("f0t", &c.f0_test.data, m * o, 1).unwrap()),
            }),
        )
        .unwrap();
    let want: Vec<f64> = preds.iter().flat_map(|q| q.test.clone().unwrap()).collect();
    let want_train: Vec<f64> = preds.iter().flat_map(|q| q.train.clone()).collect();
    assert!(rel(&p.data, &want) < 1e-14, "{:e}", rel(&p.data, &want));
    assert!(rel(&pt.data, &want_train) < 1e-14);
    // t = 0 gives f0 exactly; t = ∞ fits the train targets.
    assert_eq!(&p.data[..m * o], &c.f0_test.data[..]);
    assert!(rel(&pt.data[2 * n * o..], &y.data) < 1e-14);

    run(&[
        "analyze",
        "--kernel",
        "k.npy",
        "--y",
        "y.npy",
        "--kernel2",
        "k.npy",
        "--json",
        "a.json",
    ]);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.join("a.json")).unwrap()).unwrap();
    assert_eq!(doc["n"], (n * o) as u64);
    let lmax = doc["spectrum"]["lambda_max"].as_f64().unwrap();
    let lmax_lib = ntk_analysis::spectrum::eigenvalues(&k_tt, n * o).unwrap()[0];
    assert!((lmax / lmax_lib - 1.0).abs() < 1e-14);
    assert!(doc["distances"][0]["distance"].as_f64().unwrap().abs() < 1e-14);
    let raw = doc["alignment"]["raw"].as_f64().unwrap();
    assert!((-1.0..=1.0).contains(&raw));
    std::fs::remove_dir_all(&tmp).ok();
}
