//! `ntk infinite`: the exact infinite-width NNGP or NTK of a spec between two batches.

use crate::nets::array::{read_inputs, write_npy};
use crate::nets::graph::spec::{GraphSpec, is_graph_spec};
use crate::nets::{FloatKind, NetworkSpec};
use anyhow::{Context, Result, bail};
use ntk_infinite::{DEFAULT_TANH_DEGREE, InfiniteOptions, graph_kernels, kernels};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `ntk infinite`.
#[derive(clap::Args, Debug)]
pub struct InfiniteArgs {
    /// Network spec (JSON): sequential (`layers`) or graph (`nodes`, docs/graph-spec.md:
    /// residual sums, channel concat, layer norm without affine, pooling). Only the
    /// architecture is used: the infinite-width kernels do not depend on weights.
    #[arg(long)]
    pub spec: PathBuf,
    /// First inputs .npy [N1, *input_shape], float32 or float64.
    #[arg(long)]
    pub x1: PathBuf,
    /// Second inputs .npy [N2, *input_shape]; omitted means x2 = x1 (symmetry is used).
    #[arg(long)]
    pub x2: Option<PathBuf>,
    /// ntk or nngp: which kernel of ONE output to write, [N1, N2] float64.
    #[arg(long, default_value = "ntk")]
    pub kernel: String,
    /// Output .npy.
    #[arg(long)]
    pub out: PathBuf,
    /// Bound on the estimated working memory, e.g. 512MiB, 2GiB (networks with pooling keep all pixel pairs).
    #[arg(long, default_value = "2GiB")]
    pub max_memory: String,
    /// Gauss-Hermite points per axis for tanh (64 = what neural-tangents' oracle uses).
    #[arg(long, default_value_t = DEFAULT_TANH_DEGREE)]
    pub tanh_degree: usize,
}

/// Parses a size like `512MiB`, `2GiB`, `1000000`.
pub fn parse_bytes(s: &str) -> Result<u64> {
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
    let bytes = v * mult;
    if !bytes.is_finite() || bytes < 1.0 {
        bail!("--max-memory: {s:?} must be a positive size");
    }
    Ok(bytes.min(u64::MAX as f64) as u64)
}

/// Runs `ntk infinite`.
pub fn run(args: &InfiniteArgs) -> Result<()> {
    crate::outputs::check_outputs(
        &[("--out", Some(&args.out))],
        &[Some(&args.spec), Some(&args.x1), args.x2.as_deref()],
    )?;
    let want_ntk = match args.kernel.as_str() {
        "ntk" => true,
        "nngp" => false,
        other => bail!("--kernel: unknown kernel {other:?} (ntk or nngp)"),
    };
    let options = InfiniteOptions {
        max_memory: parse_bytes(&args.max_memory)?,
        tanh_quadrature_degree: args.tanh_degree,
    };
    let t0 = Instant::now();
    let k = match load_architecture(&args.spec)? {
        Kernels::Sequential(spec) => {
            let (x1, x2) = read_pair(args, &spec.input_shape)?;
            kernels(&spec, &x1, x2.as_ref(), &options)?
        }
        Kernels::Graph(spec) => {
            let (x1, x2) = read_pair(args, &spec.nodes[0].shape)?;
            graph_kernels(&spec, &x1, x2.as_ref(), &options)?
        }
    };
    let out = if want_ntk { &k.ntk } else { &k.nngp };
    write_npy(&args.out, out, FloatKind::F64)?;
    eprintln!(
        "wrote {} {:?} (infinite-width {} of one output, {:.3} s)",
        args.out.display(),
        out.shape,
        args.kernel,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A spec the infinite-width recursions take.
pub enum Kernels {
    Sequential(NetworkSpec),
    Graph(Box<GraphSpec>),
}

/// Reads a sequential or graph spec for the infinite-width kernels; ONNX files are
/// refused with the way out (their ops are too low-level to recognise layers by).
pub fn load_architecture(path: &std::path::Path) -> Result<Kernels> {
    if crate::nets::graph::is_onnx(path) {
        bail!(
            "--spec {}: the infinite-width kernels need the architecture as a spec (a graph \
             spec, docs/graph-spec.md), not an ONNX file: its ops are too low-level to \
             recognise layers by",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--spec {}", path.display()))?;
    Ok(if is_graph_spec(&text) {
        Kernels::Graph(Box::new(crate::nets::graph::spec::parse(
            &text,
            &path.display().to_string(),
        )?))
    } else {
        Kernels::Sequential(NetworkSpec::from_file(path)?)
    })
}

fn read_pair(
    args: &InfiniteArgs,
    shape: &[usize],
) -> Result<(crate::nets::HostArray, Option<crate::nets::HostArray>)> {
    let x1 = read_inputs(&args.x1, shape)?;
    let x2 = args
        .x2
        .as_ref()
        .map(|p| read_inputs(p, shape))
        .transpose()?;
    Ok((x1, x2))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }
}
