"""Neural Tangent Kernels of real networks, computed by a Rust engine on burn.

    import numpy as np, ntk
    x = np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32)
    k = ntk.empirical_ntk(my_torch_module, x)            # [8, 8], trace over outputs
    k_full = ntk.empirical_ntk("model.onnx", x, trace_axes=())   # [8, 8, O, O]

``model`` is a path (a JSON spec, sequential or graph, or an ``.onnx`` file exported
from PyTorch), a spec ``dict``, an :class:`ntk.Network` from :func:`ntk.load`, or a
``torch.nn.Module`` (exported to ONNX in memory; needs torch and onnx). Layouts follow
neural-tangents: ``trace_axes=(-1,)`` gives ``[N1, N2]``, ``trace_axes=()`` gives
``[N1, N2, O, O]``, ``diagonal_axes=(-1,)`` with ``trace_axes=()`` gives ``[N1, N2, O]``.
"""

import json
import os
import shutil
import tempfile
import warnings

import numpy as np

from ._ntk import Network, forward as _forward, load as _load, load_json as _load_json
from ._ntk import empirical_kernel as _empirical_kernel
from ._ntk import score as _score
from ._ntk import infinite_kernel as _infinite_kernel
from ._ntk import features as _features
from ._ntk import per_layer_kernel as _per_layer_kernel
from . import analysis, predict

__all__ = [
    "Network",
    "load",
    "from_torch",
    "forward",
    "empirical_ntk",
    "empirical_nngp",
    "empirical_kernel",
    "sum_of_logits_ntk",
    "score",
    "infinite_kernel",
    "features",
    "per_layer_ntk",
    "analysis",
    "predict",
]

_IMPLEMENTATIONS = {
    0: "auto",
    1: "jacobian",
    2: "ntk-vp",
    3: "structured",
    "auto": "auto",
    "jacobian": "jacobian",
    "jacobian_contraction": "jacobian",
    "structured": "structured",
    "structured_derivatives": "structured",
    "ntk-vp": "ntk-vp",
    "ntk_vp": "ntk-vp",
    "ntk_vector_products": "ntk-vp",
}


def load(path, weights=None, seed=0):
    """A network from a JSON spec (sequential ``layers`` or graph ``nodes``), a spec
    ``dict`` or an ONNX file; ``weights``: a safetensors state dict (PyTorch names),
    else the ONNX file's weights or a random initialisation from ``seed``."""
    w = None if weights is None else os.fspath(weights)
    if isinstance(path, dict):
        return _load_json(json.dumps(path), weights=w, seed=seed)
    return _load(os.fspath(path), weights=w, seed=seed)


