"""Each distillation loss against a naive loop written here, plus zero-at-equality and masking checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modules.losses import (
    attention_transfer_loss,
    feature_map_loss,
    hierarchical_kd_loss,
    kd_loss,
    layer_for_cell,
    layer_map,
    match_heads,
    pretraining_distillation_loss,
    task_kd_loss,
)


def random_probs(b: int, h: int, s: int, mask: torch.Tensor, seed: int) -> torch.Tensor:
    """Attention-like maps: softmax over real keys, zero on padded keys."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, h, s, s, generator=gen)
    scores = scores.masked_fill(~mask[:, None, None, :].bool(), float("-inf"))
    return scores.softmax(-1)


def make_mask(b: int = 3, s: int = 7) -> torch.Tensor:
    mask = torch.ones(b, s, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    return mask


def naive_attention_kl(t: torch.Tensor, s: torch.Tensor, mask: torch.Tensor) -> float:
    """1/(S·H) Σ over real query rows s, heads h, real keys k of p log(p/q); S = real positions in the batch."""
    total, positions = 0.0, 0
    B, H, S, _ = t.shape
    for b in range(B):
        for q in range(S):
            if not mask[b, q]:
                continue
            positions += 1
            for h in range(H):
                for k in range(S):
                    if not mask[b, k]:
                        continue
                    p, r = t[b, h, q, k].item(), s[b, h, q, k].item()
                    if p > 0:
                        total += p * math.log(p / r)
    return total / (positions * H)


def test_attention_kl_matches_naive_loop() -> None:
    mask = make_mask()
    t, s = random_probs(3, 2, 7, mask, 0), random_probs(3, 2, 7, mask, 1)
    assert attention_transfer_loss(student_probs=s, teacher_probs=t, attention_mask=mask).item() == pytest.approx(
        naive_attention_kl(t, s, mask), rel=1e-5
    )


def test_attention_kl_is_zero_for_equal_maps_and_ignores_padded_queries() -> None:
    mask = make_mask()
    t = random_probs(3, 4, 7, mask, 0)
    assert attention_transfer_loss(student_probs=t.clone(), teacher_probs=t, attention_mask=mask).item() == pytest.approx(0.0, abs=1e-7)
    s = t.clone()
    s[2, :, 4] = torch.rand(4, 7)  # garbage in a padded query row (example 2 has 3 real tokens)
    assert attention_transfer_loss(student_probs=s, teacher_probs=t, attention_mask=mask).item() == pytest.approx(0.0, abs=1e-7)


def test_head_mismatch_groups_teacher_heads() -> None:
    mask = make_mask()
    t, s = random_probs(3, 12, 7, mask, 0), random_probs(3, 3, 7, mask, 1)
    t_matched, s_matched = match_heads(student_probs=s, teacher_probs=t)
    assert t_matched.shape == s.shape and s_matched is s
    torch.testing.assert_close(t_matched[:, 1], t[:, 4:8].mean(1))
    torch.testing.assert_close(t_matched.sum(-1), torch.ones(3, 3, 7))  # group means are still distributions
    expected = naive_attention_kl(t_matched, s, mask)
    assert attention_transfer_loss(student_probs=s, teacher_probs=t, attention_mask=mask).item() == pytest.approx(expected, rel=1e-5)
    # a student whose head g is exactly the mean of teacher heads 4g..4g+3 has zero loss
    assert attention_transfer_loss(student_probs=t_matched, teacher_probs=t, attention_mask=mask).item() == pytest.approx(0.0, abs=1e-6)


def test_head_mismatch_other_cases() -> None:
    mask = make_mask()
    t, s = random_probs(3, 2, 7, mask, 0), random_probs(3, 8, 7, mask, 1)
    tm, sm = match_heads(student_probs=s, teacher_probs=t)  # student heads grouped to the teacher's 2
    assert tm is t and sm.shape == t.shape
    torch.testing.assert_close(sm[:, 0], s[:, :4].mean(1))
    t, s = random_probs(3, 12, 7, mask, 0), random_probs(3, 5, 7, mask, 1)
    tm, sm = match_heads(student_probs=s, teacher_probs=t)  # coprime: head-averaged maps
    assert tm.shape == sm.shape == (3, 1, 7, 7)


def test_feature_map_loss_matches_naive_loop() -> None:
    mask = make_mask()
    gen = torch.Generator().manual_seed(0)
    t, s = torch.randn(3, 7, 5, generator=gen), torch.randn(3, 7, 5, generator=gen)
    total, positions = 0.0, 0
    for b in range(3):
        for q in range(7):
            if mask[b, q]:
                positions += 1
                total += sum((t[b, q, n] - s[b, q, n]).item() ** 2 for n in range(5))
    assert feature_map_loss(student_hidden=s, teacher_hidden=t, attention_mask=mask).item() == pytest.approx(total / (positions * 5), rel=1e-5)
    assert feature_map_loss(student_hidden=t.clone(), teacher_hidden=t, attention_mask=mask).item() == 0.0
    s2 = t.clone()
    s2[1, 6] += 100.0  # a padded position
    assert feature_map_loss(student_hidden=s2, teacher_hidden=t, attention_mask=mask).item() == 0.0


def naive_kd(t: torch.Tensor, s: torch.Tensor, temperature: float) -> float:
    total = 0.0
    for m in range(t.shape[0]):
        zt = [math.exp(x / temperature) for x in t[m].tolist()]
        zs = [math.exp(x / temperature) for x in s[m].tolist()]
        p = [z / sum(zt) for z in zt]
        q = [z / sum(zs) for z in zs]
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return total / t.shape[0] * temperature**2


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_loss_matches_naive(temperature: float) -> None:
    gen = torch.Generator().manual_seed(0)
    t, s = torch.randn(4, 9, generator=gen), torch.randn(4, 9, generator=gen)
    assert kd_loss(student_logits=s, teacher_logits=t, temperature=temperature).item() == pytest.approx(naive_kd(t, s, temperature), rel=1e-5)
    assert kd_loss(student_logits=t.clone(), teacher_logits=t, temperature=temperature).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_top_k_is_kl_on_the_teachers_top_k() -> None:
    gen = torch.Generator().manual_seed(0)
    t, s = torch.randn(4, 9, generator=gen), torch.randn(4, 9, generator=gen)
    values, indices = t.topk(3, dim=-1)
    expected = 0.0
    log_q = torch.log_softmax(s, -1)
    for m in range(4):
        p = torch.softmax(values[m], -1)
        expected += sum(
            p[j].item() * (math.log(p[j].item()) - log_q[m, indices[m, j]].item()) for j in range(3)
        )
    assert kd_loss(student_logits=s, teacher_logits=values, temperature=1.0, teacher_topk_indices=indices).item() == pytest.approx(expected / 4, rel=1e-5)
    # k = V equals the full KL
    v_all, i_all = t.topk(9, dim=-1)
    assert kd_loss(student_logits=s, teacher_logits=v_all, temperature=1.0, teacher_topk_indices=i_all).item() == pytest.approx(
        kd_loss(student_logits=s, teacher_logits=t, temperature=1.0).item(), rel=1e-5
    )


def test_pretraining_loss_mix() -> None:
    gen = torch.Generator().manual_seed(0)
    s_logits, t_logits = torch.randn(6, 11, generator=gen), torch.randn(6, 11, generator=gen)
    labels = torch.randint(11, (6,), generator=gen)
    nsp_logits, nsp_labels = torch.randn(2, 2, generator=gen), torch.tensor([0, 1])
    out = pretraining_distillation_loss(
        student_mlm_logits=s_logits, labels=labels, alpha=0.3, teacher_mlm_logits=t_logits, temperature=2.0,
        student_nsp_logits=nsp_logits, next_sentence_label=nsp_labels,
    )
    ce = torch.nn.functional.cross_entropy
    expected = (
        0.3 * ce(s_logits, labels) + 0.7 * naive_kd(t_logits, s_logits, 2.0) + ce(nsp_logits, nsp_labels)
    )
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5)
    # no teacher MLM head: alpha is effectively 1
    no_kd = pretraining_distillation_loss(student_mlm_logits=s_logits, labels=labels, alpha=0.3)
    assert no_kd.mlm_kd is None and no_kd.nsp is None
    assert no_kd.total.item() == pytest.approx(ce(s_logits, labels).item(), rel=1e-6)


