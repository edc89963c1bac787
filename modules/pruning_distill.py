"""The LightningModule of recipe=prune: a copy of the teacher (being pruned) learns from the unpruned teacher.

Every layer l of the pruned model matches layer l of the teacher (same depth and width; heads may be fewer after
structured pruning: ``attention_transfer_loss`` then compares head-averaged maps):

    L = Σ_l [ w_att · L_MHA(a_T^l ‖ a_S^l) + w_fm · L_FM(h_T^l, h_S^l) ] / L      (AutoDistill eqs. 1–2, per layer)

Why distillation and not Gordon et al.'s MLM pre-training loss: the offline teacher has no MLM head, and at a demo
budget matching the unpruned model layer by layer recovers what pruning removed fastest (the "distillation from the
unpruned model to recover" of issue 19). When the model is still unpruned the loss is exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from core.seeding import mix_seed
from modules.finetuning import frozen_teacher, linear_warmup_decay
from modules.losses import attention_transfer_loss, feature_map_loss
from modules.teacher import Teacher


class PruningDistillModule(L.LightningModule):
    """Trains ``student`` (a BERT-named encoder: ``BertModel`` or ``PrunedBertModel``, eager attention) to match the
    frozen ``teacher`` layer by layer. Logs ``train/{loss,mha,fm}`` per step and ``val/{loss,mha,fm}``."""

    def __init__(
        self,
        student: nn.Module,
        teacher: Teacher,
        optimizer: Callable[..., torch.optim.Optimizer],
        total_steps: int,
        warmup_fraction: float,
        attention_weight: float,
        feature_weight: float,
        seed: int,
    ):
        super().__init__()
        self.student = student.train()
        self._teacher = frozen_teacher(teacher)  # in a list: never trained, moved or checkpointed
        self.optimizer_factory = optimizer
        self.total_steps = total_steps
        self.warmup_fraction = warmup_fraction
        self.attention_weight = attention_weight
        self.feature_weight = feature_weight
        self.seed = seed

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Per-layer terms averaged over the L layers: ``mha``, ``fm`` and their weighted sum ``loss`` (scalars)."""
        mask = batch["attention_mask"]  # (B, S)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": mask, "token_type_ids": batch["token_type_ids"]}
        teacher = self._teacher[0].to(mask.device)
        with torch.no_grad():
            target = teacher(batch["input_ids"], mask, batch["token_type_ids"])
        out = self.student(**inputs, output_hidden_states=True, output_attentions=True, return_dict=True)
        hidden = out.hidden_states[1:]  # L x (B, S, H); [0] is the embeddings
        mha = torch.stack([attention_transfer_loss(student_probs=s, teacher_probs=t, attention_mask=mask)
                           for s, t in zip(out.attentions, target.attentions)]).mean()  # fmt: skip
        fm = torch.stack([feature_map_loss(student_hidden=s, teacher_hidden=t, attention_mask=mask)
                          for s, t in zip(hidden, target.hidden_states)]).mean()  # fmt: skip
        return {"loss": self.attention_weight * mha + self.feature_weight * fm, "mha": mha, "fm": fm}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # Dropout from (seed, step, rank, micro-batch): a resumed run draws what an uninterrupted one did.
        torch.manual_seed(mix_seed(self.seed, self.global_step, self.global_rank, batch_idx))
        losses = self.losses(batch)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items() if k != "loss"}, on_step=True)
        self.log("train/loss", losses["loss"].detach(), on_step=True, prog_bar=True)
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        for key, value in self.losses(batch).items():
            self.log(f"val/{key}", value, on_epoch=True, sync_dist=True, batch_size=int(batch["input_ids"].shape[0]))

    def configure_optimizers(self):
        # BERT's convention: no weight decay on biases and LayerNorm gains; BERT's warm-up then linear decay.
        named = list(self.student.named_parameters())
        plain = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
        decayed = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
        optimizer = self.optimizer_factory([{"params": decayed}, {"params": plain, "weight_decay": 0.0}])
        scheduler = linear_warmup_decay(optimizer, self.total_steps, self.warmup_fraction)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
