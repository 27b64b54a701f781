//! `ntk._ntk`: the compiled half of the Python package `ntk` (distribution `ntk-burn`).
//! The Python half (`python/ntk/__init__.py`) gives neural-tangents' vocabulary
//! (`trace_axes`, `diagonal_axes`, `implementation`) and the `torch.nn.Module` path; this
//! half loads networks and computes kernels with the GIL released.
//!
//! Errors become `ValueError` with the CLI's messages; a panic in the engine becomes
//! `RuntimeError` (never `PanicException`).

use anyhow::Context;

/// The allocator of the CLI: it keeps freed pages for reuse, where the system allocator
/// unmaps the large temporaries of a kernel computation and page-faults them afresh on
/// every call (measured on the perf cases: see `benches/python_overhead.py`). Only the
/// engine's own allocations use it; arrays handed to numpy are freed by this library.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use ntk::arch::Architecture;
use ntk_empirical::{EmpiricalOptions, KernelKind, Method};
use ntk_nets::{HostArray, Precision};
use numpy::{IntoPyArray, PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use std::path::PathBuf;

/// A network as the engine sees it: where it came from (an architecture and optional
/// weights) and what it is (input shape, outputs, parameter names). It keeps the network
/// last built (and its precision) for the next call.
#[pyclass(module = "ntk", frozen)]
struct Network {
    arch: Architecture,
    weights: Option<PathBuf>,
    /// Weights handed over in memory (a torch module's state dict).
    state: Option<std::sync::Arc<ntk_nets::graph::StateDict>>,
    seed: u64,
    source: String,
    /// The network last built, and its precision: calls in the same precision reuse it
    /// (a clone shares the parameter tensors) instead of drawing or reading it again.
    built: std::sync::Mutex<Option<(Precision, ntk::arch::Built)>>,
    #[pyo3(get)]
    input_shape: Vec<usize>,
    #[pyo3(get)]
    n_outputs: usize,
    #[pyo3(get)]
    param_names: Vec<String>,
    #[pyo3(get)]
    n_params: usize,
}

#[pymethods]
impl Network {
    fn __repr__(&self) -> String {
        format!(
            "ntk.Network({}, input_shape={:?}, outputs={}, parameters={})",
            self.source, self.input_shape, self.n_outputs, self.n_params
        )
    }
}

fn value_err(e: anyhow::Error) -> PyErr {
    PyValueError::new_err(format!("{e:#}"))
}

fn panic_err(p: Box<dyn std::any::Any + Send>) -> PyErr {
    let msg = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    PyRuntimeError::new_err(format!("internal error in the ntk engine: {msg}"))
}

/// Runs `f` with the GIL released, turning errors into `ValueError` and panics into
/// `RuntimeError`.
fn compute<T: Send>(py: Python<'_>, f: impl FnOnce() -> anyhow::Result<T> + Send) -> PyResult<T> {
    py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)))
        .map_err(panic_err)?
        .map_err(value_err)
}

/// How often a cancellable call looks at Python's signals (Ctrl-C).
const SIGNAL_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// As [`compute`], for long calls that can be cancelled: `f` runs on a thread of rayon's
/// pool (long-lived, so its allocator heap and thread-local buffers are warm: a thread
/// spawned per call cost ~1 ms per call) with a [`Cancel`] flag, while the calling thread
/// (the only one that sees signals) waits with the GIL released and checks Python's
/// signals every 100 ms. On `KeyboardInterrupt` (or an exception from another signal
/// handler) the flag is set, the engine stops at its next check (between tiles,
/// parameters, samples), and the exception is raised.
fn compute_cancellable<T: Send>(
    py: Python<'_>,
    f: impl FnOnce(ntk_empirical::Cancel) -> anyhow::Result<T> + Send,
) -> PyResult<T> {
    let cancel = ntk_empirical::Cancel::new();
    let flag = cancel.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    // Waited on with the GIL released, so shared with that closure: behind a lock.
    let rx = std::sync::Mutex::new(rx);
    let wait = |timeout: Option<std::time::Duration>| {
        let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
        match timeout {
            Some(t) => rx.recv_timeout(t),
            None => rx
                .recv()
                .map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
        }
    };
    // The scope's body runs here (it polls); the job on a pool thread. The scope ends
    // when the job has, so `f` may borrow.
    rayon::in_place_scope(|scope| {
        scope.spawn(move |_| {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(flag)));
            let _ = tx.send(r);
        });
        loop {
            match py.detach(|| wait(Some(SIGNAL_POLL))) {
                Ok(r) => return r.map_err(panic_err)?.map_err(value_err),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(PyRuntimeError::new_err(
                        "internal error in the ntk engine: the worker thread vanished",
                    ));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = py.check_signals() {
                        cancel.cancel();
                        // The worker stops at its next check; its result is dropped.
                        let _ = py.detach(|| wait(None));
                        return Err(e);
                    }
                }
            }
        }
    })
}

