#!/usr/bin/env python3
"""The project's infinite-width oracle for graph specs: neural-tangents `stax` (0.6.5).

Builds, for every node of a graph spec (docs/graph-spec.md), the stax layer with the same
meaning and evaluates the infinite-width kernels through the DAG by calling each layer's
own `kernel_fn` on the `Kernel`s of its inputs -- exactly what `stax.serial`,
`stax.FanOut`, `stax.parallel` and `stax.FanInSum`/`FanInConcat` do when the graph is
written with them (checked on the residual case: `--self-check`). float64 (jax x64).
The input kernel is `stax.Identity()`'s (`diagonal_batch=True`, full spatial
covariances, channel axis last: images are given to stax as NHWC, tokens as [N, T, D]).

node -> stax (parameterization from the spec, `W_std = w_std`, `b_std = b_std` or None
without bias):

  linear           Dense(out_features, W_std, b_std, parameterization)
  conv2d           Conv(out_channels, kernel_size, stride, 'SAME' | 'VALID', ...)
                   (explicit padding p must be what SAME or VALID gives)
  relu, leaky_relu(negative_slope), erf(a, b, c), sigmoid_like, gelu (exact), tanh
                   Relu(), LeakyRelu(a), Erf(a, b, c), Sigmoid_like(), Gelu(approximate=False),
                   ElementwiseNumerical(jnp.tanh, deg=64)
  layer_norm       LayerNorm(axis=-1, eps)  (elementwise_affine must be false)
  add              FanInSum()    concat (channels)  FanInConcat(axis=-1)
  avg_pool2d       AvgPool(window, strides, 'VALID')
  global_avg_pool  GlobalAvgPool()    mean over positions  GlobalAvgPool()
  sum over positions  GlobalSumPool()
  flatten          Flatten()          identity, dropout  Identity()
  global_self_attention
                   GlobalSelfAttention(n_chan_out, n_chan_key, n_chan_val, n_heads,
                   linear_scaling, W_key_std, W_value_std, W_query_std, W_out_std, b_std,
                   attention_mechanism='SOFTMAX' | 'IDENTITY')

Each case also checks the finite-width forward pass against stax's `apply_fn`: the
parameters stax's `init_fn` draws (PRNGKey(seed), one key per node) are written in the
graph spec's layout to forward_weights.safetensors and stax's output on x1 to
expected_forward.npy ([N1, 1]); the layout maps are in `to_spec_params`.

Usage (the venv of ../shared/oracle/setup.sh):

  make_cases.py [--out DIR]                       write the cases below into DIR (default: here)
  make_cases.py kernels --spec S --x1 A [--x2 B] --out DIR
                                                  expected_{nngp,ntk}_analytic.npy for any spec
  make_cases.py --self-check                      per-node wiring == stax combinators

Each case folder: spec.json, x1.npy, x2.npy, expected_nngp_analytic.npy,
expected_ntk_analytic.npy ([N1, N2], one output), meta.json (how stax was built, versions).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TANH_DEG = 64


def setup_jax():
    import jax
    jax.config.update("jax_enable_x64", True)
    # NT 0.6.5 imports neural_tangents.experimental (TensorFlow); not installed here.
    if "neural_tangents.experimental" not in sys.modules:
        sys.modules["neural_tangents.experimental"] = types.ModuleType(
            "neural_tangents.experimental")
    import jax.numpy as jnp
    from neural_tangents import stax
    return jnp, stax


def versions():
    from importlib.metadata import version
    out = {"python": platform.python_version()}
    for p in ("jax", "jaxlib", "neural-tangents", "numpy"):
        out[p] = version(p)
    return out


def _pair(v, default):
    if v is None:
        return (default, default)
    if isinstance(v, int):
        return (v, v)
    return tuple(v)


def stax_layer(node, shapes, parameterization, stax, jnp):
    """(layer, description) for one node; `shapes`: its inputs' sample shapes (NCHW)."""
    t = node["type"]
    bias = node.get("bias", True)
    w_std = node.get("w_std", 1.0)
    b_std = node.get("b_std", 0.0) if bias else None
    if t == "linear":
        d = f"Dense({node['out_features']}, W_std={w_std}, b_std={b_std}, parameterization='{parameterization}')"
        return stax.Dense(node["out_features"], W_std=w_std, b_std=b_std,
                          parameterization=parameterization), d
    if t == "conv2d":
        k = _pair(node["kernel_size"], 1)
        s = _pair(node.get("stride"), 1)
        c, h, w = shapes[0]
        p = node.get("padding", 0)
        if p == "same":
            pad = "SAME"
        elif p == "valid" or _pair(p, 0) == (0, 0):
            pad = "VALID"
        else:
            p = _pair(p, 0)
            # SAME: out = ceil(n / s), pad before = total // 2; must match torch's p, p.
            ok = True
            for n, kk, ss, pp in zip((h, w), k, s, p):
                out_torch = (n + 2 * pp - kk) // ss + 1
                out_same = -(-n // ss)
                total = max((out_same - 1) * ss + kk - n, 0)
                ok &= out_torch == out_same and total // 2 == pp and total - total // 2 == pp
            if not ok:
                raise SystemExit(f"node {node['name']}: padding {p} is neither SAME nor VALID in stax")
            pad = "SAME"
        d = (f"Conv({node['out_channels']}, {k}, {s}, '{pad}', W_std={w_std}, b_std={b_std}, "
             f"parameterization='{parameterization}')")
        return stax.Conv(node["out_channels"], k, s, pad, W_std=w_std, b_std=b_std,
                         parameterization=parameterization), d
    if t == "relu":
        return stax.Relu(), "Relu()"
    if t == "leaky_relu":
        a = node.get("negative_slope", 0.01)
        return stax.LeakyRelu(a), f"LeakyRelu({a})"
    if t == "erf":
        a, b, c = node.get("a", 1.0), node.get("b", 1.0), node.get("c", 0.0)
        return stax.Erf(a, b, c), f"Erf({a}, {b}, {c})"
    if t == "sigmoid_like":
        return stax.Sigmoid_like(), "Sigmoid_like()"
    if t == "gelu":
        assert node.get("approximate", "none") == "none"
        return stax.Gelu(approximate=False), "Gelu(approximate=False)"
    if t == "tanh":
        return (stax.ElementwiseNumerical(jnp.tanh, deg=TANH_DEG),
                f"ElementwiseNumerical(jnp.tanh, deg={TANH_DEG})")
    if t == "layer_norm":
        assert node.get("elementwise_affine", True) is False
        eps = node.get("eps", 1e-5)
        return stax.LayerNorm(axis=-1, eps=eps), f"LayerNorm(axis=-1, eps={eps})"
    if t == "add":
        return stax.FanInSum(), "FanInSum()"
    if t == "concat":
        return stax.FanInConcat(axis=-1), "FanInConcat(axis=-1)"
    if t == "avg_pool2d":
        k = _pair(node["kernel_size"], 1)
        s = _pair(node.get("stride"), k[0]) if node.get("stride") is not None else k
        return stax.AvgPool(k, s, "VALID"), f"AvgPool({k}, {s}, 'VALID')"
    if t in ("global_avg_pool", "mean"):
        return stax.GlobalAvgPool(), "GlobalAvgPool()"
    if t == "sum":
        return stax.GlobalSumPool(), "GlobalSumPool()"
    if t == "flatten":
        return stax.Flatten(), "Flatten()"
    if t in ("identity", "dropout"):
        return stax.Identity(), "Identity()"
    if t == "global_self_attention":
        kw = dict(linear_scaling=node.get("linear_scaling", True),
                  W_key_std=node.get("w_key_std", 1.0),
                  W_value_std=node.get("w_value_std", 1.0),
                  W_query_std=node.get("w_query_std", 1.0),
                  W_out_std=node.get("w_out_std", 1.0),
                  b_std=b_std,
                  attention_mechanism=node.get("attention_mechanism", "softmax").upper())
        args = (node["n_chan_out"], node["n_chan_key"], node["n_chan_val"], node["n_heads"])
        d = f"GlobalSelfAttention{args + tuple(f'{k}={v}' for k, v in kw.items())}"
        return stax.GlobalSelfAttention(*args, **kw), d
    raise SystemExit(f"node {node['name']}: type {t} has no stax layer here")


def to_channels_last(x):
    return np.moveaxis(x, 1, -1) if x.ndim == 4 else x


def to_spec_params(node, params, flattened=None, parameterization="ntk"):
    """stax's parameters of one node in the graph spec's names and layouts; `flattened`:
    (H, W, C) when the node's input is a flattened NHWC image (stax's feature order h, w,
    c; the spec's, from NCHW, is c, h, w)."""
    t, name = node["type"], node["name"]
    out = {}
    if t == "linear":
        W, b = params
        W = np.asarray(W)
        if flattened is not None:
            h, w, c = flattened
            W = W.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
        out[f"{name}.weight"] = W.T  # [in, out] -> [out, in]
        if b is not None:
            out[f"{name}.bias"] = np.asarray(b).reshape(-1)
    elif t == "conv2d":
        W, b = params
        out[f"{name}.weight"] = np.asarray(W).transpose(3, 2, 0, 1)  # HWIO -> OIHW
        if b is not None:
            out[f"{name}.bias"] = np.asarray(b).reshape(-1)
    elif t == "global_self_attention":
        q, k, v, w_out, b, _ = params
        heads, d, n_key = k.shape
        n_val = v.shape[2]
        # stax's attention is NTK-parameterized inside (standard normal weights, scales in
        # the forward pass); the spec's standard parameterization applies its weights as
        # they are, so it gets them multiplied by those scales.
        std = parameterization == "standard"
        sk, sq = node.get("w_key_std", 1.0), node.get("w_query_std", 1.0)
        sv, so = node.get("w_value_std", 1.0), node.get("w_out_std", 1.0)
        if node.get("linear_scaling", True):
            c_k = c_q = (sq * sk / d) ** 0.5
        else:
            c_k, c_q = sk / d ** 0.5, sq / d ** 0.5
        c_v, c_o = sv / d ** 0.5, so / (heads * n_val) ** 0.5
        c_b = node.get("b_std", 0.0)
        if not std:
            c_k = c_q = c_v = c_o = c_b = 1.0
        # [H, D, C] -> [D, H*C] (head h owns columns h*C .. (h+1)*C).
        cols = lambda m: np.asarray(m).transpose(1, 0, 2).reshape(m.shape[1], -1)
        out[f"{name}.key_weight"] = c_k * cols(k)
        if q is not None:
            out[f"{name}.query_weight"] = c_q * cols(q)
        out[f"{name}.value_weight"] = c_v * cols(v)
        # stax's rows are v*H + h; ours h*n_val + v.
        w_out = np.asarray(w_out)
        out[f"{name}.out_weight"] = c_o * (w_out.reshape(n_val, heads, -1).transpose(1, 0, 2)
                                           .reshape(heads * n_val, -1))
        if b is not None:
            out[f"{name}.bias"] = c_b * np.asarray(b).reshape(-1)
    return out


def write_safetensors(path, tensors):
    """float64 tensors in the safetensors format (8-byte header length, JSON, data)."""
    header, blobs, offset = {}, [], 0
    for key in sorted(tensors):
        a = np.ascontiguousarray(tensors[key], dtype="<f8")
        header[key] = {"dtype": "F64", "shape": list(a.shape),
                       "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def stax_forward(spec, x, seed):
    """stax's finite-width output on x ([N, 1]) with parameters from init_fn, and those
    parameters in the spec's layout."""
    import jax
    jnp, stax = setup_jax()
    param = spec.get("parameterization", "standard")
    a = jnp.asarray(to_channels_last(x), dtype=jnp.float64)
    acts = {"input": a}
    shapes = {"input": tuple(spec["input_shape"])}
    weights = {}
    flat = {}  # node -> (H, W, C) of the NHWC image it flattened
    key = jax.random.PRNGKey(seed)
    last = "input"
    for node in spec["nodes"]:
        ins = node.get("inputs", [last])
        ins = [ins] if isinstance(ins, str) else ins
        layer, _ = stax_layer(node, [shapes[i] for i in ins], param, stax, jnp)
        init_fn, apply_fn = layer[0], layer[1]
        key, sub = jax.random.split(key)
        if node["type"] in ("add", "concat"):
            _, params = init_fn(sub, [acts[i].shape for i in ins])
            y = apply_fn(params, [acts[i] for i in ins])
        else:
            _, params = init_fn(sub, acts[ins[0]].shape)
            y = apply_fn(params, acts[ins[0]])
        weights.update(to_spec_params(node, params, flat.get(ins[0]), param))
        if node["type"] == "flatten" and acts[ins[0]].ndim == 4:
            flat[node["name"]] = tuple(acts[ins[0]].shape[1:])
        elif node["type"] in ("identity", "dropout") and ins[0] in flat:
            flat[node["name"]] = flat[ins[0]]
        acts[node["name"]] = y
        s = y.shape[1:]
        shapes[node["name"]] = (s[-1],) + tuple(s[:-1]) if len(s) == 3 else tuple(s)
        last = node["name"]
    return np.asarray(acts[spec.get("output", last)]), weights


def stax_kernels(spec, x1, x2):
    """(nngp, ntk, how) of one output: [N1, N2] each, and the stax layer of each node."""
    jnp, stax = setup_jax()
    param = spec.get("parameterization", "standard")
    nodes = spec["nodes"]
    names = ["input"]
    shapes = {"input": tuple(spec["input_shape"])}
    a1 = jnp.asarray(to_channels_last(x1), dtype=jnp.float64)
    a2 = jnp.asarray(to_channels_last(x2), dtype=jnp.float64)
    kernels = {"input": stax.Identity()[2](a1, a2, get=None)}
    how = {}
    last = "input"
    for node in nodes:
        ins = node.get("inputs", [last])
        ins = [ins] if isinstance(ins, str) else ins
        layer, d = stax_layer(node, [shapes[i] for i in ins], param, stax, jnp)
        kfn = layer[2]
        if node["type"] in ("add", "concat"):
            k = kfn([kernels[i] for i in ins])
        else:
            k = kfn(kernels[ins[0]])
        kernels[node["name"]] = k
        # Sample shapes in NCHW as the spec sees them (for conv padding checks).
        s = k.shape1[1:]
        shapes[node["name"]] = (s[-1],) + tuple(s[:-1]) if len(s) == 3 else tuple(s)
        how[node["name"]] = d
        last = node["name"]
    out = kernels[spec.get("output", last)]
    return np.asarray(out.nngp), np.asarray(out.ntk), how


# --------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------
def wrn_block():
    """A WideResNet-style network (stax's WideResnetBlock): conv stem, an identity block, a
    strided block with a 1x1 projection shortcut, relu, global average pool, readout."""
    n = []
    conv = lambda name, c, k, s=1, inp=None, **kw: n.append(
        {"name": name, "type": "conv2d", "out_channels": c, "kernel_size": k, "stride": s,
         "padding": "same", "w_std": 1.4, "b_std": 0.1, **({"inputs": [inp]} if inp else {}), **kw})
    conv("stem", 4, 3)
    n.append({"name": "b1.relu1", "type": "relu"})
    conv("b1.conv1", 4, 3)
    n.append({"name": "b1.relu2", "type": "relu"})
    conv("b1.conv2", 4, 3)
    n.append({"name": "b1.add", "type": "add", "inputs": ["b1.conv2", "stem"]})
    n.append({"name": "b2.relu1", "type": "relu"})
    conv("b2.conv1", 6, 3, 2)
    n.append({"name": "b2.relu2", "type": "relu"})
    conv("b2.conv2", 6, 3)
    conv("b2.shortcut", 6, 1, 2, inp="b2.relu1")
    n.append({"name": "b2.add", "type": "add", "inputs": ["b2.conv2", "b2.shortcut"]})
    n.append({"name": "relu", "type": "relu"})
    n.append({"name": "pool", "type": "global_avg_pool"})
    n.append({"name": "flat", "type": "flatten"})
    n.append({"name": "fc", "type": "linear", "out_features": 1, "w_std": 1.2, "b_std": 0.05})
    return {"input_shape": [2, 6, 6], "parameterization": "ntk", "nodes": n}


def prenorm_mlp_block():
    """Tokens through an embedding, a pre-norm residual GELU-MLP block (LayerNorm without
    affine, as stax's), a final LayerNorm, the mean over tokens and a readout."""
    n = [
        {"name": "embed", "type": "linear", "out_features": 8, "w_std": 1.0, "b_std": 0.2},
        {"name": "block.norm", "type": "layer_norm", "elementwise_affine": False},
        {"name": "block.fc1", "type": "linear", "out_features": 16, "w_std": 1.3, "b_std": 0.1},
        {"name": "block.gelu", "type": "gelu"},
        {"name": "block.fc2", "type": "linear", "out_features": 8, "w_std": 0.9, "b_std": 0.1},
        {"name": "block.add", "type": "add", "inputs": ["block.fc2", "embed"]},
        {"name": "norm", "type": "layer_norm", "elementwise_affine": False, "eps": 1e-6},
        {"name": "pool", "type": "mean", "dim": [1]},
        {"name": "head", "type": "linear", "out_features": 1, "w_std": 1.1, "b_std": 0.0},
    ]
    return {"input_shape": [5, 6], "parameterization": "ntk", "nodes": n}


def concat_mlp():
    """Two branches from the input (relu and leaky relu / erf), concatenated along features
    with unequal widths, then a readout; standard (PyTorch) parameterization."""
    n = [
        {"name": "a.fc1", "type": "linear", "out_features": 12, "w_std": 1.5, "b_std": 0.1,
         "inputs": ["input"]},
        {"name": "a.relu", "type": "relu"},
        {"name": "a.fc2", "type": "linear", "out_features": 10, "w_std": 1.2, "b_std": 0.3},
        {"name": "b.fc1", "type": "linear", "out_features": 7, "w_std": 1.1, "b_std": 0.0,
         "inputs": ["input"]},
        {"name": "b.leaky", "type": "leaky_relu", "negative_slope": 0.2},
        {"name": "b.fc2", "type": "linear", "out_features": 5, "w_std": 0.8},
        {"name": "b.erf", "type": "erf"},
        {"name": "cat", "type": "concat", "dim": 1, "inputs": ["a.fc2", "b.erf"]},
        {"name": "head", "type": "linear", "out_features": 1, "w_std": 1.3, "b_std": 0.2},
    ]
    return {"input_shape": [9], "nodes": n}


def pool_cnn_tanh():
    """Standard parameterization CNN: conv, tanh, avg-pool, a residual sum of two conv
    branches, leaky relu, flatten, readout (no global pooling: same-position pairs)."""
    n = [
        {"name": "conv1", "type": "conv2d", "out_channels": 3, "kernel_size": 3,
         "padding": 1, "w_std": 1.3, "b_std": 0.2},
        {"name": "tanh", "type": "tanh"},
        {"name": "conv2", "type": "conv2d", "out_channels": 3, "kernel_size": 2,
         "w_std": 1.1, "b_std": 0.1},
        {"name": "pool", "type": "avg_pool2d", "kernel_size": 2, "stride": 1},
        {"name": "x.conv", "type": "conv2d", "out_channels": 3, "kernel_size": 1,
         "w_std": 0.7, "inputs": ["tanh"], "bias": False},
        {"name": "x.pool", "type": "avg_pool2d", "kernel_size": 3, "stride": 1},
        {"name": "sum", "type": "add", "inputs": ["pool", "x.pool"]},
        {"name": "leaky", "type": "leaky_relu", "negative_slope": 0.1},
        {"name": "flat", "type": "flatten"},
        {"name": "head", "type": "linear", "out_features": 1, "w_std": 1.0, "b_std": 0.1},
    ]
    return {"input_shape": [2, 5, 5], "nodes": n}


def transformer_block():
    """A pre-norm transformer block on tokens: embedding, LayerNorm, multi-head softmax
    self-attention (linear scaling, as stax's limit needs) with a residual, LayerNorm, a
    GELU MLP with a residual, a final LayerNorm, the mean over tokens and a readout."""
    n = [
        {"name": "embed", "type": "linear", "out_features": 8, "w_std": 1.0, "b_std": 0.2},
        {"name": "attn.norm", "type": "layer_norm", "elementwise_affine": False},
        {"name": "attn", "type": "global_self_attention", "n_chan_out": 8, "n_chan_key": 6,
         "n_chan_val": 5, "n_heads": 3, "w_key_std": 1.2, "w_query_std": 0.9,
         "w_value_std": 1.1, "w_out_std": 1.3, "b_std": 0.1},
        {"name": "attn.add", "type": "add", "inputs": ["attn", "embed"]},
        {"name": "mlp.norm", "type": "layer_norm", "elementwise_affine": False},
        {"name": "mlp.fc1", "type": "linear", "out_features": 16, "w_std": 1.3, "b_std": 0.1},
        {"name": "mlp.gelu", "type": "gelu"},
        {"name": "mlp.fc2", "type": "linear", "out_features": 8, "w_std": 0.9, "b_std": 0.1},
        {"name": "mlp.add", "type": "add", "inputs": ["mlp.fc2", "attn.add"]},
        {"name": "norm", "type": "layer_norm", "elementwise_affine": False, "eps": 1e-6},
        {"name": "pool", "type": "mean", "dim": [1]},
        {"name": "head", "type": "linear", "out_features": 1, "w_std": 1.1, "b_std": 0.05},
    ]
    return {"input_shape": [4, 5], "parameterization": "ntk", "nodes": n}


def attention_identity():
    """Two attention layers, the first with the identity mechanism (no softmax) and no
    bias, a relu between them, then the sum over tokens (GlobalSumPool) and a readout."""
    n = [
        {"name": "embed", "type": "linear", "out_features": 6, "w_std": 1.2, "b_std": 0.1},
        {"name": "attn1", "type": "global_self_attention", "n_chan_out": 6, "n_chan_key": 4,
         "n_chan_val": 4, "n_heads": 2, "w_key_std": 0.7, "w_query_std": 0.8,
         "attention_mechanism": "identity", "bias": False},
        {"name": "relu", "type": "relu"},
        {"name": "attn2", "type": "global_self_attention", "n_chan_out": 5, "n_chan_key": 3,
         "n_chan_val": 4, "n_heads": 2, "w_value_std": 1.4, "b_std": 0.3},
        {"name": "pool", "type": "sum", "dim": [1]},
        {"name": "head", "type": "linear", "out_features": 1, "w_std": 1.0, "b_std": 0.0},
    ]
    return {"input_shape": [3, 4], "parameterization": "ntk", "nodes": n}


def attention_untied():
    """Attention without linear scaling (separate query weights, logits / sqrt(n_key)) in
    the standard parameterization: stax has no infinite-width kernel for it (kernel_fn
    raises), so the case holds the forward check and the refusal only."""
    n = [
        {"name": "embed", "type": "linear", "out_features": 6, "w_std": 1.1, "b_std": 0.1},
        {"name": "attn", "type": "global_self_attention", "n_chan_out": 5, "n_chan_key": 3,
         "n_chan_val": 4, "n_heads": 2, "linear_scaling": False, "w_key_std": 1.3,
         "w_query_std": 0.6, "w_value_std": 0.9, "w_out_std": 1.2, "b_std": 0.4},
        {"name": "pool", "type": "mean", "dim": [1]},
        {"name": "head", "type": "linear", "out_features": 1, "w_std": 1.0, "b_std": 0.1},
    ]
    return {"input_shape": [3, 4], "parameterization": "standard", "nodes": n}


def erf_family_mlp():
    """stax's Erf(a, b, c) and Sigmoid_like in an NTK-parameterization MLP, with a
    residual sum of the two branches."""
    n = [
        {"name": "fc0", "type": "linear", "out_features": 10, "w_std": 1.3, "b_std": 0.2},
        {"name": "erf", "type": "erf", "a": 1.5, "b": 0.7, "c": -0.3},
        {"name": "fc1", "type": "linear", "out_features": 10, "w_std": 1.1, "b_std": 0.1},
        {"name": "sig", "type": "sigmoid_like"},
        {"name": "fc2", "type": "linear", "out_features": 10, "w_std": 1.2, "b_std": 0.1},
        {"name": "add", "type": "add", "inputs": ["fc2", "fc0"]},
        {"name": "head", "type": "linear", "out_features": 1, "w_std": 0.9, "b_std": 0.05},
    ]
    return {"input_shape": [5], "parameterization": "ntk", "nodes": n}


CASES = {
    "wrn-block": (wrn_block, 5, 4),
    "prenorm-mlp-block": (prenorm_mlp_block, 5, 3),
    "concat-mlp": (concat_mlp, 6, 4),
    "pool-cnn-tanh": (pool_cnn_tanh, 4, 3),
    "transformer-block": (transformer_block, 5, 3),
    "attention-identity": (attention_identity, 4, 3),
    "attention-untied": (attention_untied, 4, 3),
    "erf-family-mlp": (erf_family_mlp, 5, 4),
}


def write_case(out_dir, name, spec, x1, x2):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    analytic = None
    try:
        nngp, ntk, how = stax_kernels(spec, x1, x2)
    except NotImplementedError as e:  # stax has no limit: the case records its refusal
        analytic = f"unavailable: stax kernel_fn raises NotImplementedError: {e}"
        how = {}
    with open(os.path.join(d, "spec.json"), "w") as f:
        json.dump(spec, f, indent=1)
    np.save(os.path.join(d, "x1.npy"), x1)
    np.save(os.path.join(d, "x2.npy"), x2)
    if analytic is None:
        np.save(os.path.join(d, "expected_nngp_analytic.npy"), nngp)
        np.save(os.path.join(d, "expected_ntk_analytic.npy"), ntk)
    y, weights = stax_forward(spec, x1, seed=0)
    write_safetensors(os.path.join(d, "forward_weights.safetensors"), weights)
    np.save(os.path.join(d, "expected_forward.npy"), y)
    meta = {
        "made_by": "tests/graph-stax/make_cases.py",
        "semantics": "kernel_fn(x1, x2) of one output, float64; each node's stax layer's "
                     "kernel_fn applied to its inputs' Kernels (images NHWC to stax)",
        "stax_layers": how,
        "forward": "expected_forward.npy = stax apply_fn(x1) with init_fn(PRNGKey(0) split "
                   "per node) parameters, given in the spec's layout in "
                   "forward_weights.safetensors",
        **({"analytic": analytic} if analytic else {}),
        "versions": versions(),
    }
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{name}: " + (analytic or f"nngp {nngp.shape} ntk[0,0] {ntk[0, 0]:.6g}"))


def self_check():
    """The per-node wiring equals stax's combinators on the residual WRN block."""
    jnp, stax = setup_jax()
    spec = wrn_block()
    rng = np.random.default_rng(7)
    x1 = rng.standard_normal((3, 2, 6, 6))
    x2 = rng.standard_normal((2, 2, 6, 6))
    nngp, ntk, _ = stax_kernels(spec, x1, x2)
    c = lambda ch, k, s=1: stax.Conv(ch, (k, k), (s, s), "SAME", W_std=1.4, b_std=0.1,
                                     parameterization="ntk")
    b1 = stax.serial(stax.FanOut(2), stax.parallel(
        stax.serial(stax.Relu(), c(4, 3), stax.Relu(), c(4, 3)), stax.Identity()),
        stax.FanInSum())
    b2 = stax.serial(stax.Relu(), stax.FanOut(2), stax.parallel(
        stax.serial(c(6, 3, 2), stax.Relu(), c(6, 3)), c(6, 1, 2)), stax.FanInSum())
    net = stax.serial(c(4, 3), b1, b2, stax.Relu(), stax.GlobalAvgPool(), stax.Flatten(),
                      stax.Dense(1, W_std=1.2, b_std=0.05, parameterization="ntk"))
    k = net[2](jnp.asarray(to_channels_last(x1)), jnp.asarray(to_channels_last(x2)),
               ("nngp", "ntk"))
    for a, b, what in ((nngp, k.nngp, "nngp"), (ntk, k.ntk, "ntk")):
        err = float(np.max(np.abs(a - np.asarray(b))) / np.max(np.abs(b)))
        print(f"self-check {what}: per-node vs stax.serial/FanOut/parallel/FanInSum {err:.2e}")
        assert err < 1e-13, err


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", nargs="?", default="cases", choices=["cases", "kernels"])
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--spec")
    ap.add_argument("--x1")
    ap.add_argument("--x2")
    ap.add_argument("--self-check", action="store_true")
    a = ap.parse_args()
    if a.self_check:
        self_check()
        return
    if a.command == "kernels":
        spec = json.load(open(a.spec))
        x1 = np.load(a.x1).astype(np.float64)
        x2 = np.load(a.x2).astype(np.float64) if a.x2 else x1
        os.makedirs(a.out, exist_ok=True)
        nngp, ntk, how = stax_kernels(spec, x1, x2)
        np.save(os.path.join(a.out, "expected_nngp_analytic.npy"), nngp)
        np.save(os.path.join(a.out, "expected_ntk_analytic.npy"), ntk)
        print(json.dumps(how, indent=1))
        return
    for i, (name, (make, n1, n2)) in enumerate(CASES.items()):
        spec = make()
        rng = np.random.default_rng(100 + i)
        shape = tuple(spec["input_shape"])
        x1 = rng.standard_normal((n1,) + shape)
        x2 = rng.standard_normal((n2,) + shape)
        write_case(a.out, name, spec, x1, x2)


if __name__ == "__main__":
    main()
