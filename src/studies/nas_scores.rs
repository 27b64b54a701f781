//! Training-free architecture scores against short-training accuracy
//! (`examples/nas_scores.rs`): random candidate specs on the bundled digits, each scored
//! at initialisation by [`crate::score`] (TE-NAS condition number, NASI trace norm, label
//! alignment, pNTK statistics) and trained briefly (Adam, cross-entropy); Spearman's ρ
//! between every score and the test accuracy says which scores rank architectures.
//! One deliberately broken candidate is included: it must come back as an error row.

use crate::arch::Architecture;
use crate::score::{CSV_HEADER, Candidate, ScoreOptions, ScoreRow, score_all, spearman};
use crate::train::{Loss, OptimizerKind, TrainOptions, builtin, evaluate, train};
use anyhow::{Context, Result};
use ntk_nets::{BackendKind, NetworkConfig, NetworkSpec, Precision};
use rand::prelude::*;
use rayon::prelude::*;
use std::path::PathBuf;

/// Sizes of the study.
#[derive(Debug, Clone)]
pub struct Config {
    /// Random candidates (plus one broken one).
    pub candidates: usize,
    /// Samples the scores are computed on, and initialisation seeds.
    pub score_samples: usize,
    pub score_seeds: u64,
    /// Epochs of the short training.
    pub epochs: usize,
    pub seed: u64,
    /// Where `nas_scores.csv` (the score columns of `ntk score` plus the accuracy) goes.
    pub out_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            candidates: 50,
            score_samples: 128,
            score_seeds: 2,
            epochs: 3,
            seed: 0,
            out_dir: std::env::temp_dir().join("ntk-nas-scores"),
        }
    }
}

/// What the study measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub rows: Vec<ScoreRow>,
    /// Test accuracy after the short training, per row, or why there is none (the
    /// candidate failed to score, or its training failed).
    pub accuracy: Vec<std::result::Result<f64, String>>,
    /// `(score name, Spearman ρ with accuracy)` over the candidates that scored.
    pub spearman: Vec<(&'static str, f64)>,
    pub csv: PathBuf,
}

/// A random MLP or CNN on the 8×8 digits, as JSON.
fn random_spec(rng: &mut impl Rng) -> String {
    let act = ["relu", "erf", "tanh", "gelu"][rng.random_range(0..4)];
    let param = ["ntk", "standard"][rng.random_range(0..2)];
    let w_std = rng.random_range(1.0..2.0f64);
    let bias = if rng.random_bool(0.5) { "0.1" } else { "null" };
    let mut layers = Vec::new();
    let conv = rng.random_bool(0.4);
    if conv {
        for _ in 0..rng.random_range(1..=2) {
            let ch = [4, 8, 16][rng.random_range(0..3)];
            layers.push(format!(
                r#"{{"type":"conv2d","channels":{ch},"kernel":[3,3],"padding":"same","w_std":{w_std:.3},"b_std":{bias}}},{{"type":"{act}"}}"#
            ));
        }
        layers.push(
            if rng.random_bool(0.5) {
                r#"{"type":"global_avg_pool"}"#
            } else {
                r#"{"type":"flatten"}"#
            }
            .to_string(),
        );
    }
    for _ in 0..rng.random_range(if conv { 0 } else { 1 }..=2) {
        let width = [16, 32, 64, 128, 256][rng.random_range(0..5)];
        layers.push(format!(
            r#"{{"type":"dense","width":{width},"w_std":{w_std:.3},"b_std":{bias}}},{{"type":"{act}"}}"#
        ));
    }
    layers.push(r#"{"type":"dense","width":10,"w_std":1.0,"b_std":0.0}"#.to_string());
    let input = if conv { "[1,8,8]" } else { "[64]" };
    format!(
        r#"{{"input_shape":{input},"parameterization":"{param}","layers":[{}]}}"#,
        layers.join(",")
    )
}

/// The candidates: `n` random specs and one broken one (a negative width).
pub fn candidates(n: usize, seed: u64) -> Vec<Candidate> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out: Vec<Candidate> = (0..n)
        .map(|i| {
            Candidate::new(
                format!("cand-{i:02}"),
                NetworkSpec::from_json(&random_spec(&mut rng))
                    .map(Architecture::Sequential)
                    .map_err(|e| e.to_string()),
            )
        })
        .collect();
    out.push(Candidate::new(
        "broken".into(),
        NetworkSpec::from_json(
            r#"{"input_shape":[64],"layers":[{"type":"dense","width":-4},{"type":"relu"},{"type":"dense","width":10}]}"#,
        )
        .map(Architecture::Sequential)
        .map_err(|e| e.to_string()),
    ));
    out
}

