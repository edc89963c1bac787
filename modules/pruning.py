"""Pruning as pure functions: which weights, the cubic schedule, global magnitude masks, RPP's proximal step,
sparsity counts, and structured head / FFN surgery (issue 19). Callbacks that apply them: callbacks/pruning.py.

- **Magnitude** (Gordon et al. 2020, "Compressing BERT", §3): global magnitude pruning of the encoder's linear
  weights (embeddings, pooler and heads excluded), raised gradually by Zhu & Gupta's (2017) cubic schedule, eq. (1):
  ``s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³`` for ``t ∈ {t0, t0 + Δt, ..., t0 + nΔt}``.
  The masks come from ``torch.nn.utils.prune.global_unstructured`` (L1 magnitude over all tensors at once), made
  permanent at once (``prune.remove``): the weights themselves hold the zeros, so a saved model loads anywhere.
- **RPP** (Guo et al. 2019, "Reweighted Proximal Pruning", eqs. 3–5): reweighted L1, ``λ Σ α_w |w|`` with
  ``α_w = 1/(|w| + ε)`` re-estimated every few hundred steps, minimised by a proximal step after each AdamW step:
  ``w ← sign(w)·max(|w| − η·λ·α_w, 0)`` (η the step's learning rate).
- **Structured**: whole attention heads and FFN neurons ranked by a magnitude score (below), removed by index
  selection into a ``PrunedBertModel`` (modules/pruned_bert.py). Written here rather than with torch-pruning's
  dependency graph: the coupled groups of a BERT layer are fixed and few (a head = rows of Q/K/V + columns of the
  attention output; a neuron = a row of the FFN's first dense + a column of its second), the result must be an HF
  model whose config records the new per-layer sizes (torch-pruning changes modules, not configs), and transformers
  5 no longer has ``prune_heads``. ``tests/test_pruning.py`` checks the surgery against the masked original.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune
from transformers import BertModel

from modules.pruned_bert import PrunedBertConfig, PrunedBertModel

# A linear layer is prunable when its qualified name lies in the encoder's layer stack: BERT's ``encoder.layer.<i>``
# or the student template's ``blocks.<k>`` (embeddings, pooler, MLM / NSP / task heads stay dense, as in Gordon et al.).
ENCODER_MARKERS = ("encoder.layer.", "blocks.")


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The encoder's linear layers by qualified name (what every method here prunes)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and any(k in f".{name}" for k in ENCODER_MARKERS)}  # fmt: skip


def cubic_sparsity(step: int, final: float, begin: int, end: int, frequency: int, initial: float = 0.0) -> float:
    """Zhu & Gupta (2017) eq. (1): the target sparsity after ``step`` optimizer steps.

    ``s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³``: pruning events at ``t = t0 + kΔt`` (k = 0..n, t0 = ``begin``,
    Δt = ``frequency``), ``nΔt = end − begin`` (the last event is clamped to ``end`` when Δt does not divide it), the
    sparsity held between events; exactly ``s_f`` from ``end`` on. ``end == begin``: one shot at ``begin``.

    Args:
        step: optimizer steps taken; final / initial: s_f, s_i in [0, 1); begin <= end: steps; frequency: Δt >= 1.
    Returns:
        the fraction of prunable weights that should be zero (0 before ``begin``).
    """
    if step < begin:
        return 0.0
    if step >= end:
        return final
    t = begin + (step - begin) // frequency * frequency  # the last pruning event at or before step (< end)
    return final + (initial - final) * (1.0 - (t - begin) / (end - begin)) ** 3


def global_magnitude_prune_(linears: dict[str, nn.Linear], sparsity: float) -> dict[str, torch.Tensor]:
    """Zero the ``sparsity`` fraction of smallest-magnitude weights over all ``linears`` together (one global
    threshold, Gordon et al. §3), in place, with ``torch.nn.utils.prune``; already-zero weights are the smallest, so
    masks only grow.

    Returns:
        name -> bool mask (True = kept), the shape of each weight (out, in).
    """
    modules = list(linears.values())
    total = sum(m.weight.numel() for m in modules)
    amount = int(round(sparsity * total))
    if amount == 0:
        return {name: torch.ones_like(m.weight, dtype=torch.bool) for name, m in linears.items()}
    prune.global_unstructured([(m, "weight") for m in modules], pruning_method=prune.L1Unstructured, amount=amount)
    masks = {name: m.weight_mask.bool() for name, m in linears.items()}
    for m in modules:
        prune.remove(m, "weight")  # weight = weight_orig · mask, a plain parameter again (the same object's data)
    return masks


def kept_masks(linears: dict[str, nn.Linear]) -> dict[str, torch.Tensor]:
    """name -> bool mask of the weights that are not exactly zero: a pruned model's masks, read back."""
    return {name: m.weight != 0 for name, m in linears.items()}


