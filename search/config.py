"""The student search's settings: the sweeper plugin's generic ``SearchConfig`` with the project's space
(``StudentSpace``: Table 1), objectives and report columns as defaults. The one place they are set:
``conf/search/default.yaml`` (recipe=autodistill) only sets values, and ``conf/hydra/sweeper/pareto.yaml``
(the Hydra sweeper preset) repeats them as YAML, checked equal by tests/test_search_space.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from hydra_plugins.pareto_sweeper import ObjectiveConfig, SearchConfig
from search.space import StudentSpace

# Metrics every distillation returns that a report should show beside the objectives.
REPORT_COLUMNS = ("params", "flops_per_seq@128", "latency/p50_ms", "val/loss", "val/fm", "val/mlm_acc", "wall_time_s")
# A latency timed while other processes kept the CPU busy (callbacks/latency.py, after its retries) is no
# objective value: such a trial is recorded "unmeasured" and re-run on resume.
INVALID_IF = ("latency/contended",)


def default_objectives() -> list[ObjectiveConfig]:
    """The two objectives: the flash-distilled student's validation loss down, measured latency down.

    ``val/loss`` is the loss of distillation's last stage (pre-training distillation, AutoDistill §3.3) on
    held-out text: the student's MLM cross-entropy, blended with MLM-KD to the teacher's logits where the teacher
    has an MLM head (α), plus NSP. AutoDistill maximises MLM accuracy instead; with a teacher that has no MLM head
    (the offline MiniLM, any sentence-transformers encoder) MLM accuracy after a flash run sits at the unigram
    plateau for most students. In the fidelity study (benchmarks/fidelity.py, README "Flash fidelity"; 2 seeds per
    student) the flash ``val/loss`` ranked students by their fine-tuned task score with Kendall tau 0.90 (7 students,
    1 epoch at lr 3e-4) and 0.57 (8 students at the pipeline's budget, where that is the ceiling the fine-tuning noise
    allows), MLM accuracy 0.51 and 0.64 with 16x more seed noise, the feature-map loss ``val/fm`` (AutoDistill eq. 2)
    -0.33 and -0.14: a student can copy the teacher's hidden states well and still be a worse encoder.
    For a teacher with an MLM head, ``experiment=autodistill_paper`` sets ``{name: val/mlm_acc, direction: max}``.

    Their noise floors: the loss's is measured by re-running the baseline with another seed (noise=null,
    ``search.noise_seeds``); latency's is each measurement's own spread of its round medians,
    ``latency/p50_spread`` = (max - min) / median (callbacks/latency.py), a fraction: x the p50 gives ms. (A seed
    repeat could not measure latency's: the same student's timing comes back from the latency cache.)"""
    return [
        ObjectiveConfig("val/loss", "min"),
        ObjectiveConfig("latency/p50_ms", "min", noise="latency/p50_spread", noise_relative=True),
    ]


@dataclass
class StudentSearchConfig(SearchConfig):
    """Hydra schema of the ``search`` group (what recipe=autodistill searches, and how); the fields and
    their checks are the plugin's ``SearchConfig``, typed here for the student space.

    Raises:
        ValueError: see ``SearchConfig`` and ``StudentSpace``.
    """

    key: ClassVar[str] = "search"  # errors name search.<key>, not the sweeper's hydra.sweeper.<key>

    # Optuna's multivariate TPE: on benchmarks/search_hard.py it needs ~0.1x / 0.3x random search's trials to the 1st /
    # 3rd student dominating a strong reference (README "Search engines"); the generic plugin keeps "bo".
    optimizer: str = "tpe"
    space: StudentSpace = field(default_factory=StudentSpace)
    objectives: list[ObjectiveConfig] = field(default_factory=default_objectives)
    report_columns: list[str] = field(default_factory=lambda: list(REPORT_COLUMNS))
    invalid_if: list[str] = field(default_factory=lambda: list(INVALID_IF))

    def __post_init__(self) -> None:
        if isinstance(self.space, dict) and "_target_" not in self.space:  # from Python: the student space's fields
            self.space = StudentSpace(**self.space)
        super().__post_init__()
