"""The LightningModule of flash and regular distillation (AutoDistill §3.3).

One training step, by stage (see modules/progressive.py):
    block stage k:  L = w_att · L_MHA^k + w_fm · L_FM^k        (only blocks 1..k run)
    pre-training:   L = L_D = α·L_MLM + (1−α)·L_MLM-KD + L_NSP (+ w_layer · Σ_k layer-wise terms)
where block k learns from teacher layer ``teacher_layers[k]`` and a dense projection maps the
block's width to the teacher's wherever they differ.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import lightning as L
import torch
from torch import nn

from core.dtypes import DTYPES
from core.seeding import mix_seed
from modules.distillation_config import LossWeights  # noqa: F401  (public here too)
from modules.losses import attention_transfer_loss, feature_map_loss, pretraining_distillation_loss
from modules.progressive import PRETRAINING, Stage, stage_at
from modules.student import StudentForPreTraining
from modules.teacher import Teacher
from modules.teacher_cache import TeacherCache, lean_targets, pack, unpack


def build_projections(student: StudentForPreTraining, teacher_width: int) -> nn.ModuleList:
    """A trainable dense map student width -> teacher width per block, exactly where they differ."""
    return nn.ModuleList(
        nn.Linear(spec.hidden_size, teacher_width) if spec.hidden_size != teacher_width else nn.Identity()
        for spec in student.config.block_specs
    )


def lr_lambda(step: int, schedule: list[Stage], warmup_fraction: float) -> float:
    """LR multiplier: each block stage warms up over its first ``warmup_fraction`` then holds; the
    pre-training stage warms up the same way then decays linearly to 0 at its end."""
    stage = stage_at(schedule, step)
    into = step - stage.start
    warmup = max(1, round(stage.steps * warmup_fraction))
    if into < warmup:
        return (into + 1) / warmup
    if stage.name != PRETRAINING:
        return 1.0
    return max(0.0, (stage.end - step) / max(1, stage.end - stage.start - warmup))


class DistillationModule(L.LightningModule):
    """Flash / regular distillation of a ``StudentForPreTraining`` from a frozen ``Teacher`` (module docstring).

    Block k learns from teacher layer ``teacher_layers[k]``; ``schedule`` (``modules.progressive``) says what
    each global step trains; ``teacher_cache`` reuses teacher outputs across runs (bit-exact in float32).
    Logs ``train/*`` per step and ``val/*`` per validation."""

    def __init__(
        self,
        student: StudentForPreTraining,
        teacher: Teacher,
        teacher_layers: list[int],
        schedule: list[Stage],
        weights: LossWeights,
        optimizer: Callable[..., torch.optim.Optimizer],
        warmup_fraction: float,
        seed: int,
        teacher_cache: TeacherCache | None = None,
        mlm_kd_topk: int | None = None,
        config_hash: str = "",
    ):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.projections = build_projections(student, teacher.hidden_size)
        self.teacher_layers = teacher_layers
        self.schedule = schedule
        self.weights = weights
        self.optimizer_factory = optimizer
        self.warmup_fraction = warmup_fraction
        self.seed = seed
        self.cache = teacher_cache
        self.mlm_kd_topk = mlm_kd_topk
        self.config_hash = config_hash
        # Teacher outputs go through the cache's dtype whether they come from the cache or not, so a
        # cold and a warm run are identical (float32: identical to no cache at all).
        self.target_dtype = (
            DTYPES[teacher_cache.cfg.dtype]
            if teacher_cache and teacher_cache.enabled
            else torch.float32
        )

    def heads(self) -> list[nn.Module]:
        return [self.student.mlm, self.student.nsp]

    # -- teacher targets -----------------------------------------------------------------------

    def teacher_targets(self, batch: dict, step_id: str) -> dict:
        """Teacher hidden states and attentions per layer (indexable by layer) and masked MLM logits."""
        masked = batch["labels"] != -100
        if self.cache is None or not self.cache.enabled:
            # No copy of the teacher's tensors: the losses index the layers they need from its tuples.
            out = self.teacher(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            return lean_targets(out, masked, self.mlm_kd_topk)
        step_id = f"{step_id}/rank{self.global_rank}"  # each rank holds its own share of step t
        entry = self.cache.get(step_id)
        if entry is None:
            out = self.teacher(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            entry = pack(out, masked, self.mlm_kd_topk, self.target_dtype)
            self.cache.put(step_id, {k: v.cpu() for k, v in entry.items()})
        return unpack(entry, self.device)

    # -- losses --------------------------------------------------------------------------------

    def layerwise_losses(
        self, block: int, student_out, targets: dict, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.teacher_layers[block]
        mha = attention_transfer_loss(
            student_probs=student_out.attentions[block], teacher_probs=targets["attentions"][layer], attention_mask=mask
        )
        fm = feature_map_loss(
            student_hidden=self.projections[block](student_out.block_outputs[block]),
            teacher_hidden=targets["hidden_states"][layer],
            attention_mask=mask,
        )
        return mha, fm

    def needs_teacher(self, stage: Stage) -> bool:
        """Whether this step reads teacher outputs at all: the pre-training stage without layer-wise
        terms and without MLM-KD (no teacher MLM head, or α = 1) is the student's own MLM + NSP."""
        w = self.weights
        mlm_kd = self.teacher.has_mlm_head and w.alpha < 1.0
        return stage.block is not None or not self.training or w.layerwise_in_pretraining > 0 or mlm_kd

    def compute_losses(self, batch: dict, stage: Stage, step_id: str) -> dict[str, torch.Tensor]:
        targets = self.teacher_targets(batch, step_id) if self.needs_teacher(stage) else {}
        mask = batch["attention_mask"]
        inputs = (batch["input_ids"], mask, batch["token_type_ids"])
        w = self.weights
        if stage.block is not None:
            out = self.student.student(
                *inputs, output_hidden_states=True, output_attentions=True, upto_block=stage.block + 1
            )
            mha, fm = self.layerwise_losses(stage.block, out, targets, mask)
            return {"loss": w.attention * mha + w.feature * fm, "mha": mha, "fm": fm}

        need_layers = w.layerwise_in_pretraining > 0 or not self.training
        enc = self.student.student(*inputs, output_hidden_states=need_layers, output_attentions=need_layers)
        masked = batch["labels"] != -100
        mlm_logits = self.student.mlm(enc.last_hidden_state[masked])  # (M, V): only where there is a label
        nsp_logits = self.student.nsp(enc.pooler_output)
        ld = pretraining_distillation_loss(
            student_mlm_logits=mlm_logits,
            labels=batch["labels"][masked],
            alpha=w.alpha,
            teacher_mlm_logits=targets.get("mlm_logits"),
            teacher_topk_indices=targets.get("mlm_topk_indices"),
            temperature=w.temperature,
            student_nsp_logits=nsp_logits,
            next_sentence_label=batch["next_sentence_label"],
        )
        losses = {"loss": ld.total, "mlm": ld.mlm, "nsp": ld.nsp}
        if ld.mlm_kd is not None:
            losses["mlm_kd"] = ld.mlm_kd
        if need_layers:
            pairs = [self.layerwise_losses(k, enc, targets, mask) for k in range(len(self.teacher_layers))]
            losses["mha"] = torch.stack([p[0] for p in pairs]).mean()
            losses["fm"] = torch.stack([p[1] for p in pairs]).mean()
            if self.training:
                layerwise = sum(w.attention * mha + w.feature * fm for mha, fm in pairs)
                losses["loss"] = losses["loss"] + w.layerwise_in_pretraining * layerwise
            else:  # the last block's terms alone: a candidate flash metric (benchmarks/fidelity.py)
                losses["mha_last"], losses["fm_last"] = pairs[-1]
        losses["mlm_acc"] = (mlm_logits.argmax(-1) == batch["labels"][masked]).float().mean()
        losses["nsp_acc"] = (nsp_logits.argmax(-1) == batch["next_sentence_label"]).float().mean()
        return losses

    # -- Lightning hooks -----------------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        step = self.global_step
        # Dropout masks from a seed per (step, rank, micro-batch): a resumed run draws exactly what an
        # uninterrupted one did, and ranks / accumulated micro-batches still draw different masks.
        torch.manual_seed(mix_seed(self.seed, step, self.global_rank, batch_idx))
        stage = stage_at(self.schedule, step)
        losses = self.compute_losses(batch, stage, f"train/{int(batch['step'])}")
        prefix = "train/" + ("block" if stage.block is not None else "pretrain")
        self.log_dict(
            {f"{prefix}_{k}": v.detach() for k, v in losses.items() if v is not None},
            on_step=True,
            prog_bar=False,
        )
        self.log("train/loss", losses["loss"].detach(), on_step=True, prog_bar=True)
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        losses = self.compute_losses(batch, self.schedule[-1], f"val/{batch_idx}")
        # Token-level terms average over masked tokens, the rest over sequences; sync_dist reduces
        # every rank's shard so val/* describes the whole validation set under DDP.
        per_token = {"mlm", "mlm_acc", "mlm_kd"}
        sizes = {True: int((batch["labels"] != -100).sum()), False: int(batch["input_ids"].shape[0])}
        for key, value in losses.items():
            if value is not None:
                self.log(
                    f"val/{key}", value, on_epoch=True, sync_dist=True, batch_size=sizes[key in per_token]
                )

    def configure_optimizers(self):
        # BERT's convention: no weight decay on biases and LayerNorm gains.
        named = list(self.student.named_parameters()) + list(
            self.projections.named_parameters(prefix="projections")
        )
        plain = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
        decayed = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
        optimizer = self.optimizer_factory([{"params": decayed}, {"params": plain, "weight_decay": 0.0}])
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, partial(lr_lambda, schedule=self.schedule, warmup_fraction=self.warmup_fraction)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # The teacher is frozen and reloadable from its config: keep its 22M+ weights out of checkpoints.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")
        }
        checkpoint["distill_config_hash"] = self.config_hash

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("distill_config_hash")
        if saved is not None and saved != self.config_hash:
            raise ValueError(
                "the checkpoint in this run dir was trained with a different config (student, teacher, data, "
                "losses or seed); resume with the same overrides, give a new hydra.run.dir, or set "
                "recipe.resume=false to start over here"
            )
        checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