fn precision(dtype: &str) -> PyResult<Precision> {
    match dtype {
        "float32" | "f32" => Ok(Precision::F32),
        "float64" | "f64" => Ok(Precision::F64),
        other => Err(PyValueError::new_err(format!(
            "dtype {other:?}: use \"float32\" or \"float64\""
        ))),
    }
}

fn device() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}

impl Network {
    /// The network in `precision`: the cached build, or a new one (then cached).
    fn build(&self, precision: Precision) -> anyhow::Result<ntk::arch::Built> {
        let mut cache = self
            .built
            .lock()
            .map_err(|_| anyhow::anyhow!("the network's cache was poisoned by a panic"))?;
        if let Some((p, b)) = cache.as_ref()
            && *p == precision
        {
            return Ok(b.clone());
        }
        let b = match &self.state {
            Some(st) => self.arch.build_with_state(st, &device(), precision),
            None => self
                .arch
                .build(self.seed, self.weights.as_deref(), &device(), precision),
        }
        .context("building the network")?;
        *cache = Some((precision, b.clone()));
        Ok(b)
    }
}

fn describe(
    py: Python<'_>,
    arch: Architecture,
    weights: Option<PathBuf>,
    state: Option<std::sync::Arc<ntk_nets::graph::StateDict>>,
    seed: u64,
    source: String,
) -> PyResult<Network> {
    let st = state.clone();
    let (arch, info, built) = compute(py, move || {
        let built = match &st {
            Some(st) => arch.build_with_state(st, &device(), Precision::F32)?,
            None => arch.build(seed, weights.as_deref(), &device(), Precision::F32)?,
        };
        let info = (
            built.input_shape(),
            built.n_outputs(),
            built.param_names(),
            built.n_params(),
            weights,
        );
        Ok((arch, info, built))
    })?;
    let (input_shape, n_outputs, param_names, n_params, weights) = info;
    Ok(Network {
        arch,
        weights,
        state,
        seed,
        source,
        built: std::sync::Mutex::new(Some((Precision::F32, built))),
        input_shape,
        n_outputs,
        param_names,
        n_params,
    })
}

/// Loads a network from a file: a JSON spec (sequential `layers` or graph `nodes`) or an
/// ONNX file exported from PyTorch; `weights`: a safetensors state dict (PyTorch names),
/// else the ONNX file's own weights or a random initialisation from `seed`.
#[pyfunction]
#[pyo3(signature = (path, weights=None, seed=0))]
fn load(py: Python<'_>, path: PathBuf, weights: Option<PathBuf>, seed: u64) -> PyResult<Network> {
    let arch = Architecture::from_file(&path).map_err(value_err)?;
    describe(
        py,
        arch,
        weights,
        None,
        seed,
        format!("{:?}", path.display().to_string()),
    )
}

/// Loads a network from the JSON text of a spec (what `json.dumps(spec_dict)` gives);
/// weights from a safetensors file, or `state_dict` (names to float32/float64 arrays, as
/// `{k: v.numpy() for k, v in module.state_dict().items()}`), else random from `seed`.
#[pyfunction]
#[pyo3(signature = (text, weights=None, seed=0, state_dict=None, source=None))]
fn load_json(
    py: Python<'_>,
    text: &str,
    weights: Option<PathBuf>,
    seed: u64,
    state_dict: Option<std::collections::HashMap<String, Bound<'_, PyAny>>>,
    source: Option<String>,
) -> PyResult<Network> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| PyValueError::new_err(format!("the spec is not valid JSON: {e}")))?;
    let source = source.unwrap_or_else(|| "<spec dict>".into());
    let arch = Architecture::from_value(&v, &source).map_err(value_err)?;
    if weights.is_some() && state_dict.is_some() {
        return Err(PyValueError::new_err(
            "give weights (a safetensors file) or state_dict, not both",
        ));
    }
    let state = state_dict
        .map(|d| {
            d.iter()
                .map(|(k, a)| Ok((k.clone(), host(&format!("state_dict[{k:?}]"), a)?)))
                .collect::<PyResult<ntk_nets::graph::StateDict>>()
        })
        .transpose()?
        .map(std::sync::Arc::new);
    describe(py, arch, weights, state, seed, source)
}