def test_layer_maps() -> None:
    assert layer_map(4, 6) == [1, 2, 4, 5]  # ceil(k*6/4) - 1
    assert layer_map(3, 6) == [1, 3, 5]
    assert layer_map(24, 24) == list(range(24))
    assert layer_map(8, 4) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert layer_map(2, 6, "last") == [4, 5]
    assert layer_map(2, 6, "explicit", [0, 5]) == [0, 5]
    with pytest.raises(ValueError, match="layer_map=last"):
        layer_map(8, 6, "last")
    with pytest.raises(ValueError, match="outside the teacher"):
        layer_map(2, 6, "explicit", [0, 6])
    with pytest.raises(ValueError, match="one teacher layer per student block"):
        layer_map(2, 6, "explicit", [0])


# Moved from tests/test_finetune.py (task KD; was modules.finetuning.kd_loss).
def test_task_kd_loss_is_temperature_scaled_kl_to_the_teacher() -> None:
    torch.manual_seed(0)
    s, t, temp = torch.randn(5, 3), torch.randn(5, 3), 2.0
    p_t, p_s = F.softmax(t / temp, -1), F.softmax(s / temp, -1)
    naive = sum(float((p_t[i] * (p_t[i].log() - p_s[i].log())).sum()) for i in range(5)) / 5 * temp**2
    assert float(task_kd_loss(student_logits=s, teacher_logits=t, temperature=temp, regression=False)) == pytest.approx(
        naive, rel=1e-5
    )
    assert float(task_kd_loss(student_logits=s, teacher_logits=s, temperature=temp, regression=False)) == pytest.approx(
        0.0, abs=1e-6
    )
    assert float(
        task_kd_loss(student_logits=s[:, :1], teacher_logits=t[:, :1], temperature=temp, regression=True)
    ) == pytest.approx(float(((s[:, 0] - t[:, 0]) ** 2).mean()))


