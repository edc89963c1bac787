"""AdaBERT's CNN students (Chen et al., IJCAI 2020): the searchable super-network and the derived child.

One plain file, read top to bottom: the config -> the cell (a DAG over two inputs and N intermediate nodes)
-> the model (factorised embedding, K stacked cells sharing one architecture, a classifier) -> the efficiency
loss. The candidate operations, their cost and Gumbel-softmax are in modules/adabert_ops.py; deriving a child
and its cost in modules/adabert_child.py.

A model is either a **super-network** (``config.genotype is None``): every edge holds every operation and
the architecture is the learnable logits ``alpha_ops`` (edges x ops, shared by all cells) and ``alpha_k``
(over K = 1..K_max), sampled each step with hard Gumbel-softmax; or a **child** (``genotype`` = one op per
edge, ``num_cells`` = K): just those operations, a plain CNN. Only the sampled op of each edge and the
sampled number of cells are computed (GDAS-style): the forward pass is the child's, while gradients reach
every logit through the straight-through weights.

    cell k inputs: (c_{k-2}, c_{k-1});  cell 1: (text a, text b) — the same text twice for single-text tasks
    each input re-normalised by ReLU-Conv1x1-BN (DARTS' preprocessing), so stacked skip edges cannot grow
    the states cell after cell
    node i = sum over earlier states j of op_{ij}(state_j)          (N = 3 nodes; 2 + 3 + 4 = 9 edges)
    cell output = sum_i softmax(w)_i * node_i                        (attentive sum over the nodes)

Importing this module registers the child with ``transformers``' Auto classes (``model_type: adabert``), so
``AutoModelForSequenceClassification.from_pretrained(<dir>)`` loads a derived student after ``import modules.auto`` (or ``modules.adabert``).
``save_pretrained`` also writes ``auto_map`` and copies this file and adabert_ops.py beside the weights
(``register_for_auto_class``), so a child loads without this project with ``trust_remote_code=True``: this file
imports only torch, transformers and (relatively) adabert_ops.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

# Relative on purpose: save_pretrained copies this file and adabert_ops.py (torch only) beside a child's weights.
from .adabert_ops import (
    OP_NAMES,
    OPS,
    ConvOp,
    DerivedArchitecture,
    apply_op,
    build_op,
    cell_edges,
    gumbel_st,
    op_costs,
)


class AdaBertConfig(PreTrainedConfig):
    """Hugging Face config of an AdaBERT student; ``genotype is None`` marks the search super-network."""

    model_type = "adabert"
    vocab_size: int = 30522
    embedding_size: int = 128  # the teacher's word embeddings, factorised to this width
    hidden_size: int = 128  # channels of every cell
    max_cells: int = 8  # K_max
    num_cells: int | None = None  # K of a child; None in the super-network (searched)
    num_nodes: int = 3  # intermediate nodes per cell
    genotype: list | None = None  # a child's op per edge (cell_edges order); None: the super-network
    pair: bool = False  # sentence-pair task: text a and text b feed the two inputs of cell 1
    max_length: int = 128
    dropout: float | int = 0.1
    pad_token_id: int | None = 0

    def __post_init__(self, **kwargs: Any) -> None:
        edges = len(cell_edges(self.num_nodes))
        if self.genotype is not None:
            unknown = [o for o in self.genotype if o not in OPS]
            if len(self.genotype) != edges or unknown:
                raise ValueError(
                    f"AdaBertConfig.genotype: needs {edges} ops from {list(OPS)}, got {self.genotype}"
                )
            if not self.num_cells or not 1 <= self.num_cells <= self.max_cells:
                raise ValueError(
                    f"AdaBertConfig.num_cells: a child needs 1..{self.max_cells}, got {self.num_cells}"
                )
        super().__post_init__(**kwargs)

    @property
    def is_search(self) -> bool:
        return self.genotype is None


class Cell(nn.Module):
    """A DAG over two inputs and ``num_nodes`` nodes; each edge one op (child) or all ops (super-network)."""

    def __init__(self, config: AdaBertConfig) -> None:
        super().__init__()
        self.edges = cell_edges(config.num_nodes)
        names = [OP_NAMES] * len(self.edges) if config.is_search else [(o,) for o in config.genotype]
        # edge -> op name -> module (zero has none)
        self.ops = nn.ModuleList(
            nn.ModuleDict({o: build_op(o, config.hidden_size, config.is_search) for o in ops if o != "zero"})
            for ops in names
        )
        self.op_names = names
        # Fixed, not searched: each input re-normalised, whatever the previous cell's output scale.
        self.preprocess = nn.ModuleList(ConvOp(config.hidden_size, 1, 1, config.is_search) for _ in range(2))
        self.node_weights = nn.Parameter(torch.zeros(config.num_nodes))  # the attentive sum's logits

    def forward(
        self, s0: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor, choice: torch.Tensor | None = None
    ) -> torch.Tensor:
        """s0, s1: (B, C, S); mask (B, 1, S); choice: (edges, ops) straight-through one-hot (super-network)."""
        states = [self.preprocess[0](s0) * mask, self.preprocess[1](s1) * mask]
        for i in range(len(self.node_weights)):
            total = 0
            for e, (node, j) in enumerate(self.edges):
                if node != i:
                    continue
                if choice is None:  # child: its one op
                    name = self.op_names[e][0]
                    total = total + apply_op(
                        self.ops[e][name] if name != "zero" else None, name, states[j], mask
                    )
                else:  # super-network: only the sampled op runs, scaled by its weight (1 forward, soft grad)
                    k = int(choice[e].argmax())
                    name = OP_NAMES[k]
                    out = apply_op(self.ops[e][name] if name != "zero" else None, name, states[j], mask)
                    total = total + choice[e, k] * out
            states.append(total)
        nodes = torch.stack(states[2:], dim=0)  # (N, B, C, S)
        weights = torch.softmax(self.node_weights, dim=0).view(-1, 1, 1, 1)
        return (weights * nodes).sum(0)


@dataclass
class AdaBertOutput(SequenceClassifierOutput):
    """Logits of the final classifier; per-cell logits (for probe KD) and the sampled K."""

    cell_logits: tuple[torch.Tensor, ...] | None = None
    num_cells: int | None = None


class AdaBertPreTrainedModel(PreTrainedModel):
    """HF plumbing (config class, save/load) shared by the AdaBERT models."""

    config_class = AdaBertConfig
    config: AdaBertConfig
    base_model_prefix = "adabert"
    main_input_name = "input_ids"


class AdaBertForSequenceClassification(AdaBertPreTrainedModel):
    """Factorised embedding -> K cells (one shared architecture) -> masked mean pool -> classifier.

    Every cell also has a small classifier (``cell_heads``) whose logits the probe KD loss matches to the
    teacher's layer probes; a child keeps them (they cost nothing at inference: ``forward`` skips them
    unless ``output_cell_logits``)."""

    def __init__(self, config: AdaBertConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(
            config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id
        )
        self.project = (
            nn.Linear(config.embedding_size, config.hidden_size)
            if config.embedding_size != config.hidden_size
            else nn.Identity()
        )
        cells = config.max_cells if config.is_search else config.num_cells
        self.cells = nn.ModuleList(Cell(config) for _ in range(cells))
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.cell_heads = nn.ModuleList(
            nn.Linear(config.hidden_size, config.num_labels) for _ in range(cells)
        )
        if config.is_search:
            edges = len(cell_edges(config.num_nodes))
            self.alpha_ops = nn.Parameter(1e-3 * torch.randn(edges, len(OP_NAMES)))
            self.alpha_k = nn.Parameter(torch.zeros(config.max_cells))
        self.post_init()

    def architecture_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_ops, self.alpha_k] if self.config.is_search else []

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.architecture_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.project(self.embeddings(ids)).transpose(1, 2)  # (B, C, S)

    def split_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(text a, text b, mask) from a BERT-style batch: a pair task's segments go to the two inputs,
        left-aligned and padded to one length; a single-text task feeds the same text to both."""
        if not self.config.pair or token_type_ids is None:
            return input_ids, input_ids, attention_mask.bool()
        pad = self.config.pad_token_id or 0
        parts = []
        for segment in (0, 1):
            keep = attention_mask.bool() & (token_type_ids == segment)  # (B, S)
            order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept tokens first
            ids = torch.gather(input_ids, 1, order).masked_fill(~torch.gather(keep, 1, order), pad)
            parts.append((ids, torch.gather(keep, 1, order)))
        (a, mask_a), (b, mask_b) = parts
        return a, b, mask_a | mask_b

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        sample: ArchitectureSample | None = None,
        output_cell_logits: bool = False,
        **kwargs: Any,
    ) -> AdaBertOutput:
        """``sample``: the super-network's architecture for this step (``sample_architecture``); without it
        a super-network runs its argmax child."""
        if attention_mask is None:
            attention_mask = (input_ids != (self.config.pad_token_id or 0)).long()
        a, b, mask = self.split_inputs(input_ids, attention_mask, token_type_ids)
        mask = mask.unsqueeze(1).to(self.embeddings.weight.dtype)  # (B, 1, S), float: cheap to multiply by
        states = [self._embed(a) * mask, self._embed(b) * mask]
        choice = None
        num_cells, cell_weight = len(self.cells), None
        if self.config.is_search:
            if sample is None:
                sample = ArchitectureSample(one_hot_argmax(self.alpha_ops), one_hot_argmax(self.alpha_k))
            choice = sample.ops
            num_cells = sample.num_cells
            cell_weight = sample.cells[num_cells - 1]  # 1 in the forward pass; carries alpha_k's gradient
        cell_logits = []
        for k in range(num_cells):
            out = self.cells[k](states[-2], states[-1], mask, choice)
            states.append(out)
            if output_cell_logits:
                cell_logits.append(self.cell_heads[k](pool(out, mask)))
        final = states[-1] if cell_weight is None else states[-1] * cell_weight
        logits = self.classifier(self.dropout(pool(final, mask)))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return AdaBertOutput(
            loss=loss,
            logits=logits,
            cell_logits=tuple(cell_logits) if output_cell_logits else None,
            num_cells=num_cells,
        )

    # ---- the architecture ------------------------------------------------------------------------

    def sample_architecture(self, tau: float) -> ArchitectureSample:
        """One architecture by hard Gumbel-softmax over each edge's ops and over K (straight-through)."""
        return ArchitectureSample(gumbel_st(self.alpha_ops, tau), gumbel_st(self.alpha_k, tau))

    def efficiency_loss(self, sample: ArchitectureSample) -> torch.Tensor:
        """L_E = K / K_max * mean over edges of cost(op) / 2 for the sampled architecture, in [0, 1]: 1 is the
        largest architecture of the space (K_max cells, every edge the heaviest op), 0 all-zero ops. The
        straight-through weights carry the gradient to alpha_k and alpha_ops."""
        costs = op_costs(self.config.hidden_size).to(sample.ops.device)
        ks = torch.arange(1, self.config.max_cells + 1, device=costs.device, dtype=costs.dtype)
        return (sample.cells * ks).sum() / self.config.max_cells * (sample.ops * costs).sum(-1).mean() / 2

    def derive(self) -> DerivedArchitecture:
        """The argmax child: K and one op per edge."""
        ops = [OP_NAMES[int(i)] for i in self.alpha_ops.argmax(-1)]
        return DerivedArchitecture(num_cells=int(self.alpha_k.argmax()) + 1, genotype=ops)


@dataclass
class ArchitectureSample:
    """A super-network architecture: straight-through one-hots over each edge's ops (edges, ops) and over
    K (K_max,)."""

    ops: torch.Tensor
    cells: torch.Tensor

    @property
    def num_cells(self) -> int:
        return int(self.cells.argmax()) + 1


def one_hot_argmax(logits: torch.Tensor) -> torch.Tensor:
    """(..., n) logits -> (..., n) one-hot of their argmax, in the logits' dtype (the deterministic architecture)."""
    return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)


def pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over the sequence: (B, C, S), (B, 1, S) -> (B, C)."""
    return (x * mask).sum(-1) / mask.sum(-1).clamp_min(1)


# save_pretrained copies this file (and its relative imports) beside the weights and names it in auto_map.
AdaBertConfig.register_for_auto_class("AutoConfig")
AdaBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

if __package__ == "modules":
    # Only the project's import registers the model type locally; a copy loaded from a saved dir must not replace
    # the project's classes for later loads in the process.
    AutoConfig.register(AdaBertConfig.model_type, AdaBertConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(AdaBertConfig, AdaBertForSequenceClassification, exist_ok=True)
