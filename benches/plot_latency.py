#!/usr/bin/env python3
"""Latency against throughput: runs `strata-bench e2e` at a series of rates against one node it
starts itself, and plots p50/p99/p99.9 end-to-end latency (send to receipt) per rate.

    python3 benches/plot_latency.py [--rates 1000,2000,5000,10000,20000] [--seconds 5]
                                    [--out docs/latency-vs-throughput.png]

Needs matplotlib (pip install matplotlib) and a release build of strata and strata-bench
(cargo build --release -p strata-cli -p strata-bench). Prints the table it plots.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def run(bench, rate, seconds):
    records = max(1000, rate * seconds)
    with tempfile.TemporaryDirectory(prefix="strata-plot-") as cwd:
        out = subprocess.run(
            [bench, "e2e", "--spawn", "1", "--rate", str(rate), "--records", str(records), "--format", "json"],
            cwd=cwd, check=True, capture_output=True, text=True, timeout=seconds * 10 + 60,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="1000,2000,5000,10000,20000,40000")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--out", default="docs/latency-vs-throughput.png")
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    parser.add_argument("--bench", default=os.path.join(target, "release", "strata-bench"))
    args = parser.parse_args()
    args.bench = os.path.abspath(args.bench)

    rows = []
    print(f"{'rate':>8} {'achieved':>10} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}")
    for rate in (int(r) for r in args.rates.split(",")):
        result = run(args.bench, rate, args.seconds)
        rows.append((rate, result["records_per_s"], result["p50_ms"], result["p99_ms"], result["p999_ms"]))
        print(f"{rate:>8} {result['records_per_s']:>10.0f} {result['p50_ms']:>8.2f} "
              f"{result['p99_ms']:>8.2f} {result['p999_ms']:>9.2f}", flush=True)

    fig, ax = plt.subplots(figsize=(8, 5))
    achieved = [r[1] for r in rows]
    for index, label in ((2, "p50"), (3, "p99"), (4, "p99.9")):
        ax.plot(achieved, [r[index] for r in rows], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("throughput (records/s, 1 KiB records)")
    ax.set_ylabel("end-to-end latency, send to receipt (ms)")
    ax.set_title("Strata, one node, one partition, acks=all, fsync every append")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
