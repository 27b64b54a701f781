//! `ntk`: Neural Tangent Kernels of real networks, from the command line.
//!
//! Run without arguments for a demo on the bundled digits data; `ntk --help` for the rest.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use ntk::empirical::{ConvStrategy, EmpiricalOptions, KernelKind, Method, empirical_kernel};
use ntk::nets::array::{read_inputs, write_npy};
use ntk::nets::{BackendKind, FloatKind, Network, NetworkConfig, NetworkSpec, Precision};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "ntk",
    version,
    about = "Neural Tangent Kernels of real networks (finite width) on burn",
    long_about = "Neural Tangent Kernels of real networks on burn.\n\n\
        Networks come from a JSON spec (shared/spec/network-spec.md: dense, conv2d, relu, erf, \
        tanh, gelu, identity, flatten, global_avg_pool, avg_pool2d; ntk or standard \
        parameterization) with PyTorch-layout safetensors weights or a random seed. Inputs are \
        .npy arrays [N, *input_shape]; outputs are .npy (float64 unless --out-dtype f32).\n\n\
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
    /// Runs the demo (the default when no subcommand is given).
    Demo(CommonArgs),
    /// Times the empirical-NTK methods on the perf cases (f32, full kernel) and prints a table.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Folder holding the perf case folders (spec.json, x1.npy, x2.npy).
    #[arg(long, default_value = "../shared/cases")]
    cases_dir: PathBuf,
    /// Comma-separated case names.
    #[arg(long, default_value = "perf-mlp,perf-cnn,perf-mlp-deep")]
    cases: String,
    /// Comma-separated methods (jacobian, structured, ntk-vp, auto).
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
    /// Network spec (JSON).
    #[arg(long)]
    spec: PathBuf,
    /// PyTorch-layout safetensors weights ({i}.weight, {i}.bias); without it the network is random from --seed.
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
    /// Working-memory bound per tile, e.g. 512MiB, 2GiB (the output array is extra).
    #[arg(long, default_value = "2GiB")]
    max_memory: String,
    /// Output .npy.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
    /// dtype of the written file: f64 (default) or f32.
    #[arg(long, default_value = "f64")]
    out_dtype: String,
}

fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .with_context(|| format!("--max-memory: {s:?} is not a size like 512MiB or 2GiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024f64.powi(4),
        other => bail!("--max-memory: unknown unit {other:?} (use B, KiB, MiB, GiB)"),
    };
    if !(v * mult).is_finite() || v * mult < 1.0 {
        bail!("--max-memory: {s:?} must be a positive size");
    }
    Ok((v * mult) as u64)
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

fn forward(a: ForwardArgs) -> Result<()> {
    let kind = out_kind(&a.out_dtype)?;
    let (net, _) = load_network(&a.net, &a.common)?;
    let x = read_inputs(&a.x, net.input_shape())?;
    let f = net.forward_host(&x)?;
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
    let kind_out = out_kind(&a.out_dtype)?;
    let options = EmpiricalOptions {
        method: Method::parse(&a.method)?,
        kind: KernelKind::parse(&a.kernel)?,
        conv: match a.conv.as_str() {
            "auto" => ConvStrategy::Auto,
            "im2col" => ConvStrategy::Im2col,
            "pixel-pairs" => ConvStrategy::PixelPairs,
            other => bail!("--conv: unknown strategy {other:?} (auto, im2col, pixel-pairs)"),
        },
        max_memory: parse_bytes(&a.max_memory)?,
        tile_rows: None,
    };
    let (net, _) = load_network(&a.net, &a.common)?;
    let x1 = read_inputs(&a.x1, net.input_shape())?;
    let x2 =
        a.x2.as_ref()
            .map(|p| read_inputs(p, net.input_shape()))
            .transpose()?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} tiles, {elapsed} elapsed, eta {eta}",
        )
        .expect("valid template"),
    );
    bar.set_message(format!("{} kernel", options.kind.name()));
    let t0 = Instant::now();
    let out = empirical_kernel(&net, &x1, x2.as_ref(), &options, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    write_npy(&a.out, &out.kernel, kind_out)?;
    eprintln!(
        "wrote {} {:?} ({} method, {} tile(s) of {} rows, {:.3} s)",
        a.out.display(),
        out.kernel.shape,
        out.method.name(),
        out.tiles,
        out.tile_rows,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn bench(b: BenchArgs) -> Result<()> {
    let cases: Vec<String> = b.cases.split(',').map(|s| s.trim().to_string()).collect();
    let methods = b
        .methods
        .split(',')
        .map(|m| Method::parse(m.trim()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
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
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Forward(a)) => forward(a),
        Some(Command::Empirical(a)) => empirical(a),
        Some(Command::Demo(c)) => ntk::demo::run(&c.backend, &c.dtype),
        Some(Command::Bench(b)) => bench(b),
        None => ntk::demo::run("flex", "f64"),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
