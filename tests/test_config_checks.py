"""Config values the libraries would refuse later, and token ids passed between models with different
tokenizers, are refused when the config is read (or in a recipe's preflight), before any model is trained
or any data featurised; every message names the key (or both tokenizers)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification, BertTokenizerFast

import run  # noqa: F401  (registers every recipe's schema)
from core.assets import require_same_tokenizer, tokenizer_difference
from datamodules.pretraining import PretrainingDataConfig
from hydra_plugins.pareto_sweeper import SearchConfig
from recipes import adabert, distill, finetune
from recipes.config import TrainerConfig
from search.config import StudentSearchConfig
from tests.conftest import SPECIALS, WORDS, tiny_bert_config

ROOT = Path(__file__).resolve().parents[1]


def typed(*overrides: str):
    """The typed RunConfig of ``python run.py <overrides>`` (every __post_init__ has run)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_object(compose("run", overrides=list(overrides)))


def save_classifier(path: Path, vocab: list[str], max_positions: int = 64) -> Path:
    """A tiny random BERT classifier saved with a WordPiece tokenizer over ``vocab``."""
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast.from_pretrained(path)
    tokenizer.save_pretrained(path)
    config = tiny_bert_config(len(tokenizer), max_position_embeddings=max_positions, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(path)
    return path


def swapped_vocab() -> list[str]:
    """The fixtures' vocabulary, same size, with two words' ids exchanged."""
    vocab = SPECIALS + WORDS
    i, j = vocab.index("good"), vocab.index("bad")
    vocab[i], vocab[j] = vocab[j], vocab[i]
    return vocab


# ------------------------------------------------------------------------------------------- tokenizers


def test_same_size_tokenizer_with_two_tokens_swapped_is_refused_naming_both(tmp_path: Path) -> None:
    a = BertTokenizerFast.from_pretrained(save_classifier(tmp_path / "student", SPECIALS + WORDS))
    b = BertTokenizerFast.from_pretrained(save_classifier(tmp_path / "teacher", swapped_vocab()))
    assert len(a) == len(b)
    assert "'good'" in tokenizer_difference(a, b)
    with pytest.raises(ValueError, match=r"the student.*the teacher.*token 'good'"):
        require_same_tokenizer(a, b, "the student", "the teacher")


def test_identical_tokenizers_saved_in_two_dirs_are_accepted(tmp_path: Path) -> None:
    a = BertTokenizerFast.from_pretrained(save_classifier(tmp_path / "one", SPECIALS + WORDS))
    b = BertTokenizerFast.from_pretrained(save_classifier(tmp_path / "two", SPECIALS + WORDS))
    assert tokenizer_difference(a, b) is None
    require_same_tokenizer(a, b, "one", "two")


def test_tokenizer_difference_names_special_tokens_and_lower_casing(tmp_path: Path) -> None:
    base = BertTokenizerFast.from_pretrained(save_classifier(tmp_path / "base", SPECIALS + WORDS))
    cased = BertTokenizerFast.from_pretrained(tmp_path / "base", do_lower_case=False)
    assert "lower-casing" in tokenizer_difference(base, cased)
    other_mask = BertTokenizerFast.from_pretrained(tmp_path / "base", mask_token="[UNK]")
    assert "mask_token" in tokenizer_difference(base, other_mask)


def kd_cfg(model: Path, teacher: Path, max_seq_len: int = 32) -> SimpleNamespace:
    """What finetune.preflight reads of a run config."""
    recipe = finetune.FinetuneConfig(model=str(model), measure_latency=False,
                                     task_kd=finetune.TaskKDConfig(teacher=str(teacher)))  # fmt: skip
    return SimpleNamespace(recipe=recipe, task=SimpleNamespace(max_seq_len=max_seq_len, name="sentiment"),
                           latency=SimpleNamespace(seq_len=32), trainer=SimpleNamespace(limit_val_batches=None))  # fmt: skip


def test_finetune_refuses_a_kd_teacher_with_another_tokenizer_before_any_data(tmp_path: Path) -> None:
    student = save_classifier(tmp_path / "student", SPECIALS + WORDS)
    teacher = save_classifier(tmp_path / "teacher", swapped_vocab())
    with pytest.raises(ValueError, match=rf"recipe.model \({student}\).*recipe.task_kd.teacher \({teacher}\)"):
        finetune.preflight(kd_cfg(student, teacher), str(student), qa=False)
    # load_kd_teacher (what a caller skipping preflight reaches) refuses it too.
    with pytest.raises(ValueError, match="tokenizers of"):
        finetune.load_kd_teacher(kd_cfg(student, teacher), AutoModelForSequenceClassification,
                                 BertTokenizerFast.from_pretrained(student))  # fmt: skip
    same = save_classifier(tmp_path / "same", SPECIALS + WORDS)
    finetune.preflight(kd_cfg(student, same), str(student), qa=False)  # the same tokenizer in another dir


def test_finetune_refuses_a_kd_teacher_that_cannot_embed_the_task_length(tmp_path: Path) -> None:
    student = save_classifier(tmp_path / "student", SPECIALS + WORDS, max_positions=128)
    teacher = save_classifier(tmp_path / "teacher", SPECIALS + WORDS, max_positions=64)
    with pytest.raises(ValueError, match=r"task.max_seq_len=100 exceeds recipe.task_kd.teacher"):
        finetune.preflight(kd_cfg(student, teacher, max_seq_len=100), str(student), qa=False)


def test_distill_refuses_student_vocab_size_and_teacher_positions_before_loading(tiny_teacher_dir: Path) -> None:
    cfg = typed("recipe=flash_distill", f"teacher.name_or_path={tiny_teacher_dir}", "student.vocab_size=30522")
    with pytest.raises(ValueError, match="student.vocab_size=30522"):
        distill.check_compatible(cfg)
    cfg = typed("recipe=flash_distill", f"teacher.name_or_path={tiny_teacher_dir}", "data.max_seq_len=128",
                "student.max_position_embeddings=512")  # fmt: skip
    with pytest.raises(ValueError, match=r"data.max_seq_len=128 exceeds teacher .*max_position_embeddings=64"):
        distill.check_compatible(cfg)


@pytest.mark.smoke
def test_a_step_budget_without_a_step_per_block_is_refused_before_loading(tiny_teacher_dir: Path, tmp_path) -> None:
    # 20 x 0.05 = 1 flash step: 4 blocks would get no progressive step (found only when the schedule was built)
    cfg = typed("recipe=flash_distill", f"teacher.name_or_path={tiny_teacher_dir}", "recipe.regular_steps=20")
    with pytest.raises(ValueError, match=r"1 flash steps \(recipe.regular_steps=20 x recipe.flash_fraction=0.05\) "
                                         r"are too few for the student \(student.num_blocks\), 4 blocks"):  # fmt: skip
        distill.check_compatible(cfg)
    # the pipeline checks its flash budget against the deepest student its search may propose, before the teacher
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), f"teacher.name_or_path={tiny_teacher_dir}", "recipe.regular_steps=75",
         "search.space.num_blocks='range(2,7)'", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "15 flash steps (recipe.regular_steps=75 x recipe.flash_fraction=0.2) are too few for the search's deepest " \
           "student (search.space.num_blocks), 6 blocks" in proc.stderr  # fmt: skip
    assert not (tmp_path / "run" / "teacher.json").exists()  # nothing timed, nothing trained


