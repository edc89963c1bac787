"""Pruning callbacks: when the functions of modules/pruning.py run during training. Each does one thing.

- ``GradualMagnitudePruning``: Zhu & Gupta's cubic schedule of global magnitude pruning (Gordon et al. 2020 in
  pre-training; NIP in fine-tuning), masks re-applied after every optimizer step;
- ``ProximalPruning``: RPP's proximal step after every optimizer step, α re-estimated every few hundred steps;
- ``FixedSparsity``: a pruned model's zeros stay exactly zero while it fine-tunes (AdamW's moments and weight decay
  would move them otherwise).

"After every optimizer step" is ``on_train_batch_end`` (Lightning has stepped the optimizer by then) once the global
step has moved, so gradient accumulation steps the pruning once per optimizer step too.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from modules.pruning import (
    apply_masks_,
    cubic_sparsity,
    global_magnitude_prune_,
    kept_masks,
    proximal_step_,
    prunable_linears,
    rpp_reweight,
)
from modules.pruning_config import CubicSchedule, FinetuneSparsity, RPPConfig


def total_steps(trainer: L.Trainer) -> int:
    """The optimizer steps this fit will take (max_steps, else what the epochs give)."""
    return int(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else int(trainer.estimated_stepping_batches)


class FixedSparsity(L.Callback):
    """Keep every encoder linear weight that is exactly zero when training starts at zero (a fixed mask)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.masks: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.linears = prunable_linears(self.model)
        self.masks = kept_masks(self.linears)  # read from the weights: a resumed run reads the same zeros

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        apply_masks_(self.linears, self.masks)


class GradualMagnitudePruning(L.Callback):
    """Global magnitude pruning of ``model``'s encoder linears to ``final`` sparsity on ``schedule`` (Zhu & Gupta
    eq. 1), the masks held between events. ``schedule.begin_fraction == end_fraction``: one-shot pruning there."""

    def __init__(self, model: nn.Module, final: float, schedule: CubicSchedule):
        self.model, self.final, self.schedule = model, final, schedule
        self.current = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.linears = prunable_linears(self.model)
        self.begin, self.end = self.schedule.steps(total_steps(trainer))
        self.masks = kept_masks(self.linears)
        self.current = self.target(trainer.global_step) if trainer.global_step else 0.0  # resumed: already there
        self.step_to(trainer.global_step)

    def target(self, step: int) -> float:
        s = self.schedule
        return cubic_sparsity(step, self.final, self.begin, self.end, s.frequency, s.initial)

    def step_to(self, step: int) -> None:
        target = self.target(step)
        if target > self.current:  # a pruning event: masks only grow (zeros are the smallest magnitudes)
            self.masks = global_magnitude_prune_(self.linears, target)
            self.current = target
        else:
            apply_masks_(self.linears, self.masks)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.step_to(trainer.global_step)


class ProximalPruning(L.Callback):
    """RPP (Guo et al. 2019): after each optimizer step, ``w ← sign(w)·max(|w| − η·λ·α_w, 0)`` on ``model``'s
    encoder linears, η the step's learning rate, ``α_w = 1/(|w| + ε)`` re-estimated every ``reweight_every`` steps
    (and kept in checkpoints, so a resumed run continues with the same factors)."""

    def __init__(self, model: nn.Module, rpp: RPPConfig):
        self.model, self.rpp = model, rpp
        self.alphas: dict[str, torch.Tensor] | None = None
        self.lr = 0.0
        self.last_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.linears = prunable_linears(self.model)
        if self.alphas is None:
            self.alphas = rpp_reweight(self.linears, self.rpp.eps)
        self.last_step = trainer.global_step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lr = float(optimizer.param_groups[0]["lr"])  # η of the step about to run

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self.last_step:  # no optimizer step on this micro-batch (gradient accumulation)
            return
        self.last_step = step
        proximal_step_(self.linears, self.alphas, self.lr, self.rpp.lam)
        if step % self.rpp.reweight_every == 0:
            self.alphas = rpp_reweight(self.linears, self.rpp.eps)

    def state_dict(self) -> dict:
        return {"alphas": self.alphas}

    def load_state_dict(self, state_dict: dict) -> None:
        self.alphas = state_dict.get("alphas")


def finetune_sparsity_callbacks(cfg: FinetuneSparsity, model: nn.Module) -> list[L.Callback]:
    """recipe=finetune's ``recipe.sparsity``: NIP (gradual magnitude pruning while fine-tuning) when ``cfg.nip`` > 0,
    else a fixed mask when ``keep`` is on, or auto and the model's config records a pruning; else nothing."""
    if cfg.nip > 0:
        return [GradualMagnitudePruning(model, cfg.nip, cfg.nip_schedule)]
    recorded = getattr(getattr(model, "config", None), "pruning", None)
    if cfg.keep == "on" or (cfg.keep == "auto" and recorded):
        return [FixedSparsity(model)]
    return []