/// A float32 or float64 numpy array as a host array (f64).
fn host(name: &str, x: &Bound<'_, PyAny>) -> PyResult<HostArray> {
    if let Ok(a) = x.extract::<PyReadonlyArrayDyn<'_, f64>>() {
        let shape = a.shape().to_vec();
        return Ok(HostArray::new(
            shape,
            a.as_array().iter().copied().collect(),
        ));
    }
    if let Ok(a) = x.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        let shape = a.shape().to_vec();
        return Ok(HostArray::new(
            shape,
            a.as_array().iter().map(|&v| v as f64).collect(),
        ));
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be a float32 or float64 numpy array"
    )))
}

/// A host array as a numpy array that owns its buffer: the f64 buffer itself, or (f32)
/// its narrowing, on rayon's threads with the GIL released.
fn to_numpy<'py>(py: Python<'py>, a: HostArray, f32_out: bool) -> PyResult<Bound<'py, PyAny>> {
    use rayon::prelude::*;
    let shape = a.shape.clone();
    if f32_out {
        let v: Vec<f32> = py.detach(|| a.data.par_iter().map(|&x| x as f32).collect());
        let arr = numpy::ndarray::ArrayD::from_shape_vec(shape, v)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(arr.into_pyarray(py).into_any())
    } else {
        let arr = numpy::ndarray::ArrayD::from_shape_vec(shape, a.data)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let out: Bound<'py, PyArrayDyn<f64>> = arr.into_pyarray(py);
        Ok(out.into_any())
    }
}

fn regex_arg(what: &str, r: Option<&str>) -> PyResult<Option<regex::Regex>> {
    r.map(|r| {
        regex::Regex::new(r)
            .map_err(|e| PyValueError::new_err(format!("{what}: not a regular expression: {e}")))
    })
    .transpose()
}

/// The empirical kernel of `kind` (full, trace, diagonal, sum-of-logits, nngp) between `x1`
/// and `x2` (`None`: x1), by `implementation` (auto, jacobian, structured, ntk-vp), in
/// `dtype`, over the parameters matching `params` and not `frozen`. `progress(done,
/// total)` is called after each tile. Returns neural-tangents' layout.
#[pyfunction]
#[pyo3(signature = (net, x1, x2=None, kind="full", implementation="auto", dtype="float32", params=None, frozen=None, max_memory=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn empirical_kernel<'py>(
    py: Python<'py>,
    net: &Network,
    x1: &Bound<'py, PyAny>,
    x2: Option<&Bound<'py, PyAny>>,
    kind: &str,
    implementation: &str,
    dtype: &str,
    params: Option<&str>,
    frozen: Option<&str>,
    max_memory: Option<u64>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let x1 = host("x1", x1)?;
    let x2 = x2.map(|x| host("x2", x)).transpose()?;
    let precision = precision(dtype)?;
    let kind = KernelKind::parse(kind).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let method = Method::parse(implementation).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let (include, exclude) = (regex_arg("params", params)?, regex_arg("frozen", frozen)?);
    let mut options = EmpiricalOptions {
        method,
        kind,
        ..Default::default()
    };
    if let Some(m) = max_memory {
        options.max_memory = m;
    }
    let k = compute_cancellable(py, move |cancel| {
        options.cancel = cancel;
        let mut built = net.build(precision)?;
        built.select(include.as_ref(), exclude.as_ref())?;
        let x1 = ntk::train::reshape_inputs(&x1, &built.input_shape())?;
        let x2 = x2
            .map(|x| ntk::train::reshape_inputs(&x, &built.input_shape()))
            .transpose()?;
        with_progress(progress.as_ref(), &options.cancel, |report| {
            Ok(built.empirical(&x1, x2.as_ref(), &options, report)?.kernel)
        })
    })?;
    to_numpy(py, k?, precision == Precision::F32)
}