@torch.no_grad()
def apply_masks_(linears: dict[str, nn.Linear], masks: dict[str, torch.Tensor]) -> None:
    """Zero every masked-out weight in place (after an optimizer step: AdamW's moments and weight decay move them)."""
    for name, m in linears.items():
        m.weight.mul_(masks[name].to(m.weight.dtype))


@torch.no_grad()
def rpp_reweight(linears: dict[str, nn.Linear], eps: float) -> dict[str, torch.Tensor]:
    """Guo et al. (2019) eq. (4): the reweighting factors ``α_w = 1 / (|w| + ε)``, one tensor per weight."""
    return {name: 1.0 / (m.weight.detach().abs() + eps) for name, m in linears.items()}


@torch.no_grad()
def proximal_step_(linears: dict[str, nn.Linear], alphas: dict[str, torch.Tensor], lr: float, lam: float) -> None:
    """Guo et al. (2019) eq. (5): the proximal operator of ``η·λ·Σ α_w|w|`` after an optimizer step, in place:
    ``w ← sign(w)·max(|w| − η·λ·α_w, 0)`` (soft thresholding; the weights it reaches become exact zeros).

    Args:
        alphas: ``rpp_reweight``'s factors (same shapes as the weights); lr: η of this step; lam: λ.
    """
    for name, m in linears.items():
        w = m.weight
        w.copy_(w.sign() * (w.abs() - lr * lam * alphas[name]).clamp_min(0.0))


def sparsity_counts(model: nn.Module) -> dict[str, float]:
    """Sparse-aware sizes.

    Returns:
        ``params`` (all parameters, a tied table once), ``params_nonzero`` (those not exactly zero),
        ``prunable`` (the encoder's linear weights), ``sparsity`` (their zero fraction).
    """
    params = {id(p): p for p in model.parameters()}.values()
    linears = prunable_linears(model)
    prunable = sum(m.weight.numel() for m in linears.values())
    zeros = sum(int((m.weight == 0).sum()) for m in linears.values())
    return {"params": float(sum(p.numel() for p in params)),
            "params_nonzero": float(sum(int((p != 0).sum()) for p in params)),
            "prunable": float(prunable), "sparsity": zeros / max(prunable, 1)}  # fmt: skip


# -- structured: heads and FFN neurons ----------------------------------------------------------------------------


@torch.no_grad()
def head_scores(model: BertModel) -> torch.Tensor:
    """Magnitude importance of each head, (L, heads): ``‖W_V^h‖_F · ‖W_O^h‖_F``, the norms of the two matrices a
    head's output passes through (its value rows and its columns of the attention output)."""
    config = model.config
    d = config.hidden_size // config.num_attention_heads
    rows = []
    for layer in model.encoder.layer:
        v = layer.attention.self.value.weight.view(-1, d, config.hidden_size)  # (h, d, H)
        o = layer.attention.output.dense.weight.view(config.hidden_size, -1, d)  # (H, h, d)
        rows.append(v.flatten(1).norm(dim=1) * o.transpose(0, 1).flatten(1).norm(dim=1))
    return torch.stack(rows)


