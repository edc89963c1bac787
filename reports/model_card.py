"""The model card (``README.md`` with Hugging Face's metadata header) written into every saved model dir.

``render_card(card)`` is a pure function of a ``ModelCard``; recipes/shipping.py fills one from a run's config and
metrics. The metadata header follows the Hub's model-card spec: ``library_name``, ``pipeline_tag``, ``tags`` and a
``model-index`` whose results name each metric's split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from core.files import write_text_atomic

# metrics.json prefix -> the split it was measured on
SPLITS = {"val/": "validation", "test/": "test", "probe/": "validation (linear probe)"}
LOADING = {
    "stock": "a stock transformers `{cls}`: no remote code",
    "remote_code": "transformers with `trust_remote_code=True` (the code is the `.py` files beside the weights)",
    "library": "a stock transformers `{cls}`",
}


@dataclass
class ModelCard:
    """What a saved model's card says. Numbers are as measured by the run; None = not measured.

    Attributes:
        name: the model's name (``Model_256_128_4_512_2x4``, an AdaBERT genotype, the teacher's id).
        architecture: the class saved (``BertForSequenceClassification``, ``StudentForPreTraining``).
        loading: how it loads: ``stock``, ``remote_code`` or ``library`` (modules.portable.save_for_serving).
        pipeline_tag: the Hub task (``fill-mask``, ``text-classification``, ``question-answering``).
        teacher: the teacher's id or path.
        data: what it was trained on (corpus, task).
        method: the recipe and what it does.
        budget: steps / epochs and batch.
        metrics: metrics.json's numbers; those under ``val/``, ``test/``, ``probe/`` are listed with their split.
        params: parameters (without heads where the recipe counts so).
        flops_per_seq: FLOPs of one sequence of 128 tokens.
        latency_ms: p50 of one forward pass (batch and length in ``latency_shape``), ms.
        latency_device: the device fingerprint it was measured on; latency_backend: eager, onnxruntime, ...
        command: the command that produced it.
        limitations: sentences for the limitations section.
        labels: the class names of a classifier (id order).
    """

    name: str
    architecture: str
    loading: str
    pipeline_tag: str
    teacher: str
    data: str
    method: str
    budget: str
    metrics: dict[str, float]
    command: str
    params: float | None = None
    flops_per_seq: float | None = None
    latency_ms: float | None = None
    latency_device: str = ""
    latency_backend: str = "eager"
    latency_shape: str = "batch 1 x 128 tokens"
    limitations: list[str] = field(default_factory=list)
    labels: list[str] | None = None


def split_metrics(metrics: dict[str, float]) -> list[tuple[str, str, float]]:
    """(split, metric name, value) for the metrics that name a split (``val/acc`` -> validation, acc), sorted."""
    rows = []
    for key, value in sorted(metrics.items()):
        for prefix, split in SPLITS.items():
            if key.startswith(prefix):
                rows.append((split, key[len(prefix):], float(value)))
    return rows


def _header(card: ModelCard) -> str:
    # JSON is YAML, and quotes whatever a name or path holds.
    results = [
        {"task": {"type": card.pipeline_tag}, "dataset": {"name": card.data, "type": card.data, "split": split},
         "metrics": [{"type": name, "name": f"{split} {name}", "value": round(value, 6)}]}
        for split, name, value in split_metrics(card.metrics)
    ]  # fmt: skip
    lines = [
        "---",
        "library_name: transformers",
        f"pipeline_tag: {card.pipeline_tag}",
        "tags: [distillation, distill-recipes" + (", custom_code" if card.loading == "remote_code" else "") + "]",
        "model-index:",
        f"- name: {json.dumps(card.name)}",
        f"  results: {json.dumps(results)}",
        "---",
    ]
    return "\n".join(lines)


def _number(value: float | None, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
    return "not measured" if value is None else f"{value / scale:.{digits}f}{unit}"


def render_card(card: ModelCard) -> str:
    """The card's Markdown, metadata header first.

    Raises:
        ValueError: ``card.loading`` is not one of ``LOADING``'s keys.
    """
    if card.loading not in LOADING:
        raise ValueError(f"ModelCard.loading must be one of {list(LOADING)}, got {card.loading!r}")
    remote = ", trust_remote_code=True" if card.loading == "remote_code" else ""
    rows = split_metrics(card.metrics)
    table = "\n".join(f"| {split} | {name} | {value:.4f} |" for split, name, value in rows) or "| - | - | - |"
    labels = f"\nLabels (id order): {', '.join(card.labels)}.\n" if card.labels else ""
    limits = "\n".join(f"- {line}" for line in card.limitations) or "- none recorded"
    latency = (
        f"{_number(card.latency_ms, ' ms')} p50 ({card.latency_shape}, backend {card.latency_backend}, "
        f"device {card.latency_device or 'unknown'})"
    )
    return f"""{_header(card)}

# {card.name}

{card.method}

| | |
|---|---|
| architecture | `{card.architecture}` ({card.name}); loads as {LOADING[card.loading].format(cls=card.architecture)} |
| teacher | `{card.teacher}` |
| data | {card.data} |
| budget | {card.budget} |
| parameters | {_number(card.params, 'M', 1e6)} |
| FLOPs per sequence (128 tokens) | {_number(card.flops_per_seq, ' GFLOPs', 1e9, 3)} |
| latency | {latency} |
{labels}
## Metrics

| split | metric | value |
|---|---|---|
{table}

## How to load

```python
from transformers import AutoModel, AutoTokenizer, pipeline

tokenizer = AutoTokenizer.from_pretrained("<this dir>")
model = AutoModel.from_pretrained("<this dir>"{remote})
classify = pipeline("{card.pipeline_tag}", model="<this dir>"{remote})
```

## How it was made

```bash
{card.command}
```

## Limitations

{limits}
"""


def write_card(directory: str | Path, card: ModelCard) -> Path:
    """Write ``render_card(card)`` to ``<directory>/README.md`` (atomically); returns the path."""
    path = Path(directory) / "README.md"
    write_text_atomic(path, render_card(card))
    return path
