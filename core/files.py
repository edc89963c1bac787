"""Atomic file writes: the one way this project writes a file that another process may read.

Every writer goes through a temporary file in the target's folder and ``os.replace``: a reader (another
rank, a concurrent trial, a crashed run's successor) sees the old file or the new one, never half of one.
The temporary name is unique per call (``tempfile.mkstemp``), so two writers of the same path never
clobber each other's temporary file either; the last replace wins.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a binary temporary file beside ``path``, then rename it onto ``path``.

    Creates the parent folder. On any error (or KeyboardInterrupt) the temporary file is removed and the
    old ``path``, if any, is left as it was.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_json_atomic(path: str | Path, obj: Any, **dumps_kwargs: Any) -> Path:
    """``json.dumps(obj, **dumps_kwargs)`` plus a final newline, written to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(obj, **dumps_kwargs) + "\n")


def torch_save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (caches that other ranks or trials read)."""
    import torch  # lazy: the sweeper-side users of this module never need torch

    return write_atomic(path, lambda f: torch.save(obj, f))