def test_one_kl_agrees_with_the_old_finetuning_formula() -> None:
    """The fine-tuning / QA / AdaBERT KD used F.kl_div(batchmean)·T·T before the merge into ``kd_loss``: the
    two are the same quantity and differ only by float32 summation order (a few ULPs)."""
    torch.manual_seed(0)
    for shape in ((32, 2), (8, 3), (4, 30)):
        s, t = torch.randn(*shape) * 3, torch.randn(*shape) * 3
        for temp in (1.0, 2.0, 3.0):
            old = F.kl_div(F.log_softmax(s / temp, -1), F.log_softmax(t / temp, -1), log_target=True,
                           reduction="batchmean") * temp * temp  # fmt: skip
            new = kd_loss(student_logits=s, teacher_logits=t, temperature=temp)
            torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-6)


# Moved from tests/test_adabert.py (was modules.adabert_training.distillation_loss).
def test_hierarchical_kd_loss_matches_its_definition() -> None:
    torch.manual_seed(0)
    final, teacher = torch.randn(4, 2), torch.randn(4, 2)
    cells = tuple(torch.randn(4, 2) for _ in range(3))
    probes = torch.randn(6, 4, 2)  # 6 teacher layers

    def kl(s, t):
        p = F.softmax(t, -1)
        return float((p * (p.log() - F.log_softmax(s, -1))).sum(-1).mean())

    # K = 3 over 6 layers: cell 1 -> layer 2, cell 2 -> layer 4, cell 3 (the final classifier) -> the logits
    assert [layer_for_cell(k, 3, 6) for k in (1, 2, 3)] == [2, 4, 6]
    expected = (kl(final, teacher) + kl(cells[0], probes[1]) + kl(cells[1], probes[3])) / 3
    loss = hierarchical_kd_loss(student_logits=final, student_cell_logits=cells, teacher_logits=teacher,
                                teacher_probe_logits=probes, temperature=1.0)  # fmt: skip
    assert float(loss) == pytest.approx(expected, rel=1e-5)


