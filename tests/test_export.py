"""ONNX export (modules/onnx_export.py, recipe=export): every saved kind exports with dynamic batch and sequence
axes, ONNX Runtime matches PyTorch within tolerance at shapes the export never saw, int8 quantisation runs, and the
recipe reports a classifier's dev accuracy for PyTorch, fp32 and int8 ONNX. Skipped when onnx is not installed."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from transformers import BertConfig, BertModel

from modules.adabert import AdaBertConfig, AdaBertForSequenceClassification
from modules.student import (
    StudentConfig,
    StudentForPreTraining,
    StudentForQuestionAnswering,
    StudentForSequenceClassification,
)
from modules.student_spec import BlockSpec

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from modules.onnx_export import (  # noqa: E402  (after the skip: needs onnx)
    example_inputs,
    export_onnx,
    max_abs_diff,
    onnx_session,
    quantize_int8,
    require_onnx,
)

VOCAB = 60
TOLERANCE = 1e-4  # fp32: different kernels, same maths (measured: <= 1e-6 on these models)
BLOCKS = [BlockSpec(32, 16, 2, 48, 2), BlockSpec(48, 16, 4, 32, 1)]


def student_config(**kwargs) -> StudentConfig:
    return StudentConfig(blocks=[asdict(b) for b in BLOCKS], vocab_size=VOCAB, max_position_embeddings=64, **kwargs)


KINDS = {
    "student": (lambda: StudentForPreTraining(student_config()), ["mlm_logits", "nsp_logits"]),
    "classifier": (lambda: StudentForSequenceClassification(student_config(num_labels=3)), ["logits"]),
    "qa": (lambda: StudentForQuestionAnswering(student_config()), ["start_logits", "end_logits"]),
    "adabert_child": (lambda: AdaBertForSequenceClassification(AdaBertConfig(
        vocab_size=VOCAB, embedding_size=12, hidden_size=8, max_cells=4, num_labels=2,
        genotype=["std_conv_3", "max_pool_3", "skip"] * 3, num_cells=2)), ["logits"]),  # fmt: skip
    "teacher": (lambda: BertModel(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=64, max_position_embeddings=64)),
                ["last_hidden_state", "pooler_output"]),  # fmt: skip
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_exports_with_dynamic_axes_and_matches_pytorch(kind, tmp_path) -> None:
    build, expected_names = KINDS[kind]
    torch.manual_seed(0)
    model = build().eval()
    names = export_onnx(model, tmp_path / "model.onnx", VOCAB)
    assert names == expected_names
    assert not model.training  # the export leaves the model in eval mode (dropout off): dev/acc_torch is measured after
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    for value in graph.input:
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "sequence"], value.name
    session = onnx_session(tmp_path / "model.onnx")
    # shapes other than the export's 2 x 16, padding in the last row
    diffs = [max_abs_diff(model, session, example_inputs(VOCAB, b, s, seed=3)) for b, s in ((1, 7), (3, 40))]
    assert max(diffs) < TOLERANCE, diffs
    int8 = quantize_int8(tmp_path / "model.onnx", tmp_path / "model.int8.onnx")
    assert int8.exists() and int8.stat().st_size > 0
    assert max_abs_diff(model, onnx_session(int8), example_inputs(VOCAB, 3, 40)) < 1.0  # int8 weights: close


def test_missing_package_is_named(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(RuntimeError, match="needs onnxruntime: pip install onnxruntime"):
        require_onnx("recipe=export")


@pytest.mark.slow  # ~20 s on 2 shared cores: task tokenisation + three dev passes
def test_export_recipe_on_a_saved_classifier(tokenizer, sentiment_tsv, tmp_path) -> None:
    """A saved student classifier: the graph, its int8 twin, and dev accuracy of all three runtimes."""
    from hydra import compose, initialize_config_dir

    import run as run_module
    from modules.portable import save_for_serving
    from recipes import export

    torch.manual_seed(0)
    model = StudentForSequenceClassification(StudentConfig(
        blocks=[asdict(b) for b in BLOCKS], vocab_size=len(tokenizer), max_position_embeddings=64))  # fmt: skip
    save_for_serving(model, tokenizer, tmp_path / "model")
    overrides = ["recipe=export", f"recipe.model={tmp_path / 'model'}", f"task.path={sentiment_tsv}",
                 "task.format=tsv", "task.text_columns=[text]", "task.label_column=label", "task.binarize_at=null",
                 "task.max_seq_len=16", f"task.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    run_module.register_recipe_schemas(["export"])
    with initialize_config_dir(config_dir=str(run_module.CONF), version_base="1.3"):
        cfg = run_module.to_run_config(compose("run", overrides=overrides), str(tmp_path / "run"))
    metrics = export.run(cfg)
    assert metrics == json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["onnx/max_abs_diff"] < TOLERANCE and (tmp_path / "run" / "onnx" / "model.int8.onnx").exists()
    assert metrics["dev/acc_onnx"] == metrics["dev/acc_torch"]  # same predictions, float noise aside
    assert 0.0 <= metrics["dev/acc_int8"] <= 1.0
    assert metrics["dev/acc_int8_change"] == pytest.approx(metrics["dev/acc_int8"] - metrics["dev/acc_onnx"])
    assert (tmp_path / "run" / "onnx" / "tokenizer.json").exists()


def test_export_recipe_refuses_bad_settings() -> None:
    from recipes.export import ExportConfig

    with pytest.raises(ValueError, match="recipe.tolerance"):
        ExportConfig(model="x", tolerance=0)
    with pytest.raises(ValueError, match="recipe.opset"):
        ExportConfig(model="x", opset=11)
