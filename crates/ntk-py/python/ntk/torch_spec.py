"""A ``torch.nn.Module`` as a graph spec (``docs/graph-spec.md``) and its state dict, by a
``torch.fx`` trace: the hand-over that architecture-search loops need (milliseconds per
network, where an ONNX export takes a good fraction of a second).

Each module call becomes a node named by its module path (``cells.3.edges.2<-0.op.1``),
so the spec's parameter names are ``model.state_dict()``'s and the weights go over by
name, in memory. What is translated:

- modules: ``Conv2d`` (zero padding), ``Linear``, ``BatchNorm2d`` (affine, running
  statistics: eval mode), ``LayerNorm`` (over the last axis), ``ReLU``, ``GELU``,
  ``Tanh``, ``Sigmoid``, ``ELU``, ``LeakyReLU``, ``Softmax``, ``Identity``, ``Dropout``,
  ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d(1)``, ``Flatten``;
- functions and methods: ``+ - * /`` of two tensors (broadcasting), a tensor times or
  over a number (``scale``; ``x * 0`` is NAS-Bench-201's ``zero`` edge; ``0 + x`` from
  ``sum(...)`` is ``x``), ``torch.cat``, ``torch.flatten``/``x.flatten``,
  ``x.view``/``x.reshape`` (``x.size(0)`` or ``-1`` for the batch), ``x.mean``/
  ``torch.mean``, ``relu``/``gelu``/``tanh``/``sigmoid`` (``torch.``, ``F.``, methods),
  ``F.adaptive_avg_pool2d(x, 1)``, ``x.contiguous()``;
- a parameter used directly (``self.pos_embedding``) is a ``parameter`` node.

Anything else raises :class:`Untranslatable` naming the node; :func:`ntk.from_torch`
then falls back to an ONNX export. A module with parameters called twice (shared
weights) is refused: a graph spec gives each node its own parameters.
"""

import operator

import numpy as np

__all__ = ["Untranslatable", "module_to_spec"]


class Untranslatable(ValueError):
    """The module has something the fx translation does not know (the message names it)."""


def _pair(v):
    if isinstance(v, (tuple, list)):
        if len(v) == 2 and v[0] == v[1]:
            return int(v[0])
        return [int(a) for a in v]
    return int(v)


