"""Recipe `latency`: measured serving latency of one student, a list, or a sample of a design space,
beside the proxies (params, FLOPs) and how well those proxies rank the measured latency.

    python run.py recipe=latency                                       # the configured student
    python run.py recipe=latency recipe.space=list 'recipe.models=[Model_512_128_4_512_4,Model_256_64_2_384_2]'
    python run.py recipe=latency recipe.space=table1 recipe.sample=50  # 50 of Table 1's 576 blocks
    python run.py recipe=latency recipe.space=table1 recipe.sample=null latency.device=cuda

Reads top to bottom: the configs to measure -> for each, a fresh model measured on latency.device
(cached per device) -> latency.csv (latency, params, FLOPs per config) -> Spearman and Kendall rank
correlations of params and FLOPs against measured latency (AutoDistill §3.4, Table 2: proxies mislead)
-> latency_vs_params.png -> metrics.json.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import random
from pathlib import Path

from rich.progress import Progress
from scipy import stats

from callbacks.latency import measure_latency
from core.files import write_text_atomic
from modules.student import StudentConfig
from modules.student_costs import flops, num_parameters
from modules.student_spec import BlockSpec, StudentSpec
from recipes.common import write_metrics
from recipes.config import RunConfig
from recipes.schemas import SPACES, LatencyRecipeConfig  # noqa: F401  (public here too)
from recipes.tracking import tracked
from reports.latency import plot_latency_vs_params
from search.space import TABLE1  # AutoDistill Table 1: 576 blocks

log = logging.getLogger(__name__)


def table1_blocks(sample: int | None, seed: int) -> list[BlockSpec]:
    """Table 1's 576 blocks, or ``sample`` of them drawn with ``seed``."""
    blocks = [BlockSpec(*values) for values in itertools.product(*TABLE1.values())]
    if sample is None or sample >= len(blocks):
        return blocks
    return random.Random(seed).sample(blocks, sample)


def configs_to_measure(cfg: RunConfig) -> list[StudentConfig]:
    """The student configs ``recipe.space`` names, on the configured vocabulary (default: MiniLM's 30522).

    Raises:
        ValueError: a malformed model name in ``recipe.models``.
    """
    recipe: LatencyRecipeConfig = cfg.recipe
    spec = cfg.student
    vocab = spec.vocab_size or 30522  # the offline teacher's WordPiece vocabulary
    if recipe.space == "student":
        return [StudentConfig.from_spec(spec, vocab_size=vocab)]
    blocks = (
        [BlockSpec.from_name(n) for n in recipe.models]
        if recipe.space == "list"
        else table1_blocks(recipe.sample, recipe.sample_seed)
    )
    base = {k: v for k, v in vars(spec).items() if k not in ("block", "blocks", "num_blocks")}
    return [
        StudentConfig.from_spec(StudentSpec(num_blocks=spec.num_blocks, block=b, **base), vocab_size=vocab)
        for b in blocks
    ]


def rank_correlations(rows: list[dict]) -> dict[str, float]:
    """Spearman and Kendall of each proxy against measured p50 latency, over the rows not ``contended`` (timed
    while other processes kept the CPU busy, even after the retries: their latency ranks the load, not the model);
    ``configs`` counts every row, ``correlated`` the rows used."""
    out: dict[str, float] = {"configs": float(len(rows))}
    rows = [r for r in rows if not r.get("contended")]
    out["correlated"] = float(len(rows))
    latency = [r["p50_ms"] for r in rows]
    if len(rows) < 3:
        return out
    for proxy in ("params", "flops"):
        values = [r[proxy] for r in rows]
        out[f"spearman/{proxy}_vs_latency"] = float(stats.spearmanr(values, latency).statistic)
        out[f"kendall/{proxy}_vs_latency"] = float(stats.kendalltau(values, latency).statistic)
    return out


@tracked
def run(cfg: RunConfig) -> dict[str, float]:
    """Measure every config of ``recipe.space``; write latency.csv, latency_vs_params.png, metrics.json.

    Returns:
        metrics.json's flat dict: the rank correlations, counts of noisy/contended measurements, and for a
        single config its latency, params and FLOPs.
    """
    run_dir = Path(cfg.run_dir)
    configs = configs_to_measure(cfg)
    measure = cfg.latency

    rows = []
    with Progress() as progress:
        task = progress.add_task(f"measuring {len(configs)} students", total=len(configs))
        for config in configs:
            result = measure_latency(config, measure)
            rows.append(
                {
                    "name": config.name,
                    "params": num_parameters(config),
                    "flops": flops(config, measure.seq_len, measure.batch_size),
                    **{k: getattr(result, k) for k in ("p50_ms", "p50_spread", "p90_ms", "mean_ms", "std_ms", "cv", "throughput_seq_s", "peak_memory_mb", "noisy", "contended", "cached")},
                }
            )  # fmt: skip
            progress.advance(task)

    table = io.StringIO(newline="")  # the csv module ends lines itself (\r\n)
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(run_dir / "latency.csv", table.getvalue())
    correlations = rank_correlations(rows)
    device = result.device
    clean = [r for r in rows if not r["contended"]]  # contended readings are in latency.csv, flagged, not plotted
    if clean:
        plot_latency_vs_params(clean, correlations, device, run_dir / "latency_vs_params.png")
    else:
        log.warning("every reading was contended: no latency_vs_params.png (re-run on a quiet machine)")
    log.info("measured %d students on %s: %s", len(rows), device, run_dir / "latency.csv")

    metrics = {**correlations, "noisy": float(sum(r["noisy"] for r in rows)),
               "contended": float(sum(r["contended"] for r in rows))}  # fmt: skip
    if len(rows) == 1:
        metrics.update(
            {
                f"latency/{k}": float(rows[0][k])
                for k in ("p50_ms", "p90_ms", "mean_ms", "std_ms", "cv", "throughput_seq_s")
            }
        )
        metrics.update({"params": float(rows[0]["params"]), "flops": float(rows[0]["flops"])})
        metrics["latency/contended"] = float(rows[0]["contended"])  # flagged: numbers timed on a busy CPU
    return write_metrics(run_dir, metrics)