# -- the survey's methods: TinyBERT attention scores, DistilBERT cosine, PKD patient loss ---------------


def test_attention_score_loss_matches_naive_loop_over_real_pairs() -> None:
    from modules.losses import attention_score_loss

    mask = make_mask()
    gen = torch.Generator().manual_seed(3)
    t, s = torch.randn(3, 2, 7, 7, generator=gen), torch.randn(3, 2, 7, 7, generator=gen)
    total, count = 0.0, 0
    for b in range(3):
        for h in range(2):
            for q in range(7):
                for k in range(7):
                    if mask[b, q] and mask[b, k]:
                        total += (t[b, h, q, k] - s[b, h, q, k]).item() ** 2
                        count += 1
    got = attention_score_loss(student_scores=s, teacher_scores=t, attention_mask=mask)
    assert got.item() == pytest.approx(total / count, rel=1e-5)
    # Padded entries carry nothing: garbage there leaves the loss unchanged.
    s2 = s.clone()
    s2[1, :, 5:, :] = 1e3
    s2[2, :, :, 3:] = -1e3
    assert attention_score_loss(student_scores=s2, teacher_scores=t, attention_mask=mask).item() == pytest.approx(got.item())


def test_attention_score_loss_sees_what_probabilities_forget() -> None:
    """A constant added to a row leaves softmax (and attention_transfer_loss) unchanged, not the score loss."""
    from modules.losses import attention_score_loss

    mask = torch.ones(1, 4, dtype=torch.long)
    t = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    shifted = t + 5.0
    assert attention_transfer_loss(student_probs=shifted.softmax(-1), teacher_probs=t.softmax(-1),
                                   attention_mask=mask).item() == pytest.approx(0.0, abs=1e-6)  # fmt: skip
    assert attention_score_loss(student_scores=shifted, teacher_scores=t, attention_mask=mask).item() == pytest.approx(25.0)


def test_cosine_hidden_loss_matches_naive_loop() -> None:
    from modules.losses import cosine_hidden_loss

    mask = make_mask()
    gen = torch.Generator().manual_seed(4)
    s, t = torch.randn(3, 7, 5, generator=gen), torch.randn(3, 7, 5, generator=gen)
    values = [
        1 - (s[b, i] @ t[b, i] / (s[b, i].norm() * t[b, i].norm())).item()
        for b in range(3) for i in range(7) if mask[b, i]
    ]
    got = cosine_hidden_loss(student_hidden=s, teacher_hidden=t, attention_mask=mask)
    assert got.item() == pytest.approx(sum(values) / len(values), rel=1e-5)
    assert cosine_hidden_loss(student_hidden=2 * t, teacher_hidden=t, attention_mask=mask).item() == pytest.approx(0.0, abs=1e-6)


def test_pkd_loss_is_the_mean_squared_distance_of_unit_cls_states() -> None:
    from modules.losses import pkd_loss

    gen = torch.Generator().manual_seed(5)
    s, t = torch.randn(2, 3, 4, generator=gen), torch.randn(2, 3, 4, generator=gen)
    total = 0.0
    for b in range(2):
        for j in range(3):
            a, c = s[b, j] / s[b, j].norm(), t[b, j] / t[b, j].norm()
            total += sum((a[d] - c[d]).item() ** 2 for d in range(4))
    assert pkd_loss(student_cls=s, teacher_cls=t).item() == pytest.approx(total / (2 * 3 * 4), rel=1e-5)
    # Scale-free: only directions count (the paper normalises so the student need not match the teacher's norms).
    assert pkd_loss(student_cls=3 * t, teacher_cls=t).item() == pytest.approx(0.0, abs=1e-7)
