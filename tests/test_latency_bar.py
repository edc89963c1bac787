"""The latency measurement's progress bar: display only, over rounds x repeats calls, shown when it is long."""

from __future__ import annotations

from io import StringIO

import torch
from rich.console import Console
from rich.progress import Progress

from callbacks.latency import timed_stats
from callbacks.progress import SHOW_BAR_AFTER_S, MeasureBar
from tests.test_latency import fast


def test_a_long_measurement_shows_a_bar_over_its_calls(tmp_path) -> None:
    """rounds x repeats ticks per measurement with an ETA; a short one shows nothing (display only)."""
    cfg = fast(tmp_path, rounds=2, repeats=4, max_cv=1e9, max_retries=0)
    console = Console(file=StringIO(), force_terminal=True, width=100)
    with MeasureBar(SHOW_BAR_AFTER_S + 1, cfg.rounds * cfg.repeats, Progress(console=console)) as bar:
        stats, attempts, _ = timed_stats(lambda: None, torch.device("cpu"), cfg, bar)
        (task,) = bar.progress.tasks
        assert (task.completed, task.total) == (8, 8) and attempts == 1
    assert "latency" in console.file.getvalue()
    quiet = MeasureBar(SHOW_BAR_AFTER_S, 8, Progress(console=Console(file=StringIO(), force_terminal=True)))
    with quiet:
        timed_stats(lambda: None, torch.device("cpu"), cfg, quiet)
    assert not quiet.shown and quiet.progress.tasks == []
