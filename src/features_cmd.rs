//! `ntk features` (sketched NTK/NNGP features of a spec, streamed over the inputs) and
//! `ntk regress` (ridge regression on those features against exact kernel ridge regression
//! with the infinite-width NTK, on a bundled dataset or the user's data).

use crate::nets::array::{NpyRows, NpyWriter};
use crate::nets::{FloatKind, HostArray, NetworkSpec};
use crate::train::{Split, Targets};
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ntk_analysis::Matrix;
use ntk_analysis::predict::{DiagReg, GpInference};
use ntk_analysis::ridge::FeatureRidge;
use ntk_infinite::features::budget::{self, size};
use ntk_infinite::features::{
    DEFAULT_DEGREE, FeatureMap, FeatureMethod, FeatureOptions, GraphFeatureMap, NtkFeatures,
};
use ntk_infinite::{InfiniteOptions, kernels};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `ntk features`.
#[derive(clap::Args, Debug)]
pub struct FeaturesArgs {
    /// Network spec (JSON, sequential or graph); only the architecture matters (relu networks: dense/linear, conv2d, relu, identity, pooling, flatten; graphs also residual add, channel concat, scale).
    #[arg(long)]
    pub spec: PathBuf,
    /// Inputs .npy [N, *input_shape] (read in batches: N may exceed memory).
    #[arg(long)]
    pub x: PathBuf,
    /// ntkrf (random features, MLPs), ntksketch (PolySketch, MLPs) or cntksketch (conv nets).
    #[arg(long, default_value = "ntksketch")]
    pub method: String,
    /// Feature dimension m of the output [N, m].
    #[arg(long, default_value_t = 1024)]
    pub dim: usize,
    /// Seed of the random maps: the same seed gives compatible features across calls.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Degree of the arc-cosine polynomials (ntksketch, cntksketch).
    #[arg(long, default_value_t = DEFAULT_DEGREE)]
    pub degree: usize,
    /// ntk or nngp: which kernel the features of --out approximate.
    #[arg(long, default_value = "ntk")]
    pub kernel: String,
    /// Also write the other kernel's features here.
    #[arg(long)]
    pub out_other: Option<PathBuf>,
    /// Output .npy [N, m].
    #[arg(long)]
    pub out: PathBuf,
    /// dtype of the written features: f32 (default, half the disk) or f64.
    #[arg(long, default_value = "f32")]
    pub out_dtype: String,
    /// Samples per batch (default: as many as fit in --max-memory).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Working memory, e.g. 512MiB, 2GiB: the map's random transforms (about 2·q'
    /// vectors of --dim numbers per relu layer for the sketches, q' the degree rounded up
    /// to a power of two) plus one batch; refused before any work when they do not fit.
    #[arg(long, default_value = "1GiB")]
    pub max_memory: String,
}

fn out_kind(s: &str) -> Result<FloatKind> {
    match s {
        "f32" => Ok(FloatKind::F32),
        "f64" => Ok(FloatKind::F64),
        other => bail!("--out-dtype: unknown {other:?} (f32 or f64)"),
    }
}

/// The feature map of a sequential or a graph spec.
pub enum AnyFeatureMap {
    Sequential(FeatureMap),
    Graph(GraphFeatureMap),
}