/// Runs `f` with a progress callback that calls `progress(done, total)`; the callback's
/// first exception cancels the computation (through `cancel`) and is returned as the
/// inner error.
fn with_progress<T>(
    progress: Option<&Py<PyAny>>,
    cancel: &ntk_empirical::Cancel,
    f: impl FnOnce(&mut dyn FnMut(usize, usize)) -> anyhow::Result<T>,
) -> anyhow::Result<PyResult<T>> {
    let mut failed: Option<PyErr> = None;
    let mut report = |done: usize, total: usize| {
        if let (Some(cb), None) = (progress, &failed) {
            Python::attach(|py| {
                if let Err(e) = cb.call1(py, (done, total)) {
                    failed = Some(e);
                    cancel.cancel();
                }
            });
        }
    };
    let r = f(&mut report);
    match (r, failed) {
        (_, Some(e)) => Ok(Err(e)),
        (r, None) => Ok(Ok(r?)),
    }
}

/// Each parameter group's (module's) kernel of `kind` between `x1` and `x2` (graph specs
/// and ONNX files; structured method): the group names and the kernels stacked
/// `[G, *kernel shape]`, summing to the whole kernel (see `ntk empirical --per-layer`).
#[pyfunction]
#[pyo3(signature = (net, x1, x2=None, kind="full", dtype="float32", params=None, frozen=None, max_memory=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn per_layer_kernel<'py>(
    py: Python<'py>,
    net: &Network,
    x1: &Bound<'py, PyAny>,
    x2: Option<&Bound<'py, PyAny>>,
    kind: &str,
    dtype: &str,
    params: Option<&str>,
    frozen: Option<&str>,
    max_memory: Option<u64>,
    progress: Option<Py<PyAny>>,
) -> PyResult<(Vec<String>, Bound<'py, PyAny>)> {
    let x1 = host("x1", x1)?;
    let x2 = x2.map(|x| host("x2", x)).transpose()?;
    let precision = precision(dtype)?;
    let kind = KernelKind::parse(kind).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let (include, exclude) = (regex_arg("params", params)?, regex_arg("frozen", frozen)?);
    let mut options = EmpiricalOptions {
        kind,
        ..Default::default()
    };
    if let Some(m) = max_memory {
        options.max_memory = m;
    }
    let out = compute_cancellable(py, move |cancel| {
        options.cancel = cancel;
        let mut built = net.build(precision)?;
        built.select(include.as_ref(), exclude.as_ref())?;
        let ntk::arch::Built::Graph(g) = built else {
            anyhow::bail!(
                "per-layer kernels are for graph networks (PyTorch modules, ONNX files, graph \
                 specs); write a sequential spec as a graph spec (docs/graph-spec.md)"
            );
        };
        let x1 = ntk::train::reshape_inputs(&x1, g.input_shape())?;
        let x2 = x2
            .map(|x| ntk::train::reshape_inputs(&x, g.input_shape()))
            .transpose()?;
        with_progress(progress.as_ref(), &options.cancel, |report| {
            let o = ntk::empirical::graph::per_layer::per_layer_kernel(
                &g,
                &x1,
                x2.as_ref(),
                &options,
                report,
            )?;
            Ok((o.groups.names, o.kernels))
        })
    })?;
    let (names, kernels) = out?;
    Ok((names, to_numpy(py, kernels, precision == Precision::F32)?))
}

/// The network's outputs `[N, O]` on `x`.
#[pyfunction]
#[pyo3(signature = (net, x, dtype="float64"))]
fn forward<'py>(
    py: Python<'py>,
    net: &Network,
    x: &Bound<'py, PyAny>,
    dtype: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let x = host("x", x)?;
    let precision = precision(dtype)?;
    let f = compute(py, move || {
        let built = net.build(precision)?;
        let x = ntk::train::reshape_inputs(&x, &built.input_shape())?;
        built.forward(&x)
    })?;
    to_numpy(py, f, precision == Precision::F32)
}

