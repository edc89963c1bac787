"""Linear probe of a frozen encoder on a classification task: a candidate flash metric (AutoDistill §4.7 asks which
flash metric ranks students as their regular distillation and downstream scores do).

    encode (frozen encoder, pooled final states) -> standardise -> logistic regression on a seeded train
    subset -> the task's metrics on its dev split ("probe/acc", "probe/f1", ..., "probe/score")

A linear classifier on frozen features measures how linearly decodable the task is from the representation
(Alain & Bengio 2016, "Understanding intermediate layers using linear classifier probes"). Unlike MLM accuracy
after a few dozen steps of a head-less teacher's distillation (stuck near the unigram plateau), it reads the
representation the layer-wise losses train, and it costs seconds: one forward pass over ~3k short sequences and a
convex fit (sentiment task, 2,000 + 1,057 reviews of 27 tokens on average: 1.7-21 s per trial, mean 10.5 s, for the
0.08-1.3 GFLOPs students of benchmarks/fidelity.py on a shared 2-core CPU; the fit itself is under 0.1 s).
Measured there (README, Flash fidelity): on the offline sentiment task it does not rank students, since an untrained
student with the teacher's embeddings already probes at the level of the distilled ones (a mean-pooled probe reads
the embedding table, a bag of words); a harder task or ``pool: cls`` may differ.

The fit is scikit-learn's ``LogisticRegression`` (L-BFGS, L2) on standardised features: a convex problem with a
unique optimum, so the result does not depend on an optimiser's learning rate or step count (a torch linear
layer trained for a fixed number of steps would stop at different distances from the optimum for features of
different scales, which is the very thing that differs between students). scikit-learn comes with nevergrad
(through bayesian-optimization) and is declared in pyproject.toml.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn
from torch.utils.data import DataLoader, Subset
from transformers import PreTrainedTokenizerBase

from datamodules.classification import ClassificationDataModule
from datamodules.task_config import TaskDataConfig
from modules.distillation_config import POOLS, ProbeConfig  # noqa: F401  (public here too)
from modules.finetuning import build_metrics, metric_names, task_score

log = logging.getLogger(__name__)


def check_probe_task(task: object, max_positions: int) -> None:
    """The task a probe can run on: classification (local or GLUE) with 2+ classes, within the student's positions.

    Raises:
        ValueError: a QA task, a regression task, or ``task.max_seq_len`` beyond ``max_positions``.
    """
    if not isinstance(task, TaskDataConfig):
        raise ValueError(
            f"recipe.probe: a linear probe needs a classification task (task=sentiment, task=glue), got "
            f"{type(task).__name__} ({getattr(task, 'name', '?')}); set recipe.probe.max_train_examples=0"
        )
    if task.num_labels < 2:
        raise ValueError(
            f"recipe.probe: task {task.name} is a regression task (num_labels=1); set recipe.probe.max_train_examples=0"
        )
    if task.max_seq_len > max_positions:
        raise ValueError(
            f"recipe.probe: task.max_seq_len={task.max_seq_len} exceeds student.max_position_embeddings={max_positions}"
        )


def probe_metric_names(task: TaskDataConfig) -> list[str]:
    """What ``linear_probe`` reports for ``task``: ``probe/<metric>`` (the task's official metrics, e.g. acc and f1),
    ``probe/score`` (their mean x 100: the scale of fine-tuning's ``val/score``), the train rows used and the seconds."""
    names = metric_names(task.glue_task if task.source == "glue" else None, task.num_labels)
    return [f"probe/{n}" for n in names] + ["probe/score", "probe/train_examples", "probe/time_s"]


def pool_states(hidden: torch.Tensor, attention_mask: torch.Tensor, pool: str) -> torch.Tensor:
    """One vector per sequence.

    Args:
        hidden: (B, S, H) final states; attention_mask: (B, S) 1 for real tokens; pool: ``mean`` (over the real
            tokens) or ``cls`` (position 0).
    Returns:
        (B, H) float32.
    """
    if pool == "cls":
        return hidden[:, 0].float()
    mask = attention_mask[..., None].to(hidden.dtype)  # (B, S, 1)
    return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float()  # (B, H)


@torch.no_grad()
def encode(encoder: nn.Module, loader: DataLoader, pool: str) -> tuple[np.ndarray, np.ndarray]:
    """Pooled final states of every row ``loader`` yields (``pad_collate`` batches), in eval mode.

    Args:
        encoder: a ``StudentModel`` or any HF encoder returning ``last_hidden_state`` (B, S, H).
    Returns:
        features (N, H) float64 and labels (N,) int64; the encoder's train/eval mode is restored.
    """
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    features, labels = [], []
    try:
        for batch in loader:
            mask = batch["attention_mask"].to(device)
            out = encoder(
                input_ids=batch["input_ids"].to(device), attention_mask=mask,
                token_type_ids=batch["token_type_ids"].to(device),
            )  # fmt: skip
            features.append(pool_states(out.last_hidden_state, mask, pool).cpu())
            labels.append(batch["labels"])
    finally:
        encoder.train(was_training)
    return torch.cat(features).double().numpy(), torch.cat(labels).numpy()


def fit_probe(features: np.ndarray, labels: np.ndarray, l2: float = 1.0, max_iter: int = 1000) -> Pipeline:
    """Standardise, then multinomial logistic regression with an L2 penalty (L-BFGS): deterministic, no seed needed.

    Args:
        features: (N, H); labels: (N,) class ids.
    Returns:
        the fitted scaler + classifier (``.predict(features) -> (N,)``).
    Raises:
        ValueError: fewer than two classes among ``labels`` (nothing to separate).
    """
    if len(np.unique(labels)) < 2:
        raise ValueError(f"linear probe: the training rows hold one class only ({np.unique(labels)}); raise "
                         "recipe.probe.max_train_examples")  # fmt: skip
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / l2, max_iter=max_iter))
    # One BLAS thread: an (N <= a few thousand) x (H <= 512) problem is too small for threads to pay, and on a
    # shared CPU idle BLAS threads spin against the other jobs (measured: 6x slower with 2 threads there).
    with threadpool_limits(1):
        return probe.fit(features, labels)


