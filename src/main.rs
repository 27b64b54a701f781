//! `ntk`: Neural Tangent Kernels of real networks, from the command line.
//!
//! Run without arguments for a demo on the bundled digits data; `ntk --help` for the rest.

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use ntk::empirical::{ConvStrategy, EmpiricalOptions, KernelKind, Method, empirical_kernel};
use ntk::nets::array::{read_inputs, write_npy};
use ntk::nets::graph::GraphNetwork;
use ntk::nets::{
    BackendKind, FloatKind, HostArray, Network, NetworkConfig, NetworkSpec, Precision,
};
use std::path::PathBuf;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ntk",
    version,
    about = "Neural Tangent Kernels of real networks (finite width) on burn",
    long_about = "Neural Tangent Kernels of real networks on burn.\n\n\
        Networks come from a JSON spec (shared/spec/network-spec.md: dense, conv2d, relu, erf, \
        tanh, gelu, identity, flatten, global_avg_pool, avg_pool2d; ntk or standard \
        parameterization), a graph spec (docs/graph-spec.md) or an ONNX file exported from \
        PyTorch, with PyTorch-layout safetensors weights or a random seed. Inputs are .npy \
        arrays [N, *input_shape]; kernels and outputs are written as float64 .npy unless \
        --out-dtype f32, sketched features (ntk features) as float32 unless --out-dtype f64.\n\n\
        Without a subcommand, runs a demo on the bundled 8x8 digits data."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Network outputs f(x) [N, O] for inputs x.
    Forward(ForwardArgs),
    /// Empirical (finite-width) NTK or NNGP between x1 and x2.
    Empirical(EmpiricalArgs),
    /// Exact infinite-width NTK or NNGP of one output (neural-tangents stax conventions) between x1 and x2.
    Infinite(ntk::infinite_cmd::InfiniteArgs),
    /// Sketched features of the infinite-width NTK/NNGP (NTKRF, NTKSketch, CNTKSketch): [N, m] with <phi(x), phi(y)> ~ the kernel; streamed in batches.
    Features(ntk::features_cmd::FeaturesArgs),
    /// Finite vs infinite width: empirical NTKs of random networks of growing width (and sketched features of growing dimension) against the exact NTK; JSON report and PNG plot.
    Compare(ntk::compare_cmd::CompareArgs),
    /// Ridge regression on sketched NTK features vs exact kernel ridge regression with the infinite-width NTK, on a bundled dataset.
    Regress(ntk::features_cmd::RegressArgs),
    /// Runs the demo (the default when no subcommand is given).
    Demo(CommonArgs),
    /// Assembles the tiles of a `ntk empirical --tiles DIR` run into one .npy (streamed:
    /// the kernel need not fit in memory).
    Merge(MergeArgs),
    /// Times the empirical-NTK methods on the perf cases (f32, full kernel) and prints a table.
    Bench(BenchArgs),
    /// Kernel statistics: spectrum (condition number, effective rank, max learning rate), kernel-target alignment, kernel distance and velocity.
    Analyze(ntk::analysis_cmd::AnalyzeArgs),
    /// Closed-form gradient-flow (MSE) predictions from train-train and test-train kernels, as neural-tangents' predict.gradient_descent_mse.
    Predict(ntk::analysis_cmd::PredictArgs),
    /// Trains a network (SGD or Adam, MSE or cross-entropy) and writes safetensors checkpoints and metrics.jsonl.
    Train(ntk::train_cmd::TrainArgs),
    /// Training-free architecture scores from the NTK at initialisation (TE-NAS condition number, NASI trace norm, label alignment, pNTK spectrum), written as CSV.
    Score(ntk::train_cmd::ScoreArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Folder holding the perf case folders (spec.json, x1.npy, x2.npy).
    #[arg(long, default_value = "../shared/cases")]
    cases_dir: PathBuf,
    /// Comma-separated case names.
    #[arg(long, default_value = "perf-mlp,perf-cnn,perf-mlp-deep")]
    cases: String,
    /// Comma-separated methods: jacobian, ntk-vp, structured, auto, and the structured
    /// variants structured-nosym (x2 treated as distinct) and structured-tensor (burn
    /// tensor ops for the contraction, the GPU path).
    #[arg(long, default_value = "structured,auto")]
    methods: String,
    /// CPU backend: flex or ndarray.
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Timed repetitions of the fast methods (median reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// neural-tangents timings (perf-anchor.json from shared/oracle/perf_anchor.py) for ratios.
    #[arg(long)]
    anchor: Option<PathBuf>,
}

#[derive(Args)]
struct MergeArgs {
    /// The tile folder.
    dir: PathBuf,
    /// Output .npy.
    #[arg(long)]
    out: PathBuf,
    /// dtype of the written file: f64 (default) or f32.
    #[arg(long, default_value = "f64")]
    out_dtype: String,
}

#[derive(Args, Clone)]
struct CommonArgs {
    /// Compute backend: flex (default, fastest on CPU), ndarray, or wgpu (needs the `wgpu` build feature; f32 only).
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Float precision of the computation: f32 or f64.
    #[arg(long, default_value = "f64")]
    dtype: String,
}

#[derive(Args)]
struct NetArgs {
    /// The network: a sequential spec (JSON with `layers`), a graph spec (JSON with `nodes`,
    /// docs/graph-spec.md) or an ONNX file exported from PyTorch (`.onnx`). Export with
    /// `torch.onnx.export(model.eval(), x, "m.onnx", do_constant_folding=False,
    /// dynamic_axes={...: {0: "batch"}})` (dynamo exporter: `optimize=False`): constant
    /// folding folds BatchNorm into the convolutions, which changes the NTK and cannot be
    /// detected afterwards.
    #[arg(long)]
    spec: PathBuf,
    /// Safetensors weights: {i}.weight/{i}.bias for sequential specs; for graph specs and
    /// ONNX files a PyTorch state_dict (names as model.state_dict(); integer entries such as
    /// num_batches_tracked are ignored). Without it: the ONNX file's own weights, or random
    /// from --seed.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Seed of the random initialisation (ignored with --weights).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct ForwardArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Inputs .npy [N, *input_shape], float32 or float64.
    #[arg(long)]
    x: PathBuf,
    /// Output .npy [N, O].
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
    /// dtype of the written file: f64 (default) or f32.
    #[arg(long, default_value = "f64")]
    out_dtype: String,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("output").required(true).multiple(true).args(["out", "tiles"])))]
