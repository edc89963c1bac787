"""MobileBERT's student factors (Sun et al. 2020 §3.4-3.5): NoNorm, ReLU, the factorised (trigram) embedding.

Each piece against a naive reference written here and against HF's MobileBertEmbeddings with copied weights; the
analytic sizes and FLOPs against the built model; save/load (Auto classes, the portable export, ONNX) with identical
outputs; the teacher-embedding initialisation; the latency cache key; the search space's optional factors; and a
tiny distillation end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel, AutoModelForSequenceClassification, MobileBertConfig
from transformers.models.mobilebert.modeling_mobilebert import MobileBertEmbeddings

import modules.auto  # noqa: F401  (registers the Auto classes)
from callbacks.latency_cache import architecture_id
from modules.embedding_init import EmbeddingWeights, init_embeddings_from_teacher, resample_features
from modules.portable import save_for_serving, stock_bert_config
from modules.student import (
    NoNorm,
    StudentConfig,
    StudentForPreTraining,
    StudentForSequenceClassification,
    StudentModel,
    trigram,
)
from modules.student_costs import flops, num_parameters
from modules.student_spec import BlockSpec, StudentSpec
from search.space import StudentSpace

VOCAB = 61
BLOCKS = [BlockSpec(32, 16, 2, 48, 2), BlockSpec(48, 16, 4, 32, 1)]
MOBILEBERT = dict(normalization_type="no_norm", hidden_act="relu", embedding_size=8, trigram_input=True)
LABELS = {"id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1}}


def config(blocks: list[BlockSpec] = BLOCKS, **kwargs) -> StudentConfig:
    return StudentConfig(blocks=[asdict(b) for b in blocks], vocab_size=VOCAB, max_position_embeddings=64,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kwargs)  # fmt: skip


def perturbed(model: nn.Module, seed: int = 1) -> nn.Module:
    """Weights away from their start (norm gains and biases, the [PAD] row too), so a wrong mapping shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def batch(seed: int = 0, pad_last: int = 3) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (2, 11), generator=gen)
    mask = torch.ones_like(ids)
    if pad_last:
        ids[1, -pad_last:], mask[1, -pad_last:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.randint(0, 2, ids.shape, generator=gen)}


# ------------------------------------------------------------------------------------------------ the pieces


def test_no_norm_is_elementwise_gamma_x_plus_beta() -> None:
    norm = NoNorm(5)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0, 3.0]))
        norm.bias.copy_(torch.tensor([1.0, 0.0, -2.0, 4.0, 0.5]))
    x = torch.randn(2, 3, 5)
    expected = torch.empty_like(x)
    for i in range(2):
        for t in range(3):
            for d in range(5):
                expected[i, t, d] = norm.weight[d] * x[i, t, d] + norm.bias[d]
    torch.testing.assert_close(norm(x), expected, atol=0, rtol=0)
    # it is not a LayerNorm: the per-token mean and scale survive
    assert not torch.allclose(norm(x).mean(-1), nn.LayerNorm(5)(x).mean(-1), atol=1e-3)


def test_trigram_concatenates_next_current_previous_with_zero_ends() -> None:
    x = torch.randn(2, 6, 4)
    expected = torch.zeros(2, 6, 12)
    for i in range(2):
        for t in range(6):
            expected[i, t, 4:8] = x[i, t]
            if t + 1 < 6:
                expected[i, t, 0:4] = x[i, t + 1]
            if t > 0:
                expected[i, t, 8:12] = x[i, t - 1]
    torch.testing.assert_close(trigram(x), expected, atol=0, rtol=0)


