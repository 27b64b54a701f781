//! Training a [`Network`] with burn's optimizers (SGD, Adam) on MSE or cross-entropy, with
//! checkpoints in the spec's PyTorch weight format and a `metrics.jsonl` log, so that the
//! NTK can be followed along training (`ntk analyze --checkpoints`).
//!
//! Datasets: the bundled digits (classification, 10 classes) and diabetes (regression),
//! each with a fixed deterministic train/test split, or user data (`.npy` pairs or CSV with
//! the label in the last column).

use anyhow::{Context, Result, anyhow, bail};
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Tensor, TensorData};
use ntk_empirical::Linearized;
use ntk_empirical::ntk_vp::LayerTangent;
use ntk_nets::array::{read_npy, write_atomic};
use ntk_nets::{HostArray, Layer, Network};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Training targets.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Class ids `0..n_classes` (one per sample).
    Classes {
        labels: Vec<usize>,
        n_classes: usize,
    },
    /// Real-valued targets `[N, c]`.
    Values(HostArray),
}

impl Targets {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes { labels, .. } => labels.len(),
            Targets::Values(v) => v.len(),
        }
    }

    /// True without samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The regression targets `[N, o]` (row-major) a network with `o` outputs is fitted to
    /// under MSE: one-hot rows for classes (needs `o = n_classes`), the values themselves
    /// otherwise (needs `o = c`).
    pub fn matrix(&self, o: usize) -> Result<Vec<f64>> {
        match self {
            Targets::Classes { labels, n_classes } => {
                if *n_classes > o {
                    bail!(
                        "the labels have {n_classes} classes but the network has {o} outputs (one per class is needed)"
                    );
                }
                let mut m = vec![0.0; labels.len() * o];
                for (i, &l) in labels.iter().enumerate() {
                    m[i * o + l] = 1.0;
                }
                Ok(m)
            }
            Targets::Values(v) => {
                let c = v.shape[1];
                if c != o {
                    bail!("the targets have {c} column(s) but the network has {o} output(s)");
                }
                Ok(v.data.clone())
            }
        }
    }

    /// The targets of rows `idx`.
    pub fn select(&self, idx: &[usize]) -> Targets {
        match self {
            Targets::Classes { labels, n_classes } => Targets::Classes {
                labels: idx.iter().map(|&i| labels[i]).collect(),
                n_classes: *n_classes,
            },
            Targets::Values(v) => Targets::Values(gather(v, idx)),
        }
    }
}

/// Inputs and targets.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub x: HostArray,
    pub y: Targets,
}

impl Dataset {
    /// Rows `idx` of the dataset.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        Dataset {
            x: gather(&self.x, idx),
            y: self.y.select(idx),
        }
    }

    /// The inputs reshaped to `[N, *input_shape]` (same row-major data), when the sizes agree:
    /// e.g. the digits `[N, 64]` for a CNN on `[1, 8, 8]`.
    pub fn reshaped(&self, input_shape: &[usize]) -> Result<Dataset> {
        Ok(Dataset {
            x: reshape_inputs(&self.x, input_shape)?,
            y: self.y.clone(),
        })
    }
}

/// Reshapes `[N, ...]` inputs to `[N, *input_shape]` when the per-sample sizes agree.
pub fn reshape_inputs(x: &HostArray, input_shape: &[usize]) -> Result<HostArray> {
    let per: usize = x.shape[1..].iter().product();
    let want: usize = input_shape.iter().product();
    if per != want {
        bail!(
            "the inputs have {per} values per sample (shape {:?}) but the spec's input_shape {:?} needs {want}",
            x.shape,
            input_shape
        );
    }
    let mut shape = vec![x.len()];
    shape.extend_from_slice(input_shape);
    Ok(HostArray::new(shape, x.data.clone()))
}

/// A train set and an optional test set.
#[derive(Debug, Clone)]
pub struct Split {
    pub train: Dataset,
    pub test: Option<Dataset>,
}