/// Runs the study; `progress(done, total)` after each candidate's training.
pub fn run(cfg: &Config, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<Report> {
    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    let split = builtin("digits")?;
    let device = BackendKind::Flex.device(Precision::F32)?;
    let cands = candidates(cfg.candidates, cfg.seed);
    let idx: Vec<usize> = (0..cfg.score_samples.min(split.train.x.len())).collect();
    let sample = split.train.select(&idx);
    let rows = score_all(
        &cands,
        &sample.x,
        Some(&sample.y),
        &ScoreOptions::new(
            cfg.score_seeds,
            Precision::F64,
            BackendKind::Flex.device(Precision::F64)?,
        ),
        &|_| {},
    );
    let done = std::sync::atomic::AtomicUsize::new(0);
    let total = cands.len();
    let accuracy: Vec<std::result::Result<f64, String>> = cands
        .par_iter()
        .zip(&rows)
        .map(|(c, row)| {
            let out = match (&c.spec, &row.error) {
                (Ok(Architecture::Sequential(spec)), None) => (|| -> Result<f64> {
                    let net = NetworkConfig::new(spec.clone())
                        .with_seed(cfg.seed)
                        .with_precision(Precision::F32)
                        .init(&device)?;
                    let data = crate::train::Split {
                        train: split.train.reshaped(&spec.input_shape)?,
                        test: None,
                    };
                    let (trained, _) = train(
                        &net,
                        &data,
                        &TrainOptions {
                            loss: Loss::Xent,
                            optimizer: OptimizerKind::Adam,
                            lr: 1e-3,
                            epochs: cfg.epochs,
                            batch_size: Some(64),
                            checkpoint_every: 0,
                            shuffle_seed: cfg.seed,
                            out_dir: None,
                            linearized: false,
                        },
                        &mut |_, _, _| {},
                    )?;
                    let test = split
                        .test
                        .as_ref()
                        .context("test split")?
                        .reshaped(&spec.input_shape)?;
                    Ok(evaluate(&trained, &test, Loss::Xent)?
                        .accuracy
                        .unwrap_or(f64::NAN))
                })()
                .map_err(|e| format!("training: {e:#}")),
                _ => Err("not scored".to_string()),
            };
            progress(
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
                total,
            );
            out
        })
        .collect();
    let ok: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].error.is_none() && accuracy[i].as_ref().is_ok_and(|a| a.is_finite()))
        .collect();
    type Score = fn(&ScoreRow) -> f64;
    let scores: [(&'static str, Score); 6] = [
        ("te_nas_condition", |r| r.te_nas_condition),
        ("ntk_trace_norm", |r| r.ntk_trace_norm),
        ("label_alignment", |r| r.label_alignment.unwrap_or(f64::NAN)),
        ("pntk_lambda_max", |r| r.pntk_lambda_max),
        ("pntk_lambda_min", |r| r.pntk_lambda_min),
        ("pntk_effective_rank", |r| r.pntk_effective_rank),
    ];
    let spearman: Vec<(&'static str, f64)> = scores
        .iter()
        .map(|(name, f)| {
            // Candidates whose score is finite (a NaN would take a rank of its own).
            let (v, a): (Vec<f64>, Vec<f64>) = ok
                .iter()
                .filter(|&&i| f(&rows[i]).is_finite())
                .map(|&i| (f(&rows[i]), *accuracy[i].as_ref().expect("filtered")))
                .unzip();
            (*name, spearman(&v, &a))
        })
        .collect();
    let csv = cfg.out_dir.join("nas_scores.csv");
    let mut text = format!("{CSV_HEADER},short_training_test_accuracy,short_training_error\n");
    for (r, a) in rows.iter().zip(&accuracy) {
        let (acc, err) = match a {
            Ok(a) => (a.to_string(), String::new()),
            Err(_) if r.error.is_some() => (String::new(), String::new()),
            Err(e) => (String::new(), format!("\"{}\"", e.replace('"', "'"))),
        };
        text += &format!("{},{acc},{err}\n", r.csv_line());
    }
    ntk_nets::array::write_atomic(&csv, text.as_bytes())?;
    Ok(Report {
        rows,
        accuracy,
        spearman,
        csv,
    })
}
