//! The studies of the examples at small sizes: they run on the bundled data, produce their
//! outputs, and show what they are meant to show.

use ntk::studies::{nas_scores, trained_vs_init};

fn out_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ntk-study-{name}-{}", std::process::id()))
}

#[test]
fn trained_vs_init_lazy_training_follows_the_ntk_and_the_kernel_moves() {
    let cfg = trained_vs_init::Config {
        lazy_width: 512,
        lazy_train: 48,
        lazy_test: 32,
        lazy_steps: 30,
        width: 64,
        epochs: 4,
        probe: 40,
        out_dir: out_dir("tvi"),
        ..Default::default()
    };
    let r = trained_vs_init::run(&cfg, &mut |_| {}).unwrap();
    // Wide network, a quarter of the stable learning rate: the trained outputs stay within
    // a few percent of the NTK prediction, relative to how far they moved (measured 0.05).
    assert!(r.lazy.test_relative_deviation < 0.15, "{:?}", r.lazy);
    assert!(r.lazy.train_relative_deviation < 0.15, "{:?}", r.lazy);
    let d: Vec<f64> = r
        .checkpoints
        .checkpoints
        .iter()
        .map(|c| c.distance_from_init)
        .collect();
    assert!(d[0].abs() < 1e-12, "{d:?}");
    assert!(
        d.last().unwrap() > &0.0 && d.windows(2).all(|w| w[1] >= w[0] - 1e-12),
        "{d:?}"
    );
    assert!(
        r.ntk_init_test_accuracy > 0.9,
        "{}",
        r.ntk_init_test_accuracy
    );
    assert!(
        r.trained_test_accuracy > r.test_accuracy[0].1,
        "{:?}",
        r.test_accuracy
    );
    assert_eq!(&std::fs::read(&r.plot).unwrap()[1..4], b"PNG");
    std::fs::remove_dir_all(&cfg.out_dir).unwrap();
}

#[test]
fn nas_scores_survive_a_broken_candidate_and_rank_architectures() {
    let cfg = nas_scores::Config {
        candidates: 12,
        score_samples: 48,
        score_seeds: 1,
        epochs: 1,
        out_dir: out_dir("nas"),
        ..Default::default()
    };
    let r = nas_scores::run(&cfg, &|_, _| {}).unwrap();
    assert_eq!(r.rows.len(), 13);
    let broken = r.rows.iter().find(|row| row.name == "broken").unwrap();
    assert!(
        broken.error.as_deref().unwrap().contains("width"),
        "{broken:?}"
    );
    assert_eq!(r.rows.iter().filter(|row| row.error.is_some()).count(), 1);
    let csv = std::fs::read_to_string(&r.csv).unwrap();
    assert_eq!(csv.lines().count(), 14, "header + 13 rows");
    assert!(
        r.spearman
            .iter()
            .all(|(_, rho)| rho.is_finite() && rho.abs() <= 1.0)
    );
    std::fs::remove_dir_all(&cfg.out_dir).unwrap();
}

#[test]
fn ntk_score_on_50_specs_writes_every_row_and_an_error_row_for_the_broken_one() {
    let dir = out_dir("score-cli");
    let specs = dir.join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    for c in nas_scores::candidates(50, 1) {
        let text = match c.spec {
            Ok(ntk::arch::Architecture::Sequential(s)) => s.to_json().to_string(),
            _ => r#"{"input_shape":[64],"layers":[{"type":"dense","width":-4}]}"#.into(),
        };
        std::fs::write(specs.join(format!("{}.json", c.name)), text).unwrap();
    }
    std::fs::write(specs.join("not-json.json"), "{ this is not json").unwrap();
    let csv = dir.join("scores.csv");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ntk"))
        .args([
            "score",
            "--specs",
            specs.to_str().unwrap(),
            "--data",
            "digits",
            "--n",
            "32",
        ])
        .args(["--seeds", "1", "--out", csv.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 52, "50 random + broken + not-json");
    let errors: Vec<&&str> = rows.iter().filter(|r| !r.ends_with(',')).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|r| r.starts_with("broken,") && r.contains("width"))
    );
    assert!(errors.iter().any(|r| r.starts_with("not-json,")));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One full-batch SGD step of `ntk train` moves the outputs as the NTK says:
