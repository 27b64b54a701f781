//! The `ntk train` and `ntk score` subcommands, and `ntk analyze --checkpoints`: the NTK
//! along a training run.

use crate::plot::{Panel, Series, write_png};
use crate::score::{ScoreOptions, load_candidates, score_all, write_csv};
use crate::train::{
    Dataset, EpochMetrics, Loss, OptimizerKind, Split, Targets, TrainOptions, builtin, from_csv,
    from_npy, list_checkpoints, reshape_inputs, train,
};
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ntk_analysis::{distance, spectrum};
use ntk_empirical::KernelKind;
use ntk_nets::array::{read_inputs, write_atomic};
use ntk_nets::{BackendKind, HostArray, Network, NetworkConfig, NetworkSpec, Precision};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where training (and test) data come from: a bundled dataset, a CSV, or `.npy` pairs.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Bundled dataset (digits: 1437 train / 360 test, 10 classes; diabetes: regression, 354
    /// train / 88 test) or a CSV file (label in the last column; its test CSV with
    /// --x-test). Or use --x/--y.
    #[arg(long)]
    pub data: Option<String>,
    /// Inputs .npy [N, ...] (with --y).
    #[arg(long)]
    pub x: Option<PathBuf>,
    /// Labels .npy [N] (class ids) or targets [N] / [N, c] (with --x).
    #[arg(long)]
    pub y: Option<PathBuf>,
    /// Test inputs .npy (with --y-test), or a test CSV with --data FILE.csv.
    #[arg(long)]
    pub x_test: Option<PathBuf>,
    /// Test labels .npy.
    #[arg(long)]
    pub y_test: Option<PathBuf>,
}

impl DataArgs {
    /// Loads the split; `classes`: labels are class ids. `default` is the bundled dataset
    /// used when no source is given (`None`: an error).
    pub fn load(&self, classes: bool, default: Option<&str>) -> Result<Split> {
        match (&self.data, &self.x, &self.y) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                bail!("--data and --x/--y are alternatives: give one")
            }
            (Some(d), None, None) => self.named(d, classes),
            (None, Some(x), Some(y)) => {
                let train = from_npy(x, y, classes)?;
                let test = match (&self.x_test, &self.y_test) {
                    (Some(xt), Some(yt)) => Some(from_npy(xt, yt, classes)?),
                    (None, None) => None,
                    _ => bail!("--x-test and --y-test go together"),
                };
                Ok(Split { train, test })
            }
            (None, Some(_), None) | (None, None, Some(_)) => bail!("--x and --y go together"),
            (None, None, None) => match default {
                Some(d) => self.named(d, classes),
                None => {
                    bail!("no data: give --data digits|diabetes|FILE.csv or --x X.npy --y Y.npy")
                }
            },
        }
    }

    /// Whether the labels hold one number per sample (`--y` of shape `[N]` or `[N, 1]`; CSV
    /// and bundled data always do).
    pub fn labels_are_one_column(&self) -> Result<bool> {
        let Some(y) = &self.y else { return Ok(true) };
        let bytes = std::fs::read(y).with_context(|| format!("reading {}", y.display()))?;
        let h = ntk_nets::npy_header::parse(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", y.display()))?;
        Ok(h.shape.len() == 1 || (h.shape.len() == 2 && h.shape[1] == 1))
    }

    /// A bundled dataset or a CSV (with `--x-test` as its test CSV).
    fn named(&self, d: &str, classes: bool) -> Result<Split> {
        if self.y_test.is_some() {
            bail!("--y-test goes with --x/--y (a CSV's test labels are in its --x-test CSV)");
        }
        if d.ends_with(".csv") || (d != "digits" && d != "diabetes" && Path::new(d).is_file()) {
            let train = from_csv(Path::new(d), classes)?;
            let test = self
                .x_test
                .as_ref()
                .map(|p| from_csv(p, classes))
                .transpose()?;
            Ok(Split { train, test })
        } else {
            if self.x_test.is_some() {
                bail!("--x-test: the bundled {d:?} has its own test split");
            }
            builtin(d)
        }
    }
}

