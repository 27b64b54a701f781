//! Training-free architecture scores from the NTK at initialisation, for architecture search:
//!
//! - `te_nas_condition`: condition number `λmax/λmin` of the sum-of-logits NTK (TE-NAS,
//!   Chen et al. 2021; lower is better);
//! - `ntk_trace_norm`: trace norm of the NTK per sample, `(1/n) Σ_i Σ_o ‖∂f_o(x_i)/∂θ‖²`
//!   (NASI, Shu et al. 2022, uses the trace norm of the NTK);
//! - `label_alignment`: centred kernel-target alignment of the trace NTK with the labels
//!   (one-hot for class ids; Cortes et al. 2012), when labels are given;
//! - `pntk_lambda_max`, `pntk_lambda_min`, `pntk_effective_rank` (participation ratio
//!   `(Σλ)²/Σλ²`): eigen statistics of the pNTK (the sum-of-logits kernel).
//!
//! Each statistic is the mean over several initialisation seeds. Candidates are scored in
//! parallel (rayon); a candidate that fails (bad JSON, a bad layer, a non-finite kernel, a
//! panic) gets a row with the message in the `error` column and the others go on.

use crate::arch::Architecture;
use crate::train::{Targets, reshape_inputs};
use anyhow::{Context, Result, bail};
use ntk_analysis::{alignment, spectrum};
use ntk_empirical::KernelKind;
use ntk_nets::array::write_atomic;
use ntk_nets::{HostArray, Precision};
use rayon::prelude::*;
use std::path::Path;
use std::time::Instant;

/// A candidate architecture: a name and its spec, or why it could not be read; with a
/// state dict, it is scored at those weights (one network, whatever the seeds).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: String,
    pub spec: std::result::Result<Architecture, String>,
    pub state_dict: Option<std::sync::Arc<ntk_nets::graph::StateDict>>,
}

impl Candidate {
    /// A candidate without weights of its own (random per seed; ONNX: its initializers).
    pub fn new(name: String, spec: std::result::Result<Architecture, String>) -> Candidate {
        Candidate {
            name,
            spec,
            state_dict: None,
        }
    }
}

/// Reads candidates from a folder of `*.json` specs (sequential or graph) and `*.onnx`
/// files (sorted by file name) or a JSONL file (one spec per line, or
/// `{"name": ..., "spec": {...}}`). A spec that does not parse is kept as a candidate with
/// its error.
pub fn load_candidates(path: &Path) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "json" || e.eq_ignore_ascii_case("onnx"))
            })
            .collect();
        files.sort();
        for f in files {
            let name = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let spec = Architecture::candidate(&f).map_err(|e| format!("{e:#}"));
            out.push(Candidate::new(name, spec));
        }
        if out.is_empty() {
            bail!(
                "{}: no *.json specs or *.onnx files in this folder",
                path.display()
            );
        }
        return Ok(out);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for (ln, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let default_name = format!("line-{}", ln + 1);
        let parsed: std::result::Result<(String, Architecture), String> =
            match serde_json::from_str::<serde_json::Value>(line) {
                Err(e) => Err(format!("{}:{}: invalid JSON: {e}", path.display(), ln + 1)),
                Ok(v) => {
                    let (name, spec_value) = match (v.get("spec"), v.get("name")) {
                        (Some(s), n) => (
                            n.and_then(|n| n.as_str())
                                .map(str::to_string)
                                .unwrap_or(default_name.clone()),
                            s.clone(),
                        ),
                        (None, _) => (default_name.clone(), v),
                    };
                    let source = format!("{}:{}", path.display(), ln + 1);
                    Architecture::from_value(&spec_value, &source)
                        .map(|s| (name, s))
                        .map_err(|e| format!("{source}: {e:#}"))
                }
            };
        out.push(match parsed {
            Ok((name, spec)) => Candidate::new(name, Ok(spec)),
            Err(e) => Candidate::new(default_name, Err(e)),
        });
    }
    if out.is_empty() {
        bail!("{}: no candidate specs", path.display());
    }
    Ok(out)
}

