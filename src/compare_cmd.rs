//! `ntk compare`: finite-width empirical NTKs against the exact infinite-width NTK as the
//! width grows, and sketched features against it as their dimension grows; a JSON report
//! and a PNG plot.
//!
//! For each width `w` every hidden dense layer gets `w` units and every conv2d `w`
//! channels (the readout keeps its outputs); for each seed the network is initialised at
//! random and its empirical NTK traced over outputs (the mean, neural-tangents'
//! `trace_axes=(-1,)`, comparable with the infinite-width NTK of one output) is compared
//! with the exact kernel of the same spec by the relative Frobenius error
//! `‖Θ_w − Θ∞‖_F / ‖Θ∞‖_F`. The log-log slope of the mean error against `w` is fitted by
//! least squares (`−1/2` for the `1/√w` fluctuations of a random network). The error of
//! the Monte Carlo mean of the seeds' kernels (`ntk_empirical::monte_carlo_kernel`) is
//! reported and drawn beside it: it falls like `1/√(K·w)` until it reaches the
//! finite-width bias `∝ 1/w`.
//!
//! Graph specs (`nodes`) work the same way: every `linear`/`conv2d` but the last gets the
//! width, the exact kernel is `ntk_infinite::graph_kernels`, and sketched features are
//! `ntk_infinite::features::GraphFeatureMap` (relu graphs: residual sums, concatenations).

use crate::features_cmd::AnyFeatureMap;
use crate::nets::array::{read_inputs, write_atomic};
use crate::nets::{
    BackendKind, LayerSpec, NetworkConfig, NetworkSpec, Parameterization, Precision,
};
use crate::plot::{Panel, Series, write_png};
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ntk_empirical::{EmpiricalOptions, KernelKind, empirical_kernel};
use ntk_infinite::features::{
    DEFAULT_DEGREE, FeatureMap, FeatureMethod, FeatureOptions, GraphFeatureMap, feature_kernel,
    relative_frobenius_error,
};
use ntk_infinite::{InfiniteOptions, graph_kernels, kernels};
use ntk_nets::HostArray;
use ntk_nets::graph::spec::{GraphSpec, is_graph_spec};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `ntk compare`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Network spec (JSON); its hidden widths are replaced by each of --widths.
    #[arg(long)]
    pub spec: PathBuf,
    /// Inputs .npy [N1, *input_shape].
    #[arg(long)]
    pub x1: PathBuf,
    /// Second inputs (default x2 = x1).
    #[arg(long)]
    pub x2: Option<PathBuf>,
    /// Hidden widths (units / channels), comma-separated.
    #[arg(long, default_value = "64,256,1024,4096")]
    pub widths: String,
    /// Random networks per width.
    #[arg(long, default_value_t = 4)]
    pub seeds: u64,
    /// Sketched feature maps to add, method:dim comma-separated (e.g. ntksketch:1024,ntkrf:4096).
    #[arg(long, default_value = "")]
    pub features: String,
    /// Precision of the empirical kernels: f64 (default) or f32.
    #[arg(long, default_value = "f64")]
    pub dtype: String,
    /// JSON report (written atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// PNG plot of the errors.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Working-memory bound, e.g. 512MiB, 2GiB: of the exact kernel's recursion, of each
    /// empirical kernel's tiles, and of each feature map with the features of all inputs
    /// (feature maps are checked before any work).
    #[arg(long, default_value = "2GiB")]
    pub max_memory: String,
}

/// The errors at one width or feature dimension.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErrorPoint {
    /// Width, or feature dimension.
    pub size: usize,
    /// Relative Frobenius error of each seed.
    pub errors: Vec<f64>,
    pub mean: f64,
    pub std: f64,
    /// Mean seconds per kernel (empirical) or per feature map of all inputs.
    pub seconds: f64,
}

impl ErrorPoint {
    fn new(size: usize, errors: Vec<f64>, seconds: f64) -> Self {
        let k = errors.len() as f64;
        let mean = errors.iter().sum::<f64>() / k;
        let var = if errors.len() > 1 {
            errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (k - 1.0)
        } else {
            0.0
        };
        ErrorPoint {
            size,
            errors,
            mean,
            std: var.sqrt(),
            seconds,
        }
    }
}

/// The errors of one sketched feature map.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeatureErrors {
    pub method: String,
    pub points: Vec<ErrorPoint>,
    /// Least-squares slope of log(mean error) against log(dimension) (sketches: −0.5).
    pub slope: Option<f64>,
}

