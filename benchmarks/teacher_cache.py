"""Flash-trial wall time with the teacher-output cache warm vs without it, on the offline demo assets.

    .venv/bin/python benchmarks/teacher_cache.py [--regular-steps 4000] [--mode memory|disk] [--paper-mix] [overrides ...]

Three flash runs of the same student in one process, as consecutive trials of a search would run
under Hydra's basic launcher: (1) no cache, (2) cache cold (fills it), (3) cache warm (a different
seed-identical trial reads it). Prints each run's wall time and the warm : no-cache ratio. Extra
arguments are Hydra overrides for all three runs (e.g. student.num_blocks=6).

By default the teacher is read at every step (layer-wise terms kept in the pre-training stage), which
is what a teacher with an MLM head does through MLM-KD. The offline MiniLM has no MLM head, so with
the paper's loss mix (--paper-mix) its outputs are read only in the progressive stages and the
recipe skips the teacher elsewhere: the cache can then save only those stages' teacher calls.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

import run
from modules.teacher_cache import MEMORY_STORE
from recipes import distill

CONF = Path(run.__file__).resolve().parent / "conf"


def flash(run_dir: Path, overrides: list[str]) -> dict[str, float]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "run",
            overrides=["recipe=flash_distill", "trainer.enable_progress_bar=false", "~logger", *overrides],
        )
    return distill.run(run.to_run_config(cfg, str(run_dir)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--regular-steps", type=int, default=4000, help="flash = 5%% of this (demo: 4000 -> 200)"
    )
    parser.add_argument(
        "--paper-mix", action="store_true", help="no layer-wise terms after the progressive stages"
    )
    parser.add_argument("--mode", choices=["memory", "disk"], default="memory")
    args, extra = parser.parse_known_args()
    MEMORY_STORE.clear()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mix = [] if args.paper_mix else ["recipe.losses.layerwise_in_pretraining=1.0"]
        common = [f"recipe.regular_steps={args.regular_steps}", *mix, *extra]
        cache = [
            f"recipe.teacher_cache.mode={args.mode}",
            f"recipe.teacher_cache.dir={tmp / 'tcache'}",
            "recipe.teacher_cache.max_gb=8",
        ]
        plain = flash(tmp / "plain", common)
        cold = flash(tmp / "cold", common + cache)
        warm = flash(tmp / "warm", common + cache)
    print(
        f"flash trial: {plain['steps']:.0f} steps, student {plain['params'] / 1e6:.2f}M params, cache mode {args.mode}"
    )
    print(f"{'run':12s} {'wall s':>8s} {'cache hits':>11s} {'val/mlm_acc':>12s}")
    for name, m in (("no cache", plain), ("cache cold", cold), ("cache warm", warm)):
        print(
            f"{name:12s} {m['wall_time_s']:8.1f} {m.get('teacher_cache/hits', 0):11.0f} {m['val/mlm_acc']:12.4f}"
        )
    print(f"warm / no-cache wall time: {warm['wall_time_s'] / plain['wall_time_s']:.2f}x (target <= 0.5x)")


if __name__ == "__main__":
    main()