def _export_onnx(module, torch, sample):
    folder = tempfile.mkdtemp(prefix="ntk-export-")
    path = os.path.join(folder, "model.onnx")
    try:
        kwargs = dict(
            opset_version=17,
            do_constant_folding=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
        try:
            # TorchScript exporter: keeps BatchNorm unfused with do_constant_folding=False
            # (deprecated since torch 2.9, still the one whose output is checked here).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(module, (sample,), path, dynamo=False, **kwargs)
        except TypeError:  # torch < 2.5 has no `dynamo` argument
            torch.onnx.export(module, (sample,), path, **kwargs)
        except Exception as first:  # a torch without the TorchScript exporter
            try:
                # The dynamo exporter: optimize=False keeps BatchNorm unfused; a batch-1
                # export runs on any N.
                torch.onnx.export(
                    module, (sample,), path, dynamo=True, optimize=False, external_data=False
                )
            except Exception as second:
                raise ValueError(
                    f"exporting the module to ONNX failed: {first}; with the dynamo exporter: {second}"
                ) from second
        return load(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def from_torch(module, input_shape, *, via="auto"):
    """An :class:`ntk.Network` of a ``torch.nn.Module`` at its current weights, on samples
    of ``input_shape`` (no batch axis), evaluated in eval mode (BatchNorm with running
    statistics; the module's mode is restored).

    ``via="fx"``: a ``torch.fx`` trace translated to a graph spec, the state dict handed
    over in memory (milliseconds; :mod:`ntk.torch_spec` lists what it translates);
    ``via="onnx"``: an in-memory ONNX export (any exportable module; a fraction of a
    second); ``"auto"``: fx, else ONNX.
    """
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "a torch.nn.Module needs torch installed (and onnx for modules torch.fx cannot "
            "translate): pip install torch onnx"
        ) from e
    if via not in ("auto", "fx", "onnx"):
        raise ValueError(f"via {via!r}: use 'auto', 'fx' or 'onnx'")
    input_shape = tuple(int(d) for d in input_shape)
    was_training = module.training
    module.eval()
    try:
        reason = None
        if via in ("auto", "fx"):
            from .torch_spec import Untranslatable, module_to_spec

            try:
                spec, state = module_to_spec(module, input_shape)
            except Untranslatable as e:
                if via == "fx":
                    raise
                reason = e
            else:
                return _load_json(
                    json.dumps(spec),
                    state_dict=state,
                    source=f"<torch {type(module).__name__}>",
                )
        sample = torch.zeros((1,) + input_shape, dtype=torch.float32)
        try:
            return _export_onnx(module, torch, sample)
        except Exception as e:
            if reason is not None:
                raise ValueError(f"{e} (and torch.fx: {reason})") from e
            raise
    finally:
        module.train(was_training)


def _torch_to_network(module, x1):
    if x1 is None:
        raise ValueError("a torch module needs inputs to take its input shape from")
    return from_torch(module, np.shape(x1)[1:])


# Networks loaded from a path by the kernel functions, by (path, size, mtime): a loop that
# passes the same file again reuses the parsed file and its built network.
_LOADED = {}


def _load_cached(path):
    p = os.path.abspath(os.fspath(path))
    st = os.stat(p)
    key = (p, st.st_size, st.st_mtime_ns)
    net = _LOADED.get(key)
    if net is None:
        net = load(p)
        if len(_LOADED) >= 16:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = net
    return net


def _network(model, x1):
    if isinstance(model, Network):
        return model
    if isinstance(model, (str, os.PathLike)):
        return _load_cached(model)
    if isinstance(model, dict):
        return load(model)
    if hasattr(model, "named_parameters") and callable(model):
        return _torch_to_network(model, x1)
    raise TypeError(
        f"model must be a path, a spec dict, an ntk.Network or a torch.nn.Module, got {type(model).__name__}"
    )


def _array(name, x):
    if x is None:
        return None
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        if not np.issubdtype(a.dtype, np.number):
            raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
        a = a.astype(np.float64)
    if a.ndim < 2:
        raise ValueError(f"{name} must be a batch [N, ...], got shape {a.shape}")
    return np.ascontiguousarray(a)


def _axes(name, axes):
    if axes is None:
        return ()
    if isinstance(axes, int):
        axes = (axes,)
    out = tuple(sorted(set(int(a) for a in axes)))
    # Outputs are [N, O]: axis 1 is axis -1.
    return tuple(-1 if a == 1 else a for a in out)


def _kind(trace_axes, diagonal_axes):
    t, d = _axes("trace_axes", trace_axes), _axes("diagonal_axes", diagonal_axes)
    table = {((-1,), ()): "trace", ((), ()): "full", ((), (-1,)): "diagonal"}
    if (t, d) not in table:
        raise NotImplementedError(
            f"trace_axes={t}, diagonal_axes={d}: "
            "supported are trace_axes in {(), (-1,)} with diagonal_axes in {(), (-1,)}, "
            "not both on the output axis"
        )
    return table[(t, d)]


def _progress(progress):
    if progress is None or progress is False:
        return None
    if callable(progress):
        return progress
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    bar = {}

    def update(done, total):
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, unit="tile")
        bar["bar"].n = done
        bar["bar"].refresh()
        if done >= total:
            bar["bar"].close()

    return update


def _compute(model, x1, x2, kind, implementation, dtype, params, frozen, max_memory, progress):
    x1 = _array("x1", x1)
    x2 = _array("x2", x2)
    net = _network(model, x1)
    try:
        impl = _IMPLEMENTATIONS[
            implementation.lower() if isinstance(implementation, str) else implementation
        ]
    except (KeyError, AttributeError):
        raise ValueError(
            f"implementation {implementation!r}: use auto, jacobian, structured or ntk-vp "
            "(or neural-tangents' 0-3)"
        ) from None
    if hasattr(dtype, "name"):
        dtype = dtype.name
    dtype = str(np.dtype(dtype)) if not isinstance(dtype, str) else dtype
    return _empirical_kernel(
        net,
        x1,
        x2,
        kind=kind,
        implementation=impl,
        dtype=dtype,
        params=params,
        frozen=frozen,
        max_memory=max_memory,
        progress=_progress(progress),
    )


