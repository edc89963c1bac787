"""pareto.png's axis labels say the unit and which way is better, and a trial the baseline beats on both
objectives is not drawn as the front."""

from __future__ import annotations

from pathlib import Path

from hydra_plugins.pareto_sweeper._reports import axis_label, front_with_baseline, plot_front


def test_axis_label_spells_the_unit_and_the_better_direction() -> None:
    assert axis_label("latency/p50_ms", "min") == "latency/p50 (ms) ↓ better"
    assert axis_label("val/mlm_acc", "max") == "val/mlm_acc ↑ better"
    assert axis_label("wall_time_s", "min") == "wall_time (s) ↓ better"


def test_a_front_trial_the_baseline_dominates_is_not_on_the_drawn_front(tmp_path: Path) -> None:
    # x: latency (min), y: accuracy (max); the baseline (3.0, 0.30) beats trial 1 (4.0, 0.28) on both.
    points = [(2.0, 0.20), (4.0, 0.28), (5.0, 0.35), (6.0, 0.30)]
    stairs, beaten = front_with_baseline(points, [0, 1, 2], ("min", "max"), (3.0, 0.30))
    assert beaten == [1] and sorted(stairs) == [(2.0, 0.20), (3.0, 0.30), (5.0, 0.35)]
    assert front_with_baseline(points, [0, 1, 2], ("min", "max"), None) == ([points[0], points[1], points[2]], [])
    plot_front(tmp_path / "pareto.png", points, [0, 1, 2], ("x", "y"), baseline=(3.0, 0.30),
               directions=("min", "max"))  # fmt: skip
    assert (tmp_path / "pareto.png").stat().st_size > 1000
