"""The student architecture space (AutoDistill §3.5): Table 1's block factors, the block count, per-block
factors, and any other config key, as a space the Pareto sweeper plugin takes through config
(``space: {_target_: search.space.StudentSpace, ...}``).

The nevergrad entries keep the names and order the sweeper has always used (``num_blocks``, then
``block.<factor>`` or ``block<i>.<factor>``, then ``params``), so a fixed seed proposes the same students.
MobileBERT's student-wide factors (``factors``: normalisation, activation, embedding factorisation) are optional
categorical choices, entries ``factors.<name>`` between the blocks' and ``params``; none by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra_plugins.pareto_sweeper import (
    Parameter,
    format_value,
    parse_expression,
    parse_params,
    plain,
    sweep_values,
)
from modules.student_spec import BLOCK_FACTORS, NORMALIZATION_TYPES, BlockSpec, student_name

# Table 1 of AutoDistill: 4 x 4 x 4 x 3 x 3 = 576 block shapes, in BLOCK_FACTORS order (the block name's).
# The one place the project keeps it.
TABLE1 = {
    "hidden_size": [128, 256, 384, 512],
    "bottleneck_size": [64, 96, 128, 160],
    "num_heads": [1, 2, 4, 8],
    "intermediate_size": [384, 512, 640],
    "num_ffn": [2, 4, 6],
}


@dataclass
class BlockSpaceConfig:
    """The values each factor of a block may take (default: Table 1).

    Raises:
        ValueError: a factor's list is empty or holds something other than positive integers.
    """

    hidden_size: list[int] = field(default_factory=lambda: list(TABLE1["hidden_size"]))
    bottleneck_size: list[int] = field(default_factory=lambda: list(TABLE1["bottleneck_size"]))
    num_heads: list[int] = field(default_factory=lambda: list(TABLE1["num_heads"]))
    intermediate_size: list[int] = field(default_factory=lambda: list(TABLE1["intermediate_size"]))
    num_ffn: list[int] = field(default_factory=lambda: list(TABLE1["num_ffn"]))

    def __post_init__(self) -> None:
        for name in BLOCK_FACTORS:
            values = list(getattr(self, name))
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
                raise ValueError(
                    f"space.block.{name} must be a non-empty list of positive integers, got {values}"
                )


@dataclass
class FactorSpaceConfig:
    """MobileBERT's student-wide factors (Sun et al. 2020 §3.4-3.5) as categorical choices: each a list of the
    values to try, null (default) = not searched (the student config's value stays). E.g.
    ``normalization_type: [layer_norm, no_norm]``, ``hidden_act: [gelu, relu]`` (the "OPT" pair: latency, not
    FLOPs), ``embedding_size: [null, 128]`` (null: the first block's hidden size), ``trigram_input: [false, true]``.

    Raises:
        ValueError: an empty list, or a value the student config would refuse.
    """

    normalization_type: list[str] | None = None
    hidden_act: list[str] | None = None
    embedding_size: list[int | None] | None = None
    trigram_input: list[bool] | None = None

    def __post_init__(self) -> None:
        allowed = {"normalization_type": NORMALIZATION_TYPES, "trigram_input": (False, True)}
        if self.hidden_act is not None:  # only then: importing transformers' activations loads torch (seconds)
            from transformers.activations import ACT2FN

            allowed["hidden_act"] = tuple(ACT2FN)
        for name in FACTOR_NAMES:
            values = getattr(self, name)
            if values is None:
                continue
            values = list(values)
            if not values:
                raise ValueError(f"space.factors.{name} must be null (not searched) or a non-empty list")
            bad = [v for v in values if (v not in allowed[name] if name in allowed else not _is_width(v))]
            if bad:
                hint = allowed[name] if name in allowed else "positive integers or null"
                raise ValueError(f"space.factors.{name}: {bad} not allowed; use {hint}")

    def entries(self) -> dict[str, list]:
        """{factor name: its choices} for the searched factors, in ``FACTOR_NAMES`` order."""
        return {n: list(getattr(self, n)) for n in FACTOR_NAMES if getattr(self, n) is not None}


FACTOR_NAMES = ("normalization_type", "hidden_act", "embedding_size", "trigram_input")


def _is_width(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)


@dataclass
class StudentSpace:
    """What the search varies: the student, and any other key (a ``SearchSpace`` of the sweeper plugin).

    ``block``: the Table-1 factors (null: keep the student fixed, search only ``params``).
    ``num_blocks``: an int (fixed depth) or a sweep expression such as ``range(2,7)`` or ``choice(4,6)``.
    ``per_block``: one independent set of factors per block (a conditional space: blocks past the
    proposed depth are unused) instead of n identical blocks.
    ``factors``: MobileBERT's student-wide factors to choose among (``FactorSpaceConfig``; none by default).
    ``params``: any other config key with a Hydra sweep expression, as ``key=expression`` strings, e.g.
    ``["recipe.optimizer.lr=tag(log, interval(1e-4, 3e-3))"]``.
    ``prefix``: where the architecture lives in the trial's config.

    Raises:
        ValueError: nothing to search, a depth that is not a positive int (or sweep of them), a bad
            expression, or a ``params`` key inside the searched architecture.
    """

    _target_: str = "search.space.StudentSpace"
    block: BlockSpaceConfig | None = field(default_factory=BlockSpaceConfig)
    num_blocks: Any = 4
    per_block: bool = False
    factors: FactorSpaceConfig = field(default_factory=FactorSpaceConfig)
    params: list[str] = field(default_factory=list)
    prefix: str = "student"

    def __post_init__(self) -> None:
        if isinstance(self.block, dict):  # from a plain container (Hydra's sweeper node)
            self.block = BlockSpaceConfig(**self.block)
        if isinstance(self.factors, dict):
            self.factors = FactorSpaceConfig(**self.factors)
        expressions = parse_params(self.params)
        self.params = [f"{k}={v}" for k, v in expressions.items()]
        if self.block is None and not self.params and not self.factors.entries():
            raise ValueError(
                "space: nothing to search; give space.block (architecture), space.factors and/or space.params"
            )
        self._check_embedding_widths()
        depth = self.num_blocks
        if isinstance(depth, bool) or not isinstance(depth, (int, str)):
            raise ValueError(f"space.num_blocks must be an int or a sweep expression, got {depth!r}")
        if isinstance(depth, int) and depth < 1:
            raise ValueError(f"space.num_blocks must be >= 1, got {depth}")
        if isinstance(depth, str):
            values = sweep_values(parse_expression("space.num_blocks", depth))
            if values is None or any(not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(
                    f"space.num_blocks={depth!r} must give positive integers: use e.g. range(2,7) or choice(4,6)"
                )
        for key in expressions:
            if key in {f"{self.prefix}.{n}" for n in self.factors.entries()}:
                raise ValueError(f"space.params: {key} is searched by space.factors already; keep one of the two")
            if self.block is not None and key.startswith(f"{self.prefix}."):
                raise ValueError(
                    f"space.params: {key} is part of the searched architecture; set space.num_blocks / "
                    f"space.block / space.per_block instead (or space.block=null to search {key} alone)"
                )

    def _check_embedding_widths(self) -> None:
        """A factorised embedding is no wider than the first block: refuse choices some proposal would break."""
        widths = [w for w in (self.factors.embedding_size or []) if w is not None]
        if widths and self.block is not None and max(widths) > min(self.block.hidden_size):
            raise ValueError(
                f"space.factors.embedding_size={self.factors.embedding_size} has a width above the smallest searched "
                f"hidden size {min(self.block.hidden_size)}; a factorised embedding is narrower than the first "
                f"block: use values <= {min(self.block.hidden_size)} (or null)"
            )

    def max_depth(self) -> int:
        """The deepest student the space proposes."""
        if isinstance(self.num_blocks, int):
            return self.num_blocks
        return max(sweep_values(parse_expression("space.num_blocks", self.num_blocks)))

    def parameters(self) -> dict[str, Parameter]:
        """Returns the nevergrad entries: ``num_blocks``, the block factors, then ``params`` (this order)."""
        entries: dict[str, Parameter] = {}
        if self.block is not None:
            entries["num_blocks"] = parse_expression("space.num_blocks", self.num_blocks)
            copies = self.max_depth() if self.per_block else 1
            for i in range(copies):
                for name in BLOCK_FACTORS:
                    key = f"block{i}.{name}" if self.per_block else f"block.{name}"
                    entries[key] = Parameter(options=list(getattr(self.block, name)))
        for name, options in self.factors.entries().items():
            entries[f"factors.{name}"] = Parameter(options=options)
        for key, expr in parse_params(self.params).items():
            entries[key] = parse_expression(f"space.params.{key}", expr)
        return entries

    def assignments(self, value: dict[str, Any]) -> dict[str, Any]:
        """A candidate's value -> {dotted config key: value}: the student's depth and blocks, then the params."""
        out: dict[str, Any] = {}
        if self.block is not None:
            depth = int(value["num_blocks"])
            out[f"{self.prefix}.num_blocks"] = depth
            if self.per_block:
                out[f"{self.prefix}.block"] = None
                out[f"{self.prefix}.blocks"] = [
                    {name: int(value[f"block{i}.{name}"]) for name in BLOCK_FACTORS} for i in range(depth)
                ]
            else:
                out[f"{self.prefix}.block"] = {name: int(value[f"block.{name}"]) for name in BLOCK_FACTORS}
                out[f"{self.prefix}.blocks"] = None
        for name in self.factors.entries():
            out[f"{self.prefix}.{name}"] = plain(value[f"factors.{name}"])
        for key in parse_params(self.params):
            out[key] = plain(value[key])
        return out

    def describe(self, assigned: dict[str, Any]) -> str:
        """A short human name: the student's name (``Model_..._x4`` or per-block) plus any other parameter."""
        parts = []
        factors = [f"{n}={format_value(assigned[key])}" for n in self.factors.entries()
                   if (key := f"{self.prefix}.{n}") in assigned]  # a baseline keeps the student group's  # fmt: skip
        if self.block is not None:
            depth = assigned[f"{self.prefix}.num_blocks"]
            blocks = assigned[f"{self.prefix}.blocks"] or [assigned[f"{self.prefix}.block"]] * depth
            try:
                parts.append(student_name([BlockSpec(**b) for b in blocks]))
            except ValueError:  # an impossible block (heads do not divide it): named raw, rejected by the pre-check
                parts.append("-".join("Model_" + "_".join(str(b[f]) for f in BLOCK_FACTORS) for b in blocks))
        parts += factors
        parts += [f"{k}={format_value(v)}" for k, v in assigned.items() if not k.startswith(f"{self.prefix}.")]
        return " ".join(parts)
