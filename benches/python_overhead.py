#!/usr/bin/env python3
"""Python overhead of `ntk.empirical_ntk` over the Rust library call, on the perf cases.

Interleaved rounds, each: `ntk bench --methods auto` (the in-process `empirical_kernel`
call of the Rust library: f32 full kernel [N, N, O, O] of x1 against x2, median of
--repeats), then the same kernel from Python, `ntk.empirical_ntk(spec, x1, x2,
trace_axes=(), dtype="float32")`, timed around the call (network built from the spec,
inputs handed over, the kernel returned as a numpy array; median of --repeats). The
overhead is `python / rust − 1` per case, and its median over the rounds.

    python benches/python_overhead.py [--cases perf-mlp,perf-cnn,perf-mlp-deep]
        [--rounds 3] [--repeats 7] [--ntk target/debug/ntk] [--cases-dir ../shared/cases]

Needs the package installed (`pip install ./crates/ntk-py`) and the `ntk` binary built.
"""
import argparse
import json
import pathlib
import re
import statistics
import subprocess
import time

import numpy as np

import ntk

ROOT = pathlib.Path(__file__).resolve().parents[1]


def rust_ms(exe, cases_dir, case, repeats):
    out = subprocess.run(
        [exe, "bench", "--cases-dir", cases_dir, "--cases", case, "--methods", "auto",
         "--repeats", str(repeats)],
        check=True, capture_output=True, text=True,
    ).stdout
    row = next(l for l in out.splitlines() if l.startswith(f"| {case} |"))
    return float(row.split("|")[3])


def python_ms(case_dir, repeats):
    x1 = np.load(case_dir / "x1.npy")
    x2 = np.load(case_dir / "x2.npy")
    spec = case_dir / "spec.json"
    ntk.empirical_ntk(spec, x1, x2, trace_axes=(), dtype="float32", max_memory=16 << 30)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        k = ntk.empirical_ntk(spec, x1, x2, trace_axes=(), dtype="float32", max_memory=16 << 30)
        times.append((time.perf_counter() - t0) * 1e3)
        assert k.dtype == np.float32
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="perf-mlp,perf-cnn,perf-mlp-deep")
    ap.add_argument("--cases-dir", default=str(ROOT.parent / "shared" / "cases"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--ntk", default=str(ROOT / "target" / "debug" / "ntk"))
    ap.add_argument("--json")
    a = ap.parse_args()
    cases = a.cases.split(",")
    rows = {c: [] for c in cases}
    for r in range(a.rounds):
        for c in cases:
            rust = rust_ms(a.ntk, a.cases_dir, c, a.repeats)
            py = python_ms(pathlib.Path(a.cases_dir) / c, a.repeats)
            rows[c].append((rust, py))
            print(f"round {r + 1} {c}: rust {rust:.2f} ms, python {py:.2f} ms, overhead {100 * (py / rust - 1):+.1f}%",
                  flush=True)
    print("| case | rust ms (median) | python ms (median) | overhead (median of rounds) |")
    print("|---|---|---|---|")
    report = {}
    for c in cases:
        over = statistics.median(p / r - 1 for r, p in rows[c])
        rm = statistics.median(r for r, _ in rows[c])
        pm = statistics.median(p for _, p in rows[c])
        print(f"| {c} | {rm:.2f} | {pm:.2f} | {100 * over:+.1f}% |")
        report[c] = {"rust_ms": [r for r, _ in rows[c]], "python_ms": [p for _, p in rows[c]],
                     "overhead_median": over}
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
