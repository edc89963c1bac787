"""BERT with per-layer head counts and FFN widths: what structured head / FFN pruning leaves (issue 19).

Why a model class of our own: transformers 5 dropped ``prune_heads`` / ``config.pruned_heads``, and neither stock
``BertConfig`` (one head count, ``head_dim = hidden / heads``, one FFN width) nor the student template (a block's
attention width is its bottleneck, the width its FFNs and inner residual run at) can describe a BERT layer that
kept 8 of 12 heads at their original 32 dims while its residual stays 384 wide. This is stock transformers BERT
(``BertModel``, ``BertForSequenceClassification``, ...) whose layer ``l`` is rebuilt, right after construction, with
``layer_heads[l]`` heads of ``hidden_size / num_attention_heads`` dims and ``layer_intermediate[l]`` FFN neurons:

    Q, K, V:               (H -> h_l·d)          h_l = layer_heads[l],  d = hidden_size / num_attention_heads
    attention.output.dense (h_l·d -> H)
    intermediate.dense     (H -> I_l)            I_l = layer_intermediate[l]
    output.dense           (I_l -> H)

Everything else (embeddings, LayerNorms, residuals, pooler, heads) is BERT's, so a model whose lists are all full
is exactly ``Bert*``. ``save_pretrained`` writes ``auto_map`` and copies this file beside the weights (transformers'
``register_for_auto_class``): the dir loads with ``AutoModel*.from_pretrained(dir, trust_remote_code=True)``
anywhere, or with no flag after ``import modules.auto``. Imports only torch and transformers for that reason.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
)


class PrunedBertConfig(BertConfig):
    """``BertConfig`` + the kept heads and FFN width of every layer (None: the unpruned value)."""

    model_type = "pruned_bert"
    layer_heads: list | None = None  # per layer: attention heads kept (each of hidden_size / num_attention_heads dims)
    layer_intermediate: list | None = None  # per layer: FFN neurons kept

    def heads_of(self, layer: int) -> int:
        return self.layer_heads[layer] if self.layer_heads else self.num_attention_heads

    def intermediate_of(self, layer: int) -> int:
        return self.layer_intermediate[layer] if self.layer_intermediate else self.intermediate_size


def shrink_layers(layers: nn.ModuleList, config: PrunedBertConfig) -> None:
    """Rebuild each BERT layer's attention and FFN linears at the config's per-layer sizes (fresh weights).

    Args:
        layers: ``BertEncoder.layer`` (L ``BertLayer``s).
        config: its ``layer_heads`` / ``layer_intermediate`` lists have L entries, each >= 1.
    """
    hidden = config.hidden_size
    head_dim = hidden // config.num_attention_heads
    for i, layer in enumerate(layers):
        heads, width = config.heads_of(i), config.intermediate_of(i)
        attention = layer.attention.self
        attention.num_attention_heads = heads
        attention.all_head_size = heads * head_dim  # forward reshapes with -1 heads of attention_head_size dims
        for name in ("query", "key", "value"):
            setattr(attention, name, nn.Linear(hidden, heads * head_dim))
        layer.attention.output.dense = nn.Linear(heads * head_dim, hidden)
        layer.intermediate.dense = nn.Linear(hidden, width)
        layer.output.dense = nn.Linear(width, hidden)


def _check(config: PrunedBertConfig) -> None:
    for name in ("layer_heads", "layer_intermediate"):
        values = getattr(config, name)
        if values is not None and (len(values) != config.num_hidden_layers or min(values) < 1):
            raise ValueError(f"PrunedBertConfig.{name}={values}: one entry >= 1 per layer "
                             f"({config.num_hidden_layers} layers)")  # fmt: skip


def _with_auto_map(model: Any) -> None:
    """config.json's ``auto_map`` names every class here, not only the saved one: a classifier's dir then also
    loads its encoder through ``AutoModel`` with ``trust_remote_code=True`` (as the student template does)."""
    model.config.auto_map = {auto: f"{__name__.split('.')[-1]}.{cls.__name__}" for auto, cls in AUTO_CLASSES.items()}


class PrunedBertModel(BertModel):
    """``BertModel`` with per-layer head counts and FFN widths (module docstring)."""

    config_class = PrunedBertConfig

    def save_pretrained(self, *args: Any, **kwargs: Any) -> Any:
        _with_auto_map(self)
        return super().save_pretrained(*args, **kwargs)

    def __init__(self, config: PrunedBertConfig, add_pooling_layer: bool = True, **kwargs: Any):
        super().__init__(config, add_pooling_layer=add_pooling_layer, **kwargs)
        _check(config)
        shrink_layers(self.encoder.layer, config)
        self.post_init()


class PrunedBertForSequenceClassification(BertForSequenceClassification):
    """``BertForSequenceClassification`` over a ``PrunedBertModel``-shaped encoder."""

    config_class = PrunedBertConfig

    def save_pretrained(self, *args: Any, **kwargs: Any) -> Any:
        _with_auto_map(self)
        return super().save_pretrained(*args, **kwargs)

    def __init__(self, config: PrunedBertConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        _check(config)
        shrink_layers(self.bert.encoder.layer, config)
        self.post_init()


AUTO_CLASSES: dict[str, type] = {
    "AutoConfig": PrunedBertConfig,
    "AutoModel": PrunedBertModel,
    "AutoModelForSequenceClassification": PrunedBertForSequenceClassification,
}

for _auto, _cls in AUTO_CLASSES.items():
    _cls.register_for_auto_class(_auto)

if __package__ == "modules":  # the project's import only (a copy loaded from a dir must not re-register)
    AutoConfig.register(PrunedBertConfig.model_type, PrunedBertConfig, exist_ok=True)
    AutoModel.register(PrunedBertConfig, PrunedBertModel, exist_ok=True)
    AutoModelForSequenceClassification.register(PrunedBertConfig, PrunedBertForSequenceClassification, exist_ok=True)
