"""The LightningModule of flash and regular distillation (AutoDistill §3.3), and of the survey's pre-training mixes.

One training step, by stage (see modules/progressive.py):
    block stage k:  L = w_att · L_MHA^k + w_fm · L_FM^k        (only blocks 1..k run)
    pre-training:   L = L_D = α·L_MLM + (1−α)·L_MLM-KD + L_NSP (+ w_layer · Σ_k layer-wise terms)
where block k learns from teacher layer ``teacher_layers[k]`` and a dense projection maps the
block's width to the teacher's wherever they differ.

The pre-training stage also runs the survey's general-distillation mixes, set as data in ``LossWeights``
(conf/experiment/distilbert.yaml, tinybert_general.yaml, pd_pretrain.yaml; progressive stages off):
    DistilBERT:  5·L_MLM-KD(T=2) + 2·L_MLM + 1·L_cos(last hidden)                     (Sanh et al. 2019, §3)
    TinyBERT:    Σ_m [L_attn(scores, Eq. 7) + L_hidn(W_h, Eq. 8)] + L_embd(W_e, Eq. 9)  (Jiao et al. 2020, §3.1)
    PD:          L_MLM alone: the teacher never runs                                   (Turc et al. 2019, §3)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import lightning as L
import torch
from torch import nn

from core.dtypes import DTYPES
from core.seeding import mix_seed
from modules.attention_scores import AttentionScores
from modules.distillation_config import LossWeights  # noqa: F401  (public here too)
from modules.losses import (
    attention_score_loss,
    attention_transfer_loss,
    cosine_hidden_loss,
    feature_map_loss,
    pretraining_distillation_loss,
)
from modules.progressive import PRETRAINING, Stage, stage_at
from modules.student import StudentForPreTraining
from modules.teacher import Teacher
from modules.teacher_cache import TeacherCache, lean_targets, pack, unpack


def build_projection(width: int, teacher_width: int) -> nn.Module:
    """A trainable dense map width -> teacher width (TinyBERT's W_h / W_e), or the identity where they agree."""
    return nn.Linear(width, teacher_width) if width != teacher_width else nn.Identity()


def build_projections(student: StudentForPreTraining, teacher_width: int) -> nn.ModuleList:
    """A trainable dense map student width -> teacher width per block, exactly where they differ."""
    return nn.ModuleList(build_projection(spec.hidden_size, teacher_width) for spec in student.config.block_specs)


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
        # TinyBERT's terms, built only when weighted (AutoDistill's module, its parameters and RNG use stay as they were).
        # W_e reads the embedding layer's output (B, S, H_1), H_1 = the first block's width.
        self.embedding_projection = (
            build_projection(student.config.block_specs[0].hidden_size, teacher.hidden_size)
            if weights.embedding > 0
            else None
        )
        # Pre-softmax scores: hooks on the student's query/key maps; the teacher captures its own (a flag: it costs).
        self.student_scores = AttentionScores(student.student) if weights.attention_scores > 0 else None
        teacher.capture_attention_scores = weights.attention_scores > 0
        self.pretraining_terms = weights.pretraining_teacher_terms(teacher.has_mlm_head)
        # Whether any step reads the teacher: validation reports the layer terms then, and never runs it otherwise.
        self.uses_teacher = any(stage.block is not None for stage in schedule) or bool(self.pretraining_terms)

    def heads(self) -> list[nn.Module]:
        return [self.student.mlm, self.student.nsp]

    # -- teacher targets -----------------------------------------------------------------------

    def teacher_targets(self, batch: dict, step_id: str) -> dict:
        """Teacher hidden states and attentions per layer (indexable by layer) and masked MLM logits; the
        unnormalised attention scores and the embedding output when the loss mix reads them."""
        masked = batch["labels"] != -100
        embeddings = self.embedding_projection is not None
        if self.cache is None or not self.cache.enabled:
            # No copy of the teacher's tensors: the losses index the layers they need from its tuples.
            out = self.teacher(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            return lean_targets(out, masked, self.mlm_kd_topk, embeddings)
        step_id = f"{step_id}/rank{self.global_rank}"  # each rank holds its own share of step t
        entry = self.cache.get(step_id)
        if entry is None:
            out = self.teacher(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            entry = pack(out, masked, self.mlm_kd_topk, self.target_dtype, embeddings)
            self.cache.put(step_id, {k: v.cpu() for k, v in entry.items()})
        wanted = ["attention_scores"] * (self.student_scores is not None) + ["embeddings"] * embeddings
        if any(key not in entry for key in wanted):
            raise ValueError(
                f"teacher cache {self.cache.key} has no {wanted} for {step_id}: its key must name what the loss "
                "mix stores (recipes/distill.py build_teacher_cache); set recipe.teacher_cache.mode=disabled"
            )
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
        """Whether this step reads teacher outputs at all: the pre-training stage reads them only for the mix's
        teacher terms (none: the student's own MLM + NSP, PD's MLM alone); validation whenever any step does."""
        if stage.block is not None:
            return True
        return self.uses_teacher if not self.training else bool(self.pretraining_terms)

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
        return self.pretraining_losses(batch, targets)

    def pretraining_losses(self, batch: dict, targets: dict) -> dict[str, torch.Tensor]:
        """The pre-training stage: L_D (AutoDistill's α form or absolute weights), the layer-wise terms, and the
        DistilBERT / TinyBERT terms (``method_terms``) the weights turn on. Terms off are neither computed nor logged."""
        w = self.weights
        mask = batch["attention_mask"]
        inputs = (batch["input_ids"], mask, batch["token_type_ids"])
        need_layers = "hidden_states" in targets and (w.layerwise_in_pretraining > 0 or not self.training)
        if self.student_scores is not None:
            with self.student_scores:
                enc = self.student.student(*inputs, output_hidden_states=need_layers, output_attentions=need_layers)
            student_scores = self.student_scores.scores()
        else:
            enc = self.student.student(*inputs, output_hidden_states=need_layers, output_attentions=need_layers)
            student_scores = None
        losses: dict[str, torch.Tensor] = {}
        if w.wants_mlm():
            total = self.mlm_nsp_losses(batch, enc, targets, losses)
        else:  # a mix of teacher terms alone (TinyBERT's general distillation) has no L_D
            total = enc.last_hidden_state.sum() * 0.0
        if need_layers:
            pairs = [self.layerwise_losses(k, enc, targets, mask) for k in range(len(self.teacher_layers))]
            losses["mha"] = torch.stack([p[0] for p in pairs]).mean()
            losses["fm"] = torch.stack([p[1] for p in pairs]).mean()
            if w.layerwise_in_pretraining > 0:  # in validation too: val/loss is the training objective
                layerwise = sum(w.attention * mha + w.feature * fm for mha, fm in pairs)
                total = total + w.layerwise_in_pretraining * layerwise
            if not self.training:  # the last block's terms alone: a candidate flash metric (benchmarks/fidelity.py)
                losses["mha_last"], losses["fm_last"] = pairs[-1]
        for name, (weight, value) in self.method_terms(enc, student_scores, targets, mask).items():
            losses[name] = value
            total = total + weight * value
        return {"loss": total, **losses}

    def mlm_nsp_losses(self, batch: dict, enc, targets: dict, losses: dict) -> torch.Tensor:
        """L_D's terms into ``losses`` (``mlm``, ``mlm_kd``, ``nsp`` and their accuracies); returns L_D."""
        w = self.weights
        masked = batch["labels"] != -100
        mlm_logits = self.student.mlm(enc.last_hidden_state[masked])  # (M, V): only where there is a label
        nsp_logits = self.student.nsp(enc.pooler_output) if w.nsp > 0 else None
        ld = pretraining_distillation_loss(
            student_mlm_logits=mlm_logits,
            labels=batch["labels"][masked],
            alpha=w.alpha,
            teacher_mlm_logits=targets.get("mlm_logits") if w.wants_mlm_kd() else None,
            teacher_topk_indices=targets.get("mlm_topk_indices"),
            temperature=w.temperature,
            student_nsp_logits=nsp_logits,
            next_sentence_label=batch["next_sentence_label"],
            mlm_weight=w.mlm,
            mlm_kd_weight=w.mlm_kd,
            nsp_weight=w.nsp,
        )
        losses["mlm"] = ld.mlm
        if ld.mlm_kd is not None:
            losses["mlm_kd"] = ld.mlm_kd
        losses["mlm_acc"] = (mlm_logits.argmax(-1) == batch["labels"][masked]).float().mean()
        if nsp_logits is not None:
            losses["nsp"] = ld.nsp
            losses["nsp_acc"] = (nsp_logits.argmax(-1) == batch["next_sentence_label"]).float().mean()
        return ld.total

    def method_terms(
        self, enc, student_scores: tuple[torch.Tensor, ...] | None, targets: dict, mask: torch.Tensor
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """name -> (weight, unweighted term) of the DistilBERT / TinyBERT terms with weight > 0.

        - ``cos``: DistilBERT's L_cos, student's last hidden state (projected where widths differ) vs the teacher's
          last layer;
        - ``attn_score``: TinyBERT Eq. 7 summed over the mapped layers: block k's scores (B, Hs, S, S) vs teacher
          layer ``teacher_layers[k]``'s (B, Ht, S, S), both q·kᵀ/√d before any mask or softmax;
        - ``emb``: TinyBERT Eq. 9, MSE between W_e·E_S (B, S, D) and the teacher's embedding output E_T.
        TinyBERT's Eq. 8 (hidden states through W_h) is the layer-wise L_FM (``layerwise_in_pretraining``)."""
        w, terms = self.weights, {}
        if w.cosine > 0:
            student_last = self.projections[-1](enc.last_hidden_state)  # (B, S, D_teacher)
            terms["cos"] = (w.cosine, cosine_hidden_loss(
                student_hidden=student_last, teacher_hidden=targets["hidden_states"][-1], attention_mask=mask))  # fmt: skip
        if w.attention_scores > 0:
            per_layer = [
                attention_score_loss(student_scores=student_scores[k],
                                     teacher_scores=targets["attention_scores"][layer], attention_mask=mask)  # fmt: skip
                for k, layer in enumerate(self.teacher_layers)
            ]
            terms["attn_score"] = (w.attention_scores, torch.stack(per_layer).sum())
        if w.embedding > 0:
            terms["emb"] = (w.embedding, feature_map_loss(
                student_hidden=self.embedding_projection(enc.embeddings), teacher_hidden=targets["embeddings"],
                attention_mask=mask))  # fmt: skip
        return terms

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
        if self.embedding_projection is not None:
            named += list(self.embedding_projection.named_parameters(prefix="embedding_projection"))
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
