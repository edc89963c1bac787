"""Serving latency measured on the attached device (AutoDistill §3.4), and a callback that reports it.

``measure_latency(model_or_config, cfg)`` times forward passes of a model, or of a *freshly built*
student from a config (no trained weights needed, so it can run before or beside distillation):
warm-up runs, then ``rounds`` x ``repeats`` timed passes with proper synchronisation (CUDA events on GPU; a fixed
thread count on CPU). It returns p50 / p90 / mean / std (ms), the coefficient of variation,
throughput (sequences/s) and peak memory. p50 is the median of the rounds' medians; a measurement whose
round medians spread by more than ``max_cv`` is repeated up to ``max_retries`` times, then flagged. On CPU a
measurement during which other processes used more than ``max_other_load`` of the machine's CPU time (from
``/proc/stat``, minus this process) is ``contended``: steady contention slows every round alike, so
the spread cannot see it. A contended measurement is re-taken up to ``contended_retries`` times, each after a
back-off (``backoff_s``, doubling) during which the machine's load is read again from the same clock (no
re-measuring while it is still busy); if it stays contended the result is flagged ``contended``. Flagged results
are returned but never cached, and a search must not use their numbers (``latency/contended`` is in the search's
``invalid_if``). Results are cached per (architecture, device
fingerprint, dtype, batch, sequence length, backend, library versions): each architecture is measured
once per device. Names a search reads (see the sweeper): ``latency/p50_ms`` and friends.
"""

from __future__ import annotations

import copy
import logging
import os
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from torch import nn

from callbacks.latency_cache import architecture_id, cache_key, device_fingerprint, load_entries, store_entry
from callbacks.latency_config import BACKENDS, LatencyConfig  # noqa: F401  (public here too)
from callbacks.progress import MeasureBar
from core.assets import resolve_path
from core.dtypes import DTYPES
from modules.onnx_export import onnx_runner
from modules.student import StudentConfig, StudentModel

log = logging.getLogger(__name__)


@dataclass
class LatencyResult:
    """One measurement: times in milliseconds per forward pass of a batch, throughput in sequences/s, peak
    memory in MiB; ``noisy`` / ``contended`` flag results that are returned but not cached."""

    p50_ms: float
    p50_spread: float  # (max - min) / median of the round medians
    p90_ms: float
    mean_ms: float
    std_ms: float
    cv: float
    throughput_seq_s: float
    peak_memory_mb: float  # CUDA: peak allocated during timing; CPU: process peak RSS (an upper bound)
    noisy: bool
    attempts: int
    device: str
    contended: bool = False  # CPU: other processes kept the cores busy while timing (see the module doc)
    cached: bool = False

    def as_metrics(self, prefix: str = "latency/") -> dict[str, float]:
        keys = ("p50_ms", "p50_spread", "p90_ms", "mean_ms", "std_ms", "cv", "throughput_seq_s", "peak_memory_mb")
        out = {prefix + k: float(getattr(self, k)) for k in keys}
        out[prefix + "noisy"] = float(self.noisy)
        out[prefix + "contended"] = float(self.contended)
        return out


# --------------------------------------------------------------------------------------------------
# Device (the cache keys and file are in callbacks/latency_cache.py)
# --------------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA, else MPS, else CPU) or a torch device name. Raises RuntimeError when it is not available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"latency.device={name} but torch sees no CUDA device; use latency.device=cpu or auto"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"latency.device={name} but MPS is not available; use latency.device=cpu or auto")
    return device


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def make_inputs(
    batch_size: int, seq_len: int, vocab_size: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Fixed random ``input_ids`` and an all-ones ``attention_mask``, both (batch_size, seq_len), on ``device``
    (ids avoid the first 1000, the special tokens of BERT vocabularies, when the vocabulary is larger)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000 if vocab_size > 1000 else 0, vocab_size, (batch_size, seq_len), generator=gen)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def prepare(model: nn.Module, cfg: LatencyConfig, device: torch.device, inputs: dict):
    """The callable to time: the model in eval mode on the device and dtype, through the backend."""
    model = model.eval().to(device=device, dtype=DTYPES[cfg.dtype])
    if cfg.backend == "eager":
        return lambda: model(**inputs)
    if cfg.backend == "compile":
        compiled = torch.compile(model)
        return lambda: compiled(**inputs)
    if cfg.backend == "torch-int8":  # int8 weights of every Linear, activations quantised per call (CPU kernels)
        if device.type != "cpu":
            raise RuntimeError("latency.backend=torch-int8 runs on CPU only; set latency.device=cpu")
        quantized = torch.ao.quantization.quantize_dynamic(model.float(), {nn.Linear}, dtype=torch.qint8)
        return lambda: quantized(**inputs)
    # onnxruntime(-int8): export once (modules/onnx_export.py), time ONNX Runtime's CPU session on the same inputs.
    return onnx_runner(model, inputs, int8=cfg.backend == "onnxruntime-int8", threads=torch.get_num_threads())


