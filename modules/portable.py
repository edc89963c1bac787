"""Saving a model so it loads anywhere: as stock BERT where the student reduces to one, else with its code.

A student whose blocks are all hidden == bottleneck with one FFN, one width, one head count and one FFN width, with
LayerNorms and an unfactorised embedding, is a plain BERT layer stack (the template's parity test): ``to_stock_bert`` renames its weights into transformers'
own ``Bert*`` class, which loads with no remote code at all. Every other student, and an AdaBERT child, is saved
with ``save_pretrained``, which (``register_for_auto_class`` in modules/student.py and modules/adabert.py) writes
``auto_map`` and copies the modeling file beside the weights: it loads with ``trust_remote_code=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    BertConfig,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertModel,
    PreTrainedModel,
)

from modules.student import (
    StudentConfig,
    StudentForPreTraining,
    StudentForQuestionAnswering,
    StudentForSequenceClassification,
    StudentModel,
)

# student class -> (stock class, the student's prefix of the encoder in its state dict, BERT's prefix)
_STOCK = {
    StudentModel: (BertModel, "", ""),
    StudentForPreTraining: (BertForPreTraining, "student.", "bert."),
    StudentForSequenceClassification: (BertForSequenceClassification, "student.", "bert."),
    StudentForQuestionAnswering: (BertForQuestionAnswering, "student.", "bert."),
}
# Config fields the two share under the same names.
_SHARED = ("vocab_size", "max_position_embeddings", "type_vocab_size", "hidden_act", "hidden_dropout_prob",
           "attention_probs_dropout_prob", "layer_norm_eps", "initializer_range", "pad_token_id",
           "classifier_dropout", "id2label", "label2id", "problem_type")  # fmt: skip


def stock_bert_config(config: StudentConfig) -> BertConfig | None:
    """The ``BertConfig`` a student is, or None when it is not a plain BERT layer stack.

    It is one when every block has hidden == bottleneck, one FFN, and the blocks share hidden size, heads and
    FFN width (no transitions): then each block is exactly a BERT layer. MobileBERT's NoNorm and factorised
    (or trigram) embedding have no BERT twin, so such a student is saved with its code; ReLU has one
    (``BertConfig.hidden_act="relu"``).
    """
    specs = config.block_specs
    first = specs[0]
    if config.normalization_type != "layer_norm" or config.factorised_embedding:
        return None
    if any(b.has_bottleneck or b.num_ffn != 1 for b in specs):
        return None
    if any((b.hidden_size, b.num_heads, b.intermediate_size) != (first.hidden_size, first.num_heads,
                                                                  first.intermediate_size) for b in specs):  # fmt: skip
        return None
    values = {k: getattr(config, k) for k in _SHARED if hasattr(config, k)}
    return BertConfig(hidden_size=first.hidden_size, num_hidden_layers=len(specs), num_attention_heads=first.num_heads,
                      intermediate_size=first.intermediate_size, **values)  # fmt: skip


def _bert_name(name: str, prefix: str, bert_prefix: str) -> str:
    """A student state-dict name -> the stock BERT class's name (see tests/test_student.py's reverse map)."""
    if not name.startswith(prefix):  # a head: MLM, NSP, classifier, span head
        heads = {"mlm.dense.": "cls.predictions.transform.dense.", "mlm.LayerNorm.": "cls.predictions.transform.LayerNorm.",
                 "mlm.decoder.": "cls.predictions.decoder.", "mlm.bias": "cls.predictions.bias",
                 "nsp.": "cls.seq_relationship."}  # fmt: skip
        for ours, theirs in heads.items():
            if name.startswith(ours):
                return theirs + name[len(ours):]
        return name  # classifier.*, qa_outputs.*: the same names
    rest = name[len(prefix):]
    if rest.startswith("pooler."):
        return f"{bert_prefix}pooler.dense.{rest[len('pooler.'):]}"
    if rest.startswith("blocks."):
        _, k, tail = rest.split(".", 2)
        for ours, theirs in (("attention.", "attention.self."), ("attention_output.", "attention.output."),
                             ("ffns.0.up.", "intermediate.dense."), ("ffns.0.down.", "output.")):  # fmt: skip
            if tail.startswith(ours):
                return f"{bert_prefix}encoder.layer.{k}.{theirs}{tail[len(ours):]}"
    return bert_prefix + rest  # embeddings.*


def to_stock_bert(model: PreTrainedModel) -> PreTrainedModel | None:
    """The same network as a stock transformers ``Bert*`` model (weights copied), or None when ``model`` is not a
    student that reduces to BERT (see ``stock_bert_config``) or its head has no stock twin (MLM-only).

    The result is in eval mode with the same outputs (up to float rounding of the two attention kernels, ~1e-6).
    """
    stock = _STOCK.get(type(model))
    config = stock_bert_config(model.config) if stock is not None else None
    if config is None:
        return None
    cls, prefix, bert_prefix = stock
    if cls is BertForQuestionAnswering:  # its span head is sized by num_labels: (start, end)
        config.num_labels = 2
    bert = cls(config).eval()
    renamed = {_bert_name(k, prefix, bert_prefix): v for k, v in model.state_dict().items()}
    if cls is BertForPreTraining:  # BERT keeps the MLM bias twice (the decoder's is tied to it)
        renamed["cls.predictions.decoder.bias"] = renamed["cls.predictions.bias"]
    missing, unexpected = bert.load_state_dict(renamed, strict=False)
    # position_ids / token_type_ids are BERT's buffers, rebuilt by its constructor.
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if cls is BertForQuestionAnswering:  # built without a pooler; the span head never reads it
        unexpected = [k for k in unexpected if ".pooler." not in k]
    if missing or unexpected:
        raise RuntimeError(f"stock BERT export: missing {missing}, unexpected {unexpected}")
    return bert


def save_for_serving(model: PreTrainedModel, tokenizer: Any, directory: str | Path, stock: bool = True) -> str:
    """Save ``model`` and ``tokenizer`` in HF format under ``directory`` so they load without this project.

    Args:
        model: a student (any head), an AdaBERT child, or any transformers model.
        tokenizer: saved beside it (``pipeline`` and ``AutoTokenizer`` read it from the same dir).
        directory: created if needed.
        stock: save a student that reduces to BERT as transformers' own ``Bert*`` class (no remote code).
    Returns:
        how it loads: ``"stock"`` (plain ``from_pretrained``) or ``"remote_code"`` (``trust_remote_code=True``;
        config.json's ``auto_map`` names the code files saved beside the weights) or ``"library"`` (a model
        transformers already knows, e.g. a fine-tuned teacher).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bert = to_stock_bert(model) if stock else None
    if bert is not None:
        with torch.no_grad():
            bert.save_pretrained(directory)
        how = "stock"
    else:
        model.save_pretrained(directory)
        how = "remote_code" if getattr(model.config, "auto_map", None) else "library"
    tokenizer.save_pretrained(directory)
    return how