def score_probe(probe: Pipeline, features: np.ndarray, labels: np.ndarray, metrics: tuple[str, ...],
                num_labels: int) -> dict[str, float]:  # fmt: skip
    """The task's metrics (``modules.finetuning.build_metrics``: the same torchmetrics as fine-tuning) of the
    probe's predictions. Returns ``{metric: value in [0, 1] (mcc: [-1, 1])}``."""
    collection = build_metrics(metrics, num_labels)
    collection.update(torch.as_tensor(probe.predict(features)), torch.as_tensor(labels))
    return {name: float(value) for name, value in collection.compute().items()}


def train_subset(size: int, cap: int, seed: int) -> list[int]:
    """A seeded subset of ``range(size)`` of at most ``cap`` rows (all of them when ``cap`` >= ``size``), sorted."""
    if cap >= size:
        return list(range(size))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(size, generator=generator)[:cap].tolist())


def by_length(loader: DataLoader, rows: list[int]) -> DataLoader:
    """``rows`` of ``loader``'s split in order of length, batched as ``loader`` batches: each batch pads to its
    longest row, so sorted rows pad little (a third less work on the sentiment task). Features and labels stay
    paired, and the probe's fit and scores do not depend on the row order."""
    lengths = loader.dataset.lengths
    ordered = sorted(rows, key=lambda i: int(lengths[i]))
    return DataLoader(Subset(loader.dataset, ordered), batch_size=loader.batch_size, collate_fn=loader.collate_fn)


def linear_probe(
    encoder: nn.Module, task: TaskDataConfig, tokenizer: PreTrainedTokenizerBase, cfg: ProbeConfig
) -> dict[str, float]:
    """Probe ``encoder`` on ``task``: fit on (a subset of) its train split, score on its validation split.

    Args:
        encoder: the distilled student's encoder (``StudentForPreTraining.student``), or any HF encoder.
        task: the ``task`` group's classification config (tokenised with ``tokenizer`` and cached on disk).
        tokenizer: the encoder's tokenizer (the teacher's, for a distilled student).
    Returns:
        ``probe_metric_names(task)``'s values: ``probe/acc`` etc. in [0, 1], ``probe/score`` x 100, the train rows
        used, the wall time in seconds (encoding + fit + scoring; the task's tokenisation is cached).
    Raises:
        ValueError: as ``fit_probe``; DataError: as ``ClassificationDataModule``.
    """
    started = time.perf_counter()
    data = ClassificationDataModule(task, tokenizer, seed=cfg.seed)
    data.setup()
    train, dev = data.eval_dataloader("train"), data.eval_dataloader("validation")
    rows = train_subset(len(train.dataset), cfg.max_train_examples, cfg.seed)
    probe = fit_probe(*encode(encoder, by_length(train, rows), cfg.pool), l2=cfg.l2, max_iter=cfg.max_iter)
    names = metric_names(task.glue_task if task.source == "glue" else None, task.num_labels)
    dev_rows = list(range(len(dev.dataset)))
    values = score_probe(probe, *encode(encoder, by_length(dev, dev_rows), cfg.pool), names, task.num_labels)
    out = {f"probe/{k}": v for k, v in values.items()}
    out.update({"probe/score": task_score(values), "probe/train_examples": float(len(rows)),
                "probe/time_s": time.perf_counter() - started})  # fmt: skip
    log.info("linear probe on %s (%d train rows, %s pool): %s", task.name, len(rows), cfg.pool,
             {k: round(v, 4) for k, v in out.items()})  # fmt: skip
    return out