/// The `ntk compare` report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompareReport {
    pub n1: usize,
    pub n2: usize,
    pub parameterization: String,
    pub dtype: String,
    pub exact_seconds: f64,
    pub empirical: Vec<ErrorPoint>,
    /// Per width: the error of the Monte Carlo mean of the `--seeds` kernels (one entry in
    /// `errors`; `seconds` for all of them).
    pub monte_carlo: Vec<ErrorPoint>,
    /// Least-squares slope of log(mean error) against log(width).
    pub slope: Option<f64>,
    pub features: Vec<FeatureErrors>,
}

/// `spec` with every hidden dense layer `width` wide and every hidden conv2d `width`
/// channels; the last layer with parameters (the readout, dense or conv) is kept.
pub fn with_hidden_width(spec: &NetworkSpec, width: usize) -> NetworkSpec {
    let readout = spec
        .layers
        .iter()
        .rposition(|l| matches!(l, LayerSpec::Dense(_) | LayerSpec::Conv2d(_)));
    let mut s = spec.clone();
    for (i, layer) in s.layers.iter_mut().enumerate() {
        match layer {
            LayerSpec::Dense(d) if Some(i) != readout => d.width = width,
            LayerSpec::Conv2d(c) if Some(i) != readout => c.channels = width,
            _ => {}
        }
    }
    s
}

/// A graph spec (JSON) with every `linear` `width` features wide, every `conv2d` `width`
/// channels and every `global_self_attention` `width` output, key and value channels per
/// head (its number of heads kept), except the last of these layers in node order (the
/// readout).
pub fn graph_with_hidden_width(spec: &serde_json::Value, width: usize) -> serde_json::Value {
    let mut s = spec.clone();
    let is_layer = |n: &serde_json::Value| {
        matches!(
            n.get("type").and_then(|t| t.as_str()),
            Some("linear") | Some("conv2d") | Some("global_self_attention")
        )
    };
    if let Some(nodes) = s.get_mut("nodes").and_then(|n| n.as_array_mut()) {
        let readout = nodes.iter().rposition(is_layer);
        for (i, n) in nodes.iter_mut().enumerate() {
            if !is_layer(n) {
                continue;
            }
            let fields: &[&str] = match n["type"].as_str() {
                Some("linear") => &["out_features"],
                Some("conv2d") => &["out_channels"],
                _ => &["n_chan_out", "n_chan_key", "n_chan_val"],
            };
            for (k, field) in fields.iter().enumerate() {
                // The readout keeps its outputs (an attention readout still widens its heads).
                if Some(i) == readout && k == 0 {
                    continue;
                }
                n[*field] = serde_json::Value::from(width);
            }
        }
    }
    s
}

/// The network of `ntk compare` at one width: its exact NTK and its random instances.
enum AtWidth {
    Sequential(NetworkSpec),
    Graph(Box<GraphSpec>),
}

impl AtWidth {
    fn exact(&self, x1: &HostArray, x2: Option<&HostArray>, max_memory: u64) -> Result<HostArray> {
        let o = InfiniteOptions {
            max_memory,
            ..Default::default()
        };
        Ok(match self {
            AtWidth::Sequential(s) => kernels(s, x1, x2, &o)?.ntk,
            AtWidth::Graph(g) => graph_kernels(g, x1, x2, &o)?.ntk,
        })
    }

    /// The feature map of this network, refused when its transforms pass `max_bytes`.
    fn features(&self, options: &FeatureOptions, max_bytes: u64) -> Result<AnyFeatureMap> {
        Ok(match self {
            AtWidth::Sequential(s) => {
                AnyFeatureMap::Sequential(FeatureMap::new_within(s, options, Some(max_bytes))?)
            }
            AtWidth::Graph(g) => {
                AnyFeatureMap::Graph(GraphFeatureMap::new_within(g, options, Some(max_bytes))?)
            }
        })
    }

    fn empirical(
        &self,
        seed: u64,
        device: &burn::tensor::Device,
        precision: Precision,
        x1: &HostArray,
        x2: Option<&HostArray>,
        max_memory: u64,
    ) -> Result<HostArray> {
        let opts = EmpiricalOptions {
            kind: KernelKind::Trace,
            max_memory,
            ..Default::default()
        };
        Ok(match self {
            AtWidth::Sequential(s) => {
                let net = NetworkConfig::new(s.clone())
                    .with_seed(seed)
                    .with_precision(precision)
                    .init(device)?;
                empirical_kernel(&net, x1, x2, &opts, &mut |_, _| {})?.kernel
            }
            AtWidth::Graph(g) => {
                let net = ntk_nets::graph::from_spec((**g).clone(), None, seed, device, precision)?;
                let k =
                    ntk_empirical::graph::empirical_kernel(&net, x1, x2, &opts, &mut |_, _| {})?
                        .kernel;
                HostArray::new(k.shape[..2].to_vec(), k.data)
            }
        })
    }
}

