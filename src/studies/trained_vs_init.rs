//! The NTK at initialisation against the NTK of a trained network, on the bundled digits
//! (`examples/trained_vs_init.rs`):
//!
//! 1. **Lazy training** of a wide MLP by full-batch gradient descent on MSE, against the
//!    closed-form prediction of the network linearised at initialisation (neural-tangents'
//!    `predict.gradient_descent_mse` with the empirical full NTK at init): how far the
//!    trained network's outputs are from the NTK's prediction, relative to how far they
//!    moved.
//! 2. **Feature learning** of a narrower MLP by minibatch SGD: the kernel distance
//!    `1 − cos(Θ_t, Θ_0)` of the trace NTK on probe points over the epochs (Fort et al.
//!    2020), its spectrum, and the test accuracy of the trained network against kernel
//!    ridge regression with the empirical NTK at init and after training.

use crate::plot::{Panel, Series, write_png};
use crate::train::{Dataset, Loss, OptimizerKind, Split, Targets, TrainOptions, builtin, train};
use crate::train_cmd::{CheckpointReport, analyze_checkpoints, checkpoint_panels};
use anyhow::{Context, Result};
use ntk_analysis::Matrix;
use ntk_analysis::predict::{DiagReg, GradientDescentMse, TestSet};
use ntk_empirical::{EmpiricalOptions, KernelKind, empirical_kernel};
use ntk_nets::{BackendKind, HostArray, Network, NetworkConfig, NetworkSpec, Precision};
use std::path::PathBuf;

/// Sizes of the study (the defaults are the example's; the tests use smaller ones).
#[derive(Debug, Clone)]
pub struct Config {
    /// Hidden width and training samples of the lazy-training part.
    pub lazy_width: usize,
    pub lazy_train: usize,
    pub lazy_test: usize,
    /// Full-batch gradient-descent steps.
    pub lazy_steps: usize,
    /// Hidden width, epochs, batch size and learning rate of the SGD part.
    pub width: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    /// Test images whose trace NTK is followed over training.
    pub probe: usize,
    pub seed: u64,
    /// Checkpoints and the plot go here.
    pub out_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lazy_width: 1024,
            lazy_train: 128,
            lazy_test: 64,
            lazy_steps: 100,
            width: 256,
            epochs: 40,
            batch: 64,
            lr: 5.0,
            probe: 200,
            seed: 0,
            out_dir: std::env::temp_dir().join("ntk-trained-vs-init"),
        }
    }
}

/// What the lazy-training part measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LazyReport {
    pub width: usize,
    pub steps: usize,
    pub lr: f64,
    /// `2N/λmax` of the full NTK at init (loss normalised by `N = n·O`).
    pub max_stable_lr: f64,
    /// `‖f_trained − f_ntk‖ / ‖f_trained − f_0‖` on the test points.
    pub test_relative_deviation: f64,
    /// The same on the training points.
    pub train_relative_deviation: f64,
    pub trained_test_accuracy: f64,
    pub ntk_test_accuracy: f64,
}

/// The whole study.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub lazy: LazyReport,
    pub checkpoints: CheckpointReport,
    /// Test accuracy of the trained network after each epoch (epoch 0 = init).
    pub test_accuracy: Vec<(usize, f64)>,
    pub trained_test_accuracy: f64,
    /// Kernel ridge regression (one-hot targets, argmax) with the empirical trace NTK.
    pub ntk_init_test_accuracy: f64,
    pub ntk_trained_test_accuracy: f64,
    pub plot: PathBuf,
}

fn mlp(width: usize, outputs: usize) -> Result<NetworkSpec> {
    Ok(NetworkSpec::from_json(&format!(
        r#"{{"input_shape":[64],"parameterization":"ntk","layers":[
        {{"type":"dense","width":{width},"w_std":1.4142135623730951,"b_std":0.1}},{{"type":"relu"}},
        {{"type":"dense","width":{width},"w_std":1.4142135623730951,"b_std":0.1}},{{"type":"relu"}},
        {{"type":"dense","width":{outputs},"w_std":1.0,"b_std":0.0}}]}}"#
    ))?)
}

fn first(d: &Dataset, n: usize) -> Dataset {
    let idx: Vec<usize> = (0..n.min(d.x.len())).collect();
    d.select(&idx)
}

fn labels(t: &Targets) -> &[usize] {
    match t {
        Targets::Classes { labels, .. } => labels,
        Targets::Values(_) => &[],
    }
}