def time_calls(fn, device: torch.device, warmup: int, repeats: int, tick=lambda: None) -> list[float]:
    """Milliseconds per call, synchronised so queued GPU work is counted where it runs; ``tick()`` after each."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            times = []
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
                tick()
            return times
        times = []
        for _ in range(repeats):
            begin = time.perf_counter()
            fn()
            if device.type == "mps":
                torch.mps.synchronize()
            times.append((time.perf_counter() - begin) * 1000.0)
            tick()
        return times


def summarise(rounds: list[list[float]], batch_size: int) -> dict[str, float]:
    """p50: median of the per-round medians; the other statistics pool every timed pass."""
    ordered = sorted(t for times in rounds for t in times)
    medians = [statistics.median(times) for times in rounds]
    p90_index = min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))
    mean = statistics.fmean(ordered)
    std = statistics.stdev(ordered) if len(ordered) > 1 else 0.0
    return {
        "p50_ms": statistics.median(medians),
        # How far the p50 could move between rounds: what decides whether it is trusted. With one round,
        # the pooled CV stands in for it.
        "p50_spread": (max(medians) - min(medians)) / statistics.median(medians)
        if len(rounds) > 1
        else std / mean,
        "p90_ms": ordered[p90_index],
        "mean_ms": mean,
        "std_ms": std,
        "cv": std / mean if mean > 0 else 0.0,
        "throughput_seq_s": batch_size * 1000.0 / mean if mean > 0 else 0.0,
    }


@dataclass
class CpuClock:
    """CPU seconds used so far by the whole machine (``/proc/stat``: every CPU's busy and stolen time) and by
    this process (every thread), with the wall clock: two readings tell how much of the machine other
    processes used in between."""

    machine_s: float
    self_s: float
    wall_s: float
    cpus: int

    @staticmethod
    def read() -> CpuClock | None:
        try:
            lines = Path("/proc/stat").read_text().splitlines()
        except OSError:
            return None  # not Linux: the check is skipped
        values = [int(v) for v in lines[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
        busy = (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
        return CpuClock(busy, usage.ru_utime + usage.ru_stime, time.perf_counter(), max(cpus, 1))

    def others_share(self, later: CpuClock) -> float:
        """The share of the machine's CPU time (0..1) that other processes used between the two readings."""
        wall = max(later.wall_s - self.wall_s, 1e-9)
        others = (later.machine_s - self.machine_s) - (later.self_s - self.self_s)
        return max(others, 0.0) / (wall * self.cpus)


def contended(before: CpuClock | None, after: CpuClock | None, max_other_load: float | None) -> bool:
    """Whether other processes used more than ``max_other_load`` of the machine while timing."""
    if max_other_load is None or before is None or after is None:
        return False
    share = before.others_share(after)
    if share > max_other_load:
        log.warning(
            "latency: other processes used %.0f%% of the machine's CPU time while timing (> "
            "latency.max_other_load=%.2f): the numbers may be inflated and are not cached",
            100 * share, max_other_load,
        )  # fmt: skip
        return True
    return False


def _sleep(seconds: float) -> None:
    """The back-off's wait (a seam: tests replace it with a fake clock's)."""
    time.sleep(seconds)


def machine_still_busy(cfg: LatencyConfig, seconds: float) -> bool:
    """Wait ``seconds`` (this process idle) and tell whether other processes still used more than
    ``max_other_load`` of the machine meanwhile (the /proc/stat clock; False where it cannot be read)."""
    before = CpuClock.read()
    _sleep(seconds)
    after = CpuClock.read()
    if before is None or after is None or cfg.max_other_load is None:
        return False
    return before.others_share(after) > cfg.max_other_load


def timed_stats(fn, device: torch.device, cfg: LatencyConfig,
                bar: MeasureBar | None = None) -> tuple[dict[str, float], int, bool]:  # fmt: skip
    """The rounds' statistics, re-measured while too noisy (``max_retries``) and, on CPU, re-taken after a
    back-off while other processes keep the machine busy (``contended_retries``); see the module docstring.

    Returns:
        (statistics from ``summarise``, measurements taken, whether the kept one was contended).
    """
    bar = bar or MeasureBar(0, 0)  # shows nothing

    def measure() -> dict[str, float]:
        bar.start(attempts + 1)
        rounds = [time_calls(fn, device, 1, cfg.repeats, bar.tick) for _ in range(cfg.rounds)]
        return summarise(rounds, cfg.batch_size)

    attempts, retries = 0, 0
    while True:
        clock = CpuClock.read() if device.type == "cpu" else None
        stats, attempts = measure(), attempts + 1
        while stats["p50_spread"] > cfg.max_cv and attempts <= cfg.max_retries:
            stats, attempts = measure(), attempts + 1
        busy = device.type == "cpu" and contended(clock, CpuClock.read(), cfg.max_other_load)
        # Back off while the machine stays busy; each wait counts as a retry, re-measured only once it is quiet.
        while busy and retries < cfg.contended_retries:
            wait = cfg.backoff_s * 2**retries
            retries += 1
            if not machine_still_busy(cfg, wait):
                break
            log.info("latency: the machine is still busy after a %.1f s back-off (%d/%d)",
                     wait, retries, cfg.contended_retries)  # fmt: skip
        else:
            return stats, attempts, busy  # clean, or contended with the retries spent
        log.info("latency: re-measuring after a %.1f s back-off (contended retry %d/%d)",
                 wait, retries, cfg.contended_retries)  # fmt: skip


def measure_latency(model_or_config: nn.Module | StudentConfig, cfg: LatencyConfig) -> LatencyResult:
    """Measure serving latency on the configured device; see the module docstring.

    A given model is left as it was (device, dtype, train/eval mode, weights): the timing runs on a deep copy,
    because moving it to the device and dtype and back would round its weights through ``cfg.dtype``.

    Args:
        model_or_config: a module whose forward takes ``input_ids`` and ``attention_mask`` (B, S), or a
            ``StudentConfig`` (a fresh, randomly initialised ``StudentModel`` is timed).
        cfg: device, dtype, batch size, sequence length, backend, rounds and repeats, retries, cache file.
    Returns:
        the timings in ms (p50, p90, mean, std), throughput in sequences/s, peak memory in MiB, and flags
        (``contended``: the machine stayed busy through every retry; its numbers must not be used).
    Raises:
        ValueError: ``cfg.seq_len`` exceeds the model's ``max_position_embeddings``.
        RuntimeError: the device or backend is not available.
    """
    device = resolve_device(cfg.device)
    threads = cfg.threads or torch.get_num_threads()
    fresh = isinstance(model_or_config, StudentConfig)
    model = StudentModel(model_or_config) if fresh else model_or_config
    fingerprint = device_fingerprint(device, threads)
    key = cache_key(architecture_id(model), fingerprint, cfg)
    cache = resolve_path(cfg.cache_path) if cfg.cache_path else None
    if cache is not None and key in (entries := load_entries(cache)):
        return LatencyResult(**{**entries[key], "cached": True})

    vocab = model.config.vocab_size if hasattr(model, "config") else 1000
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if positions is not None and cfg.seq_len > positions:
        raise ValueError(
            f"latency.seq_len={cfg.seq_len} exceeds the model's max_position_embeddings={positions}"
        )
    inputs = make_inputs(cfg.batch_size, cfg.seq_len, vocab, device)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        fn = prepare(model if fresh else copy.deepcopy(model), cfg, device, inputs)
        begin = time.perf_counter()
        time_calls(fn, device, cfg.warmup, 0)
        per_call = (time.perf_counter() - begin) / max(cfg.warmup, 1)  # the first calls' pace: a rough guess
        with MeasureBar(per_call * cfg.rounds * (cfg.repeats + 1), cfg.rounds * cfg.repeats) as bar:
            stats, attempts, busy = timed_stats(fn, device, cfg, bar)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    finally:
        torch.set_num_threads(previous_threads)
    noisy = stats["p50_spread"] > cfg.max_cv
    if noisy:
        log.warning("latency p50 stayed unstable after %d attempts (round medians spread %.3f > latency.max_cv "
                    "%.3f)", attempts, stats["p50_spread"], cfg.max_cv)  # fmt: skip
    result = LatencyResult(**stats, peak_memory_mb=peak, noisy=noisy, attempts=attempts, device=fingerprint,
                           contended=busy)  # fmt: skip
    if cache is not None and not noisy and not busy:
        store_entry(cache, key, asdict(result))
    return result


class LatencyCallback(L.Callback):
    """Measures the trained encoder at the end of fit and logs ``latency/*``. ``measure_latency`` times a deep
    copy, so the module's weights, device, dtype and train/eval state are untouched."""

    def __init__(self, cfg: LatencyConfig, attribute: str = "student.student"):
        self.cfg, self.attribute = cfg, attribute
        self.result: LatencyResult | None = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        target = pl_module
        for part in self.attribute.split("."):
            target = getattr(target, part)
        self.result = measure_latency(target, self.cfg)
        for logger in trainer.loggers:
            logger.log_metrics(self.result.as_metrics(), step=trainer.global_step)
