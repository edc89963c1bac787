"""The leaderboard's methods: each a chain of stages, every stage one run of an existing recipe (Hydra overrides).

A method is data, not code: what the survey deck calls "DistilBERT" is the distill recipe with DistilBERT's loss
mix and truncation init, then the fine-tuning recipe. ``recipe=leaderboard`` (recipes/leaderboard.py) runs each
stage in ``<cell dir>/<stage name>`` and adds the budget every method shares, by the stage's ``kind``:

- ``pretrain``: a distillation / MLM stage on the corpus (``data`` group): ``recipe.regular_steps`` = the
  leaderboard's ``recipe.pretrain_steps``;
- ``finetune``: a student's fine-tuning on the task: the leaderboard's student epochs and lr, and task KD from the
  fine-tuned teacher when ``recipe.task_kd`` (the same for every method); its ``model/`` is the row's model;
- ``teacher``: the teacher's own fine-tuning (the reference row, and the task-KD teacher of the others);
- ``pipeline``: a recipe with its own budgets and fine-tuning (``autodistill``, ``adabert``); ``model`` says where
  its final model lands inside the stage dir.

Placeholders in overrides: ``{cell}`` (this cell's dir), ``{teacher}`` (the fine-tuned teacher's model dir),
``{prev}`` (the previous stage's dir). A method whose stages are not available yet is listed in ``MISSING`` with the
reason, and the leaderboard's report prints that line instead of a row.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("pretrain", "finetune", "teacher", "pipeline")


@dataclass(frozen=True)
class Stage:
    """One run of a recipe inside a cell: ``<cell dir>/<name>``."""

    name: str
    kind: str  # pretrain | finetune | teacher | pipeline
    overrides: tuple[str, ...]
    model: str = "model"  # where the stage's model lands in its dir (a glob; pipelines: e.g. finetune/trial_*/model)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"stage {self.name}: kind must be one of {KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class Method:
    """A row family of the leaderboard: its stages, run in order; the last one's model is the row's."""

    name: str
    about: str  # one line for the report: the paper and what is compared
    stages: tuple[Stage, ...]


def _student_finetune(*extra: str) -> Stage:
    return Stage("finetune", "finetune", ("recipe=finetune", "recipe.model={prev}/student", *extra))


METHODS: dict[str, Method] = {
    "teacher": Method(
        "teacher", "the teacher itself, fine-tuned on the task: the reference row",
        (Stage("finetune", "teacher", ("recipe=finetune", "recipe.model=teacher")),),
    ),
    "mobilebert_baseline": Method(
        "mobilebert_baseline",
        "AutoDistill's baseline: MobileBERT's block (Model_512_128_4_512_4) at the demo depth, layer-wise + "
        "progressive distillation (Sun et al. 2020; AutoDistill §4)",
        (Stage("distill", "pretrain", ("recipe=regular_distill", "student=mobilebert_baseline", "student.num_blocks=4")),
         _student_finetune()),
    ),
    "mobilebert": Method(
        "mobilebert",
        "MobileBERT (Sun et al. 2020): the same bottleneck blocks with its operational optimisations (NoNorm, ReLU) "
        "and the factorised trigram embedding (student=mobilebert), at the demo depth",
        (Stage("distill", "pretrain", ("recipe=regular_distill", "student=mobilebert", "student.num_blocks=4")),
         _student_finetune()),
    ),
    "distilbert": Method(
        "distilbert",
        "DistilBERT (Sanh et al. 2019): every other teacher layer (truncation init), 5·soft-MLM KD + 2·MLM + "
        "1·cosine of the last hidden states on the corpus, then fine-tuning",
        (Stage("distill", "pretrain", ("experiment=distilbert",)), _student_finetune()),
    ),
    "tinybert": Method(
        "tinybert",
        "TinyBERT-4 (Jiao et al. 2020): general distillation (attention scores + hidden + embedding MSE) from "
        "scratch, then task distillation from the fine-tuned teacher: intermediate layers, then the logits",
        (Stage("general", "pretrain", ("experiment=tinybert_general",)),
         Stage("task_intermediate", "finetune", ("experiment=tinybert_task", "recipe.model={prev}/student")),
         Stage("task_prediction", "finetune", ("experiment=tinybert_task_pred", "recipe.model={prev}/model"))),
    ),
    "pkd": Method(
        "pkd",
        "PKD-Skip (Sun et al. 2019): the teacher's first 3 layers, CE + KD + β·patient loss on the normalised "
        "[CLS] states of every other teacher layer, from the fine-tuned teacher",
        (Stage("finetune", "finetune", ("experiment=pkd",)),),
    ),
    "pd": Method(
        "pd",
        "Pre-trained Distillation (Turc et al. 2019): a compact BERT 4×256 pre-trained with MLM alone, then the "
        "fine-tuned teacher's soft labels on the task plus unlabelled transfer text",
        (Stage("pretrain", "pretrain", ("experiment=pd_pretrain",)),
         Stage("distill", "finetune", ("experiment=pd_distill", "recipe.model={prev}/student"))),
    ),
    "autodistill": Method(
        "autodistill",
        "AutoDistill (Zhang et al. 2022): search with measured latency, the front's student regular-distilled and "
        "fine-tuned (its own budgets: recipe=autodistill's demo)",
        (Stage("pipeline", "pipeline", ("recipe=autodistill",), model="finetune/trial_*/model"),),
    ),
    "adabert": Method(
        "adabert",
        "AdaBERT (Chen et al. 2020): task-adaptive CNN student by differentiable NAS (its own budgets: "
        "recipe=adabert's demo)",
        # Guided by the leaderboard's fine-tuned teacher, as every other student is, instead of fine-tuning its own.
        (Stage("pipeline", "pipeline", ("recipe=adabert", "recipe.teacher={teacher}"), model="student"),),
    ),
    # Pruning (issue 19): the teacher itself pruned on the corpus while it distils from its unpruned self
    # (recipe=prune), then fine-tuned with its mask fixed (recipe.sparsity.keep=auto reads config.json's pruning).
    "magnitude": Method(
        "magnitude",
        "magnitude pruning (Gordon et al. 2020): global, on Zhu & Gupta's cubic schedule to 50% of the encoder's "
        "linear weights during corpus distillation, then fine-tuning with the mask fixed; dense kernels",
        (Stage("prune", "pretrain", ("recipe=prune", "recipe.method=magnitude", "recipe.sparsity=0.5")),
         _student_finetune()),
    ),
    "nip": Method(
        "nip",
        "NIP (the RPP paper's baseline): iterative magnitude pruning of the teacher to 50% while it fine-tunes",
        (Stage("finetune", "finetune", ("recipe=finetune", "recipe.model=teacher", "recipe.sparsity.nip=0.5")),),
    ),
    "rpp": Method(
        "rpp",
        "RPP (Guo et al. 2019): reweighted L1 by a proximal step after each AdamW step during corpus distillation "
        "(recipe.rpp.lam sets the ratio), then fine-tuning with the mask fixed; dense kernels",
        (Stage("prune", "pretrain", ("recipe=prune", "recipe.method=rpp")), _student_finetune()),
    ),
    "structured": Method(
        "structured",
        "structured pruning: half the heads and half the FFN neurons of every layer removed (magnitude scores), "
        "recovered by distillation from the unpruned teacher, fine-tuned: really smaller matrices",
        (Stage("prune", "pretrain", ("recipe=prune", "recipe.method=structured")), _student_finetune()),
    ),
}

# Methods of the survey deck not runnable yet, with the reason the report prints in their place.
MISSING: dict[str, str] = {
    "deformer": "DeFormer (Cao et al. 2020) needs a pair task; issue 20, not landed",
    "dualtrain": "DualTrain + SharedProj (Zhao et al. 2019) needs the student's own vocabulary; issue 20, not landed",
}


def method(name: str) -> Method:
    """The method called ``name``.

    Raises:
        ValueError: an unknown name (lists the known ones and the not-yet-available ones).
    """
    if name in METHODS:
        return METHODS[name]
    if name in MISSING:
        raise ValueError(f"recipe.methods: {name} is not available yet: {MISSING[name]}")
    raise ValueError(f"recipe.methods: unknown method {name!r}; choose from {sorted(METHODS)}")
