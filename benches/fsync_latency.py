#!/usr/bin/env python3
"""Raw limit for the end-to-end latency target: the latency of one small write + fdatasync.

    python3 benches/fsync_latency.py [count] [bytes] [dir]

Appends `count` writes of `bytes` bytes to a fresh file in `dir` (default: the current
directory, so run it on the disk the data dir is on), each followed by an fdatasync, and
prints the rate and the p50/p99/p99.9/max latency of each write+fdatasync.
"""
import os
import sys
import time

count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
size = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
path = os.path.join(sys.argv[3] if len(sys.argv) > 3 else ".", "fsync-latency.tmp")
fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
try:
    buf = b"x" * size
    latencies = []
    started = time.perf_counter()
    for _ in range(count):
        t = time.perf_counter()
        os.write(fd, buf)
        os.fdatasync(fd)
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
finally:
    os.close(fd)
    os.unlink(path)
latencies.sort()


def ms(q):
    return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000


print(
    f"{count} x {size} B write+fdatasync: {count / elapsed:.0f}/s, p50 {ms(0.5):.3f} ms, "
    f"p99 {ms(0.99):.3f} ms, p99.9 {ms(0.999):.3f} ms, max {latencies[-1] * 1000:.1f} ms"
)
