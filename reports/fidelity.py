"""Flash fidelity (AutoDistill §4.7): how well each flash-distillation metric ranks students as (a) the same metric
after regular distillation and (b) the downstream score after fine-tuning do. The analysis and the files of
``benchmarks/fidelity.py`` (which trains the students): ``fidelity.md``, ``fidelity.csv``, ``fidelity.png``.

Every rank statistic is oriented "higher = better": a loss (lower is better) is negated first, so a positive
Kendall τ / Spearman ρ always means the flash metric agrees with the target. The flash value of a student is its
mean over the seeds; the seed spread is the mean over students of the mean absolute difference between two
seeds' values, also given relative to the range of the seed means across students (0.5 = seed noise half as
large as the whole spread of students: the metric cannot rank them).
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from core.files import write_text_atomic
from reports.degenerate import FOOTNOTE, degenerate
from reports.sweep_table import markdown_table, measured_latency, number, save_figure, write_csv

TARGET = "val/score"  # fine-tuning's task score (the mean of the task's official metrics, x 100)


@dataclass(frozen=True)
class FlashMetric:
    """A candidate flash metric: its metrics.json name, whether higher is better, and whether it is a naive
    baseline known before training (then it is the same after flash and regular distillation)."""

    name: str
    higher_is_better: bool
    naive: bool = False


CANDIDATES = (
    FlashMetric("probe/acc", True),
    FlashMetric("probe/score", True),
    FlashMetric("val/mlm_acc", True),
    FlashMetric("val/mlm", False),
    FlashMetric("val/loss", False),
    FlashMetric("val/mha", False),
    FlashMetric("val/fm", False),
    FlashMetric("val/mha_last", False),
    FlashMetric("val/fm_last", False),
    FlashMetric("val/nsp_acc", True),
    FlashMetric("val/nsp", False),
    FlashMetric("params", True, naive=True),
    FlashMetric("flops_per_seq@128", True, naive=True),
)


@dataclass
class StudentResult:
    """One student of the study: its flash runs (one metrics dict per seed), its regular run and its fine-tunings
    (one metrics dict per fine-tuning seed)."""

    name: str
    flash: list[dict[str, float]]
    regular: dict[str, float]
    downstream: list[dict[str, float]]

    def flash_values(self, metric: str) -> list[float]:
        return [m[metric] for m in self.flash if _finite(m.get(metric))]

    def scores(self, target: str = TARGET) -> list[float]:
        """The fine-tuning seeds' ``target`` values, NaN for a degenerate classifier (one class: ranks nothing)."""
        return [math.nan if degenerate(m) else m.get(target, math.nan) for m in self.downstream]

    def score(self, target: str = TARGET) -> float:
        """The mean ``target`` over the fine-tuning seeds that are not degenerate; NaN when every seed is."""
        return _mean([v for v in self.scores(target) if _finite(v)])

    def degenerate(self) -> str:
        """Why every fine-tuning seed is degenerate (reports/degenerate.py), or "" when one is not."""
        reasons = [degenerate(m) for m in self.downstream]
        return reasons[0] if reasons and all(reasons) else ""


