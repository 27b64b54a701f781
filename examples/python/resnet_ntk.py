"""The NTK of a ResNet defined in PyTorch, from Python, in a few lines — checked against
torch.func.

A small torchvision-style ResNet (3x3 stem, BasicBlocks with BatchNorm and a strided 1x1
projection shortcut, global average pool, linear head) on CIFAR-sized inputs:

1. `ntk.empirical_ntk(model, x)`: the module is traced by torch.fx and translated to a
   graph spec, its weights handed over by name (BatchNorm kept, eval mode), and its
   trace NTK computed by the Rust engine;
2. the full kernel `[N, N, O, O]` in float64, compared with torch.func's Jacobian
   contraction (vmap(jacrev) + einsum) on the same weights;
3. its spectrum and label alignment with `ntk.analysis`, and an NTK regression
   prediction with `ntk.predict`.

    pip install ./crates/ntk-py torch onnx      # (and onnxscript for the newest torch)
    python examples/python/resnet_ntk.py [--width 16] [--n 8]
"""
import argparse
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, jacrev, vmap

import ntk


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    def __init__(self, width=16, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = BasicBlock(width, width, 1)
        self.layer2 = BasicBlock(width, 2 * width, 2)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(x.mean(dim=(2, 3)))


def torch_func_ntk(model, x):
    """Θ[n, m, a, b] = Σ_p ∂f_a(x_n)/∂θ_p ∂f_b(x_m)/∂θ_p, by vmap(jacrev) (float64)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def f(p, xi):
        return functional_call(model, (p, buffers), (xi[None],))[0]

    jac = vmap(jacrev(f), (None, 0))(params, x)
    return sum(torch.einsum("naj,mbj->nmab", j.flatten(2), j.flatten(2)) for j in jac.values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = ResNet(a.width)
    # BatchNorm with non-trivial running statistics, as after training.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = np.random.default_rng(0).normal(size=(a.n, 3, 32, 32)).astype(np.float32)

    t0 = time.perf_counter()
    k = ntk.empirical_ntk(model, x)  # [N, N], trace over the outputs (mean), float32
    print(f"trace NTK {k.shape} in {time.perf_counter() - t0:.2f} s (export + kernel)")

    full = ntk.empirical_ntk(model, x, trace_axes=(), dtype="float64")  # [N, N, O, O]
    ref = torch_func_ntk(model.double(), torch.as_tensor(x, dtype=torch.float64)).numpy()
    err = np.abs(full - ref).max() / np.abs(ref).max()
    print(f"full NTK {full.shape}, float64, against torch.func: {err:.1e} relative")
    assert err < 1e-10, err

    s = ntk.analysis.spectrum(k)
    labels = np.arange(a.n) % 2
    raw, centred = ntk.analysis.alignment(k, labels)
    print(f"condition number {s['condition_number']:.3g}, effective rank "
          f"{s['effective_rank_participation']:.2f}, label alignment (centred) {centred:.3f}")
    y = np.eye(2)[labels] - 0.5
    train, test = np.arange(a.n // 2), np.arange(a.n // 2, a.n)
    kk = k.astype(np.float64)
    mean = ntk.predict.gp_inference(kk[np.ix_(train, train)], y[train], diag_reg=1e-3)(kk[np.ix_(test, train)])
    print(f"NTK regression on {len(test)} held-out inputs: mean {mean.round(3).tolist()}")


if __name__ == "__main__":
    main()
