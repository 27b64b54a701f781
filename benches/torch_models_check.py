"""Checks `ntk empirical` on PyTorch models the shared cases do not have: each model is
exported (TorchScript exporter, do_constant_folding=False, dynamic batch), its f64 full
eNTK by structured and jacobian is compared with torch.func's (vmap(jacrev), f64, same
f32 weights), plus the parameter names.

  /tmp/ntk-oracle-torch-venv/bin/python benches/torch_models_check.py [--ntk target/debug/ntk]
"""
import argparse, os, subprocess, sys, tempfile
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from torch.func import functional_call, jacrev, vmap


class Mixer(nn.Module):
    """MLP-Mixer: patch embedding, token-mixing and channel-mixing MLPs with LayerNorm."""
    def __init__(self, d=12, t=16, h=20, classes=4):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 2, 2)
        self.norm1 = nn.LayerNorm(d)
        self.tok1, self.tok2 = nn.Linear(t, h), nn.Linear(h, t)
        self.norm2 = nn.LayerNorm(d)
        self.ch1, self.ch2 = nn.Linear(d, h), nn.Linear(h, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # [B, T, D]
        y = self.norm1(x).transpose(1, 2)
        x = x + self.tok2(F.gelu(self.tok1(y))).transpose(1, 2)
        x = x + self.ch2(F.gelu(self.ch1(self.norm2(x))))
        return self.head(x.mean(1))


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 6, 5), nn.Conv2d(6, 8, 3, padding=1)
        self.f1, self.f2 = nn.Linear(8 * 2 * 2, 16), nn.Linear(16, 3)

    def forward(self, x):
        x = F.max_pool2d(torch.tanh(self.c1(x)), 2)
        x = F.avg_pool2d(torch.sigmoid(self.c2(x)), 2)
        return self.f2(F.elu(self.f1(x.flatten(1))))


class Cell(nn.Module):
    """NAS-Bench-201-style: ReLU-conv-BN edges, avg-pool, skip, zero; depthwise conv."""
    def __init__(self, c=6):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.e10 = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.e21 = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
        self.dw = nn.Conv2d(c, c, 3, stride=2, padding=1, groups=c)
        self.head = nn.Linear(c, 5)

    def forward(self, x):
        x0 = self.stem(x)
        x1 = self.e10(x0)
        x2 = F.avg_pool2d(x0, 3, 1, 1, count_include_pad=False) + self.e21(x1)
        x3 = x1 + x2 + 0 * x0
        y = F.leaky_relu(self.dw(x3), 0.1)
        return self.head(F.adaptive_avg_pool2d(y, 1).flatten(1))


MODELS = {"mixer": (Mixer, (3, 8, 8)), "lenet": (LeNet, (3, 12, 12)), "nas-cell": (Cell, (3, 8, 8))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ntk", default="target/debug/ntk")
    a = ap.parse_args()
    d = tempfile.mkdtemp()
    worst = 0.0
    for name, (cls, shape) in MODELS.items():
        torch.manual_seed(0)
        m = cls().eval()
        g = torch.Generator().manual_seed(1)
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                with torch.no_grad():
                    mod.running_mean.copy_(torch.rand(mod.running_mean.shape, generator=g) - 0.5)
                    mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=g))
        x = torch.randn(3, *shape, generator=g)
        onnx = os.path.join(d, f"{name}.onnx")
        torch.onnx.export(m, x[:1], onnx, opset_version=17, do_constant_folding=False,
                          training=torch.onnx.TrainingMode.EVAL, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
        np.save(os.path.join(d, "x.npy"), x.numpy())
        md = m.double()
        p = {k: v.detach() for k, v in md.named_parameters()}
        j = vmap(jacrev(lambda p, xs: functional_call(md, p, (xs[None],))[0]), (None, 0))(p, x.double())
        ref = sum(torch.einsum("naf,mbf->nmab", t.flatten(2), t.flatten(2)) for t in j.values()).numpy()
        for method in ["structured", "jacobian"]:
            out = os.path.join(d, "K.npy")
            r = subprocess.run([a.ntk, "empirical", "--spec", onnx, "--x1", os.path.join(d, "x.npy"),
                                "--method", method, "--out", out], capture_output=True, text=True)
            if r.returncode:
                print(name, method, "FAILED:", r.stderr.strip()); worst = np.inf; continue
            k = np.load(out)
            err = float(abs(k - ref).max() / abs(ref).max())
            worst = max(worst, err)
            print(f"{name:9s} {method:10s} rel err {err:.2e}  ({len(p)} parameter tensors; {r.stderr.strip()})")
    print("worst", worst)
    sys.exit(0 if worst < 1e-10 else 1)


if __name__ == "__main__":
    main()
