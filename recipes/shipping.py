"""What a recipe writes beside a saved model so it can be shipped: the model card (reports/model_card.py), filled
from the run's config, its metrics and the saved dir's config.json. Saving itself is modules.portable."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig

from callbacks.latency import resolve_device
from callbacks.latency_cache import device_fingerprint
from modules.portable import save_for_serving as save_for_serving
from modules.student_blocks import student_name, unchecked_block  # re-exported: the recipes' one import
from reports.model_card import ModelCard, write_card

PIPELINE_TAGS = {"ForPreTraining": "fill-mask", "ForMaskedLM": "fill-mask", "ForSequenceClassification":
                 "text-classification", "ForQuestionAnswering": "question-answering"}  # fmt: skip
KINDS = ("distill", "finetune", "adabert")


def run_command() -> str:
    """The command line that started this run: ``python run.py <overrides>`` under Hydra, else ``sys.argv``."""
    if HydraConfig.initialized():
        return shlex.join(["python", "run.py", *HydraConfig.get().overrides.task])
    return shlex.join(["python", *sys.argv])


def model_name(saved: dict) -> str:
    """A saved config.json's model, named: the student's paper name, ``BERT-L<layers>-H<width>``, or its type."""
    if saved.get("blocks"):
        return student_name([unchecked_block(b) for b in saved["blocks"]])
    if saved.get("model_type") == "bert":
        return f"BERT-L{saved.get('num_hidden_layers')}-H{saved.get('hidden_size')}"
    return str(saved.get("model_type", "model"))


def _limitations(kind: str, loading: str, metrics: dict[str, float]) -> list[str]:
    lines = [
        "Trained at the scale the command states; the demo defaults (a few hundred CPU steps, an offline corpus "
        "and sentiment task) make a working model, not a competitive one.",
        "English, uncased WordPiece: the teacher's tokenizer, saved beside the weights.",
    ]
    if loading == "remote_code":
        lines.append("Needs `trust_remote_code=True`: read the `.py` files beside the weights before running them.")
    if kind == "distill":
        lines.append("A distilled encoder with pre-training heads: fine-tune it for a task before use.")
    if metrics.get("latency/contended"):
        lines.append("Latency was measured on a busy machine (`latency/contended`): do not compare it.")
    return lines


def _distill_method(recipe: Any, had_mlm_kd: bool) -> str:
    """One sentence on how a distill-recipe student was trained: AutoDistill's schedule, or a survey preset's mix."""
    w = recipe.losses
    default = not (w.absolute or w.cosine or w.attention_scores or w.embedding)
    if default and recipe.progressive_ratio > 0 and not recipe.init.enabled:
        return ("AutoDistill distillation (progressive layer-wise transfer, then pre-training distillation) of "
                f"the student template, recipe `{recipe.name}`.")  # fmt: skip
    init = recipe.init
    start = (f"truncation init from the teacher's layers ({init.layers or f'{init.num_layers}, {init.scheme}'})"
             if init.enabled else "the student template")  # fmt: skip
    return f"Pre-training distillation of {start}, objective {w.describe(had_mlm_kd)}, recipe `{recipe.name}`."


def write_run_card(directory: str | Path, cfg: Any, metrics: dict[str, float], kind: str) -> Path:
    """Write ``<directory>/README.md`` for the model a ``kind`` recipe saved there (after ``save_for_serving``).

    Args:
        directory: the saved model dir (config.json is read for the class, loading path and labels).
        cfg: the run's ``RunConfig``.
        metrics: the run's metrics.json numbers (val/*, test/*, params, flops_per_seq@128, latency/*).
        kind: ``distill``, ``finetune`` or ``adabert``.
    Raises:
        ValueError: an unknown ``kind``; FileNotFoundError: no config.json in ``directory``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    saved = json.loads((Path(directory) / "config.json").read_text())
    architecture = (saved.get("architectures") or ["?"])[0]
    loading = "remote_code" if saved.get("auto_map") else ("stock" if kind != "finetune" else "library")
    if kind == "finetune" and saved.get("model_type") == "bert" and cfg.recipe.model != "teacher":
        loading = "stock"  # a distilled student that reduces to BERT (modules.portable)
    tag = next((t for suffix, t in PIPELINE_TAGS.items() if architecture.endswith(suffix)), "feature-extraction")
    labels = [saved["id2label"][str(i)] for i in range(len(saved["id2label"]))] if tag == "text-classification" else None
    task = f"task `{cfg.task.name}`"
    if kind == "distill":
        recipe = cfg.recipe
        name = model_name(saved) if recipe.init.enabled else cfg.student.name
        data = f"pre-training corpus `{cfg.data.source}` ({'MLM + NSP' if recipe.losses.nsp > 0 else 'MLM'})"
        method = _distill_method(recipe, 'val/mlm_kd' in metrics)
        budget = f"{int(metrics.get('steps', 0))} optimizer steps, batch {cfg.data.batch_size} x {cfg.data.max_seq_len} tokens"
    elif kind == "finetune":
        recipe = cfg.recipe
        name = model_name(saved)
        data = task
        method = (f"Fine-tuned from `{recipe.model}` on {task}"
                  + (f" with task KD (gamma {recipe.task_kd.gamma})." if metrics.get("task_kd/gamma") else "."))  # fmt: skip
        budget = f"{int(metrics.get('steps', 0))} optimizer steps ({recipe.epochs} epochs max)"
    else:
        name = f"AdaBERT child: K={saved.get('num_cells')} cells, ops {saved.get('genotype')}"
        data = task
        method = (f"AdaBERT (differentiable CNN search guided by the teacher, efficiency weight beta={cfg.recipe.beta}), "
                  "derived child retrained with KD.")  # fmt: skip
        budget = f"{cfg.recipe.search_epochs} search + {cfg.recipe.retrain_epochs} retrain epochs"
    measured = metrics.get("latency/p50_ms") is not None  # else the device may not even exist here (cuda)
    threads = cfg.latency.threads or torch.get_num_threads()
    device = device_fingerprint(resolve_device(cfg.latency.device), threads) if measured else ""
    card = ModelCard(
        name=name, architecture=architecture, loading=loading, pipeline_tag=tag, teacher=cfg.teacher.name_or_path,
        data=data, method=method, budget=budget, metrics=metrics, command=run_command(),
        params=metrics.get("params"), flops_per_seq=metrics.get("flops_per_seq@128"),
        latency_ms=metrics.get("latency/p50_ms"), latency_device=device,
        latency_backend=cfg.latency.backend, latency_shape=f"batch {cfg.latency.batch_size} x {cfg.latency.seq_len} tokens",
        limitations=_limitations(kind, loading, metrics), labels=labels,
    )  # fmt: skip
    return write_card(directory, card)