/// Options of [`score_all`].
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// Initialisation seeds `0..seeds`.
    pub seeds: u64,
    pub precision: Precision,
    pub device: burn::tensor::Device,
    /// The parameters the kernels are over (graph networks): names matching `params`
    /// (TE-NAS: `weight`) and not `frozen`; `None`: all.
    pub params: Option<regex::Regex>,
    pub frozen: Option<regex::Regex>,
    /// Which statistics to compute (the kernels they need, no more).
    pub metrics: Metrics,
    /// Set from another thread to stop: candidates not yet done get a `cancelled` error.
    pub cancel: ntk_empirical::Cancel,
    /// Working memory of the kernels, in bytes, shared by the candidates scored at once
    /// (one per rayon thread).
    pub max_memory: u64,
}

impl ScoreOptions {
    /// Every statistic over every parameter.
    pub fn new(seeds: u64, precision: Precision, device: burn::tensor::Device) -> ScoreOptions {
        ScoreOptions {
            seeds,
            precision,
            device,
            params: None,
            frozen: None,
            metrics: Metrics::all(),
            cancel: ntk_empirical::Cancel::default(),
            max_memory: ntk_empirical::EmpiricalOptions::default().max_memory,
        }
    }
}

/// The statistics a score run computes: those of the sum-of-logits kernel (TE-NAS
/// condition number, pNTK eigen statistics) and those of the trace kernel (NASI trace norm,
/// label alignment), which costs O (outputs) times more. Statistics not computed are NaN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    pub sum_of_logits: bool,
    pub trace: bool,
    /// The label alignment (with labels): the whole trace kernel, not only its diagonal.
    pub label_alignment: bool,
}

/// Statistic names as in the CSV, with the kernel each needs (`true`: the trace kernel).
pub const METRIC_NAMES: [(&str, bool); 6] = [
    ("te_nas_condition", false),
    ("pntk_lambda_max", false),
    ("pntk_lambda_min", false),
    ("pntk_effective_rank", false),
    ("ntk_trace_norm", true),
    ("label_alignment", true),
];

impl Metrics {
    pub fn all() -> Metrics {
        Metrics {
            sum_of_logits: true,
            trace: true,
            label_alignment: true,
        }
    }

    /// The kernels the named statistics need; an unknown name is an error naming the
    /// known ones.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Metrics> {
        let mut m = Metrics {
            sum_of_logits: false,
            trace: false,
            label_alignment: false,
        };
        for n in names {
            let n = n.as_ref();
            match METRIC_NAMES.iter().find(|(k, _)| *k == n) {
                Some((_, true)) => {
                    m.trace = true;
                    m.label_alignment |= n == "label_alignment";
                }
                Some((_, false)) => m.sum_of_logits = true,
                None => bail!(
                    "unknown metric {n:?}: use {}",
                    METRIC_NAMES.map(|(k, _)| k).join(", ")
                ),
            }
        }
        if !m.sum_of_logits && !m.trace {
            bail!("no metrics named");
        }
        Ok(m)
    }
}

/// The scores of one candidate (means over seeds), or its error.
#[derive(Debug, Clone, Default)]
pub struct ScoreRow {
    pub name: String,
    pub n_params: Option<usize>,
    pub seeds: u64,
    pub te_nas_condition: f64,
    pub ntk_trace_norm: f64,
    pub label_alignment: Option<f64>,
    pub pntk_lambda_max: f64,
    pub pntk_lambda_min: f64,
    pub pntk_effective_rank: f64,
    pub seconds: f64,
    pub error: Option<String>,
}

/// Column names of the scores CSV.
pub const CSV_HEADER: &str = "name,n_params,seeds,te_nas_condition,ntk_trace_norm,label_alignment,pntk_lambda_max,pntk_lambda_min,pntk_effective_rank,seconds,error";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"").replace(['\n', '\r'], " "))
    } else {
        s.to_string()
    }
}

impl ScoreRow {
    /// The row as CSV (fields of a failed candidate are empty but for its name and error).
    pub fn csv_line(&self) -> String {
        let num = |v: f64| {
            if self.error.is_some() || v.is_nan() {
                String::new()
            } else {
                format!("{v:e}")
            }
        };
        [
            csv_field(&self.name),
            self.n_params.map(|p| p.to_string()).unwrap_or_default(),
            self.seeds.to_string(),
            num(self.te_nas_condition),
            num(self.ntk_trace_norm),
            self.label_alignment
                .filter(|_| self.error.is_none())
                .map(|a| format!("{a:e}"))
                .unwrap_or_default(),
            num(self.pntk_lambda_max),
            num(self.pntk_lambda_min),
            num(self.pntk_effective_rank),
            format!("{:.3}", self.seconds),
            csv_field(self.error.as_deref().unwrap_or("")),
        ]
        .join(",")
    }
}

