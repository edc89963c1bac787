"""AdaBERT's training side: the teacher's knowledge as fixed targets (final logits + per-layer probes),
and the LightningModule that searches (or retrains) a CNN student with

    L = (1 - γ)·L_CE + γ·L_KD + β·L_E

L_KD matches the student's final logits to the teacher's and each student cell's small classifier to the
probe of its teacher layer (hierarchical, task-useful knowledge); L_E (``efficiency_loss``) prices the
sampled architecture. Weights train by SGD (momentum, cosine LR), the architecture logits by Adam.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from core.seeding import mix_seed
from modules.adabert import AdaBertForSequenceClassification, ArchitectureSample
from modules.adabert_child import child_config, inherit_weights
from modules.finetuning import build_metrics, is_new_best, log_task_metrics, schedule_length
from modules.losses import KDSettings, hierarchical_kd_loss, mix_kd


@dataclass
class TeacherTargets:
    """What the student learns from, per training row (the split's row index): the fine-tuned teacher's
    logits (N, C) and each layer probe's logits (L, N, C)."""

    logits: torch.Tensor
    probe_logits: torch.Tensor

    @property
    def num_layers(self) -> int:
        return self.probe_logits.shape[0]


def train_probe(features: torch.Tensor, labels: torch.Tensor, num_labels: int, epochs: int = 200,
                lr: float = 1e-2, seed: int = 0) -> nn.Linear:  # fmt: skip
    """A linear classifier on frozen features (full-batch Adam, a little weight decay): one layer's probe."""
    generator = torch.Generator().manual_seed(seed)
    probe = nn.Linear(features.shape[1], num_labels)
    with torch.no_grad():
        probe.weight.normal_(0, 0.02, generator=generator)
        probe.bias.zero_()
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    x = (features - mean) / std  # standardised: one learning rate fits every layer's scale
    opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(probe(x), labels).backward()
        opt.step()
    # Fold the standardisation into the layer, so the probe reads raw features.
    with torch.no_grad():
        folded = nn.Linear(features.shape[1], num_labels)
        folded.weight.copy_(probe.weight / std)
        folded.bias.copy_(probe.bias - (probe.weight * (mean / std)).sum(1))
    return folded


@dataclass(frozen=True)
class TauSchedule:
    """Gumbel-softmax temperature τ, annealed exponentially from ``start`` to ``end`` over the run (``tau_at``)."""

    start: float = 1.0
    end: float = 0.1


@dataclass(frozen=True)
class WeightOptimizer:
    """SGD on the network weights: momentum, weight decay, LR cosine-annealed from ``lr_start`` to ``lr_end`` per
    step; ``grad_clip`` the max gradient norm (None: no clipping)."""

    lr_start: float = 2e-2
    lr_end: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float | None = 5.0


@dataclass(frozen=True)
class ArchOptimizer:
    """Adam on the architecture logits (search only); they stay put for the first ``warmup_epochs``."""

    lr: float = 3e-4
    weight_decay: float = 1e-3
    warmup_epochs: int = 0


ADABERT_KD = KDSettings(gamma=0.8, temperature=1.0)  # AdaBERT's γ = 0.8


@torch.no_grad()
def recalibrate_batchnorm(
    model: AdaBertForSequenceClassification,
    batches: Iterable[dict[str, torch.Tensor]],
    max_batches: int | None = None,
) -> int:
    """Recompute every BatchNorm's running statistics from ``batches`` (training data), then leave ``model`` in
    eval mode: the statistics a saved or evaluated child normalises by.

    During training the running averages lag (momentum 0.1 over few steps, starting at mean 0 / var 1) and an
    inherited child has none at all, while its real activations can have a variance of 1e-6: evaluated with
    them it predicts one class. As NAS libraries do: reset, a cumulative average (``momentum=None``) over
    forward passes with the BatchNorms in train mode (nothing else: no dropout), no gradient.

    Args:
        model: an AdaBERT child (a super-network's BatchNorms keep no statistics and are left alone).
        batches: BERT-style batches (``input_ids``, ``attention_mask``, ``token_type_ids``); the first
            ``max_batches`` (None: all) are used.

    Returns:
        How many batches were used.

    Raises:
        ValueError: ``batches`` is empty while the model has statistics to compute.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d) and m.track_running_stats]
    model.eval()
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
        norm.train()
    device = next(model.parameters()).device
    used = 0
    for batch in itertools.islice(batches, max_batches):
        inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}  # fmt: skip
        model(**inputs)
        used += 1
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
        norm.eval()
    if not used:
        raise ValueError("recalibrate_batchnorm: no training batches to compute BatchNorm statistics from")
    return used


def tau_at(step: int, total: int, start: float, end: float) -> float:
    """Gumbel temperature, annealed exponentially from ``start`` to ``end`` over the run."""
    if total <= 1:
        return end
    return start * (end / start) ** (min(step, total - 1) / (total - 1))


class AdaBertModule(L.LightningModule):
    """Searches a super-network (``model.config.is_search``) or retrains a child, on one task.

    Logs ``train/{loss,ce,kd,efficiency}``, ``arch/num_cells``, ``arch/tau`` and, per validation of the
    argmax child, ``val/<metric>`` and ``val/score``; ``best`` keeps the metrics at the best ``val/score`` and
    ``history`` the derived architecture after each validation (search).

    Args:
        model: a super-network (``config.is_search``) or a child; targets: the teacher's logits and probes per
            training row (batches carry ``index``); metrics: names for ``build_metrics``.
        total_steps: the LR/τ schedule length; None: what the Trainer will run.
        kd: γ and T of ``L = (1 − γ)·L_CE + γ·L_KD + β·L_E``; beta: β, the efficiency weight (0 when retraining).
        tau, weight_optimizer, arch_optimizer: the Gumbel temperature schedule and the two optimizers.
        seed: per-batch seeds (``mix_seed``) of the Gumbel noise and dropout; on_best: called with ``best``
            (on rank 0) when the dev score improves.
        calibration_batches: training batches that recompute the evaluated child's BatchNorm statistics
            before each validation (``recalibrate_batchnorm``): the search's argmax child, built with the
            super-network's weights, and the retrained child itself, so what ``on_best`` saves scores what
            was logged.
    """

    def __init__(
        self,
        model: AdaBertForSequenceClassification,
        targets: TeacherTargets,
        metrics: tuple[str, ...],
        total_steps: int | None = None,
        kd: KDSettings = ADABERT_KD,
        beta: float = 4.0,
        tau: TauSchedule = TauSchedule(),  # noqa: B008  (frozen: a shared default is safe)
        weight_optimizer: WeightOptimizer = WeightOptimizer(),  # noqa: B008
        arch_optimizer: ArchOptimizer = ArchOptimizer(),  # noqa: B008
        seed: int = 0,
        on_best: Callable[[dict[str, float]], None] | None = None,
        calibration_batches: int = 200,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False  # two optimizers (weights: SGD, architecture: Adam), one backward
        self.model = model
        self.search = model.config.is_search
        self.register_buffer("teacher_logits", targets.logits.float(), persistent=False)
        self.register_buffer("probe_logits", targets.probe_logits.float(), persistent=False)
        self.num_labels = model.config.num_labels
        self.val_metrics = build_metrics(metrics, self.num_labels)
        self.total_steps = total_steps
        self.kd, self.beta, self.tau = kd, beta, tau
        self.weight_optimizer, self.arch_optimizer = weight_optimizer, arch_optimizer
        self.seed = seed
        self.on_best = on_best
        self.calibration_batches = calibration_batches
        # What validation runs (set per validation); a tuple, so the child is no registered submodule.
        self._evaluated: tuple[AdaBertForSequenceClassification, ...] = ()
        self.best: dict[str, float] = {}
        self.history: list[dict] = []
        self.schedule_steps = total_steps or 1  # set from the Trainer in configure_optimizers

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        # The Gumbel noise and dropout of a batch depend only on (seed, batch): a run resumed from a checkpoint
        # samples what an uninterrupted one would, and every DDP rank samples the same architecture.
        torch.manual_seed(mix_seed(self.seed, self.batches_done))
        tau = tau_at(self.batches_done, self.schedule_steps, self.tau.start, self.tau.end)
        sample: ArchitectureSample | None = self.model.sample_architecture(tau) if self.search else None
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"], sample=sample, output_cell_logits=True,
        )  # fmt: skip
        rows = batch["index"]
        ce = F.cross_entropy(out.logits, batch["labels"])
        kd = hierarchical_kd_loss(student_logits=out.logits, student_cell_logits=out.cell_logits,
                                  teacher_logits=self.teacher_logits[rows],
                                  teacher_probe_logits=self.probe_logits[:, rows],
                                  temperature=self.kd.temperature)  # fmt: skip
        efficiency = (
            self.model.efficiency_loss(sample) if sample is not None else torch.zeros((), device=ce.device)
        )
        loss = mix_kd(ce, kd, self.kd.gamma) + self.beta * efficiency
        if not torch.isfinite(loss):  # stop before the weights (and the saved checkpoints) turn to nan
            raise FloatingPointError(
                f"AdaBERT {'search' if self.search else 'retrain'}: the loss is {float(loss)} at step "
                f"{self.batches_done} (ce {float(ce):.4g}, kd {float(kd):.4g}, efficiency {float(efficiency):.4g}); "
                "lower recipe.lr or recipe.grad_clip and rerun into a fresh run_dir (a resumed stage keeps its "
                "optimizer's learning rate)"
            )
        for opt in optimizers:
            opt.zero_grad()
        self.manual_backward(loss)
        grad_clip = self.weight_optimizer.grad_clip
        if grad_clip:  # the weights only; Adam on the architecture logits is scale-free
            self.clip_gradients(optimizers[0], gradient_clip_val=grad_clip, gradient_clip_algorithm="norm")
        # During the warm-up the architecture logits stay put: the shared weights first learn under uniformly
        # sampled architectures, so the first choices are not made by untrained ops (which favour zero and skip).
        warming_up = self.current_epoch < self.arch_optimizer.warmup_epochs
        for opt in optimizers[:1] if warming_up else optimizers:
            opt.step()
        self.lr_schedulers().step()
        self.log_dict({"train/ce": ce, "train/kd": kd, "train/efficiency": efficiency})
        self.log("train/loss", loss, prog_bar=True)
        if sample is not None:
            self.log_dict({"arch/num_cells": float(sample.num_cells), "arch/tau": tau})
        return loss

    @property
    def batches_done(self) -> int:
        """Training batches so far (``global_step`` counts optimizer steps: two per batch in the search)."""
        return self.trainer.fit_loop.total_batch_idx + 1 if self._trainer is not None else 0

    def on_validation_epoch_start(self) -> None:
        # The child is judged (and saved by on_best) with the BatchNorm statistics of the training data, as it will
        # be deployed. The sanity check's numbers are thrown away: it runs the model as it is.
        if self.trainer.sanity_checking:
            self._evaluated = (self.model,)
            return
        child = self.model
        # The search: its argmax child with the super-network's weights (whose BatchNorms keep no statistics).
        if self.search:
            child = AdaBertForSequenceClassification(child_config(self.model.config, self.model.derive()))
            inherit_weights(child, self.model)
            child.to(self.device)
        recalibrate_batchnorm(child, self.calibration_loader(), self.calibration_batches)
        self._evaluated = (child,)

    def calibration_loader(self) -> Iterable[dict[str, torch.Tensor]]:
        """Training batches for ``recalibrate_batchnorm``: a fresh loader from the datamodule (the Trainer's own
        keeps its place and order), else the Trainer's.

        Raises:
            RuntimeError: the Trainer has no training data.
        """
        datamodule = self.trainer.datamodule
        loader = datamodule.train_dataloader() if datamodule is not None else self.trainer.train_dataloader
        if loader is None:
            raise RuntimeError(
                "AdaBertModule: the child's BatchNorm statistics are recomputed on training batches before each "
                "validation, and the Trainer has none; fit with a datamodule or train_dataloaders"
            )
        return loader

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.update_metrics(self._evaluated[0] if self._evaluated else self.model, batch)

    def update_metrics(self, model: AdaBertForSequenceClassification, batch: dict[str, torch.Tensor]) -> None:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"])  # fmt: skip
        self.val_metrics.update(out.logits.argmax(-1), batch["labels"])

    def on_validation_epoch_end(self) -> None:
        values, score = log_task_metrics(self, self.val_metrics, "val", nan_to_zero=True, prog_bar=True)
        self._evaluated = ()
        if self.trainer.sanity_checking:
            return
        if self.search:
            arch = self.model.derive()
            self.history.append({"step": self.batches_done, "val/score": score, "num_cells": arch.num_cells,
                                 "genotype": arch.genotype})  # fmt: skip
        if is_new_best(self.best, {"val/score": score}, "val/score"):
            self.best = {**{f"val/{k}": v for k, v in values.items()}, "val/score": score,
                         "best_step": float(self.batches_done)}  # fmt: skip
            if self.on_best is not None and self.trainer.is_global_zero:  # one rank writes the model
                self.on_best(self.best)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # ``model`` as it is: the recipe tests the best-dev child it saved (statistics recalibrated before saving).
        self.update_metrics(self.model, batch)

    def on_test_epoch_end(self) -> None:
        log_task_metrics(self, self.val_metrics, "test", nan_to_zero=False)

    # A resumed run keeps what it had found: the best dev metrics and the search trajectory.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["adabert"] = {"best": self.best, "history": self.history}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("adabert", {})
        self.best, self.history = dict(state.get("best", {})), list(state.get("history", []))

    def configure_optimizers(self):
        self.schedule_steps = schedule_length(self)
        w = self.weight_optimizer
        weights = torch.optim.SGD(self.model.weight_parameters(), lr=w.lr_start, momentum=w.momentum,
                                  weight_decay=w.weight_decay)  # fmt: skip
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(weights, T_max=self.schedule_steps,
                                                            eta_min=w.lr_end)  # fmt: skip
        if not self.search:
            return {"optimizer": weights, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
        arch = torch.optim.Adam(self.model.architecture_parameters(), lr=self.arch_optimizer.lr, betas=(0.5, 0.999),
                                weight_decay=self.arch_optimizer.weight_decay)  # fmt: skip
        return [weights, arch], [{"scheduler": cosine, "interval": "step"}]
