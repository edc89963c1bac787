"""What a student is, as data: the five factors of a block (AutoDistill Table 1), the ``student`` config group's
schema, and the paper's model names (``Model_512_128_1_640_2``). No nn.Module here: the search space and configs
read it without building a model; ``StudentConfig.from_spec`` (modules/student.py) turns a spec into a model config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from omegaconf import MISSING

BLOCK_FACTORS = ("hidden_size", "bottleneck_size", "num_heads", "intermediate_size", "num_ffn")
RESAMPLE_METHODS = ("interpolate", "pca")  # how the teacher's embeddings reach the student width
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


@dataclass
class StudentSpec:
    """Hydra schema of the ``student`` config group.

    Give either ``block`` (the paper's n identical blocks) or ``blocks`` (one entry per block).
    """

    num_blocks: int = MISSING
    block: BlockSpec | None = None
    blocks: list[BlockSpec] | None = None
    vocab_size: int | None = None  # null = the teacher tokenizer's vocabulary (the student shares it)
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    # Copy the teacher's embeddings into the student, resampled to its width (AutoDistill §3.3.2).
    init_embeddings_from_teacher: bool = True
    embedding_resample: str = "interpolate"  # interpolate | pca

    def __post_init__(self) -> None:
        if isinstance(self.num_blocks, bool) or not isinstance(self.num_blocks, int) or self.num_blocks <= 0:
            raise ValueError(f"student.num_blocks must be a positive integer, got {self.num_blocks!r}")
        if (self.block is None) == (self.blocks is None):
            raise ValueError(
                "student: give exactly one of `block` (n identical blocks) or `blocks` (a per-block list); "
                f"got {'both' if self.block is not None else 'neither'}"
            )
        if self.blocks is not None and len(self.blocks) != self.num_blocks:
            raise ValueError(
                f"student.blocks has {len(self.blocks)} entries but student.num_blocks={self.num_blocks}; "
                "make them equal (one entry per block)"
            )
        if self.embedding_resample not in RESAMPLE_METHODS:
            raise ValueError(
                f"student.embedding_resample must be one of {RESAMPLE_METHODS}, got {self.embedding_resample!r}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"student.{name} must be in [0, 1), got {getattr(self, name)}")
        from transformers.activations import (
            ACT2FN,  # here: run.py --help composes with this schema, without torch
        )

        if self.hidden_act not in ACT2FN:
            raise ValueError(
                f"student.hidden_act={self.hidden_act!r} is unknown; use e.g. gelu, relu, gelu_new"
            )

    def block_list(self) -> list[BlockSpec]:
        if self.blocks is not None:
            return list(self.blocks)
        return [self.block] * self.num_blocks

    @property
    def name(self) -> str:
        return student_name(self.block_list())


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
