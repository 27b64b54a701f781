"""The Python package against the reference cases (neural-tangents and torch.func, f64
to 1e-10), the CLI's kernels, torch.func on a module given directly, and its errors."""

import copy
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

import ntk

ROOT = pathlib.Path(__file__).resolve().parents[3]
CASES = pathlib.Path(os.environ.get("NTK_CASES_DIR", ROOT.parent / "shared" / "cases"))


def rel_err(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def case(name):
    d = CASES / name
    if not d.is_dir():
        pytest.skip(f"reference case {d} not found (set NTK_CASES_DIR)")
    return d


def test_sequential_case_matches_neural_tangents():
    d = case("mlp-relu")
    net = ntk.load(d / "spec.json", weights=d / "weights.safetensors")
    x1, x2 = np.load(d / "x1.npy"), np.load(d / "x2.npy")
    full = ntk.empirical_ntk(net, x1, x2, trace_axes=(), dtype="float64")
    assert full.shape == np.load(d / "expected_ntk_full.npy").shape
    assert rel_err(full, np.load(d / "expected_ntk_full.npy")) < 1e-10
    for impl in ["jacobian", "structured", "ntk-vp", 1, 2, 3]:
        tr = ntk.empirical_ntk(net, x1, x2, implementation=impl, dtype="float64")
        assert rel_err(tr, np.load(d / "expected_ntk_trace.npy")) < 1e-10, impl
    diag = ntk.empirical_ntk(net, x1, x2, trace_axes=(), diagonal_axes=(-1,), dtype="float64")
    assert rel_err(diag, np.load(d / "expected_ntk_diag.npy")) < 1e-10
    assert rel_err(ntk.forward(net, x1), np.load(d / "expected_f_x1.npy")) < 1e-10
    f32 = ntk.empirical_ntk(net, x1, x2)
    assert f32.dtype == np.float32 and rel_err(f32, np.load(d / "expected_ntk_trace.npy")) < 1e-5


@pytest.mark.parametrize("name", ["onnx-preact-resnet", "onnx-tiny-encoder"])
def test_onnx_cases_match_torch_func(name):
    d = case(name)
    x1, x2 = np.load(d / "x1.npy"), np.load(d / "x2.npy")
    for file in ["model.onnx", "model_b1.onnx"]:
        k = ntk.empirical_ntk(d / file, x1, x2, trace_axes=(), dtype="float64")
        assert rel_err(k, np.load(d / "expected_ntk_full.npy")) < 1e-10, file
    meta = json.loads((d / "meta.json").read_text())
    assert ntk.load(d / "model.onnx").param_names == meta["parameter_names"]


def test_equals_the_cli(tmp_path):
    d = case("onnx-preact-resnet")
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    exe = target / "debug" / "ntk"
    if not exe.is_file():
        pytest.skip("the ntk binary is not built")
    out = tmp_path / "K.npy"
    subprocess.run(
        [exe, "empirical", "--spec", d / "model.onnx", "--x1", d / "x1.npy", "--kernel",
         "trace", "--dtype", "f64", "--params", "weight$", "--out", out],
        check=True, capture_output=True,
    )
    k = ntk.empirical_ntk(d / "model.onnx", np.load(d / "x1.npy"), dtype="float64", params="weight$")
    assert rel_err(k, np.load(out)) < 1e-12


def test_spec_dict_and_kernel_kinds():
    spec = {"input_shape": [4], "layers": [
        {"type": "dense", "width": 8}, {"type": "relu"}, {"type": "dense", "width": 3}]}
    x = np.random.default_rng(0).normal(size=(5, 4))
    net = ntk.load(spec, seed=3)
    assert net.input_shape == [4] and net.n_outputs == 3
    full = ntk.empirical_ntk(net, x, trace_axes=(), dtype="float64")
    assert full.shape == (5, 5, 3, 3)
    tr = ntk.empirical_ntk(net, x, dtype="float64")
    # neural-tangents' trace is normalised by the traced size (a mean over outputs).
    np.testing.assert_allclose(tr, np.einsum("nmoo->nm", full) / 3, rtol=1e-12)
    sol = ntk.sum_of_logits_ntk(net, x, dtype="float64")
    np.testing.assert_allclose(sol, full.sum(axis=(2, 3)) / 3, rtol=1e-12)
    f = ntk.forward(net, x)
    nngp = ntk.empirical_nngp(net, x, dtype="float64")
    np.testing.assert_allclose(nngp, f @ f.T / 3, rtol=1e-12)
    both = ntk.empirical_kernel(net, x, get=("nngp", "ntk"), dtype="float64")
    np.testing.assert_allclose(both["ntk"], tr, rtol=1e-12)
    seen = []
    ntk.empirical_ntk(net, x, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1]


def test_errors_are_python_errors():
    spec = {"input_shape": [4], "layers": [{"type": "dense", "width": -2}]}
    with pytest.raises(ValueError, match="width"):
        ntk.load(spec)
    net = ntk.load({"input_shape": [4], "layers": [{"type": "dense", "width": 2}]})
    with pytest.raises(ValueError):
        ntk.empirical_ntk(net, np.zeros((3, 5)))
    with pytest.raises(NotImplementedError):
        ntk.empirical_ntk(net, np.zeros((3, 4)), trace_axes=(-1,), diagonal_axes=(-1,))
    with pytest.raises(NotImplementedError, match="trace_axes=\\(0,\\)"):
        ntk.empirical_ntk(net, np.zeros((3, 4)), trace_axes=0)
    with pytest.raises(NotImplementedError):
        ntk.empirical_kernel(net, np.zeros((3, 4)), get="nngp", trace_axes=())

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ntk.empirical_ntk(net, np.zeros((3, 4)), progress=stop)
    with pytest.raises(ValueError, match="implementation"):
        ntk.empirical_ntk(net, np.zeros((3, 4)), implementation="fast")
    with pytest.raises(TypeError):
        ntk.empirical_ntk(42, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="No such file|not found|does not exist"):
        ntk.load("no-such-spec.json")
    with pytest.raises(ValueError, match="non-finite|NaN|finite"):
        ntk.empirical_ntk(net, np.full((2, 4), np.nan))


def _torch_func_ntk(module, x):
    import torch
    from torch.func import functional_call, jacrev, vmap

    m = module.double().eval()
    params = {k: v.detach() for k, v in m.named_parameters()}
    xs = torch.as_tensor(x, dtype=torch.float64)

    def f(p, xi):
        return functional_call(m, p, (xi.unsqueeze(0),)).squeeze(0)

    j = vmap(jacrev(f), (None, 0))(params, xs)
    return sum(torch.einsum("naf,mbf->nmab", a.flatten(2), a.flatten(2)) for a in j.values()).numpy()


def test_torch_module_matches_torch_func():
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    nn = torch.nn
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            y = torch.relu(self.bn(self.conv(x)))
            return self.fc(y.mean(dim=(2, 3)) + 0.1)

    m = Net()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 1.5)
    x = np.random.default_rng(1).normal(size=(3, 2, 5, 5)).astype(np.float32)
    k = ntk.empirical_ntk(m, x, trace_axes=(), dtype="float64")
    assert m.training  # the module's mode is restored
    ref = _torch_func_ntk(copy.deepcopy(m), x)
    # The export is f32 weights; the reference uses the same f32 weights in f64.
    assert rel_err(k, ref) < 1e-10