/// Arguments of `ntk train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Network spec (JSON).
    #[arg(long)]
    pub spec: PathBuf,
    /// Initial weights (PyTorch-layout safetensors); without it the network is random from --seed.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Seed of the random initialisation (ignored with --weights) and of the batch shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub data: DataArgs,
    /// mse (1/(2·B·O) Σ (f − y)², class labels one-hot) or xent (softmax cross-entropy).
    #[arg(long, default_value = "mse")]
    pub loss: String,
    /// adam or sgd (burn's optimizers). The defaults (adam, lr 0.003, batches of 32, 20
    /// epochs, mse) reach 93–96 % test accuracy on the bundled digits (MLPs and a small
    /// CNN, measured).
    #[arg(long, default_value = "adam")]
    pub optimizer: String,
    /// Learning rate (default: 0.003 for adam, 1.0 for sgd).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Epochs.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Mini-batch size, or "full" for full-batch gradient descent (the NTK regime).
    #[arg(long, default_value = "32")]
    pub batch_size: String,
    /// Write into an --out folder that holds an earlier run (its checkpoints and metrics
    /// are removed first). Without it such a folder is refused: runs would mix.
    #[arg(long)]
    pub overwrite: bool,
    /// Write a checkpoint every K epochs (epoch 0 and the last always).
    #[arg(long, default_value_t = 1)]
    pub checkpoint_every: usize,
    /// Output folder: epoch-{e}.safetensors and metrics.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Compute backend: flex or ndarray.
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Float precision: f32 or f64.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Train the network linearised around its initial parameters,
    /// f_lin(θ, x) = f(θ0, x) + J(θ0, x)(θ − θ0) (forward: a JVP; gradient: a VJP at θ0),
    /// with the same optimiser, loss and batches. The checkpoints hold θ, the metrics are
    /// f_lin's; `ntk analyze --checkpoints REAL --linearized THIS` compares the two runs.
    #[arg(long)]
    pub linearized: bool,
}

/// Arguments of `ntk score`.
#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// A folder of *.json specs (sequential or graph) and *.onnx files, or a JSONL file (one
    /// spec, or {"name", "spec"}, per line). An ONNX file is scored at its own weights
    /// (one seed).
    #[arg(long)]
    pub specs: PathBuf,
    /// Inputs .npy [N, ...] (reshaped to each spec's input_shape when the sizes agree).
    #[arg(long, conflicts_with = "data")]
    pub x: Option<PathBuf>,
    /// Labels .npy [N] (class ids) or targets [N, c], for the label alignment.
    #[arg(long)]
    pub y: Option<PathBuf>,
    /// Or: the first --n training samples of a bundled dataset (digits, diabetes), with labels.
    #[arg(long)]
    pub data: Option<String>,
    /// Samples taken from --data.
    #[arg(long, default_value_t = 128)]
    pub n: usize,
    /// Initialisation seeds 0..S (statistics are means over them).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Output CSV.
    #[arg(long)]
    pub out: PathBuf,
    /// Compute backend: flex or ndarray.
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Float precision: f32 or f64.
    #[arg(long, default_value = "f64")]
    pub dtype: String,
    /// Graph networks: kernels over the parameters whose names match this regex only
    /// (TE-NAS: 'weight').
    #[arg(long)]
    pub params: Option<String>,
    /// Graph networks: leave out the parameters whose names match this regex.
    #[arg(long)]
    pub frozen: Option<String>,
    /// Statistics to compute, comma-separated (default all): te_nas_condition,
    /// pntk_lambda_max, pntk_lambda_min, pntk_effective_rank (the sum-of-logits kernel),
    /// ntk_trace_norm, label_alignment (the trace kernel, O times dearer). The others are
    /// left empty.
    #[arg(long, value_delimiter = ',')]
    pub metrics: Option<Vec<String>>,
    /// Working memory of the kernels (e.g. 4GiB), shared by the candidates scored at
    /// once (one per core); larger inputs are tiled under it.
    #[arg(long, default_value = "2GiB")]
    pub max_memory: String,
}

/// A `--params`/`--frozen` regular expression, or an error naming the flag.
pub fn regex_arg(flag: &str, r: &Option<String>) -> Result<Option<regex::Regex>> {
    r.as_deref()
        .map(|s| regex::Regex::new(s).with_context(|| format!("{flag} {s:?} is not a valid regex")))
        .transpose()
}

fn device(backend: &str, dtype: &str) -> Result<(burn::tensor::Device, Precision)> {
    let precision = Precision::parse(dtype).context("--dtype")?;
    let backend = BackendKind::parse(backend).context("--backend")?;
    Ok((backend.device(precision)?, precision))
}

