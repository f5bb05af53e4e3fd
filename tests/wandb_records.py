"""Read a W&B run file (``run-<id>.wandb``) as the records it holds.

wandb >= 0.2x writes runs through its Go core and no longer ships a Python reader, so the
tests read the file directly: it is LevelDB's log format (a 7-byte W&B header, then 32 KiB
blocks of chunks: crc32 (4 bytes), length (2), type (1: full, 2: first, 3: middle, 4: last))
whose payloads are ``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER, CHUNK_HEADER = 32768, 7, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, pos = [], b"", HEADER
    while pos + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        if kind == 0:  # zero padding to the end of the block
            pos += left_in_block
            continue
        chunk = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind in (FULL, FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def history(records) -> list[dict]:
    """The logged rows, as dicts of key -> decoded JSON value."""
    return [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]


def config(records) -> dict:
    """The run config (top-level keys -> decoded values)."""
    values = {}
    for r in records:
        if r.WhichOneof("record_type") == "config":
            values.update({item.key: json.loads(item.value_json) for item in r.config.update})
    return values


def run_info(records):
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    return run