/// Rows `idx` of `x`.
pub fn gather(x: &HostArray, idx: &[usize]) -> HostArray {
    let row: usize = x.shape[1..].iter().product();
    let mut data = Vec::with_capacity(idx.len() * row);
    for &i in idx {
        data.extend_from_slice(&x.data[i * row..(i + 1) * row]);
    }
    let mut shape = x.shape.clone();
    shape[0] = idx.len();
    HostArray::new(shape, data)
}

/// Seed of the fixed permutation behind the bundled train/test splits.
pub const SPLIT_SEED: u64 = 20240605;

/// A deterministic permutation of `0..n` (ChaCha8 seeded with `seed`).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    idx
}

fn split_fixed(data: Dataset, n_test: usize) -> Split {
    let perm = permutation(data.x.len(), SPLIT_SEED);
    let (test, train) = perm.split_at(n_test);
    Split {
        train: data.select(train),
        test: Some(data.select(test)),
    }
}

/// The bundled digits (8×8, pixels in 0..1, 10 classes), 1437 train / 360 test by a fixed
/// permutation.
pub fn digits_split() -> Split {
    let (x, labels) = crate::data::digits();
    split_fixed(
        Dataset {
            x,
            y: Targets::Classes {
                labels,
                n_classes: 10,
            },
        },
        360,
    )
}

/// The bundled diabetes regression data (Efron et al. 2004, 442 patients, 10 baseline
/// variables, target: disease progression after one year; `data/diabetes.csv`, from
/// scikit-learn's copy): 354 train / 88 test by a fixed permutation. Features and target are
/// standardised with the train set's mean and standard deviation.
pub fn diabetes_split() -> Split {
    const CSV: &str = include_str!("../data/diabetes.csv");
    let rows: Vec<Vec<f64>> = CSV
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            l.split(',')
                .map(|t| {
                    t.trim()
                        .parse::<f64>()
                        .expect("bundled diabetes.csv is well formed")
                })
                .collect()
        })
        .collect();
    let n = rows.len();
    let x = HostArray::new(
        vec![n, 10],
        rows.iter().flat_map(|r| r[..10].to_vec()).collect(),
    );
    let y = HostArray::new(vec![n, 1], rows.iter().map(|r| r[10]).collect());
    let mut split = split_fixed(
        Dataset {
            x,
            y: Targets::Values(y),
        },
        88,
    );
    // Standardise with train statistics.
    let stats = |a: &HostArray| -> Vec<(f64, f64)> {
        let (n, c) = (a.shape[0], a.shape[1]);
        (0..c)
            .map(|j| {
                let mean = (0..n).map(|i| a.data[i * c + j]).sum::<f64>() / n as f64;
                let var = (0..n)
                    .map(|i| (a.data[i * c + j] - mean).powi(2))
                    .sum::<f64>()
                    / n as f64;
                (mean, var.sqrt().max(1e-12))
            })
            .collect()
    };
    let apply = |a: &mut HostArray, s: &[(f64, f64)]| {
        let c = a.shape[1];
        for (k, v) in a.data.iter_mut().enumerate() {
            let (m, sd) = s[k % c];
            *v = (*v - m) / sd;
        }
    };
    let sx = stats(&split.train.x);
    let Targets::Values(ytr) = &split.train.y else {
        unreachable!()
    };
    let sy = stats(ytr);
    for d in std::iter::once(&mut split.train).chain(split.test.as_mut()) {
        apply(&mut d.x, &sx);
        if let Targets::Values(y) = &mut d.y {
            apply(y, &sy);
        }
    }
    split
}

/// The bundled datasets by name: `digits`, `diabetes`.
pub fn builtin(name: &str) -> Result<Split> {
    match name {
        "digits" => Ok(digits_split()),
        "diabetes" => Ok(diabetes_split()),
        other => bail!(
            "--data: unknown bundled dataset {other:?} (digits, diabetes; or --x X.npy --y Y.npy, or --data FILE.csv)"
        ),
    }
}

