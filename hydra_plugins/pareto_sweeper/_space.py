"""The search space protocol and the generic space: any config key with a Hydra sweep expression.

A candidate is turned into *assignments*, ``{dotted config key: value}``, which the Hydra sweeper
formats as command-line overrides and an in-process caller applies to its config directly: both paths
run exactly the same trial. Parameters use Hydra's own sweep syntax (``choice(a,b)``, ``range(2,7)``,
``interval(0.1,0.5)``, ``tag(log, interval(1e-5,1e-3))``, ``tag(int, interval(100, 1000))``), as the Hydra
sweepers users already know do.

A project plugs its own space in through config (``space: {_target_: my.Space, ...}``): any object with
``parameters()``, ``assignments(value)`` and ``describe(assigned)`` (``SearchSpace``). Module-level imports
stay light: Hydra imports every plugin module at start-up.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class Parameter:
    """One searched value: a finite list of options, or a numeric interval (optionally log-scaled)."""

    options: list | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False


@runtime_checkable
class SearchSpace(Protocol):
    """What the search loop needs of a space. ``parameters()``'s order is the optimiser's: keep it stable."""

    def parameters(self) -> dict[str, Parameter]:
        """Returns {entry name: Parameter}, in a fixed order (the nevergrad parametrization follows it)."""
        ...

    def assignments(self, value: dict[str, Any]) -> dict[str, Any]:
        """Returns {dotted config key: value} for one candidate value ({entry name: value})."""
        ...

    def describe(self, assigned: dict[str, Any]) -> str:
        """Returns a short human name for an assignment (the ledger's ``name``)."""
        ...


def parse_params(params: Any) -> dict[str, str]:
    """``["key=expression", ...]`` (or ``{key: expression}``) -> {key: expression}, each parsed once.

    Raises:
        ValueError: an entry that is not ``key=expression``, or an expression Hydra cannot parse.
    """
    entries = [f"{k}={v}" for k, v in params.items()] if isinstance(params, Mapping) else list(params or [])
    for entry in entries:
        if not isinstance(entry, str) or "=" not in entry:
            raise ValueError(f"space.params entries are 'key=expression' strings, got {entry!r}")
    expressions = dict(entry.split("=", 1) for entry in entries)
    for key, expr in expressions.items():
        parse_expression(f"space.params.{key}", expr)
    return expressions


def plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (what JSON and Hydra's grammar take)."""
    return value.item() if hasattr(value, "item") else value


@dataclass
class ParamSpace:
    """The generic space: each ``params`` entry is a config key with a Hydra sweep expression, e.g.
    ``["recipe.optimizer.lr=tag(log, interval(1e-4, 3e-3))", "recipe.losses.alpha=choice(0.3, 0.5)"]``
    (a list, not a mapping: OmegaConf would read the dots of a mapping's keys as nesting).

    Raises:
        ValueError: no parameter, or an entry that is not a ``key=expression`` Hydra sweep.
    """

    _target_: str = "hydra_plugins.pareto_sweeper.ParamSpace"
    params: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        expressions = parse_params(self.params)
        self.params = [f"{k}={v}" for k, v in expressions.items()]
        if not self.params:
            raise ValueError(
                "space: nothing to search; give hydra.sweeper.space.params, sweep expressions on the command "
                "line (key='choice(a,b)'), or a space of your own (hydra.sweeper.space._target_)"
            )

    def parameters(self) -> dict[str, Parameter]:
        return {k: parse_expression(f"space.params.{k}", e) for k, e in parse_params(self.params).items()}

    def assignments(self, value: dict[str, Any]) -> dict[str, Any]:
        return {key: plain(value[key]) for key in parse_params(self.params)}

    def describe(self, assigned: dict[str, Any]) -> str:
        return " ".join(f"{k}={format_value(v)}" for k, v in assigned.items())


def build_space(spec: Any) -> SearchSpace:
    """A space object from config: a ``SearchSpace`` as is, or a mapping with ``_target_`` instantiated.

    Raises:
        ValueError: a mapping without ``_target_``, or something that is not a space.
    """
    if isinstance(spec, SearchSpace):
        return spec
    if isinstance(spec, Mapping) or hasattr(spec, "keys"):
        spec = dict(spec)
        if "_target_" not in spec:
            raise ValueError(
                f"search space {spec} needs a _target_: the space class (e.g. hydra_plugins.pareto_sweeper.ParamSpace)"
            )
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate

        try:
            spec = instantiate(spec, _convert_="all")
        except InstantiationException as err:
            if isinstance(err.__cause__, ValueError):
                raise err.__cause__ from None  # the space's own message, naming the setting, not Hydra's wrapper
            raise
    if not isinstance(spec, SearchSpace):
        raise ValueError(f"{type(spec).__name__} is not a search space: it needs parameters, assignments, describe")
    return spec


def space_identity(space: SearchSpace) -> Any:
    """What identifies a space in search.json: its settings (a dataclass's fields), not its class path.

    Sweep dirs written before spaces became swappable stored the fields alone, so ``_target_`` stays out."""
    if dataclasses.is_dataclass(space):
        d = dataclasses.asdict(space)
        d.pop("_target_", None)
        return d
    return repr(space)


def parse_expression(where: str, expr: Any) -> Parameter:
    """A Hydra sweep expression (``choice``, ``range``, ``interval``, ``tag(log, ...)``) -> Parameter.

    Args:
        where: the setting's name, for error messages.
        expr: the expression; a non-string is a fixed value.
    Raises:
        ValueError: not a sweep expression, an empty interval, or a log interval reaching 0.
    """
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
    """The finite options of a parameter, or None for an interval."""
    return None if param.options is None else list(param.options)


def to_nevergrad(param: Parameter):
    """The nevergrad parameter (or a constant, for a single option) searching ``param``."""
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


def parametrization(space: SearchSpace, seed: int):
    """The nevergrad parametrization: a flat ng.p.Dict (in ``space.parameters()``'s order) whose value is
    JSON (what the ledger stores), its random state seeded with ``seed``."""
    import nevergrad as ng
    import numpy as np

    param = ng.p.Dict(**{key: to_nevergrad(p) for key, p in space.parameters().items()})
    param.random_state = np.random.RandomState(seed)
    return param


def to_overrides(assigned: dict[str, Any]) -> list[str]:
    """Assignments as Hydra command-line overrides (``key=value``, dicts and lists in Hydra's grammar)."""
    return [f"{key}={format_value(value)}" for key, value in assigned.items()]


def format_value(value: Any) -> str:
    """One value in Hydra's override grammar (strings always quoted, so they stay strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        # Always quoted: unquoted, Hydra would read "1" as an int, "null" as None, "a b" as an error.
        # Hydra's quoted strings: a backslash run is literal unless a quote (or the closing quote) follows it.
        escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value).replace("'", "\\'")
        return "'" + escaped + "'"
    return str(value)


def architecture_key(assigned: dict[str, Any]) -> str:
    """Identity of a proposal: equal keys run the same trial with the same settings (never twice)."""
    return json.dumps(assigned, sort_keys=True, default=str)