impl AnyFeatureMap {
    /// Reads the spec file (sequential `layers` or graph `nodes`) and compiles its map,
    /// refusing one whose random transforms would pass `max_bytes` before drawing them.
    pub fn from_file(
        path: &Path,
        options: &FeatureOptions,
        max_bytes: Option<u64>,
    ) -> Result<AnyFeatureMap> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(if ntk_nets::graph::spec::is_graph_spec(&text) {
            let spec = ntk_nets::graph::spec::parse(&text, &path.display().to_string())?;
            AnyFeatureMap::Graph(GraphFeatureMap::new_within(&spec, options, max_bytes)?)
        } else {
            AnyFeatureMap::Sequential(FeatureMap::new_within(
                &NetworkSpec::from_json(&text)?,
                options,
                max_bytes,
            )?)
        })
    }

    /// The largest `options.dim / 2^k` (k ≥ 1) whose map and one input's working set fit
    /// in `max_bytes`, for the way out of a refusal. Each try either stops at the bound
    /// or draws a map within it.
    pub fn fitting_dim(path: &Path, options: &FeatureOptions, max_bytes: u64) -> Option<usize> {
        let mut o = options.clone();
        o.dim /= 2;
        while o.dim >= 1 {
            if let Ok(m) = AnyFeatureMap::from_file(path, &o, Some(max_bytes))
                && m.map_bytes() + 8 * m.numbers_per_sample() as u64 <= max_bytes
            {
                return Some(o.dim);
            }
            o.dim /= 2;
        }
        None
    }

    pub fn apply(&self, x: &HostArray) -> ntk_infinite::Result<NtkFeatures> {
        match self {
            AnyFeatureMap::Sequential(m) => m.apply(x),
            AnyFeatureMap::Graph(m) => m.apply(x),
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            AnyFeatureMap::Sequential(m) => m.dim(),
            AnyFeatureMap::Graph(m) => m.dim(),
        }
    }

    pub fn input_shape(&self) -> Vec<usize> {
        match self {
            AnyFeatureMap::Sequential(m) => m.input_shape(),
            AnyFeatureMap::Graph(m) => m.input_shape(),
        }
    }

    pub fn options(&self) -> &FeatureOptions {
        match self {
            AnyFeatureMap::Sequential(m) => m.options(),
            AnyFeatureMap::Graph(m) => m.options(),
        }
    }

    pub fn numbers_per_sample(&self) -> usize {
        match self {
            AnyFeatureMap::Sequential(m) => m.numbers_per_sample(),
            AnyFeatureMap::Graph(m) => m.numbers_per_sample(),
        }
    }

    /// The features of `x` within `max_bytes` (see [`FeatureMap::apply_within`]).
    pub fn apply_within(&self, x: &HostArray, max_bytes: u64) -> ntk_infinite::Result<NtkFeatures> {
        match self {
            AnyFeatureMap::Sequential(m) => m.apply_within(x, max_bytes),
            AnyFeatureMap::Graph(m) => m.apply_within(x, max_bytes),
        }
    }

    /// Bytes of the random transforms.
    pub fn map_bytes(&self) -> u64 {
        match self {
            AnyFeatureMap::Sequential(m) => m.map_bytes(),
            AnyFeatureMap::Graph(m) => m.map_bytes(),
        }
    }
}

fn feature_options(method: &str, dim: usize, seed: u64, degree: usize) -> Result<FeatureOptions> {
    Ok(FeatureOptions {
        method: FeatureMethod::parse(method).context("--method")?,
        dim,
        seed,
        degree,
    })
}