/// Training-free architecture scores (as `ntk score`) of `nets` named `names` on `x`, with
/// optional labels `y` (class ids `[n]` or targets `[n, c]`), over init seeds `0..seeds`
/// (ONNX files: their own weights). A failing candidate gives a record with `error` set;
/// the others go on. Returns one dict per candidate.
#[pyfunction]
#[pyo3(signature = (nets, names, x, y=None, seeds=1, dtype="float64", params=None, frozen=None, metrics=None, max_memory=None))]
#[allow(clippy::too_many_arguments)]
fn score<'py>(
    py: Python<'py>,
    nets: Vec<PyRef<'py, Network>>,
    names: Vec<String>,
    x: &Bound<'py, PyAny>,
    y: Option<&Bound<'py, PyAny>>,
    seeds: u64,
    dtype: &str,
    params: Option<&str>,
    frozen: Option<&str>,
    metrics: Option<Vec<String>>,
    max_memory: Option<u64>,
) -> PyResult<Vec<Bound<'py, pyo3::types::PyDict>>> {
    use ntk::score::{Candidate, Metrics, ScoreOptions, score_all};
    use ntk::train::Targets;
    if nets.len() != names.len() {
        return Err(PyValueError::new_err("one name per network"));
    }
    if seeds == 0 {
        return Err(PyValueError::new_err("seeds must be at least 1"));
    }
    let x = host("x", x)?;
    let targets = match y {
        None => None,
        Some(y) => {
            let y = host("y", y)?;
            if y.shape.first() != Some(&x.len()) {
                return Err(PyValueError::new_err(format!(
                    "y has {} rows for {} inputs",
                    y.shape.first().unwrap_or(&0),
                    x.len()
                )));
            }
            Some(match ntk::train::class_ids(&y) {
                Some(labels) => {
                    let n_classes = labels.iter().max().map_or(0, |m| m + 1);
                    Targets::Classes { labels, n_classes }
                }
                None if y.shape.len() == 1 => {
                    Targets::Values(HostArray::new(vec![y.shape[0], 1], y.data))
                }
                None => Targets::Values(y),
            })
        }
    };
    let candidates: Vec<Candidate> = nets
        .iter()
        .zip(names)
        .map(|(n, name)| Candidate {
            name,
            spec: Ok(n.arch.clone()),
            state_dict: n.state.clone(),
        })
        .collect();
    let mut options = ScoreOptions {
        params: regex_arg("params", params)?,
        frozen: regex_arg("frozen", frozen)?,
        metrics: match &metrics {
            Some(m) => Metrics::from_names(m).map_err(value_err)?,
            None => Metrics::all(),
        },
        ..ScoreOptions::new(seeds, precision(dtype)?, device())
    };
    if let Some(m) = max_memory {
        options.max_memory = m;
    }
    let rows = compute_cancellable(py, move |cancel| {
        let options = ScoreOptions { cancel, ..options };
        Ok(score_all(
            &candidates,
            &x,
            targets.as_ref(),
            &options,
            &|_| {},
        ))
    })?;
    rows.into_iter()
        .map(|r| {
            let d = pyo3::types::PyDict::new(py);
            d.set_item("name", r.name)?;
            d.set_item("n_params", r.n_params)?;
            d.set_item("seeds", r.seeds)?;
            let ok = r.error.is_none();
            // Not computed (metrics left it out): None.
            let num = |v: f64| (ok && !v.is_nan()).then_some(v);
            d.set_item("te_nas_condition", num(r.te_nas_condition))?;
            d.set_item("ntk_trace_norm", num(r.ntk_trace_norm))?;
            d.set_item("label_alignment", r.label_alignment.filter(|_| ok))?;
            d.set_item("pntk_lambda_max", num(r.pntk_lambda_max))?;
            d.set_item("pntk_lambda_min", num(r.pntk_lambda_min))?;
            d.set_item("pntk_effective_rank", num(r.pntk_effective_rank))?;
            d.set_item("seconds", r.seconds)?;
            d.set_item("error", r.error)?;
            Ok(d)
        })
        .collect()
}

/// The infinite-width kernels need the architecture as a spec (an ONNX file's ops are too
/// low-level to recognise layers by).
fn spec_of<'a>(net: &'a Network, what: &str) -> PyResult<&'a Architecture> {
    match &net.arch {
        Architecture::Sequential(_) | Architecture::Graph(_) => Ok(&net.arch),
        _ => Err(PyValueError::new_err(format!(
            "{what} need the architecture as a JSON spec (sequential, or a graph spec: \
             docs/graph-spec.md), not an ONNX file or a torch module"
        ))),
    }
}

