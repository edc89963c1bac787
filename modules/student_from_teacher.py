"""Truncation init for pre-training distillation (``recipe.init``): which teacher layers, and the student built from
them, its MLM head included where the teacher has one (a checkpoint's, or the one ``teacher.mlm_head=fit`` fitted).

DistilBERT (Sanh et al. 2019, §3): "we initialize the student from the teacher by taking one layer out of two"; the
reference extraction (transformers' ``examples/research_projects/distillation/scripts/extract_distilbert.py``) copies
the MLM head too, so the soft-target term starts from the teacher's own predictions. The copying itself is
``modules.truncation.truncated_student``; this module adds the recipe's side: the layers from the config, checked
against the teacher, and the fitted head.
"""

from __future__ import annotations

import torch

from modules.distillation_config import TruncationInit
from modules.student import StudentForPreTraining
from modules.teacher import Teacher
from modules.truncation import truncated_student, truncation_layers


def plan_layers(init: TruncationInit, num_teacher_layers: int) -> list[int]:
    """The 0-based teacher layers ``recipe.init`` copies: ``layers`` as given, else ``scheme`` x ``num_layers``.

    Raises:
        ValueError: naming ``recipe.init.layers`` (a layer outside the teacher) or ``recipe.init.num_layers`` (more
            layers than the scheme can take), with the valid range.
    """
    if init.layers is not None:
        bad = [i for i in init.layers if not 0 <= i < num_teacher_layers]
        if bad:
            raise ValueError(
                f"recipe.init.layers={list(init.layers)}: {bad} outside the teacher's layers 0..{num_teacher_layers - 1}; "
                f"list layers in that range, or set recipe.init.layers=null and pick them with recipe.init.scheme"
            )
        return list(init.layers)
    return truncation_layers(num_teacher_layers, init.num_layers, init.scheme)


def copy_fitted_mlm_head(student: StudentForPreTraining, head: torch.nn.Module) -> None:
    """Copy a fitted ``BertOnlyMLMHead`` (modules/mlm_head.py) into the student's MLM head: transform dense,
    LayerNorm and output bias (the decoder is tied to the word embeddings, copied from the teacher already).

    Raises:
        ValueError: the head's widths differ from the student's (a truncated student has the teacher's width).
    """
    ours, theirs = student.mlm, head.predictions
    if ours.dense.weight.shape != theirs.transform.dense.weight.shape or ours.bias.shape != theirs.bias.shape:
        raise ValueError("the fitted MLM head's shape differs from the truncated student's: it is not this teacher's")
    with torch.no_grad():
        ours.dense.weight.copy_(theirs.transform.dense.weight)
        ours.dense.bias.copy_(theirs.transform.dense.bias)
        ours.LayerNorm.weight.copy_(theirs.transform.LayerNorm.weight)
        ours.LayerNorm.bias.copy_(theirs.transform.LayerNorm.bias)
        ours.bias.copy_(theirs.bias)


def truncated_pretraining_student(teacher: Teacher, layers: list[int]) -> tuple[StudentForPreTraining, str]:
    """A ``StudentForPreTraining`` whose block k is teacher layer ``layers[k]`` (embeddings, pooler and the heads the
    teacher has copied; a fitted MLM head too), in train mode, and one line saying what was copied and what is random.

    Before any training its block outputs equal the teacher's own outputs of those layers given the same inputs
    (tests/test_distill_methods.py)."""
    student = truncated_student(teacher.model, layers, StudentForPreTraining)
    missing = set(student.truncation_missing)
    if teacher.fitted_mlm_head is not None:
        copy_fitted_mlm_head(student, teacher.fitted_mlm_head)
        missing -= {n for n in missing if n.startswith("mlm.")}
    heads = {"MLM head": "mlm.", "NSP head": "nsp.", "pooler": "student.pooler."}
    random = [name for name, prefix in heads.items() if any(m.startswith(prefix) for m in missing)]
    fitted = " (the fitted one)" if teacher.fitted_mlm_head is not None else ""
    note = (
        f"copied from the teacher: embeddings, layers {layers}"
        + "".join(f", {n}{fitted if n == 'MLM head' else ''}" for n in heads if n not in random)
        + (f"; random: {', '.join(random)}" if random else "")
    )
    return student.train(), note
