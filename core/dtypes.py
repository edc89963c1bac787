"""Config names of torch dtypes (``teacher.dtype``, ``latency.dtype``, ``recipe.teacher_cache.dtype``).

``DTYPE_NAMES`` is what a config schema validates against, importable without torch (``python run.py --help``
and shell completion compose the config without loading torch); ``DTYPES`` maps each name to its torch dtype and
imports torch on first use.
"""

from __future__ import annotations

from typing import Any

DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float16")


def __getattr__(name: str) -> Any:
    if name == "DTYPES":  # dict[str, torch.dtype], built when first imported
        import torch

        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
