"""Analytic size and cost of a student, per config (no weights needed): exact parameter counts and matmul FLOPs.

The search reads these to price a candidate before building it; tests hold them equal to the built model's
``numel`` and to ``torch.utils.flop_counter.FlopCounterMode``.
"""

from __future__ import annotations

from modules.student import StudentConfig

HEADS = ("none", "pretraining", "mlm", "classification", "qa")


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def num_parameters(config: StudentConfig, head: str = "none") -> int:
    """Exact trainable parameter count of a student built from ``config`` (tied decoder counted once).

    Args:
        head: ``none`` (the encoder, ``StudentModel``), ``pretraining``, ``mlm``, ``classification``, ``qa``.
    Raises:
        ValueError: an unknown ``head``.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    specs = config.block_specs
    emb, width = config.word_embedding_size, specs[0].hidden_size  # word table E, embedding output H_1
    total = config.vocab_size * emb + (config.max_position_embeddings + config.type_vocab_size) * width + 2 * width
    total += _embedding_transformation(config) + (width if config.factorised_embedding else 0)  # its weight, bias
    for b in specs:
        H, Bn, I = b.hidden_size, b.bottleneck_size, b.intermediate_size  # noqa: E741
        total += 3 * _linear(H, Bn) + _linear(Bn, Bn) + 2 * Bn  # q, k, v, attention output + LN
        total += b.num_ffn * (_linear(Bn, I) + _linear(I, Bn) + 2 * Bn)
        if b.has_bottleneck:
            total += _linear(H, Bn) + 2 * Bn + _linear(Bn, H) + 2 * H
    for a, b in zip(specs[:-1], specs[1:]):
        if a.hidden_size != b.hidden_size:
            total += _linear(a.hidden_size, b.hidden_size)
    last = config.hidden_size
    total += _linear(last, last)  # pooler
    mlm = _linear(last, emb) + 2 * emb + config.vocab_size  # transform, LN, decoder bias (weight tied)
    total += {
        "none": 0,
        "pretraining": mlm + _linear(last, 2),
        "mlm": mlm,
        "classification": _linear(last, config.num_labels),
        "qa": _linear(last, 2),
    }[head]
    return total


def _embedding_transformation(config: StudentConfig) -> int:
    """Multiply-accumulates per token of MobileBERT's dense map up to H_1 (3E x H_1 with the trigram, E x H_1
    without), 0 where the embedding is not factorised (NoNorm and ReLU add none: element-wise)."""
    if not config.factorised_embedding:
        return 0
    return config.word_embedding_size * (3 if config.trigram_input else 1) * config.block_specs[0].hidden_size


def flops(config: StudentConfig, seq_len: int, batch_size: int = 1) -> int:
    """Forward FLOPs of the encoder (``StudentModel``), counting 2 per multiply-accumulate of every matmul.

    Element-wise work (softmax, LayerNorm or NoNorm, activations, embedding sums) is left out, which is what
    ``torch.utils.flop_counter.FlopCounterMode`` counts too; the test holds the two equal.

    Args:
        seq_len: tokens per sequence (S); batch_size: sequences (B).
    Returns:
        FLOPs of one forward pass of the batch.
    """
    S = seq_len
    per_token = _embedding_transformation(config)  # MobileBERT's kernel-3 embedding convolution, as a dense map
    specs = config.block_specs
    for b in specs:
        H, Bn, I = b.hidden_size, b.bottleneck_size, b.intermediate_size  # noqa: E741
        per_token += 3 * H * Bn + Bn * Bn  # q, k, v, attention output
        per_token += 2 * S * Bn  # scores (Q K^T) and context (P V), per query token
        per_token += b.num_ffn * 2 * Bn * I
        if b.has_bottleneck:
            per_token += 2 * H * Bn
    for a, b in zip(specs[:-1], specs[1:]):
        if a.hidden_size != b.hidden_size:
            per_token += a.hidden_size * b.hidden_size
    per_sequence = S * per_token + config.hidden_size**2  # pooler reads [CLS] only
    return 2 * batch_size * per_sequence
