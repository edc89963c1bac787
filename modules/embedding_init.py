"""Initialising a student's embeddings from a teacher's (AutoDistill §3.3.2): the teacher's tables, resampled
along the feature axis to the student's width (linear interpolation, or a PCA basis). A factorised student
(MobileBERT §3.5: word table E wide, a dense map up to H_1) gets the word table at E, the position and token-type
tables at H_1, and its dense map set to carry the width-E features to H_1 as the resampling would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from modules.student import StudentModel
from modules.student_spec import RESAMPLE_METHODS


@dataclass
class EmbeddingWeights:
    """A teacher's embedding tables, all (rows, D) except the LayerNorm vectors (D,)."""

    word: torch.Tensor
    position: torch.Tensor | None = None
    token_type: torch.Tensor | None = None
    norm_weight: torch.Tensor | None = None
    norm_bias: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)


def resample_features(
    weight: torch.Tensor, width: int, method: str, basis: torch.Tensor | None = None
) -> torch.Tensor:
    """Resample the last (feature) axis of ``weight`` to ``width``.

    Args:
        weight: (N, D) or (D,).
        method: ``interpolate`` — linear interpolation along the feature axis (the paper's "down- or
            up-sample"); ``pca`` — project onto ``basis`` (D, width), see ``pca_basis``.
    Returns:
        (N, width) or (width,).
    Raises:
        ValueError: an unknown method, or ``pca`` without a basis.
    """
    if method == "pca":
        if basis is None:
            raise ValueError("resample_features(method='pca') needs a basis from pca_basis()")
        return weight @ basis
    if method != "interpolate":
        raise ValueError(f"unknown resample method {method!r}; use one of {RESAMPLE_METHODS}")
    if weight.shape[-1] == width:
        return weight.clone()
    rows = weight.reshape(1, -1, weight.shape[-1]).float()  # (1, N, D): F.interpolate resamples the last axis
    out = F.interpolate(rows, size=width, mode="linear", align_corners=True)
    return out.reshape(*weight.shape[:-1], width).to(weight.dtype)


def pca_basis(word: torch.Tensor, width: int) -> torch.Tensor:
    """(D, width) orthonormal basis: the top principal directions of the word embeddings.

    Down-sampling keeps the directions that carry most variance, and every table (word, position,
    token type) goes through the same basis so their sum stays meaningful. Up-sampling keeps all D
    directions and pads with zero columns.
    """
    D = word.shape[1]
    centered = (word - word.mean(dim=0)).float()
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)  # vh: (D, D), rows = directions
    basis = vh.T[:, : min(width, D)]
    if width > D:
        basis = torch.cat([basis, basis.new_zeros(D, width - D)], dim=1)
    return basis.to(word.dtype)


@torch.no_grad()
def init_embeddings_from_teacher(
    student: StudentModel, teacher: EmbeddingWeights, method: str = "interpolate"
) -> None:
    """Copy a teacher's embedding tables into the student, resampled to the student's width.

    Positions and token types copy the rows both have; the vocabulary must be the same (the student
    uses the teacher's tokenizer). A factorised embedding (word table E < H_1 wide, ``embedding_transformation``
    up to H_1) gets the word table at E, the rest at H_1, and the dense map of ``factorisation_init``. A NoNorm
    (``normalization_type="no_norm"``) keeps its identity start: the teacher's LayerNorm gain and bias act on
    normalised features, NoNorm's on the raw sum.

    Args:
        student: the encoder whose ``embeddings`` are overwritten in place.
        teacher: the teacher's tables (word (V, D), position (P, D), token type (T, D), LayerNorm (D,)).
        method: one of ``RESAMPLE_METHODS``.
    Raises:
        ValueError: the vocabularies differ.
    """
    emb = student.embeddings
    word_width = emb.word_embeddings.weight.shape[1]  # E
    width = emb.position_embeddings.weight.shape[1]  # H_1 (== E unless the embedding is factorised)
    if teacher.word.shape[0] != emb.word_embeddings.weight.shape[0]:
        raise ValueError(
            f"teacher vocabulary has {teacher.word.shape[0]} tokens but student.vocab_size="
            f"{emb.word_embeddings.weight.shape[0]}; set student.vocab_size to the teacher's"
        )
    bases = {w: pca_basis(teacher.word, w) if method == "pca" else None for w in {word_width, width}}

    def copy_rows(dst: nn.Embedding, src: torch.Tensor | None) -> None:
        if src is None:
            return
        rows, w = min(dst.weight.shape[0], src.shape[0]), dst.weight.shape[1]
        dst.weight[:rows] = resample_features(src[:rows], w, method, bases[w]).to(dst.weight.dtype)

    copy_rows(emb.word_embeddings, teacher.word)
    copy_rows(emb.position_embeddings, teacher.position)
    copy_rows(emb.token_type_embeddings, teacher.token_type)
    if emb.embedding_transformation is not None:
        factorisation_init(emb.embedding_transformation, word_width, width, method, bases[word_width], bases[width])
    # A LayerNorm's gain and bias are per feature; interpolation keeps their profile, whereas a PCA
    # basis mixes features so there is no meaningful per-feature value: start from identity then.
    if method == "interpolate" and teacher.norm_weight is not None and isinstance(emb.LayerNorm, nn.LayerNorm):
        emb.LayerNorm.weight.copy_(resample_features(teacher.norm_weight, width, method))
        emb.LayerNorm.bias.copy_(resample_features(teacher.norm_bias, width, method))


@torch.no_grad()
def factorisation_init(
    dense: nn.Linear,
    word_width: int,
    width: int,
    method: str,
    word_basis: torch.Tensor | None = None,
    basis: torch.Tensor | None = None,
) -> None:
    """Set MobileBERT's embedding map (E or 3E -> H_1) so that, at start, it takes a teacher-resampled word row
    (width E) to what resampling the teacher's row to H_1 would give, and ignores the trigram's neighbours.

    ``interpolate``: the centre slice is linear interpolation from E to H_1 (exact when the teacher is E wide);
    ``pca``: it is ``word_basis^T @ basis`` (E -> teacher space -> H_1's basis). Bias zero, neighbour slices zero:
    training then learns the convolution.

    Args:
        dense: ``embeddings.embedding_transformation``, weight (H_1, E) or (H_1, 3E) (trigram order t+1, t, t-1).
        word_basis, basis: (D, E) and (D, H_1) PCA bases (``pca`` only).
    """
    if method == "pca":
        centre = word_basis.T @ basis  # (E, H_1)
    else:
        centre = resample_features(torch.eye(word_width), width, "interpolate")  # (E, H_1): row i = e_i resampled
    taps = dense.in_features // word_width  # 1, or 3 with the trigram
    mid = taps // 2
    dense.weight.zero_()
    dense.weight[:, mid * word_width:(mid + 1) * word_width] = centre.T.to(dense.weight.dtype)
    dense.bias.zero_()