fn fmt_metrics(m: &EpochMetrics) -> String {
    let mut s = format!("loss {:.4}", m.train_loss);
    if let Some(a) = m.train_accuracy {
        s += &format!(" acc {:.1}%", 100.0 * a);
    }
    if let Some(l) = m.test_loss {
        s += &format!(" | test loss {l:.4}");
    }
    if let Some(a) = m.test_accuracy {
        s += &format!(" acc {:.1}%", 100.0 * a);
    }
    s
}

/// `ntk train`.
pub fn run_train(a: TrainArgs) -> Result<()> {
    let loss = Loss::parse(&a.loss)?;
    let optimizer = OptimizerKind::parse(&a.optimizer)?;
    let lr = a.lr.unwrap_or(match optimizer {
        OptimizerKind::Adam => 0.003,
        _ => 1.0,
    });
    if !(lr.is_finite() && lr > 0.0) {
        bail!("--lr must be a positive number, got {lr}");
    }
    let batch_size = match a.batch_size.trim() {
        "full" => None,
        b => match b.parse::<usize>() {
            Ok(0) | Err(_) => bail!("--batch-size: {b:?} is not a positive integer or \"full\""),
            Ok(b) => Some(b),
        },
    };
    if a.out.is_file() {
        bail!("--out {}: is a file; give a folder", a.out.display());
    }
    let (dev, precision) = device(&a.backend, &a.dtype)?;
    let spec = NetworkSpec::from_file(&a.spec)?;
    let net = match &a.weights {
        Some(w) => Network::load(spec.clone(), w, &dev, precision)?,
        None => NetworkConfig::new(spec.clone())
            .with_seed(a.seed)
            .with_precision(precision)
            .init(&dev)?,
    };
    // Class ids for cross-entropy, and for MSE on a network with several outputs when the
    // labels are one number per sample; [N, c] targets are regression targets.
    let classes = loss == Loss::Xent || (net.n_outputs() > 1 && a.data.labels_are_one_column()?);
    let mut split = a.data.load(classes, None)?;
    // Let flat data feed an image network (e.g. digits [N, 64] into [1, 8, 8]).
    split.train = split
        .train
        .reshaped(&spec.input_shape)
        .context("train data")?;
    if let Some(t) = split.test.take() {
        split.test = Some(t.reshaped(&spec.input_shape).context("test data")?);
    }
    // Only now, with the spec, weights and data read: an --overwrite never removes a run
    // for a command that then fails on its input.
    prepare_run_folder(&a.out, a.overwrite)?;
    // The run's own record of its architecture (for `ntk analyze --checkpoints` to check
    // the --spec it is given against).
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    write_atomic(
        a.out.join(RUN_SPEC),
        serde_json::to_string_pretty(&spec.to_json())?.as_bytes(),
    )?;
    let options = TrainOptions {
        loss,
        optimizer,
        lr,
        epochs: a.epochs,
        batch_size,
        checkpoint_every: a.checkpoint_every,
        shuffle_seed: a.seed,
        out_dir: Some(a.out.clone()),
        linearized: a.linearized,
    };
    eprintln!(
        "training {}{} parameters on {} samples{} ({} loss, {} lr {}, batch {}, {} epochs, {})",
        if a.linearized {
            "the network linearised around its initial parameters: "
        } else {
            ""
        },
        spec.n_params()?,
        split.train.x.len(),
        split
            .test
            .as_ref()
            .map(|t| format!(" (test {})", t.x.len()))
            .unwrap_or_default(),
        loss.name(),
        optimizer.name(),
        lr,
        batch_size.map(|b| b.to_string()).unwrap_or("full".into()),
        a.epochs,
        precision.name()
    );
    let bar = ProgressBar::new(a.epochs as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {pos}/{len} [{bar:30}] {elapsed} eta {eta} {msg}")
            .expect("valid template"),
    );
    let t0 = Instant::now();
    let (_, log) = train(&net, &split, &options, &mut |e, _, m| {
        bar.set_position(e as u64);
        bar.set_message(fmt_metrics(m));
    })?;
    bar.finish_and_clear();
    let (first, last) = (&log[0], log.last().expect("epoch 0 at least"));
    eprintln!("epoch 0: {}", fmt_metrics(first));
    eprintln!("epoch {}: {}", last.epoch, fmt_metrics(last));
    eprintln!(
        "wrote {} checkpoint(s) and metrics.jsonl into {} ({:.2} s)",
        log.iter().filter(|m| m.checkpoint.is_some()).count(),
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The spec a run folder was trained with (written by `ntk train`).
pub const RUN_SPEC: &str = "run-spec.json";

/// One run per folder: an `--out` folder holding an earlier run (checkpoints or
/// metrics) is refused, or emptied of them with `--overwrite`, so that `ntk analyze
/// --checkpoints` never mixes two runs.
fn prepare_run_folder(dir: &Path, overwrite: bool) -> Result<()> {
    if dir.is_file() {
        bail!("--out {}: is a file; give a folder", dir.display());
    }
    if !dir.is_dir() {
        return Ok(());
    }
    let earlier: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name == "metrics.jsonl"
                || name == RUN_SPEC
                || (name.starts_with("epoch-") && name.ends_with(".safetensors"))
        })
        .collect();
    if earlier.is_empty() {
        return Ok(());
    }
    if !overwrite {
        bail!(
            "--out {}: holds an earlier run ({} checkpoint/metrics files); use another folder, or --overwrite to replace it",
            dir.display(),
            earlier.len()
        );
    }
    for p in earlier {
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

/// `ntk score`.
pub fn run_score(a: ScoreArgs) -> Result<()> {
    crate::outputs::check_outputs(
        &[("--out", Some(&a.out))],
        &[Some(&a.specs), a.x.as_deref(), a.y.as_deref()],
    )?;
    let (dev, precision) = device(&a.backend, &a.dtype)?;
    let candidates = load_candidates(&a.specs)?;
    let (x, y): (HostArray, Option<Targets>) = match (&a.x, &a.data) {
        (Some(xp), None) => {
            let (x, _) = ntk_nets::array::read_npy(xp)?;
            if x.shape.len() < 2 {
                bail!(
                    "{}: inputs must be [N, ...], got {:?}",
                    xp.display(),
                    x.shape
                );
            }
            if let Some((i, v)) = x.first_non_finite() {
                bail!("{}: non-finite input {v} at flat index {i}", xp.display());
            }
            let y = match &a.y {
                Some(yp) => Some(from_npy(xp, yp, is_integer_npy(yp)?)?.y),
                None => None,
            };
            (x, y)
        }
        (None, Some(d)) => {
            let s = builtin(d)?;
            let n = a.n.min(s.train.x.len());
            let idx: Vec<usize> = (0..n).collect();
            let d: Dataset = s.train.select(&idx);
            (d.x, Some(d.y))
        }
        _ => bail!("give --x X.npy [--y Y.npy] or --data digits|diabetes"),
    };
    let options = ScoreOptions {
        params: regex_arg("--params", &a.params)?,
        frozen: regex_arg("--frozen", &a.frozen)?,
        metrics: match &a.metrics {
            Some(m) => crate::score::Metrics::from_names(m).context("--metrics")?,
            None => crate::score::Metrics::all(),
        },
        max_memory: crate::infinite_cmd::parse_bytes(&a.max_memory)?,
        ..ScoreOptions::new(a.seeds, precision, dev)
    };
    let bar = ProgressBar::new(candidates.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("scoring [{bar:30}] {pos}/{len} {elapsed} eta {eta} {msg}")
            .expect("valid template"),
    );
    let t0 = Instant::now();
    let rows = score_all(&candidates, &x, y.as_ref(), &options, &|name| {
        bar.inc(1);
        bar.set_message(name.to_string());
    });
    bar.finish_and_clear();
    write_csv(&a.out, &rows)?;
    let failed = rows.iter().filter(|r| r.error.is_some()).count();
    for r in rows.iter().filter(|r| r.error.is_some()) {
        eprintln!("{}: error: {}", r.name, r.error.as_deref().unwrap_or(""));
    }
    eprintln!(
        "wrote {} ({} candidates, {} failed, {} seed(s), {} samples, {:.2} s)",
        a.out.display(),
        rows.len(),
        failed,
        a.seeds,
        x.len(),
        t0.elapsed().as_secs_f64()
    );
    if failed == rows.len() {
        bail!("every candidate failed (their errors are above and in the CSV)");
    }
    Ok(())
}

/// Whether an `.npy` of labels holds only integer values (then they are class ids).
fn is_integer_npy(p: &Path) -> Result<bool> {
    Ok(crate::train::class_ids(&crate::train::read_labels(p)?).is_some())
}

/// The NTK at one checkpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckpointStats {
    pub epoch: usize,
    pub file: String,
    /// `1 − cos(K_epoch, K_0)`.
    pub distance_from_init: f64,
    pub trace: f64,
    pub lambda_max: f64,
    pub lambda_min: f64,
    pub condition_number: Option<f64>,
    pub effective_rank: f64,
    /// `2n/λmax`: the largest stable full-batch learning rate for the MSE `1/(2n) Σ‖f − y‖²`.
    pub max_learning_rate: f64,
    /// Kernel-target alignment with the labels (raw and centred), when labels are given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alignment: Option<ntk_analysis::alignment::Alignment>,
    /// All eigenvalues, descending.
    pub eigenvalues: Vec<f64>,
}

/// `ntk analyze --checkpoints` output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckpointReport {
    pub n: usize,
    pub kernel: &'static str,
    pub checkpoints: Vec<CheckpointStats>,
    /// `d(K_i, K_{i+1}) / (epoch_{i+1} − epoch_i)`, one per successive pair.
    pub velocity: Vec<f64>,
}