/// Least-squares slope of `log y` against `log x`.
pub fn log_log_slope(points: &[(f64, f64)]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let k = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / k,
        pts.iter().map(|p| p.1).sum::<f64>() / k,
    );
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Parses `--widths` (positive integers, comma-separated).
pub fn parse_widths(s: &str) -> Result<Vec<usize>> {
    let v: Vec<usize> = s
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            t.trim()
                .parse::<usize>()
                .ok()
                .filter(|&w| w > 0)
                .with_context(|| format!("--widths: {t:?} is not a positive integer"))
        })
        .collect::<Result<_>>()?;
    if v.is_empty() {
        bail!("--widths: give at least one width");
    }
    Ok(v)
}

/// Runs `ntk compare`.
pub fn run(a: &CompareArgs) -> Result<()> {
    crate::outputs::check_outputs(
        &[("--out", Some(&a.out)), ("--plot", a.plot.as_deref())],
        &[Some(&a.spec), Some(&a.x1), a.x2.as_deref()],
    )?;
    let widths = parse_widths(&a.widths)?;
    let features = crate::features_cmd::parse_feature_list(&a.features)?;
    if a.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let precision = Precision::parse(&a.dtype).context("--dtype")?;
    let max_memory = crate::infinite_cmd::parse_bytes(&a.max_memory)?;
    let text =
        std::fs::read_to_string(&a.spec).with_context(|| format!("--spec {}", a.spec.display()))?;
    let graph_json: Option<serde_json::Value> = if is_graph_spec(&text) {
        Some(serde_json::from_str(&text)?)
    } else {
        None
    };
    let at_width = |w: usize| -> Result<AtWidth> {
        Ok(match &graph_json {
            Some(g) => AtWidth::Graph(Box::new(
                ntk_nets::graph::spec::parse(
                    &graph_with_hidden_width(g, w).to_string(),
                    &a.spec.display().to_string(),
                )
                .with_context(|| format!("{} at width {w}", a.spec.display()))?,
            )),
            None => AtWidth::Sequential(with_hidden_width(&NetworkSpec::from_file(&a.spec)?, w)),
        })
    };
    let base = at_width(widths[0])?;
    let (input_shape, parameterization) = match &base {
        AtWidth::Sequential(s) => (s.input_shape.clone(), s.parameterization),
        AtWidth::Graph(g) => (g.nodes[0].shape.clone(), g.parameterization),
    };
    let x1 = read_inputs(&a.x1, &input_shape)?;
    let x2 =
        a.x2.as_ref()
            .map(|p| read_inputs(p, &input_shape))
            .transpose()?;
    // Each feature map (seed 0) with the features of all inputs must fit before any work.
    let options = |method: &str, dim: usize, seed: u64| -> Result<FeatureOptions> {
        Ok(FeatureOptions {
            method: FeatureMethod::parse(method)?,
            dim,
            seed,
            degree: DEFAULT_DEGREE,
        })
    };
    let n_all = x1.len() + x2.as_ref().map_or(0, |x| x.len());
    for (method, dim) in &features {
        let context = || {
            format!(
                "--features {method}:{dim} with --max-memory {}",
                a.max_memory
            )
        };
        let map = base
            .features(&options(method, *dim, 0)?, max_memory)
            .with_context(context)?;
        ntk_infinite::features::budget::batch_within(
            map.map_bytes(),
            map.numbers_per_sample(),
            *dim,
            n_all,
            true,
            max_memory,
        )
        .with_context(context)?;
    }
    let device = BackendKind::Flex.device(precision)?;
    let bar = ProgressBar::new((widths.len() as u64) * a.seeds);
    bar.set_style(
        ProgressStyle::with_template("networks [{bar:30}] {pos}/{len} {elapsed} eta {eta} {msg}")
            .expect("valid template"),
    );
    // The exact NTK depends on the widths only under the standard parameterization. The
    // features are compared with the exact kernel of the same network: the spec at the
    // first width.
    let t0 = Instant::now();
    let exact_base = base.exact(&x1, x2.as_ref(), max_memory)?;
    let exact_seconds = t0.elapsed().as_secs_f64();
    let mut empirical = Vec::new();
    let mut monte_carlo = Vec::new();
    for &w in &widths {
        let net_w = at_width(w)?;
        let exact = match parameterization {
            Parameterization::Ntk => exact_base.clone(),
            Parameterization::Standard => net_w.exact(&x1, x2.as_ref(), max_memory)?,
        };
        let errors = std::sync::Mutex::new(Vec::new());
        let t = Instant::now();
        let seeds: Vec<u64> = (0..a.seeds).collect();
        let mc = ntk_empirical::monte_carlo_kernel(
            &seeds,
            1,
            |seed| -> Result<HostArray> {
                let k = net_w
                    .empirical(seed, &device, precision, &x1, x2.as_ref(), max_memory)
                    .with_context(|| format!("width {w}, seed {seed}"))?;
                errors
                    .lock()
                    .expect("not poisoned")
                    .push(relative_frobenius_error(&k.data, &exact.data));
                Ok(k)
            },
            &mut |done, _| {
                bar.set_message(format!("width {w}"));
                if done > 0 {
                    bar.inc(1);
                }
            },
        )?;
        let secs = t.elapsed().as_secs_f64();
        let errors = errors.into_inner().expect("not poisoned");
        empirical.push(ErrorPoint::new(w, errors, secs / a.seeds as f64));
        monte_carlo.push(ErrorPoint::new(
            w,
            vec![relative_frobenius_error(&mc.mean.data, &exact.data)],
            secs,
        ));
    }
    bar.finish_and_clear();
    let slope = log_log_slope(
        &empirical
            .iter()
            .map(|p| (p.size as f64, p.mean))
            .collect::<Vec<_>>(),
    );
    let mut feature_reports: Vec<FeatureErrors> = Vec::new();
    for (method, dim) in &features {
        let mut errors = Vec::new();
        let mut secs = 0.0;
        for seed in 0..a.seeds {
            let t = Instant::now();
            let map = base.features(&options(method, *dim, seed)?, max_memory)?;
            // x1's features are held while x2's are made.
            let held = (2 * 8 * x1.len() * dim) as u64;
            let f1 = map.apply_within(&x1, max_memory)?.ntk;
            let f2 = match &x2 {
                Some(x2) => map.apply_within(x2, max_memory.saturating_sub(held))?.ntk,
                None => f1.clone(),
            };
            secs += t.elapsed().as_secs_f64();
            let k = feature_kernel(&f1, &f2)?;
            errors.push(relative_frobenius_error(&k.data, &exact_base.data));
        }
        let point = ErrorPoint::new(*dim, errors, secs / a.seeds as f64);
        match feature_reports.iter_mut().find(|f| &f.method == method) {
            Some(f) => f.points.push(point),
            None => feature_reports.push(FeatureErrors {
                method: method.clone(),
                points: vec![point],
                slope: None,
            }),
        }
    }
    for f in feature_reports.iter_mut() {
        let pts: Vec<(f64, f64)> = f.points.iter().map(|p| (p.size as f64, p.mean)).collect();
        f.slope = log_log_slope(&pts);
    }
    let report = CompareReport {
        n1: x1.len(),
        n2: x2.as_ref().map_or(x1.len(), |x| x.len()),
        parameterization: parameterization.name().to_string(),
        dtype: precision.name().to_string(),
        exact_seconds,
        empirical,
        monte_carlo,
        slope,
        features: feature_reports,
    };
    print_report(&report);
    write_atomic(&a.out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    eprintln!("wrote {}", a.out.display());
    if let Some(p) = &a.plot {
        write_png(p, &panels(&report), (640, 480))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn print_report(r: &CompareReport) {
    println!(
        "exact infinite-width NTK [{}, {}]: {:.3} s ({} parameterization)",
        r.n1, r.n2, r.exact_seconds, r.parameterization
    );
    println!("| width | mean rel. error | std | mean × √width | s per kernel |");
    println!("|---|---|---|---|---|");
    for p in &r.empirical {
        println!(
            "| {} | {:.4} | {:.4} | {:.3} | {:.3} |",
            p.size,
            p.mean,
            p.std,
            p.mean * (p.size as f64).sqrt(),
            p.seconds
        );
    }
    for p in &r.monte_carlo {
        println!(
            "width {}: the mean of the {} kernels (Monte Carlo) is {:.4} off",
            p.size,
            r.empirical.first().map_or(0, |e| e.errors.len()),
            p.mean
        );
    }
    match r.slope {
        Some(s) => {
            println!("log-log slope of the error against the width: {s:.3} (1/√width: −0.5)")
        }
        None => println!("log-log slope: needs two widths"),
    }
    if !r.features.is_empty() {
        println!("| features | m | mean rel. error | std | s per map |");
        println!("|---|---|---|---|---|");
        for f in &r.features {
            for p in &f.points {
                println!(
                    "| {} | {} | {:.4} | {:.4} | {:.3} |",
                    f.method, p.size, p.mean, p.std, p.seconds
                );
            }
        }
        for f in &r.features {
            if let Some(s) = f.slope {
                println!(
                    "{}: log-log slope of the error against the dimension: {s:.3} (1/√m: −0.5)",
                    f.method
                );
            }
        }
    }
}

/// The plot (log-log axes, ticks in widths and dimensions): the empirical error against
/// the width with ± one standard deviation over the seeds, the Monte Carlo mean, a `1/√w`
/// reference through the first point, and each feature map's error against its dimension
/// (± one standard deviation over the maps' seeds).
pub fn panels(r: &CompareReport) -> Vec<Panel> {
    let mut series = vec![Series {
        label: match r.slope {
            Some(s) => format!("empirical NTK (slope {s:.2}) ± std"),
            None => "empirical NTK ± std".into(),
        },
        points: r
            .empirical
            .iter()
            .map(|p| (p.size as f64, p.mean))
            .collect(),
        y_err: r.empirical.iter().map(|p| p.std).collect(),
    }];
    if !r.monte_carlo.is_empty() && r.monte_carlo.len() == r.empirical.len() {
        let k = r.empirical[0].errors.len();
        series.push(Series {
            label: format!("mean of {k} (Monte Carlo)"),
            points: r
                .monte_carlo
                .iter()
                .map(|p| (p.size as f64, p.mean))
                .collect(),
            y_err: Vec::new(),
        });
    }
    if let Some(first) = r.empirical.first() {
        let c = first.mean * (first.size as f64).sqrt();
        series.push(Series {
            label: "c/√width".into(),
            points: r
                .empirical
                .iter()
                .map(|p| (p.size as f64, c / (p.size as f64).sqrt()))
                .collect(),
            y_err: Vec::new(),
        });
    }
    let mut out = vec![Panel {
        title: format!("finite vs infinite width (n = {})", r.n1),
        x_label: "width".into(),
        y_label: "rel. Frobenius error".into(),
        series,
        log_x: true,
        log_y: true,
    }];
    if !r.features.is_empty() {
        out.push(Panel {
            title: "sketched features vs exact NTK".into(),
            x_label: "feature dimension m".into(),
            y_label: "rel. Frobenius error".into(),
            series: r
                .features
                .iter()
                .map(|f| Series {
                    label: match f.slope {
                        Some(s) => format!("{} (slope {s:.2}) ± std", f.method),
                        None => format!("{} ± std", f.method),
                    },
                    points: f.points.iter().map(|p| (p.size as f64, p.mean)).collect(),
                    y_err: f.points.iter().map(|p| p.std).collect(),
                })
                .collect(),
            log_x: true,
            log_y: true,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_power_law_is_its_exponent() {
        let pts: Vec<(f64, f64)> = [64.0, 256.0, 1024.0]
            .iter()
            .map(|&w: &f64| (w, 3.0 * w.powf(-0.5)))
            .collect();
        assert!((log_log_slope(&pts).unwrap() + 0.5).abs() < 1e-12);
        assert!(log_log_slope(&pts[..1]).is_none());
    }

    #[test]
    fn hidden_widths_change_and_the_readout_stays() {
        let spec = NetworkSpec::from_json(
            r#"{"input_shape":[1,4,4],"layers":[{"type":"conv2d","channels":3,"kernel":[3,3]},{"type":"relu"},
            {"type":"flatten"},{"type":"dense","width":5},{"type":"relu"},{"type":"dense","width":2}]}"#,
        )
        .unwrap();
        let s = with_hidden_width(&spec, 7);
        let widths: Vec<usize> = s
            .layers
            .iter()
            .filter_map(|l| match l {
                LayerSpec::Dense(d) => Some(d.width),
                LayerSpec::Conv2d(c) => Some(c.channels),
                _ => None,
            })
            .collect();
        assert_eq!(widths, vec![7, 7, 2]);
        // An all-conv net keeps its last conv (the readout).
        let conv = NetworkSpec::from_json(
            r#"{"input_shape":[1,4,4],"layers":[{"type":"conv2d","channels":3,"kernel":[3,3]},{"type":"relu"},
            {"type":"conv2d","channels":2,"kernel":[3,3]},{"type":"global_avg_pool"}]}"#,
        )
        .unwrap();
        let s = with_hidden_width(&conv, 9);
        let ch: Vec<usize> = s
            .layers
            .iter()
            .filter_map(|l| match l {
                LayerSpec::Conv2d(c) => Some(c.channels),
                _ => None,
            })
            .collect();
        assert_eq!(ch, vec![9, 2]);
        assert!(parse_widths("64,x").is_err() && parse_widths("0").is_err());
    }
}
