"""The on-disk cache of prepared task splits, and the one ``setup`` path both task data modules take
(classification: ``datamodules.classification``; SQuAD: ``datamodules.squad``):

    inputs (a hub data set, or local files) -> cache key -> load the cache, or build and save it

Why not datasets' own cache (``Dataset.map``): ours is keyed by content (file sha256 or the hub split's
fingerprint, the tokenizer's identity and every config field that changes the data), so an edited file
or a new tokenizer is a miss and a new batch size is a hit; ``.map`` keys by a hash of the function and
its arguments, stores Arrow tables rather than a few flat tensors, and would not find the caches already
written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from core.assets import file_fingerprint, resolve_path, tokenizer_identity
from core.files import torch_save_atomic
from datamodules.task_config import check_loader_fields  # noqa: F401  (public here too)

log = logging.getLogger(__name__)

# Config fields that change how data is served but not what is tokenised: kept out of the cache
# key so that, e.g., a new batch size reuses the cache. File paths are keyed by content instead.
_NOT_IN_CACHE_KEY = frozenset(
    {
        "name",
        "path",
        "train_path",
        "validation_path",
        "test_path",
        "batch_size",
        "eval_batch_size",
        "num_workers",
        "cache_dir",
    }
)


def cache_key(cfg: Any, sources: dict[str, str], tokenizer: PreTrainedTokenizerBase, version: int) -> str:
    """sha256 over everything that changes the prepared splits.

    Args:
        cfg: a task config dataclass; every field except those in ``_NOT_IN_CACHE_KEY`` is keyed.
        sources: split role -> content fingerprint (file sha256, or the hub data set's fingerprint).
        tokenizer: the tokenizer.
        version: the key's layout version; a new one makes every old cache a miss.

    Returns:
        A hex digest (64 characters).
    """
    content = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IN_CACHE_KEY}
    payload = {
        "version": version,
        "sources": sources,
        "tokenizer": tokenizer_identity(tokenizer),
        "cfg": content,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def load_cache(path: Path, version: int, task_name: str) -> dict[str, Any] | None:
    """A cached payload of this layout ``version``, or None: absent, unreadable or another layout (rebuild)."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, weights_only=True)
    except Exception as err:  # a corrupt or foreign file is a miss, not a crash: rebuild it
        log.warning("task %s: ignoring unreadable cache %s (%s); rebuilding", task_name, path, err)
        return None
    if not isinstance(payload, dict) or payload.get("version") != version:
        return None
    return payload


def local_files(cfg: Any, fields: dict[str, str]) -> dict[str, Path]:
    """Split role -> existing file, for each of ``fields`` (role -> config field) that is set.

    Raises:
        FileNotFoundError: a set path that is not a file (names the field and the path as given).
    """
    files = {}
    for role, name in fields.items():
        value = getattr(cfg, name)
        if value is None:
            continue
        path = resolve_path(value)
        if not path.is_file():
            raise FileNotFoundError(f"task.{name}: file not found: {path} (from {value!r})")
        files[role] = path
    return files


@dataclass
class CachedTaskData:
    """What ``load_or_build`` found: the payload (``version`` plus what ``build`` returned), where it is
    cached, and whether it came from there."""

    payload: dict[str, Any]
    path: Path
    from_cache: bool


def load_or_build(
    cfg: Any,
    tokenizer: PreTrainedTokenizerBase,
    *,
    hub: Callable[[], Any] | None,
    file_fields: dict[str, str],
    build: Callable[[Any, dict[str, Path]], dict[str, Any]],
    version: int,
    key_version: int,
    kind: str,
    what: str,
) -> CachedTaskData:
    """The setup path of a task data module: find the inputs, key them, load the cache or build and save it.

    Args:
        cfg: the task config (``name``, ``cache_dir`` and the fields the key reads).
        tokenizer: the tokenizer (keyed by its identity).
        hub: loads the hub data set (a dict of splits with datasets' ``_fingerprint``), or None for
            local files.
        file_fields: split role -> config field of a local file (unset fields are skipped).
        build: (hub data set or None, role -> local file) -> the payload without ``version``; called on a
            miss only.
        version: the payload layout; a cache of another layout is a miss.
        key_version: hashed into the key (see ``cache_key``).
        kind: "" or a tag in the file name (``<name>-<kind>-<key>.pt``) that keeps task kinds apart.
        what: the verb for the log ("tokenised", "featurised").

    Returns:
        The payload, its cache file and whether it was a hit.

    Raises:
        FileNotFoundError: a local file is missing. Whatever ``hub`` and ``build`` raise (``DataError``).
    """
    if hub is not None:
        dataset = hub()
        files: dict[str, Path] = {}
        # datasets' own content fingerprint of each split: changes when the data changes.
        sources = {name: split._fingerprint for name, split in dataset.items()}
    else:
        dataset = None
        files = local_files(cfg, file_fields)
        sources = {role: file_fingerprint(p) for role, p in files.items()}
    key = cache_key(cfg, sources, tokenizer, key_version)
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.name)
    stem = f"{safe_name}-{kind}" if kind else safe_name
    path = resolve_path(cfg.cache_dir) / f"{stem}-{key[:24]}.pt"
    payload = load_cache(path, version, cfg.name)
    if payload is not None:
        log.info("task %s: loaded %s splits from %s", cfg.name, what, path)
        return CachedTaskData(payload, path, from_cache=True)
    payload = {"version": version, **build(dataset, files)}
    torch_save_atomic(payload, path)
    log.info("task %s: %s and cached to %s", cfg.name, what, path)
    return CachedTaskData(payload, path, from_cache=False)