/// The trace NTK on `x` at every checkpoint of `dir`, its spectrum, distance from the first
/// checkpoint and the velocity between successive ones, and its alignment with `y`
/// (`[n, c]` row-major, e.g. one-hot labels) when given. `progress(done, total)`.
pub fn analyze_checkpoints(
    dir: &Path,
    spec: &crate::arch::Architecture,
    x: &HostArray,
    y: Option<(&[f64], usize)>,
    device: &burn::tensor::Device,
    precision: Precision,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<CheckpointReport> {
    let list = list_checkpoints(dir)?;
    let n = x.len();
    let mut kernels = Vec::with_capacity(list.len());
    for (i, (_, path)) in list.iter().enumerate() {
        let k = spec
            .build(0, Some(path), device, precision)
            .and_then(|net| net.kernel(x, KernelKind::Trace))
            .with_context(|| format!("{}", path.display()))?;
        kernels.push(k.data);
        progress(i + 1, list.len());
    }
    let mut checkpoints = Vec::with_capacity(list.len());
    for ((epoch, path), k) in list.iter().zip(&kernels) {
        let s = spectrum::spectrum(k, n).with_context(|| format!("{}", path.display()))?;
        checkpoints.push(CheckpointStats {
            epoch: *epoch,
            file: path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            distance_from_init: distance::kernel_distance(&kernels[0], k)?,
            trace: s.trace,
            lambda_max: s.lambda_max,
            lambda_min: s.lambda_min,
            condition_number: s.condition_number.is_finite().then_some(s.condition_number),
            effective_rank: s.effective_rank_participation,
            max_learning_rate: s.max_learning_rate,
            alignment: y
                .map(|(y, c)| ntk_analysis::alignment::alignment(k, n, y, c))
                .transpose()
                .with_context(|| format!("{}: alignment", path.display()))?,
            eigenvalues: s.eigenvalues,
        });
    }
    let velocity = if kernels.len() >= 2 {
        let refs: Vec<&[f64]> = kernels.iter().map(|k| k.as_slice()).collect();
        let times: Vec<f64> = list.iter().map(|(e, _)| *e as f64).collect();
        distance::kernel_velocity(&refs, Some(&times))?
    } else {
        Vec::new()
    };
    Ok(CheckpointReport {
        n,
        kernel: "trace",
        checkpoints,
        velocity,
    })
}

/// The two panels of a checkpoint report: the spectrum (log10 λ_i against i, first, middle
/// and last checkpoints) and the kernel distance from init against the epoch.
pub fn checkpoint_panels(r: &CheckpointReport) -> Vec<Panel> {
    let mut picks: Vec<usize> = vec![0, r.checkpoints.len() / 2, r.checkpoints.len() - 1];
    picks.dedup();
    // Non-positive eigenvalues (rounding at the bottom of a PSD spectrum) have no place on
    // a log axis: counted in the title.
    let dropped = picks
        .iter()
        .map(|&i| {
            r.checkpoints[i]
                .eigenvalues
                .iter()
                .filter(|l| **l <= 0.0)
                .count()
        })
        .max()
        .unwrap_or(0);
    let spectrum = Panel {
        title: if dropped > 0 {
            format!(
                "trace-NTK spectrum (n = {}; {dropped} λ ≤ 0 not drawn)",
                r.n
            )
        } else {
            format!("trace-NTK spectrum (n = {})", r.n)
        },
        x_label: "eigenvalue index i".into(),
        y_label: "λ_i".into(),
        series: picks
            .iter()
            .map(|&i| {
                let c = &r.checkpoints[i];
                Series {
                    label: format!("epoch {}", c.epoch),
                    points: c
                        .eigenvalues
                        .iter()
                        .enumerate()
                        .map(|(j, l)| (j as f64, *l))
                        .collect(),
                    y_err: Vec::new(),
                }
            })
            .collect(),
        log_x: false,
        log_y: true,
    };
    let dist = Panel {
        title: "kernel distance from init".into(),
        x_label: "epoch".into(),
        y_label: "1 − cos(K_t, K_0)".into(),
        series: vec![Series {
            label: "distance".into(),
            points: r
                .checkpoints
                .iter()
                .map(|c| (c.epoch as f64, c.distance_from_init))
                .collect(),
            y_err: Vec::new(),
        }],
        log_x: false,
        log_y: false,
    };
    let mut out = vec![spectrum, dist];
    if r.checkpoints.iter().any(|c| c.alignment.is_some()) {
        let series = |label: &str, f: fn(&ntk_analysis::alignment::Alignment) -> f64| Series {
            label: label.into(),
            points: r
                .checkpoints
                .iter()
                .filter_map(|c| c.alignment.as_ref().map(|a| (c.epoch as f64, f(a))))
                .collect(),
            y_err: Vec::new(),
        };
        out.push(Panel {
            title: "kernel-target alignment".into(),
            x_label: "epoch".into(),
            y_label: "alignment".into(),
            series: vec![series("centred", |a| a.centered), series("raw", |a| a.raw)],
            log_x: false,
            log_y: false,
        });
    }
    out
}

/// `ntk analyze --checkpoints DIR --spec S --x X.npy [--y Y.npy] [--json J] [--plot P.png]`.
pub fn run_analyze_checkpoints(
    dir: &Path,
    spec: Option<&Path>,
    x: Option<&Path>,
    y: Option<&Path>,
    json: Option<&Path>,
    plot: Option<&Path>,
    dtype: &str,
) -> Result<()> {
    let spec = spec.context("--checkpoints needs --spec S.json")?;
    let x = x.context("--checkpoints needs --x X.npy (the inputs of the kernel)")?;
    let (dev, precision) = device("flex", dtype)?;
    let spec = crate::arch::Architecture::from_file(spec)?;
    // The input shape, from the first checkpoint's network (before any kernel).
    let first = list_checkpoints(dir)?;
    let input_shape = spec
        .build(0, Some(&first[0].1), &dev, precision)
        .with_context(|| format!("{}", first[0].1.display()))?
        .input_shape();
    let xa = match read_inputs(x, &input_shape) {
        Ok(a) => a,
        Err(e) => {
            let (raw, _) = ntk_nets::array::read_npy(x)?;
            if raw.shape.len() < 2 {
                return Err(e.into());
            }
            reshape_inputs(&raw, &input_shape).with_context(|| format!("{}", x.display()))?
        }
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("checkpoints [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template"),
    );
    // Labels: class ids (one-hot) or real targets [n] / [n, c].
    let targets = match y {
        Some(p) => {
            let raw = crate::train::read_labels(p)?;
            if raw.shape.first() != Some(&xa.len()) {
                bail!(
                    "{}: {} rows of labels for {} inputs",
                    p.display(),
                    raw.shape.first().unwrap_or(&0),
                    xa.len()
                );
            }
            let ids = crate::train::class_ids(&raw).is_some();
            let c = if ids {
                raw.data.iter().fold(0.0f64, |m, v| m.max(*v)) as usize + 1
            } else {
                raw.shape.get(1).copied().unwrap_or(1)
            };
            let m = if ids {
                let mut m = vec![0.0; xa.len() * c];
                for (i, v) in raw.data.iter().enumerate() {
                    m[i * c + *v as usize] = 1.0;
                }
                m
            } else {
                raw.data
            };
            Some((m, c))
        }
        None => None,
    };
    let r = analyze_checkpoints(
        dir,
        &spec,
        &xa,
        targets.as_ref().map(|(m, c)| (m.as_slice(), *c)),
        &dev,
        precision,
        &mut |d, t| {
            bar.set_length(t as u64);
            bar.set_position(d as u64);
        },
    )?;
    bar.finish_and_clear();
    println!(
        "{:>6} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "epoch", "dist_init", "trace", "lambda_max", "eff_rank", "max_lr", "align_c", "velocity"
    );
    for (i, c) in r.checkpoints.iter().enumerate() {
        let v = if i == 0 {
            "-".to_string()
        } else {
            format!("{:.3e}", r.velocity[i - 1])
        };
        let align = c
            .alignment
            .map_or("-".to_string(), |a| format!("{:.4}", a.centered));
        println!(
            "{:>6} {:>12.4e} {:>12.4e} {:>12.4e} {:>10.2} {:>10.3e} {:>10} {:>10}",
            c.epoch,
            c.distance_from_init,
            c.trace,
            c.lambda_max,
            c.effective_rank,
            c.max_learning_rate,
            align,
            v
        );
    }
    if let Some(j) = json {
        write_atomic(j, serde_json::to_string_pretty(&r)?.as_bytes())?;
        eprintln!("wrote {}", j.display());
    }
    if let Some(p) = plot {
        write_png(p, &checkpoint_panels(&r), (640, 480))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// One common checkpoint of a real run and its linearised run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinearizedPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_loss_linearized: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_loss_linearized: Option<f64>,
    /// `‖f(θ_e) − f_lin(θ'_e)‖ / ‖f(θ_e) − f(θ0)‖` on the inputs (Frobenius norms over
    /// samples and outputs); `None` at epoch 0 and where the network has not moved.
    pub output_gap: Option<f64>,
}

/// The epoch lines of a run's `metrics.jsonl`.
fn read_metrics(dir: &Path) -> Result<Vec<serde_json::Value>> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: not an `ntk train` run folder", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("{}", path.display())))
        .collect()
}

fn frobenius_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Compares a real run with the linearised run of the same network (`ntk train
/// --linearized`): per common checkpoint epoch the two runs' losses (from their
/// `metrics.jsonl`) and the relative output gap on `x`, with `f_lin(θ'_e) = f(θ0) +
/// J(θ0)(θ'_e − θ0)` evaluated from the linear run's checkpoints (`θ0` its epoch 0).
///
/// # Errors
/// Folders that are not such a pair (the linear one not linearised, different initial
/// parameters, no common checkpoint), a spec that is not sequential.
pub fn compare_linearized(
    real: &Path,
    lin: &Path,
    spec: &NetworkSpec,
    x: &HostArray,
    device: &burn::tensor::Device,
    precision: Precision,
) -> Result<Vec<LinearizedPoint>> {
    let (mr, ml) = (read_metrics(real)?, read_metrics(lin)?);
    let flag = |m: &[serde_json::Value]| m.iter().any(|l| l["linearized"] == true);
    if !flag(&ml) {
        bail!(
            "--linearized {}: this run was not trained with `ntk train --linearized`",
            lin.display()
        );
    }
    if flag(&mr) {
        bail!(
            "--checkpoints {}: this is a linearised run; give the real run there",
            real.display()
        );
    }
    for dir in [real, lin] {
        let path = dir.join(RUN_SPEC);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let trained =
                NetworkSpec::from_json(&text).with_context(|| format!("{}", path.display()))?;
            if &trained != spec {
                bail!(
                    "{}: the run was trained with another spec than --spec ({} holds it)",
                    dir.display(),
                    path.display()
                );
            }
        }
    }
    let (cr, cl) = (list_checkpoints(real)?, list_checkpoints(lin)?);
    let load = |p: &Path| -> Result<Network> {
        Network::load(spec.clone(), p, device, precision)
            .with_context(|| format!("{}", p.display()))
    };
    let Some((_, l0)) = cl.iter().find(|(e, _)| *e == 0) else {
        bail!("--linearized {}: no epoch-0 checkpoint (θ0)", lin.display());
    };
    let Some((_, r0)) = cr.iter().find(|(e, _)| *e == 0) else {
        bail!("--checkpoints {}: no epoch-0 checkpoint", real.display());
    };
    let theta0 = load(l0)?;
    let f0 = theta0.forward_host(x)?;
    let f0_real = load(r0)?.forward_host(x)?;
    let scale = frobenius_diff(&f0.data, &vec![0.0; f0.data.len()]).max(f64::MIN_POSITIVE);
    if frobenius_diff(&f0.data, &f0_real.data) > 1e-5 * scale {
        bail!(
            "the two runs start from different parameters (their epoch-0 outputs differ): \
             train both from the same --seed or --weights"
        );
    }
    let linear = ntk_empirical::Linearized::new(theta0);
    let metric = |m: &[serde_json::Value], e: usize, key: &str| -> Option<f64> {
        m.iter()
            .find(|l| l["epoch"].as_u64() == Some(e as u64))
            .and_then(|l| l[key].as_f64())
    };
    let mut out = Vec::new();
    for (e, pr) in &cr {
        let Some((_, pl)) = cl.iter().find(|(el, _)| el == e) else {
            continue;
        };
        // Epoch 0 is θ0 in both runs (checked above): no gap, nothing to evaluate.
        let output_gap = if *e == 0 {
            None
        } else {
            let f = load(pr)?.forward_host(x)?;
            let fl = linear.forward_host(&load(pl)?, x)?;
            let moved = frobenius_diff(&f.data, &f0.data);
            (moved > 0.0).then(|| frobenius_diff(&f.data, &fl.data) / moved)
        };
        out.push(LinearizedPoint {
            epoch: *e,
            train_loss: metric(&mr, *e, "train_loss").unwrap_or(f64::NAN),
            train_loss_linearized: metric(&ml, *e, "train_loss").unwrap_or(f64::NAN),
            test_loss: metric(&mr, *e, "test_loss"),
            test_loss_linearized: metric(&ml, *e, "test_loss"),
            output_gap,
        });
    }
    if out.is_empty() {
        bail!(
            "{} and {} have no checkpoint epoch in common",
            real.display(),
            lin.display()
        );
    }
    Ok(out)
}

