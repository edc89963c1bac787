"""Teacher-output cache: the teacher is frozen and batch t is a pure function of (data, seed, t), so
its outputs for step t can be computed once and reused across stages, runs and search trials.

Keyed by teacher (name + config + a weight checksum) + data (the datamodule's cache key) + masking
seed + batch size + world size/rank + MLM top-k, but *not* by anything about the student: every
teacher layer is stored, so students of any depth share one cache. Bounded in bytes; when full,
new steps are computed live and not stored (a bounded cache never evicts the steps a later trial of
the same budget will ask for first). Stored in ``dtype``: float32 reproduces an uncached run
bit for bit, float16 halves the size at ~1e-3 relative error in the targets.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from pathlib import Path

import torch

from core.assets import resolve_path
from core.dtypes import DTYPES
from core.files import torch_save_atomic
from modules.distillation_config import MODES, TeacherCacheConfig  # noqa: F401  (public here too)
from modules.teacher import Teacher, TeacherOutput

log = logging.getLogger(__name__)


def teacher_fingerprint(teacher: Teacher) -> str:
    """Name, config and a checksum of the weights: a retrained checkpoint at the same path is a new key.

    A fitted MLM head (``teacher.mlm_head=fit``) is part of the teacher: its weights are in the checksum and
    its cache key (``teacher.mlm_head_key``) in the blob, so outputs cached without its logits (or with
    another fit's) are never read back for it.
    """
    checksum = sum(float(p.detach().double().sum()) for p in teacher.parameters())
    identity = {
        "name": str(teacher.config.name_or_path),
        "config": teacher.config.to_dict(),
        "sum": f"{checksum:.10e}",
    }
    # Only when there is one: the keys of teachers without a fitted head stay what they were.
    if teacher.mlm_head_key is not None:
        identity["mlm_head"] = teacher.mlm_head_key
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _nbytes(entry: dict) -> int:
    return sum(t.numel() * t.element_size() for t in entry.values() if isinstance(t, torch.Tensor))


class MemoryStore:
    """The in-memory teacher outputs of one process: per cache key, step id -> entry, and the bytes held.

    ``memory`` mode keeps its entries here, not in the ``TeacherCache`` object, so the trials a Hydra basic
    launcher runs one after another in the same process (each building its own ``TeacherCache``) share them.
    """

    def __init__(self) -> None:
        self._entries: dict[str, OrderedDict[str, dict]] = {}
        self._bytes: dict[str, int] = {}

    def get(self, key: str, step_id: str) -> dict | None:
        """The entry of ``step_id`` under cache ``key``, or None."""
        return self._entries.get(key, {}).get(step_id)

    def put(self, key: str, step_id: str, entry: dict) -> None:
        """Store ``entry`` (tensors, counted in bytes) under cache ``key``."""
        self._entries.setdefault(key, OrderedDict())[step_id] = entry
        self._bytes[key] = self._bytes.get(key, 0) + _nbytes(entry)

    def used_bytes(self, key: str) -> int:
        """Bytes of tensors held under cache ``key``."""
        return self._bytes.get(key, 0)

    def clear(self) -> None:
        """Drop every entry (tests and benchmarks start cold with it)."""
        self._entries.clear()
        self._bytes.clear()


# The process's store: what `memory` mode shares between the in-process trials of one search.
MEMORY_STORE = MemoryStore()


class TeacherCache:
    """get/put teacher outputs by a string step id ("train/123", "val/4").

    Args:
        cfg: mode, directory, size bound (GB) and storage dtype.
        key: what the outputs depend on (teacher fingerprint, data, masking seed, ...): a new key never
            reads another's entries.
        memory: the store ``memory`` mode uses; the process's shared one by default.
    """

    def __init__(self, cfg: TeacherCacheConfig, key: str, memory: MemoryStore = MEMORY_STORE):
        self.cfg, self.key = cfg, key
        self.memory = memory
        self.dtype = DTYPES[cfg.dtype]
        self.max_bytes = int(cfg.max_gb * 2**30)
        self.hits = self.misses = 0
        self._full_logged = False
        if cfg.mode == "disk":
            self.dir = resolve_path(cfg.dir) / key
            self.dir.mkdir(parents=True, exist_ok=True)
            self.bytes = sum(f.stat().st_size for f in self.dir.glob("*.pt"))

    @property
    def enabled(self) -> bool:
        return self.cfg.mode != "disabled"

    def _path(self, step_id: str) -> Path:
        return self.dir / (step_id.replace("/", "_") + ".pt")

    def get(self, step_id: str) -> dict | None:
        entry = None
        if self.cfg.mode == "memory":
            entry = self.memory.get(self.key, step_id)
        elif self.cfg.mode == "disk":
            path = self._path(step_id)
            if path.exists():
                entry = torch.load(path, weights_only=True)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, step_id: str, entry: dict) -> None:
        size = _nbytes(entry)
        used = self.memory.used_bytes(self.key) if self.cfg.mode == "memory" else self.bytes
        if used + size > self.max_bytes:
            if not self._full_logged:
                log.info("teacher cache full (%.2f GB): further steps are computed live", used / 2**30)
                self._full_logged = True
            return
        if self.cfg.mode == "memory":
            self.memory.put(self.key, step_id, entry)
        elif self.cfg.mode == "disk":
            torch_save_atomic(entry, self._path(step_id))  # atomic: concurrent trials never read half a file
            self.bytes += size


def pack(
    out: TeacherOutput, masked: torch.Tensor, topk: int | None, dtype: torch.dtype, embeddings: bool = False
) -> dict:
    """What distillation reads from a teacher output, in the cache's dtype.

    Args:
        masked: (B, S) bool, the MLM positions; only their MLM logits are kept ((M, V), or top-k).
        embeddings: keep the embedding output too ((B, S, D): TinyBERT's embedding term reads it).
    The unnormalised attention scores are kept whenever the teacher captured them ((L, B, H, S, S)).
    """
    entry = {
        "hidden_states": torch.stack(out.hidden_states).to(dtype),  # (L, B, S, D)
        "attentions": torch.stack(out.attentions).to(dtype),  # (L, B, H, S, S)
    }
    if out.attention_scores is not None:
        entry["attention_scores"] = torch.stack(out.attention_scores).to(dtype)  # (L, B, H, S, S)
    if embeddings:
        entry["embeddings"] = out.embeddings.to(dtype)  # (B, S, D)
    if out.mlm_logits is not None:
        logits = out.mlm_logits[masked]  # (M, V)
        if topk is not None:
            values, indices = logits.topk(topk, dim=-1)
            entry["mlm_topk_indices"] = indices
            logits = values
        entry["mlm_logits"] = logits.to(dtype)
    return entry


def unpack(entry: dict, device: torch.device) -> dict:
    """On the module's device, in the stored dtype: each loss upcasts only the layer it reads."""
    return {k: v.to(device) for k, v in entry.items()}


def lean_targets(out: TeacherOutput, masked: torch.Tensor, topk: int | None, embeddings: bool = False) -> dict:
    """The same targets as ``pack`` without stacking or casting: per-layer tuples, indexed the same way."""
    targets: dict = {"hidden_states": out.hidden_states, "attentions": out.attentions}
    if out.attention_scores is not None:
        targets["attention_scores"] = out.attention_scores
    if embeddings:
        targets["embeddings"] = out.embeddings
    if out.mlm_logits is not None:
        logits = out.mlm_logits[masked]
        if topk is not None:
            logits, targets["mlm_topk_indices"] = logits.topk(topk, dim=-1)
        targets["mlm_logits"] = logits
    return targets