/// Interprets label values: integer-valued 1-D labels are class ids when `classes` (or
/// when they are non-negative integers and `classes` is `None`), otherwise real targets.
fn targets_from(values: &HostArray, what: &str, classes: bool) -> Result<Targets> {
    if let Some((i, v)) = values.first_non_finite() {
        bail!("{what}: non-finite label {v} at flat index {i}");
    }
    let n = values.shape.first().copied().unwrap_or(0);
    let one_column = values.shape.len() == 1 || (values.shape.len() == 2 && values.shape[1] == 1);
    if classes {
        if !one_column {
            bail!(
                "{what}: class labels must be one id per sample ([N]), got shape {:?}",
                values.shape
            );
        }
        let mut labels = Vec::with_capacity(n);
        for (i, &v) in values.data.iter().enumerate() {
            if v < 0.0 || v.fract() != 0.0 || v > 1e6 {
                bail!("{what}: label {v} of sample {i} is not a class id (a non-negative integer)");
            }
            labels.push(v as usize);
        }
        let n_classes = labels.iter().max().map_or(0, |m| m + 1);
        return Ok(Targets::Classes { labels, n_classes });
    }
    let c = if values.shape.len() == 1 {
        1
    } else if values.shape.len() == 2 {
        values.shape[1]
    } else {
        bail!(
            "{what}: targets must be [N] or [N, c], got shape {:?}",
            values.shape
        );
    };
    Ok(Targets::Values(HostArray::new(
        vec![n, c],
        values.data.clone(),
    )))
}

/// Most classes a labels file `[n]` of whole numbers may name and still be class ids.
pub const MAX_CLASSES: usize = 256;

/// The one rule for labels, in every command: a 1-D array `[n]` whose values are all whole
/// numbers ≥ 0 (an integer dtype, or floats such as 3.0) naming at most
/// [`MAX_CLASSES`] classes, fewer than `n`, holds class ids; anything else (`[n, c]`, `[n]`
/// with fractions, negatives, or whole-number regression targets such as counts in the
/// hundreds) is real-valued targets (`[n, 1]` forces that reading). Returns the ids.
pub fn class_ids(y: &HostArray) -> Option<Vec<usize>> {
    let whole = y.shape.len() == 1
        && y.data
            .iter()
            .all(|v| *v >= 0.0 && v.fract() == 0.0 && *v < 1e6);
    let classes = y.data.iter().fold(0.0f64, |m, v| m.max(*v)) as usize + 1;
    (whole && classes <= MAX_CLASSES && classes < y.data.len().max(2))
        .then(|| y.data.iter().map(|&v| v as usize).collect())
}

/// Reads labels from an `.npy` file: float32/float64 as ntk reads every array, or signed or
/// unsigned integers of 1, 2, 4 or 8 bytes (class ids as NumPy saves them, e.g. `int64`).
pub fn read_labels(path: &Path) -> Result<HostArray> {
    match read_npy(path) {
        Ok((a, _)) => return Ok(a),
        Err(e) if !e.to_string().contains("dtype") => return Err(e.into()),
        Err(_) => {}
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let header =
        ntk_nets::npy_header::parse(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let size = header.size;
    let signed = match header.type_char {
        'i' => true,
        'u' => false,
        _ => bail!(
            "{}: dtype {:?}; labels must be int (class ids) or float32/float64",
            path.display(),
            header.descr
        ),
    };
    if ![1, 2, 4, 8].contains(&size) || header.fortran_order {
        bail!(
            "{}: unsupported label dtype or Fortran order",
            path.display()
        );
    }
    let shape = header.shape.clone();
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| anyhow!("{}: shape {shape:?} overflows", path.display()))?;
    let data = &bytes[header.data_start.min(bytes.len())..];
    if Some(data.len()) != count.checked_mul(size) {
        bail!(
            "{}: header declares {count} values of {} bytes but the file holds {} data bytes",
            path.display(),
            size,
            data.len()
        );
    }
    let big = header.big_endian;
    let values = data
        .chunks_exact(size)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..size].copy_from_slice(c);
            if big {
                b[..size].reverse();
            }
            // Sign-extend from `size` bytes.
            let raw = u64::from_le_bytes(b);
            if signed && size < 8 {
                let shift = 64 - 8 * size as u32;
                (((raw << shift) as i64) >> shift) as f64
            } else if signed {
                raw as i64 as f64
            } else {
                raw as f64
            }
        })
        .collect();
    Ok(HostArray::new(shape, values))
}