/// Runs `ntk features`.
pub fn run_features(a: &FeaturesArgs) -> Result<()> {
    crate::outputs::check_outputs(
        &[
            ("--out", Some(&a.out)),
            ("--out-other", a.out_other.as_deref()),
        ],
        &[Some(&a.spec), Some(&a.x)],
    )?;
    let want_ntk = match a.kernel.as_str() {
        "ntk" => true,
        "nngp" => false,
        other => bail!("--kernel: unknown kernel {other:?} (ntk or nngp)"),
    };
    let kind = out_kind(&a.out_dtype)?;
    let budget = crate::infinite_cmd::parse_bytes(&a.max_memory)?;
    let options = feature_options(&a.method, a.dim, a.seed, a.degree)?;
    let way_out = || match AnyFeatureMap::fitting_dim(&a.spec, &options, budget) {
        Some(d) => format!("raise --max-memory or lower --dim (--dim {d} fits)"),
        None => "raise --max-memory".to_string(),
    };
    let map = AnyFeatureMap::from_file(&a.spec, &options, Some(budget)).map_err(|e| {
        match e.downcast_ref::<ntk_infinite::InfiniteError>() {
            Some(ntk_infinite::InfiniteError::FeatureMemory { needed, .. }) => anyhow::anyhow!(
                "--max-memory {}: the feature map's random transforms alone need more than {} \
                 at --dim {}; {}",
                a.max_memory,
                size(*needed),
                a.dim,
                way_out()
            ),
            _ => e,
        }
    })?;
    let mut reader = NpyRows::open(&a.x)?;
    let shape = map.input_shape();
    if reader.shape().len() != shape.len() + 1 || reader.shape()[1..] != shape[..] {
        bail!(
            "{}: shape {:?} does not match [N, {:?}] (the spec's input_shape)",
            a.x.display(),
            reader.shape(),
            shape
        );
    }
    let n = reader.rows();
    if n == 0 {
        bail!("{}: holds no samples (N = 0)", a.x.display());
    }
    // The transforms stay alive beside each batch's working set; the features go to the
    // output files as they are made.
    let per_sample = (map.numbers_per_sample() * 8) as u64;
    let fit = budget::batch_within(
        map.map_bytes(),
        map.numbers_per_sample(),
        map.dim(),
        n,
        false,
        budget,
    );
    let batch = match (a.batch, fit) {
        (Some(0), _) => bail!("--batch must be positive"),
        (None, Ok(b)) => b.min(4096),
        (Some(b), Ok(fit)) if b.min(n) <= fit => b.min(n),
        (given, _) => {
            let b = given.unwrap_or(1).min(n);
            bail!(
                "--max-memory {}: the feature map's random transforms take {} and {} of {b} \
                 input(s) {} more at --dim {} (about {} in all); {}",
                a.max_memory,
                size(map.map_bytes()),
                if given.is_some() {
                    "a --batch"
                } else {
                    "a batch"
                },
                size(b as u64 * per_sample),
                a.dim,
                size(map.map_bytes() + b as u64 * per_sample),
                if given.is_some() && b > 1 {
                    "lower --batch, raise --max-memory or lower --dim".to_string()
                } else {
                    way_out()
                }
            )
        }
    };
    let m = map.dim();
    if a.out_other.as_ref() == Some(&a.out) {
        bail!("--out and --out-other must be different files");
    }
    let mut out = NpyWriter::create(&a.out, &[n, m], kind)?;
    let mut other = a
        .out_other
        .as_ref()
        .map(|p| NpyWriter::create(p, &[n, m], kind))
        .transpose()?;
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("features [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template"),
    );
    let t0 = Instant::now();
    let mut start = 0;
    while start < n {
        let x = reader.read(start, batch)?;
        let f = map.apply(&x).map_err(|e| match e {
            ntk_infinite::InfiniteError::NonFiniteInput { index, value, .. } => anyhow::anyhow!(
                "{}: non-finite value {value} at flat index {}",
                a.x.display(),
                start * shape.iter().product::<usize>() + index
            ),
            e => e.into(),
        })?;
        let (main, rest) = if want_ntk {
            (&f.ntk, &f.nngp)
        } else {
            (&f.nngp, &f.ntk)
        };
        out.write(&main.data)?;
        if let Some(o) = other.as_mut() {
            o.write(&rest.data)?;
        }
        start += x.shape[0];
        bar.set_position(start as u64);
    }
    bar.finish_and_clear();
    out.finish()?;
    if let Some(o) = other {
        o.finish()?;
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} [{n}, {m}] ({} features of the infinite-width {}, {} batches of {batch}, {:.3} s, {:.3} ms per input)",
        a.out.display(),
        map.options().method.name(),
        a.kernel,
        n.div_ceil(batch),
        secs,
        secs / n as f64 * 1e3
    );
    Ok(())
}

/// The relu MLP `ntk regress` uses without `--spec`: two hidden layers, biases.
pub const DEFAULT_REGRESSION_SPEC: &str = r#"{"input_shape":[INPUT],"parameterization":"ntk","layers":[
  {"type":"dense","width":512,"w_std":1.4142135623730951,"b_std":0.1},{"type":"relu"},
  {"type":"dense","width":512,"w_std":1.4142135623730951,"b_std":0.1},{"type":"relu"},
  {"type":"dense","width":1,"w_std":1.0,"b_std":0.0}]}"#;