struct EmpiricalArgs {
    #[command(flatten)]
    net: NetArgs,
    /// First inputs .npy [N1, *input_shape].
    #[arg(long)]
    x1: PathBuf,
    /// Second inputs .npy [N2, *input_shape]; omitted means x2 = x1 (symmetry is used).
    #[arg(long)]
    x2: Option<PathBuf>,
    /// jacobian (reference, autodiff), structured (fast), ntk-vp (NTK-vector products) or auto (cost model).
    #[arg(long, default_value = "auto")]
    method: String,
    /// full [N1,N2,O,O] | trace [N1,N2] (MEAN over outputs, as neural-tangents) | diagonal [N1,N2,O] | sum-of-logits [N1,N2] | nngp [N1,N2]
    #[arg(long, default_value = "full")]
    kernel: String,
    /// Conv contraction of the structured method: auto, im2col or pixel-pairs.
    #[arg(long, default_value = "auto")]
    conv: String,
    /// Memory bound of the whole run, e.g. 512MiB, 2GiB: the kernel held for --out (f64)
    /// plus the tiles in flight, checked before any work. With --tiles the kernel is never
    /// held, and the bound is the tiles' alone.
    #[arg(long, default_value = "2GiB")]
    max_memory: String,
    /// Rows of x1 and x2 per tile (default: the largest that fits --max-memory).
    #[arg(long)]
    tile_rows: Option<usize>,
    /// Resumable run: write each finished tile (atomically) into this folder with a
    /// manifest; a rerun skips finished tiles; `ntk merge DIR --out K.npy` assembles.
    #[arg(long)]
    tiles: Option<PathBuf>,
    /// With --tiles: compute only share i of n (0-based, e.g. 0/3), for job arrays.
    #[arg(long)]
    tile: Option<String>,
    /// Output .npy (with --tiles and no --tile: the merged kernel, optional).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Graph networks: count only the parameters whose names match this regex (e.g.
    /// 'weight$' for TE-NAS, '^fc\.' for the last layer).
    #[arg(long)]
    params: Option<String>,
    /// Graph networks: leave out the parameters whose names match this regex (frozen).
    #[arg(long)]
    frozen: Option<String>,
    /// Graph networks: also write each parameter group's contribution Θ_l (a group is a
    /// module: `layer1.0.conv1.weight` and `.bias` form `layer1.0.conv1`), stacked
    /// [G, *kernel shape] in group order, to this .npy (Σ_l Θ_l is the --out kernel), and
    /// the group names with their parameters beside it (same path, .json).
    #[arg(long, value_name = "FILE.npy")]
    per_layer: Option<PathBuf>,
    /// Monte Carlo: write the mean kernel over K random initialisations (seeds --seed …
    /// --seed+K−1; neural-tangents' monte_carlo_kernel_fn), computed a few networks at a
    /// time (each in memory only while its kernel is computed).
    #[arg(long, value_name = "K")]
    monte_carlo: Option<usize>,
    /// With --monte-carlo K ≥ 2: write the per-entry standard error of the mean here.
    #[arg(long)]
    std_error: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
    /// dtype of the written file: f64 (default) or f32.
    #[arg(long, default_value = "f64")]
    out_dtype: String,
}

