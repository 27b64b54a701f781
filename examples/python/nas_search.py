"""Training-free architecture search on NAS-Bench-201 with ntk.

Builds random NAS-Bench-201 networks in PyTorch — the benchmark's macro skeleton:
a 3×3 conv stem, three stages of five cells (C = 16, 32, 64) joined by residual
reduction blocks, BatchNorm-ReLU, global average pooling and a linear classifier;
each cell a 4-node DAG whose six edges are one of none (zero), skip, ReLU-conv1×1-BN,
ReLU-conv3×3-BN, avg-pool 3×3 — and scores them with ``ntk.score`` on a batch of 64
32×32 inputs:

- TE-NAS (Chen et al. 2021): condition number of the sum-of-logits NTK over the
  parameters named ``weight`` (lower is better);
- NASI (Shu et al. 2022): the NTK's trace norm per sample, over the same parameters.

With ``--check``, every network is also scored by a hand-written TE-NAS torch autograd
loop (per-sample backward of the sum of logits, the Gram matrix of the gradients, its
condition number; eval-mode BatchNorm; float64 on both sides): the scores must agree to
1e-6 relative (a numerically singular kernel — λmin ≤ n·ε·λmax, e.g. all-zero edges —
is ``inf`` on both sides), and the end-to-end times are printed side by side.

    python examples/python/nas_search.py --n 100 --check     # the benchmark
    python examples/python/nas_search.py --n 5 --check       # what CI runs
"""

import argparse
import math
import sys
import time

import numpy as np
import torch
import torch.nn as nn

import ntk

OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
EDGES = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]


class Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


class ReLUConvBN(nn.Module):
    def __init__(self, c_in, c_out, kernel, stride, padding):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x):
        return self.op(x)


def make_op(name, c):
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1, 0)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(name)


class Cell(nn.Module):
    """Node i = Σ_{j<i} edge_{i←j}(node j); the cell's output is node 3."""

    def __init__(self, ops, c):
        super().__init__()
        self.edges = nn.ModuleDict({f"{i}<-{j}": make_op(op, c) for (i, j), op in zip(EDGES, ops)})

    def forward(self, x):
        nodes = [x]
        for i in range(1, 4):
            nodes.append(sum(self.edges[f"{i}<-{j}"](nodes[j]) for j in range(i)))
        return nodes[-1]


