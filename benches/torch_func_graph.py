"""Real-network speed: `ntk empirical --method auto` (the whole command) against torch.func
in-process, interleaved, on a CIFAR ResNet-18 (torchvision block layout) and a small ViT.

For each model: build in PyTorch (f32, eval, random BatchNorm statistics), export to ONNX
(TorchScript exporter, do_constant_folding=False, dynamic batch), write x (N = 8). Then R
rounds; in each, in alternating order: one `ntk empirical` process (timed from outside,
peak RSS from /usr/bin/time) and torch.func's two methods in this process — Jacobian
contraction (vmap(jacrev) + einsum) and NTK-vector products (vmap over vjp of jvp) —
fastest of the two, after one warm-up call. Peak memory of torch.func is measured in a
separate process per method (/usr/bin/time). Checks that the kernels agree.

  /tmp/ntk-oracle-torch-venv/bin/python benches/torch_func_graph.py --rounds 3 --out R.json
"""
import argparse, json, os, subprocess, sys, tempfile, time, warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, jacrev, jvp, vjp, vmap


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3x3 stem (no max pool), four stages of two BasicBlocks, GAP, fc."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for i, c in enumerate([64, 128, 256, 512]):
            s = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, c, s), BasicBlock(c, c, 1)))
            cin = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Block(nn.Module):
    def __init__(self, d, heads, mlp):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, mlp)
        self.fc2 = nn.Linear(mlp, d)

    def forward(self, x):
        b, t, d = x.shape
        h = self.norm1(x)
        qkv = self.qkv(h).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
        x = x + self.proj((a @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """3x32x32, patch 4 (64 tokens), dim 192, depth 4, 3 heads, MLP 768, pre-norm,
    learned position embedding, mean pool, 10 classes."""

    def __init__(self, d=192, depth=4, heads=3, mlp=768, classes=10):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, 4)
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, 64, d))
        self.blocks = nn.Sequential(*[Block(d, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos_embed
        return self.head(self.norm(self.blocks(x)).mean(dim=1))


MODELS = {"resnet18": ResNet18, "vit": ViT}


def make(name, folder, n):
    torch.manual_seed(0)
    m = MODELS[name]().eval()
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            with torch.no_grad():
                mod.running_mean.copy_(torch.rand(mod.running_mean.shape, generator=g) - 0.5)
                mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=g))
    x = torch.randn(n, 3, 32, 32, generator=g)
    onnx = os.path.join(folder, f"{name}.onnx")
    kw = dict(opset_version=17, do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL,
              input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    try:  # the TorchScript exporter (the newest torch defaults to dynamo, which folds BN)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(m, x[:1], onnx, dynamo=False, **kw)
    except TypeError:  # torch < 2.5: no `dynamo` argument
        torch.onnx.export(m, x[:1], onnx, **kw)
    np.save(os.path.join(folder, f"{name}_x.npy"), x.numpy())
    return m, x, onnx


def entk_jacobian(m, params, x):
    def f(p, xs):
        return functional_call(m, p, (xs.unsqueeze(0),)).squeeze(0)
    j = vmap(jacrev(f), (None, 0))(params, x)
    return sum(torch.einsum("Naf,Mbf->NMab", a.flatten(2), a.flatten(2)) for a in j.values())


def entk_vp(m, params, x):
    def f(p, xs):
        return functional_call(m, p, (xs,))
    def one(xa, xb):
        _, vjp_fn = vjp(lambda p: f(p, xb.unsqueeze(0)), params)
        def ntk_col(v):
            vj = vjp_fn(v.unsqueeze(0))[0]
            return jvp(lambda p: f(p, xa.unsqueeze(0)), (params,), (vj,))[1].squeeze(0)
        eye = torch.eye(10)
        return vmap(ntk_col)(eye).T
    return vmap(vmap(one, (None, 0)), (0, None))(x, x)


def time_torch(m, x, method):
    params = {k: v.detach() for k, v in m.named_parameters()}
    fn = entk_jacobian if method == "jacobian" else entk_vp
    with torch.no_grad():
        pass
    fn(m, params, x)  # warm-up
    t = time.perf_counter()
    k = fn(m, params, x)
    return time.perf_counter() - t, k.detach().numpy()


def run_ntk(binary, onnx, xfile, out):
    cmd = ["/usr/bin/time", "-v", binary, "empirical", "--spec", onnx, "--x1", xfile,
           "--dtype", "f32", "--method", "auto", "--max-memory", "6GiB", "--out", out]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"ntk failed: {p.stderr}")
    rss = next(int(l.split()[-1]) for l in p.stderr.splitlines() if "Maximum resident" in l)
    return wall, rss / 1024.0, p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="resnet18,vit")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--ntk", default="target/debug/ntk")
    ap.add_argument("--out", default=None)
    ap.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    folder = tempfile.mkdtemp(prefix="ntk-bench-")
    if a.memory_of:  # child: peak memory of one torch.func method
        name, method = a.memory_of.split(":")
        m, x, _ = make(name, folder, a.n)
        time_torch(m, x, method)
        return
    report = {}
    for name in a.models.split(","):
        m, x, onnx = make(name, folder, a.n)
        xfile = os.path.join(folder, f"{name}_x.npy")
        kout = os.path.join(folder, f"{name}_K.npy")
        rows = []
        for r in range(a.rounds):
            order = ["ntk", "torch"] if r % 2 == 0 else ["torch", "ntk"]
            row = {}
            for who in order:
                if who == "ntk":
                    row["ntk_s"], row["ntk_rss_mib"], log = run_ntk(a.ntk, onnx, xfile, kout)
                else:
                    tj, kj = time_torch(m, x, "jacobian")
                    tv, kv = time_torch(m, x, "ntk_vp")
                    row["torch_jacobian_s"], row["torch_ntk_vp_s"] = tj, tv
                    row["torch_best_s"] = min(tj, tv)
            row["ratio"] = row["torch_best_s"] / row["ntk_s"]
            rows.append(row)
            print(name, r, json.dumps(row), flush=True)
        k = np.load(kout)
        err = float(np.abs(k - kj).max() / np.abs(kj).max())
        mem = {}
        for method in ["jacobian", "ntk_vp"]:
            # Under /usr/bin/time: a child forked from this process would report this
            # process's peak as its own (Linux keeps ru_maxrss across fork and exec).
            p = subprocess.run(["/usr/bin/time", "-v", sys.executable, __file__, "--memory-of",
                                f"{name}:{method}", "--n", str(a.n)], capture_output=True, text=True)
            mem[method] = (next(int(l.split()[-1]) for l in p.stderr.splitlines() if "Maximum resident" in l)
                           / 1024.0 if p.returncode == 0 else None)
        med = lambda key: float(np.median([r[key] for r in rows]))
        report[name] = {
            "rounds": rows, "median_ratio": med("ratio"), "ntk_median_s": med("ntk_s"),
            "torch_best_median_s": med("torch_best_s"), "ntk_peak_rss_mib": max(r["ntk_rss_mib"] for r in rows),
            "torch_peak_rss_mib": mem, "kernel_rel_err_vs_torch": err, "ntk_log": log.splitlines()[0],
        }
        print(name, json.dumps({k: v for k, v in report[name].items() if k != "rounds"}), flush=True)
    if a.out:
        json.dump(report, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