fn out_kind(s: &str) -> Result<FloatKind> {
    match s {
        "f64" | "float64" => Ok(FloatKind::F64),
        "f32" | "float32" => Ok(FloatKind::F32),
        other => bail!("--out-dtype: unknown dtype {other:?} (f32 or f64)"),
    }
}

fn device(common: &CommonArgs) -> Result<(burn::tensor::Device, Precision)> {
    let precision = Precision::parse(&common.dtype).context("--dtype")?;
    let backend = BackendKind::parse(&common.backend).context("--backend")?;
    Ok((backend.device(precision)?, precision))
}

fn load_network(args: &NetArgs, common: &CommonArgs) -> Result<(Network, burn::tensor::Device)> {
    let (device, precision) = device(common)?;
    let spec = NetworkSpec::from_file(&args.spec)?;
    let net = match &args.weights {
        Some(w) => Network::load(spec, w, &device, precision)?,
        None => NetworkConfig::new(spec)
            .with_seed(args.seed)
            .with_precision(precision)
            .init(&device)?,
    };
    Ok((net, device))
}

/// The progress bar of a tiled kernel computation.
/// The progress callback of a tiled run: `(done, total)` tiles onto `bar`.
fn tile_progress(bar: &ProgressBar) -> impl FnMut(usize, usize) + '_ {
    |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }
}

fn tile_bar(kind: KernelKind) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} tiles, {elapsed} elapsed, eta {eta}",
        )
        .expect("valid template"),
    );
    bar.set_message(format!("{} kernel", kind.name()));
    bar
}

