//! Linearised training (`ntk train --linearized`, `ntk::train` with
//! `TrainOptions::linearized`): the parameter-space linear model
//! `f_lin(θ) = f(θ0) + J(θ0)(θ − θ0)` trained by burn's SGD (JVP forward, VJP gradient)
//! against an independent computation of the same dynamics in function space with the full
//! empirical NTK at init; and `ntk analyze --checkpoints REAL --linearized LIN` end to end.

mod common;

use common::{run_ntk, scratch};
use ntk::empirical::{EmpiricalOptions, KernelKind, Linearized, Method, empirical_kernel};
use ntk::nets::array::write_npy;
use ntk::nets::{
    BackendKind, FloatKind, HostArray, Network, NetworkConfig, NetworkSpec, Precision,
};
use ntk::train::{Loss, OptimizerKind, Split, TrainOptions, digits_split, list_checkpoints, train};

fn mlp(width: usize) -> NetworkSpec {
    NetworkSpec::from_json(&format!(
        r#"{{"input_shape":[64],"parameterization":"ntk","layers":[
          {{"type":"dense","width":{width},"w_std":1.4,"b_std":0.1}},{{"type":"relu"}},
          {{"type":"dense","width":{width},"w_std":1.4,"b_std":0.1}},{{"type":"tanh"}},
          {{"type":"dense","width":3,"w_std":1.0,"b_std":0.1}}]}}"#
    ))
    .unwrap()
}