/// The exact infinite-width NNGP and NTK `[N1, N2]` (neural-tangents `stax` conventions,
/// one output) between `x1` and `x2` (`None`: x1), float64.
#[pyfunction]
#[pyo3(signature = (net, x1, x2=None))]
fn infinite_kernel<'py>(
    py: Python<'py>,
    net: &Network,
    x1: &Bound<'py, PyAny>,
    x2: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let arch = spec_of(net, "infinite-width kernels")?;
    let x1 = host("x1", x1)?;
    let x2 = x2.map(|x| host("x2", x)).transpose()?;
    let shape = net.input_shape.clone();
    let k = compute(py, move || {
        let x1 = ntk::train::reshape_inputs(&x1, &shape)?;
        let x2 = x2
            .map(|x| ntk::train::reshape_inputs(&x, &shape))
            .transpose()?;
        let o = ntk_infinite::InfiniteOptions::default();
        Ok(match arch {
            Architecture::Sequential(s) => ntk_infinite::kernels(s, &x1, x2.as_ref(), &o)?,
            Architecture::Graph(g) => ntk_infinite::graph_kernels(g, &x1, x2.as_ref(), &o)?,
            _ => unreachable!("checked by spec_of"),
        })
    })?;
    Ok((to_numpy(py, k.nngp, false)?, to_numpy(py, k.ntk, false)?))
}

/// Sketched features `(φ, ψ)`, each `[N, dim]`, with `φ·φ ≈ NNGP` and `ψ·ψ ≈ NTK` of the
/// infinite-width network (`method`: ntkrf, ntksketch, cntksketch; relu networks,
/// sequential or graph specs), float64. The random maps are fixed by `seed` and the spec,
/// so features of separate calls are compatible. `max_memory` (bytes, default 2 GiB)
/// bounds the map, the features and a batch's working set; checked before any work.
#[pyfunction]
#[pyo3(signature = (net, x, method="ntksketch", dim=4096, seed=0, degree=ntk_infinite::features::DEFAULT_DEGREE, max_memory=None))]
fn features<'py>(
    py: Python<'py>,
    net: &Network,
    x: &Bound<'py, PyAny>,
    method: &str,
    dim: usize,
    seed: u64,
    degree: usize,
    max_memory: Option<u64>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    use ntk_infinite::features::{FeatureMap, FeatureMethod, FeatureOptions, GraphFeatureMap};
    let arch = spec_of(net, "feature maps")?;
    let options = FeatureOptions {
        method: FeatureMethod::parse(method).map_err(|e| PyValueError::new_err(e.to_string()))?,
        dim,
        seed,
        degree,
    };
    let limit = max_memory.unwrap_or(2 << 30);
    let x = host("x", x)?;
    let shape = net.input_shape.clone();
    let f = compute(py, move || {
        let x = ntk::train::reshape_inputs(&x, &shape)?;
        Ok(match arch {
            Architecture::Sequential(s) => {
                FeatureMap::new_within(s, &options, Some(limit))?.apply_within(&x, limit)?
            }
            Architecture::Graph(g) => {
                GraphFeatureMap::new_within(g, &options, Some(limit))?.apply_within(&x, limit)?
            }
            _ => unreachable!("checked by spec_of"),
        })
    })?;
    Ok((to_numpy(py, f.nngp, false)?, to_numpy(py, f.ntk, false)?))
}

/// A float64 matrix `[rows, cols]` from a 2-D array (a 1-D array is one column).
fn matrix_arg(name: &str, x: &Bound<'_, PyAny>) -> PyResult<(Vec<f64>, usize, usize)> {
    let a = host(name, x)?;
    match a.shape.as_slice() {
        [r] => Ok((a.data, *r, 1)),
        [r, c] => Ok((a.data, *r, *c)),
        s => Err(PyValueError::new_err(format!(
            "{name} must be a matrix [rows, cols], got shape {s:?}"
        ))),
    }
}