/// User data from `.npy` files: inputs `[N, ...]`, labels `[N]` (class ids, as integer or
/// float values, for cross-entropy or one-hot MSE) or float targets `[N]` / `[N, c]`.
/// `classes`: whether labels are class ids (cross-entropy, or MSE with integer labels and
/// several outputs).
pub fn from_npy(x: &Path, y: &Path, classes: bool) -> Result<Dataset> {
    let (xa, _) = read_npy(x)?;
    if xa.shape.is_empty() {
        bail!("{}: inputs must be [N, ...], got a scalar", x.display());
    }
    if let Some((i, v)) = xa.first_non_finite() {
        bail!("{}: non-finite input {v} at flat index {i}", x.display());
    }
    let ya = read_labels(y)?;
    if ya.shape.first().copied() != Some(xa.len()) {
        bail!(
            "{}: {:?} labels for {} inputs in {}",
            y.display(),
            ya.shape,
            xa.len(),
            x.display()
        );
    }
    Ok(Dataset {
        x: xa,
        y: targets_from(&ya, &y.display().to_string(), classes)?,
    })
}

/// User data from a CSV file: one sample per line, numbers separated by commas, the label
/// (class id or real target) in the last column. Lines starting with `#` and a header line
/// that does not parse as numbers are skipped.
pub fn from_csv(path: &Path, classes: bool) -> Result<Dataset> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut width = None;
    for (ln, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed: std::result::Result<Vec<f64>, _> =
            line.split(',').map(|t| t.trim().parse::<f64>()).collect();
        let v = match parsed {
            Ok(v) => v,
            Err(e) if width.is_none() && x.is_empty() && ln == 0 => {
                let _ = e; // a header line
                continue;
            }
            Err(e) => bail!(
                "{}:{}: not a number ({e}): {line:?}",
                path.display(),
                ln + 1
            ),
        };
        if v.len() < 2 {
            bail!(
                "{}:{}: need at least one feature and a label, got {} column(s)",
                path.display(),
                ln + 1,
                v.len()
            );
        }
        match width {
            None => width = Some(v.len()),
            Some(w) if w != v.len() => bail!(
                "{}:{}: {} columns, the first row has {w}",
                path.display(),
                ln + 1,
                v.len()
            ),
            _ => {}
        }
        if let Some(bad) = v.iter().find(|t| !t.is_finite()) {
            bail!("{}:{}: non-finite value {bad}", path.display(), ln + 1);
        }
        x.extend_from_slice(&v[..v.len() - 1]);
        y.push(v[v.len() - 1]);
    }
    let Some(w) = width else {
        bail!("{}: no data rows", path.display());
    };
    let n = y.len();
    Ok(Dataset {
        x: HostArray::new(vec![n, w - 1], x),
        y: targets_from(
            &HostArray::new(vec![n], y),
            &path.display().to_string(),
            classes,
        )?,
    })
}

/// Loss functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// `1/(2·B·O) Σ (f − y)²` over the batch's `B·O` entries (neural-tangents' convention,
    /// as `ntk predict`); class labels become one-hot targets.
    Mse,
    /// Mean softmax cross-entropy over the batch; needs class labels.
    Xent,
}