/// Arguments of `ntk regress`.
#[derive(clap::Args, Debug)]
pub struct RegressArgs {
    /// Network spec (JSON); default: a relu MLP with two hidden layers on the data's features.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// The data (default: the bundled digits, 10-class classification by one-hot
    /// regression; diabetes is a regression set). A test set is needed.
    #[command(flatten)]
    pub data: crate::train_cmd::DataArgs,
    /// Feature maps to compare, method:dim, comma-separated.
    #[arg(long, default_value = "ntksketch:1024,ntksketch:4096,ntkrf:4096")]
    pub features: String,
    /// Ridge regulariser relative to the mean diagonal of the kernel (neural-tangents' diag_reg).
    #[arg(long, default_value_t = 1e-3)]
    pub diag_reg: f64,
    /// Seed of the random feature maps.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip exact kernel ridge regression with the infinite-width NTK (O(N²) memory).
    #[arg(long)]
    pub no_exact: bool,
    /// Working-memory bound of each feature map with the features of all inputs, and of
    /// the exact kernels' recursion, e.g. 512MiB, 2GiB (maps checked before any work).
    #[arg(long, default_value = "2GiB")]
    pub max_memory: String,
    /// Machine-readable results (JSON, written atomically).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One line of the regression report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RegressionResult {
    pub model: String,
    pub dim: Option<usize>,
    pub test_mse: f64,
    /// Argmax accuracy (class labels only).
    pub test_accuracy: Option<f64>,
    pub seconds: f64,
}

/// Targets as a `[n, c]` matrix: one-hot for classes.
fn target_matrix(t: &Targets) -> (Vec<f64>, usize) {
    match t {
        Targets::Classes { n_classes, .. } => {
            (t.matrix(*n_classes).expect("enough columns"), *n_classes)
        }
        Targets::Values(v) => (v.data.clone(), v.shape[1]),
    }
}

fn score(pred: &[f64], t: &Targets) -> (f64, Option<f64>) {
    let (y, c) = target_matrix(t);
    let n = y.len() / c;
    let mse = pred
        .iter()
        .zip(&y)
        .map(|(p, y)| (p - y).powi(2))
        .sum::<f64>()
        / (n * c) as f64;
    let acc = match t {
        Targets::Classes { labels, .. } => {
            let hits = (0..n)
                .filter(|&i| {
                    let row = &pred[i * c..(i + 1) * c];
                    (0..c).max_by(|&a, &b| row[a].total_cmp(&row[b])) == Some(labels[i])
                })
                .count();
            Some(hits as f64 / n as f64)
        }
        Targets::Values(_) => None,
    };
    (mse, acc)
}

