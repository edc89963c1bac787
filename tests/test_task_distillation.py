"""The survey's task-stage methods in recipe=finetune (issue 18): PKD's loss wiring against a hand computation, its
layer maps, TinyBERT's attention term on pre-softmax scores, the truncated student equal to its teacher, the learned
projections in the optimizer, unlabelled (transfer) rows without CE, and the config errors, all before training."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

from modules.distillation_config import TruncationInit
from modules.finetuning import FinetuneModule
from modules.intermediate_config import IntermediateKDConfig
from modules.losses import KDSettings
from modules.student import StudentForSequenceClassification
from modules.task_intermediate import IntermediateDistiller, encode, state_widths, task_layer_pairs
from tests.conftest import tiny_bert_config


def classifier(vocab: int, layers: int, hidden: int = 32, heads: int = 4, seed: int = 0) -> BertForSequenceClassification:
    """A tiny random BERT classifier without dropout (two forwards of it agree exactly)."""
    torch.manual_seed(seed)
    config = tiny_bert_config(vocab, num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                              intermediate_size=2 * hidden, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                              num_labels=2)  # fmt: skip
    return BertForSequenceClassification(config)


def batch_of(vocab: int, rows: int = 4, length: int = 7) -> dict[str, torch.Tensor]:
    """Random rows, some padded: row r has length − r real tokens."""
    g = torch.Generator().manual_seed(3)
    mask = torch.ones(rows, length, dtype=torch.long)
    for r in range(rows):
        mask[r, length - r :] = 0
    ids = torch.randint(5, vocab, (rows, length), generator=g) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": torch.tensor([0, 1, 1, 0][:rows])}  # fmt: skip


# ---------------------------------------------------------------------------------------------- layer maps


def test_pkd_skip_and_last_layer_maps_are_the_papers() -> None:
    pkd = partial(IntermediateKDConfig, kind="pkd")
    # the paper's 6-of-12 student: PKD-Skip {2, 4, 6, 8, 10}, PKD-Last {7, ..., 11}; layer 6 learns through the logits
    assert task_layer_pairs(pkd(layer_map="skip"), 6, 12) == [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10)]
    assert task_layer_pairs(pkd(layer_map="last"), 6, 12) == [(1, 7), (2, 8), (3, 9), (4, 10), (5, 11)]
    # k = 3 of the 6-layer MiniLM; 3 of 12 (the paper's PKD-Skip for k = 3: {4, 8})
    assert task_layer_pairs(pkd(), 3, 6) == [(1, 2), (2, 4)] and task_layer_pairs(pkd(), 3, 12) == [(1, 4), (2, 8)]
    assert task_layer_pairs(pkd(layer_map="last"), 3, 6) == [(1, 4), (2, 5)]
    assert task_layer_pairs(pkd(layer_map="explicit", layers=[0, 2]), 3, 6) == [(1, 1), (2, 3)]
    # TinyBERT pairs every student layer, g(m) = m·N/M
    assert task_layer_pairs(IntermediateKDConfig(kind="tinybert"), 4, 12) == [(1, 3), (2, 6), (3, 9), (4, 12)]
    with pytest.raises(ValueError, match="layer_map=skip.*not a multiple.*uniform"):
        task_layer_pairs(pkd(), 4, 6)
    with pytest.raises(ValueError, match=r"layers=\[0\]: give 2"):
        task_layer_pairs(pkd(layer_map="explicit", layers=[0]), 3, 6)
    with pytest.raises(ValueError, match="k >= 2"):
        task_layer_pairs(pkd(), 1, 6)


# ---------------------------------------------------------------------------------------------- PKD's loss


def test_pkd_training_loss_equals_the_hand_computed_mix(tokenizer) -> None:
    """(1 − α)·CE + α·T²·KL + β·L_PT through FinetuneModule.training_step, the student narrower than the teacher (so
    [CLS] states go through the learned projections), PKD-Last of 3 student layers on 4 teacher layers."""
    vocab = len(tokenizer)
    teacher, student = classifier(vocab, 4, seed=0).eval(), classifier(vocab, 3, hidden=16, seed=1)
    cfg = IntermediateKDConfig(kind="pkd", beta=7.0, layer_map="last")
    pairs = task_layer_pairs(cfg, 3, 4)
    assert pairs == [(1, 2), (2, 3)]
    distiller = IntermediateDistiller(cfg, pairs, state_widths(student), state_widths(teacher))
    alpha, temp = 0.3, 4.0
    module = FinetuneModule(student, 2, ("acc",), partial(torch.optim.AdamW, lr=1e-3), total_steps=1,
                            kd_teacher=teacher, kd=KDSettings(gamma=alpha, temperature=temp), intermediate=distiller)  # fmt: skip
    batch = batch_of(vocab)
    loss = module.training_step(batch, 0)

    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    s_out = student(**inputs, output_hidden_states=True)
    with torch.no_grad():
        t_out = teacher(**inputs, output_hidden_states=True)
    ce = F.cross_entropy(s_out.logits, batch["labels"])
    p_t = F.softmax(t_out.logits / temp, -1)
    kl = (p_t * (p_t.log() - F.log_softmax(s_out.logits / temp, -1))).sum(-1).mean()
    sq, n = 0.0, 0
    for s, t in pairs:
        proj = distiller.projections[str(s)]
        h_s = s_out.hidden_states[s][:, 0] @ proj.weight.T + proj.bias  # (B, 32)
        h_t = t_out.hidden_states[t][:, 0]
        for b in range(h_s.shape[0]):
            diff = h_s[b] / h_s[b].norm() - h_t[b] / h_t[b].norm()
            sq, n = sq + (diff**2).sum(), n + diff.numel()
    pt = sq / n  # the authors' reduction: the mean over B·J·D
    expected = (1 - alpha) * ce + alpha * temp**2 * kl + 7.0 * pt
    assert torch.allclose(loss, expected, atol=1e-5), (loss, expected)
    # the projections are trained: in the optimizer, beside the student's weights
    optimized = {id(p) for g in module.configure_optimizers()["optimizer"].param_groups for p in g["params"]}
    assert {"1", "2"} == set(distiller.projections) and all(id(p) in optimized for p in distiller.parameters())


# ---------------------------------------------------------------------------------------------- TinyBERT's terms


def scores_by_hand(model: BertForSequenceClassification, states: tuple, layer: int) -> torch.Tensor:
    """Layer ``layer`` (1-based)'s q·kᵀ/√d from its input state, (B, h, S, S): the scores before the softmax."""
    att = model.bert.encoder.layer[layer - 1].attention.self
    x = states[layer - 1]
    b, s, _ = x.shape
    heads, size = model.config.num_attention_heads, model.config.hidden_size // model.config.num_attention_heads
    q = att.query(x).view(b, s, heads, size).transpose(1, 2)
    k = att.key(x).view(b, s, heads, size).transpose(1, 2)
    return q @ k.transpose(-1, -2) / math.sqrt(size)


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (a − b)² over the real (query, key) pairs and heads: (B, h, S, S) inputs, (B, S) mask."""
    pairs = (mask[:, None, :, None] * mask[:, None, None, :]).float()
    return ((a - b) ** 2 * pairs).sum() / (pairs.sum() * a.shape[1])


def test_tinybert_attention_term_reads_pre_softmax_scores(tokenizer) -> None:
    vocab = len(tokenizer)
    teacher, student = classifier(vocab, 4, seed=0).eval(), classifier(vocab, 2, hidden=16, seed=1)
    cfg = IntermediateKDConfig(kind="tinybert")
    pairs = task_layer_pairs(cfg, 2, 4)
    distiller = IntermediateDistiller(cfg, pairs, state_widths(student), state_widths(teacher))
    batch = batch_of(vocab)
    s, t = encode(student, batch, scores=True), encode(teacher, batch, scores=True)
    terms = distiller(student=s, teacher=t, attention_mask=batch["attention_mask"])
    mask = batch["attention_mask"]
    by_hand = sum(masked_mse(scores_by_hand(student, s.states, i), scores_by_hand(teacher, t.states, j), mask)
                  for i, j in pairs)  # fmt: skip
    assert torch.allclose(terms["attn"], by_hand, atol=1e-5)
    # the probabilities would give another number: the term is not an MSE of softmaxed maps
    probs = sum(masked_mse(scores_by_hand(student, s.states, i).softmax(-1), scores_by_hand(teacher, t.states, j).softmax(-1), mask)
                for i, j in pairs)  # fmt: skip
    assert (terms["attn"] - probs).abs() > 0.5 * terms["attn"]
    # hidden and embedding terms go through W_h / W_e (student 16 wide, teacher 32): real positions only
    real = mask[..., None].float()

    def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a - b) ** 2 * real).sum() / (real.sum() * b.shape[-1])

    hidn = sum(mse(distiller.project(i, s.states[i]), t.states[j]) for i, j in pairs)
    assert torch.allclose(terms["hidn"], hidn, atol=1e-6) and set(distiller.projections) == {"0", "1", "2"}
    assert torch.allclose(terms["embd"], mse(distiller.project(0, s.states[0]), t.states[0]), atol=1e-6)


# ---------------------------------------------------------------------------------------------- truncation init


@pytest.mark.parametrize("num_layers", [2, 4])
def test_truncated_student_equals_its_teacher_before_training(tokenizer, tmp_path: Path, num_layers: int) -> None:
    """recipe.init through the recipe's own path: the first k layers' states equal the teacher's; all layers (and the
    copied classifier) give the teacher's logits."""
    from recipes.task_kd import truncate

    path = tmp_path / "teacher"
    classifier(len(tokenizer), 4).save_pretrained(path)
    cfg = SimpleNamespace(recipe=SimpleNamespace(init=TruncationInit(num_layers=num_layers, scheme="first"), model=str(path)))
    teacher = AutoModelForSequenceClassification.from_pretrained(path).eval()
    student = truncate(cfg, str(path), AutoModelForSequenceClassification.from_pretrained(path), StudentForSequenceClassification)
    assert isinstance(student, StudentForSequenceClassification) and student.config.num_blocks == num_layers
    batch = batch_of(len(tokenizer))
    with torch.no_grad():
        s, t = encode(student.eval(), batch, scores=False), encode(teacher, batch, scores=False)
    assert len(s.states) == num_layers + 1
    for i in range(num_layers + 1):
        assert torch.allclose(s.states[i], t.states[i], atol=1e-5), i
    if num_layers == 4:
        assert torch.allclose(s.logits, t.logits, atol=1e-5)