def rank_agreement(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """Kendall τ-b, Spearman ρ and τ's two-sided p-value of paired values (pairs with a NaN dropped).

    Returns:
        (tau, rho, p); NaN where fewer than 3 pairs remain or one side is constant.
    """
    from scipy import stats  # here: only the study computes them

    pairs = [(a, b) for a, b in zip(x, y) if _finite(a) and _finite(b)]
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return math.nan, math.nan, math.nan
    a, b = zip(*pairs)
    tau = stats.kendalltau(a, b)
    return float(tau.statistic), float(stats.spearmanr(a, b).statistic), float(tau.pvalue)


def seed_spread(values: list[list[float]]) -> float:
    """Mean over students of the mean |seed i - seed j| over seed pairs (|seed0 - seed1| with two seeds).

    Args:
        values: per student, the metric's value per seed (students with fewer than two seeds are skipped).
    """
    per_student = [statistics.mean(abs(a - b) for a, b in itertools.combinations(v, 2)) for v in values if len(v) > 1]
    return statistics.mean(per_student) if per_student else math.nan


def fidelity_rows(results: list[StudentResult], candidates=CANDIDATES, target: str = TARGET) -> list[dict]:
    """One row per candidate flash metric (those some flash run reported), sorted by τ vs downstream (best first),
    then by τ vs regular.

    Row keys: metric, better (higher / lower), n_down (students in the downstream comparison: those with the metric
    and a non-degenerate fine-tuned classifier), tau_down / rho_down / p_down (seed-mean flash metric vs
    the downstream ``target``), tau_reg / rho_reg (vs the same metric after regular distillation; NaN for naive
    ones), tau_reg_down (the regular metric vs downstream), tau_seeds (seed 0's ranking vs seed 1's), spread
    (``seed_spread``), spread_rel (spread / range of the seed means across students).
    """
    # A degenerate classifier (one class, chance: reports/degenerate.py) has a score that ranks nothing: left out.
    downstream = [r.score(target) for r in results]
    rows = []
    for c in candidates:
        per_seed = [r.flash_values(c.name) for r in results]
        if not any(per_seed):
            continue
        sign = 1.0 if c.higher_is_better else -1.0
        flash = [sign * statistics.mean(v) if v else math.nan for v in per_seed]
        regular = [sign * r.regular.get(c.name, math.nan) for r in results]
        tau_down, rho_down, p_down = rank_agreement(flash, downstream)
        tau_reg, rho_reg, _ = (math.nan,) * 3 if c.naive else rank_agreement(flash, regular)
        two = [v for v in per_seed if len(v) > 1]
        spread = seed_spread(per_seed)
        finite = [f for f in flash if _finite(f)]
        width = max(finite) - min(finite) if len(finite) > 1 else math.nan
        rows.append({
            "metric": c.name, "better": "higher" if c.higher_is_better else "lower",
            "n_down": sum(_finite(f) and _finite(d) for f, d in zip(flash, downstream)),
            "tau_down": tau_down, "rho_down": rho_down, "p_down": p_down, "tau_reg": tau_reg, "rho_reg": rho_reg,
            "tau_reg_down": math.nan if c.naive else rank_agreement(regular, downstream)[0],
            "tau_seeds": rank_agreement([v[0] for v in two], [v[1] for v in two])[0] if len(two) > 2 else math.nan,
            "spread": spread, "spread_rel": spread / width if width and width > 0 else math.nan,
        })  # fmt: skip
    best_first = lambda v: -v if _finite(v) else math.inf  # noqa: E731
    return sorted(rows, key=lambda r: (best_first(r["tau_down"]), best_first(r["tau_reg"])))


def downstream_ceiling(results: list[StudentResult], target: str = TARGET) -> tuple[float, float, int]:
    """How well two fine-tuning seeds of the same students agree: the ceiling of any flash metric's τ against one
    seed's score.

    Returns:
        (τ-b of fine-tuning seed 0's scores vs seed 1's, mean |seed i - seed j| of the score over students and seed
        pairs in points, students with two or more non-degenerate seeds); NaN where fewer than 3 such students.
    """
    both = [v for v in ([x for x in r.scores(target) if _finite(x)] for r in results) if len(v) > 1]
    if len(both) < 3:
        return math.nan, math.nan, len(both)
    return rank_agreement([v[0] for v in both], [v[1] for v in both])[0], seed_spread(both), len(both)


def csv_rows(results: list[StudentResult], candidates=CANDIDATES) -> list[dict]:
    """Per student x seed: the flash values of every candidate, the regular values, the downstream score."""
    rows = []
    for r in results:
        for seed, m in enumerate(r.flash):
            row = {"student": r.name, "seed": seed, "latency_p50_ms": measured_latency(m)}
            row.update({f"flash/{c.name}": m.get(c.name) for c in candidates})
            row.update({f"regular/{c.name}": r.regular.get(c.name) for c in candidates if not c.naive})
            row["downstream/val/score"] = r.score()  # the fine-tuning seeds' mean (degenerate ones left out)
            for k, d in enumerate(r.downstream):
                row.update({f"downstream/seed{k}/{m}": d.get(m) for m in ("val/score", "val/acc", "val/f1")})
            rows.append(row)
    return rows


def markdown(rows: list[dict], results: list[StudentResult], title: str) -> str:
    """fidelity.md: the metric table (sorted by τ vs downstream), then the students."""
    f = lambda v, fmt=".2f": number(v, fmt)  # noqa: E731
    metric_table = markdown_table(
        ["flash metric", "better", "τ vs downstream", "ρ vs downstream", "p (τ)", "n", "τ vs regular", "ρ vs regular",
         "τ regular vs downstream", "τ seed 0 vs 1", "seed spread", "spread / range"],
        [[f"`{r['metric']}`", r["better"], f(r["tau_down"]), f(r["rho_down"]), f(r["p_down"], ".2g"), str(r["n_down"]), f(r["tau_reg"]),
          f(r["rho_reg"]), f(r["tau_reg_down"]), f(r["tau_seeds"]), f(r["spread"], ".3g"), f(r["spread_rel"])]
         for r in rows], left=2,
    )  # fmt: skip
    students = sorted(results, key=lambda r: -r.score() if _finite(r.score()) else math.inf)
    student_table = markdown_table(
        ["student", "params (M)", "GFLOPs", "p50 (ms)*", "flash probe/acc", "flash val/mlm_acc", "regular val/mlm_acc",
         "downstream score"],
        [[s.name, f(s.flash[0].get("params", math.nan) / 1e6, ".1f"),
          f(s.flash[0].get("flops_per_seq@128", math.nan) / 1e9, ".2f"), f(measured_latency(s.flash[0])),
          f(_mean(s.flash_values("probe/acc")), ".3f"), f(_mean(s.flash_values("val/mlm_acc")), ".4f"),
          f(s.regular.get("val/mlm_acc"), ".4f"), _score_cell(s)] for s in students],
    )  # fmt: skip
    flagged = [s for s in students if s.degenerate()]
    seeds = max((len(s.downstream) for s in students), default=1)
    tau, spread, n = downstream_ceiling(results)
    ceiling = [] if seeds < 2 else [
        f"Fine-tuning seeds: {seeds}; the downstream score is their mean. Fine-tuning seed 0 vs seed 1 over {n} "
        f"students: τ {number(tau, '.2f')}, score spread {number(spread, '.2f')} points. That τ is the ceiling for "
        "any metric against one seed's score: ranks closer than the fine-tuning noise are a coin toss.", ""]
    return "\n".join([
        f"# {title}", "",
        f"{len(results)} students, {len(results[0].flash) if results else 0} flash seeds each. τ, ρ: Kendall τ-b and "
        "Spearman ρ over students, each metric oriented higher = better (losses negated), so positive = agreement. "
        "Flash values are seed means. Downstream = fine-tuning's dev score (mean of the task's metrics x 100). "
        "Seed spread: mean |seed0 − seed1|; / range: over the range of seed means across students. n: students in the "
        "downstream columns (degenerate fine-tuned classifiers, ⚠ below, are left out: their score ranks nothing); "
        "τ vs regular and the seed columns use every student.", "", *ceiling,
        *metric_table, "", "## Students", "", *student_table, "",
        "\\* measured latency (bs1 x 128) on the machine the study ran on; on a shared CPU only the spread of the "
        "students means anything.", *(["", f"{len(flagged)} of {len(students)} fine-tuned students are degenerate "
        "(⚠) and left out of the downstream columns.", "",
        FOOTNOTE] if flagged else []), "",
        "![flash metric vs downstream score](fidelity.png)", "",
    ])  # fmt: skip


def plot(rows: list[dict], results: list[StudentResult], path: Path, top: int = 6) -> None:
    """One panel per top metric by τ vs downstream: seed-mean flash value (x, error bar = the seeds' min..max) against
    the downstream score (y; degenerate classifiers hollow and grey: left out of τ), to ``path`` (PNG). Where no
    downstream τ exists (every classifier degenerate), the panels show the metric after regular distillation (y) for
    the top metrics by τ vs regular instead."""
    from matplotlib.figure import Figure  # here, not at import: only the study plots

    vs_down = any(_finite(r["tau_down"]) for r in rows)
    key, rho_key = ("tau_down", "rho_down") if vs_down else ("tau_reg", "rho_reg")
    shown = sorted((r for r in rows if _finite(r[key])), key=lambda r: -r[key])[:top]
    cols = min(3, max(1, len(shown)))
    fig = Figure(figsize=(4.2 * cols, 3.6 * math.ceil(max(1, len(shown)) / cols)))
    axes = fig.subplots(math.ceil(max(1, len(shown)) / cols), cols, squeeze=False).ravel()
    for ax, row in zip(axes, shown):
        for s in results:
            v = s.flash_values(row["metric"])
            bad = vs_down and bool(s.degenerate())
            y = (s.downstream[0].get(TARGET) if bad else s.score()) if vs_down else s.regular.get(row["metric"])
            if not v or not _finite(y):
                continue
            m = statistics.mean(v)
            ax.errorbar([m], [y], xerr=[[m - min(v)], [max(v) - m]], fmt="o", ms=4, capsize=3,
                        mfc="none" if bad else None, color="0.6" if bad else None)  # fmt: skip
            ax.annotate(s.name.removeprefix("Model_"), (m, y), textcoords="offset points", xytext=(3, 3), fontsize=6)
        ax.set_title(f"{row['metric']}: τ {row[key]:.2f}, ρ {row[rho_key]:.2f}", fontsize=9)
        ax.set_xlabel(f"flash {row['metric']} ({row['better']} = better)", fontsize=8)
        ax.set_ylabel("downstream dev score" if vs_down else f"regular {row['metric']}", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def write_fidelity(out_dir: Path, results: list[StudentResult], title: str) -> tuple[str, list[dict]]:
    """fidelity.md, fidelity.csv and fidelity.png in ``out_dir``. Returns the markdown and the metric rows."""
    rows = fidelity_rows(results)
    text = markdown(rows, results, title)
    write_text_atomic(out_dir / "fidelity.md", text)
    write_csv(out_dir / "fidelity.csv", csv_rows(results))
    plot(rows, results, out_dir / "fidelity.png")
    return text, rows


def _score_cell(student: StudentResult) -> str:
    """The seed-mean score, each seed's in brackets when there are several, ⚠ when every seed is degenerate."""
    if why := student.degenerate():
        return number(student.downstream[0].get(TARGET), ".1f") + f" ⚠ {why}"
    per_seed = ", ".join(number(v, ".1f") if _finite(v) else "⚠" for v in student.scores())
    return number(student.score(), ".1f") + (f" ({per_seed})" if len(student.downstream) > 1 else "")


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else math.nan
