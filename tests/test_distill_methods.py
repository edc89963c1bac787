"""The survey's pre-training stage in the distill recipe (issue 18): DistilBERT, TinyBERT's general distillation and
PD's MLM pre-training as loss mixes (each equal to its hand-computed sum), truncation init, the attention-score term,
config errors before training, and each preset end to end on a tiny teacher."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import BertForPreTraining

import run
from modules.distillation import DistillationModule, LossWeights
from modules.distillation_config import TruncationInit
from modules.mlm_head import build_mlm_head
from modules.progressive import progressive_schedule
from modules.student_from_teacher import plan_layers, truncated_pretraining_student
from modules.teacher import TeacherConfig, load_teacher
from recipes import distill
from tests.conftest import tiny_bert_config
from tests.test_distill import tiny_pretraining_parts, tiny_run_config

DISTILBERT = dict(mlm=2.0, mlm_kd=5.0, temperature=2.0, nsp=0.0, cosine=1.0)
TINYBERT = dict(mlm=0.0, mlm_kd=0.0, nsp=0.0, attention=0.0, feature=1.0, layerwise_in_pretraining=1.0,
                attention_scores=1.0, embedding=1.0)  # fmt: skip
PD = dict(mlm=1.0, mlm_kd=0.0, nsp=0.0)


def module_for(parts, student, weights: dict, teacher_layers: list[int]) -> DistillationModule:
    schedule = progressive_schedule(student.config.num_blocks, 10, 0.0)
    module = DistillationModule(student, parts.teacher, teacher_layers, schedule, LossWeights(**weights), None, 0.0, 0)
    return module.train()


def naive_kd(student_logits, teacher_logits, t: float) -> torch.Tensor:
    """T²·mean over rows of Σ_v p_t,v (log p_t,v − log p_s,v) at temperature T, one row at a time."""
    rows = []
    for s, q in zip(student_logits, teacher_logits):
        p = torch.softmax(q / t, -1)
        rows.append((p * (torch.log(p) - torch.log_softmax(s / t, -1))).sum())
    return torch.stack(rows).mean() * t * t


def naive_cos(student_hidden, teacher_hidden, mask) -> torch.Tensor:
    terms = [1 - F.cosine_similarity(student_hidden[b, i], teacher_hidden[b, i], dim=0)
             for b in range(mask.shape[0]) for i in range(mask.shape[1]) if mask[b, i]]  # fmt: skip
    return torch.stack(terms).mean()


def naive_mse(a, b, mask) -> torch.Tensor:
    rows = [((a[i, s] - b[i, s]) ** 2).mean() for i in range(mask.shape[0]) for s in range(mask.shape[1]) if mask[i, s]]
    return torch.stack(rows).mean()


def naive_scores(attention, x, heads: int) -> torch.Tensor:
    """(B, S, H) input of a self-attention -> (B, heads, S, S) q·kᵀ/√d, head by head."""
    q, k = attention.query(x), attention.key(x)
    d = q.shape[-1] // heads
    return torch.stack([q[..., h * d:(h + 1) * d] @ k[..., h * d:(h + 1) * d].transpose(-1, -2) / d**0.5
                        for h in range(heads)], dim=1)  # fmt: skip


def naive_score_mse(s, t, mask) -> torch.Tensor:
    """Teacher heads averaged in groups down to the student's count, MSE over real (query, key) pairs and heads."""
    t = t.view(t.shape[0], s.shape[1], -1, *t.shape[2:]).mean(2)
    vals = [(s[b, h, i, j] - t[b, h, i, j]) ** 2 for b in range(s.shape[0]) for h in range(s.shape[1])
            for i in range(s.shape[2]) for j in range(s.shape[3]) if mask[b, i] and mask[b, j]]  # fmt: skip
    return torch.stack(vals).mean()


# --------------------------------------------------------------------------------------------------
# Loss mixes = hand-computed sums
# --------------------------------------------------------------------------------------------------