def test_score_records_and_a_failing_candidate():
    spec = {"input_shape": [4], "layers": [
        {"type": "dense", "width": 16}, {"type": "relu"}, {"type": "dense", "width": 3}]}
    wide = {"input_shape": [4], "layers": [
        {"type": "dense", "width": 32}, {"type": "erf"}, {"type": "dense", "width": 3}]}
    broken = {"input_shape": [4], "layers": [{"type": "dense", "width": -1}]}
    x = np.random.default_rng(2).normal(size=(6, 4))
    y = np.array([0, 1, 2, 0, 1, 2])
    rows = ntk.score([spec, wide, broken], x, y, names=["a", "b", "broken"])
    assert [r["name"] for r in rows] == ["a", "b", "broken"]
    assert rows[2]["error"] and rows[0]["error"] is None
    # NASI trace norm = trace(Θ_trace)·O/n of the seed-0 network, by the kernel itself.
    tr = ntk.empirical_ntk(ntk.load(spec, seed=0), x, dtype="float64")
    assert abs(rows[0]["ntk_trace_norm"] - np.trace(tr) * 3 / 6) < 1e-9 * np.trace(tr)
    assert rows[0]["label_alignment"] is not None and rows[0]["seeds"] == 1


GRAPH_STAX = ROOT / "tests" / "graph-stax"