def empirical_ntk(
    model,
    x1,
    x2=None,
    *,
    trace_axes=(-1,),
    diagonal_axes=(),
    implementation="auto",
    dtype="float32",
    params=None,
    frozen=None,
    max_memory=None,
    progress=False,
):
    """The empirical NTK Θ(x1, x2) = J(x1) J(x2)ᵀ of ``model`` at its weights.

    ``x1``: ``[N1, *input_shape]`` (or ``[N1, numel]``); ``x2``: ``[N2, ...]``, default
    ``x1``. ``trace_axes``/``diagonal_axes`` as in neural-tangents (see the module doc).
    ``implementation``: ``"auto"``, ``"jacobian"``, ``"structured"``, ``"ntk-vp"`` (or
    neural-tangents' ``NtkImplementation`` values 0-3). ``params``/``frozen``: regular
    expressions on parameter names (graph specs and ONNX files). ``max_memory``: bytes of
    working memory (default 2 GiB). ``progress``: ``True`` (a tqdm bar when tqdm is
    installed) or a callable ``(done, total)``. Returns a numpy array in ``dtype``.
    """
    kind = _kind(trace_axes, diagonal_axes)
    return _compute(model, x1, x2, kind, implementation, dtype, params, frozen, max_memory, progress)


def per_layer_ntk(
    model,
    x1,
    x2=None,
    *,
    trace_axes=(-1,),
    diagonal_axes=(),
    dtype="float32",
    params=None,
    frozen=None,
    max_memory=None,
    progress=False,
):
    """Each module's contribution Θ_l = J_l(x1) J_l(x2)ᵀ to the empirical NTK, as a dict
    ``{module name: kernel}`` in parameter order; a module's parameters are those whose
    names share everything up to the last ``.`` (``layer1.0.conv1.weight`` and ``.bias``
    form ``layer1.0.conv1``). The kernels sum to :func:`empirical_ntk` with the same
    arguments, and are computed in the same pass (structured method). PyTorch modules,
    ONNX files and graph specs; the other arguments as :func:`empirical_ntk`."""
    x1 = _array("x1", x1)
    x2 = _array("x2", x2)
    if hasattr(dtype, "name"):
        dtype = dtype.name
    dtype = str(np.dtype(dtype)) if not isinstance(dtype, str) else dtype
    names, stacked = _per_layer_kernel(
        _network(model, x1), x1, x2, kind=_kind(trace_axes, diagonal_axes), dtype=dtype,
        params=params, frozen=frozen, max_memory=max_memory, progress=_progress(progress),
    )
    return dict(zip(names, stacked))


def sum_of_logits_ntk(model, x1, x2=None, **kwargs):
    """Θ summed over both output axes, ``[N1, N2]`` (the pNTK of TE-NAS), normalised by
    the number of outputs O as neural-tangents normalises traces."""
    kw = dict(implementation="auto", dtype="float32", params=None, frozen=None, max_memory=None, progress=False)
    kw.update(kwargs)
    return _compute(model, x1, x2, "sum-of-logits", **kw)


def empirical_nngp(model, x1, x2=None, *, dtype="float32", **kwargs):
    """The empirical NNGP f(x1) f(x2)ᵀ / O, ``[N1, N2]``."""
    kw = dict(implementation="auto", params=None, frozen=None, max_memory=None, progress=False)
    kw.update(kwargs)
    return _compute(model, x1, x2, "nngp", dtype=dtype, **kw)


def empirical_kernel(model, x1, x2=None, get=("nngp", "ntk"), **kwargs):
    """neural-tangents' ``empirical_kernel_fn``: a dict of the kernels named in ``get``
    (``"nngp"``, ``"ntk"``); the other keywords as :func:`empirical_ntk`."""
    if isinstance(get, str):
        get = (get,)
    out = {}
    for g in get:
        if g == "ntk":
            out["ntk"] = empirical_ntk(model, x1, x2, **kwargs)
        elif g == "nngp":
            if _axes("trace_axes", kwargs.get("trace_axes", (-1,))) != (-1,) or _axes(
                "diagonal_axes", kwargs.get("diagonal_axes", ())
            ):
                raise NotImplementedError(
                    "the empirical NNGP is computed traced over the outputs only ([N1, N2]); "
                    "use trace_axes=(-1,), diagonal_axes=()"
                )
            kw = {k: v for k, v in kwargs.items() if k not in ("trace_axes", "diagonal_axes")}
            out["nngp"] = empirical_nngp(model, x1, x2, **kw)
        else:
            raise ValueError(f"get: unknown kernel {g!r} (nngp or ntk)")
    return out


def forward(model, x, dtype="float64"):
    """The outputs ``[N, O]`` of ``model`` on ``x``."""
    x = _array("x", x)
    return _forward(_network(model, x), x, dtype=dtype)


