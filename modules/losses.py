"""Every knowledge-distillation loss of the project: small functions with keyword-only ``student_*`` /
``teacher_*`` arguments (STYLE 7), each tested against a naive loop written in its test.

- ``kd_loss``: the one temperature-scaled KL (Hinton et al. 2015, "Distilling the Knowledge in a Neural
  Network", §2); every soft-target term below is built from it;
- AutoDistill §3.3: ``attention_transfer_loss`` (Eq. 1), ``feature_map_loss`` (Eq. 2),
  ``pretraining_distillation_loss`` (Eq. 3);
- task KD for fine-tuning: ``task_kd_loss`` (classification / regression), ``span_kd_loss`` (SQuAD);
- AdaBERT (Chen et al. 2020, §3.2): ``hierarchical_kd_loss`` over the cells and the teacher's layer probes;
- the survey's methods: TinyBERT's ``attention_score_loss`` (Eq. 7; its hidden and embedding terms, Eq. 8–9, are
  ``feature_map_loss`` after a projection), DistilBERT's ``cosine_hidden_loss``, PKD's ``pkd_loss`` (Eq. 3).

Padding never contributes: sequence losses take the (B, S) attention mask and normalise by the number of
real positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from modules.distillation_config import LAYER_MAPS  # noqa: F401  (public here too)

EPS = 1e-12


def match_heads(
    *, student_probs: torch.Tensor, teacher_probs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring teacher and student attention maps to a common head count.

    Averaging the maps of a group of heads gives a mixture of their distributions, which is still a
    distribution over keys, so KL stays well defined:
    - equal counts: unchanged;
    - one count divides the other: the larger side's heads are averaged in consecutive groups
      (teacher heads 4g..4g+3 -> target of student head g for 12 -> 3);
    - otherwise: both sides are averaged over all heads (one map each).

    Args:
        teacher_probs: (B, Ht, S, S); student_probs: (B, Hs, S, S).
    Returns:
        (teacher, student), both (B, H, S, S) with the same H.
    """
    ht, hs = teacher_probs.shape[1], student_probs.shape[1]
    if ht == hs:
        return teacher_probs, student_probs

    def group_mean(x: torch.Tensor, groups: int) -> torch.Tensor:
        b, h, s, _ = x.shape
        return x.view(b, groups, h // groups, s, s).mean(dim=2)

    if ht % hs == 0:
        return group_mean(teacher_probs, hs), student_probs
    if hs % ht == 0:
        return teacher_probs, group_mean(student_probs, ht)
    return teacher_probs.mean(dim=1, keepdim=True), student_probs.mean(dim=1, keepdim=True)


def attention_transfer_loss(
    *, student_probs: torch.Tensor, teacher_probs: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """AutoDistill Eq. 1: L_MHA = 1/(S·H) Σ_s Σ_h KL(a_T,s,h || a_S,s,h).

    S counts the real (non-padded) query positions of the whole batch; keys that are padding carry
    zero probability on both sides and are excluded from the KL sum.

    Args:
        teacher_probs: (B, Ht, S, S) attention probabilities of the mapped teacher layer.
        student_probs: (B, Hs, S, S) of the student block.
        attention_mask: (B, S) 1 for real tokens.
    Returns:
        scalar loss.
    """
    t, s = match_heads(student_probs=student_probs.float(), teacher_probs=teacher_probs.float())
    keys = attention_mask[:, None, None, :].bool()  # (B, 1, 1, S)
    # KL(p || q) = Σ_k p log p - p log q; xlogy gives 0 for p = 0 (padded keys).
    kl = (torch.xlogy(t, t) - t * torch.log(s.clamp_min(EPS))).masked_fill(~keys, 0.0).sum(-1)  # (B, H, S)
    queries = attention_mask[:, None, :].to(kl.dtype)  # (B, 1, S)
    return (kl * queries).sum() / (queries.sum() * kl.shape[1])


def feature_map_loss(
    *, student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """AutoDistill Eq. 2: L_FM = 1/(S·N) Σ_s Σ_n (f_T − f_S)^2 over real positions.

    Args:
        teacher_hidden: (B, S, N) the mapped teacher layer's output.
        student_hidden: (B, S, N) the student block's output, already projected to the teacher width.
        attention_mask: (B, S).
    Returns:
        scalar loss (mean squared error per real position and feature).
    """
    mask = attention_mask[..., None].to(torch.float32)  # (B, S, 1)
    sq = (teacher_hidden.float() - student_hidden.float()).pow(2) * mask
    return sq.sum() / (mask.sum() * teacher_hidden.shape[-1])


@dataclass(frozen=True)
class KDSettings:
    """How much a module learns from its teacher: ``L = (1 − γ)·L_CE + γ·L_KD`` with ``kd_loss`` at ``temperature``.

    Shared by fine-tuning (``FinetuneModule``, ``QAModule``) and AdaBERT (``AdaBertModule``); γ = 0 turns KD off.
    """

    gamma: float = 0.0  # γ, the KD weight, in [0, 1]
    temperature: float = 1.0  # T > 0


NO_KD = KDSettings()  # γ = 0: no teacher term (frozen, so one shared default is safe)


def mix_kd(ce: torch.Tensor, kd: torch.Tensor, gamma: float) -> torch.Tensor:
    """``(1 − γ)·ce + γ·kd``: the task loss and the KD loss, weighted (scalars in, scalar out)."""
    return (1 - gamma) * ce + gamma * kd


def kd_loss(
    *,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    teacher_topk_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft-target KD (Hinton et al. 2015, §2): T²·KL(softmax(t/T) ‖ softmax(s/T)), averaged over rows.

    The T² keeps the gradient scale independent of T. The one temperature-scaled KL of the project: MLM KD,
    task KD, span KD and AdaBERT's hierarchical KD all call it. Computed in float32 whatever the inputs' dtype.

    Args:
        student_logits: (N, C) e.g. N masked positions over the vocabulary, or N sequences over the classes.
        teacher_logits: (N, C), or (N, k) top-k values when ``teacher_topk_indices`` (N, k) is given: then
            the teacher distribution is its top-k renormalised and the student's log-probabilities (over all
            C) are read there.
        temperature: T > 0 (unitless).
    Returns:
        scalar loss; 0 (still attached to the student's graph) when N = 0.
    """
    if teacher_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    t = teacher_logits.float() / temperature
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (N, C)
    if teacher_topk_indices is not None:
        log_q = log_q.gather(-1, teacher_topk_indices)  # (N, k)
    log_p = F.log_softmax(t, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # (N,)
    return kl.mean() * temperature**2


def task_kd_loss(
    *, student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, regression: bool
) -> torch.Tensor:
    """Task KD from a fine-tuned teacher: ``kd_loss`` for a classifier; for a regressor (one output, e.g.
    STS-B) the MSE to the teacher's prediction (no distribution to soften, so ``temperature`` is unused).

    Args:
        student_logits, teacher_logits: (B, num_labels).
    Returns:
        scalar loss.
    """
    if regression:
        return F.mse_loss(student_logits.squeeze(-1), teacher_logits.squeeze(-1))
    return kd_loss(student_logits=student_logits, teacher_logits=teacher_logits, temperature=temperature)


# A logit no span can win with, finite so softmax / KL stay finite on masked positions.
MASKED_LOGIT = -1e4


def span_kd_loss(
    *,
    student_start_logits: torch.Tensor,
    student_end_logits: torch.Tensor,
    teacher_start_logits: torch.Tensor,
    teacher_end_logits: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Extractive-QA KD: ``kd_loss`` on the start and on the end position distributions (padding masked to
    ``MASKED_LOGIT`` on both sides, so it carries ~0 probability), averaged over the two.

    Args:
        student_start_logits, student_end_logits, teacher_start_logits, teacher_end_logits: (B, S).
        attention_mask: (B, S) 1 for real tokens.
    Returns:
        scalar loss.
    """
    pad = attention_mask == 0
    losses = [
        kd_loss(student_logits=s.masked_fill(pad, MASKED_LOGIT), teacher_logits=t.masked_fill(pad, MASKED_LOGIT),
                temperature=temperature)  # fmt: skip
        for s, t in ((student_start_logits, teacher_start_logits), (student_end_logits, teacher_end_logits))
    ]
    return (losses[0] + losses[1]) / 2


def layer_for_cell(cell: int, num_cells: int, num_layers: int) -> int:
    """AdaBERT: the teacher layer (1-based) whose probe cell ``cell`` (1-based) of ``num_cells`` imitates:
    spread evenly, the last cell on the last layer."""
    return max(1, round(cell * num_layers / num_cells))


def hierarchical_kd_loss(
    *,
    student_logits: torch.Tensor,
    student_cell_logits: tuple[torch.Tensor, ...],
    teacher_logits: torch.Tensor,
    teacher_probe_logits: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """AdaBERT's L_KD (Chen et al. 2020, §3.2): the mean over the K cells of ``kd_loss``, the last cell through
    the final classifier against the teacher's logits, cell k < K through its head against the probe of
    teacher layer ``layer_for_cell(k, K, L)``.

    Args:
        student_logits: (B, C) the student's final logits; student_cell_logits: K tensors (B, C).
        teacher_logits: (B, C); teacher_probe_logits: (L, B, C), one linear probe per teacher layer.
    Returns:
        scalar loss.
    """
    k_total, layers = len(student_cell_logits), teacher_probe_logits.shape[0]
    terms = [kd_loss(student_logits=student_logits, teacher_logits=teacher_logits, temperature=temperature)]
    for k in range(1, k_total):
        layer = layer_for_cell(k, k_total, layers)
        terms.append(kd_loss(student_logits=student_cell_logits[k - 1],
                             teacher_logits=teacher_probe_logits[layer - 1], temperature=temperature))  # fmt: skip
    return torch.stack(terms).mean()


@dataclass
class PretrainingLoss:
    """L_D = α·L_MLM + (1−α)·L_MLM-KD + L_NSP, with each term kept for logging (None when disabled)."""

    total: torch.Tensor
    mlm: torch.Tensor
    mlm_kd: torch.Tensor | None
    nsp: torch.Tensor | None


def pretraining_distillation_loss(
    *,
    student_mlm_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    teacher_mlm_logits: torch.Tensor | None = None,
    teacher_topk_indices: torch.Tensor | None = None,
    temperature: float = 1.0,
    student_nsp_logits: torch.Tensor | None = None,
    next_sentence_label: torch.Tensor | None = None,
) -> PretrainingLoss:
    """AutoDistill Eq. 3: L_D = α·L_MLM + (1−α)·L_MLM-KD + L_NSP. Without teacher MLM logits the KD term is off and α is effectively 1; without NSP logits
    or labels the NSP term is off.

    Args:
        student_mlm_logits: (M, V) at the masked positions.
        labels: (M,) the original token ids there.
        teacher_mlm_logits: (M, V), or (M, k) top-k values with ``teacher_topk_indices``.
        student_nsp_logits: (B, 2); next_sentence_label: (B,).
        alpha: weight of the MLM term, in [0, 1]; temperature: of the MLM-KD term.
    Returns:
        the total and each term (scalars).
    """
    mlm = (
        F.cross_entropy(student_mlm_logits.float(), labels)
        if labels.numel()
        else student_mlm_logits.sum() * 0.0
    )
    if teacher_mlm_logits is None:
        mlm_kd, total = None, mlm
    else:
        mlm_kd = kd_loss(student_logits=student_mlm_logits, teacher_logits=teacher_mlm_logits,
                         temperature=temperature, teacher_topk_indices=teacher_topk_indices)  # fmt: skip
        total = alpha * mlm + (1.0 - alpha) * mlm_kd
    nsp = None
    if student_nsp_logits is not None and next_sentence_label is not None:
        nsp = F.cross_entropy(student_nsp_logits.float(), next_sentence_label)
        total = total + nsp
    return PretrainingLoss(total=total, mlm=mlm, mlm_kd=mlm_kd, nsp=nsp)


def layer_map(
    num_student: int, num_teacher: int, strategy: str = "uniform", explicit: list[int] | None = None
) -> list[int]:
    """Which teacher layer (0-based) each student block learns from.

    - uniform: block k (1-based) <- teacher layer ceil(k · L_T / L_S) (TinyBERT's g(m) = m·N/M, rounded up
      where it is not whole), so the last block always maps to the last layer; a deeper student repeats layers.
    - last: the last L_S teacher layers (block k <- L_T − L_S + k); needs L_S <= L_T.
    - explicit: the given list (0-based teacher layer per block).
    """
    if strategy == "uniform":
        return [-(-k * num_teacher // num_student) - 1 for k in range(1, num_student + 1)]
    if strategy == "last":
        if num_student > num_teacher:
            raise ValueError(
                f"recipe.layer_map=last needs no more student blocks ({num_student}) than teacher layers "
                f"({num_teacher}); use uniform or an explicit list"
            )
        return list(range(num_teacher - num_student, num_teacher))
    if strategy == "explicit":
        if explicit is None or len(explicit) != num_student:
            raise ValueError(
                f"recipe.layer_map=explicit needs recipe.layer_map_list with one teacher layer per student block "
                f"({num_student}), got {explicit}"
            )
        bad = [i for i in explicit if not 0 <= i < num_teacher]
        if bad:
            raise ValueError(
                f"recipe.layer_map_list has layers {bad} outside the teacher's 0..{num_teacher - 1}"
            )
        return list(explicit)
    raise ValueError(f"recipe.layer_map must be one of {LAYER_MAPS}, got {strategy!r}")


# --------------------------------------------------------------------------------------------------
# The survey deck's distillation methods (issue 18): TinyBERT, DistilBERT, PKD
# --------------------------------------------------------------------------------------------------


def attention_score_loss(
    *, student_scores: torch.Tensor, teacher_scores: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """TinyBERT Eq. 7 (Jiao et al. 2020): L_attn = 1/h Σ_i MSE(A_S,i, A_T,i) on the *unnormalised* scores q·kᵀ/√d.

    Only real (query, key) pairs count: the mean runs over heads and the real pairs of the batch (TinyBERT's code
    zeroes masked entries on both sides and divides by all S² entries, which weights short rows less). Head counts
    are matched like ``match_heads`` (group means of scores).

    Args:
        student_scores: (B, Hs, S, S) from ``modules.attention_scores.AttentionScores``.
        teacher_scores: (B, Ht, S, S) of the mapped teacher layer.
        attention_mask: (B, S) 1 for real tokens.
    Returns:
        scalar loss.
    """
    t, s = match_heads(student_probs=student_scores.float(), teacher_probs=teacher_scores.float())
    real = attention_mask.to(torch.float32)
    pairs = real[:, None, :, None] * real[:, None, None, :]  # (B, 1, S, S)
    sq = (t - s).pow(2) * pairs
    return sq.sum() / (pairs.sum() * t.shape[1])


def cosine_hidden_loss(
    *, student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """DistilBERT's L_cos (Sanh et al. 2019, §3): 1 − cos(h_S, h_T) per real position, averaged (the reference code's
    ``CosineEmbeddingLoss`` with target 1 over the non-padded tokens of the last hidden states).

    Args:
        student_hidden, teacher_hidden: (B, S, D), the same width (project the student's first if not).
        attention_mask: (B, S).
    Returns:
        scalar loss in [0, 2].
    """
    real = attention_mask.bool()
    cos = F.cosine_similarity(student_hidden.float()[real], teacher_hidden.float()[real], dim=-1)  # (N,)
    return (1.0 - cos).mean()


def pkd_loss(*, student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
    """PKD's patient loss (Sun et al. 2019, Eq. 3): ‖ h_s,j/‖h_s,j‖₂ − h_t,j/‖h_t,j‖₂ ‖² over the [CLS] states of the
    J mapped layers.

    Reduced as the authors' code does (``F.mse_loss`` of the normalised states: the mean over B·J·D entries), which
    is the scale their β grid {10, 100, 500, 1000} was tuned for; Eq. 3's sum is this times B·J·D.

    Args:
        student_cls: (B, J, D) the student's [CLS] state at each of its J intermediate layers (projected to D if the
            widths differ).
        teacher_cls: (B, J, D) the teacher's at the mapped layers (PKD-Skip: every other layer, PKD-Last: the last).
    Returns:
        scalar loss.
    """
    s = F.normalize(student_cls.float(), p=2, dim=-1)
    t = F.normalize(teacher_cls.float(), p=2, dim=-1)
    return F.mse_loss(s, t)
