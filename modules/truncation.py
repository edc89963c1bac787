"""Truncation init: a student that is the teacher with fewer layers, its weights copied from the named layers.

DistilBERT (Sanh et al. 2019, §3 "Student initialization") takes one layer out of two of BERT-base; PKD (Sun et al.
2019, §4.1) the first k layers; TinyBERT and PD start from scratch instead (that is PD's point: Turc et al. 2019 §6
compares the two). The student is our template in its BERT shape (hidden == bottleneck, one FFN per block), so block
k is exactly a BERT layer and the saved student reduces to stock transformers BERT (modules/portable.py).

The weights are moved by name: ``modules.portable`` maps every student parameter to its stock-BERT name; here the
layer index of that name is replaced by the chosen teacher layer. Any teacher whose state dict uses BERT's names
(``BertModel``, ``BertForPreTraining``, ``BertForSequenceClassification``, the offline MiniLM, ...) works; another
architecture is refused with the names it lacks.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel

from modules.distillation_config import TRUNCATION_SCHEMES
from modules.portable import _STOCK, _bert_name
from modules.student import StudentConfig, StudentPreTrainedModel

# Config fields a student copies from a BERT teacher's config under the same name.
_COPIED = ("vocab_size", "max_position_embeddings", "type_vocab_size", "hidden_act", "hidden_dropout_prob",
           "attention_probs_dropout_prob", "layer_norm_eps", "initializer_range", "pad_token_id")  # fmt: skip


def truncation_layers(num_teacher_layers: int, num_layers: int, scheme: str) -> list[int]:
    """The teacher layers (0-based) a ``num_layers``-block student copies.

    - every_other: DistilBERT's one layer out of two, from the bottom: 0, 2, 4, ... (12 -> 6: 0, 2, ..., 10);
    - first: PKD's first k layers: 0 .. k-1;
    - last: the last k layers;
    - uniform: TinyBERT's map g(m) = m·N/M (rounded up), 0-based: the last block gets the last layer.

    Raises:
        ValueError: ``num_layers`` is not in 1..num_teacher_layers (``every_other``: 1..ceil(N/2)), or the scheme is
            unknown.
    """
    if scheme not in TRUNCATION_SCHEMES:
        raise ValueError(f"recipe.init.scheme must be one of {TRUNCATION_SCHEMES}, got {scheme!r}")
    limit = -(-num_teacher_layers // 2) if scheme == "every_other" else num_teacher_layers
    if not 1 <= num_layers <= limit:
        raise ValueError(
            f"recipe.init.num_layers={num_layers}: scheme {scheme} on a {num_teacher_layers}-layer teacher takes 1..{limit}"
        )
    if scheme == "every_other":
        return list(range(0, 2 * num_layers, 2))
    if scheme == "first":
        return list(range(num_layers))
    if scheme == "last":
        return list(range(num_teacher_layers - num_layers, num_teacher_layers))
    return [-(-m * num_teacher_layers // num_layers) - 1 for m in range(1, num_layers + 1)]


def truncated_config(teacher_config: PretrainedConfig, num_layers: int, **kwargs: Any) -> StudentConfig:
    """The BERT-shaped ``StudentConfig`` of a ``num_layers``-layer copy of a BERT teacher (``kwargs`` go to the config,
    e.g. ``num_labels``, ``id2label``). Dropouts, activation and LayerNorm eps are the teacher's."""
    block = {"hidden_size": teacher_config.hidden_size, "bottleneck_size": teacher_config.hidden_size,
             "num_heads": teacher_config.num_attention_heads, "intermediate_size": teacher_config.intermediate_size,
             "num_ffn": 1}  # fmt: skip
    copied = {k: getattr(teacher_config, k) for k in _COPIED if getattr(teacher_config, k, None) is not None}
    return StudentConfig(blocks=[dict(block) for _ in range(num_layers)], **{**copied, **kwargs})


def _teacher_name(student_name: str, student_prefix: str, teacher_prefix: str, layers: list[int]) -> str:
    """A student parameter's name in the teacher's state dict: its stock-BERT name with block k -> ``layers[k]``."""
    name = _bert_name(student_name, student_prefix, teacher_prefix)
    marker = f"{teacher_prefix}encoder.layer."
    if name.startswith(marker):
        k, tail = name[len(marker):].split(".", 1)
        return f"{marker}{layers[int(k)]}.{tail}"
    return name


def truncated_student(
    teacher: PreTrainedModel, layers: list[int], student_cls: type[StudentPreTrainedModel], **kwargs: Any
) -> StudentPreTrainedModel:
    """A BERT-shaped student whose block k is a copy of teacher layer ``layers[k]`` (0-based).

    Embeddings and pooler are copied; so is every head the two share by name (MLM + NSP for
    ``StudentForPreTraining`` from ``BertForPreTraining``, the classifier from a fine-tuned
    ``BertForSequenceClassification``). What the teacher lacks keeps the student's own initialisation (a head-less
    MiniLM gives a random MLM head) and is listed in the returned model's ``truncation_missing`` attribute.

    Args:
        teacher: a BERT-named HF model (any head, or none).
        layers: teacher layers to copy, one per student block, e.g. ``truncation_layers(12, 6, "every_other")``.
        student_cls: ``StudentModel``, ``StudentForPreTraining``, ``StudentForSequenceClassification`` or
            ``StudentForQuestionAnswering``; ``kwargs`` go to its config (``num_labels=2``).
    Returns:
        the student in eval mode; before any training its hidden states equal the teacher's at ``layers``.
    Raises:
        ValueError: a layer index is outside the teacher, or the teacher's encoder lacks a BERT-named weight.
    """
    num_teacher = teacher.config.num_hidden_layers
    bad = [i for i in layers if not 0 <= i < num_teacher]
    if bad or not layers:
        raise ValueError(f"recipe.init.layers {list(layers)}: each must be a teacher layer in 0..{num_teacher - 1}")
    student = student_cls(truncated_config(teacher.config, len(layers), **kwargs))
    _, student_prefix, _ = _STOCK[student_cls]
    base = getattr(teacher, "base_model_prefix", "")
    teacher_prefix = f"{base}." if base and hasattr(teacher, base) else ""
    source = teacher.state_dict()
    copied, missing = {}, []
    for name, value in student.state_dict().items():
        theirs = _teacher_name(name, student_prefix, teacher_prefix, layers)
        if theirs in source and source[theirs].shape == value.shape:
            copied[name] = source[theirs]
        else:
            missing.append(name)
    encoder = [m for m in missing if m.startswith(student_prefix) and ".pooler." not in f".{m}"]
    if encoder:
        raise ValueError(
            f"truncation init: teacher {type(teacher).__name__} has no BERT-named weights for {encoder[:4]} "
            f"(of {len(encoder)}); truncation needs a BERT-style teacher"
        )
    with torch.no_grad():
        student.load_state_dict(copied, strict=False)
    if hasattr(student, "tie_weights"):
        student.tie_weights()
    student.truncation_missing = missing
    return student.eval()
