"""Latency measurement: sane statistics, the per-device cache, the callback leaves weights alone, GPU paths
skip cleanly on CPU, bad inputs fail clearly, and recipe=latency end to end."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

import run
from callbacks.latency import (
    CpuClock,
    LatencyCallback,
    LatencyConfig,
    LatencyResult,
    measure_latency,
    resolve_device,
    summarise,
)
from modules.student import StudentConfig, StudentForPreTraining, StudentModel
from modules.student_spec import BlockSpec, StudentSpec
from recipes import latency as latency_recipe
from tests.test_distill import CONF


def tiny_config(hidden: int = 32, blocks: int = 2):
    spec = StudentSpec(num_blocks=blocks, block=BlockSpec(hidden, 16, 2, 32, 1), max_position_embeddings=64)
    return StudentConfig.from_spec(spec, vocab_size=100)


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def fast(tmp_path, **kwargs) -> LatencyConfig:
    values = dict(
        device="cpu",
        seq_len=16,
        warmup=1,
        repeats=5,
        max_cv=10.0,
        cache_path=str(tmp_path / "lat.json"),
        max_other_load=None,  # the cache tests must not depend on what else the machine runs
        contended_retries=0,  # no real back-off waits (the back-off tests fake the clock)
    )
    values.update(kwargs)
    return LatencyConfig(**values)


def test_statistics_are_sane_and_ordered(tmp_path) -> None:
    result = measure_latency(tiny_config(), fast(tmp_path, repeats=20, batch_size=2))
    assert 0 < result.p50_ms <= result.p90_ms
    assert (
        result.mean_ms > 0
        and result.std_ms >= 0
        and result.cv == pytest.approx(result.std_ms / result.mean_ms)
    )
    assert result.throughput_seq_s == pytest.approx(2 * 1000 / result.mean_ms)
    assert result.peak_memory_mb > 0 and result.device.startswith("cpu:")
    assert not result.cached


def test_summarise_against_hand_computed_values() -> None:
    stats = summarise([[4.0, 1.0, 3.0, 2.0, 10.0]], batch_size=1)
    assert stats["p50_ms"] == 3.0 and stats["p90_ms"] == 10.0 and stats["mean_ms"] == 4.0
    assert stats["std_ms"] == pytest.approx(3.5355, rel=1e-4) and stats["throughput_seq_s"] == 250.0
    # p50 is the median of round medians: one slow round (a burst of noise) does not move it
    rounds = summarise([[2.0, 2.0, 2.1], [2.0, 1.9, 2.0], [9.0, 9.5, 9.0]], batch_size=1)
    assert rounds["p50_ms"] == 2.0 and rounds["mean_ms"] > 4.0
    assert rounds["p50_spread"] == pytest.approx((9.0 - 2.0) / 2.0)


def test_bigger_model_is_slower(tmp_path) -> None:
    # Alternate the two and keep each one's best: a burst of load from another process on a shared CPU then
    # cannot land on only one side of the comparison.
    cfg = fast(tmp_path, repeats=15, cache_path=None)
    small, big = [], []
    for _ in range(2):
        small.append(measure_latency(tiny_config(hidden=32, blocks=1), cfg).p50_ms)
        big.append(measure_latency(tiny_config(hidden=256, blocks=6), cfg).p50_ms)
    assert min(big) > min(small)


def test_cache_hits_and_misses(tmp_path) -> None:
    cfg = fast(tmp_path)
    first = measure_latency(tiny_config(), cfg)
    again = measure_latency(tiny_config(), cfg)
    assert not first.cached and again.cached and again.p50_ms == first.p50_ms
    # any key field changes -> measured anew
    for change in [dict(batch_size=2), dict(seq_len=8), dict(dtype="bfloat16")]:
        assert not measure_latency(tiny_config(), dataclasses.replace(cfg, **change)).cached, change
    assert not measure_latency(tiny_config(hidden=48), cfg).cached
    # weights do not matter: a trained copy of the same architecture hits
    trained = StudentModel(tiny_config())
    with torch.no_grad():
        trained.pooler.weight.add_(1.0)
    assert measure_latency(trained, cfg).cached
    stored = json.loads((tmp_path / "lat.json").read_text())
    assert len(stored) == 5


def test_noisy_measurements_are_retried_then_flagged(tmp_path) -> None:
    result = measure_latency(tiny_config(), fast(tmp_path, max_cv=1e-9, max_retries=2))
    assert result.noisy and result.attempts == 3
    assert "latency.json" not in [p.name for p in tmp_path.iterdir()]  # noisy results are not cached


def test_other_processes_share_of_the_machine_by_hand() -> None:
    # 2 CPUs for 2 s = 4 CPU-seconds; the machine used 3, this process 1: others used 2 of 4.
    before, after = CpuClock(100.0, 10.0, 50.0, 2), CpuClock(103.0, 11.0, 52.0, 2)
    assert before.others_share(after) == pytest.approx(0.5)
    assert before.others_share(CpuClock(101.0, 11.0, 52.0, 2)) == 0.0  # only this process worked


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat (Linux)")
@pytest.mark.smoke
def test_a_busy_machine_flags_the_measurement_and_keeps_it_out_of_the_cache(tmp_path) -> None:
    import multiprocessing as mp

    cfg = fast(tmp_path, repeats=40, max_other_load=0.25)
    spinners = [mp.get_context("spawn").Process(target=spin, args=(20.0,), daemon=True)
                for _ in range(os.cpu_count() or 1)]  # fmt: skip
    for p in spinners:
        p.start()
    try:
        time.sleep(1.0)  # the spawned interpreters start up before they spin
        busy = measure_latency(tiny_config(), cfg)
    finally:
        for p in spinners:
            p.kill()
    assert busy.contended and busy.as_metrics()["latency/contended"] == 1.0
    assert not (tmp_path / "lat.json").exists()  # a contended result is never cached


def test_callback_measures_without_changing_the_model(tmp_path) -> None:
    class Wrapper(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.student = StudentForPreTraining(tiny_config())
            self.student.train()

        def training_step(self, batch, batch_idx):
            return self.student.student(batch[0]).last_hidden_state.mean() * 0.0

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    module = Wrapper()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    callback = LatencyCallback(fast(tmp_path))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randint(0, 100, (4, 8))), batch_size=2
    )
    trainer = L.Trainer(
        max_steps=2, callbacks=[callback], logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, loader)
    assert isinstance(callback.result, LatencyResult) and callback.result.p50_ms > 0
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.dtype == torch.float32 for p in module.parameters())


def test_measure_latency_leaves_the_callers_model_as_it_was(tmp_path) -> None:
    """Timing in bfloat16 in eval mode must not leave the caller's model in bfloat16 or eval mode (it used to
    move and re-type the model in place), nor change a weight."""
    torch.manual_seed(0)
    model = StudentModel(tiny_config()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = measure_latency(model, fast(tmp_path, dtype="bfloat16", cache_path=None))
    assert result.p50_ms > 0
    assert model.training and all(m.training for m in model.modules())
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_gpu_path_fails_clearly_without_a_gpu(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="no CUDA device; use latency.device=cpu"):
        measure_latency(tiny_config(), fast(tmp_path, device="cuda"))
    assert resolve_device("auto").type in ("cpu", "mps")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_measurement(tmp_path) -> None:
    result = measure_latency(tiny_config(), fast(tmp_path, device="cuda", dtype="bfloat16"))
    assert result.device.startswith("cuda:") and result.p50_ms > 0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(batch_size=0), "latency.batch_size must be >= 1"),
        (dict(backend="tensorrt"), "latency.backend must be one of"),
        (dict(dtype="int8"), "latency.dtype must be one of"),
        (dict(repeats=0), "latency.repeats must be >= 1"),
    ],
)
def test_bad_inputs(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        LatencyConfig(**kwargs)


@pytest.mark.parametrize("backend", ["onnxruntime", "onnxruntime-int8"])
def test_backend_not_installed(tmp_path, monkeypatch, backend) -> None:
    import importlib.util

    real = importlib.util.find_spec  # onnxruntime made absent, whether or not it is installed here
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(RuntimeError, match=f"latency.backend={backend} needs onnxruntime: pip install onnxruntime"):
        measure_latency(tiny_config(), fast(tmp_path, backend=backend))


@pytest.mark.smoke
def test_latency_recipe_lists_and_correlates(tmp_path) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "run",
            overrides=[
                "recipe=latency",
                "recipe.space=list",
                "recipe.models=[Model_128_64_1_384_2,Model_256_128_4_512_4,Model_512_160_8_640_6]",
                "student.num_blocks=1",
                "latency.repeats=5",
                "latency.warmup=1",
                "latency.max_cv=10",
                f"latency.cache_path={tmp_path / 'lat.json'}",
                "latency.max_other_load=null",  # the correlations must not depend on what else the machine runs
            ],
        )
    metrics = latency_recipe.run(run.to_run_config(cfg, str(tmp_path)))
    rows = list(csv.DictReader(open(tmp_path / "latency.csv")))
    assert [r["name"] for r in rows] == [
        "Model_128_64_1_384_2x1",
        "Model_256_128_4_512_4x1",
        "Model_512_160_8_640_6x1",
    ]
    assert metrics["configs"] == 3
    assert -1 <= metrics["spearman/params_vs_latency"] <= 1 and -1 <= metrics["kendall/flops_vs_latency"] <= 1
    assert (tmp_path / "latency_vs_params.png").stat().st_size > 5000


def test_rank_correlations_by_hand() -> None:
    rows = [
        {"params": 1, "flops": 3, "p50_ms": 1.0},
        {"params": 2, "flops": 2, "p50_ms": 2.0},
        {"params": 3, "flops": 1, "p50_ms": 3.0},
    ]
    out = latency_recipe.rank_correlations(rows)
    assert out["spearman/params_vs_latency"] == pytest.approx(1.0)
    assert out["spearman/flops_vs_latency"] == pytest.approx(-1.0)
    assert out["kendall/flops_vs_latency"] == pytest.approx(-1.0)


def test_bad_model_name_fails_before_measuring() -> None:
    with pytest.raises(ValueError, match="Model_<hidden>"):
        latency_recipe.LatencyRecipeConfig(space="list", models=["Model_1_2"])


class FakeMachine:
    """A 2-CPU /proc/stat clock whose other processes keep both cores busy until ``busy_until`` (fake seconds);
    every reading and every back-off advance the fake time, so waiting is what lets the load go away."""

    def __init__(self, busy_until: float) -> None:
        self.now, self.machine_s, self.busy_until = 0.0, 0.0, busy_until
        self.sleeps: list[float] = []

    def advance(self, seconds: float) -> None:
        busy = max(0.0, min(self.now + seconds, self.busy_until) - self.now)
        self.machine_s += 2 * busy
        self.now += seconds

    def read(self) -> CpuClock:
        self.advance(0.1)
        return CpuClock(self.machine_s, 0.0, self.now, 2)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


def fake_machine(monkeypatch, busy_until: float) -> FakeMachine:
    import callbacks.latency as latency_module

    machine = FakeMachine(busy_until)
    monkeypatch.setattr(latency_module.CpuClock, "read", staticmethod(machine.read))
    monkeypatch.setattr(latency_module, "_sleep", machine.sleep)
    return machine


def test_contended_reading_is_re_measured_after_back_off_when_the_load_goes_away(tmp_path, monkeypatch) -> None:
    machine = fake_machine(monkeypatch, busy_until=1.5)  # busy through the first back-off (1 s), then quiet
    # max_cv: real noise on this shared CPU must neither retry nor keep the clean reading out of the cache
    cfg = fast(tmp_path, max_other_load=0.25, contended_retries=3, backoff_s=1.0, max_retries=0, max_cv=1e9)
    result = measure_latency(tiny_config(), cfg)
    assert machine.sleeps == [1.0, 2.0]  # doubling back-off; re-checked the load after each wait
    assert not result.contended and result.attempts == 2  # measured again only once the machine was quiet
    assert (tmp_path / "lat.json").exists()  # the clean reading is cached


def test_reading_that_stays_contended_is_flagged_after_bounded_retries(tmp_path, monkeypatch) -> None:
    machine = fake_machine(monkeypatch, busy_until=1e9)
    cfg = fast(tmp_path, max_other_load=0.25, contended_retries=3, backoff_s=0.5)
    result = measure_latency(tiny_config(), cfg)
    assert machine.sleeps == [0.5, 1.0, 2.0]  # bounded: contended_retries waits, then give up
    assert result.contended and result.as_metrics()["latency/contended"] == 1.0
    assert not (tmp_path / "lat.json").exists()
    # no retries configured: flagged at once, no wait
    machine.sleeps.clear()
    assert measure_latency(tiny_config(), dataclasses.replace(cfg, contended_retries=0)).contended
    assert machine.sleeps == []


def test_rank_correlations_leave_out_contended_readings() -> None:
    rows = [
        {"params": 1, "flops": 3, "p50_ms": 1.0, "contended": False},
        {"params": 2, "flops": 2, "p50_ms": 2.0, "contended": False},
        {"params": 3, "flops": 1, "p50_ms": 3.0, "contended": False},
        {"params": 0.5, "flops": 4, "p50_ms": 272.0, "contended": True},  # the smallest, timed on a busy CPU
    ]
    out = latency_recipe.rank_correlations(rows)
    assert out["configs"] == 4 and out["correlated"] == 3
    assert out["spearman/params_vs_latency"] == pytest.approx(1.0)
    assert out["kendall/flops_vs_latency"] == pytest.approx(-1.0)