fn analysis_err(e: ntk_analysis::AnalysisError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// Spectral statistics of a symmetric kernel `[n, n]` (as `ntk analyze --kernel`): a dict
/// with `n`, `trace`, `lambda_max`, `lambda_min`, `condition_number` (inf when
/// `λmin ≤ 0`), `effective_rank_participation`, `effective_rank_entropy`,
/// `max_learning_rate` (`2n/λmax`) and `eigenvalues` (descending).
#[pyfunction]
fn spectrum<'py>(
    py: Python<'py>,
    k: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    let (data, n, c) = matrix_arg("k", k)?;
    if n != c {
        return Err(PyValueError::new_err(format!(
            "k must be square, got [{n}, {c}]"
        )));
    }
    let s = py
        .detach(|| ntk_analysis::spectrum::spectrum(&data, n))
        .map_err(analysis_err)?;
    let d = pyo3::types::PyDict::new(py);
    d.set_item("n", s.n)?;
    d.set_item("trace", s.trace)?;
    d.set_item("lambda_max", s.lambda_max)?;
    d.set_item("lambda_min", s.lambda_min)?;
    d.set_item("condition_number", s.condition_number)?;
    d.set_item(
        "effective_rank_participation",
        s.effective_rank_participation,
    )?;
    d.set_item("effective_rank_entropy", s.effective_rank_entropy)?;
    d.set_item("max_learning_rate", s.max_learning_rate)?;
    d.set_item("eigenvalues", s.eigenvalues.into_pyarray(py))?;
    Ok(d)
}

/// Kernel-target alignment `(raw, centred)` of `k [n, n]` with targets `y [n, c]`
/// (one-hot rows for classes).
#[pyfunction]
fn alignment<'py>(
    py: Python<'py>,
    k: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
) -> PyResult<(f64, f64)> {
    let (kd, n, c) = matrix_arg("k", k)?;
    if n != c {
        return Err(PyValueError::new_err(format!(
            "k must be square, got [{n}, {c}]"
        )));
    }
    let (yd, rows, cols) = matrix_arg("y", y)?;
    if rows != n {
        return Err(PyValueError::new_err(format!(
            "y has {rows} rows for a kernel of {n}"
        )));
    }
    let a = py
        .detach(|| ntk_analysis::alignment::alignment(&kd, n, &yd, cols))
        .map_err(analysis_err)?;
    Ok((a.raw, a.centered))
}

/// `1 − cos(K1, K2)` (Frobenius), the kernel distance of Fort et al. 2020.
#[pyfunction]
fn kernel_distance(k1: &Bound<'_, PyAny>, k2: &Bound<'_, PyAny>) -> PyResult<f64> {
    let a = host("k1", k1)?;
    let b = host("k2", k2)?;
    if a.shape != b.shape {
        return Err(PyValueError::new_err(format!(
            "k1 {:?} and k2 {:?} differ in shape",
            a.shape, b.shape
        )));
    }
    ntk_analysis::distance::kernel_distance(&a.data, &b.data).map_err(analysis_err)
}

/// Gradient flow on MSE in closed form (neural-tangents' `predict.gradient_descent_mse`):
/// the train (and, with `k_test_train`, test) outputs at each of `times`, `[T, n, c]`
/// and `[T, m, c]`.
#[pyfunction]
#[pyo3(signature = (k_train_train, y_train, times, learning_rate=1.0, diag_reg=0.0, fx_train_0=None, k_test_train=None, fx_test_0=None))]
#[allow(clippy::too_many_arguments)]
fn gradient_descent_mse<'py>(
    py: Python<'py>,
    k_train_train: &Bound<'py, PyAny>,
    y_train: &Bound<'py, PyAny>,
    times: Vec<f64>,
    learning_rate: f64,
    diag_reg: f64,
    fx_train_0: Option<&Bound<'py, PyAny>>,
    k_test_train: Option<&Bound<'py, PyAny>>,
    fx_test_0: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)> {
    use ntk_analysis::Matrix;
    use ntk_analysis::predict::{DiagReg, GradientDescentMse, TestSet};
    let (k, n, kc) = matrix_arg("k_train_train", k_train_train)?;
    let (y, yn, c) = matrix_arg("y_train", y_train)?;
    let f0 = fx_train_0
        .map(|f| matrix_arg("fx_train_0", f))
        .transpose()?;
    let kt = k_test_train
        .map(|f| matrix_arg("k_test_train", f))
        .transpose()?;
    let ft = fx_test_0.map(|f| matrix_arg("fx_test_0", f)).transpose()?;
    let m = kt.as_ref().map(|k| k.1);
    let preds = py
        .detach(|| -> ntk_analysis::Result<_> {
            let gd = GradientDescentMse::new(
                Matrix::new("k_train_train", &k, n, kc)?,
                Matrix::new("y_train", &y, yn, c)?,
                learning_rate,
                DiagReg::relative(diag_reg),
            )?;
            let f0 = f0
                .as_ref()
                .map(|(d, r, cc)| Matrix::new("fx_train_0", d, *r, *cc))
                .transpose()?;
            let test = match &kt {
                None => None,
                Some((d, r, cc)) => Some(TestSet {
                    k_test_train: Matrix::new("k_test_train", d, *r, *cc)?,
                    fx_test_0: ft
                        .as_ref()
                        .map(|(d, r, cc)| Matrix::new("fx_test_0", d, *r, *cc))
                        .transpose()?,
                }),
            };
            gd.predict_times(&times, f0, test)
        })
        .map_err(analysis_err)?;
    let t = preds.len();
    let train: Vec<f64> = preds.iter().flat_map(|p| p.train.iter().copied()).collect();
    let train = to_numpy(py, HostArray::new(vec![t, yn, c], train), false)?;
    let test = match m {
        None => None,
        Some(m) => {
            let d: Vec<f64> = preds
                .iter()
                .flat_map(|p| p.test.clone().unwrap_or_default())
                .collect();
            Some(to_numpy(py, HostArray::new(vec![t, m, c], d), false)?)
        }
    };
    Ok((train, test))
}

