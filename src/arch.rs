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
    /// An ONNX file, parsed once: its own weights (the seed does not change them), or a
    /// state dict.
    Onnx {
        path: PathBuf,
        model: Box<graph::onnx::OnnxModel>,
    },
    /// An ONNX file parsed at each build: what a folder of many candidates holds, so that
    /// their weights are not all in memory at once.
    OnnxFile(PathBuf),
}

/// A built network of either kind (a clone shares the parameter tensors).
#[derive(Clone)]
pub enum Built {
    Sequential(Network),
    Graph(GraphNetwork),
}

impl Architecture {
    /// Reads a sequential spec, a graph spec or (by its extension) an ONNX file.
    pub fn from_file(path: &Path) -> Result<Architecture> {
        if graph::is_onnx(path) {
            let model = graph::onnx::load(path)?;
            return Ok(Architecture::Onnx {
                path: path.to_path_buf(),
                model: Box::new(model),
            });
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        if graph::spec::is_graph_spec(&text) {
            let s = graph::spec::parse(&text, &path.display().to_string())?;
            return Ok(Architecture::Graph(Box::new(s)));
        }
        Ok(Architecture::Sequential(NetworkSpec::from_file(path)?))
    }

    /// As [`Architecture::from_file`], but an ONNX file is only checked here and parsed
    /// again when built (score folders: one candidate's weights in memory at a time).
    pub fn candidate(path: &Path) -> Result<Architecture> {
        if graph::is_onnx(path) {
            graph::onnx::load(path)?;
            return Ok(Architecture::OnnxFile(path.to_path_buf()));
        }
        Architecture::from_file(path)
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
            Architecture::Onnx { model, .. } => Some(model.graph.n_params()),
            Architecture::OnnxFile(_) => None,
        }
    }

    /// Whether `seed` changes the parameters (not for an ONNX file: it carries them).
    pub fn seeded(&self) -> bool {
        !matches!(self, Architecture::Onnx { .. } | Architecture::OnnxFile(_))
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
            (Architecture::OnnxFile(p), w) => {
                Built::Graph(graph::load_onnx(p, w, device, precision)?)
            }
            (Architecture::Onnx { model, .. }, w) => {
                let mut m = (**model).clone();
                if let Some(w) = w {
                    graph::apply_state_dict(&mut m.graph, &mut m.params, &m.buffers, w)?;
                }
                Built::Graph(GraphNetwork::from_params(
                    m.graph, &m.params, device, precision,
                )?)
            }
        })
    }
}

impl Architecture {
    /// The network with the weights of a state dict in memory (graph specs and ONNX
    /// files; every parameter by name, BatchNorm statistics when present).
    pub fn build_with_state(
        &self,
        state: &graph::StateDict,
        device: &burn::tensor::Device,
        precision: Precision,
    ) -> Result<Built> {
        let source = Path::new("<state dict>");
        Ok(match self {
            Architecture::Sequential(_) => anyhow::bail!(
                "a state dict in memory is taken by graph specs and ONNX files; \
                 give a sequential spec's weights as a safetensors file"
            ),
            Architecture::Graph(s) => Built::Graph(graph::from_spec_with_state(
                (**s).clone(),
                state,
                device,
                precision,
            )?),
            Architecture::Onnx { .. } | Architecture::OnnxFile(_) => {
                let mut m = match self {
                    Architecture::Onnx { model, .. } => (**model).clone(),
                    Architecture::OnnxFile(p) => graph::onnx::load(p)?,
                    _ => unreachable!("matched above"),
                };
                graph::apply_state_dict_map(
                    &mut m.graph,
                    &mut m.params,
                    &m.buffers,
                    state,
                    source,
                )?;
                Built::Graph(GraphNetwork::from_params(
                    m.graph, &m.params, device, precision,
                )?)
            }
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
        Ok(self.empirical(x, None, &opts, &mut |_, _| {})?.kernel)
    }

    /// The empirical kernel between `x1` and `x2` (`None`: `x2 = x1`) under `options`;
    /// `progress(done, total)` after each tile.
    pub fn empirical(
        &self,
        x1: &HostArray,
        x2: Option<&HostArray>,
        options: &EmpiricalOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<ntk_empirical::KernelOutput> {
        Ok(match self {
            Built::Sequential(n) => empirical_kernel(n, x1, x2, options, progress)?,
            Built::Graph(g) => {
                ntk_empirical::graph::empirical_kernel(g, x1, x2, options, progress)?
            }
        })
    }

    /// The rows per tile the engine plans for the kernel of `x` against itself under
    /// `options` (its memory bound): `x.len()` when it fits in one tile.
    pub fn tile_rows(&self, x: &HostArray, options: &EmpiricalOptions) -> Result<usize> {
        Ok(match self {
            Built::Sequential(n) => ntk_empirical::plan(n, x, None, options)?.tile_rows,
            Built::Graph(g) => ntk_empirical::graph::plan(g, x, None, options)?.tile_rows,
        })
    }

    /// Restricts the kernel to the parameters whose names match `include` and not
    /// `exclude` (graph networks; sequential specs have no parameter names and refuse).
    pub fn select(
        &mut self,
        include: Option<&regex::Regex>,
        exclude: Option<&regex::Regex>,
    ) -> Result<()> {
        match self {
            Built::Graph(g) => Ok(g.select(include, exclude)?),
            Built::Sequential(_) if include.is_none() && exclude.is_none() => Ok(()),
            Built::Sequential(_) => anyhow::bail!(
                "params/frozen select parameters of graph networks (graph specs, ONNX files) only"
            ),
        }
    }

    /// The outputs `[N, O]` on `x`.
    pub fn forward(&self, x: &HostArray) -> Result<HostArray> {
        Ok(match self {
            Built::Sequential(n) => n.forward_host(x)?,
            Built::Graph(g) => g.forward_host(x)?,
        })
    }

    /// Parameter names (graph networks), or `{i}.weight`/`{i}.bias` of sequential specs.
    pub fn param_names(&self) -> Vec<String> {
        match self {
            Built::Sequential(n) => n.params().into_keys().collect(),
            Built::Graph(g) => g.graph.params.iter().map(|p| p.name.clone()).collect(),
        }
    }
}