@pytest.mark.parametrize("trigram_input,width", [(True, 8), (False, 8), (True, 32)])
@pytest.mark.parametrize("normalization_type", ["no_norm", "layer_norm"])
def test_embeddings_match_hf_mobilebert(trigram_input: bool, width: int, normalization_type: str) -> None:
    """The same weights in HF's MobileBertEmbeddings give the same output (no padding: see the next test)."""
    # HF builds the embeddings' norm without config.layer_norm_eps (torch's 1e-5): give ours the same eps here.
    ours = StudentModel(config(embedding_size=width, trigram_input=trigram_input, layer_norm_eps=1e-5,
                               normalization_type=normalization_type)).embeddings  # fmt: skip
    hf_config = MobileBertConfig(vocab_size=VOCAB, hidden_size=32, embedding_size=width, trigram_input=trigram_input,
                                 normalization_type=normalization_type, max_position_embeddings=64,
                                 hidden_dropout_prob=0.0, layer_norm_eps=1e-12)  # fmt: skip
    hf = MobileBertEmbeddings(hf_config).eval()
    perturbed(ours)
    hf.load_state_dict(ours.state_dict(), strict=True)  # same names and shapes: word, transformation, tables, norm
    b = batch(pad_last=0)
    with torch.no_grad():
        expected = hf(b["input_ids"], b["token_type_ids"])
        torch.testing.assert_close(ours(b["input_ids"], b["token_type_ids"]), expected, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ours(**b), expected, atol=1e-6, rtol=1e-6)  # an all-ones mask changes nothing


def test_trigram_student_ignores_padding() -> None:
    """A padded neighbour counts as zero (as past the end), even with a non-zero [PAD] row: real positions give
    what the unpadded sequence gives."""
    model = perturbed(StudentModel(config(**MOBILEBERT)))
    assert model.embeddings.word_embeddings.weight[0].abs().sum() > 0
    b = batch(pad_last=3)
    with torch.no_grad():
        padded = model(**b).last_hidden_state[1, :-3]
        alone = model(**{k: v[1:, :-3] for k, v in b.items()}).last_hidden_state[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_factors_reach_every_norm_and_activation() -> None:
    model = StudentForPreTraining(config(**MOBILEBERT))
    encoder_norms = [m for m in model.student.modules() if isinstance(m, (nn.LayerNorm, NoNorm))]
    # embeddings + per block: attention output, each FFN, and the two bottleneck maps where hidden != bottleneck
    assert len(encoder_norms) == 1 + (1 + 2 + 2) + (1 + 1 + 2) and all(isinstance(m, NoNorm) for m in encoder_norms)
    assert isinstance(model.mlm.LayerNorm, nn.LayerNorm)  # HF MobileBERT's head transform keeps its LayerNorm
    assert all(isinstance(ffn.act, nn.ReLU) for block in model.student.blocks for ffn in block.ffns)
    assert model.student.embeddings.word_embeddings.weight.shape == (VOCAB, 8)
    assert model.student.embeddings.embedding_transformation.weight.shape == (32, 24)
    assert model.student.embeddings.position_embeddings.weight.shape == (64, 32)
    assert model.mlm.decoder.weight is model.student.embeddings.word_embeddings.weight  # still tied, at E


def test_defaults_are_the_bert_style_template() -> None:
    """Default factors build no new module; spelling them out changes nothing (the HF-BERT parity and the other
    tests of tests/test_student.py hold the default template itself)."""
    default = StudentModel(config())
    assert default.embeddings.embedding_transformation is None
    assert not [m for m in default.modules() if isinstance(m, NoNorm)]
    torch.manual_seed(0)
    a = perturbed(StudentModel(config()))
    torch.manual_seed(0)
    b = perturbed(StudentModel(config(normalization_type="layer_norm", hidden_act="gelu", embedding_size=32,
                                      trigram_input=False)))  # fmt: skip
    assert a.state_dict().keys() == b.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(a(**batch()).last_hidden_state, b(**batch()).last_hidden_state, atol=0, rtol=0)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"normalization_type": "batch_norm"}, r"normalization_type must be one of \('layer_norm', 'no_norm'\)"),
        ({"embedding_size": 64}, r"embedding_size=64 is wider than the first block's hidden_size=32.*use <= 32"),
        ({"embedding_size": 0}, r"embedding_size must be a positive integer or null"),
        ({"trigram_input": "yes"}, r"trigram_input must be true or false"),
        ({"hidden_act": "swishy"}, r"hidden_act='swishy' is unknown"),
    ],
)
def test_bad_factors_fail_naming_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=r"student\." + message):
        config(**kwargs)
    with pytest.raises(ValueError, match=r"student\." + message):
        StudentSpec(num_blocks=2, blocks=BLOCKS, **kwargs)


