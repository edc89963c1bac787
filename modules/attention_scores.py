"""The raw attention scores q·kᵀ/√d of every layer: what TinyBERT's attention loss reads (Jiao et al. 2020, Eq. 7).

Why hooks: models return attention *probabilities* (``output_attentions``), and the scores cannot be recovered
from them (softmax forgets a per-row constant; TinyBERT chose the scores because they converge faster, §3.1).
``AttentionScores`` hooks the query and key projections of every self-attention module and builds the scores
after the forward. It needs no change to the model, so it works the same on our students and on stock HF
BERT-style models (BERT, RoBERTa, ELECTRA, the offline MiniLM), including a frozen teacher under ``no_grad``.
"""

from __future__ import annotations

import math
from types import TracebackType

import torch
from torch import nn

# (heads attribute, head-size attribute) of the self-attention modules we know: ours, then transformers' BERT family.
_HEAD_ATTRS = (("num_heads", "head_dim"), ("num_attention_heads", "attention_head_size"))


def _heads(module: nn.Module) -> tuple[int, int] | None:
    """(heads, head size) of a self-attention module with ``query`` and ``key`` Linear children, else None."""
    if not (isinstance(getattr(module, "query", None), nn.Linear) and isinstance(getattr(module, "key", None), nn.Linear)):
        return None
    for heads, size in _HEAD_ATTRS:
        if isinstance(getattr(module, heads, None), int) and isinstance(getattr(module, size, None), int):
            return getattr(module, heads), getattr(module, size)
    return None


class AttentionScores:
    """Capture every layer's pre-softmax attention scores during the forwards run inside ``with``.

    Usage::

        with AttentionScores(model) as capture:
            model(input_ids, attention_mask)
        scores = capture.scores()  # per layer (B, heads, S, S) = q·kᵀ/√d, no mask added

    Padded keys and queries get scores too (there is nothing to mask in q·kᵀ); losses mask them
    (``modules.losses.attention_score_loss``). Gradients flow when the forward builds a graph.

    Raises:
        ValueError: ``model`` has no self-attention module with ``query``/``key`` projections and a known head count.
    """

    def __init__(self, model: nn.Module):
        self.layers = [(m, *shape) for m in model.modules() if (shape := _heads(m)) is not None]
        if not self.layers:
            raise ValueError(
                f"{type(model).__name__} has no self-attention module with query/key projections; attention scores "
                "(TinyBERT's attention loss) need a BERT-style model"
            )
        self._q: list[torch.Tensor | None] = [None] * len(self.layers)
        self._k: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles: list = []

    def __enter__(self) -> AttentionScores:
        self._q = [None] * len(self.layers)  # a fresh capture: no layer of an earlier forward is reported
        self._k = [None] * len(self.layers)
        for i, (module, _, _) in enumerate(self.layers):
            self._handles.append(module.query.register_forward_hook(self._store(self._q, i)))
            self._handles.append(module.key.register_forward_hook(self._store(self._k, i)))
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @staticmethod
    def _store(slots: list, i: int):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            slots[i] = output

        return hook

    def scores(self) -> tuple[torch.Tensor, ...]:
        """Per layer that ran in the last forward, (B, heads, S, S) scores q·kᵀ/√d (d = head size).

        Raises:
            RuntimeError: no forward ran inside the ``with`` block.
        """
        out = []
        for (_, heads, size), q, k in zip(self.layers, self._q, self._k):
            if q is None or k is None:
                continue  # a layer above ``upto_block`` did not run
            b, s, _ = q.shape
            q = q.view(b, s, heads, size).transpose(1, 2)  # (B, h, S, d)
            k = k.view(b, s, heads, size).transpose(1, 2)
            out.append(q @ k.transpose(-1, -2) / math.sqrt(size))
        if not out:
            raise RuntimeError("AttentionScores.scores(): no forward ran inside the `with` block")
        return tuple(out)
