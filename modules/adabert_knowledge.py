"""The fine-tuned teacher's knowledge for recipe=adabert (step 2 of recipes/adabert.py): its logits on every
training row, and a probe (a linear classifier on frozen [CLS] states) per layer with its logits, as fixed
targets; plus how good the teacher and its probes are on dev (and test). Cached per teacher weights + data +
probe epochs, so a sweep over β pays for them once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import track

from core.assets import file_fingerprint, resolve_path
from core.files import torch_save_atomic
from datamodules.classification import ClassificationDataModule
from modules.adabert_training import TeacherTargets, train_probe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitOutputs:
    """The teacher over one split, in split order."""

    logits: torch.Tensor  # (N, C)
    cls_states: torch.Tensor  # (L, N, H): the [CLS] state after every layer
    labels: torch.Tensor  # (N,); -1 where the split has no label


@dataclass(frozen=True)
class KnowledgeCache:
    """Where the teacher's targets are cached, and what besides the teacher and data keys them."""

    cache_dir: str  # recipe.cache_dir
    probe_epochs: int  # recipe.probe_epochs: full-batch Adam steps per layer probe


@dataclass
class TeacherKnowledge:
    """The teacher's targets on the training split, and how good the teacher and its probes are on dev."""

    targets: TeacherTargets
    probe_dev_acc: list[float]
    teacher_dev: dict[str, float]
    teacher_test: dict[str, float]


@torch.no_grad()
def teacher_outputs(
    teacher: torch.nn.Module, loader: Any, description: str = "teacher", progress: bool = False
) -> SplitOutputs:
    """The teacher's logits, per-layer [CLS] states and the labels over ``loader`` (one split)."""
    logits, states, labels = [], [], []
    for batch in track(loader, description=description, total=len(loader), disable=not progress):
        out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      token_type_ids=batch["token_type_ids"], output_hidden_states=True)  # fmt: skip
        logits.append(out.logits.float())
        states.append(torch.stack([h[:, 0] for h in out.hidden_states[1:]]).float())
        labels.append(batch["labels"])
    return SplitOutputs(torch.cat(logits), torch.cat(states, dim=1), torch.cat(labels))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of logits (N, C) against labels (N,), rows labelled -1 left out."""
    keep = labels >= 0
    return float((logits[keep].argmax(-1) == labels[keep]).float().mean())


def teacher_knowledge(
    teacher: torch.nn.Module,
    teacher_dir: str,
    data: ClassificationDataModule,
    cache: KnowledgeCache,
    progress: bool = False,
) -> TeacherKnowledge:
    """The teacher's targets and scores on ``data`` (set up), from ``cache`` or computed and cached now.

    Args:
        teacher: the fine-tuned classifier, in eval mode.
        teacher_dir: where its weights are (their fingerprints key the cache).
        data: the task's data module, after ``setup()``.
        cache: where targets are cached, and the probes' training length.
        progress: show progress bars over the teacher passes.
    """
    weights = sorted(Path(teacher_dir).glob("*.safetensors")) or sorted(Path(teacher_dir).glob("*.bin"))
    key = hashlib.sha256(json.dumps({
        "teacher": [file_fingerprint(p) for p in weights], "data": str(data.cache_path),
        "probe_epochs": cache.probe_epochs, "version": 1}, sort_keys=True).encode()).hexdigest()[:24]  # fmt: skip
    path = resolve_path(cache.cache_dir) / f"targets-{key}.pt"
    if path.exists():
        log.info("teacher targets from %s", path)
        payload = torch.load(path, weights_only=True)
    else:
        log.info("teacher targets: running the teacher over %s and training %s probes", data.split_sizes,
                 teacher.config.num_hidden_layers)  # fmt: skip
        train = teacher_outputs(teacher, data.eval_dataloader("train"), "teacher over train", progress)
        dev = teacher_outputs(teacher, data.eval_dataloader("validation"), "teacher over dev", progress)
        probes = [
            train_probe(s, train.labels, data.num_labels, epochs=cache.probe_epochs) for s in train.cls_states
        ]
        with torch.no_grad():
            probe_logits = torch.stack([p(s) for p, s in zip(probes, train.cls_states)])
            probe_dev_acc = [accuracy(p(s), dev.labels) for p, s in zip(probes, dev.cls_states)]
        payload = {"logits": train.logits, "probe_logits": probe_logits, "probe_dev_acc": probe_dev_acc,
                   "teacher_dev": {"val/acc": accuracy(dev.logits, dev.labels)}, "teacher_test": {}}  # fmt: skip
        if "test" in data.split_sizes and data.test_labelled:
            test = teacher_outputs(teacher, data.eval_dataloader("test"), "teacher over test", progress)
            payload["teacher_test"] = {"test/acc": accuracy(test.logits, test.labels)}
        torch_save_atomic(payload, path)  # ranks that computed the same targets never see a half-written file
    return TeacherKnowledge(
        targets=TeacherTargets(payload["logits"], payload["probe_logits"]),
        probe_dev_acc=list(payload["probe_dev_acc"]),
        teacher_dev=dict(payload["teacher_dev"]),
        teacher_test=dict(payload["teacher_test"]),
    )