/// The whole CSV text.
pub fn csv_text(rows: &[ScoreRow]) -> String {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    for r in rows {
        s.push_str(&r.csv_line());
        s.push('\n');
    }
    s
}

/// Writes the scores CSV atomically.
pub fn write_csv(path: &Path, rows: &[ScoreRow]) -> Result<()> {
    write_atomic(path, csv_text(rows).as_bytes())?;
    Ok(())
}

/// Scores one spec on inputs `x` (reshaped to the spec's input shape when the sizes agree)
/// with optional labels `y`: at the weights of `state` when given (one network), else at
/// seeds `0..options.seeds` (ONNX files: their own weights).
pub fn score_spec(
    name: &str,
    spec: &Architecture,
    state: Option<&ntk_nets::graph::StateDict>,
    x: &HostArray,
    y: Option<&Targets>,
    options: &ScoreOptions,
) -> Result<ScoreRow> {
    if options.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let t0 = Instant::now();
    // An ONNX file or a state dict carries its weights: one network, whatever --seeds says.
    let seeds = if spec.seeded() && state.is_none() {
        options.seeds
    } else {
        1
    };
    let build = |seed: u64| -> Result<crate::arch::Built> {
        let mut net = match state {
            Some(st) => spec.build_with_state(st, &options.device, options.precision)?,
            None => spec.build(seed, None, &options.device, options.precision)?,
        };
        net.select(options.params.as_ref(), options.frozen.as_ref())?;
        Ok(net)
    };
    let first = build(0)?;
    let n_params = first.n_params();
    let x = reshape_inputs(x, &first.input_shape())?;
    let n = x.len();
    if n < 2 {
        bail!("need at least 2 input samples, got {n}");
    }
    let metrics = options.metrics;
    let mut sums = [0.0f64; 6];
    let mut built = Some(first);
    for seed in 0..seeds {
        let net = match built.take() {
            Some(net) => net,
            None => build(seed)?,
        };
        let o = net.n_outputs();
        let opts = |kind: KernelKind| ntk_empirical::EmpiricalOptions {
            kind,
            cancel: options.cancel.clone(),
            max_memory: options.max_memory,
            ..Default::default()
        };
        let kernel = |kind: KernelKind| -> Result<Vec<f64>> {
            let opts = opts(kind);
            Ok(net
                .empirical(&x, None, &opts, &mut |_, _| {})
                .with_context(|| format!("seed {seed}: {} kernel", kind.name()))?
                .kernel
                .data)
        };
        if metrics.sum_of_logits {
            let sol = kernel(KernelKind::SumOfLogits)?;
            let s = spectrum::spectrum(&sol, n)
                .with_context(|| format!("seed {seed}: pNTK spectrum"))?;
            sums[0] += s.condition_number;
            sums[2] += s.lambda_max;
            sums[3] += s.lambda_min;
            sums[4] += s.effective_rank_participation;
        }
        if metrics.trace {
            // The label alignment needs the whole trace kernel; the trace norm alone only
            // its diagonal Θ(x_i, x_i): the diagonal tiles, each one kernel of its own
            // rows (no off-diagonal tile, and no forward pass repeated for them).
            let whole = y
                .filter(|_| metrics.label_alignment)
                .map(|_| kernel(KernelKind::Trace))
                .transpose()?;
            let trace = match &whole {
                Some(tr) => spectrum::trace(tr, n)?,
                None => {
                    let o_opts = opts(KernelKind::Trace);
                    let rows = net.tile_rows(&x, &o_opts)?;
                    let mut trace = 0.0;
                    for start in (0..n).step_by(rows) {
                        let len = rows.min(n - start);
                        let k = net
                            .empirical(&x.rows(start, len), None, &o_opts, &mut |_, _| {})
                            .with_context(|| format!("seed {seed}: trace kernel"))?
                            .kernel;
                        trace += spectrum::trace(&k.data, len)?;
                    }
                    trace
                }
            };
            sums[1] += trace * o as f64 / n as f64;
            if let (Some(y), Some(tr)) = (y, &whole) {
                let c = match y {
                    Targets::Classes { n_classes, .. } => *n_classes,
                    Targets::Values(v) => v.shape[1],
                };
                let ym = y.matrix(c)?;
                sums[5] += alignment::centered_kernel_target_alignment(tr, n, &ym, c)
                    .with_context(|| format!("seed {seed}: label alignment"))?;
            }
        }
    }
    let k = seeds as f64;
    let mean = |v: f64, computed: bool| if computed { v / k } else { f64::NAN };
    let (sol, tr) = (metrics.sum_of_logits, metrics.trace);
    let row = ScoreRow {
        name: name.to_string(),
        n_params: Some(n_params),
        seeds,
        te_nas_condition: mean(sums[0], sol),
        ntk_trace_norm: mean(sums[1], tr),
        label_alignment: y.filter(|_| metrics.label_alignment).map(|_| sums[5] / k),
        pntk_lambda_max: mean(sums[2], sol),
        pntk_lambda_min: mean(sums[3], sol),
        pntk_effective_rank: mean(sums[4], sol),
        seconds: t0.elapsed().as_secs_f64(),
        error: None,
    };
    for (what, v, computed) in [
        ("ntk_trace_norm", row.ntk_trace_norm, tr),
        ("pntk_lambda_max", row.pntk_lambda_max, sol),
        ("pntk_effective_rank", row.pntk_effective_rank, sol),
    ] {
        if computed && !v.is_finite() {
            bail!("{what} is {v}: the kernel overflowed");
        }
    }
    Ok(row)
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Scores every candidate in parallel; `done(name)` is called as each one finishes. Rows come
/// back in the order of `candidates`; failures are rows with `error` set.
pub fn score_all(
    candidates: &[Candidate],
    x: &HostArray,
    y: Option<&Targets>,
    options: &ScoreOptions,
    done: &(dyn Fn(&str) + Sync),
) -> Vec<ScoreRow> {
    // The memory bound is shared by the candidates in flight.
    let in_flight = rayon::current_num_threads().min(candidates.len()).max(1) as u64;
    let options = &ScoreOptions {
        max_memory: options.max_memory / in_flight,
        ..options.clone()
    };
    candidates
        .par_iter()
        .map(|c| {
            let t0 = Instant::now();
            let result = match &c.spec {
                _ if options.cancel.is_cancelled() => Err("cancelled".to_string()),
                Err(e) => Err(e.clone()),
                Ok(spec) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    score_spec(&c.name, spec, c.state_dict.as_deref(), x, y, options)
                }))
                .map_err(|p| format!("panic: {}", panic_message(p)))
                .and_then(|r| r.map_err(|e| format!("{e:#}"))),
            };
            done(&c.name);
            result.unwrap_or_else(|e| ScoreRow {
                name: c.name.clone(),
                n_params: c.spec.as_ref().ok().and_then(Architecture::n_params),
                seeds: options.seeds,
                seconds: t0.elapsed().as_secs_f64(),
                error: Some(e),
                ..Default::default()
            })
        })
        .collect()
}

/// Ranks (1-based) with ties given the mean of their ranks.
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = mean;
        }
        i = j + 1;
    }
    r
}

/// Pearson correlation; NaN when either side is constant or shorter than 2.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return f64::NAN;
    }
    let ma = a[..n].iter().sum::<f64>() / n as f64;
    let mb = b[..n].iter().sum::<f64>() / n as f64;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (da, db) = (a[i] - ma, b[i] - mb);
        sab += da * db;
        saa += da * da;
        sbb += db * db;
    }
    sab / (saa * sbb).sqrt()
}

/// Spearman's rank correlation ρ (Pearson correlation of the ranks; ties get mean ranks).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    }

    #[test]
    fn csv_quotes_errors() {
        let r = ScoreRow {
            name: "a,b".into(),
            error: Some("bad \"x\", y".into()),
            ..Default::default()
        };
        assert_eq!(r.csv_line(), "\"a,b\",,0,,,,,,,0.000,\"bad \"\"x\"\", y\"");
    }
}