/// Exact GP posterior (neural-tangents' `predict.gp_inference` with one kernel): mean
/// `K*(K + rI)⁻¹Y` `[m, c]` and, with `k_test_test`, covariance `K** − K*(K + rI)⁻¹K*ᵀ`.
#[pyfunction]
#[pyo3(signature = (k_train_train, y_train, k_test_train, k_test_test=None, diag_reg=0.0))]
fn gp_inference<'py>(
    py: Python<'py>,
    k_train_train: &Bound<'py, PyAny>,
    y_train: &Bound<'py, PyAny>,
    k_test_train: &Bound<'py, PyAny>,
    k_test_test: Option<&Bound<'py, PyAny>>,
    diag_reg: f64,
) -> PyResult<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)> {
    use ntk_analysis::Matrix;
    use ntk_analysis::predict::{DiagReg, GpInference};
    let (k, n, nc) = matrix_arg("k_train_train", k_train_train)?;
    let (y, yn, c) = matrix_arg("y_train", y_train)?;
    let (ks, m, mc) = matrix_arg("k_test_train", k_test_train)?;
    let kss = k_test_test
        .map(|f| matrix_arg("k_test_test", f))
        .transpose()?;
    let g = py
        .detach(|| -> ntk_analysis::Result<_> {
            let gp = GpInference::new(
                Matrix::new("k_train_train", &k, n, nc)?,
                Matrix::new("y_train", &y, yn, c)?,
                DiagReg::relative(diag_reg),
            )?;
            gp.posterior(
                Matrix::new("k_test_train", &ks, m, mc)?,
                kss.as_ref()
                    .map(|(d, r, cc)| Matrix::new("k_test_test", d, *r, *cc))
                    .transpose()?,
            )
        })
        .map_err(analysis_err)?;
    let mean = to_numpy(py, HostArray::new(vec![m, c], g.mean), false)?;
    let cov = g
        .covariance
        .map(|v| to_numpy(py, HostArray::new(vec![m, m], v), false))
        .transpose()?;
    Ok((mean, cov))
}

#[pymodule]
fn _ntk(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(score, m)?)?;
    m.add_class::<Network>()?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(load_json, m)?)?;
    m.add_function(wrap_pyfunction!(empirical_kernel, m)?)?;
    m.add_function(wrap_pyfunction!(forward, m)?)?;
    m.add_function(wrap_pyfunction!(infinite_kernel, m)?)?;
    m.add_function(wrap_pyfunction!(features, m)?)?;
    m.add_function(wrap_pyfunction!(per_layer_kernel, m)?)?;
    m.add_function(wrap_pyfunction!(spectrum, m)?)?;
    m.add_function(wrap_pyfunction!(alignment, m)?)?;
    m.add_function(wrap_pyfunction!(kernel_distance, m)?)?;
    m.add_function(wrap_pyfunction!(gradient_descent_mse, m)?)?;
    m.add_function(wrap_pyfunction!(gp_inference, m)?)?;
    Ok(())
}