impl Loss {
    /// Parses `mse` or `xent`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "mse" => Ok(Loss::Mse),
            "xent" | "cross-entropy" => Ok(Loss::Xent),
            other => bail!("--loss: unknown loss {other:?} (mse, xent)"),
        }
    }
    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            Loss::Mse => "mse",
            Loss::Xent => "xent",
        }
    }
}

/// Optimizers (burn's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Plain SGD (no momentum, no weight decay).
    Sgd,
    /// Adam with burn's defaults (β = 0.9, 0.999, ε = 1e-5).
    Adam,
}

impl OptimizerKind {
    /// Parses `sgd` or `adam`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "sgd" => Ok(OptimizerKind::Sgd),
            "adam" => Ok(OptimizerKind::Adam),
            other => bail!("--optimizer: unknown optimizer {other:?} (sgd, adam)"),
        }
    }
    fn init(self) -> ModuleOptimizer {
        match self {
            OptimizerKind::Sgd => SgdConfig::new().init(),
            OptimizerKind::Adam => AdamConfig::new().init(),
        }
    }
    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
        }
    }
}

/// Options of [`train`].
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub loss: Loss,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub epochs: usize,
    /// Mini-batch size; `None`: full batch.
    pub batch_size: Option<usize>,
    /// Checkpoint every this many epochs (epoch 0 and the last epoch always); 0: none but
    /// those two.
    pub checkpoint_every: usize,
    /// Seed of the mini-batch shuffling.
    pub shuffle_seed: u64,
    /// Where checkpoints and `metrics.jsonl` go (`None`: nothing written).
    pub out_dir: Option<PathBuf>,
    /// Train the network linearised around its initial parameters,
    /// `f_lin(θ, x) = f(θ0, x) + J(θ0, x)(θ − θ0)` ([`Linearized`]), with the same optimiser,
    /// loss and batches; the checkpoints hold `θ` and the metrics are those of `f_lin`.
    pub linearized: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            loss: Loss::Mse,
            optimizer: OptimizerKind::Sgd,
            lr: 0.1,
            epochs: 10,
            batch_size: Some(64),
            checkpoint_every: 1,
            shuffle_seed: 0,
            out_dir: None,
            linearized: false,
        }
    }
}

/// Loss and accuracy of a network on a dataset.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Eval {
    pub loss: f64,
    /// Fraction of argmax predictions equal to the label (class labels only).
    pub accuracy: Option<f64>,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    /// Checkpoint written at this epoch (file name in the output folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Seconds since the start of training.
    pub seconds: f64,
    /// The metrics are those of the linearised network ([`TrainOptions::linearized`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub linearized: bool,
}

/// Loss of outputs `f [N, O]` (row-major) against `y`, and accuracy for class labels.
pub fn evaluate_outputs(f: &HostArray, y: &Targets, loss: Loss) -> Result<Eval> {
    let (n, o) = (f.shape[0], f.shape[1]);
    let accuracy = match y {
        Targets::Classes { labels, .. } => {
            let correct = (0..n)
                .filter(|&i| {
                    let row = &f.data[i * o..(i + 1) * o];
                    let arg = (0..o)
                        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                        .unwrap_or(0);
                    arg == labels[i]
                })
                .count();
            Some(correct as f64 / n.max(1) as f64)
        }
        Targets::Values(_) => None,
    };
    let value = match loss {
        Loss::Mse => {
            let t = y.matrix(o)?;
            f.data
                .iter()
                .zip(&t)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                / (2.0 * (n * o).max(1) as f64)
        }
        Loss::Xent => {
            let Targets::Classes { labels, .. } = y else {
                bail!("cross-entropy needs class labels");
            };
            let mut total = 0.0;
            for i in 0..n {
                let row = &f.data[i * o..(i + 1) * o];
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                total += lse - row[labels[i]];
            }
            total / n.max(1) as f64
        }
    };
    Ok(Eval {
        loss: value,
        accuracy,
    })
}

