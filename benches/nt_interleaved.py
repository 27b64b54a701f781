#!/usr/bin/env python3
"""Interleaved timing of neural-tangents and ntk on the perf cases (f32, full kernel).

This machine's speed drifts by tens of percent over minutes (a shared VM), so the two are
timed in alternation: each round runs neural-tangents' fastest implementation
(STRUCTURED_DERIVATIVES, via shared/oracle/perf_anchor.py, one process per case, jitted,
median of --repeats) and then `ntk bench` (median of --repeats), and the ratio is taken
within the round. Reports every round and the median ratio over rounds.

  bash ../shared/oracle/setup.sh        # the oracle venv, once
  cargo build                           # target/debug/ntk
  /tmp/ntk-oracle-venv/bin/python benches/nt_interleaved.py --rounds 5 --out benches/results/interleaved.json
"""
import argparse, json, os, subprocess, statistics, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--repeats", type=int, default=11)
ap.add_argument("--cases-dir", default=os.path.join(ROOT, "..", "shared", "cases"))
ap.add_argument("--oracle", default=os.path.join(ROOT, "..", "shared", "oracle"))
ap.add_argument("--ntk", default=os.path.join(ROOT, "target", "debug", "ntk"))
ap.add_argument("--methods", default="structured,structured-nosym")
ap.add_argument("--out")
a = ap.parse_args()
cases = ["perf-mlp", "perf-cnn", "perf-mlp-deep"]
rounds = []
for r in range(a.rounds):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        anchor = f.name
    subprocess.run([sys.executable, os.path.join(a.oracle, "perf_anchor.py"), "--cases-dir", a.cases_dir,
                    "--impls", "3", "--repeats", str(a.repeats), "--out", anchor],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=a.oracle)
    nt = json.load(open(anchor))
    out = subprocess.run([a.ntk, "bench", "--cases-dir", a.cases_dir, "--methods", a.methods,
                          "--repeats", str(a.repeats), "--anchor", anchor],
                         check=True, capture_output=True, text=True).stdout
    row = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 5 and cells[0] in cases:
            nt_ms = nt["cases"][cells[0]]["neural_tangents"]["STRUCTURED_DERIVATIVES"]["median_s"] * 1e3
            row.setdefault(cells[0], {})[cells[1]] = {"ours_ms": float(cells[2]), "nt_ms": nt_ms,
                                                      "ratio": nt_ms / float(cells[2]),
                                                      "peak_rss_mib": float(cells[-1])}
    rounds.append(row)
    print(f"round {r + 1}: " + ", ".join(f"{c} {row[c]['structured']['ratio']:.2f}x" for c in cases), flush=True)
    os.unlink(anchor)
summary = {}
print("| case | method | ours ms (median over rounds) | NT ms | NT / ours per round | median |")
print("|---|---|---|---|---|---|")
for c in cases:
    for m in rounds[0][c]:
        ratios = [rd[c][m]["ratio"] for rd in rounds]
        ours = statistics.median(rd[c][m]["ours_ms"] for rd in rounds)
        nt_ms = statistics.median(rd[c][m]["nt_ms"] for rd in rounds)
        summary.setdefault(c, {})[m] = {"ratios": ratios, "median_ratio": statistics.median(ratios),
                                        "ours_ms": ours, "nt_ms": nt_ms}
        print(f"| {c} | {m} | {ours:.2f} | {nt_ms:.2f} | {' '.join(f'{x:.2f}' for x in ratios)} | {statistics.median(ratios):.2f}x |")
if a.out:
    json.dump({"protocol": __doc__.strip().splitlines()[0], "repeats": a.repeats, "rounds": rounds,
               "summary": summary}, open(a.out, "w"), indent=1)