# ---------------------------------------------------------------------------------------------- transfer rows


def test_unlabelled_rows_give_no_ce_and_no_ce_gradient(tokenizer) -> None:
    module = FinetuneModule(classifier(len(tokenizer), 1), 2, ("acc",), partial(torch.optim.AdamW), total_steps=1)
    logits = torch.randn(4, 2, requires_grad=True)
    labels, labelled = torch.tensor([1, -1, 0, -1]), torch.tensor([True, False, True, False])
    ce = module.task_loss(logits, labels, labelled)
    ce.backward()
    assert torch.allclose(ce, F.cross_entropy(logits[[0, 2]], labels[[0, 2]]))
    assert logits.grad[[1, 3]].abs().sum() == 0 and logits.grad[[0, 2]].abs().sum() > 0
    none = torch.zeros(4, dtype=torch.bool)  # a batch of transfer rows only: 0, still attached
    assert module.task_loss(logits, labels, none).item() == 0.0


def test_transfer_rows_join_the_training_batches_without_the_tasks_own_rows(tokenizer, tmp_path: Path) -> None:
    from datamodules.tokenized import TokenizedSplit, tokenize_texts
    from datamodules.transfer import WithUnlabelled, build_transfer_split, collate_with_labelled
    from datamodules.transfer_config import TransferDataConfig

    task = TokenizedSplit(**tokenize_texts([("the movie was good",), ("sad film",)], tokenizer, 16),
                          labels=torch.tensor([1, 0]))  # fmt: skip
    corpus = tmp_path / "pairs.txt"
    corpus.write_text("the movie was good\thello you\nsad film\twhat a night\ni love the city\tyes\n")
    split, dropped = build_transfer_split(TransferDataConfig(path=str(corpus)), tokenizer, ["text"], 16, 2, [task])
    assert dropped == 2 and len(split) == 4  # 6 sides, 2 of them the task's rows
    assert (split.labels == -1).all()
    joint = WithUnlabelled(task, split)
    batch = collate_with_labelled([joint[i] for i in range(len(joint))], pad_id=0)
    assert batch["labelled"].tolist() == [True, True, False, False, False, False]
    assert batch["input_ids"].shape[0] == 6 and len(joint.lengths) == 6