def test_infinite_kernel_matches_neural_tangents():
    d = case("mlp-relu")
    x1, x2 = np.load(d / "x1.npy"), np.load(d / "x2.npy")
    k = ntk.infinite_kernel(d / "spec.json", x1, x2)
    assert set(k) == {"nngp", "ntk"}
    assert rel_err(k["ntk"], np.load(d / "expected_ntk_analytic.npy")) < 1e-10
    assert rel_err(k["nngp"], np.load(d / "expected_nngp_analytic.npy")) < 1e-10
    # Graph specs: stax's attention and residual cases (tests/graph-stax, made with stax).
    for name in ["transformer-block", "wrn-block"]:
        g = GRAPH_STAX / name
        a, b = np.load(g / "x1.npy"), np.load(g / "x2.npy")
        t = ntk.infinite_kernel(g / "spec.json", a, b, get="ntk")
        assert t.dtype == np.float64
        assert rel_err(t, np.load(g / "expected_ntk_analytic.npy")) < 1e-10, name
    # x2 = None is x1 against itself.
    s = ntk.infinite_kernel(d / "spec.json", x1, get="nngp")
    assert s.shape == (len(x1), len(x1)) and np.allclose(s, s.T, rtol=0, atol=1e-14)


def test_features_approximate_the_infinite_kernel_and_equal_the_cli(tmp_path):
    g = GRAPH_STAX / "wrn-block"
    x = np.load(g / "x1.npy")
    exact = ntk.infinite_kernel(g / "spec.json", x, get="ntk")
    f = ntk.features(g / "spec.json", x, method="cntksketch", dim=4096, seed=3)
    assert f.shape == (len(x), 4096)
    err = np.linalg.norm(f @ f.T - exact) / np.linalg.norm(exact)
    assert err < 0.15, err
    both = ntk.features(g / "spec.json", x, method="cntksketch", dim=4096, seed=3, get=("nngp", "ntk"))
    assert np.array_equal(both["ntk"], f)
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    exe = target / "debug" / "ntk"
    if not exe.is_file():
        pytest.skip(f"{exe} not built")
    out = tmp_path / "phi.npy"
    subprocess.run(
        [exe, "features", "--spec", g / "spec.json", "--x", g / "x1.npy", "--method", "cntksketch",
         "--dim", "4096", "--seed", "3", "--out-dtype", "f64", "--out", out],
        check=True, capture_output=True,
    )
    assert rel_err(f, np.load(out)) < 1e-12


def test_features_stay_within_max_memory():
    g = GRAPH_STAX / "wrn-block"
    x = np.load(g / "x1.npy")
    whole = ntk.features(g / "spec.json", x, method="cntksketch", dim=1024, seed=1)
    # 20 MiB holds the map (8 MiB), the outputs and one input's working set (9 MiB): the
    # same features, computed one input at a time.
    small = ntk.features(g / "spec.json", x, method="cntksketch", dim=1024, seed=1,
                         max_memory=20 << 20)
    assert np.array_equal(small, whole)
    # Too small for the map: refused before any work, naming the sizes.
    with pytest.raises(ValueError, match=r"random transforms.*max_memory = 1 MiB"):
        ntk.features(g / "spec.json", x, method="cntksketch", dim=1 << 20, max_memory=1 << 20)


def test_infinite_width_errors():
    d = case("onnx-preact-resnet")
    with pytest.raises(ValueError, match="JSON spec"):
        ntk.infinite_kernel(d / "model.onnx", np.load(d / "x1.npy"))
    g = GRAPH_STAX / "transformer-block"
    with pytest.raises(ValueError, match="not tokens"):
        ntk.features(g / "spec.json", np.load(g / "x1.npy"))
    with pytest.raises(ValueError, match="get"):
        ntk.infinite_kernel(g / "spec.json", np.load(g / "x1.npy"), get="jacobian")


def _kernels():
    d = case("mlp-relu")
    x1, x2 = np.load(d / "x1.npy"), np.load(d / "x2.npy")
    k = ntk.infinite_kernel(d / "spec.json", x1, get="ntk")
    ks = ntk.infinite_kernel(d / "spec.json", x2, x1, get="ntk")
    kss = ntk.infinite_kernel(d / "spec.json", x2, get="ntk")
    return k, ks, kss


