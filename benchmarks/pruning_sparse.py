"""What unstructured sparsity could buy on this device: a pruned model's forward with dense kernels (as served) beside
the same weights in sparse formats, p50 ratios printed (issue 19).

    .venv/bin/python benchmarks/pruning_sparse.py <pruned model dir> [<dir> ...] [--seq-len 128] [--batch 1]

Paths, each timed on the encoder's linear layers only (everything else stays dense):
- ``dense``: the model as saved (zeros stored and multiplied: what ``latency/p50_ms`` measures);
- ``csr``: every prunable weight as ``torch.sparse_csr`` (``Tensor.to_sparse_csr``), applied by ``torch.sparse.mm``
  (CPU and CUDA; pays off only at high sparsity, its indexing costs more per non-zero than a dense FMA);
- ``2:4``: ``torch.sparse.to_sparse_semi_structured`` (the 2:4 pattern the weights are re-pruned to, cuSPARSELt /
  CUTLASS kernels): CUDA only (compute capability >= 8.0), so on a CPU it prints "unavailable on this device".

Why weights re-pruned to 2:4 for that row: magnitude and RPP masks are unstructured; semi-structured kernels need
exactly 2 non-zeros in every 4 consecutive inputs, so the row shows the ceiling of the pattern, not these masks.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel

import modules.auto  # noqa: F401  (pruned-BERT dirs load through AutoModel)
from modules.pruning import prunable_linears, sparsity_counts


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with W held as a CSR tensor: (B, S, in) -> (B, S, out) through ``torch.sparse.mm``."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = linear.weight.detach().to_sparse_csr()  # (out, in), CSR
        self.bias = linear.bias.detach() if linear.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (B·S, in)
        y = torch.sparse.mm(self.weight, flat.t()).t()  # (B·S, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1)


class SemiStructuredLinear(nn.Module):
    """The weight pruned to 2:4 (the 2 largest of every 4) and held as a semi-structured sparse tensor (CUDA, fp16)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().half().cuda()  # (out, in)
        groups = w.view(w.shape[0], -1, 4)
        keep = groups.abs().topk(2, dim=-1).indices
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True).view_as(w)
        self.weight = torch.sparse.to_sparse_semi_structured(w * mask)
        self.bias = linear.bias.detach().half().cuda()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight, self.bias)


def swap(model: nn.Module, make) -> nn.Module:
    """Replace every prunable linear of ``model`` (in place) by ``make(linear)``."""
    for name in list(prunable_linears(model)):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, make(getattr(parent, child)))
    return model


def p50_ms(model: nn.Module, ids: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of one forward (ms)."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if ids.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
            if ids.is_cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def semi_structured_note() -> str | None:
    """None when 2:4 kernels can run here, else why not."""
    if not torch.cuda.is_available():
        return "unavailable on this device (semi-structured 2:4 sparsity is CUDA-only in PyTorch)"
    if torch.cuda.get_device_capability() < (8, 0):
        return "unavailable on this GPU (needs compute capability >= 8.0)"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch} x {args.seq_len} tokens")
    print("| model | sparsity | non-zero params (M) | dense p50 (ms) | csr / dense | 2:4 / dense |")
    print("|---|--:|--:|--:|--:|--:|")
    note = semi_structured_note()
    for path in args.models:
        model = AutoModel.from_pretrained(path).eval().to(device)
        counts = sparsity_counts(model)
        ids = torch.randint(5, model.config.vocab_size, (args.batch, args.seq_len), device=device)
        sparse = swap(AutoModel.from_pretrained(path).eval().to(device), SparseLinear)
        # Interleaved rounds, the median of per-round ratios: a loaded machine slows both sides of a round alike.
        rounds = [(p50_ms(model, ids, repeats=5), p50_ms(sparse, ids, repeats=5)) for _ in range(args.rounds)]
        dense = statistics.median(d for d, _ in rounds)
        ratio = statistics.median(c / d for d, c in rounds)
        semi = "—"
        if note is None:
            half = AutoModel.from_pretrained(path).eval().half().to(device)
            semi = f"{p50_ms(swap(half, SemiStructuredLinear), ids) / p50_ms(half, ids):.2f}x (fp16)"
        print(f"| {path} | {counts['sparsity']:.3f} | {counts['params_nonzero'] / 1e6:.2f} | {dense:.1f} | "
              f"{ratio:.2f}x | {semi} |")  # fmt: skip
    if note:
        print(f"2:4: {note}; the code path above runs where it is available.")


if __name__ == "__main__":
    main()
