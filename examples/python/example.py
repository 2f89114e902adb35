"""Produce and consume with Strata over gRPC from Python.

Creates a topic, produces keyed records, fetches them back and checks them, then commits and
reads back a consumer-group offset. Exits 0 if every check passes, 1 on a mismatch, 2 on an RPC
error.

The gRPC stubs are generated from proto/ at run time (run.sh does it); put the output directory
on PYTHONPATH so `strata.v1` imports.
"""

from __future__ import annotations

import argparse
import sys
import time

import grpc

try:
    from strata.v1 import admin_pb2, admin_pb2_grpc, client_pb2, client_pb2_grpc
except ImportError as e:
    sys.exit(
        f"cannot import the generated stubs ({e}); generate them with\n"
        "  python -m grpc_tools.protoc -I proto --python_out=OUT --grpc_python_out=OUT "
        "proto/strata/v1/*.proto\nand put OUT on PYTHONPATH"
    )

from recordbatch import Record, decode_batch, encode_batch

RPC_TIMEOUT_S = 10  # every call gets a deadline so a stuck server cannot hang the example


class Mismatch(Exception):
    pass


def check(ok: bool, what: str) -> None:
    if not ok:
        raise Mismatch(what)


def create_topic(admin, topic: str, partitions: int) -> None:
    try:
        admin.CreateTopic(
            admin_pb2.CreateTopicRequest(name=topic, partitions=partitions, replication_factor=1),
            timeout=RPC_TIMEOUT_S,
        )
        print(f"created topic {topic!r} with {partitions} partition(s)")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
        print(f"topic {topic!r} already exists; reusing it")


def produce(broker, topic: str, partition: int, batches: list[list[Record]]):
    """Sends all batches in one request; returns the per-batch (base, last) offsets."""
    response = broker.Produce(
        client_pb2.ProduceRequest(
            topic=topic,
            partition=partition,
            acks=client_pb2.ACKS_ALL,
            batches=[encode_batch(b) for b in batches],
        ),
        timeout=RPC_TIMEOUT_S,
    )
    check(len(response.batches) == len(batches),
          f"produce returned {len(response.batches)} results for {len(batches)} batches")
    ranges = [(b.base_offset, b.last_offset) for b in response.batches]
    for (base, last), records in zip(ranges, batches):
        check(last - base + 1 == len(records),
              f"batch of {len(records)} records got offsets {base}..{last}")
    for (_, prev_last), (next_base, _) in zip(ranges, ranges[1:]):
        check(next_base == prev_last + 1, f"batches not contiguous: {ranges}")
    check(response.log_end_offset == ranges[-1][1] + 1,
          f"log_end_offset {response.log_end_offset} after last offset {ranges[-1][1]}")
    return ranges


def fetch_range(broker, topic: str, partition: int, start: int, end: int) -> list[Record]:
    """Records with start <= offset < end, read the way a consumer does: fetch from an offset,
    skip records below it (a batch may start earlier), move on past the last batch returned."""
    records: list[Record] = []
    offset = start
    deadline = time.monotonic() + RPC_TIMEOUT_S
    while offset < end:
        check(time.monotonic() < deadline, f"fetch stuck at offset {offset}, wanted {end}")
        response = broker.Fetch(
            client_pb2.FetchRequest(topic=topic, partition=partition, offset=offset,
                                    max_wait_ms=500, min_bytes=1),
            timeout=RPC_TIMEOUT_S,
        )
        for batch in response.batches:
            for record in decode_batch(batch):  # raises on a bad CRC or framing
                if offset <= record.offset < end:
                    records.append(record)
                offset = max(offset, record.offset + 1)
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="localhost:10092",
                        help="HOST:PORT of a broker (only the first of a list is used)")
    parser.add_argument("--topic", default="python-example")
    parser.add_argument("--group", default="python-example-group")
    args = parser.parse_args()

    # A single node leads every partition; a multi-node client would ask Metadata for leaders.
    address = args.brokers.split(",")[0]
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT_S)
    admin = admin_pb2_grpc.AdminStub(channel)
    broker = client_pb2_grpc.BrokerStub(channel)
    topic, partition = args.topic, 0

    create_topic(admin, topic, partitions=1)

    # Two batches in one Produce request; timestamps deliberately not in order within a batch.
    now = int(time.time() * 1000)
    sent = [
        [
            Record(b"user-1", b"signed up", [("source", b"web")], now),
            Record(b"user-2", b"signed up", [("source", b"app"), ("trace", None)], now - 5),
        ],
        [
            Record(b"user-1", b"bought a hat", [], now + 10),
            Record(b"user-3", None, [], now + 11),  # null value, e.g. a tombstone
            Record(b"user-2", "ünïcode ✓".encode(), [("k", b"")], now + 12),
        ],
    ]
    ranges = produce(broker, topic, partition, sent)
    first, last = ranges[0][0], ranges[-1][1]
    print(f"produced {sum(map(len, sent))} records in {len(sent)} batches "
          f"at offsets {first}..{last} (acks=all)")

    # Read from offset 0: on a fresh topic that is exactly what was produced; on a reused one,
    # older records come first and are left out of the comparison.
    got = fetch_range(broker, topic, partition, 0, last + 1)
    check(len(got) == last + 1, f"fetched {len(got)} records from 0..{last}, expected {last + 1}")
    ours = got[first:]
    expected = [r for batch in sent for r in batch]
    for i, (want, have) in enumerate(zip(expected, ours)):
        check(have.offset == first + i, f"record {i}: offset {have.offset}, expected {first + i}")
        for attr in ("key", "value", "headers", "timestamp_ms"):
            check(getattr(have, attr) == getattr(want, attr),
                  f"offset {have.offset}: {attr} {getattr(have, attr)!r} "
                  f"!= sent {getattr(want, attr)!r}")
    print(f"fetched from offset 0 and matched all {len(expected)} records:")
    for r in ours:
        value = r.value.decode() if r.value is not None else None
        print(f"  offset {r.offset}: {r.key.decode()} = {value!r} headers={dict(r.headers)}")

    # Commit "next offset to consume" as a standalone consumer: no member id, epoch -1.
    broker.CommitOffsets(
        client_pb2.CommitOffsetsRequest(
            group_id=args.group, member_id="", member_epoch=-1,
            offsets=[client_pb2.PartitionOffset(topic=topic, partition=partition,
                                                offset=last + 1, metadata="python example")],
        ),
        timeout=RPC_TIMEOUT_S,
    )
    fetched = broker.FetchOffsets(
        client_pb2.FetchOffsetsRequest(
            group_id=args.group,
            partitions=[client_pb2.TopicPartitions(topic=topic, partitions=[partition])],
        ),
        timeout=RPC_TIMEOUT_S,
    )
    committed = [(o.topic, o.partition, o.offset, o.metadata) for o in fetched.offsets]
    check(committed == [(topic, partition, last + 1, "python example")],
          f"FetchOffsets returned {committed}, expected offset {last + 1}")
    print(f"committed offset {last + 1} for group {args.group!r} and read it back")
    print("ok")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Mismatch as e:
        print(f"MISMATCH: {e}", file=sys.stderr)
        sys.exit(1)
    except grpc.RpcError as e:
        print(f"RPC failed: {e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(2)
    except grpc.FutureTimeoutError:
        print("could not connect to the broker", file=sys.stderr)
        sys.exit(2)
