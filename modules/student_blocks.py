"""The five factors of a building block (AutoDistill Table 1), the paper's model names (``Model_512_128_1_640_2``),
and the checks of MobileBERT's student-wide factors (normalisation, embedding factorisation).

Standard library only, on purpose: ``save_pretrained`` copies this file beside a student's weights together with
modules/student.py (its relative import), so the student loads with ``trust_remote_code=True`` where only torch
and transformers are installed. modules/student_spec.py re-exports these names for the project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

BLOCK_FACTORS = ("hidden_size", "bottleneck_size", "num_heads", "intermediate_size", "num_ffn")
# MobileBERT's normalisations (Sun et al. 2020 §3.4; HF MobileBertConfig.normalization_type): BERT's LayerNorm, or
# NoNorm h -> γ ∘ h + β (no mean or variance over features: cheaper on device, same FLOPs in the matmul count).
NORMALIZATION_TYPES = ("layer_norm", "no_norm")
_NAME_RE = re.compile(r"^(?:Model_)?(\d+)_(\d+)_(\d+)_(\d+)_(\d+)$")


@dataclass
class BlockSpec:
    """The five factors of one building block (AutoDistill Table 1).

    Named like the paper: ``BlockSpec.from_name("Model_512_128_1_640_2")`` is hidden 512,
    bottleneck 128, 1 head, intermediate 640, 2 stacked FFNs.
    """

    hidden_size: int
    bottleneck_size: int
    num_heads: int
    intermediate_size: int
    num_ffn: int

    def __post_init__(self) -> None:
        problem = block_problem(self)
        if problem:
            raise ValueError(f"student block: {problem}")

    @property
    def name(self) -> str:
        return "_".join(str(getattr(self, f)) for f in BLOCK_FACTORS)

    @property
    def has_bottleneck(self) -> bool:
        return self.hidden_size != self.bottleneck_size

    @classmethod
    def from_name(cls, name: str) -> BlockSpec:
        match = _NAME_RE.match(name.strip())
        if not match:
            raise ValueError(
                f"'{name}' is not a block name: expected Model_<hidden>_<bottleneck>_<heads>_<intermediate>_<ffns>, "
                "e.g. Model_512_128_4_512_4"
            )
        return cls(*(int(g) for g in match.groups()))


def block_problem(block: Any) -> str:
    """What is wrong with a block's factors ('' when nothing is): one message naming the field."""
    for name in BLOCK_FACTORS:
        value = getattr(block, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            return f"{name} must be a positive integer, got {value!r}"
    if block.bottleneck_size % block.num_heads:
        divisors = [h for h in (1, 2, 4, 8, 16) if block.bottleneck_size % h == 0]
        return (
            f"bottleneck_size={block.bottleneck_size} is not divisible by num_heads={block.num_heads} "
            f"(each head gets bottleneck_size / num_heads dims); use num_heads in {divisors}"
        )
    return ""


def student_name(blocks: list[BlockSpec]) -> str:
    """``Model_512_128_4_512_4x24`` for n identical blocks; block names joined by '-' otherwise."""
    names = [b.name for b in blocks]
    if len(set(names)) == 1:
        return f"Model_{names[0]}x{len(names)}"
    return "Model_" + "-".join(names)


def unchecked_block(d: dict | BlockSpec) -> BlockSpec:
    """A ``BlockSpec`` from a config dict without the factor checks (the caller reports problems with the block's
    index). Raises ValueError when a factor is missing."""
    if isinstance(d, BlockSpec):
        return d
    missing = [f for f in BLOCK_FACTORS if f not in d]
    if missing:
        raise ValueError(f"student block {d} lacks {missing}; each block needs {list(BLOCK_FACTORS)}")
    block = object.__new__(BlockSpec)
    for f in fields(BlockSpec):
        setattr(block, f.name, d[f.name])
    return block


def factors_problem(normalization_type: Any, embedding_size: Any, trigram_input: Any, first_hidden_size: int) -> str:
    """What is wrong with a student's MobileBERT factors ('' when nothing is): one message naming the field and the fix.

    Args:
        normalization_type: one of ``NORMALIZATION_TYPES``.
        embedding_size: the word-embedding width E, or None for the first block's hidden size (no factorisation).
        trigram_input: MobileBERT's kernel-3 embedding convolution (a bool).
        first_hidden_size: the first block's hidden size H_1, what the embedding layer outputs.
    """
    if normalization_type not in NORMALIZATION_TYPES:
        return (f"normalization_type must be one of {NORMALIZATION_TYPES} (layer_norm: BERT's; no_norm: MobileBERT's "
                f"γ ∘ h + β), got {normalization_type!r}")  # fmt: skip
    if not isinstance(trigram_input, bool):
        return f"trigram_input must be true or false, got {trigram_input!r}"
    if embedding_size is None:
        return ""
    if isinstance(embedding_size, bool) or not isinstance(embedding_size, int) or embedding_size <= 0:
        return f"embedding_size must be a positive integer or null (the first block's hidden size), got {embedding_size!r}"
    if embedding_size > first_hidden_size:
        return (f"embedding_size={embedding_size} is wider than the first block's hidden_size={first_hidden_size}; "
                f"a factorised embedding is narrower (MobileBERT: 128 under 512): use <= {first_hidden_size} or null")
    return ""