/// Loss and accuracy of `net` on `data`.
pub fn evaluate(net: &Network, data: &Dataset, loss: Loss) -> Result<Eval> {
    let f = net.forward_host(&data.x)?;
    evaluate_outputs(&f, &data.y, loss)
}

/// Checks that `data` fits `net` and `loss` (shapes, label ranges).
pub fn check_data(net: &Network, data: &Dataset, loss: Loss, what: &str) -> Result<()> {
    let shape = net.input_shape();
    if data.x.shape.len() != shape.len() + 1 || data.x.shape[1..] != *shape {
        bail!(
            "{what}: inputs {:?} do not match [N, {:?}] (the spec's input_shape)",
            data.x.shape,
            shape
        );
    }
    if data.x.is_empty() {
        bail!("{what}: no samples");
    }
    let o = net.n_outputs();
    if loss == Loss::Xent && !matches!(data.y, Targets::Classes { .. }) {
        bail!("{what}: --loss xent needs class labels (integer ids), not real-valued targets");
    }
    if let Targets::Classes { n_classes, .. } = &data.y {
        if *n_classes > o {
            bail!(
                "{what}: labels go up to {} but the network has {o} outputs",
                n_classes - 1
            );
        }
    }
    data.y.matrix(o).with_context(|| what.to_string())?;
    Ok(())
}

fn checkpoint_name(epoch: usize) -> String {
    format!("epoch-{epoch}.safetensors")
}

fn write_metrics(dir: &Path, lines: &[EpochMetrics]) -> Result<()> {
    let mut text = String::new();
    for m in lines {
        text.push_str(&serde_json::to_string(m)?);
        text.push('\n');
    }
    write_atomic(dir.join("metrics.jsonl"), text.as_bytes())?;
    Ok(())
}

