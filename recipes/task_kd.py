"""The task-KD teacher of recipe=finetune (``recipe.task_kd.teacher``): the checks that it can teach this
student on this task (its head, tokenizer, positions, vocabulary) and its loading. recipe=finetune re-exports
these names."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from core.assets import has_tokenizer, require_same_tokenizer, resolve_path
from modules.teacher import check_positions
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
