//! `ntk_analysis::predict` against neural-tangents 0.6.5 itself: `gradient_descent_mse` at
//! finite and infinite times with and without `diag_reg` (relative and absolute), and
//! `gp_inference` (NNGP and NTK posteriors), on the small random kernels of
//! `tests/fixtures/predict/nt_predict.json` (made by `make_nt_fixture.py` beside it).

use ntk_analysis::Matrix;
use ntk_analysis::predict::{DiagReg, GpInference, GradientDescentMse, NtkInference, TestSet};
use ntk_analysis::spectrum;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/predict/nt_predict.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture readable"))
        .expect("fixture is JSON")
}

/// Flattens a nested JSON array of numbers, row-major.
fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(x) => vec![x.as_f64().unwrap()],
        other => panic!("not a number array: {other}"),
    }
}

fn sq(d: &[f64], n: usize) -> Matrix<'_> {
    Matrix::square("k", d, n).unwrap()
}

fn rect(d: &[f64], r: usize, c: usize) -> Matrix<'_> {
    Matrix::new("k", d, r, c).unwrap()
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn gradient_descent_mse_matches_neural_tangents() {
    let f = fixture();
    let (n, m, c) = (
        f["n"].as_u64().unwrap() as usize,
        f["m"].as_u64().unwrap() as usize,
        f["c"].as_u64().unwrap() as usize,
    );
    let k = flat(&f["ntk_train_train"]);
    let ks = flat(&f["ntk_test_train"]);
    let y = flat(&f["y_train"]);
    let f0 = flat(&f["fx_train_0"]);
    let f0t = flat(&f["fx_test_0"]);
    let times = flat(&f["times"]);
    let lr = f["learning_rate"].as_f64().unwrap();
    let mut worst = 0.0f64;
    for case in f["cases"].as_array().unwrap() {
        let reg = DiagReg {
            value: case["diag_reg"].as_f64().unwrap(),
            absolute: case["absolute"].as_bool().unwrap(),
        };
        let gd = GradientDescentMse::new(
            Matrix::square("k", &k, n).unwrap(),
            Matrix::new("y", &y, n, c).unwrap(),
            lr,
            reg,
        )
        .unwrap();
        let test = TestSet {
            k_test_train: Matrix::new("ks", &ks, m, n).unwrap(),
            fx_test_0: Some(Matrix::new("f0t", &f0t, m, c).unwrap()),
        };
        let f0m = Some(Matrix::new("f0", &f0, n, c).unwrap());
        let ps = gd.predict_times(&times, f0m, Some(test)).unwrap();
        let want_tr = flat(&case["train_t"]);
        let want_te = flat(&case["test_t"]);
        for (i, p) in ps.iter().enumerate() {
            let e1 = max_rel(&p.train, &want_tr[i * n * c..(i + 1) * n * c]);
            let e2 = max_rel(
                p.test.as_ref().unwrap(),
                &want_te[i * m * c..(i + 1) * m * c],
            );
            assert!(e1 < 1e-10 && e2 < 1e-10, "{reg:?} t={}: {e1:e} {e2:e}", p.t);
            worst = worst.max(e1).max(e2);
        }
        let p = gd.predict(f64::INFINITY, f0m, Some(test)).unwrap();
        let e1 = max_rel(&p.train, &flat(&case["train_inf"]));
        let e2 = max_rel(p.test.as_ref().unwrap(), &flat(&case["test_inf"]));
        assert!(e1 < 1e-10 && e2 < 1e-10, "{reg:?} t=inf: {e1:e} {e2:e}");
        worst = worst.max(e1).max(e2);
    }
    eprintln!("gradient_descent_mse: worst rel err vs neural-tangents {worst:.2e}");
}

#[test]
fn gp_inference_matches_neural_tangents() {
    let f = fixture();
    let (n, m, c) = (
        f["n"].as_u64().unwrap() as usize,
        f["m"].as_u64().unwrap() as usize,
        f["c"].as_u64().unwrap() as usize,
    );
    let th = flat(&f["ntk_train_train"]);
    let ths = flat(&f["ntk_test_train"]);
    let g = flat(&f["nngp_train_train"]);
    let gs = flat(&f["nngp_test_train"]);
    let gss = flat(&f["nngp_test_test"]);
    let y = flat(&f["y_train"]);
    let mut worst = 0.0f64;
    for case in f["cases"].as_array().unwrap() {
        let reg = DiagReg {
            value: case["diag_reg"].as_f64().unwrap(),
            absolute: case["absolute"].as_bool().unwrap(),
        };
        let gp = GpInference::new(sq(&g, n), rect(&y, n, c), reg).unwrap();
        let post = gp.posterior(rect(&gs, m, n), Some(sq(&gss, m))).unwrap();
        let errs = [
            max_rel(&post.mean, &flat(&case["nngp_mean"])),
            max_rel(&post.covariance.unwrap(), &flat(&case["nngp_cov"])),
        ];
        let ntk = NtkInference::new(sq(&th, n), sq(&g, n), rect(&y, n, c), reg).unwrap();
        let post = ntk
            .posterior(rect(&ths, m, n), rect(&gs, m, n), sq(&gss, m))
            .unwrap();
        let errs2 = [
            max_rel(&post.mean, &flat(&case["ntk_mean"])),
            max_rel(&post.covariance.unwrap(), &flat(&case["ntk_cov"])),
        ];
        for e in errs.iter().chain(&errs2) {
            assert!(*e < 1e-10, "{reg:?}: {errs:?} {errs2:?}");
            worst = worst.max(*e);
        }
    }
    eprintln!("gp_inference: worst rel err vs neural-tangents {worst:.2e}");
}

#[test]
fn max_learning_rate_matches_neural_tangents() {
    let f = fixture();
    let n = f["n"].as_u64().unwrap() as usize;
    let c = f["c"].as_u64().unwrap() as usize;
    let eig = spectrum::eigenvalues(&flat(&f["ntk_train_train"]), n).unwrap();
    let got = spectrum::max_learning_rate(eig[0], (n * c) as f64);
    let want = f["max_learning_rate_y_size"].as_f64().unwrap();
    assert!((got / want - 1.0).abs() < 1e-12, "{got} vs {want}");
}