def test_distilbert_mix_is_5_kd_plus_2_mlm_plus_cos(tiny_teacher_dir, pairs_corpus, tmp_path) -> None:
    parts = tiny_pretraining_parts(tiny_teacher_dir, pairs_corpus, tmp_path)
    student, _ = truncated_pretraining_student(parts.teacher, [1])
    module = module_for(parts, student, DISTILBERT, [1])
    for m in student.modules():  # dropout off, so the hand computation sees the same forward
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout_p"):  # attention dropout
            m.dropout_p = 0.0
    with torch.no_grad():  # a copy predicts like the teacher: move its head and block, so neither KD nor cos is ~0
        g = torch.Generator().manual_seed(0)
        student.mlm.bias.normal_(generator=g)
        for p in student.student.blocks[0].parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    batch, mask = parts.batch, parts.batch["attention_mask"]
    losses = module.compute_losses(batch, module.schedule[-1], "train/0")

    masked = batch["labels"] != -100
    t = parts.teacher(batch["input_ids"], mask, batch["token_type_ids"])
    enc = student.student(batch["input_ids"], mask, batch["token_type_ids"])
    s_logits = student.mlm(enc.last_hidden_state)[masked]
    mlm = F.cross_entropy(s_logits, batch["labels"][masked])
    kd = naive_kd(s_logits, t.mlm_logits[masked], 2.0)
    cos = naive_cos(enc.last_hidden_state, t.hidden_states[-1], mask)
    assert losses["loss"].item() == pytest.approx((5 * kd + 2 * mlm + cos).item(), rel=1e-5)
    assert losses["mlm_kd"].item() == pytest.approx(kd.item(), rel=1e-5)
    assert losses["cos"].item() == pytest.approx(cos.item(), rel=1e-5)
    assert "nsp" not in losses and cos.item() > 1e-2 and kd.item() > 1e-2  # NSP off; both terms real


def test_tinybert_mix_is_scores_plus_hidden_plus_embedding(tiny_teacher_dir, pairs_corpus, tmp_path) -> None:
    """Σ_m [Eq. 7 + Eq. 8] + Eq. 9 on a 24-wide, 2-head student of the 32-wide, 4-head teacher (W_h, W_e learned)."""
    parts = tiny_pretraining_parts(tiny_teacher_dir, pairs_corpus, tmp_path)
    student = parts.student
    module = module_for(parts, student, TINYBERT, [0, 1])
    batch, mask = parts.batch, parts.batch["attention_mask"]
    losses = module.compute_losses(batch, module.schedule[-1], "train/0")
    assert set(losses) == {"loss", "mha", "fm", "attn_score", "emb"}  # no MLM, no NSP

    bert = parts.teacher.model.bert
    t = parts.teacher(batch["input_ids"], mask, batch["token_type_ids"])
    enc = student.student(batch["input_ids"], mask, batch["token_type_ids"], output_hidden_states=True)
    inputs = [enc.embeddings, enc.block_outputs[0]]
    attn = sum(naive_score_mse(naive_scores(student.student.blocks[k].attention, inputs[k], 2),
                               naive_scores(bert.encoder.layer[k].attention.self, t.hidden_states[k - 1] if k else t.embeddings, 4),
                               mask) for k in range(2))  # fmt: skip
    hidden = sum(naive_mse(module.projections[k](enc.block_outputs[k]), t.hidden_states[k], mask) for k in range(2))
    emb = naive_mse(module.embedding_projection(enc.embeddings), t.embeddings, mask)
    assert losses["attn_score"].item() == pytest.approx(attn.item(), rel=1e-4)
    assert losses["emb"].item() == pytest.approx(emb.item(), rel=1e-5)
    assert losses["loss"].item() == pytest.approx((attn + hidden + emb).item(), rel=1e-4)
    assert "embedding_projection.weight" in dict(module.named_parameters())  # and so trained (configure_optimizers)


def test_pd_mix_is_mlm_alone_and_never_runs_the_teacher(tiny_teacher_dir, pairs_corpus, tmp_path, monkeypatch) -> None:
    parts = tiny_pretraining_parts(tiny_teacher_dir, pairs_corpus, tmp_path)
    module = module_for(parts, parts.student, PD, [0, 1])
    monkeypatch.setattr(type(parts.teacher), "forward", lambda *a, **k: pytest.fail("PD ran the teacher"))
    batch = parts.batch
    masked = batch["labels"] != -100
    for training in (True, False):
        module.train(training)
        losses = module.compute_losses(batch, module.schedule[-1], "val/0")
        enc = parts.student.student(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        mlm = F.cross_entropy(parts.student.mlm(enc.last_hidden_state[masked]), batch["labels"][masked])
        assert losses["loss"].item() == pytest.approx(mlm.item(), rel=1e-6)
        assert set(losses) == {"loss", "mlm", "mlm_acc"}


def test_attention_term_reads_pre_softmax_scores(tiny_teacher_dir, pairs_corpus, tmp_path) -> None:
    """A key bias adds q_i·b/√d to every score of query row i: softmax (so the probabilities, and AutoDistill's KL
    on them) cannot see it; TinyBERT's score MSE must."""
    parts = tiny_pretraining_parts(tiny_teacher_dir, pairs_corpus, tmp_path)
    module = module_for(parts, parts.student, {**TINYBERT, "attention": 1.0}, [0, 1])
    before = module.compute_losses(parts.batch, module.schedule[-1], "train/0")
    probs = parts.teacher(parts.batch["input_ids"], parts.batch["attention_mask"]).attentions
    with torch.no_grad():
        for layer in parts.teacher.model.bert.encoder.layer:
            layer.attention.self.key.bias.add_(torch.randn_like(layer.attention.self.key.bias))
    after = module.compute_losses(parts.batch, module.schedule[-1], "train/0")
    shifted = parts.teacher(parts.batch["input_ids"], parts.batch["attention_mask"]).attentions
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(probs, shifted))
    assert after["mha"].item() == pytest.approx(before["mha"].item(), rel=1e-4)
    assert abs(after["attn_score"].item() - before["attn_score"].item()) > 0.1 * before["attn_score"].item()