# ---------------------------------------------------------------------------------------------- config errors


def typed(*overrides: str):
    from hydra import compose, initialize_config_dir

    import run

    with initialize_config_dir(config_dir=str(run.CONF), version_base="1.3"):
        return OmegaConf.to_object(compose("run", overrides=["recipe=finetune", *overrides]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["recipe.task_kd.intermediate.kind=pkd"], r"recipe.task_kd.intermediate.kind distils from recipe.task_kd.teacher"),
        (["recipe.task_kd.transfer.path=x.txt"], r"recipe.task_kd.transfer.path distils from recipe.task_kd.teacher"),
        (["recipe.task_kd.teacher=t", "recipe.task_kd.transfer.path=x.txt", "recipe.task_kd.gamma=0"], r"gamma > 0"),
        (["recipe.task_kd.intermediate.only=true"], r"intermediate.only=true.*kind=tinybert"),
        (["recipe.task_kd.intermediate.layers=[1]"], r"intermediate.layers: give it exactly when .*layer_map=explicit"),
        (["recipe.task_kd.intermediate.kind=fitnets"], r"intermediate.kind: must be one of"),
        (["recipe.task_kd.transfer.format=csv"], r"transfer.format: must be one of"),
    ],
)
def test_config_errors_name_the_field_and_the_fix(overrides: list[str], message: str) -> None:
    with pytest.raises(Exception, match=message):
        typed(*overrides)