# ------------------------------------------------------------------------------------------------ size, cost


@pytest.mark.parametrize(
    "factors",
    [MOBILEBERT, {"embedding_size": 8}, {"embedding_size": 32, "trigram_input": True}, {"normalization_type": "no_norm"}],
    ids=["nonorm-relu-trigram", "narrow", "trigram-unfactorised", "nonorm"],
)
def test_sizes_and_flops_count_the_factorised_embedding(factors: dict) -> None:
    cfg = config(num_labels=2, **factors)
    assert num_parameters(cfg) == StudentModel(cfg).num_parameters()
    assert num_parameters(cfg, "pretraining") == StudentForPreTraining(cfg).num_parameters()
    assert num_parameters(cfg, "classification") == StudentForSequenceClassification(cfg).num_parameters()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        StudentModel(cfg).eval()(**batch(pad_last=0), output_attentions=True)
    assert flops(cfg, seq_len=11, batch_size=2) == counter.get_total_flops()


def test_nonorm_and_relu_leave_flops_alone_and_trigram_adds_its_dense_map() -> None:
    plain = flops(config(), 128)
    assert flops(config(normalization_type="no_norm", hidden_act="relu"), 128) == plain
    # 128 tokens x (3E x H_1) multiply-accumulates, x 2 FLOPs each
    assert flops(config(embedding_size=8, trigram_input=True), 128) - plain == 2 * 128 * 24 * 32


# ------------------------------------------------------------------------------------------------ downstream


def test_saves_and_loads_through_the_auto_classes(tmp_path) -> None:
    torch.manual_seed(0)
    model = perturbed(StudentForSequenceClassification(config(**MOBILEBERT, **LABELS)))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {k: saved[k] for k in MOBILEBERT} == MOBILEBERT
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.student.embeddings.LayerNorm, NoNorm)
    b = batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**b).logits, model(**b).logits, atol=0, rtol=0)
        torch.testing.assert_close(encoder(**b).pooler_output, model.student(**b).pooler_output, atol=0, rtol=0)


def test_not_stock_bert_but_relu_alone_is() -> None:
    plain = [BlockSpec(32, 32, 4, 64, 1)] * 2
    assert stock_bert_config(config(plain, hidden_act="relu")).hidden_act == "relu"
    for factors in ({"normalization_type": "no_norm"}, {"embedding_size": 16}, {"trigram_input": True}, MOBILEBERT):
        assert stock_bert_config(config(plain, **factors)) is None, factors


LOADER = r"""
import json, os, sys
root = os.path.realpath(sys.argv[1])
sys.path = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != root]
import importlib.util
assert importlib.util.find_spec("modules") is None
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
model = AutoModelForSequenceClassification.from_pretrained(sys.argv[2], trust_remote_code=True).eval()
batch = AutoTokenizer.from_pretrained(sys.argv[2])(json.loads(sys.argv[3]), padding=True, return_tensors="pt")
with torch.no_grad():
    torch.save({"logits": model(**batch).logits, "module": type(model).__module__}, sys.argv[4])
"""