def test_default_weights_are_autodistill() -> None:
    """The new fields default to AutoDistill's L_D (the rest of tests/test_distill.py holds its numbers)."""
    w = LossWeights()
    assert not w.absolute and w.nsp == 1.0 and w.pretraining_teacher_terms(True) == ["mlm_kd"]
    assert w.pretraining_teacher_terms(False) == [] and w.describe(True) == "0.5·L_MLM-KD(T=1) + 0.5·L_MLM + 1·L_NSP"


# --------------------------------------------------------------------------------------------------
# Truncation init in the recipe
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def deep_teacher_dir(tmp_path, tokenizer) -> Path:
    """A 4-layer random BERT with heads (the shared tiny teachers have 2: too few to skip one)."""
    torch.manual_seed(3)
    path = tmp_path / "deep_teacher"
    BertForPreTraining(tiny_bert_config(len(tokenizer), num_hidden_layers=4)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_recipe_truncation_copies_exactly_the_named_layers(deep_teacher_dir, pairs_corpus, tmp_path) -> None:
    cfg = tiny_run_config(tmp_path / "run", deep_teacher_dir, pairs_corpus, "recipe.init.num_layers=2")
    teacher = load_teacher(cfg.teacher)
    student = distill.build_student(cfg, teacher).eval()
    assert plan_layers(cfg.recipe.init, 4) == [0, 2]  # DistilBERT's every other layer
    bert = teacher.model.bert
    ids = torch.randint(5, 60, (2, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    ext = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    with torch.no_grad():
        t = bert(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        s = student.student(ids, mask, output_hidden_states=True)
        assert torch.equal(s.embeddings, t[0])
        for k, layer in enumerate([0, 2]):  # block k computes teacher layer `layer`: fed that layer's input, its output
            want = bert.encoder.layer[layer](t[layer], attention_mask=ext)
            want = want[0] if isinstance(want, tuple) else want
            got, _ = student.student.blocks[k](t[layer], ext, False)
            assert torch.allclose(got, want, atol=1e-5), k
        assert torch.allclose(s.block_outputs[0], t[1], atol=1e-5)  # and before training, exactly layer 1's output
    assert torch.equal(student.mlm.dense.weight, teacher.model.cls.predictions.transform.dense.weight)
    assert torch.equal(student.nsp.weight, teacher.model.cls.seq_relationship.weight)


def test_truncation_copies_a_fitted_mlm_head(tiny_bare_teacher_dir) -> None:
    teacher = load_teacher(TeacherConfig(name_or_path=str(tiny_bare_teacher_dir)))
    head = build_mlm_head(teacher)
    with torch.no_grad():
        head.predictions.bias.normal_()
        head.predictions.transform.dense.weight.normal_()
    teacher.attach_mlm_head(head, "test")
    student, note = truncated_pretraining_student(teacher, [1])
    assert torch.equal(student.mlm.bias, head.predictions.bias)
    assert torch.equal(student.mlm.dense.weight, head.predictions.transform.dense.weight)
    assert "MLM head (the fitted one)" in note and "random: NSP head" in note


# --------------------------------------------------------------------------------------------------
# Config errors before training, presets end to end
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["recipe.init.layers=[0,5]"], r"recipe.init.layers=\[0, 5\]: \[5\] outside the teacher's layers 0..3"),
        (["recipe.init.num_layers=3"], r"recipe.init.num_layers=3: scheme every_other on a 4-layer teacher takes 1..2"),
        (["recipe.losses.mlm=2", "recipe.losses.mlm_kd=5", "recipe.losses.alpha=0.9"], "recipe.losses.alpha=0.9 has no"),
        (["recipe.losses.mlm=2"], "give both absolute weights"),
        (["recipe.losses.mlm=0", "recipe.losses.mlm_kd=0"], "recipe.losses.nsp=1.0 with mlm = mlm_kd = 0"),
    ],
)  # fmt: skip
def test_config_errors_name_the_field(deep_teacher_dir, pairs_corpus, tmp_path, overrides, message) -> None:
    with pytest.raises(Exception, match=message):
        distill.run(tiny_run_config(tmp_path / "run", deep_teacher_dir, pairs_corpus, *overrides))
    assert not (tmp_path / "run").exists()


def test_soft_targets_without_mlm_logits_fail_before_training(tiny_bare_teacher_dir, pairs_corpus, tmp_path) -> None:
    cfg = tiny_run_config(tmp_path / "run", tiny_bare_teacher_dir, pairs_corpus, "recipe.losses.mlm=2",
                          "recipe.losses.mlm_kd=5", "recipe.progressive_ratio=0")  # fmt: skip
    with pytest.raises(ValueError, match="recipe.losses.mlm_kd=5.0 needs the teacher's MLM logits.*teacher.mlm_head=fit"):
        distill.run(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_truncation_refuses_a_student_override() -> None:
    cfg = type("Cfg", (), {})()
    cfg.recipe = type("R", (), {"init": TruncationInit(num_layers=3)})()
    with pytest.raises(ValueError, match="student.num_blocks=6: recipe.init .* drop the student override"):
        distill.check_truncation(cfg, ["experiment=distilbert", "student.num_blocks=6"])


@pytest.mark.smoke
def test_student_override_is_refused_from_run_py(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "run.py", "experiment=distilbert", "student=demo", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=Path(run.__file__).parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode != 0
    assert "student=demo: recipe.init (truncation init)" in out.stderr + out.stdout


PRESET_OVERRIDES = {
    "distilbert": ["recipe.init.num_layers=1"],  # the tiny teacher's 2 layers -> layer 0
    "tinybert_general": [],
    "pd_pretrain": [],
}


@pytest.mark.smoke
@pytest.mark.parametrize("preset", sorted(PRESET_OVERRIDES))
def test_preset_runs_end_to_end(preset, tiny_teacher_dir, pairs_corpus, tmp_path) -> None:
    cfg = tiny_run_config(tmp_path / "run", tiny_teacher_dir, pairs_corpus, f"experiment={preset}",
                          "recipe.regular_steps=12", "recipe.measure_latency=false", *PRESET_OVERRIDES[preset])  # fmt: skip
    metrics = distill.run(cfg)
    assert metrics["steps"] == 12
    saved = BertForPreTraining.from_pretrained(tmp_path / "run" / "student")  # BERT-shaped students save as stock BERT
    expected = {"distilbert": {"val/mlm_kd", "val/cos", "val/mlm"}, "tinybert_general": {"val/attn_score", "val/emb", "val/fm"},
                "pd_pretrain": {"val/mlm"}}[preset]  # fmt: skip
    assert expected <= set(metrics) and "val/nsp" not in metrics
    if preset == "distilbert":
        assert saved.config.num_hidden_layers == 1 and saved.config.hidden_size == 32
    if preset == "pd_pretrain":
        assert "val/mha" not in metrics  # the teacher never ran


@pytest.mark.smoke
def test_teacher_cache_stores_tinybert_targets(tiny_teacher_dir, pairs_corpus, tmp_path) -> None:
    """The cache keeps the attention scores and embeddings TinyBERT reads: a cold and a warm float32 run equal an
    uncached one, and the warm run never calls the teacher; AutoDistill's entries (another key) are not read."""
    from modules.teacher_cache import MEMORY_STORE

    MEMORY_STORE.clear()
    common = ["experiment=tinybert_general", "recipe.regular_steps=8", "recipe.measure_latency=false"]
    cached = ["recipe.teacher_cache.mode=memory", "recipe.teacher_cache.dtype=float32"]
    distill.run(tiny_run_config(tmp_path / "autodistill", tiny_teacher_dir, pairs_corpus, "recipe.regular_steps=8",
                                "recipe.measure_latency=false", *cached))  # fmt: skip
    plain = distill.run(tiny_run_config(tmp_path / "plain", tiny_teacher_dir, pairs_corpus, *common))
    cold = distill.run(tiny_run_config(tmp_path / "cold", tiny_teacher_dir, pairs_corpus, *common, *cached))
    warm = distill.run(tiny_run_config(tmp_path / "warm", tiny_teacher_dir, pairs_corpus, *common, *cached))
    assert cold["teacher_cache/hits"] == 0 and warm["teacher_cache/misses"] == 0
    assert plain["val/loss"] == cold["val/loss"] == warm["val/loss"]
    assert plain["val/attn_score"] == warm["val/attn_score"] and plain["val/emb"] == warm["val/emb"]
