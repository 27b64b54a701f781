//! The `ntk analyze` and `ntk predict` subcommands: [`ntk_analysis`] on `.npy` kernels.
//!
//! Kernels are `[n, n]` (trace, NNGP, sum-of-logits or single-output kernels) or full
//! `[n, n, O, O]` kernels, which are flattened to `[n·O, n·O]` (row `i·O + o`), as
//! neural-tangents does with `trace_axes=()`; targets and initial outputs `[n, O]` are then
//! flattened alike. Diagonal kernels `[n, n, O]` are refused (they are not one matrix).

use anyhow::{Context, Result, bail};
use ntk_analysis::predict::{DiagReg, GradientDescentMse, TestSet};
use ntk_analysis::{Matrix, alignment, distance, spectrum};
use ntk_nets::array::{read_npy, write_atomic, write_npy};
use ntk_nets::{FloatKind, HostArray};
use std::path::{Path, PathBuf};

/// Arguments of `ntk analyze`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["kernel", "checkpoints"])))]
pub struct AnalyzeArgs {
    /// Kernel .npy: [n, n], or a full kernel [n, n, O, O] (flattened to [n·O, n·O]).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Instead of --kernel: a folder of checkpoints epoch-{e}.safetensors (a `ntk train
    /// --out` folder, or PyTorch state dicts saved so); the trace NTK on --x at every
    /// checkpoint, its spectrum, kernel distance from init and velocity (with --spec, --x;
    /// --json and --plot P.png for the results).
    #[arg(long, conflicts_with = "kernel")]
    pub checkpoints: Option<PathBuf>,
    /// With --checkpoints: the network of the checkpoints: a sequential or graph spec, or
    /// an ONNX file (its parameters replaced by each checkpoint's, by name).
    #[arg(long, requires = "checkpoints")]
    pub spec: Option<PathBuf>,
    /// With --checkpoints: inputs .npy of the kernel [n, *input_shape].
    #[arg(long, requires = "checkpoints")]
    pub x: Option<PathBuf>,
    /// With --checkpoints (a real run): the folder of the same network trained with
    /// `ntk train --linearized` (same init, data, optimiser). Compares the two runs
    /// instead of the kernels: losses per epoch and, on --x, the output gap
    /// ‖f − f_lin‖ / ‖f − f0‖ at each common checkpoint (--plot: both in one PNG).
    #[arg(long, requires = "checkpoints")]
    pub linearized: Option<PathBuf>,
    /// PNG plot: with --kernel, its spectrum (log10 λ_i against i; non-positive eigenvalues
    /// counted in the title); with --checkpoints, the spectrum and the kernel distance over
    /// training.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// With --checkpoints: precision of the kernels (f32 or f64).
    #[arg(long, default_value = "f64")]
    pub dtype: String,
    /// Labels .npy for the kernel-target alignment: [n] of whole numbers ≥ 0 (any int or
    /// float dtype; at most 256 classes, fewer than n) are class ids (one-hot), as in every
    /// command; [n, c] (or [n] with
    /// fractions) are real targets; with a full kernel, [n, O] is flattened to [n·O].
    #[arg(long)]
    pub y: Option<PathBuf>,
    /// Further kernels (same shape): kernel distance of each to --kernel, and the kernel
    /// velocity along the sequence --kernel, --kernel2...
    #[arg(long, num_args = 1..)]
    pub kernel2: Vec<PathBuf>,
    /// Comma-separated times (or epochs) of --kernel and each --kernel2, strictly increasing,
    /// for the velocity; default 0, 1, 2, ...
    #[arg(long)]
    pub times: Option<String>,
    /// Number of leading eigenvalues printed (the JSON has all of them).
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Writes every statistic to this JSON file (infinite values as null).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Arguments of `ntk predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// Train-train kernel .npy [n, n] (outputs independent, as neural-tangents'
    /// trace_axes=(-1,)) or full [n, n, O, O] (exact linearised dynamics, trace_axes=()).
    #[arg(long)]
    pub k_train: PathBuf,
    /// Test-train kernel .npy [m, n] or [m, n, O, O].
    #[arg(long)]
    pub k_test: PathBuf,
    /// Train labels .npy: [n] of whole numbers ≥ 0 (any int or float dtype) are class ids
    /// (one-hot), as in every command; [n, c] (or [n] with fractions) are real targets;
    /// [n, O] with full kernels.
    #[arg(long)]
    pub y: PathBuf,
    /// Comma-separated training times (steps, continuous), "inf" for the converged solution.
    #[arg(long, default_value = "inf")]
    pub t: String,
    /// Learning rate η; the flow is df/dt = −(η/N) Θ (f − y), N = number of target entries
    /// (loss 1/(2N) Σ (f − y)², neural-tangents' convention).
    #[arg(long, default_value_t = 1.0)]
    pub lr: f64,
    /// Diagonal regulariser: Θ + r I with r = diag_reg · mean(diag Θ) (or r = diag_reg with
    /// --diag-reg-absolute).
    #[arg(long, default_value_t = 0.0)]
    pub diag_reg: f64,
    /// Take --diag-reg in absolute units (neural-tangents' diag_reg_absolute_scale).
    #[arg(long)]
    pub diag_reg_absolute: bool,
    /// Network outputs at t = 0 on the train set, same shape as --y (default zero).
    #[arg(long)]
    pub f0_train: Option<PathBuf>,
    /// Network outputs at t = 0 on the test set, [m] / [m, c] / [m, O] (default zero).
    #[arg(long)]
    pub f0_test: Option<PathBuf>,
    /// Test predictions .npy [T, m, c] ([T, m] for 1-D targets), float64.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the train predictions .npy [T, n, c] ([T, n] for 1-D targets).
    #[arg(long)]
    pub out_train: Option<PathBuf>,
}

/// A kernel read from disk as a row-major matrix.
struct Kernel {
    data: Vec<f64>,
    rows: usize,
    cols: usize,
    /// `Some(O)` when read as a full kernel `[a, b, O, O]` and flattened.
    outputs: Option<usize>,
}

fn read(path: &Path) -> Result<HostArray> {
    Ok(read_npy(path)?.0)
}

/// Refuses, before reading any of them, kernel files whose analysis would not fit in the
/// memory the OS says is available: each is held as f64 (a full kernel `[a, b, O, O]`
/// twice while it is flattened), beside `square_work` `n × n` f64 matrices of the largest
/// flattened side `n` (the dense eigendecomposition's or solve's workspace).
fn check_kernels_fit(paths: &[&Path], square_work: u128) -> Result<()> {
    let mut held: u128 = 0;
    let mut side: u128 = 0;
    for p in paths {
        let shape = ntk_nets::array::NpyRows::open(p)?.shape().to_vec();
        let count: u128 = shape.iter().map(|&d| d as u128).product();
        let full = shape.len() == 4;
        held += count * 8 * if full { 2 } else { 1 };
        let rows = shape[0] as u128 * if full { shape[2] as u128 } else { 1 };
        side = side.max(rows);
    }
    let needed = held + square_work * side * side * 8;
    if let Some(available) = ntk_nets::memory::available_memory()
        && needed > available as u128
    {
        bail!(
            "the kernels (as f64) and the {square_work} dense {side}×{side} matrices of their \
             analysis need {:.1} GiB, but only {:.1} GiB of memory are available: analyse a \
             trace kernel (`ntk empirical --kernel trace`, O² times smaller) or fewer samples",
            needed as f64 / (1u64 << 30) as f64,
            available as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

/// Reads `[a, b]` or full `[a, b, O, O]` (flattened to `[a·O, b·O]`).
fn read_kernel(path: &Path) -> Result<Kernel> {
    let k = read(path)?;
    if let Some((i, v)) = k.first_non_finite() {
        bail!("{}: non-finite value {v} at flat index {i}", path.display());
    }
    match k.shape[..] {
        [a, b] => Ok(Kernel {
            data: k.data,
            rows: a,
            cols: b,
            outputs: None,
        }),
        [a, b, o, o2] if o == o2 => {
            let mut out = vec![0.0; k.data.len()];
            for i in 0..a {
                for j in 0..b {
                    for p in 0..o {
                        for q in 0..o {
                            out[(i * o + p) * (b * o) + j * o + q] =
                                k.data[((i * b + j) * o + p) * o + q];
                        }
                    }
                }
            }
            Ok(Kernel {
                data: out,
                rows: a * o,
                cols: b * o,
                outputs: Some(o),
            })
        }
        [_, _, _] => bail!(
            "{}: shape {:?} looks like a diagonal kernel [n, n, O]; use --kernel trace or full",
            path.display(),
            k.shape
        ),
        _ => bail!(
            "{}: shape {:?} is not a kernel [n, n] or a full kernel [n, n, O, O]",
            path.display(),
            k.shape
        ),
    }
}

/// Reads targets for `rows` kernel rows, by the rule every command follows
/// ([`crate::train::class_ids`]): `[n]` of whole numbers ≥ 0 (any int or float dtype, at
/// most 256 classes, fewer than n) are class ids, one-hot over `max + 1` classes (over O
/// with a full kernel); otherwise `[rows]`
/// or `[rows, c]` are real targets, and with a full kernel of `o` outputs `[rows/o, o]` is
/// flattened to `[rows, 1]`. Returns `(values, c, shape of one time slice in the output)`.
fn read_targets(
    path: &Path,
    rows: usize,
    outputs: Option<usize>,
) -> Result<(Vec<f64>, usize, Vec<usize>)> {
    let y = crate::train::read_labels(path)?;
    // A flattened [n·O] with a full kernel is real targets, whatever its values.
    let flattened = outputs.is_some_and(|o| o > 1 && y.shape == [rows]);
    if let Some(ids) = crate::train::class_ids(&y).filter(|_| !flattened) {
        let n = ids.len();
        let classes = ids.iter().max().map_or(0, |m| m + 1);
        return match outputs {
            None if n == rows => Ok((one_hot(&ids, classes), classes, vec![n, classes])),
            Some(o) if n * o == rows && classes <= o => Ok((one_hot(&ids, o), 1, vec![n, o])),
            _ => bail!(
                "{}: {n} class ids (up to {}) do not fit a kernel with {rows} rows{}",
                path.display(),
                classes.saturating_sub(1),
                match outputs {
                    Some(o) => format!(" and {o} outputs"),
                    None => String::new(),
                }
            ),
        };
    }
    read_real_targets(path, y, rows, outputs)
}

fn one_hot(ids: &[usize], classes: usize) -> Vec<f64> {
    let mut m = vec![0.0; ids.len() * classes];
    for (i, &c) in ids.iter().enumerate() {
        m[i * classes + c] = 1.0;
    }
    m
}

/// Initial outputs (never class ids), in the layouts of [`read_targets`].
fn read_outputs(
    path: &Path,
    rows: usize,
    outputs: Option<usize>,
) -> Result<(Vec<f64>, usize, Vec<usize>)> {
    read_real_targets(path, read(path)?, rows, outputs)
}

fn read_real_targets(
    path: &Path,
    y: HostArray,
    rows: usize,
    outputs: Option<usize>,
) -> Result<(Vec<f64>, usize, Vec<usize>)> {
    if let Some((i, v)) = y.first_non_finite() {
        bail!("{}: non-finite value {v} at flat index {i}", path.display());
    }
    let shape = y.shape.clone();
    match (outputs, &shape[..]) {
        (None, [r]) if *r == rows => Ok((y.data, 1, vec![rows])),
        (None, [r, c]) if *r == rows && *c > 0 => Ok((y.data, *c, vec![rows, *c])),
        (Some(o), [r, c]) if *c == o && r * o == rows => Ok((y.data, 1, vec![*r, o])),
        (Some(o), [r]) if *r == rows => Ok((y.data, 1, vec![rows / o, o])),
        _ => bail!(
            "{}: shape {shape:?} does not fit a kernel with {rows} rows{}",
            path.display(),
            match outputs {
                Some(o) => format!(" (full kernel, O = {o}: expected [{}, {o}])", rows / o),
                None => format!(" (expected [{rows}] or [{rows}, c])"),
            }
        ),
    }
}

fn fmt(v: f64) -> String {
    if v.is_infinite() {
        "inf".to_string()
    } else if v == 0.0 || (1e-3..1e6).contains(&v.abs()) {
        format!("{v:.6}")
    } else {
        format!("{v:.6e}")
    }
}

fn parse_times(s: &str, what: &str) -> Result<Vec<f64>> {
    s.split(',')
        .map(|t| {
            let t = t.trim();
            match t.to_ascii_lowercase().as_str() {
                "inf" | "infinity" | "+inf" => Ok(f64::INFINITY),
                _ => t
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .with_context(|| {
                        format!("{what}: {t:?} is not a time ≥ 0 (a number or \"inf\")")
                    }),
            }
        })
        .collect()
}

/// `ntk analyze`: spectrum, alignment, distances and velocity of kernels; a table on
/// stdout and optionally a JSON file (written atomically).
pub fn run_analyze(a: AnalyzeArgs) -> Result<()> {
    {
        let mut inputs = vec![
            a.kernel.as_deref(),
            a.spec.as_deref(),
            a.x.as_deref(),
            a.y.as_deref(),
        ];
        inputs.extend(a.kernel2.iter().map(|p| Some(p.as_path())));
        crate::outputs::check_outputs(
            &[("--json", a.json.as_deref()), ("--plot", a.plot.as_deref())],
            &inputs,
        )?;
    }
    if let (Some(dir), Some(lin)) = (&a.checkpoints, &a.linearized) {
        return crate::train_cmd::run_compare_linearized(
            dir,
            lin,
            a.spec.as_deref(),
            a.x.as_deref(),
            a.json.as_deref(),
            a.plot.as_deref(),
            &a.dtype,
        );
    }
    if let Some(dir) = &a.checkpoints {
        return crate::train_cmd::run_analyze_checkpoints(
            dir,
            a.spec.as_deref(),
            a.x.as_deref(),
            a.y.as_deref(),
            a.json.as_deref(),
            a.plot.as_deref(),
            &a.dtype,
        );
    }
    let kernel_path = a.kernel.clone().context("--kernel K.npy is required")?;
    let mut all: Vec<&Path> = vec![&kernel_path];
    all.extend(a.kernel2.iter().map(|p| p.as_path()));
    check_kernels_fit(&all, 3)?;
    let k = read_kernel(&kernel_path)?;
    if k.rows != k.cols {
        bail!(
            "{}: a kernel on one set of points must be square, got [{}, {}]",
            kernel_path.display(),
            k.rows,
            k.cols
        );
    }
    let n = k.rows;
    // Read every input before printing anything.
    let targets =
        a.y.as_ref()
            .map(|p| read_targets(p, n, k.outputs))
            .transpose()?;
    let others = a
        .kernel2
        .iter()
        .map(|p| {
            let k2 = read_kernel(p)?;
            if (k2.rows, k2.cols) != (n, n) {
                bail!(
                    "{}: [{}, {}] differs from --kernel [{n}, {n}]",
                    p.display(),
                    k2.rows,
                    k2.cols
                );
            }
            Ok(k2.data)
        })
        .collect::<Result<Vec<_>>>()?;
    let stats =
        spectrum::spectrum(&k.data, n).with_context(|| format!("{}", kernel_path.display()))?;
    let align = match (&a.y, &targets) {
        (Some(yp), Some((y, c, _))) => Some(
            alignment::alignment(&k.data, n, y, *c)
                .with_context(|| format!("alignment with {}", yp.display()))?,
        ),
        _ => None,
    };
    let mut distances = Vec::new();
    let mut velocity = Vec::new();
    let mut times = Vec::new();
    if !others.is_empty() {
        times = match &a.times {
            Some(s) => parse_times(s, "--times")?,
            None => (0..=others.len()).map(|i| i as f64).collect(),
        };
        if times.len() != others.len() + 1 || times.iter().any(|t| !t.is_finite()) {
            bail!(
                "--times: need {} finite times (--kernel and each --kernel2), got {:?}",
                others.len() + 1,
                times
            );
        }
        for (p, k2) in a.kernel2.iter().zip(&others) {
            distances.push(
                distance::kernel_distance(&k.data, k2)
                    .with_context(|| format!("distance to {}", p.display()))?,
            );
        }
        let mut seq: Vec<&[f64]> = vec![&k.data];
        seq.extend(others.iter().map(|v| v.as_slice()));
        velocity = distance::kernel_velocity(&seq, Some(&times)).context("kernel velocity")?;
    }

    println!("kernel {}: [{n}, {n}]", kernel_path.display());
    if let Some(o) = k.outputs {
        println!("  (full kernel [{}, {}, {o}, {o}] flattened)", n / o, n / o);
    }
    let rows = [
        ("trace", stats.trace),
        ("lambda_max", stats.lambda_max),
        ("lambda_min", stats.lambda_min),
        (
            "condition number (lambda_max/lambda_min)",
            stats.condition_number,
        ),
        (
            "effective rank, participation (sum l)^2/sum l^2",
            stats.effective_rank_participation,
        ),
        (
            "effective rank, exp(spectral entropy)",
            stats.effective_rank_entropy,
        ),
        (
            "max stable GD learning rate 2n/lambda_max",
            stats.max_learning_rate,
        ),
    ];
    for (name, v) in rows {
        println!("  {name:<50} {}", fmt(v));
    }
    let top: Vec<String> = spectrum::top_k(&stats.eigenvalues, a.top_k)
        .iter()
        .map(|&v| format!("{v:.4e}"))
        .collect();
    println!("  top-{} eigenvalues: {}", top.len(), top.join(" "));
    if let (Some(yp), Some((_, c, _)), Some(al)) = (&a.y, &targets, &align) {
        println!("targets {}: {c} column(s)", yp.display());
        println!("  {:<50} {}", "kernel-target alignment, raw", fmt(al.raw));
        println!(
            "  {:<50} {}",
            "kernel-target alignment, centred",
            fmt(al.centered)
        );
    }
    if !distances.is_empty() {
        println!(
            "kernel distance 1 - <K1,K2>/(|K1| |K2|) to {}:",
            kernel_path.display()
        );
        for (p, d) in a.kernel2.iter().zip(&distances) {
            println!("  {:<50} {}", p.display().to_string(), fmt(*d));
        }
        println!("kernel velocity d(K_i, K_i+1)/(t_i+1 - t_i):");
        for (i, v) in velocity.iter().enumerate() {
            let step = format!("t {} -> {}", times[i], times[i + 1]);
            println!("  {step:<50} {}", fmt(*v));
        }
    }

    if let Some(p) = &a.plot {
        let dropped = stats.eigenvalues.iter().filter(|l| **l <= 0.0).count();
        let panel = crate::plot::Panel {
            log_x: false,
            log_y: false,
            title: format!(
                "kernel spectrum (n = {n}){}",
                if dropped > 0 {
                    format!(", {dropped} eigenvalue(s) ≤ 0 not shown")
                } else {
                    String::new()
                }
            ),
            x_label: "eigenvalue index i".into(),
            y_label: "log10 λ_i".into(),
            series: vec![crate::plot::Series {
                y_err: Vec::new(),
                label: "eigenvalues".into(),
                points: stats
                    .eigenvalues
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| **l > 0.0)
                    .map(|(i, l)| (i as f64, l.log10()))
                    .collect(),
            }],
        };
        crate::plot::write_png(p, &[panel], (640, 480))?;
        eprintln!("wrote {}", p.display());
    }
    if let Some(out) = &a.json {
        let doc = serde_json::json!({
            "kernel": kernel_path,
            "n": n,
            "full_kernel_outputs": k.outputs,
            "spectrum": stats,
            "targets": a.y,
            "alignment": align,
            "distances": a
                .kernel2
                .iter()
                .zip(&distances)
                .map(|(p, d)| serde_json::json!({ "kernel2": p, "distance": d }))
                .collect::<Vec<_>>(),
            "times": times,
            "velocity": velocity,
            "conventions": {
                "eigenvalues": "descending",
                "condition_number": "lambda_max/lambda_min; null (infinite) when lambda_min <= 0",
                "effective_rank_participation": "(sum lambda)^2 / sum lambda^2 over max(lambda, 0)",
                "effective_rank_entropy": "exp(-sum p ln p), p = max(lambda,0)/sum max(lambda,0)",
                "max_learning_rate": "2n/lambda_max for L = 1/(2n) sum_i |f(x_i) - y_i|^2",
                "alignment": "raw <K,YY^T>_F/(|K|_F |YY^T|_F); centred with H = I - 11^T/n on both",
                "distance": "1 - <K1,K2>_F/(|K1|_F |K2|_F)",
                "velocity": "distance between successive kernels / time step"
            }
        });
        let bytes = serde_json::to_vec_pretty(&doc)?;
        write_atomic(out, &bytes)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// `ntk predict`: closed-form gradient-flow predictions (neural-tangents'
/// `predict.gradient_descent_mse`) at the requested times, written as `.npy`.
pub fn run_predict(a: PredictArgs) -> Result<()> {
    crate::outputs::check_outputs(
        &[
            ("--out", Some(&a.out)),
            ("--out-train", a.out_train.as_deref()),
        ],
        &[
            Some(&a.k_train),
            Some(&a.k_test),
            Some(&a.y),
            a.f0_train.as_deref(),
            a.f0_test.as_deref(),
        ],
    )?;
    let times = parse_times(&a.t, "--t")?;
    check_kernels_fit(&[&a.k_train, &a.k_test], 3)?;
    let k = read_kernel(&a.k_train)?;
    let ks = read_kernel(&a.k_test)?;
    if k.rows != k.cols {
        bail!(
            "{}: the train-train kernel must be square, got [{}, {}]",
            a.k_train.display(),
            k.rows,
            k.cols
        );
    }
    if ks.cols != k.rows || ks.outputs != k.outputs {
        bail!(
            "{}: [{}, {}]{} does not fit the train-train kernel [{n}, {n}]{}",
            a.k_test.display(),
            ks.rows,
            ks.cols,
            ks.outputs
                .map_or(String::new(), |o| format!(" (full, O = {o})")),
            k.outputs
                .map_or(String::new(), |o| format!(" (full, O = {o})")),
            n = k.rows
        );
    }
    let (n, m) = (k.rows, ks.rows);
    let (y, c, y_shape) = read_targets(&a.y, n, k.outputs)?;
    let f0_train = a
        .f0_train
        .as_ref()
        .map(|p| {
            let (v, c0, _) = read_outputs(p, n, k.outputs)?;
            if c0 != c {
                bail!("{}: {c0} column(s), but --y has {c}", p.display());
            }
            Ok(v)
        })
        .transpose()?;
    let f0_test = a
        .f0_test
        .as_ref()
        .map(|p| {
            let (v, c0, _) = read_outputs(p, m, k.outputs)?;
            if c0 != c {
                bail!("{}: {c0} column(s), but --y has {c}", p.display());
            }
            Ok(v)
        })
        .transpose()?;
    let reg = DiagReg {
        value: a.diag_reg,
        absolute: a.diag_reg_absolute,
    };
    let gd = GradientDescentMse::new(
        Matrix::square("--k-train", &k.data, n)?,
        Matrix::new("--y", &y, n, c)?,
        a.lr,
        reg,
    )?;
    let f0m = f0_train
        .as_deref()
        .map(|v| Matrix::new("--f0-train", v, n, c))
        .transpose()?;
    let test = TestSet {
        k_test_train: Matrix::new("--k-test", &ks.data, m, n)?,
        fx_test_0: f0_test
            .as_deref()
            .map(|v| Matrix::new("--f0-test", v, m, c))
            .transpose()?,
    };
    let preds = gd.predict_times(&times, f0m, Some(test))?;

    // One time slice has the shape of the targets, with m (or m/O) test rows.
    let mut test_shape = y_shape.clone();
    test_shape[0] = match k.outputs {
        Some(o) => m / o,
        None => m,
    };
    let t_len = times.len();
    let mut shape = vec![t_len];
    shape.extend(&test_shape);
    let data: Vec<f64> = preds
        .iter()
        .flat_map(|p| p.test.clone().unwrap_or_default())
        .collect();
    write_npy(&a.out, &HostArray::new(shape.clone(), data), FloatKind::F64)?;
    eprintln!(
        "wrote {} {:?} (t = {}; lr {}, loss normalisation N = {}, lambda_max of K + diag_reg {:.4e}, max stable lr 2N/lambda_max = {:.4e})",
        a.out.display(),
        shape,
        times
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(","),
        a.lr,
        gd.normalization(),
        gd.eigenvalues()[0],
        spectrum::max_learning_rate(gd.eigenvalues()[0], gd.normalization())
    );
    if let Some(p) = &a.out_train {
        let mut shape = vec![t_len];
        shape.extend(&y_shape);
        let data: Vec<f64> = preds.iter().flat_map(|p| p.train.clone()).collect();
        write_npy(p, &HostArray::new(shape.clone(), data), FloatKind::F64)?;
        eprintln!("wrote {} {:?}", p.display(), shape);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(
            parse_times("0, 1.5,inf,Infinity", "--t").unwrap(),
            vec![0.0, 1.5, f64::INFINITY, f64::INFINITY]
        );
        assert!(parse_times("-1", "--t").is_err());
        assert!(parse_times("nan", "--t").is_err());
        assert!(parse_times("1,,2", "--t").is_err());
    }
}