/// `f1 − f0 ≈ −(η/N) Θ (f0 − y)` with `N = n·O` (the trainer's MSE normalisation), to first
/// order in `η`. Checks the trainer, its checkpoints (read back by `ntk forward` and
/// `ntk empirical --weights`) and the full kernel against each other.
#[test]
fn one_sgd_step_of_ntk_train_follows_the_empirical_ntk() {
    use ntk::nets::array::{read_npy, write_npy};
    use ntk::nets::{FloatKind, HostArray};
    let dir = out_dir("train-step");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("spec.json");
    std::fs::write(
        &spec,
        r#"{"input_shape":[3],"layers":[{"type":"dense","width":16,"w_std":1.4142135623730951,"b_std":0.1},{"type":"tanh"},{"type":"dense","width":2,"w_std":1.0,"b_std":0.1}]}"#,
    )
    .unwrap();
    let (n, o) = (6, 2);
    let x = HostArray::new(
        vec![n, 3],
        (0..n * 3)
            .map(|i| ((i * 7 + 1) as f64 * 0.37).sin())
            .collect(),
    );
    let y = HostArray::new(
        vec![n, o],
        (0..n * o)
            .map(|i| ((i * 5 + 2) as f64 * 0.91).cos())
            .collect(),
    );
    let (xp, yp) = (dir.join("x.npy"), dir.join("y.npy"));
    write_npy(&xp, &x, FloatKind::F64).unwrap();
    write_npy(&yp, &y, FloatKind::F64).unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let run = |args: &[String]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_ntk"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ntk {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let lr = 1e-3;
    let out = dir.join("run");
    run(&[
        "train".into(),
        "--spec".into(),
        s(&spec),
        "--x".into(),
        s(&xp),
        "--y".into(),
        s(&yp),
        "--loss".into(),
        "mse".into(),
        "--optimizer".into(),
        "sgd".into(),
        "--lr".into(),
        lr.to_string(),
        "--epochs".into(),
        "1".into(),
        "--batch-size".into(),
        "full".into(),
        "--dtype".into(),
        "f64".into(),
        "--out".into(),
        s(&out),
    ]);
    assert!(out.join("metrics.jsonl").is_file());
    let forward = |ckpt: &str| {
        let f = dir.join(format!("f-{ckpt}.npy"));
        run(&[
            "forward".into(),
            "--spec".into(),
            s(&spec),
            "--weights".into(),
            s(&out.join(format!("{ckpt}.safetensors"))),
            "--x".into(),
            s(&xp),
            "--out".into(),
            s(&f),
        ]);
        read_npy(&f).unwrap().0
    };
    let (f0, f1) = (forward("epoch-0"), forward("epoch-1"));
    let k = dir.join("k.npy");
    run(&[
        "empirical".into(),
        "--spec".into(),
        s(&spec),
        "--weights".into(),
        s(&out.join("epoch-0.safetensors")),
        "--x1".into(),
        s(&xp),
        "--kernel".into(),
        "full".into(),
        "--out".into(),
        s(&k),
    ]);
    let theta = read_npy(&k).unwrap().0; // [n, n, o, o]
    let big_n = (n * o) as f64;
    let mut max_err: f64 = 0.0;
    let mut max_step: f64 = 0.0;
    for i in 0..n {
        for p in 0..o {
            let mut want = 0.0;
            for j in 0..n {
                for q in 0..o {
                    want -= lr / big_n
                        * theta.data[((i * n + j) * o + p) * o + q]
                        * (f0.data[j * o + q] - y.data[j * o + q]);
                }
            }
            let got = f1.data[i * o + p] - f0.data[i * o + p];
            max_err = max_err.max((got - want).abs());
            max_step = max_step.max(want.abs());
        }
    }
    // Second order in η: relative deviation O(η·λ/N) ≈ 1e-4 here.
    assert!(
        max_err < 1e-2 * max_step,
        "step deviates by {max_err:e} of {max_step:e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