/// Runs the regression comparison; returns one result per model.
pub fn regress(
    spec: &NetworkSpec,
    split: &Split,
    features: &[(String, usize)],
    diag_reg: f64,
    seed: u64,
    exact: bool,
    max_memory: u64,
) -> Result<Vec<RegressionResult>> {
    let test = split.test.as_ref().context("a test set is needed")?;
    let xtr = crate::train::reshape_inputs(&split.train.x, &spec.input_shape)?;
    let xte = crate::train::reshape_inputs(&test.x, &spec.input_shape)?;
    let (y, c) = target_matrix(&split.train.y);
    let c_test = target_matrix(&test.y).1;
    if c == 0 || c != c_test {
        bail!(
            "train targets have {c} column(s) and test targets {c_test}: they must agree and be at least 1"
        );
    }
    let (n, nt) = (xtr.len(), xte.len());
    let ymat = Matrix::new("train targets", &y, n, c)?;
    let map_of = |method: &str, dim: usize| -> Result<FeatureMap> {
        let options = feature_options(method, dim, seed, DEFAULT_DEGREE)?;
        FeatureMap::new_within(spec, &options, Some(max_memory))
            .with_context(|| format!("--features {method}:{dim}"))
    };
    // Every map with the features of all inputs must fit before any work.
    for (method, dim) in features {
        let map = map_of(method, *dim)?;
        budget::batch_within(
            map.map_bytes(),
            map.numbers_per_sample(),
            *dim,
            n + nt,
            true,
            max_memory,
        )
        .with_context(|| format!("--features {method}:{dim}"))?;
    }
    let mut results = Vec::new();
    for (method, dim) in features {
        let t0 = Instant::now();
        let map = map_of(method, *dim)?;
        let ftr = map.apply_within(&xtr, max_memory)?.ntk;
        let held = (16 * n * dim) as u64;
        let fte = map.apply_within(&xte, max_memory.saturating_sub(held))?.ntk;
        let fit =
            FeatureRidge::relative(Matrix::new("features", &ftr.data, n, *dim)?, ymat, diag_reg)?;
        let pred = fit.predict(Matrix::new("test features", &fte.data, nt, *dim)?)?;
        let (mse, acc) = score(&pred, &test.y);
        results.push(RegressionResult {
            model: format!("{method} features + linear ridge"),
            dim: Some(*dim),
            test_mse: mse,
            test_accuracy: acc,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    if exact {
        let t0 = Instant::now();
        let opts = InfiniteOptions {
            max_memory,
            ..Default::default()
        };
        let k = kernels(spec, &xtr, None, &opts)?.ntk;
        let ks = kernels(spec, &xte, Some(&xtr), &opts)?.ntk;
        let gp = GpInference::new(
            Matrix::square("NTK train-train", &k.data, n)?,
            ymat,
            DiagReg::relative(diag_reg),
        )?;
        let pred = gp
            .posterior(Matrix::new("NTK test-train", &ks.data, nt, n)?, None)?
            .mean;
        let (mse, acc) = score(&pred, &test.y);
        results.push(RegressionResult {
            model: "exact infinite-width NTK, kernel ridge".into(),
            dim: None,
            test_mse: mse,
            test_accuracy: acc,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    Ok(results)
}

/// Parses `method:dim,...`.
pub fn parse_feature_list(s: &str) -> Result<Vec<(String, usize)>> {
    s.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            let (m, d) = t.trim().split_once(':').with_context(|| {
                format!("--features: {t:?} is not method:dim (e.g. ntksketch:4096)")
            })?;
            FeatureMethod::parse(m).with_context(|| format!("--features: {t:?}"))?;
            let d: usize = d.parse().ok().filter(|&d| d > 0).with_context(|| {
                format!("--features: dimension in {t:?} must be a positive integer")
            })?;
            Ok((m.to_string(), d))
        })
        .collect()
}

/// Runs `ntk regress`.
pub fn run_regress(a: &RegressArgs) -> Result<()> {
    crate::outputs::check_outputs(&[("--json", a.json.as_deref())], &[a.spec.as_deref()])?;
    let split = a.data.load(false, Some("digits"))?;
    if split.test.is_none() {
        bail!(
            "a held-out set is needed: give --x-test/--y-test (or --x-test TEST.csv with --data FILE.csv)"
        );
    }
    let spec = match &a.spec {
        Some(p) => NetworkSpec::from_file(p)?,
        None => {
            let d: usize = split.train.x.shape[1..].iter().product();
            NetworkSpec::from_json(&DEFAULT_REGRESSION_SPEC.replace("INPUT", &d.to_string()))?
        }
    };
    let features = parse_feature_list(&a.features)?;
    let test_n = split.test.as_ref().map_or(0, |t| t.x.len());
    eprintln!(
        "{} train / {test_n} test samples; relative ridge {:e}",
        split.train.x.len(),
        a.diag_reg
    );
    let max_memory = crate::infinite_cmd::parse_bytes(&a.max_memory)?;
    let results = regress(
        &spec,
        &split,
        &features,
        a.diag_reg,
        a.seed,
        !a.no_exact,
        max_memory,
    )?;
    println!("| model | m | test MSE | test accuracy | seconds |");
    println!("|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} | {:.5} | {} | {:.3} |",
            r.model,
            r.dim.map_or("-".into(), |d| d.to_string()),
            r.test_mse,
            r.test_accuracy
                .map_or("-".into(), |a| format!("{:.2}%", 100.0 * a)),
            r.seconds
        );
    }
    if let Some(j) = &a.json {
        ntk_nets::array::write_atomic(j, serde_json::to_string_pretty(&results)?.as_bytes())?;
        eprintln!("wrote {}", j.display());
    }
    Ok(())
}
