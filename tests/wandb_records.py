"""Read what an offline W&B run recorded (``<dir>/wandb/offline-run-*/run-*.wandb``): its group, job type, name,
config, summary and artifacts, as ``wandb sync`` would upload them. For tests only.

The file is W&B's LevelDB-style log (W&B's ``datastore`` format): a 7-byte header (``:W&B``, magic 0xBEE1,
version 0), then 32 KiB blocks of records, each with a 7-byte header (CRC-32, length, type: full / first /
middle / last), whose joined payloads are ``wandb_internal_pb2.Record`` protobufs. wandb >= 0.19 reads it in Go
only, so the tests read it here.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class WandbRun:
    """One offline run's records, merged in order (later config / summary updates win)."""

    path: Path
    name: str = ""
    group: str = ""
    job_type: str = ""
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    artifacts: list[tuple[str, str]] = field(default_factory=list)  # (name, type)
    exit_code: int | None = None


def payloads(data: bytes) -> list[bytes]:
    """The records' payloads of a ``.wandb`` file's bytes (after its 7-byte file header)."""
    assert data[:4] == b":W&B", "not a W&B datastore file"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is zero padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
        elif kind == 0 and length == 0:
            break
    return out


def read_run(path: Path) -> WandbRun:
    """The run recorded in ``path`` (a ``run-*.wandb`` file)."""
    from wandb.proto import wandb_internal_pb2 as pb

    run = WandbRun(path)
    for blob in payloads(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(blob)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.name, run.group, run.job_type = r.display_name, r.run_group, r.job_type
            run.config.update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "config":
            run.config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            run.summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "artifact":
            run.artifacts.append((record.artifact.name, record.artifact.type))
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def read_runs(root: Path) -> list[WandbRun]:
    """Every offline run under ``root`` (any depth), ordered by path."""
    return [read_run(p) for p in sorted(Path(root).rglob("offline-run-*/run-*.wandb"))]
