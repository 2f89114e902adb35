#!/usr/bin/env python3
"""Does this machine's CPU stall by itself? A tail-latency raw limit.

    python3 benches/cpu_stall_probe.py [seconds]

Runs a fixed busy loop in 5 ms windows, resting 5 ms between them, and counts how much work
each window got done. It prints the windows that got less than 60 % of the median (the CPU ran
slower or not at all), and when each run of such windows began. Run it on an idle machine: on a
shared VM, periodic slowdowns show up here with no Strata process running, and every request
that falls into one waits for it.
"""
import sys
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
windows = []
started = time.perf_counter()
while True:
    window_start = time.perf_counter()
    work = 0
    while time.perf_counter() - window_start < 0.005:
        for _ in range(100):
            work += 1
    windows.append((window_start - started, work))
    if window_start - started > seconds:
        break
    time.sleep(0.005)

median = sorted(w for _, w in windows)[len(windows) // 2]
slow = [(round(t, 2), round(w / median, 2)) for t, w in windows if w < 0.6 * median]
starts = [t for i, (t, _) in enumerate(slow) if i == 0 or t - slow[i - 1][0] > 0.2]
print(f"{len(windows)} windows of 5 ms; {len(slow)} below 60 % of the median "
      f"({100 * len(slow) / len(windows):.1f} % of the time)")
print("slow runs began at (s):", starts)
