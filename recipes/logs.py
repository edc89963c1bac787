"""What a run prints besides its own lines: library noise turned down once, log files in plain text.

``quiet_libraries`` is called by run.py's Hydra job before a recipe runs; ``PlainFormatter`` is the file
handler's formatter in conf/hydra/job_logging/plain.yaml (run.log).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import warnings

# ANSI escape sequences (colours, cursor moves) that a library or a rich renderable may leave in a message.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")

# Library loggers whose INFO lines repeat in every run and every search trial and say nothing about it:
# Lightning's "GPU available / TPU available / 💡 Tip: try LitLogger / `Trainer.fit` stopped" banners and
# "Seed set to 0" (the seed is in the run's .hydra/config.yaml). Their warnings still show.
_BANNER_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                   "lightning.fabric.utilities.seed")  # fmt: skip

# Warnings about library internals the recipes cannot act on: (message regex, category).
_KNOWN_WARNINGS = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", Warning),  # Lightning's own use of torch's pytree
)


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences (colour codes, cursor moves)."""
    return _ANSI.sub("", text)


class PlainFormatter(logging.Formatter):
    """A ``logging.Formatter`` whose output holds no ANSI escape sequences: a log file reads as plain text
    whatever a library put in its message (the console handler keeps its colours)."""

    def format(self, record: logging.LogRecord) -> str:
        return strip_ansi(super().format(record))


@functools.cache
def quiet_libraries() -> None:
    """Set the known warnings filters and library log levels, once per process (a multirun's jobs share it).

    Lightning sets its loggers' levels when it is imported, so this runs after the recipe's imports (run.py's
    job function), where a level set here is the one that stays. transformers keeps its WARNING level: a
    checkpoint that loads with missing or unexpected weights must still say so.
    """
    # Fast tokenizers warn (and can deadlock) when DataLoader workers fork after they were used.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")  # "use X instead" advice, once per call
    for name in _BANNER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message, category in _KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    try:  # "Loading weights" / "Writing model shards" tqdm bars at every teacher load and student save
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    transformers_logging.disable_progress_bar()