@torch.no_grad()
def neuron_scores(model: BertModel) -> torch.Tensor:
    """Magnitude importance of each FFN neuron, (L, I): ``‖W_1[i, :]‖ · ‖W_2[:, i]‖`` (its input row and output
    column)."""
    return torch.stack([layer.intermediate.dense.weight.norm(dim=1) * layer.output.dense.weight.norm(dim=0)
                        for layer in model.encoder.layer])  # fmt: skip


def keep_top(scores: torch.Tensor, fraction_removed: float) -> list[list[int]]:
    """Per layer (row of ``scores``), the sorted indices of the ``1 − fraction_removed`` best units (at least 1)."""
    keep = max(1, int(round(scores.shape[1] * (1.0 - fraction_removed))))
    return [sorted(row.topk(keep).indices.tolist()) for row in scores]


def head_rows(heads: list[int], head_dim: int) -> torch.Tensor:
    """The Q/K/V output rows (= attention-output input columns) of ``heads``: (len(heads)·d,) indices."""
    return torch.tensor([h * head_dim + j for h in heads for j in range(head_dim)], dtype=torch.long)


@torch.no_grad()
def mask_structures_(model: BertModel, heads: list[list[int]], neurons: list[list[int]]) -> None:
    """Zero (in place) every head and FFN neuron not kept: the masked original whose outputs the structurally
    pruned model must reproduce (a head with zero value rows and output columns adds 0; gelu(0) = 0)."""
    d = model.config.hidden_size // model.config.num_attention_heads
    for layer, kept_h, kept_n in zip(model.encoder.layer, heads, neurons):
        rows = torch.ones(layer.attention.self.value.weight.shape[0], dtype=torch.bool)
        rows[head_rows(kept_h, d)] = False
        for lin in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
            lin.weight[rows] = 0
            lin.bias[rows] = 0
        layer.attention.output.dense.weight[:, rows] = 0
        cols = torch.ones(layer.intermediate.dense.weight.shape[0], dtype=torch.bool)
        cols[kept_n] = False
        layer.intermediate.dense.weight[cols] = 0
        layer.intermediate.dense.bias[cols] = 0
        layer.output.dense.weight[:, cols] = 0


@torch.no_grad()
def structured_prune(model: BertModel, heads: list[list[int]], neurons: list[list[int]]) -> PrunedBertModel:
    """A ``PrunedBertModel`` holding only the kept heads and FFN neurons of ``model`` (weights copied by index).

    Args:
        model: a ``BertModel`` (or ``PrunedBertModel``) in BERT's naming.
        heads: per layer, the kept head indices; neurons: per layer, the kept FFN neuron indices.
    Returns:
        the smaller model, same mode as ``model``; in eval mode its outputs equal the masked original's
        (``mask_structures_``) up to float summation order.
    """
    config = model.config
    d = config.hidden_size // config.num_attention_heads
    values = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "architectures", "auto_map")}
    values.update(layer_heads=[len(h) for h in heads], layer_intermediate=[len(n) for n in neurons])
    pruned = PrunedBertModel(PrunedBertConfig(**values))
    source = model.state_dict()
    for i, (kept_h, kept_n) in enumerate(zip(heads, neurons)):
        p, rows, cols = f"encoder.layer.{i}.", head_rows(kept_h, d), torch.tensor(kept_n, dtype=torch.long)
        for name in ("query", "key", "value"):
            for part in ("weight", "bias"):
                key = f"{p}attention.self.{name}.{part}"
                source[key] = source[key][rows]
        source[f"{p}attention.output.dense.weight"] = source[f"{p}attention.output.dense.weight"][:, rows]
        source[f"{p}intermediate.dense.weight"] = source[f"{p}intermediate.dense.weight"][cols]
        source[f"{p}intermediate.dense.bias"] = source[f"{p}intermediate.dense.bias"][cols]
        source[f"{p}output.dense.weight"] = source[f"{p}output.dense.weight"][:, cols]
    pruned.load_state_dict(source, strict=True)
    return pruned.train(model.training)