/// Trains a copy of `net` on `data.train`, returning the trained network and one
/// [`EpochMetrics`] per epoch (epoch 0 = initialisation). `progress(epoch, epochs, metrics)`
/// is called after each epoch.
///
/// With `options.out_dir`, writes `epoch-{e}.safetensors` (PyTorch layout, the network's
/// precision) at epoch 0, every `checkpoint_every` epochs and at the last epoch, and
/// rewrites `metrics.jsonl` after every epoch; every file is written atomically.
///
/// Deterministic for a given network, data and options (the shuffling is seeded).
pub fn train(
    net: &Network,
    data: &Split,
    options: &TrainOptions,
    progress: &mut dyn FnMut(usize, usize, &EpochMetrics),
) -> Result<(Network, Vec<EpochMetrics>)> {
    if !(options.lr.is_finite() && options.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", options.lr);
    }
    if options.batch_size == Some(0) {
        bail!("--batch-size must be positive");
    }
    check_data(net, &data.train, options.loss, "train data")?;
    if let Some(test) = &data.test {
        check_data(net, test, options.loss, "test data")?;
    }
    if let Some(dir) = &options.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let t0 = Instant::now();
    let n = data.train.x.len();
    let o = net.n_outputs();
    let batch = options.batch_size.unwrap_or(n).min(n);
    let targets = data.train.y.matrix(o)?;
    let dtype = net.dtype();
    let ad = net.device().autodiff();
    let mut model = net.clone().fork(&ad).train();
    let mut optim = options.optimizer.init();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(options.shuffle_seed);
    let mut log: Vec<EpochMetrics> = Vec::with_capacity(options.epochs + 1);
    let lin = options.linearized.then(|| Linearized::new(net.clone()));
    let eval = |current: &Network, d: &Dataset| -> Result<Eval> {
        let f = match &lin {
            Some(l) => l.forward_host(current, &d.x)?,
            None => current.forward_host(&d.x)?,
        };
        evaluate_outputs(&f, &d.y, options.loss)
    };

    let record = |epoch: usize, current: &Network, log: &mut Vec<EpochMetrics>| -> Result<()> {
        let tr = eval(current, &data.train)?;
        let te = data.test.as_ref().map(|t| eval(current, t)).transpose()?;
        if !tr.loss.is_finite() {
            bail!(
                "training diverged at epoch {epoch}: the train loss is {} (lower --lr)",
                tr.loss
            );
        }
        let last = epoch == options.epochs;
        let save = epoch == 0
            || last
            || (options.checkpoint_every > 0 && epoch % options.checkpoint_every == 0);
        let mut checkpoint = None;
        if let (Some(dir), true) = (&options.out_dir, save) {
            let name = checkpoint_name(epoch);
            current
                .save(dir.join(&name), current.dtype() == burn::tensor::DType::F32)
                .with_context(|| format!("writing checkpoint {name}"))?;
            checkpoint = Some(name);
        }
        let m = EpochMetrics {
            epoch,
            train_loss: tr.loss,
            train_accuracy: tr.accuracy,
            test_loss: te.map(|e| e.loss),
            test_accuracy: te.and_then(|e| e.accuracy),
            checkpoint,
            seconds: t0.elapsed().as_secs_f64(),
            linearized: options.linearized,
        };
        log.push(m);
        if let Some(dir) = &options.out_dir {
            write_metrics(dir, log)?;
        }
        Ok(())
    };

    record(0, net, &mut log)?;
    progress(0, options.epochs, &log[0]);
    let mut order: Vec<usize> = (0..n).collect();
    for epoch in 1..=options.epochs {
        if batch < n {
            order.shuffle(&mut rng);
        }
        for chunk in order.chunks(batch) {
            let xb = gather(&data.train.x, chunk);
            if let Some(lin) = &lin {
                let rows: Vec<f64> = chunk
                    .iter()
                    .flat_map(|&i| targets[i * o..(i + 1) * o].iter().copied())
                    .collect();
                let grads = linearized_gradients(lin, &model, &xb, rows, options.loss)?;
                model = optim.step(options.lr, model, grads);
                continue;
            }
            let input = model.input(&xb, &ad)?;
            let f = model.forward(input);
            let b = chunk.len();
            let loss = match options.loss {
                Loss::Mse => {
                    let yb: Vec<f64> = chunk
                        .iter()
                        .flat_map(|&i| targets[i * o..(i + 1) * o].iter().copied())
                        .collect();
                    let y = Tensor::<2>::from_data(TensorData::new(yb, [b, o]), (&ad, dtype));
                    let d = f - y;
                    (d.clone() * d).sum().div_scalar(2.0 * (b * o) as f64)
                }
                Loss::Xent => {
                    // One-hot rows of the labels: targets holds them already.
                    let mask: Vec<f64> = chunk
                        .iter()
                        .flat_map(|&i| targets[i * o..(i + 1) * o].iter().copied())
                        .collect();
                    let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, o]), (&ad, dtype));
                    let logp = burn::tensor::activation::log_softmax(f, 1);
                    (logp * mask).sum().div_scalar(-(b as f64))
                }
            };
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(options.lr, model, grads);
        }
        let current = model.valid();
        record(epoch, &current, &mut log)?;
        progress(epoch, options.epochs, log.last().expect("just pushed"));
    }
    let trained = model.valid();
    Ok((trained, log))
}

