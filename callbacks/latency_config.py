"""The ``latency`` config group's schema: how a model is measured. Importable without torch (``python run.py --help``
and shell completion compose the config with it); the measurement itself is callbacks/latency.py."""

from __future__ import annotations

from dataclasses import dataclass

from core.dtypes import DTYPE_NAMES

BACKENDS = ("eager", "compile", "onnxruntime", "onnxruntime-int8", "torch-int8")  # int8: dynamic quantisation


@dataclass
class LatencyConfig:
    """Hydra schema of the ``latency`` config group: how a model is measured."""

    device: str = "auto"  # auto (cuda if attached, else mps, else cpu) | cpu | cuda | cuda:1 | mps
    dtype: str = "float32"
    batch_size: int = 1  # the paper measures serving latency at batch 1
    seq_len: int = 128
    backend: str = "eager"  # eager | compile (torch.compile) | onnxruntime | onnxruntime-int8 | torch-int8 (CPU)
    warmup: int = 10
    repeats: int = 50  # timed passes per round
    rounds: int = 3  # p50 = median of the rounds' medians: a burst of machine noise moves one round, not the result
    threads: int | None = None  # CPU threads while timing; null = torch's current setting
    max_cv: float = 0.05  # relative spread of the round medians ((max - min) / p50) above this is noisy
    max_retries: int = 2
    # CPU: the share of the machine's CPU time that other processes may use while timing before the result is
    # flagged contended (and not cached); null: never flag
    max_other_load: float | None = 0.25
    contended_retries: int = 3  # re-measure a contended reading at most this many times, then flag it
    backoff_s: float = 2.0  # wait before the first re-measurement; doubles after each (2, 4, 8 s)
    cache_path: str | None = "~/.cache/distill-recipes/latency.json"  # null: no cache

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"latency.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"latency.dtype must be one of {list(DTYPE_NAMES)}, got {self.dtype!r}")
        for name in ("batch_size", "seq_len", "repeats", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"latency.{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0 or self.max_retries < 0 or self.contended_retries < 0 or self.backoff_s < 0:
            raise ValueError("latency.warmup, max_retries, contended_retries and backoff_s must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"latency.threads must be >= 1 or null, got {self.threads}")
        if not self.max_cv > 0:
            raise ValueError(f"latency.max_cv must be > 0, got {self.max_cv}")
        if self.max_other_load is not None and not 0 < self.max_other_load <= 1:
            raise ValueError(f"latency.max_other_load must be in (0, 1] or null, got {self.max_other_load}")
