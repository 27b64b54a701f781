"""Extra analytic cases for ntk-infinite, straight from neural-tangents stax 0.6.5 (builds
stax.serial itself, so that 'same' padding with strides, which the shared oracle refuses,
can be checked too).

Run with the oracle venv:  /tmp/ntk-oracle-venv/bin/python gen.py

`dup=True` makes x2[0] = x1[0] and x2[1] = 2 x1[1] (coincident / parallel samples). It is
only used for vector networks: for image networks in the same-position ("diagonal")
layout, stax computes a sample's own variance (sum of squares) and its covariance with an
identical sample (dot_general) with different rounding, and near correlation 1 the relu
derivative kernel amplifies that 1e-16 to 1e-10..1e-8 (slope ~ 1/sqrt(1 - rho)), so no
implementation can agree with it to 1e-10 there. Writes spec.json, x1.npy, x2.npy, expected_{nngp,ntk}_analytic.npy,
oracle.json per case under <this folder>/<name>."""
import json, os, sys, warnings
sys.path.insert(0, '/work/shared/oracle')
import numpy as np
import nt_oracle as O
J = O.setup_jax(True)
stax, jnp = J['stax'], J['jnp']
NCHW = ("NCHW", "OIHW", "NCHW")

def build(spec):
    p = spec.get('parameterization', 'ntk')
    L = []
    for l in spec['layers']:
        t = l['type']
        if t == 'dense':
            L.append(stax.Dense(l['width'], W_std=l.get('w_std', 1.0), b_std=l.get('b_std', 0.0), parameterization=p))
        elif t == 'conv2d':
            L.append(stax.Conv(l['channels'], tuple(l['kernel']), strides=tuple(l.get('stride', [1, 1])),
                               padding=l.get('padding', 'same').upper(), W_std=l.get('w_std', 1.0),
                               b_std=l.get('b_std', 0.0), dimension_numbers=NCHW, parameterization=p))
        elif t == 'relu': L.append(stax.Relu())
        elif t == 'erf': L.append(stax.Erf())
        elif t == 'gelu': L.append(stax.Gelu(approximate=False))
        elif t == 'identity': L.append(stax.Identity())
        elif t == 'tanh':
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                L.append(stax.ElementwiseNumerical(jnp.tanh, deg=64, df=lambda x: 1.0 - jnp.tanh(x) ** 2))
        elif t == 'flatten': L.append(stax.Flatten())
        elif t == 'global_avg_pool': L.append(stax.GlobalAvgPool(channel_axis=1))
        elif t == 'avg_pool2d':
            w = tuple(l['window']); L.append(stax.AvgPool(w, strides=tuple(l.get('stride', w)), padding='VALID', channel_axis=1))
        else: raise ValueError(t)
    return stax.serial(*L)[2]

def case(name, spec, n1, n2, seed, dup=False):
    d = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng([seed, 1])
    x1 = rng.standard_normal([n1] + spec['input_shape'])
    x2 = rng.standard_normal([n2] + spec['input_shape'])
    if dup:
        x2[0] = x1[0]; x2[1] = 2.0 * x1[1]
    json.dump(spec, open(f'{d}/spec.json', 'w'))
    np.save(f'{d}/x1.npy', x1); np.save(f'{d}/x2.npy', x2)
    kf = build(spec)
    try:
        k = kf(jnp.asarray(x1), jnp.asarray(x2), ('nngp', 'ntk'))
        np.save(f'{d}/expected_nngp_analytic.npy', np.asarray(k.nngp))
        np.save(f'{d}/expected_ntk_analytic.npy', np.asarray(k.ntk))
        note = 'exact closed form'
    except (ValueError, NotImplementedError) as e:
        note = f'unavailable: {type(e).__name__}: {e}'
    json.dump({'analytic': note}, open(f'{d}/oracle.json', 'w'))
    print(name, note[:80])

S2 = 1.4142135
case('conv-std', {"input_shape": [2, 6, 6], "parameterization": "standard", "layers": [
    {"type": "conv2d", "channels": 3, "kernel": [3, 3], "padding": "same", "w_std": 1.3, "b_std": 0.2},
    {"type": "relu"},
    {"type": "conv2d", "channels": 3, "kernel": [2, 2], "padding": "valid", "stride": [2, 2], "w_std": 1.1, "b_std": None},
    {"type": "erf"}, {"type": "flatten"},
    {"type": "dense", "width": 2, "w_std": 1.0, "b_std": 0.0}]}, 3, 4, 11)