/// The gradient of the batch loss of the linearised network at `model`'s parameters,
/// `J(θ0, x)ᵀ ∂L/∂f_lin`, keyed by `model`'s parameter ids for burn's optimisers.
/// `∂L/∂f` is `(f − y)/(B·O)` for MSE and `(softmax(f) − y)/B` for cross-entropy (`y` the
/// one-hot rows `targets`, `[B, O]` row-major).
fn linearized_gradients(
    lin: &Linearized,
    model: &Network,
    xb: &HostArray,
    targets: Vec<f64>,
    loss: Loss,
) -> Result<GradientsParams> {
    let current = model.valid();
    let f = lin.forward(&current, xb)?;
    let [b, o] = f.dims();
    let device = current.device();
    let y = Tensor::<2>::from_data(TensorData::new(targets, [b, o]), (&device, current.dtype()));
    let g = match loss {
        Loss::Mse => (f - y).div_scalar((b * o) as f64),
        Loss::Xent => (burn::tensor::activation::softmax(f, 1) - y).div_scalar(b as f64),
    };
    let tangents = lin.vjp(xb, g)?;
    let mut grads = GradientsParams::new();
    for (layer, t) in model.layers.iter().zip(tangents) {
        match (layer, t) {
            (Layer::Dense(d), LayerTangent::Dense(gw, gb)) => {
                grads.register(d.weight.id, gw);
                if let (Some(p), Some(gb)) = (&d.bias, gb) {
                    grads.register(p.id, gb);
                }
            }
            (Layer::Conv2d(c), LayerTangent::Conv2d(gw, gb)) => {
                grads.register(c.weight.id, gw);
                if let (Some(p), Some(gb)) = (&c.bias, gb) {
                    grads.register(p.id, gb);
                }
            }
            _ => {}
        }
    }
    Ok(grads)
}

/// Lists the checkpoints `epoch-{e}.safetensors` of a training folder, sorted by epoch.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(e) = name
            .strip_prefix("epoch-")
            .and_then(|r| r.strip_suffix(".safetensors"))
            .and_then(|e| e.parse::<usize>().ok())
        {
            out.push((e, entry.path()));
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(anyhow!(
            "{}: no checkpoints epoch-{{e}}.safetensors (written by `ntk train --out DIR`)",
            dir.display()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_disjoint_and_cover_the_data() {
        let s = digits_split();
        let t = s.test.as_ref().unwrap();
        assert_eq!(s.train.x.len() + t.x.len(), 1797);
        let p = permutation(1797, SPLIT_SEED);
        let mut seen = p.clone();
        seen.sort();
        assert_eq!(seen, (0..1797).collect::<Vec<_>>());
    }

    #[test]
    fn diabetes_train_is_standardised() {
        let s = diabetes_split();
        assert_eq!(s.train.x.shape, vec![354, 10]);
        let Targets::Values(y) = &s.train.y else {
            panic!("regression targets expected")
        };
        let mean = y.data.iter().sum::<f64>() / 354.0;
        let var = y.data.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 354.0;
        assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-12);
    }

    #[test]
    fn xent_loss_matches_log_sum_exp_by_hand() {
        // Two samples, outputs [0, ln 3] and [ln 2, 0]: p(label) = 3/4 and 2/3.
        let f = HostArray::new(vec![2, 2], vec![0.0, 3f64.ln(), 2f64.ln(), 0.0]);
        let y = Targets::Classes {
            labels: vec![1, 0],
            n_classes: 2,
        };
        let e = evaluate_outputs(&f, &y, Loss::Xent).unwrap();
        let expected = -((0.75f64).ln() + (2.0f64 / 3.0).ln()) / 2.0;
        assert!((e.loss - expected).abs() < 1e-12);
        assert_eq!(e.accuracy, Some(1.0));
    }

    #[test]
    fn csv_with_header_and_bad_row() {
        let dir = std::env::temp_dir().join(format!("ntk-train-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d.csv");
        std::fs::write(&p, "a,b,label\n1,2,0\n3,4,1\n").unwrap();
        let d = from_csv(&p, true).unwrap();
        assert_eq!(d.x.shape, vec![2, 2]);
        assert_eq!(
            d.y,
            Targets::Classes {
                labels: vec![0, 1],
                n_classes: 2
            }
        );
        std::fs::write(&p, "1,2,0\n3,x,1\n").unwrap();
        let e = from_csv(&p, true).unwrap_err().to_string();
        assert!(e.contains("d.csv:2"), "{e}");
        std::fs::write(&p, "1,2,0.5\n").unwrap();
        let e = from_csv(&p, true).unwrap_err().to_string();
        assert!(e.contains("not a class id"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
