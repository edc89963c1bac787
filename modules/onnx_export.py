"""ONNX export of any saved encoder (student, fine-tuned classifier, QA model, AdaBERT child, teacher), its check
against PyTorch, and int8 dynamic quantisation with onnxruntime's own quantiser.

The graph takes ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, (B, S)) with dynamic batch and
sequence axes, and returns the model output's tensors by name (``logits``; ``start_logits``/``end_logits``;
``mlm_logits``/``nsp_logits``; ``last_hidden_state``/``pooler_output``), the names ``output_names`` reads from one
forward pass. ``onnx`` and ``onnxruntime`` are optional: ``require_onnx`` names the package that is missing.
"""

from __future__ import annotations

import copy
import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
_SKIP = ("loss", "hidden_states", "attentions", "encoder", "cell_logits", "block_outputs", "embeddings")


def require_onnx(what: str, packages: tuple[str, ...] = ("onnx", "onnxruntime")) -> None:
    """Raise RuntimeError naming ``what`` needs and which of ``packages`` is not installed (nothing when all are)."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise RuntimeError(f"{what} needs {' and '.join(missing)}: pip install {' '.join(missing)}")


def example_inputs(vocab_size: int, batch_size: int = 2, seq_len: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids (avoiding id 0, padding) with the last row's final quarter padded, and zero segment ids."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (batch_size, seq_len), generator=gen)
    mask = torch.ones_like(ids)
    mask[-1, seq_len - seq_len // 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def output_names(model: nn.Module, inputs: dict[str, torch.Tensor]) -> list[str]:
    """The tensor outputs worth serving, in the output's order (losses, per-layer and nested outputs left out)."""
    with torch.no_grad():
        out = model(**inputs)
    return [k for k, v in out.items() if isinstance(v, torch.Tensor) and k not in _SKIP]


class _NamedOutputs(nn.Module):
    """The model with positional inputs and a tuple of the named outputs: what the exporter traces."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return tuple(out[name] for name in self.names)


def export_onnx(model: nn.Module, path: str | Path, vocab_size: int, opset: int = 17) -> list[str]:
    """Export ``model`` (eval mode, fp32, CPU) to ``path`` with dynamic batch and sequence axes.

    Args:
        model: any module taking ``input_ids``, ``attention_mask``, ``token_type_ids`` and returning a ModelOutput.
        path: the ``.onnx`` file to write (its folder is created).
        vocab_size: for the example inputs that trace the graph.
        opset: the ONNX opset.
    Returns:
        the output names, in the graph's order.
    Raises:
        RuntimeError: ``onnx`` is not installed.
    """
    require_onnx("ONNX export", ("onnx",))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().float().cpu()
    inputs = example_inputs(vocab_size)
    names = output_names(model, inputs)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    with torch.no_grad():
        for name, value in zip(names, _NamedOutputs(model, names)(**inputs)):
            axes[name] = {0: "batch", 1: "sequence"} if value.dim() >= 2 and value.shape[1] == 16 else {0: "batch"}
        # The TorchScript exporter: no onnxscript dependency, and it keeps every dynamic axis of these models.
        # The wrapper in eval mode: the exporter restores the mode it found when it is done, and a new nn.Module is
        # in train mode, which would leave `model` with dropout on after the export.
        torch.onnx.export(_NamedOutputs(model, names).eval(), tuple(inputs[n] for n in INPUT_NAMES), str(path),
                          input_names=list(INPUT_NAMES), output_names=names, dynamic_axes=axes, opset_version=opset,
                          dynamo=False)  # fmt: skip
    return names


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU ``InferenceSession`` of ``path`` (``threads``: intra-op threads; None = its default).

    Raises:
        RuntimeError: ``onnxruntime`` is not installed.
    """
    require_onnx("an ONNX Runtime session", ("onnxruntime",))
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(session: Any, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run ``session`` on torch inputs (only the inputs the graph declares), outputs by name as tensors."""
    wanted = {i.name for i in session.get_inputs()}
    feeds = {k: v.cpu().numpy() for k, v in inputs.items() if k in wanted}
    names = [o.name for o in session.get_outputs()]
    return {n: torch.from_numpy(v) for n, v in zip(names, session.run(names, feeds))}


def max_abs_diff(model: nn.Module, session: Any, inputs: dict[str, torch.Tensor]) -> float:
    """Largest |ONNX Runtime - PyTorch| over every output of the graph, at the unpadded and padded positions."""
    with torch.no_grad():
        ref = model.eval()(**inputs)
    got = run_session(session, inputs)
    return max(float((got[n] - ref[n].float()).abs().max()) for n in got)


def quantize_int8(path: str | Path, out: str | Path) -> Path:
    """int8 dynamic quantisation of ``path``'s weights (onnxruntime's ``quantize_dynamic``, QInt8) into ``out``.

    Raises:
        RuntimeError: ``onnxruntime`` or ``onnx`` is not installed.
    """
    require_onnx("int8 quantisation")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)
    return Path(out)


def onnx_runner(model: nn.Module, inputs: dict[str, torch.Tensor], int8: bool = False,
                threads: int | None = None) -> Callable[[], Any]:  # fmt: skip
    """A zero-argument callable that runs ``model`` exported to ONNX (int8-quantised if ``int8``) in an ONNX Runtime
    CPU session on ``inputs`` (missing ``token_type_ids`` are zeros): what callbacks/latency.py times.

    Raises:
        RuntimeError: onnx or onnxruntime is not installed (checked before exporting), or ``inputs`` are not on CPU.
    """
    backend = "latency.backend=onnxruntime" + ("-int8" if int8 else "")
    require_onnx(backend)
    if any(v.device.type != "cpu" for v in inputs.values()):
        raise RuntimeError(f"{backend} times ONNX Runtime's CPU session; set latency.device=cpu")
    folder = Path(tempfile.mkdtemp(prefix="latency-onnx-"))
    vocab = getattr(getattr(model, "config", None), "vocab_size", 1000)
    export_onnx(copy.deepcopy(model), folder / "model.onnx", vocab)
    path = quantize_int8(folder / "model.onnx", folder / "model.int8.onnx") if int8 else folder / "model.onnx"
    session = onnx_session(path, threads)
    feeds = {"token_type_ids": torch.zeros_like(inputs["input_ids"]), **inputs}
    wanted = {i.name for i in session.get_inputs()}
    arrays = {k: v.numpy() for k, v in feeds.items() if k in wanted}
    return lambda: session.run(None, arrays)
