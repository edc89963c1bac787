"""The search space: AutoDistill's Table 1 block factors, the block count, and any extra parameter.

A candidate is turned into *assignments*, ``{dotted config key: value}``, which the Hydra sweeper
formats as command-line overrides and the in-process pipeline applies to its config directly: both
paths train exactly the same student. Parameters use Hydra's own sweep syntax (``choice(a,b)``,
``range(2,7)``, ``interval(0.1,0.5)``, ``tag(log, interval(1e-5,1e-3))``, ``tag(int, interval(100, 1000))``), as the Hydra sweepers
users already know do. Module-level imports stay light: Hydra imports every plugin module at start-up.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# Table 1 of AutoDistill: 4 x 4 x 4 x 3 x 3 = 576 block shapes.
TABLE1 = {
    "hidden_size": [128, 256, 384, 512],
    "bottleneck_size": [64, 96, 128, 160],
    "num_heads": [1, 2, 4, 8],
    "intermediate_size": [384, 512, 640],
    "num_ffn": [2, 4, 6],
}
BLOCK_FACTORS = tuple(TABLE1)


@dataclass
class BlockSpaceConfig:
    """The values each factor of a block may take (default: Table 1)."""

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
class SpaceConfig:
    """What the search varies.

    ``block``: the Table-1 factors (null: keep the student fixed, search only ``params``).
    ``num_blocks``: an int (fixed depth) or a sweep expression such as ``range(2,7)`` or ``choice(4,6)``.
    ``per_block``: one independent set of factors per block (a conditional space: blocks past the
    proposed depth are unused) instead of n identical blocks.
    ``params``: any other config key with a Hydra sweep expression, as ``key=expression`` strings, e.g.
    ``["recipe.optimizer.lr=tag(log, interval(1e-4, 3e-3))", "recipe.losses.alpha=choice(0.3, 0.5)"]``
    (a list, not a mapping: OmegaConf would read the dots of a mapping's keys as nesting).
    """

    block: BlockSpaceConfig | None = field(default_factory=BlockSpaceConfig)
    num_blocks: Any = 4
    per_block: bool = False
    params: list[str] = field(default_factory=list)
    prefix: str = "student"  # where the architecture lives in the trial's config

    def __post_init__(self) -> None:
        if isinstance(self.block, dict):  # from a plain container (Hydra's sweeper node)
            self.block = BlockSpaceConfig(**self.block)
        if isinstance(self.params, dict):  # from Python: {key: expression}
            self.params = [f"{k}={v}" for k, v in self.params.items()]
        self.params = list(self.params or [])
        for entry in self.params:
            if not isinstance(entry, str) or "=" not in entry:
                raise ValueError(f"space.params entries are 'key=expression' strings, got {entry!r}")
        if self.block is None and not self.params:
            raise ValueError("space: nothing to search; give space.block (architecture) and/or space.params")
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
        for key, expr in self.param_expressions.items():
            parse_expression(f"space.params.{key}", expr)
            if self.block is not None and key.startswith(f"{self.prefix}."):
                raise ValueError(
                    f"space.params: {key} is part of the searched architecture; set space.num_blocks / "
                    f"space.block / space.per_block instead (or space.block=null to search {key} alone)"
                )

    @property
    def param_expressions(self) -> dict[str, str]:
        return dict(entry.split("=", 1) for entry in self.params)


@dataclass
class Parameter:
    """One searched value: a finite list of options, or a numeric interval (optionally log-scaled)."""

    options: list | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False


def parse_expression(where: str, expr: Any) -> Parameter:
    """A Hydra sweep expression (``choice``, ``range``, ``interval``, ``tag(log, ...)``) -> Parameter."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    if not isinstance(expr, str):
        return Parameter(options=[expr])
    try:
        override = OverridesParser.create().parse_override(f"x={expr}")
    except Exception as err:  # noqa: BLE001 - Hydra's grammar errors are several classes
        raise ValueError(
            f"{where}={expr!r} is not a Hydra sweep expression; use choice(a,b), range(lo,hi), "
            f"interval(lo,hi) or tag(log, interval(lo,hi)) ({err})"
        ) from err
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return Parameter(options=list(value.list))
    if isinstance(value, RangeSweep):
        return Parameter(options=list(override.sweep_iterator()))
    if isinstance(value, IntervalSweep):
        if value.start >= value.end:
            raise ValueError(f"{where}={expr!r}: interval start must be < end")
        log = "log" in value.tags
        if log and value.start <= 0:
            raise ValueError(f"{where}={expr!r}: a log interval needs a positive start")
        # Hydra makes interval ends floats; tag(int, interval(a, b)) asks for whole numbers.
        integer = "int" in value.tags
        return Parameter(low=value.start, high=value.end, log=log, integer=integer)
    return Parameter(options=[value])  # a plain value: fixed


def sweep_values(param: Parameter) -> list | None:
    return None if param.options is None else list(param.options)


def to_nevergrad(param: Parameter):
    import nevergrad as ng

    if param.options is not None:
        # Ordered numbers keep their order (neighbours are similar); anything else is unordered.
        ordered = len(param.options) > 2 and all(isinstance(v, (int, float)) for v in param.options)
        if len(param.options) == 1:
            return param.options[0]  # a constant inside ng.p.Dict
        return ng.p.TransitionChoice(param.options) if ordered else ng.p.Choice(param.options)
    if param.log:
        p = ng.p.Log(lower=param.low, upper=param.high)
    else:
        p = ng.p.Scalar(lower=param.low, upper=param.high)
    return p.set_integer_casting() if param.integer else p


def max_depth(space: SpaceConfig) -> int:
    if isinstance(space.num_blocks, int):
        return space.num_blocks
    return max(sweep_values(parse_expression("space.num_blocks", space.num_blocks)))


def parametrization(space: SpaceConfig, seed: int):
    """The nevergrad parametrization: a flat ng.p.Dict whose value is JSON (what the ledger stores)."""
    import nevergrad as ng
    import numpy as np

    entries: dict[str, Any] = {}
    if space.block is not None:
        entries["num_blocks"] = to_nevergrad(parse_expression("space.num_blocks", space.num_blocks))
        copies = max_depth(space) if space.per_block else 1
        for i in range(copies):
            for name in BLOCK_FACTORS:
                key = f"block{i}.{name}" if space.per_block else f"block.{name}"
                entries[key] = to_nevergrad(Parameter(options=list(getattr(space.block, name))))
    for key, expr in space.param_expressions.items():
        entries[key] = to_nevergrad(parse_expression(f"space.params.{key}", expr))
    param = ng.p.Dict(**entries)
    param.random_state = np.random.RandomState(seed)
    return param


def assignments(space: SpaceConfig, value: dict[str, Any]) -> dict[str, Any]:
    """A candidate's value -> {dotted config key: value}: the student's depth and blocks, then the params."""
    out: dict[str, Any] = {}
    if space.block is not None:
        depth = int(value["num_blocks"])
        out[f"{space.prefix}.num_blocks"] = depth
        if space.per_block:
            out[f"{space.prefix}.block"] = None
            out[f"{space.prefix}.blocks"] = [
                {name: int(value[f"block{i}.{name}"]) for name in BLOCK_FACTORS} for i in range(depth)
            ]
        else:
            out[f"{space.prefix}.block"] = {name: int(value[f"block.{name}"]) for name in BLOCK_FACTORS}
            out[f"{space.prefix}.blocks"] = None
    for key in space.param_expressions:
        v = value[key]
        out[key] = v.item() if hasattr(v, "item") else v
    return out


def to_overrides(assigned: dict[str, Any]) -> list[str]:
    """Assignments as Hydra command-line overrides (``key=value``, dicts and lists in Hydra's grammar)."""
    return [f"{key}={_format(value)}" for key, value in assigned.items()]


def _format(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_format(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        # Always quoted: unquoted, Hydra would read "1" as an int, "null" as None, "a b" as an error.
        # Hydra's quoted strings: a backslash run is literal unless a quote (or the closing quote) follows it.
        escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value).replace("'", "\\'")
        return "'" + escaped + "'"
    return str(value)


def architecture_key(assigned: dict[str, Any]) -> str:
    """Identity of a proposal: equal keys train the same student with the same settings (never twice)."""
    return json.dumps(assigned, sort_keys=True, default=str)


def describe(space: SpaceConfig, assigned: dict[str, Any]) -> str:
    """A short human name: the student's name (Model_..._x4 or per-block) plus any other parameter."""
    parts = []
    if space.block is not None:
        depth = assigned[f"{space.prefix}.num_blocks"]
        blocks = assigned[f"{space.prefix}.blocks"] or [assigned[f"{space.prefix}.block"]] * depth
        names = ["Model_" + "_".join(str(b[f]) for f in BLOCK_FACTORS) for b in blocks]
        parts.append(f"{names[0]}x{depth}" if len(set(names)) == 1 else "-".join(names))
    parts += [f"{k}={_format(v)}" for k, v in assigned.items() if not k.startswith(f"{space.prefix}.")]
    return " ".join(parts)