def score(models, x, y=None, *, seeds=1, dtype="float64", names=None, params=None, frozen=None, metrics=None,
          max_memory=None):
    """Training-free architecture scores of each model on ``x`` (as ``ntk score``): TE-NAS
    condition number of the sum-of-logits NTK, NASI trace norm, label alignment (with
    ``y``: class ids ``[n]`` or targets ``[n, c]``), pNTK λmax, λmin and effective rank —
    means over init seeds ``0..seeds`` (ONNX files and torch modules: their own weights,
    one network).

    ``params``/``frozen``: regular expressions on parameter names (graph specs, ONNX
    files, torch modules): the kernels are over the matching ones (TE-NAS: ``"weight"``).
    ``metrics``: the statistics to compute, a subset of ``te_nas_condition``,
    ``pntk_lambda_max``, ``pntk_lambda_min``, ``pntk_effective_rank`` (the sum-of-logits
    kernel) and ``ntk_trace_norm``, ``label_alignment`` (the trace kernel, O times
    dearer; the trace norm alone needs only the diagonal tiles); the others are ``None``.
    Default: all. ``max_memory``: bytes of working memory (default 2 GiB), shared by the
    candidates scored at once (one per core); larger inputs are tiled under it.

    A candidate that fails gives a record with ``error`` set; the others go on. Returns a
    list of dicts (``pandas.DataFrame(records)`` takes it)."""
    x = _array("x", x)
    models = list(models)
    if isinstance(metrics, str):
        metrics = [metrics]
    if names is None:
        names = [getattr(m, "__name__", None) or (os.fspath(m) if isinstance(m, (str, os.PathLike)) else f"model-{i}")
                 for i, m in enumerate(models)]
    nets, ok_names, failed = [], [], {}
    for i, (name, m) in enumerate(zip(names, models)):
        try:
            nets.append(_network(m, x))
            ok_names.append(name)
        except Exception as e:  # a candidate that does not load is a record, not a crash
            failed[i] = f"{type(e).__name__}: {e}"
    scored = iter(_score(nets, ok_names, x, None if y is None else np.asarray(y, dtype=np.float64),
                         seeds=seeds, dtype=dtype, params=params, frozen=frozen,
                         metrics=None if metrics is None else list(metrics), max_memory=max_memory))
    # In the models' order (names may repeat): a failed load, else the next scored row.
    return [{"name": n, "error": failed[i]} if i in failed else next(scored) for i, n in enumerate(names)]


def _spec_network(model, what):
    if not isinstance(model, (Network, str, os.PathLike, dict)) and hasattr(model, "named_parameters"):
        raise ValueError(
            f"{what} need the architecture as a JSON spec (sequential, or a graph spec: "
            "docs/graph-spec.md), not a torch module"
        )
    return _network(model, None)


def _get(get, kernels):
    if isinstance(get, str):
        if get not in kernels:
            raise ValueError(f"get: unknown kernel {get!r} (nngp or ntk)")
        return kernels[get]
    out = {}
    for g in get:
        if g not in kernels:
            raise ValueError(f"get: unknown kernel {g!r} (nngp or ntk)")
        out[g] = kernels[g]
    return out


def infinite_kernel(model, x1, x2=None, get=("nngp", "ntk")):
    """The exact infinite-width kernels, as neural-tangents' stax ``kernel_fn(x1, x2, get)``
    (``diagonal_batch``, one output, float64 ``[N1, N2]``): a dict of those named in
    ``get``, or one array when ``get`` is a string. ``model``: a JSON spec (sequential or
    graph: residual sums, concatenation, layer norm without affine, pooling, self-attention
    with linear scaling), a spec dict or an :class:`ntk.Network` of one."""
    x1 = _array("x1", x1)
    x2 = None if x2 is None else _array("x2", x2)
    nngp, ntk = _infinite_kernel(_spec_network(model, "infinite-width kernels"), x1, x2)
    return _get(get, {"nngp": nngp, "ntk": ntk})


def features(model, x, *, method="ntksketch", dim=4096, seed=0, degree=None, max_memory=None, get="ntk"):
    """Sketched features of the infinite-width kernels (Zandieh et al. 2021): ``[N, dim]``
    arrays with ``φ(x1) φ(x2)ᵀ ≈ NNGP`` and ``ψ(x1) ψ(x2)ᵀ ≈ NTK``; ``method`` ``ntkrf``,
    ``ntksketch`` (vector inputs) or ``cntksketch`` (images); relu networks, sequential
    or graph specs (residual sums, concatenation). The maps are fixed by ``seed`` and the
    spec: features of separate calls are compatible. ``max_memory`` (bytes, default 2 GiB) bounds the random maps, the features and one
    batch's working set, checked before any work. ``get`` as :func:`infinite_kernel`."""
    x = _array("x", x)
    kw = {} if degree is None else {"degree": int(degree)}
    if max_memory is not None:
        kw["max_memory"] = int(max_memory)
    nngp, ntk = _features(_spec_network(model, "feature maps"), x, method=method, dim=int(dim), seed=int(seed), **kw)
    return _get(get, {"nngp": nngp, "ntk": ntk})