/// Fraction of rows of `f` (`[n, c]`) whose argmax is the label.
pub fn accuracy(f: &[f64], c: usize, labels: &[usize]) -> f64 {
    let hits = labels
        .iter()
        .enumerate()
        .filter(|&(i, &l)| {
            let row = &f[i * c..(i + 1) * c];
            (0..c).max_by(|&a, &b| row[a].total_cmp(&row[b])) == Some(l)
        })
        .count();
    hits as f64 / labels.len().max(1) as f64
}

fn kernel(
    net: &Network,
    x1: &HostArray,
    x2: Option<&HostArray>,
    kind: KernelKind,
) -> Result<HostArray> {
    Ok(empirical_kernel(
        net,
        x1,
        x2,
        &EmpiricalOptions {
            kind,
            ..Default::default()
        },
        &mut |_, _| {},
    )?
    .kernel)
}

/// Flattens a full kernel `[n1, n2, O, O]` to `[n1·O, n2·O]` (row `(i, o)`, column `(j, o')`).
fn flatten_full(k: &HostArray) -> Vec<f64> {
    let (n1, n2, o) = (k.shape[0], k.shape[1], k.shape[2]);
    let mut out = vec![0.0; n1 * o * n2 * o];
    for i in 0..n1 {
        for j in 0..n2 {
            for p in 0..o {
                for q in 0..o {
                    out[(i * o + p) * (n2 * o) + j * o + q] =
                        k.data[((i * n2 + j) * o + p) * o + q];
                }
            }
        }
    }
    out
}

fn norm_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn lazy_part(cfg: &Config, split: &Split, device: &burn::tensor::Device) -> Result<LazyReport> {
    let test_all = split.test.as_ref().context("digits has a test split")?;
    let (train_set, test) = (
        first(&split.train, cfg.lazy_train),
        first(test_all, cfg.lazy_test),
    );
    let spec = mlp(cfg.lazy_width, 10)?;
    let net = NetworkConfig::new(spec)
        .with_seed(cfg.seed)
        .with_precision(Precision::F64)
        .init(device)?;
    let (n, m, o) = (train_set.x.len(), test.x.len(), 10);
    let y = train_set.y.matrix(o)?;
    let k = flatten_full(&kernel(&net, &train_set.x, None, KernelKind::Full)?);
    let ks = flatten_full(&kernel(
        &net,
        &test.x,
        Some(&train_set.x),
        KernelKind::Full,
    )?);
    let (f0, f0t) = (net.forward_host(&train_set.x)?, net.forward_host(&test.x)?);
    let big_n = (n * o) as f64;
    let lambda_max = ntk_analysis::spectrum::spectrum(&k, n * o)?.lambda_max;
    let max_stable_lr = 2.0 * big_n / lambda_max;
    // A quarter of the stability limit: far enough for the outputs to move, small enough
    // for gradient descent to follow the gradient flow the prediction integrates.
    let lr = 0.25 * max_stable_lr;
    // Full-batch gradient descent on 1/(2N) Σ (f − y)², N = n·O (the trainer's MSE).
    let (trained, _) = train(
        &net,
        &Split {
            train: train_set.clone(),
            test: None,
        },
        &TrainOptions {
            loss: Loss::Mse,
            optimizer: OptimizerKind::Sgd,
            lr,
            epochs: cfg.lazy_steps,
            batch_size: None,
            checkpoint_every: 0,
            shuffle_seed: cfg.seed,
            out_dir: None,
            linearized: false,
        },
        &mut |_, _, _| {},
    )?;
    let gd = GradientDescentMse::new(
        Matrix::square("full NTK at init", &k, n * o)?,
        Matrix::new("one-hot targets", &y, n * o, 1)?,
        lr,
        DiagReg::default(),
    )?;
    let p = gd.predict(
        cfg.lazy_steps as f64,
        Some(Matrix::new("f0", &f0.data, n * o, 1)?),
        Some(TestSet {
            k_test_train: Matrix::new("full NTK test-train", &ks, m * o, n * o)?,
            fx_test_0: Some(Matrix::new("f0 test", &f0t.data, m * o, 1)?),
        }),
    )?;
    let (ft, ftt) = (
        trained.forward_host(&train_set.x)?,
        trained.forward_host(&test.x)?,
    );
    let lin_test = p.test.expect("a test set was given");
    Ok(LazyReport {
        width: cfg.lazy_width,
        steps: cfg.lazy_steps,
        lr,
        max_stable_lr,
        test_relative_deviation: norm_diff(&ftt.data, &lin_test) / norm_diff(&ftt.data, &f0t.data),
        train_relative_deviation: norm_diff(&ft.data, &p.train) / norm_diff(&ft.data, &f0.data),
        trained_test_accuracy: accuracy(&ftt.data, o, labels(&test.y)),
        ntk_test_accuracy: accuracy(&lin_test, o, labels(&test.y)),
    })
}

