"""latency.backend (callbacks/latency.py): every serving backend times a tiny student, results are cached per
backend (the backend is part of the key), and a backend that cannot run says why before any timing."""

from __future__ import annotations

import pytest
import torch

from callbacks.latency import BACKENDS, LatencyConfig, make_inputs, measure_latency, prepare
from callbacks.latency_cache import cache_key
from tests.test_latency import fast, tiny_config

ONNX_BACKENDS = ("onnxruntime", "onnxruntime-int8")


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "compile"])  # compile: minutes on 2 cores
def test_every_backend_times_a_tiny_student(tmp_path, backend) -> None:
    if backend in ONNX_BACKENDS:
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
    result = measure_latency(tiny_config(), fast(tmp_path, backend=backend))
    assert result.p50_ms > 0 and not result.cached
    # a second measurement of the same backend comes from the cache
    assert measure_latency(tiny_config(), fast(tmp_path, backend=backend)).cached


@pytest.mark.parametrize("backend", ["torch-int8", *ONNX_BACKENDS])
def test_int8_and_onnx_backends_compute_what_eager_does(backend) -> None:
    """The timed callable runs the same network: its output is eager's (int8: within quantisation error)."""
    if backend in ONNX_BACKENDS:
        pytest.importorskip("onnxruntime")
    from modules.student import StudentModel

    torch.manual_seed(0)
    model = StudentModel(tiny_config()).eval()
    inputs = make_inputs(2, 16, 100, torch.device("cpu"))
    with torch.no_grad():
        ref = model(**inputs).last_hidden_state
        out = prepare(model, LatencyConfig(device="cpu", backend=backend), torch.device("cpu"), inputs)()
    got = out.last_hidden_state if hasattr(out, "last_hidden_state") else torch.from_numpy(out[0])
    tolerance = 1e-4 if backend == "onnxruntime" else 0.5  # LayerNorm-scaled states: int8 moves them by ~0.1
    assert got.shape == ref.shape and float((got - ref).abs().max()) < tolerance


def test_backend_is_part_of_the_cache_key() -> None:
    keys = {cache_key("arch", "cpu:x:2threads", LatencyConfig(backend=b)) for b in BACKENDS}
    assert len(keys) == len(BACKENDS)


def test_torch_int8_refuses_a_gpu() -> None:
    with pytest.raises(RuntimeError, match="torch-int8 runs on CPU only"):
        prepare(torch.nn.Linear(2, 2), LatencyConfig(backend="torch-int8"), torch.device("meta"), {})