def test_adabert_refuses_a_teacher_that_cannot_embed_the_lengths(tmp_path: Path) -> None:
    teacher = save_classifier(tmp_path / "teacher", SPECIALS + WORDS, max_positions=64)
    cfg = typed("recipe=adabert", f"recipe.teacher={teacher}", "task.max_seq_len=100")
    with pytest.raises(ValueError, match=r"task.max_seq_len=100 exceeds the teacher"):
        adabert.check_config(cfg)
    cfg = typed("recipe=adabert", f"recipe.teacher={teacher}", "task.max_seq_len=32", "latency.seq_len=128")
    with pytest.raises(ValueError, match=r"latency.seq_len=128 exceeds the teacher"):
        adabert.check_config(cfg)


# ------------------------------------------------------------------------------------------- config values


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["recipe=flash_distill", "recipe.optimizer.lr=-0.001"], "recipe.optimizer.lr"),
        (["recipe=regular_distill", "recipe.optimizer.weight_decay=-1"], "recipe.optimizer.weight_decay"),
        (["recipe=flash_distill", "+recipe.optimizer.betas=[0.9,1.5]"], "recipe.optimizer.betas"),
        (["recipe=flash_distill", "+recipe.optimizer.nesterov=true"], "recipe.optimizer.nesterov"),
        (["recipe=finetune", "recipe.optimizer.lr=-0.001"], "recipe.optimizer.lr"),
        (["recipe=autodistill", "recipe.optimizer.lr=0"], "recipe.optimizer.lr"),
        (["recipe=adabert", "recipe.teacher_finetune.optimizer.lr=-1"], "recipe.teacher_finetune.optimizer.lr"),
        (["recipe=adabert", "recipe.teacher_finetune.warmup_fraction=1"], "recipe.teacher_finetune.warmup_fraction"),
        (["recipe=adabert", "recipe.weight_decay=-1"], "recipe.weight_decay"),
        (["recipe=adabert", "recipe.arch_weight_decay=-1"], "recipe.arch_weight_decay"),
        (["recipe=flash_distill", "recipe.val_every_n_steps=0"], "recipe.val_every_n_steps"),
        (["recipe=flash_distill", "recipe.checkpoint_every_n_steps=0"], "recipe.checkpoint_every_n_steps"),
        (["recipe=flash_distill", "data.num_workers=-1"], "data.num_workers"),
        (["recipe=finetune", "trainer.max_epochs=-5"], "trainer.max_epochs"),
        (["recipe=finetune", "trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val"),
        (["recipe=autodistill", "search.budget=0"], "search.budget"),
        (["recipe=autodistill", "search.num_workers=0"], "search.num_workers"),
        (["recipe=autodistill", "search.max_proposals=0"], "search.max_proposals"),
        (["recipe=autodistill", "search.objectives=[]"], "search.objectives"),
    ],
)
def test_bad_value_is_refused_when_the_config_is_read_naming_its_key(overrides: list[str], key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.").replace("[", r"\[")):
        typed(*overrides)


def test_schemas_refuse_library_rejected_values_directly() -> None:
    bad_lr = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": -1e-3}
    with pytest.raises(ValueError, match=r"recipe\.optimizer\.lr"):
        distill.DistillConfig(optimizer=bad_lr)
    with pytest.raises(ValueError, match=r"recipe\.optimizer\._target_"):
        finetune.FinetuneConfig(optimizer={"_target_": "torch.optim.NoSuchOptimizer", "lr": 1e-3})
    with pytest.raises(ValueError, match=r"trainer\.num_sanity_val_steps"):
        TrainerConfig(num_sanity_val_steps=-2)
    with pytest.raises(ValueError, match=r"data\.num_workers"):
        PretrainingDataConfig(source="x", num_workers=-1)
    # a recipe's nested copy of recipe=finetune names its own key
    with pytest.raises(ValueError, match=r"recipe\.teacher_finetune\.optimizer\.lr"):
        dataclasses.replace(adabert.AdaBertRecipeConfig().teacher_finetune, optimizer=bad_lr)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"budget": 0}, "budget"),
        ({"num_workers": 0}, "num_workers"),
        ({"max_proposals": 0}, "max_proposals"),
        ({"seed": -1}, "seed"),
        ({"optimizer": "nosuchoptimizer"}, "optimizer"),
        ({"objectives": [{"name": "a", "direction": "up"}]}, "objectives"),
        ({"constraints": [{"name": "params"}]}, "constraints"),
    ],
)
def test_search_settings_errors_name_the_sweeper_or_search_key(settings: dict, key: str) -> None:
    """The sweeper's settings are ``hydra.sweeper.<key>``; recipe=autodistill's are ``search.<key>``."""
    full = {"space": {"_target_": "hydra_plugins.pareto_sweeper.ParamSpace", "params": ["x=choice(1,2)"]},
            "objectives": [{"name": "score", "direction": "max"}], **settings}  # fmt: skip
    with pytest.raises(ValueError, match=rf"^hydra\.sweeper\.{key}"):
        SearchConfig(**full)
    with pytest.raises(ValueError, match=rf"^search\.{key}"):
        StudentSearchConfig(**{k: v for k, v in full.items() if k != "space"})


