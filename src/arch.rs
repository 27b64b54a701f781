//! Architectures as the commands that rebuild a network many times accept them (`score`:
//! one network per seed; `analyze --checkpoints`: one per checkpoint): a sequential spec, a
//! graph spec (JSON with `nodes`) or an ONNX file.

use anyhow::{Context, Result};
use ntk_empirical::{EmpiricalOptions, KernelKind, empirical_kernel};
use ntk_nets::graph::{self, GraphNetwork, spec::GraphSpec};
use ntk_nets::{HostArray, Network, NetworkConfig, NetworkSpec, Precision};
use std::path::{Path, PathBuf};

/// A network description.
#[derive(Debug, Clone)]
pub enum Architecture {
    Sequential(NetworkSpec),
    /// A graph spec: random parameters per seed, or a state dict.
    Graph(Box<GraphSpec>),
    /// An ONNX file: its own weights (the seed does not change them), or a state dict.
    Onnx(PathBuf),
}

/// A built network of either kind.
pub enum Built {
    Sequential(Network),
    Graph(GraphNetwork),
}

impl Architecture {
    /// Reads a sequential spec, a graph spec or (by its extension) an ONNX file.
    pub fn from_file(path: &Path) -> Result<Architecture> {
        if graph::is_onnx(path) {
            if !path.is_file() {
                anyhow::bail!("{}: no such ONNX file", path.display());
            }
            return Ok(Architecture::Onnx(path.to_path_buf()));
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        if graph::spec::is_graph_spec(&text) {
            let s = graph::spec::parse(&text, &path.display().to_string())?;
            return Ok(Architecture::Graph(Box::new(s)));
        }
        Ok(Architecture::Sequential(NetworkSpec::from_file(path)?))
    }

    /// A spec given as JSON (a line of a JSONL file): sequential or graph.
    pub fn from_value(v: &serde_json::Value, source: &str) -> Result<Architecture> {
        if v.get("nodes").is_some() {
            let s = graph::spec::parse(&v.to_string(), source)?;
            return Ok(Architecture::Graph(Box::new(s)));
        }
        Ok(Architecture::Sequential(NetworkSpec::from_value(v)?))
    }

    /// Number of parameters, where known without building the network.
    pub fn n_params(&self) -> Option<usize> {
        match self {
            Architecture::Sequential(s) => s.n_params().ok(),
            Architecture::Graph(g) => Some(g.graph.n_params()),
            Architecture::Onnx(_) => None,
        }
    }

    /// Whether `seed` changes the parameters (not for an ONNX file: it carries them).
    pub fn seeded(&self) -> bool {
        !matches!(self, Architecture::Onnx(_))
    }

    /// The network at `seed`, or with the weights of a safetensors file.
    pub fn build(
        &self,
        seed: u64,
        weights: Option<&Path>,
        device: &burn::tensor::Device,
        precision: Precision,
    ) -> Result<Built> {
        Ok(match (self, weights) {
            (Architecture::Sequential(s), None) => Built::Sequential(
                NetworkConfig::new(s.clone())
                    .with_seed(seed)
                    .with_precision(precision)
                    .init(device)?,
            ),
            (Architecture::Sequential(s), Some(w)) => {
                Built::Sequential(Network::load(s.clone(), w, device, precision)?)
            }
            (Architecture::Graph(s), w) => {
                Built::Graph(graph::from_spec((**s).clone(), w, seed, device, precision)?)
            }
            (Architecture::Onnx(p), w) => Built::Graph(graph::load_onnx(p, w, device, precision)?),
        })
    }
}

impl Built {
    /// Shape of one input sample.
    pub fn input_shape(&self) -> Vec<usize> {
        match self {
            Built::Sequential(n) => n.spec.input_shape.clone(),
            Built::Graph(g) => g.input_shape().to_vec(),
        }
    }

    /// Outputs per sample.
    pub fn n_outputs(&self) -> usize {
        match self {
            Built::Sequential(n) => n.n_outputs(),
            Built::Graph(g) => g.n_outputs(),
        }
    }

    /// Number of parameters (all of them).
    pub fn n_params(&self) -> usize {
        match self {
            Built::Sequential(n) => n.spec.n_params().unwrap_or(0),
            Built::Graph(g) => g.graph.n_params(),
        }
    }

    /// The empirical kernel of `kind` on `x` against itself (method `auto`).
    ///
    /// # Shapes
    /// `x: [n, *input_shape]` → `[n, n, per_pair]`
    pub fn kernel(&self, x: &HostArray, kind: KernelKind) -> Result<HostArray> {
        let opts = EmpiricalOptions {
            kind,
            ..Default::default()
        };
        Ok(match self {
            Built::Sequential(n) => empirical_kernel(n, x, None, &opts, &mut |_, _| {})?.kernel,
            Built::Graph(g) => {
                ntk_empirical::graph::empirical_kernel(g, x, None, &opts, &mut |_, _| {})?.kernel
            }
        })
    }
}
