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
            Ok(s) => s.to_json().to_string(),
            Err(_) => r#"{"input_shape":[64],"layers":[{"type":"dense","width":-4}]}"#.into(),
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