/// Kernel ridge regression with the trace NTK of `net` (one-hot targets, `t = ∞`).
fn ntk_regression_accuracy(net: &Network, train: &Dataset, test: &Dataset) -> Result<f64> {
    let (n, m, c) = (train.x.len(), test.x.len(), 10);
    let k = kernel(net, &train.x, None, KernelKind::Trace)?;
    let ks = kernel(net, &test.x, Some(&train.x), KernelKind::Trace)?;
    let y = train.y.matrix(c)?;
    let gd = GradientDescentMse::new(
        Matrix::square("trace NTK", &k.data, n)?,
        Matrix::new("one-hot targets", &y, n, c)?,
        1.0,
        DiagReg::relative(1e-4),
    )?;
    let p = gd.predict(
        f64::INFINITY,
        None,
        Some(TestSet {
            k_test_train: Matrix::new("trace NTK test-train", &ks.data, m, n)?,
            fx_test_0: None,
        }),
    )?;
    Ok(accuracy(
        &p.test.expect("test set given"),
        c,
        labels(&test.y),
    ))
}

/// Runs the study; `progress(what)` reports the phases.
pub fn run(cfg: &Config, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    let split = builtin("digits")?;
    let device = BackendKind::Flex.device(Precision::F64)?;
    progress("lazy training of a wide network vs its NTK prediction");
    let lazy = lazy_part(cfg, &split, &device)?;

    progress("SGD training with checkpoints");
    let test = split.test.clone().context("digits has a test split")?;
    let spec = mlp(cfg.width, 10)?;
    let net = NetworkConfig::new(spec.clone())
        .with_seed(cfg.seed)
        .with_precision(Precision::F64)
        .init(&device)?;
    let ckpt = cfg.out_dir.join("checkpoints");
    let _ = std::fs::remove_dir_all(&ckpt);
    let (trained, log) = train(
        &net,
        &split,
        &TrainOptions {
            loss: Loss::Mse,
            optimizer: OptimizerKind::Sgd,
            lr: cfg.lr,
            epochs: cfg.epochs,
            batch_size: Some(cfg.batch),
            checkpoint_every: (cfg.epochs / 10).max(1),
            shuffle_seed: cfg.seed,
            out_dir: Some(ckpt.clone()),
            linearized: false,
        },
        &mut |_, _, _| {},
    )?;
    progress("trace NTK at every checkpoint");
    let probe = first(&test, cfg.probe);
    let probe_y = probe.y.matrix(10)?;
    let checkpoints = analyze_checkpoints(
        &ckpt,
        &crate::arch::Architecture::Sequential(spec.clone()),
        &probe.x,
        Some((&probe_y, 10)),
        &device,
        Precision::F64,
        &mut |_, _| {},
    )?;
    progress("NTK regression at init and after training");
    let ntk_init = ntk_regression_accuracy(&net, &split.train, &test)?;
    let ntk_trained = ntk_regression_accuracy(&trained, &split.train, &test)?;
    let trained_out = trained.forward_host(&test.x)?;
    let test_accuracy: Vec<(usize, f64)> = log
        .iter()
        .filter_map(|m| m.test_accuracy.map(|a| (m.epoch, a)))
        .collect();
    let mut panels = checkpoint_panels(&checkpoints);
    panels.push(Panel {
        log_x: false,
        log_y: false,
        title: "test accuracy".into(),
        x_label: "epoch".into(),
        y_label: "accuracy".into(),
        series: vec![
            Series {
                y_err: Vec::new(),
                label: "trained network".into(),
                points: test_accuracy.iter().map(|&(e, a)| (e as f64, a)).collect(),
            },
            Series {
                y_err: Vec::new(),
                label: format!("NTK regression at init ({:.1}%)", 100.0 * ntk_init),
                points: vec![(0.0, ntk_init), (cfg.epochs as f64, ntk_init)],
            },
        ],
    });
    let plot = cfg.out_dir.join("trained_vs_init.png");
    write_png(&plot, &panels, (560, 420))?;
    Ok(Report {
        lazy,
        checkpoints,
        trained_test_accuracy: accuracy(&trained_out.data, 10, labels(&test.y)),
        test_accuracy,
        ntk_init_test_accuracy: ntk_init,
        ntk_trained_test_accuracy: ntk_trained,
        plot,
    })
}
