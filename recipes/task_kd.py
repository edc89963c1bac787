"""The task-KD teacher of recipe=finetune (``recipe.task_kd.teacher``): the checks that it can teach this
student on this task (its head, tokenizer, positions, vocabulary) and its loading; and the survey's task-stage
methods built on it: truncation init (``recipe.init``, PKD), intermediate terms (``recipe.task_kd.intermediate``, PKD
and TinyBERT's task stage), transfer rows (``recipe.task_kd.transfer``, PD). recipe=finetune re-exports these names."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from core.assets import has_tokenizer, require_same_tokenizer, resolve_path
from modules.attention_scores import AttentionScores
from modules.task_intermediate import IntermediateDistiller, state_widths, task_layer_pairs
from modules.teacher import check_positions
from modules.truncation import truncated_student, truncation_layers
from recipes.config import RunConfig

log = logging.getLogger(__name__)


def check_kd_teacher(cfg: RunConfig, path: str, teacher: Path) -> None:
    """The task-KD teacher reads the student's ids: the same tokenizer, every length (tokenizers and config.json).

    Raises:
        ValueError: the tokenizers differ (names both), or the teacher cannot embed ``task.max_seq_len``.
    """
    if has_tokenizer(teacher):
        require_same_tokenizer(
            AutoTokenizer.from_pretrained(path), AutoTokenizer.from_pretrained(teacher),
            f"recipe.model ({path})", f"recipe.task_kd.teacher ({teacher})",
        )  # fmt: skip
    else:  # a model saved without its tokenizer (recipe=finetune saves both): only its vocabulary size is checked
        log.warning("recipe.task_kd.teacher: %s has no tokenizer files; cannot check it reads the student's ids", teacher)
    check_positions(f"recipe.task_kd.teacher ({teacher})", AutoConfig.from_pretrained(teacher),
                    {"task.max_seq_len": cfg.task.max_seq_len})  # fmt: skip


def require_head(path: Path, head: str, field: str, task_name: str) -> None:
    """A saved model fine-tuned with ``head`` (e.g. "ForSequenceClassification"): without the task's head,
    ``from_pretrained`` would silently add a random one.

    Raises:
        ValueError: ``path``'s config.json names no architecture ending in ``head``.
    """
    architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
    if not any(a.endswith(head) for a in architectures):
        raise ValueError(
            f"{field}: {path} holds {architectures or 'an encoder without a head'}, not a model fine-tuned with "
            f"a {head} head; fine-tune the teacher on task {task_name} first (recipe=finetune "
            "recipe.model=teacher) and give its <run dir>/model"
        )


def load_kd_teacher(cfg: RunConfig, auto_class: type, tokenizer: PreTrainedTokenizerBase):
    """The task-KD teacher, frozen later by the module; None without one.

    It must read the student's token ids: the same tokenizer, every id embedded. ``run`` compared the
    tokenizers in ``preflight`` already; the check is repeated here (two tokenizer reads) because this
    function is public and a caller that builds its own loop skips ``preflight``.

    Raises:
        ValueError: the teacher's tokenizer differs from the student's, or its vocabulary is smaller.
    """
    if not cfg.recipe.task_kd.teacher:
        return None
    teacher_dir = resolve_path(cfg.recipe.task_kd.teacher)
    if has_tokenizer(teacher_dir):
        require_same_tokenizer(tokenizer, AutoTokenizer.from_pretrained(teacher_dir),
                               f"the student ({tokenizer.name_or_path})", f"recipe.task_kd.teacher ({teacher_dir})")  # fmt: skip
    teacher = auto_class.from_pretrained(str(teacher_dir))
    if len(tokenizer) > teacher.config.vocab_size:
        raise ValueError(
            f"recipe.task_kd.teacher: its vocabulary ({teacher.config.vocab_size}) is smaller than the "
            f"student's tokenizer ({len(tokenizer)}); task KD needs both to read the same token ids"
        )
    return teacher


# ------------------------------------------------------------------------------------------------------------------
# The survey's task-stage methods (issue 18): truncation init (PKD), intermediate terms (PKD, TinyBERT), transfer rows
# (PD). Checked in preflight, before any data is tokenised or model trained; built in setup_classification.
# ------------------------------------------------------------------------------------------------------------------


def num_layers(config: Any) -> int:
    """A saved model's layer count from its config: BERT-style ``num_hidden_layers``, or the project student's
    blocks."""
    if getattr(config, "num_hidden_layers", None) is not None:
        return int(config.num_hidden_layers)
    return len(config.blocks)


def init_layers(cfg: RunConfig, path: str) -> list[int] | None:
    """The teacher layers ``recipe.init`` copies from ``recipe.model`` (None when it is off).

    Raises:
        ValueError: recipe.model is not a BERT-style model truncation can copy (e.g. a bottleneck student, an AdaBERT
            child), or the layers are outside it; the message names recipe.init and recipe.model and the fix.
    """
    init = cfg.recipe.init
    if not init.enabled:
        return None
    config = AutoConfig.from_pretrained(path)
    if getattr(config, "model_type", None) != "bert":
        raise ValueError(
            f"recipe.init truncates recipe.model, and recipe.model={cfg.recipe.model!r} ({path}) is a "
            f"{getattr(config, 'model_type', '?')!r} model, not a BERT-style one; set recipe.model=teacher (or a "
            "fine-tuned BERT's model/ dir) to truncate it, or recipe.init.num_layers=0 to fine-tune this model as it is"
        )
    total = int(config.num_hidden_layers)
    layers = list(init.layers) if init.layers is not None else truncation_layers(total, init.num_layers, init.scheme)
    if max(layers) >= total:
        raise ValueError(f"recipe.init.layers={layers}: recipe.model ({path}) has layers 0..{total - 1}")
    return layers


def check_task_distillation(cfg: RunConfig, path: str, qa: bool) -> None:
    """What PKD / TinyBERT / PD need before any work: a classification task, a layer map the two depths can take.

    Raises:
        ValueError: intermediate terms or transfer rows on a QA task; a layer map this student and teacher cannot
            take (``modules.task_intermediate.task_layer_pairs``'s message: field and fix).
    """
    task_kd = cfg.recipe.task_kd
    if qa and (task_kd.intermediate.enabled or task_kd.transfer.enabled):
        raise ValueError("recipe.task_kd.intermediate / .transfer: classification tasks only; for task=squad leave "
                         "intermediate.kind=none and transfer.path=null")  # fmt: skip
    layers = init_layers(cfg, path)
    if task_kd.intermediate.enabled:
        student = len(layers) if layers is not None else num_layers(AutoConfig.from_pretrained(path))
        teacher = num_layers(AutoConfig.from_pretrained(resolve_path(str(task_kd.teacher))))
        task_layer_pairs(task_kd.intermediate, student, teacher)


def truncate(cfg: RunConfig, path: str, model: PreTrainedModel, student_cls: type) -> PreTrainedModel:
    """``recipe.init``: ``model`` (recipe.model with its head) cut to the layers ``init_layers`` names, as the
    project's BERT-shaped student (saved as stock BERT); unchanged when recipe.init is off."""
    layers = init_layers(cfg, path)
    if layers is None:
        return model
    extra = {"num_labels": model.config.num_labels} if hasattr(model, "classifier") else {}
    student = truncated_student(model, layers, student_cls, **extra)
    log.info("recipe.init: %d of %s's %d layers (%s) -> %.2fM params", len(layers), path, num_layers(model.config),
             layers, student.num_parameters() / 1e6)  # fmt: skip
    return student


def build_intermediate(cfg: RunConfig, model: PreTrainedModel, teacher: PreTrainedModel | None):
    """The ``IntermediateDistiller`` of ``recipe.task_kd.intermediate`` for this student and task-KD teacher (None
    when off): layer pairs from both depths, projections from both models' measured widths.

    Raises:
        ValueError: TinyBERT on a model without BERT-style self-attention (``AttentionScores``' message).
    """
    inter = cfg.recipe.task_kd.intermediate
    if not inter.enabled or teacher is None:
        return None
    student_widths, teacher_widths = state_widths(model), state_widths(teacher)
    for checked in (model, teacher) if inter.kind == "tinybert" else ():
        AttentionScores(checked)  # a model without BERT-style self-attention is refused now, not at the first step
    pairs = task_layer_pairs(inter, len(student_widths) - 1, len(teacher_widths) - 1)
    log.info("task KD %s: (student, teacher) layers %s, beta %g%s", inter.kind, pairs, inter.beta,
             ", intermediate terms only" if inter.only else "")  # fmt: skip
    return IntermediateDistiller(inter, pairs, student_widths, teacher_widths)