def test_analysis_against_numpy():
    k, _, _ = _kernels()
    n = len(k)
    s = ntk.analysis.spectrum(k)
    lam = np.sort(np.linalg.eigvalsh(k))[::-1]
    assert rel_err(s["eigenvalues"], lam) < 1e-10
    assert abs(s["trace"] - np.trace(k)) < 1e-10 * np.trace(k)
    assert abs(s["condition_number"] - lam[0] / lam[-1]) < 1e-8 * lam[0] / lam[-1]
    assert abs(s["effective_rank_participation"] - lam.sum() ** 2 / (lam ** 2).sum()) < 1e-10 * n
    assert abs(s["max_learning_rate"] - 2 * n / lam[0]) < 1e-10 * n / lam[0]
    labels = np.arange(n) % 2
    y = np.eye(2)[labels]
    raw, centred = ntk.analysis.alignment(k, labels)
    yy = y @ y.T
    assert abs(raw - (k * yy).sum() / np.linalg.norm(k) / np.linalg.norm(yy)) < 1e-12
    h = np.eye(n) - 1.0 / n
    hk, hy = h @ k @ h, h @ yy @ h
    assert abs(centred - (hk * hy).sum() / np.linalg.norm(hk) / np.linalg.norm(hy)) < 1e-12
    assert ntk.analysis.alignment(k, y) == (raw, centred)
    k2 = k + 0.1 * np.eye(n)
    want = 1 - (k * k2).sum() / np.linalg.norm(k) / np.linalg.norm(k2)
    assert abs(ntk.analysis.kernel_distance(k, k2) - want) < 1e-12
    with pytest.raises(ValueError, match="square"):
        ntk.analysis.spectrum(np.ones((3, 4)))


def test_predictions_against_numpy():
    k, ks, kss = _kernels()
    n, m = len(k), len(ks)
    rng = np.random.default_rng(1)
    y = rng.normal(size=(n, 2))
    f0 = rng.normal(size=(n, 2))
    ft0 = rng.normal(size=(m, 2))
    lr, t = 0.7, 5.0
    # f_t = y + exp(-lr t Θ / y.size)(f0 - y), by eigh; the test outputs follow
    # f*_t = f*_0 + Θ* Θ⁻¹ (I - exp(-lr t Θ / y.size)) (y - f0).
    lam, u = np.linalg.eigh(k)
    decay = u @ np.diag(np.exp(-lr * t * lam / y.size)) @ u.T
    want_train = y + decay @ (f0 - y)
    want_test = ft0 + ks @ u @ np.diag((1 - np.exp(-lr * t * lam / y.size)) / lam) @ u.T @ (y - f0)
    fn = ntk.predict.gradient_descent_mse(k, y, learning_rate=lr)
    got_train, got_test = fn(t, fx_train_0=f0, fx_test_0=ft0, k_test_train=ks)
    assert rel_err(got_train, want_train) < 1e-9
    assert rel_err(got_test, want_test) < 1e-9
    many = fn(np.array([0.0, t, np.inf]), fx_train_0=f0)
    assert many.shape == (3, n, 2)
    assert rel_err(many[0], f0) < 1e-12 and rel_err(many[1], want_train) < 1e-9
    assert rel_err(many[2], y) < 1e-8
    # GP posterior.
    mean, cov = ntk.predict.gp_inference(k, y[:, 0])(ks, kss)
    assert rel_err(mean, ks @ np.linalg.solve(k, y[:, 0])) < 1e-9
    assert rel_err(cov, kss - ks @ np.linalg.solve(k, ks.T)) < 1e-8
    with pytest.raises(ValueError, match="learning_rate"):
        ntk.predict.gradient_descent_mse(k, y, learning_rate=-1.0)(1.0)


def _fx_test_module(torch):
    nn = torch.nn
    F = torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(6)
            self.proj = nn.Conv2d(3, 6, 1, stride=2)
            self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

        def forward(self, x):
            y = F.relu(self.bn(self.conv(x)))
            return sum([y, self.proj(x), self.pool(y) * 0.5])  # sum() starts at 0

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()
            self.act = nn.GELU(approximate="tanh")
            self.mp = nn.MaxPool2d(2)
            self.norm = nn.LayerNorm(24)
            self.fc = nn.Linear(24 + 6, 4)
            self.drop = nn.Dropout(0.3)

        def forward(self, x):
            y = self.mp(self.act(self.block(x)))                 # [N, 6, 2, 2]
            flat = self.norm(y.view(y.size(0), -1))               # [N, 24]
            pooled = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)
            z = torch.cat([flat, torch.tanh(pooled) / 2.0], dim=1)
            return self.fc(self.drop(z)) - x.flatten(1).mean(dim=1, keepdim=True).mul(0.0)

    torch.manual_seed(3)
    m = Net()
    with torch.no_grad():
        m.block.bn.running_mean.uniform_(-0.5, 0.5)
        m.block.bn.running_var.uniform_(0.5, 1.5)
        m.block.bn.weight.uniform_(0.5, 1.5)
        m.norm.bias.uniform_(-0.2, 0.2)
    return m


