"""Batches as a pure function of (seed, global step, rank): ``StepBatches`` builds the batch of step t (epoch
``t // steps_per_epoch`` shuffled by a permutation seeded by (seed, epoch), masked with a generator seeded
by (seed, step, rank)); ``StepSampler`` yields the step numbers, skipping those a resumed run already did.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from core.assets import DataError
from core.seeding import mix_seed
from datamodules.mlm_masking import MaskingConfig, collate
from datamodules.pretraining_tokens import TokenizedPairs


class StepBatches(Dataset):
    """Item ``t`` is this rank's share of the batch for global step ``t`` (used with ``batch_size=None``).

    Training: step t is in epoch ``t // steps_per_epoch``; that epoch's order is a permutation
    seeded by (seed, epoch). Validation (``shuffle=False``): batches in order, masks seeded by index.
    """

    def __init__(
        self,
        data: TokenizedPairs,
        batch_size: int,
        masking: MaskingConfig,
        seed: int,
        shuffle: bool,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.data, self.batch_size, self.masking = data, batch_size, masking
        self.seed, self.shuffle, self.rank, self.world_size = seed, shuffle, rank, world_size
        global_batch = batch_size * world_size
        if shuffle:
            self.steps_per_epoch = len(data) // global_batch  # drop the ragged tail: every step full
            if self.steps_per_epoch == 0:
                raise DataError(
                    f"{len(data)} training examples are fewer than one global batch ({global_batch} = "
                    f"data.batch_size x {world_size} devices); lower data.batch_size or add data"
                )
        else:
            self.steps_per_epoch = -(-len(data) // global_batch)
        self._perm_epoch, self._perm = -1, None

    def __len__(self) -> int:
        return self.steps_per_epoch

    def indices(self, step: int) -> list[int]:
        """Example indices of this rank's share of global step ``step``."""
        global_batch = self.batch_size * self.world_size
        if self.shuffle:
            epoch, within = divmod(step, self.steps_per_epoch)
            if epoch != self._perm_epoch:
                gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
                self._perm, self._perm_epoch = torch.randperm(len(self.data), generator=gen), epoch
            chunk = self._perm[within * global_batch : (within + 1) * global_batch]
        else:
            chunk = torch.arange(step * global_batch, min((step + 1) * global_batch, len(self.data)))
        share = chunk[self.rank :: self.world_size].tolist()
        # The last validation batch can have fewer examples than ranks; repeat one rather than send nothing.
        return share or chunk[-1:].tolist()

    def __getitem__(self, step: int) -> dict:
        gen = torch.Generator().manual_seed(mix_seed(self.seed, step, self.rank, int(self.shuffle)))
        batch = collate(self.data, self.indices(step), self.masking, gen)
        batch["step"] = torch.tensor(step)
        return batch


class StepSampler(Sampler[int]):
    """Yields global step numbers; Lightning calls ``set_epoch`` so epoch e yields e*len .. (e+1)*len - 1.

    ``start_step`` is where a resumed run picks up: Lightning restores the global step before it asks
    for the dataloader, but it does not fast-forward a map-style loader, so the sampler skips the
    steps already trained (a resumed epoch is shorter, and the next one is whole again).
    """

    def __init__(self, steps_per_epoch: int, start_step: int = 0):
        self.steps_per_epoch, self.start_step, self.epoch = steps_per_epoch, start_step, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch (0-based)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.steps_per_epoch
        return iter(range(max(start, self.start_step), start + self.steps_per_epoch))
