"""Kafka RecordBatch v2, the bytes Strata's Produce takes and Fetch returns.

A small encoder and decoder for uncompressed batches, following docs/on-disk-format.md §2:
a 61-byte header of big-endian fixed-width integers, then `recordCount` records whose fields are
zig-zag varints. The CRC is CRC-32C (Castagnoli) over bytes 21..end, so the broker can rewrite
baseOffset (bytes 0..8) when it appends without touching the CRC.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Optional

import crc32c

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
# baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordCount.
# ">" means big-endian with no padding, so the layout is exactly the wire layout.
HEADER = struct.Struct(">qiibIhiqqqhii")
assert HEADER.size == 61
CRC_START = 21  # the CRC covers attributes onwards
LOG_OVERHEAD = 12  # baseOffset + batchLength: the bytes batchLength does not count
MAGIC = 2
COMPRESSION_MASK = 0x07  # attribute bits 0-2; this module only handles 0 (none)


class BatchError(ValueError):
    """The bytes are not a valid uncompressed RecordBatch v2."""


@dataclass
class Record:
    key: Optional[bytes]
    value: Optional[bytes]
    headers: list[tuple[str, Optional[bytes]]] = field(default_factory=list)
    timestamp_ms: int = 0
    # Set by decode_batch from the batch's baseOffset; ignored by encode_batch (the broker
    # assigns offsets).
    offset: int = -1


# --- zig-zag varints ------------------------------------------------------------------------


def _write_varint(out: bytearray, n: int) -> None:
    raw = ((n << 1) ^ (n >> 63)) & 0xFFFF_FFFF_FFFF_FFFF  # zig-zag: small magnitudes, few bytes
    while raw >= 0x80:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)


def _read_varint(buf: bytes, pos: int, max_bytes: int = 10) -> tuple[int, int]:
    """Returns (value, new position)."""
    raw = 0
    for i in range(max_bytes):
        if pos + i >= len(buf):
            break
        byte = buf[pos + i]
        raw |= (byte & 0x7F) << (7 * i)
        if byte & 0x80 == 0:
            return (raw >> 1) ^ -(raw & 1), pos + i + 1
    raise BatchError(f"truncated or overlong varint at byte {pos}")


def _write_nullable(out: bytearray, data: Optional[bytes]) -> None:
    if data is None:
        _write_varint(out, -1)  # -1 length means null, distinct from b""
    else:
        _write_varint(out, len(data))
        out += data


def _read_nullable(buf: bytes, pos: int, end: int) -> tuple[Optional[bytes], int]:
    length, pos = _read_varint(buf, pos, 5)
    if length == -1:
        return None, pos
    if length < 0 or pos + length > end:
        raise BatchError(f"bad length {length} at byte {pos}")
    return bytes(buf[pos : pos + length]), pos + length


# --- encoding -------------------------------------------------------------------------------


def encode_batch(records: list[Record]) -> bytes:
    """One uncompressed batch holding `records`, not idempotent (producer fields -1)."""
    if not records:
        raise ValueError("a record batch needs at least one record")
    base_ts = records[0].timestamp_ms  # record timestamps are stored as deltas from this
    body = bytearray()
    for index, r in enumerate(records):
        rec = bytearray()
        rec.append(0)  # record attributes: unused in v2
        _write_varint(rec, r.timestamp_ms - base_ts)
        _write_varint(rec, index)  # offsetDelta: Strata requires it to equal the index
        _write_nullable(rec, r.key)
        _write_nullable(rec, r.value)
        _write_varint(rec, len(r.headers))
        for hkey, hvalue in r.headers:
            _write_nullable(rec, hkey.encode("utf-8"))  # header keys are non-null UTF-8
            _write_nullable(rec, hvalue)
        _write_varint(body, len(rec))
        body += rec

    header = bytearray(
        HEADER.pack(
            0,  # baseOffset: the broker overwrites it with the partition's log end
            HEADER.size - LOG_OVERHEAD + len(body),  # batchLength
            -1,  # partitionLeaderEpoch
            MAGIC,
            0,  # crc, filled in below
            0,  # attributes: no compression, CreateTime, not transactional
            len(records) - 1,  # lastOffsetDelta
            base_ts,
            max(r.timestamp_ms for r in records),  # maxTimestamp: time lookups trust it
            -1,  # producerId
            -1,  # producerEpoch
            -1,  # baseSequence
            len(records),
        )
    )
    batch = header + body
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[CRC_START:])))
    return bytes(batch)


# --- decoding -------------------------------------------------------------------------------


def decode_batch(batch: bytes) -> list[Record]:
    """The records of one whole batch, with offsets and timestamps made absolute.

    Checks the framing and the CRC; raises BatchError on anything malformed.
    """
    if len(batch) < HEADER.size:
        raise BatchError(f"{len(batch)} bytes is shorter than a batch header")
    (base_offset, batch_len, _epoch, magic, crc, attributes, last_delta, base_ts, _max_ts,
     _pid, _pepoch, _seq, count) = HEADER.unpack_from(batch)
    if magic != MAGIC:
        raise BatchError(f"magic {magic}, expected {MAGIC}")
    if batch_len + LOG_OVERHEAD != len(batch):
        raise BatchError(f"batchLength {batch_len} does not match {len(batch)} bytes")
    actual = crc32c.crc32c(batch[CRC_START:])
    if actual != crc:
        raise BatchError(f"CRC mismatch: header {crc:#010x}, computed {actual:#010x}")
    if attributes & COMPRESSION_MASK:
        raise BatchError(f"compressed batch (codec {attributes & COMPRESSION_MASK}) not supported")
    if count < 1 or last_delta != count - 1:
        raise BatchError(f"recordCount {count} with lastOffsetDelta {last_delta}")

    records = []
    pos = HEADER.size
    for index in range(count):
        length, pos = _read_varint(batch, pos, 5)
        end = pos + length
        if length < 0 or end > len(batch):
            raise BatchError(f"record {index}: bad length {length}")
        pos += 1  # record attributes, unused
        ts_delta, pos = _read_varint(batch, pos)
        offset_delta, pos = _read_varint(batch, pos, 5)
        if offset_delta != index:
            raise BatchError(f"record {index}: offsetDelta {offset_delta}")
        key, pos = _read_nullable(batch, pos, end)
        value, pos = _read_nullable(batch, pos, end)
        header_count, pos = _read_varint(batch, pos, 5)
        headers = []
        for _ in range(header_count):
            hkey, pos = _read_nullable(batch, pos, end)
            if hkey is None:
                raise BatchError(f"record {index}: null header key")
            hvalue, pos = _read_nullable(batch, pos, end)
            headers.append((hkey.decode("utf-8"), hvalue))
        if pos != end:
            raise BatchError(f"record {index}: {end - pos} bytes left over")
        records.append(Record(key, value, headers, base_ts + ts_delta, base_offset + offset_delta))
    if pos != len(batch):
        raise BatchError(f"{len(batch) - pos} bytes after the last record")
    return records


if __name__ == "__main__":
    # Self-test: round trip, then a flipped bit must fail the CRC check.
    recs = [Record(b"k1", b"v1", [("h", b"x"), ("n", None)], 1000), Record(None, None, [], 999)]
    data = encode_batch(recs)
    back = decode_batch(data)
    assert [(r.key, r.value, r.headers, r.timestamp_ms) for r in back] == [
        (r.key, r.value, r.headers, r.timestamp_ms) for r in recs
    ], back
    assert [r.offset for r in back] == [0, 1]
    broken = bytearray(data)
    broken[-1] ^= 1
    try:
        decode_batch(bytes(broken))
    except BatchError as e:
        assert "CRC" in str(e)
    else:
        raise AssertionError("corrupted batch decoded")
    print("recordbatch self-test ok")