def test_fx_translation_matches_torch_func_and_the_onnx_export():
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from ntk.torch_spec import module_to_spec

    m = _fx_test_module(torch)
    x = np.random.default_rng(4).normal(size=(5, 3, 8, 8))
    spec, state = module_to_spec(m.eval(), (3, 8, 8))
    types = {n["type"] for n in spec["nodes"]}
    assert {"conv2d", "batch_norm", "avg_pool2d", "max_pool2d", "layer_norm", "concat", "zero", "scale"} <= types
    by_fx = ntk.from_torch(m, (3, 8, 8), via="fx")
    by_onnx = ntk.from_torch(m, (3, 8, 8), via="onnx")
    assert sorted(by_fx.param_names) == sorted(k for k, _ in m.named_parameters())
    k_fx = ntk.empirical_ntk(by_fx, x, trace_axes=(), dtype="float64")
    ref = _torch_func_ntk(copy.deepcopy(m), x)
    assert rel_err(k_fx, ref) < 1e-10
    # The ONNX export's kernel: the same function and parameters (its float32 constants
    # widened), so the same kernel to f64 rounding.
    k_onnx = ntk.empirical_ntk(by_onnx, x, trace_axes=(), dtype="float64")
    assert rel_err(k_fx, k_onnx) < 1e-10
    # Forward passes agree with the module in f64.
    with torch.no_grad():
        f_ref = m.double().eval()(torch.as_tensor(x)).numpy()
    assert rel_err(ntk.forward(by_fx, x), f_ref) < 1e-12


def test_fx_refusals_name_the_node_and_auto_falls_back_to_onnx():
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from ntk.torch_spec import Untranslatable

    class Shift(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) + 0.25  # adding a constant has no graph-spec node

    m = Shift()
    with pytest.raises(Untranslatable, match="add"):
        ntk.from_torch(m, (4,), via="fx")
    x = np.random.default_rng(5).normal(size=(3, 4))
    k = ntk.empirical_ntk(m, x, trace_axes=(), dtype="float64")  # via the ONNX export
    assert rel_err(k, _torch_func_ntk(copy.deepcopy(m), x)) < 1e-10

    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.fc(x)))

    with pytest.raises(Untranslatable, match="called twice"):
        ntk.from_torch(Shared(), (4,), via="fx")
    with pytest.raises(ValueError, match="via"):
        ntk.from_torch(Shared(), (4,), via="jit")


def _te_nas_torch(m, x):
    """TE-NAS by hand: per-sample gradients of the sum of logits over 'weight' parameters."""
    import torch

    m = m.double().eval()
    xs = torch.as_tensor(x, dtype=torch.float64)
    ws = [p for n, p in m.named_parameters() if "weight" in n]
    rows = []
    for i in range(len(xs)):
        m.zero_grad(set_to_none=True)
        m(xs[i : i + 1]).sum().backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in ws]))
    g = torch.stack(rows)
    e = np.linalg.eigvalsh((g @ g.T).numpy())
    return e[-1] / e[0]


def test_score_torch_modules_at_their_weights_over_selected_parameters():
    torch = pytest.importorskip("torch")
    m1 = _fx_test_module(torch)
    torch.manual_seed(9)
    m2 = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    x = np.random.default_rng(6).normal(size=(7, 3, 8, 8))
    rows = ntk.score([m1, m2], x, names=["fx", "mlp"], params="weight", metrics=["te_nas_condition"])
    for r, m in zip(rows, [m1, m2]):
        assert r["error"] is None, r["error"]
        assert r["ntk_trace_norm"] is None and r["label_alignment"] is None
        ref = _te_nas_torch(copy.deepcopy(m), x)
        assert abs(r["te_nas_condition"] - ref) < 1e-8 * ref, (r["te_nas_condition"], ref)
    # The trace norm alone, over every parameter, equals trace(Θ)·O/n of the kernel.
    (r,) = ntk.score([m2], x, metrics="ntk_trace_norm")
    assert r["te_nas_condition"] is None
    tr = np.trace(ntk.empirical_ntk(m2, x, dtype="float64"))
    assert abs(r["ntk_trace_norm"] - tr * 4 / 7) < 1e-10 * tr
    with pytest.raises(ValueError, match="unknown metric"):
        ntk.score([m2], x, metrics=["accuracy"])