case('conv-even-same-stride', {"input_shape": [1, 7, 8], "parameterization": "ntk", "layers": [
    {"type": "conv2d", "channels": 3, "kernel": [2, 4], "stride": [2, 3], "padding": "same", "w_std": S2, "b_std": 0.1},
    {"type": "relu"},
    {"type": "conv2d", "channels": 3, "kernel": [2, 2], "padding": "same", "w_std": S2, "b_std": 0.3},
    {"type": "gelu"}, {"type": "global_avg_pool"},
    {"type": "dense", "width": 2, "w_std": 1.0, "b_std": 0.1}]}, 3, 3, 12)
case('pool-stride', {"input_shape": [2, 7, 6], "parameterization": "ntk", "layers": [
    {"type": "conv2d", "channels": 3, "kernel": [3, 3], "padding": "valid", "w_std": 1.2, "b_std": 0.1},
    {"type": "avg_pool2d", "window": [3, 2], "stride": [2, 1]},
    {"type": "relu"},
    {"type": "conv2d", "channels": 3, "kernel": [1, 1], "w_std": 1.5, "b_std": 0.2},
    {"type": "identity"}, {"type": "global_avg_pool"}, {"type": "erf"},
    {"type": "dense", "width": 2, "w_std": 1.0, "b_std": 0.0}]}, 3, 2, 13)
case('flatten-first-tanh-std', {"input_shape": [2, 3, 3], "parameterization": "standard", "layers": [
    {"type": "flatten"}, {"type": "dense", "width": 5, "w_std": 1.3, "b_std": 0.2},
    {"type": "tanh"}, {"type": "dense", "width": 2, "w_std": 0.9, "b_std": 0.1}]}, 4, 3, 14)
case('gelu-mlp-std', {"input_shape": [5], "parameterization": "standard", "layers": [
    {"type": "dense", "width": 7, "w_std": 1.5, "b_std": None}, {"type": "gelu"},
    {"type": "dense", "width": 3, "w_std": 1.2, "b_std": 0.0}]}, 4, 5, 15, dup=True)
case('avgpool-first', {"input_shape": [3, 6, 6], "parameterization": "ntk", "layers": [
    {"type": "avg_pool2d", "window": [2, 2]},
    {"type": "conv2d", "channels": 4, "kernel": [3, 3], "padding": "same", "w_std": S2, "b_std": 0.1},
    {"type": "relu"}, {"type": "flatten"}, {"type": "dense", "width": 2, "w_std": 1.0, "b_std": 0.0}]}, 3, 3, 16)
case('tanh-cnn-diag', {"input_shape": [2, 5, 5], "parameterization": "ntk", "layers": [
    {"type": "conv2d", "channels": 4, "kernel": [3, 3], "padding": "same", "w_std": 1.6, "b_std": 0.1},
    {"type": "tanh"}, {"type": "conv2d", "channels": 4, "kernel": [3, 3], "padding": "valid", "w_std": 1.2, "b_std": 0.0},
    {"type": "relu"}, {"type": "flatten"},
    {"type": "dense", "width": 2, "w_std": 1.0, "b_std": 0.0}]}, 3, 3, 17)
case('deep-mixed-mlp', {"input_shape": [6], "parameterization": "ntk", "layers": [
    {"type": "dense", "width": 8, "w_std": S2, "b_std": 0.1}, {"type": "relu"},
    {"type": "dense", "width": 8, "w_std": 1.7, "b_std": 0.3}, {"type": "erf"},
    {"type": "dense", "width": 8, "w_std": 1.1, "b_std": 0.0}, {"type": "gelu"},
    {"type": "dense", "width": 8, "w_std": S2, "b_std": 0.1}, {"type": "relu"},
    {"type": "dense", "width": 1, "w_std": 1.0, "b_std": 0.0}]}, 5, 4, 18, dup=True)
case('two-relus', {"input_shape": [4], "parameterization": "ntk", "layers": [
    {"type": "dense", "width": 8}, {"type": "relu"}, {"type": "relu"},
    {"type": "dense", "width": 1}]}, 2, 2, 19)
case('relu-first', {"input_shape": [4], "parameterization": "ntk", "layers": [
    {"type": "relu"}, {"type": "dense", "width": 1}]}, 2, 2, 20)
