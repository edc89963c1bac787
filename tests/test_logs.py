"""Log files in plain text (conf/hydra/job_logging/plain.yaml) and library noise turned down (recipes.logs)."""

from __future__ import annotations

import logging
import logging.config
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from transformers.utils import logging as transformers_logging

import run
from recipes.logs import quiet_libraries, strip_ansi

CONF = Path(run.__file__).parent / "conf"
COLOURED = "\x1b[1m\x1b[31mred\x1b[0m and \x1b]8;;https://x\x1b\\link\x1b]8;;\x1b\\ \x1b[2K"


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level


def test_strip_ansi() -> None:
    assert strip_ansi(COLOURED) == "red and link "
    assert strip_ansi("plain [bold] 100%|██| 1/1") == "plain [bold] 100%|██| 1/1"


def test_run_log_is_plain_text(tmp_path: Path, restore_logging) -> None:
    """The job logging run.py's Hydra applies, with its file in tmp_path: a coloured message lands plain."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="run"):
        job_logging = compose(config_name="run", return_hydra_config=True).hydra.job_logging
    config = OmegaConf.to_container(job_logging, resolve=False)
    config["handlers"]["file"]["filename"] = str(tmp_path / "run.log")
    config["handlers"]["console"]["stream"] = "ext://sys.stderr"
    logging.config.dictConfig(config)
    logging.getLogger("some.library").warning("done: %s", COLOURED)
    logging.shutdown()
    text = (tmp_path / "run.log").read_text(encoding="utf-8")
    assert "done: red and link" in text
    assert "\x1b" not in text


def test_quiet_libraries_turns_down_the_known_noise() -> None:
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed")
    levels = {name: logging.getLogger(name).level for name in names}
    bars = transformers_logging.is_progress_bar_enabled()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_libraries.__wrapped__()  # the uncached body, so this test does not depend on test order
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
            warnings.warn("a warning nobody listed", UserWarning, stacklevel=1)
        assert [str(w.message) for w in caught] == ["a warning nobody listed"]
        for name in names:
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
            assert logging.getLogger(name).isEnabledFor(logging.WARNING), name
        assert not transformers_logging.is_progress_bar_enabled()
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
