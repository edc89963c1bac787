"""Saved models load without this project (modules/portable.py, register_for_auto_class in modules/student.py and
modules/adabert.py): a fresh interpreter whose sys.path holds no project dir (``modules`` not importable, cwd a
temp dir, PYTHONPATH unset, ``-I``) loads each saved kind through the Auto classes and ``pipeline`` and must
reproduce the in-process outputs bit for bit; a student that reduces to BERT is saved as stock BERT and loads
without ``trust_remote_code``. One subprocess loads every kind (imports cost seconds on 2 cores: ~15 s in all, so
those tests are ``slow``); the fast tier loads the copied code in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from transformers import pipeline

from modules.adabert import AdaBertConfig, AdaBertForSequenceClassification
from modules.adabert_ops import cell_edges
from modules.portable import save_for_serving, stock_bert_config, to_stock_bert
from modules.student import (
    StudentConfig,
    StudentForPreTraining,
    StudentForQuestionAnswering,
    StudentForSequenceClassification,
)
from modules.student_spec import BlockSpec

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["the movie was very good", "a boring plot and bad actor"]
LABELS = {"id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1}}

# In the fresh interpreter: drop the project from sys.path (the editable install's .pth put it there), prove it
# is gone, then load each case and save what it computes.
LOADER = r"""
import json, os, sys
root = os.path.realpath(sys.argv[1])
sys.path = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != root]
import importlib.util
assert importlib.util.find_spec("modules") is None and importlib.util.find_spec("recipes") is None
import torch, transformers
from transformers import AutoTokenizer, pipeline
cases, out = json.loads(sys.argv[2]), {}
for name, (path, auto, remote, texts) in cases.items():
    cls = getattr(transformers, auto)
    model = cls.from_pretrained(path, trust_remote_code=remote).eval()
    batch = AutoTokenizer.from_pretrained(path)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        result = model(**batch)
    out[name] = {k: v for k, v in result.items() if isinstance(v, torch.Tensor)}
    out[name]["class"] = type(model).__name__
    out[name]["module"] = type(model).__module__
    if auto == "AutoModelForSequenceClassification":
        out[name]["pipeline"] = pipeline("text-classification", model=path, trust_remote_code=remote)(texts)
