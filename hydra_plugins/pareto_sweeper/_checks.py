"""Mistakes a search can see before it trains anything, and outcomes it must not report as success.

- ``check_metric_names``: objectives and constraints must name metrics the trials report (the project
  declares them: ``hydra.sweeper.metric_names``, or an in-process caller's own list), so a misspelt name
  fails before the first trial instead of after it trained;
- ``check_parallel_latency``: a latency timed on a machine where another trial trains is not the student's
  latency (1,097 ms measured against 16.9 ms alone), so parallel local trials with a latency metric are refused;
- ``retry_failed_trials``: on resume, failed trials count as spent budget unless the user asks to retry them;
- ``raise_if_all_failed``: a search where no trial succeeded is an error, with the most common reason;
- ``warn_if_stopped_early``: proposals ran out before the budget was trained;
- ``warn_if_latency_floor_by_seeds``: a timed objective whose floor seed repeats would measure (a latency cache
  returns the same number for the same student: a floor of 0).
"""

from __future__ import annotations

import difflib
import logging
from collections import Counter
from collections.abc import Collection
from typing import Any

log = logging.getLogger(__name__)

# Metrics whose value depends on what else runs on the machine while they are measured.
TIMED = ("latency",)


def check_metric_names(cfg: Any, names: Collection[str], source: str) -> None:
    """Every objective, objective's noise metric and constraint of ``cfg`` (a SearchConfig) names one of ``names``.

    Args:
        cfg: the search settings.
        names: the metrics a trial reports (``source`` says who declared them, for the message).
        source: e.g. "hydra.sweeper.metric_names=search.metrics:distill_metric_names".
    Raises:
        ValueError: an unknown name, with the closest known ones.
    """
    known = set(names)
    wrong = []
    named = [("objectives", o.name) for o in cfg.objectives]
    named += [(f"objectives ({o.name}).noise", o.noise) for o in cfg.objectives if isinstance(o.noise, str)]
    named += [("constraints", c.name) for c in cfg.constraints]
    for kind, name in named:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            wrong.append(f"{cfg.key}.{kind}: {name!r} is not a metric the trials report{hint}")
    if wrong:
        raise ValueError(
            "\n".join(wrong) + f"\nthe trials report ({source}): {', '.join(sorted(known))}"
        )


def timed_metrics(cfg: Any) -> list[str]:
    """Objectives and constraints measured by timing (their value depends on the machine's load)."""
    return [e.name for e in [*cfg.objectives, *cfg.constraints] if any(w in e.name.lower() for w in TIMED)]


def check_parallel_latency(cfg: Any, launcher: str, local: bool, allow: bool) -> None:
    """Refuse parallel trials on this machine when a latency is an objective or constraint.

    One trial's latency would be timed while another trains on the same CPU/GPU. A machine-wide lock around
    the measurements would not be enough (the *other* trial's training is what slows the timing), and one
    around training too would serialise the trials: refusing is the honest choice.

    Raises:
        ValueError: ``cfg.num_workers > 1`` on a local launcher with a timed metric, unless ``allow``.
    """
    timed = timed_metrics(cfg)
    if cfg.num_workers > 1 and local and timed and not allow:
        raise ValueError(
            f"{cfg.key}.num_workers={cfg.num_workers} with {launcher} runs trials side by side on this machine, "
            f"so {timed} would be timed while another trial trains (the numbers are meaningless). Use "
            f"{cfg.key}.num_workers=1, a launcher that gives each trial its own machine (hydra/launcher="
            f"submitit_slurm), or accept the noise with {cfg.key}.allow_parallel_latency=true"
        )


def retry_failed_trials(records: list, retry: bool, key: str) -> tuple[list, list]:
    """Split a resumed ledger into the records to keep and the failed trials to run again.

    Returns:
        (records kept, failed records to re-run: every failed trial when ``retry``, else none).
    """
    failed = [r for r in records if r.status == "failed"]
    if not failed:
        return records, []
    if not retry:
        log.warning("%d failed trial(s) in the ledger count as spent budget; %s.retry_failed=true runs them again",
                    len(failed), key)  # fmt: skip
        return records, []
    log.warning("retrying %d failed trial(s) (%s.retry_failed=true): %s", len(failed), key,
                ", ".join(str(r.trial) for r in failed))  # fmt: skip
    return [r for r in records if r.status != "failed"], failed


def raise_if_all_failed(records: list, key: str, sweep_dir: Any) -> None:
    """A search whose every trial failed is an error, not a result (a baseline that ran does not change that;
    it counts only when no trial ran at all).

    Raises:
        RuntimeError: naming the most common error and how to retry once it is fixed.
    """
    ran = [r for r in records if r.status in ("ok", "failed", "unmeasured")]
    ran = [r for r in ran if r.kind == "trial"] or ran
    if not ran or any(r.status != "failed" for r in ran):
        return
    errors = Counter((r.error or "unknown error").splitlines()[0] for r in ran)
    (top, count), others = errors.most_common(1)[0], len(errors) - 1
    raise RuntimeError(
        f"all {len(ran)} trials failed ({sweep_dir}/ledger.jsonl has each error); {count} of them with: {top}"
        + (f" ({others} other error(s))" if others else "")
        + f". Fix it, then re-run with the same sweep dir and {key}.retry_failed=true to run them again"
    )


def warn_if_stopped_early(proposals: int, cfg: Any, trained: int, re_proposals: int, records: Collection) -> None:
    """Log why a search stopped short of ``cfg.budget`` trained trials when its proposals ran out."""
    if proposals >= cfg.proposal_limit and trained < cfg.budget:
        log.warning(
            "search stopped after %d proposals with %d of %d trials trained: %d proposals repeated candidates "
            "already evaluated and %d were infeasible (raise max_proposals, relax the constraints, or use an "
            "optimizer that keeps exploring)",
            proposals, trained, cfg.budget, re_proposals, sum(r.status == "infeasible" for r in records),
        )  # fmt: skip


def warn_if_latency_floor_by_seeds(cfg: Any) -> None:
    """Warn when a timed objective's noise floor is left to seed repeats: a latency cache (or any deterministic
    timing of the same student) returns the same number for a repeat, so the floor would be 0."""
    timed = [o.name for o in cfg.objectives if o.noise is None and any(w in o.name.lower() for w in TIMED)]
    if timed and cfg.repeats:
        log.warning(
            "%s.objectives %s: noise floor measured by seed repeats, but a repeat of the same student may reuse a "
            "cached timing (a floor of 0); give noise: <the metric with the measurement's own spread> (e.g. "
            "latency/p50_spread with noise_relative: true) or a number", cfg.key, timed,
        )  # fmt: skip
