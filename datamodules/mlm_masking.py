"""BERT's dynamic masking and the padded MLM + NSP batch: pure functions of the tokenised examples and a
generator, so the same (seed, step) always gives the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from datamodules.pretraining_tokens import TokenizedPairs


@dataclass
class MaskingConfig:
    """Token ids and rates for ``mask_tokens``: of the maskable tokens, ``mlm_probability`` are selected; of
    those, ``mask_token_prob`` become ``mask_id``, ``random_token_prob`` a random id in [0, vocab_size), the
    rest stay. ``special_ids`` are never selected; ``pad_id`` fills padding in ``collate``."""

    mask_id: int
    pad_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    mlm_probability: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1


def mask_tokens(
    input_ids: torch.Tensor, maskable: torch.Tensor, cfg: MaskingConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: select ``mlm_probability`` of the maskable tokens; of those 80% -> [MASK],
    10% -> a random token, 10% unchanged.

    Args:
        input_ids: (B, S) token ids.
        maskable: (B, S) bool, False for special tokens and padding.
    Returns:
        masked ids (B, S) and labels (B, S): the original id where selected, -100 elsewhere.
    """
    probs = torch.rand(input_ids.shape, generator=generator)
    selected = (probs < cfg.mlm_probability) & maskable
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (action < cfg.mask_token_prob)
    to_random = (
        selected & (action >= cfg.mask_token_prob) & (action < cfg.mask_token_prob + cfg.random_token_prob)
    )
    random_ids = torch.randint(cfg.vocab_size, input_ids.shape, generator=generator)
    masked = torch.where(to_mask, torch.full_like(input_ids, cfg.mask_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


def collate(
    data: TokenizedPairs, indices: list[int], masking: MaskingConfig, generator: torch.Generator
) -> dict:
    """Pad examples to the longest in the batch and mask them.

    Returns:
        dict of input_ids, attention_mask, token_type_ids, labels (B, S) and next_sentence_label (B,).
    """
    examples = [data.example(i) for i in indices]
    seq_len = max(len(ids) for ids, _ in examples)
    batch = len(indices)
    input_ids = torch.full((batch, seq_len), masking.pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((batch, seq_len), dtype=torch.long)
    attention_mask = torch.zeros((batch, seq_len), dtype=torch.long)
    for row, (ids, types) in enumerate(examples):
        input_ids[row, : len(ids)] = ids.long()
        token_type_ids[row, : len(ids)] = types.long()
        attention_mask[row, : len(ids)] = 1
    maskable = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(masking.special_ids))
    masked, labels = mask_tokens(input_ids, maskable, masking, generator)
    return {
        "input_ids": masked,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "labels": labels,
        "next_sentence_label": data.nsp_labels[indices].clone(),
    }