@pytest.mark.slow
def test_portable_export_loads_without_the_project(tokenizer, tmp_path) -> None:
    """A fresh interpreter without the project on sys.path loads the copied code and gives identical logits."""
    texts = ["the movie was very good", "a boring plot and bad actor i hate"]
    torch.manual_seed(0)
    model = perturbed(StudentForSequenceClassification(
        StudentConfig(blocks=[asdict(b) for b in BLOCKS], vocab_size=len(tokenizer), max_position_embeddings=64,
                      **MOBILEBERT, **LABELS)))  # fmt: skip
    assert save_for_serving(model, tokenizer, tmp_path / "saved") == "remote_code"
    assert sorted(p.name for p in (tmp_path / "saved").glob("*.py")) == ["student.py", "student_blocks.py"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-I", "-c", LOADER, str(root), str(tmp_path / "saved"), json.dumps(texts),
                           str(tmp_path / "out.pt")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    assert out["module"].startswith("transformers_modules.")
    with torch.no_grad():
        expected = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(out["logits"], expected, atol=0, rtol=0)


def test_onnx_export_matches_eager(tmp_path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from modules.onnx_export import example_inputs, export_onnx, onnx_session

    torch.manual_seed(0)
    model = perturbed(StudentForSequenceClassification(config(**MOBILEBERT, num_labels=3)))
    names = export_onnx(model, tmp_path / "model.onnx", VOCAB)
    session = onnx_session(tmp_path / "model.onnx")
    inputs = example_inputs(VOCAB, batch_size=3, seq_len=23, seed=5)  # a shape the export never saw, padded
    got = session.run(names, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        expected = model(**inputs).logits
    torch.testing.assert_close(torch.from_numpy(got[names.index("logits")]), expected, atol=1e-4, rtol=1e-4)


def test_teacher_embeddings_initialise_a_factorised_student() -> None:
    """Teacher tables E wide: the word table is copied exactly, the tables at H_1 resampled, and the dense map's
    centre takes a word row to its resampling at H_1 (neighbour taps zero); a NoNorm keeps its identity start."""
    gen = torch.Generator().manual_seed(3)
    tables = EmbeddingWeights(word=torch.randn(VOCAB, 8, generator=gen), position=torch.randn(80, 8, generator=gen),
                              token_type=torch.randn(2, 8, generator=gen), norm_weight=torch.rand(8, generator=gen),
                              norm_bias=torch.randn(8, generator=gen))  # fmt: skip
    student = StudentModel(config(**MOBILEBERT))
    init_embeddings_from_teacher(student, tables)
    emb = student.embeddings
    torch.testing.assert_close(emb.word_embeddings.weight, tables.word, atol=0, rtol=0)
    torch.testing.assert_close(emb.position_embeddings.weight, resample_features(tables.position[:64], 32, "interpolate"))
    # whatever the neighbours (token t+1, t-1) hold, the start map reads only token t
    neighbours = torch.randn(VOCAB, 8, generator=gen), torch.randn(VOCAB, 8, generator=gen)
    lifted = emb.embedding_transformation(torch.cat([neighbours[0], tables.word, neighbours[1]], -1))
    torch.testing.assert_close(lifted, resample_features(tables.word, 32, "interpolate"), atol=1e-5, rtol=1e-5)
    assert torch.equal(emb.LayerNorm.weight, torch.ones(32)) and torch.equal(emb.LayerNorm.bias, torch.zeros(32))
    init_embeddings_from_teacher(StudentModel(config(**MOBILEBERT)), tables, "pca")  # the PCA path runs too


def test_latency_cache_key_names_the_factors_only_where_set() -> None:
    before = ('{"blocks": [{"bottleneck_size": 16, "hidden_size": 32, "intermediate_size": 48, "num_ffn": 2, '
              '"num_heads": 2}, {"bottleneck_size": 16, "hidden_size": 48, "intermediate_size": 32, "num_ffn": 1, '
              '"num_heads": 4}], "hidden_act": "gelu", "max_position_embeddings": 64, "type_vocab_size": 2, '
              f'"vocab_size": {VOCAB}}}')  # fmt: skip
    assert architecture_id(StudentModel(config())) == before  # the key a default student always had
    keys = {architecture_id(StudentModel(config(**factors))) for factors in
            ({}, {"normalization_type": "no_norm"}, {"embedding_size": 8}, {"trigram_input": True}, MOBILEBERT)}  # fmt: skip
    assert len(keys) == 5


def test_search_space_offers_the_factors_as_choices() -> None:
    default = StudentSpace()
    assert not [k for k in default.parameters() if k.startswith("factors.")]
    space = StudentSpace(factors={"normalization_type": ["layer_norm", "no_norm"], "hidden_act": ["gelu", "relu"],
                                  "embedding_size": [None, 128], "trigram_input": [False, True]})  # fmt: skip
    entries = space.parameters()
    assert list(entries)[: len(default.parameters())] == list(default.parameters())  # the old entries, in order
    assert entries["factors.embedding_size"].options == [None, 128]
    value = {k: p.options[-1] for k, p in entries.items()}
    assigned = space.assignments(value)
    assert {k: assigned[f"student.{k}"] for k in MOBILEBERT} == {**MOBILEBERT, "embedding_size": 128}
    assert space.describe(assigned).endswith("normalization_type='no_norm' hidden_act='relu' embedding_size=128 "
                                             "trigram_input=true")  # fmt: skip
    with pytest.raises(ValueError, match=r"space\.factors\.embedding_size=\[256\].*smallest searched hidden size 128"):
        StudentSpace(factors={"embedding_size": [256]})
    with pytest.raises(ValueError, match=r"space\.factors\.normalization_type: \['batch_norm'\] not allowed"):
        StudentSpace(factors={"normalization_type": ["batch_norm"]})
    with pytest.raises(ValueError, match=r"student\.hidden_act is searched by space\.factors already"):
        StudentSpace(block=None, factors={"hidden_act": ["relu"]}, params=["student.hidden_act=choice(gelu,relu)"])


def test_a_trial_gets_the_chosen_factors(tmp_path) -> None:
    """recipe=autodistill's trial config carries the proposed factors into the student it distils."""
    from hydra import compose, initialize_config_dir

    import run
    from recipes.autodistill import trial_config

    overrides = ["search.space.factors.normalization_type=[layer_norm,no_norm]",
                 "search.space.factors.hidden_act=[gelu,relu]", "search.space.factors.embedding_size=[null,128]",
                 "search.space.factors.trigram_input=[false,true]"]  # fmt: skip
    with initialize_config_dir(config_dir=str(Path(run.__file__).parent / "conf"), version_base="1.3"):
        base = run.to_run_config(compose("run", overrides=overrides), str(tmp_path))
    space = base.search.space
    value = {k: p.options[-1] for k, p in space.parameters().items()}
    trial = trial_config(base, space.assignments(value), base.recipe.distill_config("flash"), tmp_path / "t")
    assert {k: getattr(trial.student, k) for k in MOBILEBERT} == {**MOBILEBERT, "embedding_size": 128}


@pytest.mark.smoke
def test_distils_end_to_end(tiny_teacher_dir, pairs_corpus, tmp_path) -> None:
    """Progressive transfer + pre-training distillation of a NoNorm + ReLU + trigram student: the factorised
    embedding trains in stage 1, the saved student loads through AutoModel with the same outputs."""
    from recipes import distill
    from tests.test_distill import tiny_run_config

    cfg = tiny_run_config(tmp_path / "run", tiny_teacher_dir, pairs_corpus, "recipe.regular_steps=20",
                          "student.normalization_type=no_norm", "student.hidden_act=relu",
                          "student.embedding_size=8", "student.trigram_input=true")  # fmt: skip
    metrics = distill.run(cfg)
    assert metrics["steps"] == 20 and all(torch.isfinite(torch.tensor(metrics[f"val/{t}"])) for t in ("fm", "loss"))
    student = AutoModel.from_pretrained(tmp_path / "run" / "student").eval()
    assert isinstance(student.embeddings.LayerNorm, NoNorm) and student.config.trigram_input
    assert metrics["params"] == num_parameters(student.config)
    centre = student.embeddings.embedding_transformation.weight[:, 8:16]
    interpolation = resample_features(torch.eye(8), 24, "interpolate").T  # where the teacher init left it
    assert not torch.allclose(centre, interpolation, atol=1e-4)  # stage 1 trained the embedding map
    assert student.embeddings.embedding_transformation.weight[:, :8].abs().sum() > 0  # and the neighbour taps