/// Full-batch SGD on the linearised model moves the outputs exactly as
/// `f ← f − (η/(n·O)) Θ0(·, train)(f_train − Y)` (MSE `‖f − Y‖²/(2nO)`), Θ0 the full
/// empirical NTK at init: the parameter-space run (burn's optimiser on θ with VJP
/// gradients) and the function-space recursion (the kernel, no parameters) agree.
#[test]
fn parameter_space_linear_training_equals_function_space_dynamics() {
    let (n, m, o, steps) = (24usize, 10usize, 3usize, 15usize);
    let digits = digits_split();
    let mut train_set = digits.train.select(&(0..n).collect::<Vec<_>>());
    let mut test_set = digits
        .test
        .as_ref()
        .unwrap()
        .select(&(0..m).collect::<Vec<_>>());
    // Three classes' worth of targets: labels mod 3.
    for d in [&mut train_set, &mut test_set] {
        if let ntk::train::Targets::Classes { labels, n_classes } = &mut d.y {
            labels.iter_mut().for_each(|l| *l %= 3);
            *n_classes = 3;
        }
    }
    let y = train_set.y.matrix(o).unwrap();
    let device = BackendKind::Flex.device(Precision::F64).unwrap();
    let net = NetworkConfig::new(mlp(16))
        .with_seed(5)
        .with_precision(Precision::F64)
        .init(&device)
        .unwrap();
    let mut all = train_set.x.data.clone();
    all.extend_from_slice(&test_set.x.data);
    let x = HostArray::new(vec![n + m, 64], all);
    let full = empirical_kernel(
        &net,
        &x,
        None,
        &EmpiricalOptions {
            method: Method::Jacobian,
            kind: KernelKind::Full,
            ..Default::default()
        },
        &mut |_, _| {},
    )
    .unwrap()
    .kernel;
    let lr = 0.5;
    let cols = n * o;
    let mut f = net.forward_host(&x).unwrap().data;
    for _ in 0..steps {
        let r: Vec<f64> = (0..cols).map(|k| f[k] - y[k]).collect();
        let big = n + m;
        let mut next = f.clone();
        for i in 0..big {
            for a in 0..o {
                let mut g = 0.0;
                for j in 0..n {
                    for b in 0..o {
                        g += full.data[((i * big + j) * o + a) * o + b] * r[j * o + b];
                    }
                }
                next[i * o + a] -= lr / cols as f64 * g;
            }
        }
        f = next;
    }
    let dir = scratch("ntk-lin", "params");
    let (trained, log) = train(
        &net,
        &Split {
            train: train_set.clone(),
            test: Some(test_set.clone()),
        },
        &TrainOptions {
            loss: Loss::Mse,
            optimizer: OptimizerKind::Sgd,
            lr,
            epochs: steps,
            batch_size: None,
            checkpoint_every: 0,
            out_dir: Some(dir.clone()),
            linearized: true,
            ..Default::default()
        },
        &mut |_, _, _| {},
    )
    .unwrap();
    let lin = Linearized::new(net.clone());
    let got = lin.forward_host(&trained, &x).unwrap();
    let scale = f.iter().fold(0.0f64, |s, v| s.max(v.abs()));
    let err = got
        .data
        .iter()
        .zip(&f)
        .fold(0.0f64, |e, (a, b)| e.max((a - b).abs()))
        / scale;
    assert!(err < 1e-10, "parameter vs function space: {err:.3e}");
    // θ moved, and the linear model is not the network.
    let real = trained.forward_host(&x).unwrap();
    let gap = real
        .data
        .iter()
        .zip(&got.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(gap > 1e-6, "{gap}");
    // The metrics are f_lin's: the last train loss is the function-space one.
    let loss: f64 = (0..cols).map(|k| (f[k] - y[k]).powi(2)).sum::<f64>() / (2.0 * cols as f64);
    let last = log.last().unwrap();
    assert!(last.linearized);
    assert!(
        (last.train_loss - loss).abs() < 1e-10 * loss,
        "{} vs {loss}",
        last.train_loss
    );
    // Checkpoints: θ0 and θ_T (PyTorch-layout safetensors of θ).
    let list = list_checkpoints(&dir).unwrap();
    assert_eq!(list.iter().map(|c| c.0).collect::<Vec<_>>(), [0, steps]);
    let back = Network::load(mlp(16), &list[1].1, &device, Precision::F64).unwrap();
    assert_eq!(lin.forward_host(&back, &x).unwrap().data, got.data);
    let _ = std::fs::remove_dir_all(dir);
}

fn ok(args: &[&str]) -> std::process::Output {
    let o = run_ntk(args);
    assert!(
        o.status.success(),
        "ntk {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `ntk train --linearized` with Adam next to the real run, then `ntk analyze --checkpoints
/// REAL --linearized LIN`: a table, JSON and one PNG; wrong pairs are refused.
#[test]
fn cli_linearized_run_and_comparison() {
    let dir = scratch("ntk-lin", "cli");
    let spec = dir.join("mlp.json");
    std::fs::write(
        &spec,
        r#"{"input_shape":[64],"parameterization":"ntk","layers":[
          {"type":"dense","width":64,"w_std":1.4,"b_std":0.1},{"type":"relu"},
          {"type":"dense","width":10,"w_std":1.0,"b_std":0.1}]}"#,
    )
    .unwrap();
    let digits = digits_split();
    let xt = digits.test.as_ref().unwrap().x.clone();
    let x = dir.join("x_test.npy");
    write_npy(&x, &xt, FloatKind::F64).unwrap();
    let (real, lin, other) = (dir.join("real"), dir.join("lin"), dir.join("other"));
    let s = spec.to_str().unwrap();
    for (out, extra) in [
        (&real, vec![]),
        (&lin, vec!["--linearized"]),
        (&other, vec!["--linearized", "--seed", "3"]),
    ] {
        let mut args = vec![
            "train",
            "--spec",
            s,
            "--data",
            "digits",
            "--epochs",
            "3",
            "--batch-size",
            "128",
            "--dtype",
            "f64",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = ok(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.contains("linearised"), out != &real, "{err}");
    }
    let json = dir.join("gap.json");
    let png = dir.join("gap.png");
    let o = ok(&[
        "analyze",
        "--checkpoints",
        real.to_str().unwrap(),
        "--linearized",
        lin.to_str().unwrap(),
        "--spec",
        s,
        "--x",
        x.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--plot",
        png.to_str().unwrap(),
    ]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert_eq!(table.lines().count(), 5, "{table}");
    let points: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let points = points.as_array().unwrap();
    assert_eq!(points.len(), 4);
    assert!(points[0]["output_gap"].is_null());
    for p in &points[1..] {
        let g = p["output_gap"].as_f64().unwrap();
        assert!(g > 0.0 && g < 1.0, "{p}");
        assert!(p["train_loss_linearized"].as_f64().unwrap().is_finite());
        assert!(p["test_loss"].as_f64().unwrap().is_finite());
    }
    // Both runs learn: the losses fall.
    for key in ["train_loss", "train_loss_linearized"] {
        assert!(
            points[3][key].as_f64().unwrap() < points[0][key].as_f64().unwrap(),
            "{key}"
        );
    }
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    // Wrong pairs: swapped, or another initialisation.
    let refused = |a: &std::path::Path, b: &std::path::Path, spec: &str, words: &str| {
        let o = run_ntk(&[
            "analyze",
            "--checkpoints",
            a.to_str().unwrap(),
            "--linearized",
            b.to_str().unwrap(),
            "--spec",
            spec,
            "--x",
            x.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(words), "{err}");
    };
    refused(
        &lin,
        &real,
        s,
        "was not trained with `ntk train --linearized`",
    );
    refused(&real, &other, s, "different parameters");
    // The runs record their spec: another --spec of the same shapes is refused.
    let wrong = dir.join("wrong.json");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("\"w_std\":1.4", "\"w_std\":1.3"),
    )
    .unwrap();
    refused(
        &real,
        &lin,
        wrong.to_str().unwrap(),
        "trained with another spec",
    );
    let _ = std::fs::remove_dir_all(dir);
}