def test_preflight_refuses_a_map_the_depths_cannot_take_and_a_non_bert_init(tokenizer, tmp_path: Path) -> None:
    """Raised by preflight, before any data is tokenised or model built."""
    import run
    from recipes import finetune

    teacher = tmp_path / "teacher"
    classifier(len(tokenizer), 6).save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    base = [f"recipe.model={teacher}", f"recipe.task_kd.teacher={teacher}", "recipe.task_kd.intermediate.kind=pkd",
            "recipe.init.num_layers=4", "recipe.init.scheme=first", "recipe.measure_latency=false"]  # fmt: skip
    cfg = run.to_run_config(OmegaConf.structured(typed(*base)), str(tmp_path / "run"))
    with pytest.raises(ValueError, match="layer_map=skip.*L=6 is not a multiple of k=4.*uniform"):
        finetune.preflight(cfg, str(teacher), qa=False)
    # a student of the project's template that is not BERT-shaped cannot be truncated
    from modules.student import StudentConfig

    odd = tmp_path / "bottleneck"
    block = {"hidden_size": 32, "bottleneck_size": 16, "num_heads": 2, "intermediate_size": 32, "num_ffn": 2}
    StudentForSequenceClassification(StudentConfig(blocks=[block], vocab_size=len(tokenizer), max_position_embeddings=64)).save_pretrained(odd)
    tokenizer.save_pretrained(odd)
    cfg = run.to_run_config(OmegaConf.structured(typed(*base, f"recipe.model={odd}", "recipe.task_kd.intermediate.layer_map=uniform")), str(tmp_path / "run"))
    with pytest.raises(ValueError, match="recipe.init truncates recipe.model.*not a BERT-style one.*recipe.init.num_layers=0"):
        finetune.preflight(cfg, str(odd), qa=False)
