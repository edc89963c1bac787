"""The task-KD teacher's logits, computed once per input row and shared by every student in this process.

recipe=autodistill fine-tunes several students on the same task from the same fine-tuned teacher, for several
epochs each: without this memo the frozen teacher (the most expensive model in the run) would re-encode the same
rows ``epochs x students`` times. A frozen teacher in eval mode is a pure function of the row, so its logits
are looked up by (teacher fingerprint, the row's tokens) and only rows never seen are encoded.

Rows are keyed by their unpadded token ids and segment ids: the same text in a batch padded to another length
maps to the same entry (the logits of a padded row differ from the unpadded encoding only by float rounding).
Classification only: QA's logits are per token and are not memoised.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

MAX_ROWS = 2_000_000  # ~16 MB of keys and logits per million rows (2 labels); beyond it new rows are not stored


def teacher_fingerprint(teacher: nn.Module) -> str:
    """A digest of every parameter and buffer (names, shapes, bytes): two loads of one saved model share it,
    any change of weights gives another. About 0.2 s for 23M float32 parameters."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in (*teacher.named_parameters(), *teacher.named_buffers()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class LogitsMemo:
    """Teacher logits per row, shared across runs in this process (``MEMO``).

    ``store``: (teacher fingerprint, row key) -> (C,) float32 logits on the CPU. ``hits`` / ``misses`` count rows.
    """

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.store: dict[tuple[str, bytes], torch.Tensor] = {}
        self.max_rows = max_rows
        self.hits = 0
        self.misses = 0

    @staticmethod
    def row_keys(batch: dict[str, torch.Tensor]) -> list[bytes]:
        """One key per row: its unpadded input ids and segment ids, as bytes."""
        ids, mask = batch["input_ids"].cpu(), batch["attention_mask"].cpu().bool()
        types = batch.get("token_type_ids")
        types = types.cpu() if types is not None else torch.zeros_like(ids)
        return [
            ids[r][mask[r]].numpy().tobytes() + b"|" + types[r][mask[r]].numpy().tobytes() for r in range(ids.shape[0])
        ]

    @torch.no_grad()
    def logits(self, teacher: nn.Module, fingerprint: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The teacher's (B, C) logits for ``batch`` (input_ids, attention_mask, token_type_ids: (B, S)), on the
        batch's device; rows never seen before are encoded in one sub-batch (padded to their longest row)."""
        keys = self.row_keys(batch)
        missing = [r for r, k in enumerate(keys) if (fingerprint, k) not in self.store]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            rows = torch.tensor(missing, device=batch["input_ids"].device)
            width = int(batch["attention_mask"][rows].sum(-1).max())
            sub = {k: v[rows][:, :width] for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            out = teacher(**sub).logits.float().cpu()  # (M, C)
            for i, r in enumerate(missing):
                fresh[r] = out[i]
                if len(self.store) < self.max_rows:
                    self.store[(fingerprint, keys[r])] = out[i]
        stacked = torch.stack([fresh[r] if r in fresh else self.store[(fingerprint, k)] for r, k in enumerate(keys)])
        return stacked.to(batch["input_ids"].device)

    def clear(self) -> None:
        self.store.clear()
        self.hits = self.misses = 0


MEMO = LogitsMemo()