/// Whether `--spec` names a graph network (an ONNX file or a graph spec).
fn is_graph(path: &std::path::Path) -> Result<bool> {
    if ntk::nets::graph::is_onnx(path) {
        return Ok(true);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--spec {}", path.display()))?;
    Ok(ntk::nets::graph::spec::is_graph_spec(&text))
}

fn load_graph(args: &NetArgs, common: &CommonArgs) -> Result<GraphNetwork> {
    let (device, precision) = device(common)?;
    Ok(ntk::nets::graph::load(
        &args.spec,
        args.weights.as_deref(),
        args.seed,
        &device,
        precision,
    )?)
}

use ntk::train_cmd::regex_arg;

fn forward(a: ForwardArgs) -> Result<()> {
    ntk::outputs::check_outputs(
        &[("--out", Some(&a.out))],
        &[Some(&a.net.spec), a.net.weights.as_deref(), Some(&a.x)],
    )?;
    let kind = out_kind(&a.out_dtype)?;
    let f = if is_graph(&a.net.spec)? {
        let net = load_graph(&a.net, &a.common)?;
        let x = read_inputs(&a.x, net.input_shape())?;
        net.forward_host(&x)?
    } else {
        let (net, _) = load_network(&a.net, &a.common)?;
        let x = read_inputs(&a.x, net.input_shape())?;
        net.forward_host(&x)?
    };
    if let Some((i, v)) = f.first_non_finite() {
        bail!(
            "the network output is non-finite ({v} at flat index {i}): it overflows on these inputs"
        );
    }
    write_npy(&a.out, &f, kind)?;
    eprintln!("wrote {} {:?}", a.out.display(), f.shape);
    Ok(())
}

fn empirical(a: EmpiricalArgs) -> Result<()> {
    // The group names go beside the per-layer kernels.
    let per_layer_names = a.per_layer.as_ref().map(|p| p.with_extension("json"));
    ntk::outputs::check_outputs(
        &[
            ("--out", a.out.as_deref()),
            ("--std-error", a.std_error.as_deref()),
            ("--per-layer", a.per_layer.as_deref()),
            (
                "--per-layer (its group names, .json)",
                per_layer_names.as_deref(),
            ),
        ],
        &[
            Some(&a.net.spec),
            a.net.weights.as_deref(),
            Some(&a.x1),
            a.x2.as_deref(),
        ],
    )?;
    let kind_out = out_kind(&a.out_dtype)?;
    if a.per_layer.is_some() {
        if a.tiles.is_some() || a.monte_carlo.is_some() {
            bail!("--per-layer is not available with --tiles or --monte-carlo");
        }
        if a.out.is_none() {
            bail!("--per-layer needs --out K.npy (the sum of the per-layer kernels)");
        }
    }
    let mut options = EmpiricalOptions {
        method: Method::parse(&a.method)?,
        kind: KernelKind::parse(&a.kernel)?,
        conv: match a.conv.as_str() {
            "auto" => ConvStrategy::Auto,
            "im2col" => ConvStrategy::Im2col,
            "pixel-pairs" => ConvStrategy::PixelPairs,
            other => bail!("--conv: unknown strategy {other:?} (auto, im2col, pixel-pairs)"),
        },
        max_memory: ntk::infinite_cmd::parse_bytes(&a.max_memory)?,
        tile_rows: a.tile_rows,
        tensor_contraction: false,
        cancel: Default::default(),
    };
    if a.tile.is_some() && a.tiles.is_none() {
        bail!("--tile i/n needs --tiles DIR (the folder the shares write into)");
    }
    if a.tiles.is_none() && a.out.is_none() {
        bail!("--out K.npy is required (or --tiles DIR for a resumable run)");
    }
    let share = a
        .tile
        .as_deref()
        .map(ntk::empirical::tiles::parse_share)
        .transpose()?;
    if share.is_some() && a.out.is_some() {
        bail!(
            "--out with --tile: a share does not hold the whole kernel; run `ntk merge DIR --out K.npy` after all shares"
        );
    }
    let (include, exclude) = (
        regex_arg("--params", &a.params)?,
        regex_arg("--frozen", &a.frozen)?,
    );
    if let Some(k) = a.monte_carlo {
        return monte_carlo(
            &a,
            k,
            &options,
            include.as_ref(),
            exclude.as_ref(),
            kind_out,
        );
    }
    if a.std_error.is_some() {
        bail!("--std-error is the standard error of a Monte Carlo mean: it needs --monte-carlo K");
    }
    if is_graph(&a.net.spec)? {
        let mut net = load_graph(&a.net, &a.common)?;
        net.select(include.as_ref(), exclude.as_ref())?;
        // Per layer: G kernels held beside their sum.
        let copies = match &a.per_layer {
            Some(_) => ntk::empirical::graph::per_layer::ParamGroups::by_module(&net).len() + 1,
            None => 1,
        };
        let (x1, x2) = kernel_inputs(&a, net.input_shape(), net.n_outputs(), &mut options, copies)?;
        let bar = tile_bar(options.kind);
        let t0 = Instant::now();
        if let Some(dir) = &a.tiles {
            return run_tiles(&net, (&x1, x2.as_ref()), &options, dir, share, &a, &bar);
        }
        let out_path = a.out.as_ref().expect("checked above");
        if let (Some(path), Some(names)) = (&a.per_layer, &per_layer_names) {
            let out = ntk::empirical::graph::per_layer::per_layer_kernel(
                &net,
                &x1,
                x2.as_ref(),
                &options,
                &mut tile_progress(&bar),
            )?;
            bar.finish_and_clear();
            let record = serde_json::json!({
                "groups": out.groups.names,
                "parameters": out.groups.members,
                "shape": out.kernels.shape,
            });
            ntk::nets::array::write_atomic(
                names,
                serde_json::to_string_pretty(&record)?.as_bytes(),
            )?;
            write_npy(path, &out.kernels, kind_out)?;
            write_npy(out_path, &out.total(), kind_out)?;
            eprintln!(
                "wrote {} {:?} ({} groups of {} parameters; names in {}) and their sum {} ({} tile(s) of {} rows, {:.3} s)",
                path.display(),
                out.kernels.shape,
                out.groups.len(),
                net.selected_names().len(),
                names.display(),
                out_path.display(),
                out.tiles,
                out.tile_rows,
                t0.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        let out = ntk::empirical::graph::empirical_kernel(
            &net,
            &x1,
            x2.as_ref(),
            &options,
            &mut tile_progress(&bar),
        )?;
        bar.finish_and_clear();
        write_npy(out_path, &out.kernel, kind_out)?;
        eprintln!(
            "wrote {} {:?} ({} method, {} of {} parameters, {} tile(s) of {} rows, {:.3} s)",
            out_path.display(),
            out.kernel.shape,
            out.method.name(),
            net.selected_names().len(),
            net.graph.params.len(),
            out.tiles,
            out.tile_rows,
            t0.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    if include.is_some() || exclude.is_some() {
        bail!(
            "--params/--frozen select parameters of graph networks (graph specs, ONNX files) only"
        );
    }
    if a.per_layer.is_some() {
        bail!(
            "--per-layer is available for graph networks (graph specs, ONNX files); a sequential \
             spec is a chain of nodes: write it as a graph spec (docs/graph-spec.md)"
        );
    }
    let (net, _) = load_network(&a.net, &a.common)?;
    let (x1, x2) = kernel_inputs(&a, net.input_shape(), net.n_outputs(), &mut options, 1)?;
    let bar = tile_bar(options.kind);
    let t0 = Instant::now();
    if let Some(dir) = &a.tiles {
        return run_tiles(&net, (&x1, x2.as_ref()), &options, dir, share, &a, &bar);
    }
    let out_path = a.out.as_ref().expect("checked above");
    let t_kernel = Instant::now();
    let out = empirical_kernel(&net, &x1, x2.as_ref(), &options, &mut tile_progress(&bar))?;
    let kernel_seconds = t_kernel.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let symmetric = x2
        .as_ref()
        .is_none_or(|x2| x2.shape == x1.shape && x2.data == x1.data);
    if net.dtype() == burn::tensor::DType::F32 && symmetric {
        if let Some(w) =
            f32_condition_warning(&out.kernel, options.kind, net.n_outputs(), kernel_seconds)
        {
            bar.suspend(|| eprintln!("warning: {w}"));
        }
    }
    write_npy(out_path, &out.kernel, kind_out)?;
    eprintln!(
        "wrote {} {:?} ({} method, {} tile(s) of {} rows, {:.3} s)",
        out_path.display(),
        out.kernel.shape,
        out.method.name(),
        out.tiles,
        out.tile_rows,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `ntk empirical --tiles DIR`: the tiles of `share` not yet in `dir`, then (with
/// `--out`) the merged kernel.
fn run_tiles(
    net: &impl ntk::empirical::tiles::Tiled,
    (x1, x2): (&HostArray, Option<&HostArray>),
    options: &EmpiricalOptions,
    dir: &std::path::Path,
    share: Option<(usize, usize)>,
    a: &EmpiricalArgs,
    bar: &ProgressBar,
) -> Result<()> {
    let t0 = Instant::now();
    let summary =
        ntk::empirical::tiles::run(net, x1, x2, options, dir, share, &mut tile_progress(&bar))?;
    bar.finish_and_clear();
    eprintln!(
        "{}: {} tile(s) computed, {} already finished, {} in this share, {} in all ({:.3} s)",
        dir.display(),
        summary.computed,
        summary.skipped,
        summary.in_share,
        summary.total,
        t0.elapsed().as_secs_f64()
    );
    if let Some(out) = &a.out {
        ntk::empirical::tiles::merge(dir, out, out_kind(&a.out_dtype)?)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// `ntk empirical --monte-carlo K`: the mean kernel over K initialisations and (with
/// `--std-error`) its per-entry standard error.
fn monte_carlo(
    a: &EmpiricalArgs,
    k: usize,
    options: &EmpiricalOptions,
    include: Option<&regex::Regex>,
    exclude: Option<&regex::Regex>,
    kind_out: FloatKind,
) -> Result<()> {
    if k == 0 {
        bail!("--monte-carlo: K must be at least 1");
    }
    if a.net.weights.is_some() {
        bail!("--monte-carlo draws K random initialisations: it does not take --weights");
    }
    if a.tiles.is_some() {
        bail!("--monte-carlo holds the mean kernel in memory: it does not take --tiles");
    }
    if a.std_error.is_some() && k < 2 {
        bail!(
            "--std-error needs --monte-carlo K ≥ 2 (a standard error from one sample is undefined)"
        );
    }
    let arch = ntk::arch::Architecture::from_file(&a.net.spec)?;
    if !arch.seeded() {
        bail!(
            "--monte-carlo: an ONNX file carries its weights, so every initialisation would be \
             the same; write the architecture as a graph spec (docs/graph-spec.md) to draw \
             random ones"
        );
    }
    let (device, precision) = device(&a.common)?;
    let mut first = arch.build(a.net.seed, None, &device, precision)?;
    first.select(include, exclude)?;
    let (x1, x2) = kernel_inputs(
        a,
        &first.input_shape(),
        first.n_outputs(),
        &mut options.clone(),
        1,
    )?;
    let n2 = x2.as_ref().map_or(x1.len(), |x| x.len());
    // Kernels in flight: one per worker, plus the running mean and sum of squares.
    let per = x1.len() as u128 * n2 as u128 * options.kind.per_pair(first.n_outputs()) as u128 * 8;
    let fit = (options.max_memory as u128 / per.max(1))
        .saturating_sub(2)
        .max(1) as usize;
    let parallel = rayon::current_num_threads().min(k).min(fit).max(1);
    // The workers share --max-memory: each plans its tiles within its part, after the
    // kernels held (one per worker, the mean and the sum of squares).
    let held = (parallel as u128 + 2) * per;
    if held > options.max_memory as u128 {
        bail!(
            "--monte-carlo: the running mean, the sum of squares and one kernel per worker \
             need {held} bytes, more than --max-memory {} allows: raise --max-memory, use \
             --kernel trace, or fewer samples",
            options.max_memory
        );
    }
    let mut worker_options = options.clone();
    worker_options.max_memory =
        ((options.max_memory as u128).saturating_sub(held) / parallel as u128) as u64;
    let options = &worker_options;
    drop(first);
    let seeds: Vec<u64> = (0..k as u64).map(|i| a.net.seed.wrapping_add(i)).collect();
    let bar = ProgressBar::new(k as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "monte carlo [{bar:30}] {pos}/{len} initialisations, {elapsed} elapsed, eta {eta}",
        )
        .expect("valid template"),
    );
    let t0 = Instant::now();
    let mc = ntk::empirical::monte_carlo_kernel(
        &seeds,
        parallel,
        |seed| -> Result<ntk::nets::HostArray> {
            let mut net = arch.build(seed, None, &device, precision)?;
            net.select(include, exclude)?;
            match net.empirical(&x1, x2.as_ref(), options, &mut |_, _| {}) {
                Ok(k) => Ok(k.kernel),
                // The bound in the engine's message is this worker's share: say so.
                Err(e) => match e.downcast_ref::<ntk::empirical::EmpiricalError>() {
                    Some(ntk::empirical::EmpiricalError::Memory { bound, needed }) => bail!(
                        "--max-memory: each of the {parallel} Monte Carlo worker(s) gets \
                         {bound} bytes beside the kernels held, and one tile needs {needed}: \
                         raise --max-memory"
                    ),
                    _ => Err(e),
                },
            }
        },
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    let out = a.out.as_ref().expect("checked by the caller");
    write_npy(out, &mc.mean, kind_out)?;
    let mut note = String::new();
    if let (Some(path), Some(se)) = (&a.std_error, &mc.std_error) {
        write_npy(path, se, kind_out)?;
        let scale = mc.mean.data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = se.data.iter().fold(0.0f64, |m, v| m.max(*v));
        note = format!(
            "; standard error in {} (largest {:.2e} of the largest entry)",
            path.display(),
            worst / scale.max(f64::MIN_POSITIVE)
        );
    }
    eprintln!(
        "wrote {} {:?}: mean {} kernel over {} initialisations (seeds {}..={}), {:.3} s{note}",
        out.display(),
        mc.mean.shape,
        options.kind.name(),
        mc.samples,
        seeds[0],
        seeds[seeds.len() - 1],
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reads `--x1` and `--x2` for a network of `input_shape`, and (unless `--tiles`, which
/// never holds the kernel) checks that the kernel fits ([`check_kernel_fits`]); a single
/// run's tiles then get what the kernel leaves of `--max-memory` (a Monte Carlo run
/// counts its kernels itself).
fn kernel_inputs(
    a: &EmpiricalArgs,
    input_shape: &[usize],
    outputs: usize,
    options: &mut EmpiricalOptions,
    copies: usize,
) -> Result<(ntk::nets::HostArray, Option<ntk::nets::HostArray>)> {
    let x1 = read_inputs(&a.x1, input_shape)?;
    let x2 =
        a.x2.as_ref()
            .map(|p| read_inputs(p, input_shape))
            .transpose()?;
    if a.tiles.is_none() {
        let n2 = x2.as_ref().map_or(x1.len(), |x| x.len());
        let kernel = check_kernel_fits(
            options,
            (x1.len(), n2, outputs),
            copies,
            a.monte_carlo.is_none(),
        )?;
        if a.monte_carlo.is_none() {
            options.max_memory -= kernel;
        }
    }
    Ok((x1, x2))
}

/// The least working memory a run gets beside the kernel it holds: the process reserve
/// and room for small tiles.
const LEAST_BESIDE_KERNEL: u64 = 2 * ntk::empirical::engine::PROCESS_RESERVE;

/// Refuses, before any work, a kernel that would not fit in memory, and returns its bytes:
/// the whole kernel is held as f64 (`N1·N2·per_pair·8` bytes, `copies` times: per-layer
/// parts and their sum). `--max-memory` bounds the
/// whole process (with `counted`, the kernel counts against it beside the tiles'
/// working memory); the kernel must also fit in the memory the OS (or the cgroup) says is
/// available. The way out is named: `--tiles DIR` never holds the kernel, `--kernel
/// trace` is O² times smaller, a larger `--max-memory` where the machine has it.
fn check_kernel_fits(
    options: &EmpiricalOptions,
    (n1, n2, o): (usize, usize, usize),
    copies: usize,
    counted: bool,
) -> Result<u64> {
    let kernel = n1 as u128 * n2 as u128 * options.kind.per_pair(o) as u128 * 8 * copies as u128;
    let what = format!(
        "the {} kernel [{n1}, {n2}{}]{} takes {} as f64",
        options.kind.name(),
        match options.kind {
            KernelKind::Full => format!(", {o}, {o}"),
            KernelKind::Diagonal => format!(", {o}"),
            _ => String::new(),
        },
        if copies > 1 {
            format!(" with its {} per-layer parts", copies - 1)
        } else {
            String::new()
        },
        gib(kernel)
    );
    let ways = "use --tiles DIR (a resumable run that writes tiles and never holds the kernel; \
                `ntk merge` streams them into one file), --kernel trace (O² times smaller), or \
                fewer samples";
    // The tiles' working memory adapts to what is left (a ceiling, not a need): count the
    // process reserve and room for small tiles beside the kernel.
    let needed = kernel + LEAST_BESIDE_KERNEL as u128;
    let available = ntk::nets::memory::available_memory();
    if let Some(available) = available
        && needed > available as u128
    {
        bail!(
            "{what}, but only {} of memory are available: {ways}",
            gib(available as u128)
        );
    }
    if counted && needed > options.max_memory as u128 {
        bail!(
            "{what}, more than --max-memory {} leaves beside the tiles' working memory \
             (--max-memory bounds the whole process, the kernel included): raise \
             --max-memory to at least {}{}, or {ways}",
            gib(options.max_memory as u128),
            gib(needed).replace(' ', ""),
            match available {
                Some(a) => format!(" (this machine has {} available)", gib(a as u128)),
                None => String::new(),
            },
        );
    }
    Ok(kernel as u64)
}

/// Bytes as KiB, MiB or GiB for messages (rounded up).
fn gib(b: u128) -> String {
    ntk_infinite::features::budget::size(b.min(u64::MAX as u128) as u64)
}

/// Seconds per `m³` of the conditioning check ([`f32_condition_warning`]: a Cholesky
/// factorisation of `m × m`, `m³/3` flops), measured here with faer on 2 cores (m = 1280:
/// 33 ms, power iteration and copies included) and rounded up.
const CHECK_SECONDS_PER_CUBE: f64 = 1.7e-11;

/// For an f32 kernel Θ(x, x): a warning when eigenvalues fall below `λmax·1e-6`. f32
/// entries carry a relative error of about 1e-6 (a few ulps of 6e-8 accumulated over the
/// sums), so such eigen-directions are rounding noise; anything that inverts the kernel
/// (regression, predictions) then needs f64. The check (power iteration, then a Cholesky
/// factorisation of `K − λmax·1e-6·I`: [`ntk::analysis::spectrum::has_eigenvalue_below`])
/// runs only when its estimated cost is at most 10 % of the kernel's `kernel_seconds`, so it
/// never dominates a run; NNGP kernels (rank ≤ O by construction) and diagonal kernels are
/// not checked. `ntk analyze` gives the whole spectrum.
fn f32_condition_warning(
    k: &ntk::nets::HostArray,
    kind: KernelKind,
    o: usize,
    kernel_seconds: f64,
) -> Option<String> {
    let n = k.shape[0];
    let m = if kind == KernelKind::Full { n * o } else { n };
    let cost = (m as f64).powi(3) * CHECK_SECONDS_PER_CUBE;
    let skip = matches!(kind, KernelKind::Nngp | KernelKind::Diagonal)
        || m < 2
        || cost > 0.1 * kernel_seconds;
    if ntk::empirical::profiling() {
        eprintln!(
            "[profile] f32 conditioning check of {m} rows: estimated {:.1} ms, kernel {:.1} ms, {}",
            cost * 1e3,
            kernel_seconds * 1e3,
            if skip { "skipped" } else { "run" }
        );
    }
    if skip {
        return None;
    }
    let t0 = Instant::now();
    let mat: Vec<f64> = match kind {
        KernelKind::Full => {
            let mut v = vec![0.0; m * m];
            for a in 0..n {
                for b in 0..n {
                    for p in 0..o {
                        for q in 0..o {
                            v[(a * o + p) * m + b * o + q] = k.data[((a * n + b) * o + p) * o + q];
                        }
                    }
                }
            }
            v
        }
        _ => k.data.clone(),
    };
    let below = ntk::analysis::spectrum::has_eigenvalue_below(&mat, m, 1e-6).ok()?;
    if ntk::empirical::profiling() {
        eprintln!(
            "[profile] f32 conditioning check: {:.1} ms",
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
    below.then(|| {
        format!(
            "the f32 kernel is ill-conditioned: it has eigenvalues below λmax·1e-6, the level of f32 rounding, so their directions are noise; use --dtype f64 if you invert or regress with this kernel (`ntk analyze` shows the spectrum)"
        )
    })
}

fn bench(b: BenchArgs) -> Result<()> {
    let cases: Vec<String> = b.cases.split(',').map(|s| s.trim().to_string()).collect();
    let methods = b
        .methods
        .split(',')
        .map(|m| ntk::bench::Variant::parse(m.trim()))
        .collect::<Result<Vec<_>>>()?;
    if b.repeats == 0 {
        bail!("--repeats must be positive");
    }
    ntk::bench::run(
        &b.cases_dir,
        &cases,
        &methods,
        BackendKind::parse(&b.backend)?,
        b.repeats,
        b.anchor.as_deref(),
    )
}

fn main() {
    // `ntk analyze … | head` closes the pipe early: end quietly as other Unix tools do
    // (Rust ignores SIGPIPE, and println! would then panic with exit code 101).
    // SAFETY: restoring a signal's default disposition before any thread starts.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // SIGINT/SIGTERM/SIGHUP: remove the temporary files being written (a final .npy, a
    // merge) so an interrupted run leaves only whole outputs, then exit 130.
    let _ = ctrlc::set_handler(|| {
        ntk::nets::array::remove_temporaries();
        eprintln!("interrupted: partial outputs removed");
        std::process::exit(130);
    });
    // Negative values (`--t -1`) reach the value parsers, which say what is wrong,
    // instead of being taken for unknown flags.
    let command = Cli::command().mut_subcommands(|c| c.allow_negative_numbers(true));
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Some(Command::Forward(a)) => forward(a),
        Some(Command::Empirical(a)) => empirical(a),
        Some(Command::Infinite(a)) => ntk::infinite_cmd::run(&a),
        Some(Command::Features(a)) => ntk::features_cmd::run_features(&a),
        Some(Command::Compare(a)) => ntk::compare_cmd::run(&a),
        Some(Command::Regress(a)) => ntk::features_cmd::run_regress(&a),
        Some(Command::Demo(c)) => ntk::demo::run(&c.backend, &c.dtype),
        Some(Command::Bench(b)) => bench(b),
        Some(Command::Merge(m)) => out_kind(&m.out_dtype).and_then(|k| {
            ntk::outputs::check_outputs(&[("--out", Some(&m.out))], &[])?;
            ntk::empirical::tiles::merge(&m.dir, &m.out, k)?;
            eprintln!("wrote {}", m.out.display());
            Ok(())
        }),
        Some(Command::Analyze(a)) => ntk::analysis_cmd::run_analyze(a),
        Some(Command::Predict(a)) => ntk::analysis_cmd::run_predict(a),
        Some(Command::Train(a)) => ntk::train_cmd::run_train(a),
        Some(Command::Score(a)) => ntk::train_cmd::run_score(a),
        None => ntk::demo::run("flex", "f64"),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
