"""Python overhead of `ntk.empirical_ntk` over the Rust library call, on the perf cases.

For each case the CLI (`ntk empirical`, which reports the seconds of its library call in
its last line) and the Python call on a loaded network run interleaved, `--rounds` times;
the overhead is median(Python) / median(library) − 1. Run from the repository root after
`cargo build --bin ntk` and `pip install ./crates/ntk-py`:

    python benches/python_overhead.py [--rounds 5] [--cases ../shared/cases]
"""
import argparse
import pathlib
import re
import statistics
import subprocess
import time

import numpy as np

import ntk


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cases", default="../shared/cases")
    ap.add_argument("--ntk", default="target/debug/ntk")
    args = ap.parse_args()
    print(f"{'case':<14} {'library (s)':>12} {'python (s)':>11} {'overhead':>9}")
    for name in ["perf-mlp", "perf-mlp-deep", "perf-cnn"]:
        d = pathlib.Path(args.cases) / name
        if not d.is_dir():
            continue
        x1, x2 = np.load(d / "x1.npy"), np.load(d / "x2.npy")
        net = ntk.load(d / "spec.json")
        lib, py = [], []
        for _ in range(args.rounds):
            out = subprocess.run(
                [args.ntk, "empirical", "--spec", str(d / "spec.json"), "--x1", str(d / "x1.npy"),
                 "--x2", str(d / "x2.npy"), "--kernel", "full", "--out", "/tmp/ntk-overhead.npy"],
                capture_output=True, text=True, check=True)
            lib.append(float(re.findall(r"([0-9.]+) s\)", out.stderr + out.stdout)[-1]))
            t0 = time.perf_counter()
            ntk.empirical_ntk(net, x1, x2, trace_axes=())
            py.append(time.perf_counter() - t0)
        ml, mp = statistics.median(lib), statistics.median(py)
        print(f"{name:<14} {ml:>12.3f} {mp:>11.3f} {100 * (mp / ml - 1):>8.1f}%")


if __name__ == "__main__":
    main()
