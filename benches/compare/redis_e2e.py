#!/usr/bin/env python3
"""End-to-end latency of Redis Streams, the way `strata-bench e2e` measures Strata's.

    python3 benches/compare/redis_e2e.py PORT [RATE] [RECORDS]

One process appends RECORDS entries of 1 KiB to the stream `e2e` at RATE per second with
XADD, one call per entry (each answered after Redis's own durability setting, like a Strata
produce with linger 0), stamping each with the wall-clock time just before it is sent. Another
process reads them with XREAD BLOCK and takes, for each, the time from the stamp to its
receipt. Prints the percentiles and, last, one JSON object. Needs the `redis` package (pip).
"""
import json
import multiprocessing as mp
import sys
import time

import redis

STREAM = "e2e"


def consume(port, records, ready, results):
    client = redis.Redis(port=port)
    latencies = []
    last = "0-0"
    ready.set()
    while len(latencies) < records:
        answer = client.xread({STREAM: last}, count=1000, block=10_000)
        if not answer:
            break
        now = time.time_ns()
        for entry_id, fields in answer[0][1]:
            latencies.append((now - int(fields[b"t"])) / 1e6)
            last = entry_id
    results.put(latencies)


def produce(port, rate, records):
    client = redis.Redis(port=port)
    value = b"x" * 1024
    start = time.perf_counter()
    for i in range(records):
        pause = start + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        client.xadd(STREAM, {"t": str(time.time_ns()), "v": value})


def main():
    port = int(sys.argv[1])
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 5000
    records = int(sys.argv[3]) if len(sys.argv) > 3 else 25000
    redis.Redis(port=port).delete(STREAM)
    ready, results = mp.Event(), mp.Queue()
    consumer = mp.Process(target=consume, args=(port, records, ready, results))
    consumer.start()
    ready.wait()
    time.sleep(0.2)  # the consumer is blocked in XREAD
    started = time.perf_counter()
    produce(port, rate, records)
    latencies = sorted(results.get())
    consumer.join()
    elapsed = time.perf_counter() - started

    def at(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    summary = {
        "records": len(latencies),
        "records_per_s": len(latencies) / elapsed,
        "p50_ms": at(0.5),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": latencies[-1],
    }
    print(
        f"redis e2e: {summary['records']} records at {summary['records_per_s']:.0f}/s, "
        f"p50 {summary['p50_ms']:.2f} ms, p95 {summary['p95_ms']:.2f} ms, "
        f"p99 {summary['p99_ms']:.2f} ms, p99.9 {summary['p999_ms']:.2f} ms"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