@pytest.mark.smoke
def test_sweeper_budget_error_names_hydra_sweeper_key(tmp_path: Path) -> None:
    """python run.py -m ... hydra/sweeper=pareto hydra.sweeper.budget=0 exits at once, naming the key."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "-m", "recipe=flash_distill", "hydra/sweeper=pareto",
         "hydra.sweeper.budget=0", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode != 0
    assert "hydra.sweeper.budget must be >= 1" in proc.stderr + proc.stdout
    assert not list((tmp_path / "sweep").glob("*/metrics.json"))


@pytest.mark.parametrize("recipe", ["flash_distill", "finetune"])
@pytest.mark.smoke
def test_run_py_negative_lr_exits_before_any_work(
    recipe: str, tiny_teacher_dir: Path, pairs_corpus: Path, tmp_path: Path
) -> None:
    from tests.test_recipes import run_py, tiny_overrides

    proc = run_py(f"recipe={recipe}", "recipe.optimizer.lr=-0.001", *tiny_overrides(tiny_teacher_dir, pairs_corpus, tmp_path),
                  cwd=tmp_path, timeout=120)  # fmt: skip
    assert proc.returncode != 0
    assert "recipe.optimizer.lr must be a number > 0, got -0.001" in proc.stderr
    assert "Traceback" not in proc.stderr or proc.stderr.count("File ") < 15
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "cache").exists()