/// The panels of [`compare_linearized`]: losses of both runs, and the output gap.
pub fn linearized_panels(points: &[LinearizedPoint]) -> Vec<Panel> {
    let series = |label: &str, f: &dyn Fn(&LinearizedPoint) -> Option<f64>| Series {
        y_err: Vec::new(),
        label: label.into(),
        points: points
            .iter()
            .filter_map(|p| f(p).filter(|v| v.is_finite()).map(|v| (p.epoch as f64, v)))
            .collect(),
    };
    let mut losses = vec![
        series("network, train", &|p| Some(p.train_loss)),
        series("linearised, train", &|p| Some(p.train_loss_linearized)),
        series("network, test", &|p| p.test_loss),
        series("linearised, test", &|p| p.test_loss_linearized),
    ];
    losses.retain(|s| !s.points.is_empty());
    vec![
        Panel {
            log_x: false,
            log_y: false,
            title: "loss: network vs its linearisation".into(),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            series: losses,
        },
        Panel {
            log_x: false,
            log_y: false,
            title: "output gap on --x".into(),
            x_label: "epoch".into(),
            y_label: "‖f − f_lin‖ / ‖f − f0‖".into(),
            series: vec![series("gap", &|p| p.output_gap)],
        },
    ]
}

/// `ntk analyze --checkpoints REAL --linearized LIN --spec S --x X [--json J] [--plot P]`.
pub fn run_compare_linearized(
    real: &Path,
    lin: &Path,
    spec: Option<&Path>,
    x: Option<&Path>,
    json: Option<&Path>,
    plot: Option<&Path>,
    dtype: &str,
) -> Result<()> {
    let spec_path = spec.context("--linearized needs --spec S.json (the network of both runs)")?;
    let x = x.context("--linearized needs --x X.npy (the inputs of the output gap)")?;
    let text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("reading {}", spec_path.display()))?;
    if ntk_nets::graph::spec::is_graph_spec(&text) {
        bail!("--linearized: `ntk train` trains sequential specs; this is a graph spec");
    }
    let spec = NetworkSpec::from_json(&text)?;
    let (dev, precision) = device("flex", dtype)?;
    let xa = match read_inputs(x, &spec.input_shape) {
        Ok(a) => a,
        Err(e) => {
            let (raw, _) = ntk_nets::array::read_npy(x)?;
            if raw.shape.len() < 2 {
                return Err(e.into());
            }
            reshape_inputs(&raw, &spec.input_shape).with_context(|| format!("{}", x.display()))?
        }
    };
    let points = compare_linearized(real, lin, &spec, &xa, &dev, precision)?;
    println!(
        "{:>6} {:>12} {:>12} {:>12} {:>12} {:>10}",
        "epoch", "train_loss", "train_lin", "test_loss", "test_lin", "gap"
    );
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4e}"));
    for p in &points {
        println!(
            "{:>6} {:>12.4e} {:>12.4e} {:>12} {:>12} {:>10}",
            p.epoch,
            p.train_loss,
            p.train_loss_linearized,
            fmt(p.test_loss),
            fmt(p.test_loss_linearized),
            p.output_gap
                .map_or("-".to_string(), |g| format!("{:.2}%", 100.0 * g))
        );
    }
    if let Some(j) = json {
        write_atomic(j, serde_json::to_string_pretty(&points)?.as_bytes())?;
        eprintln!("wrote {}", j.display());
    }
    if let Some(p) = plot {
        write_png(p, &linearized_panels(&points), (640, 480))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
