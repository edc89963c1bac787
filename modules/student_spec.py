"""What a student is, as data: the five factors of a block (AutoDistill Table 1), the ``student`` config group's
schema, and the paper's model names (``Model_512_128_1_640_2``). No nn.Module here: the search space and configs
read it without building a model; ``StudentConfig.from_spec`` (modules/student.py) turns a spec into a model config.
The block factors and names live in modules/student_blocks.py (standard library only: it is copied beside saved
weights) and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from modules.student_blocks import (
    BLOCK_FACTORS,
    NORMALIZATION_TYPES,
    BlockSpec,
    block_problem,
    factors_problem,
    student_name,
    unchecked_block,
)

__all__ = ["BLOCK_FACTORS", "NORMALIZATION_TYPES", "RESAMPLE_METHODS", "BlockSpec", "StudentSpec", "block_problem",
           "student_name", "unchecked_block"]  # fmt: skip

RESAMPLE_METHODS = ("interpolate", "pca")  # how the teacher's embeddings reach the student width


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
    hidden_act: str = "gelu"  # relu: MobileBERT's operational optimisation (with no_norm)
    # MobileBERT's factors (Sun et al. 2020 §3.4-3.5; HF MobileBertConfig's names). Defaults: BERT's.
    normalization_type: str = "layer_norm"  # layer_norm | no_norm (h -> γ ∘ h + β)
    embedding_size: int | None = None  # word-table width E; null: the first block's hidden size (no factorisation)
    trigram_input: bool = False  # tokens t+1, t, t-1 concatenated (kernel-3 conv) before the dense map up to H_1
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
        problem = factors_problem(self.normalization_type, self.embedding_size, self.trigram_input,
                                  unchecked_block(self.block_list()[0]).hidden_size)  # fmt: skip
        if problem:
            raise ValueError(f"student.{problem}")
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
