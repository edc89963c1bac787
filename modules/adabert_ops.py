"""AdaBERT's search space (Chen et al., IJCAI 2020, §2.2): the candidate operations, their size and FLOP
formulas, the cell's edges, Gumbel-softmax with the straight-through estimator, and a derived genotype.

The models that use them are in modules/adabert.py; deriving a child and its analytic cost in
modules/adabert_child.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# name -> (kind, kernel size, dilation). Convolutions are ReLU-Conv-BatchNorm with SAME padding.
OPS: dict[str, tuple[str, int, int]] = {
    "std_conv_3": ("conv", 3, 1),
    "std_conv_5": ("conv", 5, 1),
    "std_conv_7": ("conv", 7, 1),
    "dil_conv_3": ("conv", 3, 2),
    "dil_conv_5": ("conv", 5, 2),
    "dil_conv_7": ("conv", 7, 2),
    "avg_pool_3": ("avg_pool", 3, 1),
    "max_pool_3": ("max_pool", 3, 1),
    "skip": ("skip", 1, 1),
    "zero": ("zero", 1, 1),
}
OP_NAMES = tuple(OPS)


def conv_size(kernel: int, channels: int) -> int:
    """Parameters of a ReLU-Conv-BN: a k-wide conv C -> C (+ bias) and its BatchNorm (scale, shift)."""
    return kernel * channels * channels + channels + 2 * channels


def conv_flops(kernel: int, channels: int) -> int:
    """Multiply-adds x 2 per token: each output channel reads k positions of C channels."""
    return 2 * kernel * channels * channels


def op_size(name: str, channels: int) -> int:
    """Parameters of one op: a conv's (``conv_size``); pools, skip and zero have none."""
    kind, k, _ = OPS[name]
    return conv_size(k, channels) if kind == "conv" else 0


def op_flops(name: str, channels: int) -> int:
    """FLOPs per token of one op: a conv's (``conv_flops``); a pool reads k values per channel."""
    kind, k, _ = OPS[name]
    if kind == "conv":
        return conv_flops(k, channels)
    return k * channels if kind in ("avg_pool", "max_pool") else 0


def preprocess_size(channels: int) -> int:
    """Parameters of a cell's two ReLU-Conv1x1-BN input layers (its fixed, unsearched part)."""
    return 2 * conv_size(1, channels)


def preprocess_flops(channels: int) -> int:
    """FLOPs per token of a cell's two ReLU-Conv1x1-BN input layers."""
    return 2 * conv_flops(1, channels)


def op_costs(channels: int) -> torch.Tensor:
    """SIZE(o) + FLOPs(o) per op, each normalised by the largest op's, so the heaviest op costs 2 (ops,)."""
    sizes = torch.tensor([float(op_size(o, channels)) for o in OP_NAMES])
    flops = torch.tensor([float(op_flops(o, channels)) for o in OP_NAMES])
    return sizes / sizes.max() + flops / flops.max()


class ConvOp(nn.Sequential):
    """ReLU -> Conv1d (SAME padding, dilated or not) -> BatchNorm, over (B, C, S).

    ``batch_stats``: normalise by the batch's statistics in eval mode too (the super-network), because one
    op's input distribution changes with every sampled path upstream: running averages over all paths would
    fit none, and the argmax child's dev score would be noise. A child keeps the usual running averages."""

    def __init__(self, channels: int, kernel: int, dilation: int, batch_stats: bool = False) -> None:
        pad = dilation * (kernel - 1) // 2
        super().__init__(
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel, padding=pad, dilation=dilation),
            nn.BatchNorm1d(channels, track_running_stats=not batch_stats),
        )


class PoolOp(nn.Module):
    """Average or max pooling, window 3, stride 1; padding positions never win a max or join an average."""

    def __init__(self, kind: str, kernel: int) -> None:
        super().__init__()
        self.kind, self.kernel = kind, kernel

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pad = self.kernel // 2
        if self.kind == "max_pool":
            x = x.masked_fill(~mask.bool(), torch.finfo(x.dtype).min)
            return F.max_pool1d(x, self.kernel, stride=1, padding=pad)
        total = F.avg_pool1d(x, self.kernel, stride=1, padding=pad, count_include_pad=True)
        count = F.avg_pool1d(mask.to(x.dtype), self.kernel, stride=1, padding=pad, count_include_pad=True)
        return total / count.clamp_min(1e-6)


def build_op(name: str, channels: int, batch_stats: bool = False) -> nn.Module:
    """The module of op ``name`` at ``channels`` (``nn.Identity`` for skip and zero). Raises KeyError for an
    unknown name (``OPS`` lists them)."""
    kind, kernel, dilation = OPS[name]
    if kind == "conv":
        return ConvOp(channels, kernel, dilation, batch_stats)
    if kind in ("avg_pool", "max_pool"):
        return PoolOp(kind, kernel)
    return nn.Identity()  # skip; zero is handled by the edge (it has no module and no cost)


def apply_op(op: nn.Module, name: str, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One op on (B, C, S) with a (B, 1, S) mask; the output is zero at padding, so later ops read zeros."""
    if name == "zero":
        return torch.zeros_like(x)
    out = op(x, mask) if isinstance(op, PoolOp) else op(x)
    return out * mask


# --------------------------------------------------------------------------------------------------
# Gumbel-softmax with the straight-through estimator
# --------------------------------------------------------------------------------------------------


def gumbel_st(logits: torch.Tensor, tau: float, hard: bool = True) -> torch.Tensor:
    """A one-hot sample of softmax(logits) perturbed by Gumbel noise in the forward pass, whose gradient
    is that of the soft sample softmax((logits + g) / tau) (straight-through). Last dim = the choices."""
    return F.gumbel_softmax(logits, tau=tau, hard=hard, dim=-1)


def cell_edges(num_nodes: int) -> list[tuple[int, int]]:
    """(node, input state) for every edge of a cell: node i (0-based) reads states 0 .. i+1."""
    return [(i, j) for i in range(num_nodes) for j in range(i + 2)]


@dataclass
class DerivedArchitecture:
    """A child: the number of cells and the op of every edge (``cell_edges`` order)."""

    num_cells: int
    genotype: list[str]

    def describe(self, num_nodes: int = 3) -> str:
        """Readable text: one line per node with its incoming ops (zero edges left out)."""
        inputs = ["c_{k-2}", "c_{k-1}"] + [f"node {i}" for i in range(num_nodes)]
        lines = [f"K = {self.num_cells} cells, each:"]
        for i in range(num_nodes):
            incoming = [
                f"{op}({inputs[j]})"
                for (node, j), op in zip(cell_edges(num_nodes), self.genotype)
                if node == i and op != "zero"
            ]
            lines.append(f"  node {i} = " + (" + ".join(incoming) if incoming else "0"))
        lines.append("  output = attentive sum of the nodes")
        return "\n".join(lines)
