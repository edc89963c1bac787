"""AdaBERT's child: its config from a searched architecture, the super-network's weights it inherits, and its
analytic size and FLOPs (per config, no weights needed)."""

from __future__ import annotations

import torch

from modules.adabert import AdaBertConfig, AdaBertForSequenceClassification
from modules.adabert_ops import DerivedArchitecture, op_flops, op_size, preprocess_flops, preprocess_size


def child_config(search: AdaBertConfig, arch: DerivedArchitecture) -> AdaBertConfig:
    """The child's config: the super-network's, with the derived genotype and K fixed."""
    values = search.to_dict()
    for key in ("model_type", "transformers_version", "architectures"):
        values.pop(key, None)
    values.update(genotype=list(arch.genotype), num_cells=arch.num_cells)
    return AdaBertConfig(**values)


def inherit_weights(
    child: AdaBertForSequenceClassification, search: AdaBertForSequenceClassification
) -> None:
    """Copy the super-network's trained weights of the chosen ops (and embeddings, heads) into the child."""
    source = search.state_dict()
    target = child.state_dict()
    with torch.no_grad():
        for name, tensor in target.items():
            if name in source and source[name].shape == tensor.shape:
                tensor.copy_(source[name])


def child_params(config: AdaBertConfig, include_embeddings: bool = True) -> int:
    """Exact trainable parameter count of a child (the cell heads included; they are in the saved model)."""
    c = config.hidden_size
    per_cell = sum(op_size(o, c) for o in config.genotype) + preprocess_size(c) + config.num_nodes
    heads = (c + 1) * config.num_labels
    embed = config.vocab_size * config.embedding_size if include_embeddings else 0
    project = (config.embedding_size + 1) * c if config.embedding_size != c else 0
    return embed + project + config.num_cells * per_cell + heads


def child_flops(config: AdaBertConfig, seq_len: int = 128) -> int:
    """FLOPs of one sequence through the cells and the classifier (cell heads skipped at inference)."""
    per_token = sum(op_flops(o, config.hidden_size) for o in config.genotype) + preprocess_flops(
        config.hidden_size
    )
    project = (
        2 * config.embedding_size * config.hidden_size if config.embedding_size != config.hidden_size else 0
    )
    return seq_len * (config.num_cells * per_token + project) + 2 * config.hidden_size * config.num_labels


def embedding_params(model: torch.nn.Module) -> int:
    """The embedding block's parameters (word, position, type tables and their LayerNorm in BERT-likes)."""
    block = getattr(model.base_model, "embeddings", None) or model.get_input_embeddings()
    return sum(p.numel() for p in block.parameters())


@torch.no_grad()
def factorise_embeddings(student: AdaBertForSequenceClassification, teacher: torch.nn.Module) -> None:
    """ALBERT-style: the teacher's word embeddings (V, H) by their best rank-E approximation, U_E·S_E (V, E).

    Raises:
        ValueError: the student's embedding size exceeds the teacher's embedding width.
    """
    weight = teacher.get_input_embeddings().weight.float()
    u, s, _ = torch.linalg.svd(weight, full_matrices=False)
    e = student.config.embedding_size
    if e > s.numel():
        raise ValueError(f"recipe.embedding_size={e} exceeds the teacher's embedding width {s.numel()}")
    student.embeddings.weight.copy_(u[:, :e] * s[:e])