class ResidualReduction(nn.Module):
    """NAS-Bench-201's ResNet basic block between stages: stride 2, channels doubled."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, 1, stride=1, padding=0, bias=False),
        )

    def forward(self, x):
        return self.conv_b(self.conv_a(x)) + self.downsample(x)


class NasBench201(nn.Module):
    def __init__(self, ops, c=16, cells_per_stage=5, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        cells = []
        for stage in range(3):
            if stage > 0:
                cells.append(ResidualReduction(c, 2 * c))
                c *= 2
            cells.extend(Cell(ops, c) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        out = self.lastact(self.cells(self.stem(x)))
        out = self.global_pooling(out)
        return self.classifier(out.view(out.size(0), -1))


def arch_string(ops):
    o = [f"{op}~{j}" for (_, j), op in zip(EDGES, ops)]
    return f"|{o[0]}|+|{o[1]}|{o[2]}|+|{o[3]}|{o[4]}|{o[5]}|"


def singular_aware_condition(eigs):
    """λmax/λmin of ascending eigenvalues; inf when λmin ≤ n·ε·λmax (numerically singular)."""
    lmin, lmax = float(eigs[0]), float(eigs[-1])
    if lmin <= lmax * len(eigs) * np.finfo(np.float64).eps:
        return math.inf
    return lmax / lmin


def te_nas_torch(model, x, dtype=torch.float64):
    """TE-NAS's score by torch autograd: per-sample gradients of the sum of logits over the
    parameters named 'weight', their Gram matrix, its condition number (in ``dtype``; the
    eigenvalues in float64)."""
    model = model.to(dtype).eval()
    x = torch.as_tensor(x, dtype=dtype)
    weights = [p for name, p in model.named_parameters() if "weight" in name]
    rows = []
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        model(x[i : i + 1]).sum().backward()
        rows.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in weights]))
    g = torch.stack(rows)
    eigs = torch.linalg.eigvalsh((g @ g.T).double()).numpy()
    return singular_aware_condition(eigs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="random networks (default 100)")
    ap.add_argument("--batch", type=int, default=64, help="inputs scored on (default 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="compare with the torch TE-NAS loop and time both")
    ap.add_argument("--max-memory-gib", type=float, default=6.0,
                    help="ntk's working-memory bound, shared by the networks scored at once "
                         "(default 6: one tile per float64 network, two at a time)")
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    archs = [[OPS[k] for k in rng.integers(0, len(OPS), size=6)] for _ in range(args.n)]
    if args.n >= 2:
        archs[1] = ["none"] * 6  # a singular kernel: inf on both sides
    nets = []
    for i, ops in enumerate(archs):
        torch.manual_seed(args.seed * 100003 + i)
        nets.append(NasBench201(ops).eval())
    x = rng.normal(size=(args.batch, 3, 32, 32))
    names = [arch_string(ops) for ops in archs]

    mem = int(args.max_memory_gib * (1 << 30))
    # ntk: TE-NAS condition number, handed over by torch.fx, scored in parallel (f64).
    t0 = time.perf_counter()
    te = ntk.score(nets, x, names=names, params="weight", metrics=["te_nas_condition"], dtype="float64",
                    max_memory=mem)
    t_ntk = time.perf_counter() - t0
    errors = [r for r in te if r.get("error")]
    if errors:
        for r in errors:
            print(f"error: {r['name']}: {r['error']}", file=sys.stderr)
        sys.exit(1)

    # NASI trace norm (the trace NTK over the outputs: O = 10 times the work).
    t0 = time.perf_counter()
    nasi = ntk.score(nets, x, names=names, params="weight", metrics=["ntk_trace_norm"], dtype="float64",
                      max_memory=mem)
    t_nasi = time.perf_counter() - t0

    print(f"{len(nets)} NAS-Bench-201 networks (C=16, 5 cells/stage), batch {args.batch}, float64")
    print(f"{'arch':<70} {'TE-NAS cond':>12} {'NASI trace':>12}")
    order = sorted(range(len(nets)), key=lambda i: te[i]["te_nas_condition"])
    for i in order[: min(10, len(order))]:
        print(f"{names[i]:<70} {te[i]['te_nas_condition']:>12.4e} {nasi[i]['ntk_trace_norm']:>12.4e}")
    print(f"ntk.score TE-NAS: {t_ntk:.2f} s ({t_ntk / len(nets) * 1000:.0f} ms per network, hand-over included)")
    print(f"ntk.score NASI trace norm: {t_nasi:.2f} s")

    if args.check:
        t0 = time.perf_counter()
        ref = [te_nas_torch(net, x) for net in nets]
        t_torch = time.perf_counter() - t0
        worst = 0.0
        bad = []
        for name, r, c in zip(names, te, ref):
            ours = r["te_nas_condition"]
            if math.isinf(c) or math.isinf(ours):
                if not (math.isinf(c) and math.isinf(ours)):
                    bad.append((name, ours, c))
                continue
            rel = abs(ours - c) / abs(c)
            worst = max(worst, rel)
            if rel > 1e-6:
                bad.append((name, ours, c))
        n_inf = sum(math.isinf(c) for c in ref)
        print(f"torch TE-NAS loop: {t_torch:.2f} s ({t_torch / len(nets) * 1000:.0f} ms per network)")
        print(f"float64 speed-up, end to end: {t_torch / t_ntk:.1f}x")
        print(f"agreement: worst relative difference {worst:.2e} over {len(nets) - n_inf} finite scores, "
              f"{n_inf} singular (inf) on both sides")
        # The same comparison of times in float32, as TE-NAS runs (scores not compared:
        # condition numbers are too ill-conditioned for f32 agreement).
        t0 = time.perf_counter()
        ntk.score(nets, x, names=names, params="weight", metrics=["te_nas_condition"], dtype="float32",
                  max_memory=mem)
        t_ntk32 = time.perf_counter() - t0
        t0 = time.perf_counter()
        for net in nets:
            te_nas_torch(net, x, torch.float32)
        t_torch32 = time.perf_counter() - t0
        print(f"float32: ntk.score {t_ntk32:.2f} s, torch loop {t_torch32:.2f} s: "
              f"speed-up {t_torch32 / t_ntk32:.1f}x")
        if bad:
            for name, ours, c in bad:
                print(f"MISMATCH {name}: ntk {ours!r}, torch {c!r}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
