"""The latency cache: what makes two timings comparable (device fingerprint, architecture, setting) as a key, and
the JSON file of results per key, so each architecture is measured once per device (callbacks/latency.py)."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from core.files import write_json_atomic
from modules.student import StudentModel

CACHE_FORMAT = 3  # bump when LatencyResult's fields change: older entries then simply miss


def device_fingerprint(device: torch.device, threads: int) -> str:
    """What makes timings comparable: the processor (or GPU) model and, on CPU, the thread count."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda:{props.name}:sm{props.major}{props.minor}:{torch.version.cuda}"
    if device.type == "mps":
        return f"mps:{platform.machine()}:{platform.mac_ver()[0]}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu:{model}:{threads}threads"


MOBILEBERT_DEFAULTS = {"normalization_type": "layer_norm", "embedding_size": None, "trigram_input": False}


def architecture_id(model: nn.Module) -> str:
    """A student's config (what determines its speed), or for any other module its class and shapes."""
    config = model.config if isinstance(model, StudentModel) else None
    if config is not None:
        keep = ("blocks", "vocab_size", "max_position_embeddings", "type_vocab_size", "hidden_act")
        arch = {k: getattr(config, k) for k in keep}
        # MobileBERT's factors change the speed too; named only where set, so a BERT-style student keeps the key
        # (and the cached measurement) it had before they existed.
        for key, default in MOBILEBERT_DEFAULTS.items():
            if getattr(config, key) != default:
                arch[key] = getattr(config, key)
        return json.dumps(arch, sort_keys=True)
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    # Shapes alone do not tell apart ops without weights (an AdaBERT cell's skip vs pooling): add the config.
    described = getattr(model, "config", None)
    described = described.to_dict() if hasattr(described, "to_dict") else None
    return json.dumps(
        {"class": type(model).__name__, "shapes": shapes, "config": described}, sort_keys=True, default=str
    )


def cache_key(arch: str, fingerprint: str, cfg: Any) -> str:
    """The cache entry of one measurement setting. ``cfg``: a ``LatencyConfig`` (its dtype, batch_size, seq_len
    and backend are read); the torch and transformers versions are part of the key too."""
    fields = {
        "arch": arch,
        "device": fingerprint,
        "dtype": cfg.dtype,
        "batch": cfg.batch_size,
        "seq": cfg.seq_len,
        "backend": cfg.backend,
        "versions": [torch.__version__, transformers.__version__],
        "format": CACHE_FORMAT,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def load_entries(path: Path) -> dict:
    """Key -> stored result fields; empty when the file is missing or unreadable (a cache miss, never an error)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def store_entry(path: Path, key: str, fields: dict) -> None:
    """Read-modify-write with an atomic replace: concurrent trials may lose an entry, never corrupt the file."""
    entries = load_entries(path)
    entries[key] = fields
    write_json_atomic(path, entries, indent=1, sort_keys=True)
