"""Recipe `export`: a saved model as ONNX for serving, checked against PyTorch, optionally int8.

    python run.py recipe=export recipe.model=<run dir>/student            # a distilled student
    python run.py recipe=export recipe.model=<finetune run dir>/model     # a classifier: + dev accuracy fp32 / int8
    python run.py recipe=export recipe.model=<adabert run dir>/student    # an AdaBERT child
    python run.py recipe=export recipe.model=teacher recipe.int8=false    # the teacher group's model

Reads top to bottom: the model dir (or the teacher) loaded through the Auto classes -> ``onnx/model.onnx`` with
dynamic batch and sequence axes (modules/onnx_export.py) -> ONNX Runtime against PyTorch at another batch size and
length than the export's (max abs diff; above ``recipe.tolerance`` the run fails) -> ``onnx/model.int8.onnx`` by
onnxruntime's dynamic quantiser -> for a classifier, dev accuracy of PyTorch, fp32 ONNX and int8 ONNX on ``task=``
-> the tokenizer beside the graphs -> metrics.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer

import modules.auto  # noqa: F401  (registers the student and the AdaBERT child with the Auto classes)
from datamodules.classification import ClassificationDataModule
from modules.onnx_export import (
    example_inputs,
    export_onnx,
    max_abs_diff,
    onnx_session,
    quantize_int8,
    require_onnx,
    run_session,
)
from recipes.common import write_metrics
from recipes.config import RunConfig
from recipes.finetune import model_path
from recipes.schemas import ExportConfig  # noqa: F401  (public here too)
from recipes.tracking import tracked

log = logging.getLogger(__name__)

# architecture suffix -> the Auto class that loads it with its head
AUTO_BY_HEAD = {"ForSequenceClassification": "AutoModelForSequenceClassification",
                "ForQuestionAnswering": "AutoModelForQuestionAnswering", "ForPreTraining": "AutoModelForPreTraining",
                "ForMaskedLM": "AutoModelForMaskedLM"}  # fmt: skip


def load_for_export(path: str) -> torch.nn.Module:
    """The saved model with its head (read from config.json's ``architectures``), eval mode, fp32."""
    config = AutoConfig.from_pretrained(path)
    architecture = (config.architectures or [""])[0]
    auto = next((a for suffix, a in AUTO_BY_HEAD.items() if architecture.endswith(suffix)), "AutoModel")
    return getattr(transformers, auto).from_pretrained(path).eval().float()


def dev_accuracy(predict, data: ClassificationDataModule) -> float:
    """Accuracy of ``predict(batch) -> logits (B, C)`` over the dev split."""
    correct = total = 0
    for batch in data.val_dataloader():
        logits = predict({k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
        total += len(batch["labels"])
    return correct / max(total, 1)


@tracked
def run(cfg: RunConfig) -> dict[str, float]:
    """Export ``recipe.model`` to ONNX (+ int8), check it, score it; see the module docstring.

    Returns:
        metrics.json's dict: ``onnx/max_abs_diff``, ``onnx/size_mb`` (and ``onnx/int8_*``), and for a classifier
        ``dev/acc_torch``, ``dev/acc_onnx``, ``dev/acc_int8``, ``dev/acc_int8_change``.
    Raises:
        RuntimeError: onnx / onnxruntime not installed, or the fp32 graph differs from PyTorch by more than
            ``recipe.tolerance``.
        FileNotFoundError: ``recipe.model`` does not exist.
    """
    recipe: ExportConfig = cfg.recipe
    require_onnx("recipe=export")  # before loading anything
    path = model_path(cfg)
    out = Path(cfg.run_dir) / "onnx"
    model = load_for_export(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    vocab = model.config.vocab_size

    # 1. Export, then check at a shape the export never saw (padding included).
    names = export_onnx(model, out / "model.onnx", vocab, recipe.opset)
    check = example_inputs(vocab, recipe.check_batch_size, recipe.check_seq_len, seed=1)
    session = onnx_session(out / "model.onnx")
    diff = max_abs_diff(model, session, check)
    log.info("exported %s -> %s (outputs %s): max |ORT - PyTorch| = %.3g", path, out / "model.onnx", names, diff)
    if diff > recipe.tolerance:
        raise RuntimeError(f"ONNX Runtime differs from PyTorch by {diff:.3g} > recipe.tolerance={recipe.tolerance}")
    metrics = {"onnx/max_abs_diff": diff, "onnx/size_mb": (out / "model.onnx").stat().st_size / 2**20}

    # 2. int8 dynamic quantisation: weights int8, activations quantised on the fly.
    sessions = {"onnx": session}
    if recipe.int8:
        quantize_int8(out / "model.onnx", out / "model.int8.onnx")
        sessions["int8"] = onnx_session(out / "model.int8.onnx")
        metrics["onnx/int8_max_abs_diff"] = max_abs_diff(model, sessions["int8"], check)
        metrics["onnx/int8_size_mb"] = (out / "model.int8.onnx").stat().st_size / 2**20

    # 3. A classifier: what the graphs score on the dev split, beside PyTorch's.
    if recipe.evaluate and names == ["logits"] and getattr(cfg.task, "label_column", None):
        data = ClassificationDataModule(cfg.task, tokenizer, seed=cfg.seed)
        data.setup()
        with torch.no_grad():
            metrics["dev/acc_torch"] = dev_accuracy(lambda b: model(**b).logits, data)
        for name, s in sessions.items():
            metrics[f"dev/acc_{name}"] = dev_accuracy(lambda b, s=s: run_session(s, b)["logits"], data)
        if "dev/acc_int8" in metrics:
            metrics["dev/acc_int8_change"] = metrics["dev/acc_int8"] - metrics["dev/acc_onnx"]
    tokenizer.save_pretrained(out)  # the graph's inputs come from this tokenizer
    model.config.save_pretrained(out)  # label names (id2label) for whoever serves the graph
    log.info("export: %s", {k: round(v, 6) for k, v in metrics.items()})
    return write_metrics(Path(cfg.run_dir), metrics)