def test_ctrl_c_stops_a_long_call_within_a_second():
    import _thread
    import threading
    import time

    spec = {"input_shape": [64], "nodes": [
        {"name": "fc1", "type": "linear", "out_features": 512},
        {"name": "act", "type": "relu"},
        {"name": "fc2", "type": "linear", "out_features": 512},
        {"name": "act2", "type": "tanh"},
        {"name": "fc3", "type": "linear", "out_features": 10}]}
    net = ntk.load(spec)
    x = np.random.default_rng(7).normal(size=(3000, 64))
    # One sample's Jacobian takes milliseconds; all of them, tens of seconds.
    fired = {}

    def interrupt():
        fired["t"] = time.perf_counter()
        _thread.interrupt_main()

    timer = threading.Timer(1.0, interrupt)
    timer.start()
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        ntk.empirical_ntk(net, x, implementation="jacobian", dtype="float64")
    waited = time.perf_counter() - fired["t"]
    timer.join()
    assert time.perf_counter() - t0 < 10
    assert waited < 1.0, f"stopped {waited:.2f} s after Ctrl-C"
    # The engine is usable afterwards.
    assert ntk.empirical_ntk(net, x[:2]).shape == (2, 2)


def test_an_exception_in_the_progress_callback_stops_the_call():
    spec = {"input_shape": [8], "nodes": [
        {"name": "fc1", "type": "linear", "out_features": 16},
        {"name": "act", "type": "relu"},
        {"name": "fc2", "type": "linear", "out_features": 3}]}
    calls = []

    def progress(done, total):
        calls.append((done, total))
        raise RuntimeError("stop here")

    x = np.random.default_rng(8).normal(size=(64, 8))
    with pytest.raises(RuntimeError, match="stop here"):
        ntk.empirical_ntk(spec, x, trace_axes=(), progress=progress, max_memory=1 << 20)
    assert len(calls) == 1 and calls[0][1] > 1


def test_per_layer_ntk_sums_to_the_kernel():
    d = case("onnx-preact-resnet")
    x1, x2 = np.load(d / "x1.npy"), np.load(d / "x2.npy")
    parts = ntk.per_layer_ntk(d / "model.onnx", x1, x2, dtype="float64", trace_axes=())
    assert list(parts)[-1] == "fc" and len(parts) == 7
    total = sum(parts.values())
    assert rel_err(total, np.load(d / "expected_ntk_full.npy")) < 1e-10
    head = ntk.empirical_ntk(d / "model.onnx", x1, x2, dtype="float64", trace_axes=(),
                             params=r"^fc\.", implementation="jacobian")
    assert rel_err(parts["fc"], head) < 1e-10
    # trace_axes as for empirical_ntk; a sequential spec is refused with the way out.
    traced = ntk.per_layer_ntk(d / "model.onnx", x1, dtype="float64")
    assert traced["fc"].shape == (len(x1), len(x1))
    with pytest.raises(ValueError, match="graph spec"):
        ntk.per_layer_ntk(case("mlp-relu") / "spec.json", np.load(case("mlp-relu") / "x1.npy"))


def test_type_stubs_match_the_functions():
    import ast
    import inspect

    stubs = ast.parse((ROOT / "crates" / "ntk-py" / "python" / "ntk" / "__init__.pyi").read_text())
    checked = 0
    for node in stubs.body:
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
            continue
        a = node.args
        stub = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
        stub += [f"*{a.vararg.arg}"] if a.vararg else []
        stub += [f"**{a.kwarg.arg}"] if a.kwarg else []
        sig = inspect.signature(getattr(ntk, node.name))
        real = []
        for p in sig.parameters.values():
            prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
            real.append(prefix + p.name)
        order = lambda names: sorted(n for n in names if n.startswith("*")) + [n for n in names if not n.startswith("*")]
        assert order(stub) == order(real), f"{node.name}: stub {stub} vs {real}"
        checked += 1
    assert checked >= 10, checked
    # Every public function has a stub.
    missing = [n for n in ntk.__all__ if callable(getattr(ntk, n)) and not isinstance(getattr(ntk, n), type)
               and n not in {f.name for f in stubs.body if isinstance(f, ast.FunctionDef)}]
    assert not missing, missing