def _scalar(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def module_to_spec(module, input_shape):
    """The graph spec (a dict) of ``module`` on samples of ``input_shape`` (no batch axis),
    and its float state dict ``{name: numpy array}`` (views of the tensors, no copy).

    Raises :class:`Untranslatable` for what the spec cannot express, naming the node.
    The module should be in eval mode (BatchNorm with running statistics).
    """
    import torch
    import torch.fx
    import torch.nn as nn
    import torch.nn.functional as F

    try:
        traced = torch.fx.symbolic_trace(module)
    except Exception as e:  # data-dependent control flow and the like
        raise Untranslatable(f"torch.fx cannot trace the module: {type(e).__name__}: {e}") from e
    modules = dict(traced.named_modules())
    params = dict(module.named_parameters())

    nodes = []
    names = {}  # fx node -> spec node name (or alias)
    used = {"input"}
    called = {}  # module path -> times called

    def unique(base):
        name = base
        i = 1
        while name in used:
            name = f"{base}_{i}"
            i += 1
        used.add(name)
        return name

    def src(a, node):
        if isinstance(a, torch.fx.Node) and names.get(a) is not None:
            return names[a]
        raise Untranslatable(f"node {node.name!r} ({node.op} {node.target}): argument {a!r} is not a tensor")

    def emit(node, base, fields, inputs):
        name = unique(base)
        entry = {"name": name, **fields, "inputs": inputs}
        nodes.append(entry)
        names[node] = name

    def arg(node, i, key, default=None):
        if len(node.args) > i:
            return node.args[i]
        return node.kwargs.get(key, default)

    def activation(node, kind, x, extra=None):
        emit(node, node.name, {"type": kind, **(extra or {})}, [x])

    act_functions = {
        torch.relu: "relu", F.relu: "relu",
        torch.tanh: "tanh", F.tanh: "tanh",
        torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
    }
    act_methods = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid"}

    def arithmetic(node, op, a, b):
        # op in add, sub, mul, div; a, b nodes or numbers
        ta, tb = isinstance(a, torch.fx.Node), isinstance(b, torch.fx.Node)
        if ta and tb:
            emit(node, node.name, {"type": op}, [names[a], names[b]])
            return
        if not (ta or tb) or not (_scalar(a) or _scalar(b)):
            raise Untranslatable(f"node {node.name!r}: {op} of {a!r} and {b!r}")
        t, c = (a, b) if ta else (b, a)
        x = names[t]
        if op in ("add", "sub") and c == 0:
            names[node] = x  # 0 + x (Python's sum), x - 0
            return
        if op == "mul" or (op == "div" and ta):
            value = float(c) if op == "mul" else 1.0 / float(c)
            if value == 0.0:
                emit(node, node.name, {"type": "zero"}, [x])
            elif value == 1.0:
                names[node] = x
            else:
                emit(node, node.name, {"type": "scale", "value": value}, [x])
            return
        raise Untranslatable(
            f"node {node.name!r}: {op} of a tensor and the number {c!r} (only products and "
            "quotients by numbers, and adding 0)"
        )

    def shape_args(node, args):
        if len(args) == 1 and isinstance(args[0], (tuple, list)):
            args = args[0]
        out = []
        for i, a in enumerate(args):
            if isinstance(a, torch.fx.Node):
                if a.op == "call_method" and a.target == "size" and len(a.args) == 2 and a.args[1] == 0 and i == 0:
                    out.append(0)
                    continue
                raise Untranslatable(f"node {node.name!r}: a reshape to a computed size ({a.name})")
            out.append(int(a))
        if not out or out[0] not in (0, -1):
            raise Untranslatable(
                f"node {node.name!r}: reshape to {out}: the first axis must stay the batch "
                "(x.size(0) or -1)"
            )
        if out[0] == -1:
            if -1 in out[1:]:
                raise Untranslatable(f"node {node.name!r}: reshape to {out} with two -1 axes")
            out[0] = 0
        return out

    def dims(v):
        if isinstance(v, int):
            return [v]
        return [int(d) for d in v]

    for node in traced.graph.nodes:
        if node.op == "placeholder":
            if any(v == "input" for v in names.values()):
                raise Untranslatable(f"the module takes several inputs ({node.name!r}): one is supported")
            names[node] = "input"
        elif node.op == "output":
            out = node.args[0]
            if not isinstance(out, torch.fx.Node):
                raise Untranslatable(f"the module returns {type(out).__name__}: one tensor is supported")
            output = names[out]
        elif node.op == "get_attr":
            target = node.target
            if target not in params:
                raise Untranslatable(f"node {node.name!r}: attribute {target!r} is not a parameter")
            if target in used:
                raise Untranslatable(f"parameter {target!r} used twice")
            used.add(target)
            shape = list(params[target].shape)
            nodes.append({"name": target, "type": "parameter", "shape": shape, "inputs": []})
            names[node] = target
        elif node.op == "call_module":
            path = node.target
            m = modules[path]
            if len(node.args) != 1 or node.kwargs:
                raise Untranslatable(f"module {path!r} ({type(m).__name__}) called with {len(node.args)} arguments")
            x = src(node.args[0], node)
            has_params = any(True for _ in m.parameters(recurse=False))
            called[path] = called.get(path, 0) + 1
            if has_params and called[path] > 1:
                raise Untranslatable(f"module {path!r} ({type(m).__name__}) is called twice (shared weights)")
            if has_params or isinstance(m, nn.BatchNorm2d):
                if path in used:
                    raise Untranslatable(f"module path {path!r} clashes with another node's name")
                used.add(path)
                base = None
            else:
                base = path
            t = type(m)

            def put(fields):
                if base is None:
                    entry = {"name": path, **fields, "inputs": [x]}
                    nodes.append(entry)
                    names[node] = path
                else:
                    emit(node, base, fields, [x])

            if t is nn.Conv2d:
                if m.padding_mode != "zeros":
                    raise Untranslatable(f"module {path!r}: padding_mode {m.padding_mode!r} (zeros only)")
                pad = m.padding if isinstance(m.padding, str) else _pair(m.padding)
                put({"type": "conv2d", "out_channels": m.out_channels, "kernel_size": _pair(m.kernel_size),
                     "stride": _pair(m.stride), "padding": pad, "dilation": _pair(m.dilation),
                     "groups": m.groups, "bias": m.bias is not None})
            elif t is nn.Linear:
                put({"type": "linear", "out_features": m.out_features, "bias": m.bias is not None})
            elif t is nn.BatchNorm2d:
                if not m.affine or m.running_mean is None:
                    raise Untranslatable(
                        f"module {path!r}: BatchNorm2d needs affine=True and running statistics "
                        "(track_running_stats=True)"
                    )
                if m.training:
                    raise Untranslatable(f"module {path!r}: BatchNorm2d in training mode (call model.eval())")
                put({"type": "batch_norm", "eps": float(m.eps)})
            elif t is nn.LayerNorm:
                if len(m.normalized_shape) != 1:
                    raise Untranslatable(f"module {path!r}: LayerNorm over {tuple(m.normalized_shape)} (the last axis only)")
                if m.elementwise_affine and getattr(m, "bias", True) is None:
                    raise Untranslatable(f"module {path!r}: LayerNorm with a scale and no shift")
                put({"type": "layer_norm", "eps": float(m.eps), "elementwise_affine": bool(m.elementwise_affine)})
            elif t is nn.ReLU:
                put({"type": "relu"})
            elif t is nn.GELU:
                put({"type": "gelu", "approximate": m.approximate})
            elif t is nn.Tanh:
                put({"type": "tanh"})
            elif t is nn.Sigmoid:
                put({"type": "sigmoid"})
            elif t is nn.ELU:
                put({"type": "elu", "alpha": float(m.alpha)})
            elif t is nn.LeakyReLU:
                put({"type": "leaky_relu", "negative_slope": float(m.negative_slope)})
            elif t is nn.Softmax:
                if m.dim is None:
                    raise Untranslatable(f"module {path!r}: Softmax without dim")
                put({"type": "softmax", "dim": int(m.dim)})
            elif t in (nn.Identity, nn.Dropout):
                names[node] = x
            elif t is nn.MaxPool2d:
                if m.return_indices:
                    raise Untranslatable(f"module {path!r}: MaxPool2d with return_indices")
                put({"type": "max_pool2d", "kernel_size": _pair(m.kernel_size),
                     "stride": _pair(m.stride if m.stride is not None else m.kernel_size),
                     "padding": _pair(m.padding), "dilation": _pair(m.dilation), "ceil_mode": bool(m.ceil_mode)})
            elif t is nn.AvgPool2d:
                if m.divisor_override is not None:
                    raise Untranslatable(f"module {path!r}: AvgPool2d with divisor_override")
                put({"type": "avg_pool2d", "kernel_size": _pair(m.kernel_size),
                     "stride": _pair(m.stride if m.stride is not None else m.kernel_size),
                     "padding": _pair(m.padding), "ceil_mode": bool(m.ceil_mode),
                     "count_include_pad": bool(m.count_include_pad)})
            elif t is nn.AdaptiveAvgPool2d:
                if _pair(m.output_size) != 1:
                    raise Untranslatable(f"module {path!r}: AdaptiveAvgPool2d({m.output_size}) (output size 1 only)")
                put({"type": "global_avg_pool"})
            elif t is nn.Flatten:
                if m.end_dim != -1:
                    raise Untranslatable(f"module {path!r}: Flatten with end_dim {m.end_dim}")
                put({"type": "flatten", "start_dim": int(m.start_dim)})
            else:
                raise Untranslatable(f"module {path!r}: {type(m).__module__}.{type(m).__name__} is not translated")
        elif node.op in ("call_function", "call_method"):
            f = node.target
            method = node.op == "call_method"
            a0 = node.args[0] if node.args else None
            binary = {operator.add: "add", torch.add: "add", "add": "add",
                      operator.sub: "sub", torch.sub: "sub", "sub": "sub",
                      operator.mul: "mul", torch.mul: "mul", "mul": "mul",
                      operator.truediv: "div", torch.div: "div", "div": "div"}
            if (not method and f in binary) or (method and f in binary and isinstance(f, str)):
                if len(node.args) != 2 or (node.kwargs and set(node.kwargs) - {"alpha"}) or node.kwargs.get("alpha", 1) != 1:
                    raise Untranslatable(f"node {node.name!r}: {f} with arguments {node.args} {node.kwargs}")
                arithmetic(node, binary[f], node.args[0], node.args[1])
            elif (not method and f in act_functions) or (method and f in act_methods):
                kind = act_functions[f] if not method else act_methods[f]
                if node.kwargs.get("inplace", False) or len(node.args) > 1 and node.args[1] is True:
                    pass  # in-place on a traced value is the same function
                activation(node, kind, src(a0, node))
            elif not method and f is F.gelu:
                approx = node.kwargs.get("approximate", "none")
                activation(node, "gelu", src(a0, node), {"approximate": approx})
            elif (not method and f is torch.cat):
                tensors = arg(node, 0, "tensors")
                dim = arg(node, 1, "dim", 0)
                emit(node, node.name, {"type": "concat", "dim": int(dim)}, [src(t, node) for t in tensors])
            elif (not method and f is torch.flatten) or (method and f == "flatten"):
                start = arg(node, 1, "start_dim", 0)
                end = arg(node, 2, "end_dim", -1)
                if end != -1:
                    raise Untranslatable(f"node {node.name!r}: flatten with end_dim {end}")
                if start == 0:
                    raise Untranslatable(f"node {node.name!r}: flatten from axis 0 mixes the batch")
                emit(node, node.name, {"type": "flatten", "start_dim": int(start)}, [src(a0, node)])
            elif method and f in ("view", "reshape"):
                shape = shape_args(node, node.args[1:])
                emit(node, node.name, {"type": "reshape", "shape": shape}, [src(a0, node)])
            elif not method and f is torch.reshape:
                shape = shape_args(node, [arg(node, 1, "shape")])
                emit(node, node.name, {"type": "reshape", "shape": shape}, [src(a0, node)])
            elif (method and f == "mean") or (not method and f is torch.mean):
                dim = arg(node, 1, "dim")
                if dim is None:
                    raise Untranslatable(f"node {node.name!r}: a mean over every axis mixes the batch")
                keep = bool(arg(node, 2, "keepdim", False))
                emit(node, node.name, {"type": "mean", "dim": dims(dim), "keepdim": keep}, [src(a0, node)])
            elif not method and f is F.adaptive_avg_pool2d:
                if _pair(arg(node, 1, "output_size")) != 1:
                    raise Untranslatable(f"node {node.name!r}: adaptive_avg_pool2d to a size other than 1")
                emit(node, node.name, {"type": "global_avg_pool"}, [src(a0, node)])
            elif method and f == "contiguous":
                names[node] = src(a0, node)
            elif method and f == "size":
                names[node] = None  # only as a reshape argument (checked there)
            else:
                what = f if isinstance(f, str) else getattr(f, "__qualname__", repr(f))
                raise Untranslatable(f"node {node.name!r}: {node.op} {what} is not translated")
    if not nodes:
        raise Untranslatable("the module computes nothing (its output is its input)")
    spec = {"input_shape": [int(d) for d in input_shape], "nodes": nodes, "output": output}
    state = {}
    for k, v in module.state_dict().items():
        if v.is_floating_point():
            state[k] = v.detach().cpu().numpy()
    return spec, state
