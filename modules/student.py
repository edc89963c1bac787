"""The student template (AutoDistill Fig. 2, after MobileBERT): one plain file, read top to bottom.

Long on purpose: config -> outputs -> layers -> encoder -> heads, the nanoGPT model.py shape (STYLE 5); split
up, a reader would jump between files to follow one forward pass.

A student is an embedding layer, a chain of building blocks and a task head. Each block has five
factors (``BlockSpec``): hidden size (block input/output width, the MHA input width), bottleneck size
(MHA output width = the inner width of the block), attention heads, FFN intermediate size and the
number of stacked FFNs. One block, for input x of width H and bottleneck width Bn:

    r = LN(W_in x)                      # hidden -> bottleneck map (the residual of the inner block)
    a = LN(r + W_o MHA(q=x, k=x, v=x))  # MHA reads the full hidden width, writes Bn
    a = LN(a + FFN_j(a))                # j = 1..num_ffn, each FFN = two dense layers at Bn <-> I
    y = LN(x + W_out a)                 # bottleneck -> hidden map, residual over the whole block

The two maps exist to let any (hidden, bottleneck) pair fit. Where hidden == bottleneck nothing needs
fitting, so they (and the outer residual, which would add x twice) are left out: a block with
hidden == bottleneck and one FFN is then exactly a BERT layer, which is what the HF-parity test checks.
Blocks may differ (a per-block list); where consecutive hidden sizes differ a dense transition maps
one to the next. The embedding width is the first block's hidden size and the MLM decoder is tied to
the word embeddings, as in BERT.

MobileBERT's student-wide factors (Sun et al. 2020 §3.4-3.5; names and maths as in HF's modeling_mobilebert.py):
``normalization_type="no_norm"`` swaps every LN above (and the embeddings') for NoNorm, h -> γ ∘ h + β;
``hidden_act="relu"`` the FFNs' GELU for ReLU ("OPT": latency, not FLOPs); ``embedding_size`` E < H_1 narrows the
word table, and ``trigram_input`` then reads tokens t+1, t, t-1 (a kernel-3 convolution) before a dense map up to
H_1. Their defaults (layer_norm, gelu, null, false) build exactly the BERT-style template.

The spec (``BlockSpec``, ``StudentSpec``, names) is in modules/student_spec.py, the analytic parameter and FLOP
counts in modules/student_costs.py, and the embedding initialisation from a teacher in modules/embedding_init.py.

Importing this module registers the classes with ``transformers``' Auto* factories, so a saved
student loads with ``AutoModel.from_pretrained(dir)`` (and the head classes) after ``import modules.auto`` (or ``modules.student``). Every
``save_pretrained`` also writes ``auto_map`` into config.json and copies this file and student_blocks.py beside the
weights (``register_for_auto_class``: transformers' own custom-code saving), so the dir loads without this project
through ``AutoModel*.from_pretrained(dir, trust_remote_code=True)``. Hence this file imports only torch,
transformers and (relatively) student_blocks.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

# Relative on purpose: save_pretrained copies this file and its relative imports beside the weights
# (transformers' custom_object_save), where `modules` does not exist; student_blocks.py is standard library only.
from .student_blocks import BlockSpec, block_problem, factors_problem, student_name, unchecked_block


class StudentConfig(PreTrainedConfig):
    """Hugging Face config of a student: what ``save_pretrained`` writes and ``AutoConfig`` reads.

    ``blocks`` is a list of dicts with the five ``BLOCK_FACTORS`` (JSON-friendly ``BlockSpec``s). MobileBERT's
    factors keep HF ``MobileBertConfig``'s names: ``normalization_type``, ``hidden_act``, ``embedding_size``
    (None: the first block's hidden size, no factorisation), ``trigram_input``.
    """

    model_type = "distill_student"
    blocks: list | None = None
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    classifier_dropout: float | int | None = None
    tie_word_embeddings: bool = True
    normalization_type: str = "layer_norm"
    embedding_size: int | None = None
    trigram_input: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        if not self.blocks:
            raise ValueError(
                "StudentConfig.blocks must list at least one block (dicts of the five block factors)"
            )
        for i, block in enumerate(self.block_specs):
            problem = block_problem(block)
            if problem:
                raise ValueError(f"student.blocks[{i}]: {problem}")
        problem = factors_problem(self.normalization_type, self.embedding_size, self.trigram_input,
                                  self.block_specs[0].hidden_size)  # fmt: skip
        if problem:
            raise ValueError(f"student.{problem}")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"student.hidden_act={self.hidden_act!r} is unknown; use e.g. gelu, relu, gelu_new")
        super().__post_init__(**kwargs)

    @classmethod
    def from_spec(cls, spec: Any, vocab_size: int | None = None, **kwargs: Any) -> StudentConfig:
        """The HF config of the student ``spec`` (a ``modules.student_spec.StudentSpec``) describes (``kwargs`` go to
        the config, e.g. ``num_labels``).

        Args:
            vocab_size: the teacher tokenizer's vocabulary size; must agree with ``student.vocab_size`` if set.
        Raises:
            ValueError: the two vocabulary sizes disagree, or neither is given.
        """
        if spec.vocab_size is not None and vocab_size is not None and spec.vocab_size != vocab_size:
            raise ValueError(
                f"student.vocab_size={spec.vocab_size} but the teacher's tokenizer has {vocab_size} tokens; "
                "the student shares the teacher's tokenizer, so leave student.vocab_size null"
            )
        vocab = spec.vocab_size if spec.vocab_size is not None else vocab_size
        if vocab is None:
            raise ValueError(
                "student.vocab_size is null and no teacher vocabulary was given; set student.vocab_size"
            )
        return cls(
            blocks=[asdict(b) for b in spec.block_list()],
            vocab_size=vocab,
            max_position_embeddings=spec.max_position_embeddings,
            type_vocab_size=spec.type_vocab_size,
            hidden_act=spec.hidden_act,
            hidden_dropout_prob=spec.hidden_dropout_prob,
            attention_probs_dropout_prob=spec.attention_probs_dropout_prob,
            layer_norm_eps=spec.layer_norm_eps,
            initializer_range=spec.initializer_range,
            normalization_type=spec.normalization_type,
            embedding_size=spec.embedding_size,
            trigram_input=spec.trigram_input,
            **kwargs,
        )

    @property
    def block_specs(self) -> list[BlockSpec]:
        # Validation happens in __post_init__ with the block index in the message, so build without it here.
        return [unchecked_block(b) for b in self.blocks]

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def word_embedding_size(self) -> int:
        """Width E of the word table (and of the tied MLM decoder): ``embedding_size``, else the first block's."""
        return self.embedding_size if self.embedding_size is not None else self.blocks[0]["hidden_size"]

    @property
    def factorised_embedding(self) -> bool:
        """Whether a dense map (MobileBERT's embedding_transformation) lifts the word embeddings to H_1."""
        return self.trigram_input or self.word_embedding_size != self.blocks[0]["hidden_size"]

    @property
    def hidden_size(self) -> int:
        """Width of the last block's output: what heads and downstream tools read."""
        return self.blocks[-1]["hidden_size"]

    @property
    def name(self) -> str:
        return student_name(self.block_specs)


# --------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------


@dataclass
class StudentOutput(ModelOutput):
    """What the encoder returns.

    Attributes:
        last_hidden_state: (B, S, H_last) output of the last block.
        pooler_output: (B, H_last) tanh(dense([CLS])) as in BERT.
        embeddings: (B, S, H_1) output of the embedding layer (H_1 = first block's hidden size).
        block_outputs: per block k, (B, S, H_k); only with ``output_hidden_states=True``.
            Unlike HF's ``hidden_states`` it does not start with the embeddings (those are above).
        attentions: per block k, (B, heads_k, S, S) attention probabilities (rows sum to 1 over keys,
            padded keys get 0); only with ``output_attentions=True``, which also switches from the fused
            SDPA kernel to the explicit softmax that can return them.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    block_outputs: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class StudentPreTrainingOutput(ModelOutput):
    """mlm_logits: (B, S, V); nsp_logits: (B, 2); loss = MLM CE + NSP CE when labels are given."""

    loss: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    nsp_logits: torch.Tensor | None = None
    encoder: StudentOutput | None = None


@dataclass
class StudentMaskedLMOutput(ModelOutput):
    """logits: (B, S, V)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    encoder: StudentOutput | None = None


@dataclass
class StudentSequenceClassifierOutput(ModelOutput):
    """logits: (B, num_labels); num_labels == 1 is regression."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    encoder: StudentOutput | None = None


@dataclass
class StudentQuestionAnsweringOutput(ModelOutput):
    """start_logits, end_logits: (B, S); padded positions are not masked here (post-processing does it)."""

    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    encoder: StudentOutput | None = None


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------


class NoNorm(nn.Module):
    """MobileBERT's NoNorm (Sun et al. 2020 §3.4, HF ``NoNorm``): h -> γ ∘ h + β, element-wise over (..., D).

    No mean or variance over the features, so no reduction: the latency LayerNorm costs on device goes, the
    matmul FLOPs stay. Parameter names are nn.LayerNorm's (``weight`` = γ, ``bias`` = β), so state-dict names and
    the no-weight-decay rule for norms carry over.
    """

    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias  # (..., D) * (D,) + (D,)


def make_norm(config: StudentConfig, width: int) -> nn.Module:
    """The student's normalisation at ``width``: nn.LayerNorm, or NoNorm with ``normalization_type="no_norm"``."""
    if config.normalization_type == "no_norm":
        return NoNorm(width)
    return nn.LayerNorm(width, eps=config.layer_norm_eps)


def trigram(x: torch.Tensor) -> torch.Tensor:
    """MobileBERT's kernel-3 embedding convolution input (§3.5, HF ``trigram_input``): each position's embedding
    beside its neighbours', ordered token t+1, t, t-1, with zeros beyond the sequence ends.

    (B, S, E) -> (B, S, 3E); a dense 3E -> H after it is the 1-D convolution with kernel size 3.
    """
    after = F.pad(x[:, 1:], (0, 0, 0, 1))  # (B, S, E): token t+1, zero at the last position
    before = F.pad(x[:, :-1], (0, 0, 1, 0))  # (B, S, E): token t-1, zero at the first position
    return torch.cat([after, x, before], dim=-1)


class Embeddings(nn.Module):
    """word + position + token type, then the norm and dropout (BERT's embedding layer).

    With a factorised embedding (MobileBERT §3.5: ``embedding_size`` E < H_1, or ``trigram_input``) the word table
    is E wide and ``embedding_transformation`` lifts it to H_1 (from the 3E trigram with ``trigram_input``); the
    position and token-type tables are H_1 wide, as in HF's MobileBertEmbeddings.
    """

    def __init__(self, config: StudentConfig):
        super().__init__()
        width = config.blocks[0]["hidden_size"]
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.word_embedding_size, padding_idx=config.pad_token_id
        )
        self.trigram_input = config.trigram_input
        self.embedding_transformation = (
            nn.Linear(config.word_embedding_size * (3 if config.trigram_input else 1), width)
            if config.factorised_embedding
            else None
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        self.LayerNorm = make_norm(config, width)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def words(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) ids -> (B, S, H_1) word embeddings, lifted to H_1 where the table is factorised.

        A padded neighbour counts as zero in the trigram, like a position past the sequence end (HF reads the
        [PAD] row there, so a real token's output would depend on how far its batch was padded).
        """
        x = self.word_embeddings(input_ids)  # (B, S, E)
        if self.embedding_transformation is None:
            return x
        if self.trigram_input:
            if attention_mask is not None:
                x = x * attention_mask[:, :, None].to(x.dtype)
            x = trigram(x)  # (B, S, 3E)
        return self.embedding_transformation(x)  # (B, S, H_1)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, S) ids, segment ids and (optional) padding mask -> (B, S, H_1)."""
        seq_len = input_ids.shape[1]
        positions = torch.arange(seq_len, device=input_ids.device)  # (S,)
        x = self.words(input_ids, attention_mask) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(positions)  # (B, S, H_1) + (S, H_1)
        return self.dropout(self.LayerNorm(x))


class MultiHeadAttention(nn.Module):
    """Queries, keys and values read the block input (hidden width) and live at the bottleneck width."""

    def __init__(self, block: BlockSpec, config: StudentConfig):
        super().__init__()
        self.num_heads = block.num_heads
        self.head_dim = block.bottleneck_size // block.num_heads
        self.query = nn.Linear(block.hidden_size, block.bottleneck_size)
        self.key = nn.Linear(block.hidden_size, block.bottleneck_size)
        self.value = nn.Linear(block.hidden_size, block.bottleneck_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq_len, _ = x.shape
        return x.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, S, d)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, need_probs: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            x: (B, S, H) block input.
            mask: (B, 1, 1, S) additive mask: 0 for real keys, dtype-min for padding.
            need_probs: return the attention probabilities (explicit softmax) instead of using SDPA.
        Returns:
            context (B, S, Bn) and probabilities (B, h, S, S) or None.
        """
        batch, seq_len, _ = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        dropout_p = self.dropout_p if self.training else 0.0
        if need_probs:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + mask  # (B, h, S, S)
            probs = scores.softmax(dim=-1)
            context = F.dropout(probs, dropout_p, self.training) @ v  # (B, h, S, d)
        else:
            probs = None
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        context = context.transpose(1, 2).reshape(
            batch, seq_len, self.num_heads * self.head_dim
        )  # (B, S, Bn)
        return context, probs


class DenseResidualNorm(nn.Module):
    """LN(residual + dropout(dense(x))): the output half of every sub-layer."""

    def __init__(self, in_features: int, out_features: int, config: StudentConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, out_features)
        self.LayerNorm = make_norm(config, out_features)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class FeedForward(nn.Module):
    """One FFN at the bottleneck width: Bn -> I -> Bn with a residual and LayerNorm."""

    def __init__(self, block: BlockSpec, config: StudentConfig):
        super().__init__()
        self.up = nn.Linear(block.bottleneck_size, block.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.down = DenseResidualNorm(block.intermediate_size, block.bottleneck_size, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)), residual=x)


class BottleneckIn(nn.Module):
    """hidden -> bottleneck map with LayerNorm (MobileBERT's input bottleneck)."""

    def __init__(self, block: BlockSpec, config: StudentConfig):
        super().__init__()
        self.dense = nn.Linear(block.hidden_size, block.bottleneck_size)
        self.LayerNorm = make_norm(config, block.bottleneck_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x))


class Block(nn.Module):
    """One building block; see the module docstring for the equations."""

    def __init__(self, block: BlockSpec, config: StudentConfig):
        super().__init__()
        self.spec = block
        self.bottleneck_in = BottleneckIn(block, config) if block.has_bottleneck else None
        self.attention = MultiHeadAttention(block, config)
        self.attention_output = DenseResidualNorm(block.bottleneck_size, block.bottleneck_size, config)
        self.ffns = nn.ModuleList(FeedForward(block, config) for _ in range(block.num_ffn))
        self.bottleneck_out = (
            DenseResidualNorm(block.bottleneck_size, block.hidden_size, config)
            if block.has_bottleneck
            else None
        )

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, need_probs: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, S, H) -> (B, S, H), attention probs (B, h, S, S) or None."""
        residual = x if self.bottleneck_in is None else self.bottleneck_in(x)  # (B, S, Bn)
        context, probs = self.attention(x, mask, need_probs)  # (B, S, Bn)
        h = self.attention_output(context, residual=residual)
        for ffn in self.ffns:
            h = ffn(h)
        if self.bottleneck_out is not None:
            h = self.bottleneck_out(h, residual=x)  # (B, S, H)
        return h, probs


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


class StudentPreTrainedModel(PreTrainedModel):
    """HF plumbing shared by the student models: config class, weight initialisation, save/load."""

    config_class = StudentConfig
    config: StudentConfig
    base_model_prefix = "student"
    main_input_name = "input_ids"

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """``PreTrainedModel.save_pretrained`` with ``auto_map`` naming every student class, not only this one: a
        classifier dir then also loads through ``AutoModel`` (the encoder) with ``trust_remote_code=True``."""
        self.config.auto_map = auto_map()
        return super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # BERT's initialisation: N(0, initializer_range) for dense and embeddings, LN at identity.
        super()._init_weights(module)
        if isinstance(module, MLMHead):
            init.zeros_(module.bias)
        elif isinstance(module, NoNorm):  # identity at start, as LayerNorm's gain and bias
            init.ones_(module.weight)
            init.zeros_(module.bias)


class StudentModel(StudentPreTrainedModel):
    """The encoder: embeddings -> blocks (with transitions where hidden sizes change) -> pooler."""

    def __init__(self, config: StudentConfig):
        super().__init__(config)
        specs = config.block_specs
        self.embeddings = Embeddings(config)
        self.blocks = nn.ModuleList(Block(spec, config) for spec in specs)
        # transitions[k] maps block k's output to block k+1's input width (Identity where they match).
        self.transitions = nn.ModuleList(
            nn.Linear(a.hidden_size, b.hidden_size) if a.hidden_size != b.hidden_size else nn.Identity()
            for a, b in zip(specs[:-1], specs[1:])
        )
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        upto_block: int | None = None,
        **kwargs: Any,
    ) -> StudentOutput:
        """
        Args:
            input_ids: (B, S) token ids.
            attention_mask: (B, S) 1 for real tokens, 0 for padding; all ones when None.
            token_type_ids: (B, S) segment ids; zeros when None.
            output_hidden_states: also return every block's output.
            output_attentions: also return attention probabilities (uses the explicit softmax path).
            upto_block: run only the first ``upto_block`` blocks (progressive transfer trains block k
                and needs nothing above it); ``last_hidden_state`` is then block k's output and the
                pooler is skipped (``pooler_output`` None).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids, attention_mask)  # (B, S, H_1)
        embeddings = x
        # (B, 1, 1, S): broadcast over heads and query positions; padded keys get the dtype's minimum.
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min

        block_outputs, attentions = [], []
        num_run = len(self.blocks) if upto_block is None else upto_block
        for k, block in enumerate(self.blocks[:num_run]):
            if k > 0:
                x = self.transitions[k - 1](x)
            x, probs = block(x, mask, output_attentions)
            if output_hidden_states:
                block_outputs.append(x)
            if output_attentions:
                attentions.append(probs)
        pooled = torch.tanh(self.pooler(x[:, 0])) if num_run == len(self.blocks) else None  # (B, H_last)
        return StudentOutput(
            last_hidden_state=x,
            pooler_output=pooled,
            embeddings=embeddings,
            block_outputs=tuple(block_outputs) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


class MLMHead(nn.Module):
    """dense + act + LN at the word-embedding width E, then the decoder tied to the word embeddings (BERT's).

    Always a LayerNorm, whatever ``normalization_type``: HF's MobileBertPredictionHeadTransform keeps one too (the
    head is not in the served encoder). With a factorised embedding the transform maps H_last -> E (ALBERT's way);
    HF MobileBERT instead keeps H and appends H - E extra decoder rows to the tied table.
    """

    def __init__(self, config: StudentConfig):
        super().__init__()
        width = config.word_embedding_size
        self.dense = nn.Linear(config.hidden_size, width)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(width, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, H_last) -> (B, S, V)."""
        return self.decoder(self.LayerNorm(self.act(self.dense(x)))) + self.bias


def _mlm_loss(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    if labels is None:
        return None
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


class StudentForPreTraining(StudentPreTrainedModel):
    """Encoder + MLM head + NSP head: the model flash/regular distillation trains."""

    _tied_weights_keys = {"mlm.decoder.weight": "student.embeddings.word_embeddings.weight"}

    def __init__(self, config: StudentConfig):
        super().__init__(config)
        self.student = StudentModel(config)
        self.mlm = MLMHead(config)
        self.nsp = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.mlm.decoder = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> StudentPreTrainingOutput:
        """labels: (B, S) token ids at masked positions, -100 elsewhere; next_sentence_label: (B,) 0 = real next."""
        enc = self.student(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions)
        mlm_logits = self.mlm(enc.last_hidden_state)
        nsp_logits = self.nsp(enc.pooler_output)
        loss = _mlm_loss(mlm_logits, labels)
        if next_sentence_label is not None:
            nsp_loss = F.cross_entropy(nsp_logits, next_sentence_label)
            loss = nsp_loss if loss is None else loss + nsp_loss
        return StudentPreTrainingOutput(loss=loss, mlm_logits=mlm_logits, nsp_logits=nsp_logits, encoder=enc)


class StudentForMaskedLM(StudentPreTrainedModel):
    """Encoder + MLM head (no NSP): logits (B, S, V); loss = MLM cross-entropy when labels are given."""

    _tied_weights_keys = {"mlm.decoder.weight": "student.embeddings.word_embeddings.weight"}

    def __init__(self, config: StudentConfig):
        super().__init__(config)
        self.student = StudentModel(config)
        self.mlm = MLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.mlm.decoder = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> StudentMaskedLMOutput:
        enc = self.student(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions)
        logits = self.mlm(enc.last_hidden_state)
        return StudentMaskedLMOutput(loss=_mlm_loss(logits, labels), logits=logits, encoder=enc)


class StudentForSequenceClassification(StudentPreTrainedModel):
    """Pooled [CLS] -> dropout -> linear. num_labels == 1 regresses with MSE (GLUE STS-B)."""

    def __init__(self, config: StudentConfig):
        super().__init__(config)
        self.student = StudentModel(config)
        dropout = (
            config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> StudentSequenceClassifierOutput:
        enc = self.student(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions)
        logits = self.classifier(self.dropout(enc.pooler_output))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.float())
            else:
                loss = F.cross_entropy(logits, labels)
        return StudentSequenceClassifierOutput(loss=loss, logits=logits, encoder=enc)


class StudentForQuestionAnswering(StudentPreTrainedModel):
    """Span head: a linear map of each token to (start, end) logits."""

    def __init__(self, config: StudentConfig):
        super().__init__(config)
        self.student = StudentModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> StudentQuestionAnsweringOutput:
        enc = self.student(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions)
        start_logits, end_logits = self.qa_outputs(enc.last_hidden_state).unbind(dim=-1)  # (B, S) each
        loss = None
        if start_positions is not None and end_positions is not None:
            # Answers clipped out of the window point at position S and are ignored, as in HF's heads.
            seq_len = start_logits.shape[1]
            start = start_positions.clamp(0, seq_len)
            end = end_positions.clamp(0, seq_len)
            loss = (
                F.cross_entropy(start_logits, start, ignore_index=seq_len)
                + F.cross_entropy(end_logits, end, ignore_index=seq_len)
            ) / 2
        return StudentQuestionAnsweringOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits, encoder=enc
        )


# --------------------------------------------------------------------------------------------------
# Hugging Face Auto* classes: `import modules.auto` (or this module) registers them locally; save_pretrained writes them as auto_map.
# --------------------------------------------------------------------------------------------------

AUTO_CLASSES: dict[str, type] = {
    "AutoConfig": StudentConfig,
    "AutoModel": StudentModel,
    "AutoModelForPreTraining": StudentForPreTraining,
    "AutoModelForMaskedLM": StudentForMaskedLM,
    "AutoModelForSequenceClassification": StudentForSequenceClassification,
    "AutoModelForQuestionAnswering": StudentForQuestionAnswering,
}


def auto_map() -> dict[str, str]:
    """config.json's ``auto_map``: Auto class name -> ``<file stem>.<class>`` of the code copied beside the weights."""
    return {auto: f"{cls.__module__.split('.')[-1]}.{cls.__name__}" for auto, cls in AUTO_CLASSES.items()}


for _auto, _cls in AUTO_CLASSES.items():
    # save_pretrained then copies this file (and its relative imports) beside the weights: custom_object_save.
    _cls.register_for_auto_class(_auto)

if __package__ == "modules":
    # Only the project's import registers the model type locally. A copy loaded from a saved dir (package
    # transformers_modules.*) must not: it would replace the project's classes for every later load in the process.
    AutoConfig.register(StudentConfig.model_type, StudentConfig, exist_ok=True)
    AutoModel.register(StudentConfig, StudentModel, exist_ok=True)
    AutoModelForPreTraining.register(StudentConfig, StudentForPreTraining, exist_ok=True)
    AutoModelForMaskedLM.register(StudentConfig, StudentForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(StudentConfig, StudentForSequenceClassification, exist_ok=True)
    AutoModelForQuestionAnswering.register(StudentConfig, StudentForQuestionAnswering, exist_ok=True)
