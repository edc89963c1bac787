"""Seeded index selection: train/validation/test partitions, capped subsets, and the per-epoch shuffle of
training batches. Each is a pure function of its sizes and seed, so a split or an order never depends on
what else drew random numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TypeVar

import torch
from torch.utils.data import Sampler

T = TypeVar("T")


def split_sizes_for(n: int, fractions: list[float]) -> list[int]:
    """Split ``n`` rows by ``fractions``: floors, then the leftover rows to the largest remainders.

    Returns:
        Sizes that sum to ``n``, each within one row of ``n * fraction``.
    """
    exact = [n * f for f in fractions]
    sizes = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(fractions)), key=lambda i: exact[i] - sizes[i], reverse=True)
    for i in by_remainder[: n - sum(sizes)]:
        sizes[i] += 1
    return sizes


def split_indices(n: int, fractions: list[float], seed: int) -> tuple[list[int], list[int], list[int]]:
    """Seeded random train/validation/test partition of ``range(n)``.

    The permutation depends only on ``n`` and ``seed``, so a fixed seed gives the same split
    whatever is done later (``max_examples`` caps take a prefix of each part).

    Returns:
        (train, validation, test) row indices, disjoint, together covering ``range(n)``.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_train, n_val, _ = split_sizes_for(n, fractions)
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


def subsample(n: int, max_examples: int | None, seed: int) -> list[int]:
    """Row indices of a seeded random subset of at most ``max_examples`` rows, in file order."""
    if max_examples is None or n <= max_examples:
        return list(range(n))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[:max_examples])


def take_subsample(rows: list[T], max_examples: int | None, seed: int) -> list[T]:
    """The rows ``subsample`` picks: a seeded random subset of at most ``max_examples``, in their order."""
    return [rows[i] for i in subsample(len(rows), max_examples, seed)]


class EpochShuffle(Sampler[int]):
    """A random order per epoch that depends only on (seed, epoch), recomputed from the epoch Lightning sets
    (``set_epoch``). It is the order a ``RandomSampler`` with a generator seeded with ``seed`` yields in its
    e-th full epoch (that sampler draws two permutations per epoch, the second one empty-sliced), so
    uninterrupted runs keep the batch order they had before resumption was exact."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch (0-based)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(2 * self.epoch):
            torch.randperm(self.size, generator=generator)  # the earlier epochs' draws
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size
