#!/usr/bin/env python3
"""Interleaved timing of neural-tangents and ntk on the perf cases (f32, full kernel).

This machine's speed drifts by tens of percent over minutes (a shared VM), so the two are
timed in alternation: in each round, case by case, neural-tangents' fastest implementation
(STRUCTURED_DERIVATIVES, via shared/oracle/perf_anchor.py, one process, jitted, median of
--repeats) and `ntk bench` (one process, median of --repeats) run right after one another,
in alternating order from round to round, and the ratio is taken within the pair. Reports
every round and the median ratio over rounds.

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
def time_nt(case):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        anchor = f.name
    subprocess.run([sys.executable, os.path.join(a.oracle, "perf_anchor.py"), "--cases-dir", a.cases_dir,
                    "--cases", case, "--impls", "3", "--repeats", str(a.repeats), "--out", anchor],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=a.oracle)
    nt = json.load(open(anchor))
    os.unlink(anchor)
    sd = nt["cases"][case]["neural_tangents"]["STRUCTURED_DERIVATIVES"]
    return sd["median_s"] * 1e3, sd.get("peak_rss_mib")


def time_ours(case):
    out = subprocess.run([a.ntk, "bench", "--cases-dir", a.cases_dir, "--cases", case, "--methods", a.methods,
                          "--repeats", str(a.repeats)], check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 5 and cells[0] == case:
            rows[cells[1]] = (float(cells[2]), float(cells[-1]))
    return rows


rounds = []
for r in range(a.rounds):
    row = {}
    for c in cases:
        # Each case is timed by both right after one another, in alternating order, so that
        # a slow stretch of the machine hits both sides of a ratio.
        if r % 2 == 0:
            (nt_ms, nt_rss), ours = time_nt(c), time_ours(c)
        else:
            ours, (nt_ms, nt_rss) = time_ours(c), time_nt(c)
        for m, (ms, rss) in ours.items():
            row.setdefault(c, {})[m] = {"ours_ms": ms, "nt_ms": nt_ms, "ratio": nt_ms / ms,
                                        "peak_rss_mib": rss, "nt_peak_rss_mib": nt_rss}
    rounds.append(row)
    print(f"round {r + 1}: " + ", ".join(f"{c} {row[c]['structured']['ratio']:.2f}x" for c in cases), flush=True)
summary = {}
print("| case | method | ours ms (median over rounds) | NT ms | NT / ours per round | median |")
print("|---|---|---|---|---|---|")
for c in cases:
    for m in rounds[0][c]:
        ratios = [rd[c][m]["ratio"] for rd in rounds]
        ours = statistics.median(rd[c][m]["ours_ms"] for rd in rounds)
        nt_ms = statistics.median(rd[c][m]["nt_ms"] for rd in rounds)
        rss = statistics.median(rd[c][m]["peak_rss_mib"] for rd in rounds)
        nt_rss = [rd[c][m]["nt_peak_rss_mib"] for rd in rounds if rd[c][m]["nt_peak_rss_mib"] is not None]
        summary.setdefault(c, {})[m] = {"ratios": ratios, "median_ratio": statistics.median(ratios),
                                        "ours_ms": ours, "nt_ms": nt_ms, "ours_peak_rss_mib": rss,
                                        "nt_peak_rss_mib": statistics.median(nt_rss) if nt_rss else None}
        print(f"| {c} | {m} | {ours:.2f} | {nt_ms:.2f} | {' '.join(f'{x:.2f}' for x in ratios)} | {statistics.median(ratios):.2f}x |")
if a.out:
    json.dump({"protocol": " ".join(__doc__.strip().split("\n\n")[1].split()), "repeats": a.repeats, "rounds": rounds,
               "summary": summary}, open(a.out, "w"), indent=1)