torch.save(out, sys.argv[3])
assert not any(m.split(".")[0] in ("modules", "recipes", "callbacks", "core") for m in sys.modules)
"""


def student_config(blocks: list[BlockSpec], vocab: int, **kwargs) -> StudentConfig:
    return StudentConfig(
        blocks=[asdict(b) for b in blocks], vocab_size=vocab, max_position_embeddings=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kwargs,
    )  # fmt: skip


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Weights away from their initialisation (LayerNorms and biases too), so a wrong mapping shows."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def in_process(model: torch.nn.Module, tokenizer, texts: list[str]) -> dict:
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return {k: v for k, v in model(**batch).items() if isinstance(v, torch.Tensor)}


@pytest.fixture(scope="module")
def saved(tokenizer, tmp_path_factory) -> dict:
    """name -> (expected outputs, how it was saved, dir); the fresh interpreter's outputs under "loaded"."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("portable")
    vocab = len(tokenizer)
    bottleneck = [BlockSpec(32, 16, 2, 48, 2), BlockSpec(48, 16, 4, 32, 1)]  # maps + a transition: remote code
    plain = [BlockSpec(32, 32, 4, 64, 1)] * 2  # a BERT layer stack: stock
    edges = len(cell_edges(3))
    child_cfg = AdaBertConfig(vocab_size=vocab, embedding_size=12, hidden_size=8, max_cells=4, num_labels=2,
                              genotype=["std_conv_3", "max_pool_3", "skip"] * (edges // 3), num_cells=2, **LABELS)  # fmt: skip
    models = {
        "pretraining": (StudentForPreTraining(student_config(bottleneck, vocab)), "AutoModelForPreTraining"),
        "classifier": (StudentForSequenceClassification(student_config(bottleneck, vocab, **LABELS)),
                       "AutoModelForSequenceClassification"),  # fmt: skip
        "qa": (StudentForQuestionAnswering(student_config(bottleneck, vocab)), "AutoModelForQuestionAnswering"),
        "adabert": (AdaBertForSequenceClassification(child_cfg), "AutoModelForSequenceClassification"),
        "stock_classifier": (StudentForSequenceClassification(student_config(plain, vocab, **LABELS)),
                             "AutoModelForSequenceClassification"),  # fmt: skip
        "stock_pretraining": (StudentForPreTraining(student_config(plain, vocab)), "AutoModelForPreTraining"),
    }
    out, cases = {}, {}
    for name, (model, auto) in models.items():
        model = perturbed(model)
        how = save_for_serving(model, tokenizer, root / name)
        expected = in_process(model, tokenizer, TEXTS)
        if auto == "AutoModelForSequenceClassification":
            expected["pipeline"] = pipeline("text-classification", model=model, tokenizer=tokenizer)(TEXTS)
        out[name] = {"expected": expected, "how": how, "dir": root / name}
        cases[name] = (str(root / name), auto, how == "remote_code", TEXTS)
    # The encoder alone from a classifier's dir: auto_map names every student class.
    cases["classifier_encoder"] = (str(root / "classifier"), "AutoModel", True, TEXTS)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-I", "-c", LOADER, str(ROOT), json.dumps(cases), str(root / "loaded.pt")],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = torch.load(root / "loaded.pt")
    for name in out:
        out[name]["loaded"] = loaded[name]
    out["classifier_encoder"] = {"loaded": loaded["classifier_encoder"]}
    return out


def assert_same_outputs(expected: dict, loaded: dict) -> None:
    keys = [k for k in expected if k != "pipeline"]
    assert keys, "no tensor outputs to compare"
    for key in keys:
        torch.testing.assert_close(loaded[key], expected[key], atol=0, rtol=0, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pretraining", "classifier", "qa", "adabert"])
def test_remote_code_dirs_load_without_the_project_and_match_exactly(saved, name) -> None:
    case = saved[name]
    assert case["how"] == "remote_code"
    files = sorted(p.name for p in case["dir"].glob("*.py"))
    assert files == (["adabert.py", "adabert_ops.py"] if name == "adabert" else ["student.py", "student_blocks.py"])
    auto_map = json.loads((case["dir"] / "config.json").read_text())["auto_map"]
    assert auto_map["AutoConfig"] in ("student.StudentConfig", "adabert.AdaBertConfig")
    assert case["loaded"]["module"].startswith("transformers_modules.")  # the copy beside the weights ran
    assert_same_outputs(case["expected"], case["loaded"])


@pytest.mark.slow
def test_pipeline_matches_in_process_and_keeps_label_names(saved) -> None:
    for name in ("classifier", "adabert", "stock_classifier"):
        expected, loaded = saved[name]["expected"]["pipeline"], saved[name]["loaded"]["pipeline"]
        assert loaded == expected, name
        assert {row["label"] for row in loaded} <= {"neg", "pos"}, name


@pytest.mark.slow
def test_classifier_dir_also_loads_its_encoder(saved) -> None:
    encoder = saved["classifier_encoder"]["loaded"]
    assert encoder["class"] == "StudentModel"
    # the classifier reads the pooled [CLS]: the same encoder must give the same logits through its head
    clf = saved["classifier"]["expected"]
    assert encoder["pooler_output"].shape == (len(TEXTS), 48) and clf["logits"].shape == (len(TEXTS), 2)


@pytest.mark.slow
@pytest.mark.parametrize("name,cls", [("stock_classifier", "BertForSequenceClassification"),
                                      ("stock_pretraining", "BertForPreTraining")])  # fmt: skip
def test_bert_shaped_students_save_as_stock_bert(saved, name, cls) -> None:
    case = saved[name]
    config = json.loads((case["dir"] / "config.json").read_text())
    assert case["how"] == "stock" and config["model_type"] == "bert" and "auto_map" not in config
    assert not list(case["dir"].glob("*.py"))
    assert case["loaded"]["class"] == cls and case["loaded"]["module"].startswith("transformers.models.bert")
    expected, loaded = case["expected"], case["loaded"]
    if name == "stock_pretraining":
        expected = {"prediction_logits": expected["mlm_logits"], "seq_relationship_logits": expected["nsp_logits"]}
    assert_same_outputs(expected, loaded)


def test_stock_reduction_only_for_plain_bert_stacks() -> None:
    vocab = 50
    assert stock_bert_config(student_config([BlockSpec(32, 32, 4, 64, 1)] * 2, vocab)) is not None
    for blocks in ([BlockSpec(32, 16, 4, 64, 1)], [BlockSpec(32, 32, 4, 64, 2)],
                   [BlockSpec(32, 32, 4, 64, 1), BlockSpec(32, 32, 2, 64, 1)],
                   [BlockSpec(32, 32, 4, 64, 1), BlockSpec(64, 64, 4, 64, 1)]):  # fmt: skip
        assert stock_bert_config(student_config(blocks, vocab)) is None, blocks
    bert = to_stock_bert(StudentForQuestionAnswering(student_config([BlockSpec(32, 32, 4, 64, 1)], vocab)))
    assert type(bert).__name__ == "BertForQuestionAnswering" and bert.qa_outputs.out_features == 2
    assert to_stock_bert(torch.nn.Linear(2, 2)) is None


def test_saved_student_loads_its_copied_code_in_process(tokenizer, tmp_path) -> None:
    """The fast tier's check: the code beside the weights (not the project's classes) loads and matches exactly."""
    from transformers import AutoModel
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    torch.manual_seed(0)
    model = perturbed(StudentForSequenceClassification(
        student_config([BlockSpec(32, 16, 2, 48, 2)], len(tokenizer), **LABELS)))  # fmt: skip
    assert save_for_serving(model, tokenizer, tmp_path) == "remote_code"
    assert sorted(p.name for p in tmp_path.glob("*.py")) == ["student.py", "student_blocks.py"]
    # In this process the project's registration wins over auto_map, so load the copy as trust_remote_code does.
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    cls = get_class_from_dynamic_module(auto_map["AutoModelForSequenceClassification"], str(tmp_path))
    loaded = cls.from_pretrained(tmp_path).eval()
    assert type(loaded).__module__.startswith("transformers_modules.") and type(loaded) is not type(model)
    assert_same_outputs(in_process(model, tokenizer, TEXTS), in_process(loaded, tokenizer, TEXTS))
    # the copy did not replace the project's registration: a plain load still gives the project's class
    assert type(AutoModel.from_pretrained(tmp_path)).__module__ == "modules.student"
