"""Teacher adapter: any HF encoder (BERT, RoBERTa, MobileBERT, DistilBERT, ...) behind one named output.

The teacher is loaded once with eager attention (SDPA/flash kernels return no attention maps),
frozen and kept in eval mode whatever the surrounding LightningModule does. ``Teacher(batch)``
returns everything layer-wise distillation needs in a ``TeacherOutput``; MLM and NSP logits are
there only when the checkpoint really has those heads, which is decided from the load report,
never assumed from the class name (the offline MiniLM is a bare ``BertModel``).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

import torch
import transformers
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from core.assets import resolve_path
from core.dtypes import DTYPES
from modules.attention_scores import AttentionScores
from modules.embedding_init import EmbeddingWeights
from modules.teacher_config import MLM_HEAD_CHOICES, MLMHeadFitConfig, TeacherConfig  # noqa: F401  (public here too)

log = logging.getLogger(__name__)


# Parameter-name fragments of next-sentence heads across architectures (BERT/MobileBERT: cls.seq_relationship).
_NSP_KEYS = ("seq_relationship",)

@dataclass
class TeacherOutput:
    """Everything a student learns from, for one batch.

    Attributes:
        embeddings: (B, S, D) embedding-layer output.
        hidden_states: L tensors (B, S, D), the output of each teacher layer (embeddings not included).
        attentions: L tensors (B, heads, S, S), attention probabilities of each layer.
        mlm_logits: (B, S, V) when the teacher has an MLM head (and it is enabled), else None.
        nsp_logits: (B, 2) when the teacher has an NSP head (and it is enabled), else None.
        attention_scores: L tensors (B, heads, S, S), the unnormalised scores q·kᵀ/√d of each layer (TinyBERT
            Eq. 7), only when ``Teacher.capture_attention_scores`` is on, else None.
    """

    embeddings: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]
    attentions: tuple[torch.Tensor, ...]
    mlm_logits: torch.Tensor | None = None
    nsp_logits: torch.Tensor | None = None
    attention_scores: tuple[torch.Tensor, ...] | None = None


class Teacher(nn.Module):
    """A frozen HF encoder (optionally with heads) and its tokenizer.

    ``fitted_mlm_head`` (None unless ``attach_mlm_head`` set it): an MLM head fitted on this frozen encoder
    (``teacher.mlm_head=fit``, modules/mlm_head.py), read from the last hidden state; ``mlm_head_key`` names
    that fit, so the teacher-output cache keys change with it.
    ``capture_attention_scores`` (off by default: hooks and L extra (B, heads, S, S) tensors per forward): the
    forward also returns every layer's unnormalised attention scores (TinyBERT's attention loss reads them).
    """

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, has_mlm: bool, has_nsp: bool
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.has_mlm_head = has_mlm
        self.has_nsp_head = has_nsp
        self.fitted_mlm_head: nn.Module | None = None
        self.mlm_head_key: str | None = None
        self.capture_attention_scores = False
        self.model.requires_grad_(False)
        self.model.eval()
        self._accepts_token_types = "token_type_ids" in inspect.signature(self.model.forward).parameters

    def attach_mlm_head(self, head: nn.Module, key: str) -> None:
        """Use ``head`` ((B, S, D) last hidden state -> (B, S, V) logits) as this teacher's MLM head: frozen,
        in the teacher's dtype, named by ``key`` (modules/mlm_head.py).

        Raises:
            ValueError: the teacher already has an MLM head.
        """
        if self.has_mlm_head:
            raise ValueError(f"teacher {self.config.name_or_path} already has an MLM head")
        self.fitted_mlm_head = head.to(self.encoder.dtype).requires_grad_(False).eval()
        self.mlm_head_key = key
        self.has_mlm_head = True

    @torch.no_grad()
    def last_hidden_state(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, S) ids and mask -> (B, S, D) the encoder's last layer, without attention maps (cheaper)."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._accepts_token_types and token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.encoder(**kwargs, return_dict=True).last_hidden_state

    def train(self, mode: bool = True) -> Teacher:
        # Frozen means frozen: a parent module's .train() must not turn the teacher's dropout on.
        return super().train(False)

    @property
    def encoder(self) -> PreTrainedModel:
        return self.model.base_model

    @property
    def config(self) -> transformers.PretrainedConfig:
        return self.model.config

    @property
    def num_layers(self) -> int:
        return (
            self.config.num_hidden_layers
            if hasattr(self.config, "num_hidden_layers")
            else self.config.n_layers
        )

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size if hasattr(self.config, "hidden_size") else self.config.dim

    @property
    def num_heads(self) -> int:
        return (
            self.config.num_attention_heads
            if hasattr(self.config, "num_attention_heads")
            else self.config.n_heads
        )

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def describe(self) -> str:
        heads = [
            name for name, present in (("MLM", self.has_mlm_head), ("NSP", self.has_nsp_head)) if present
        ]
        params = sum(p.numel() for p in self.encoder.parameters())
        return (
            f"{type(self.model).__name__} '{self.config.name_or_path}': {self.num_layers} layers, "
            f"{self.hidden_size} wide, {self.num_heads} heads, {params / 1e6:.1f}M encoder params, "
            f"heads: {', '.join(heads) if heads else 'none'}"
        )

    @torch.no_grad()
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> TeacherOutput:
        """(B, S) ids and mask (and segment ids where the architecture has them) -> ``TeacherOutput``."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._accepts_token_types and token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        scores = None
        if self.capture_attention_scores:
            with AttentionScores(self.model) as capture:
                out = self.model(**kwargs, output_hidden_states=True, output_attentions=True, return_dict=True)
            scores = capture.scores()
        else:
            out = self.model(**kwargs, output_hidden_states=True, output_attentions=True, return_dict=True)
        if not out.attentions or any(a is None for a in out.attentions):
            raise RuntimeError(
                f"teacher {self.config.name_or_path} returned no attention maps: it must be loaded with "
                "attn_implementation='eager' (load_teacher does this)"
            )
        mlm_logits = nsp_logits = None
        if self.fitted_mlm_head is not None:
            mlm_logits = self.fitted_mlm_head(out.hidden_states[-1])  # (B, S, V)
        elif self.has_mlm_head:
            mlm_logits = out.prediction_logits if hasattr(out, "prediction_logits") else out.logits
        if self.has_nsp_head:
            nsp_logits = out.seq_relationship_logits
        return TeacherOutput(
            embeddings=out.hidden_states[0],
            hidden_states=tuple(out.hidden_states[1:]),
            attentions=tuple(out.attentions),
            mlm_logits=mlm_logits,
            nsp_logits=nsp_logits,
            attention_scores=scores,
        )

    def embedding_weights(self) -> EmbeddingWeights:
        """The teacher's embedding tables, to initialise a student's (AutoDistill §3.3.2)."""
        emb = self.encoder.embeddings

        def table(name: str) -> torch.Tensor | None:
            module = getattr(emb, name, None)
            return module.weight.detach().float().cpu() if isinstance(module, nn.Embedding) else None

        norm = getattr(emb, "LayerNorm", None)
        has_norm = isinstance(norm, nn.LayerNorm)
        return EmbeddingWeights(
            word=self.encoder.get_input_embeddings().weight.detach().float().cpu(),
            position=table("position_embeddings"),
            token_type=table("token_type_embeddings"),
            norm_weight=norm.weight.detach().float().cpu() if has_norm else None,
            norm_bias=norm.bias.detach().float().cpu() if has_norm else None,
        )


def _head_presence(model: PreTrainedModel, missing_keys: set[str]) -> tuple[bool, bool]:
    """Which heads a loaded checkpoint really has: a head whose weights were missing is random."""
    prefix = model.base_model_prefix + "."
    head_params = [name for name, _ in model.named_parameters() if not name.startswith(prefix)]
    nsp = [n for n in head_params if any(k in n for k in _NSP_KEYS)]
    mlm = [n for n in head_params if n not in nsp]

    def present(names: list[str]) -> bool:
        return bool(names) and not any(n in missing_keys for n in names)

    return present(mlm), present(nsp)


def _load_with_heads(path: str, dtype: torch.dtype, revision: str | None) -> tuple[PreTrainedModel, set[str]]:
    """Load with the richest head class the architecture maps to; report which keys were missing."""
    last_error: Exception | None = None
    for auto in (AutoModelForPreTraining, AutoModelForMaskedLM, AutoModel):
        try:
            model, info = auto.from_pretrained(
                path, attn_implementation="eager", dtype=dtype, revision=revision, output_loading_info=True
            )
            return model, set(info["missing_keys"])
        except ValueError as err:  # "Unrecognized configuration class ... for this kind of AutoModel"
            last_error = err
    raise ValueError(f"could not load teacher '{path}' with any Auto class: {last_error}")


def teacher_path(cfg: TeacherConfig) -> str:
    """``teacher.name_or_path`` as transformers wants it: a local path (checked) or a hub id.

    Raises:
        FileNotFoundError: a local/pkg path that does not exist.
    """
    path = cfg.name_or_path
    if path.startswith("pkg://") or path.startswith((".", "/", "~")):
        local = resolve_path(path)
        if not local.exists():
            raise FileNotFoundError(f"teacher.name_or_path={path} -> {local} does not exist")
        path = str(local)
    return path


def read_teacher_config(cfg: TeacherConfig) -> transformers.PretrainedConfig:
    """The teacher's config.json alone (no weights, no tokenizer): for checks before any work.

    Raises:
        FileNotFoundError: a local/pkg path that does not exist.
    """
    return AutoConfig.from_pretrained(teacher_path(cfg), revision=cfg.revision)


def check_positions(model: str, config: transformers.PretrainedConfig, lengths: dict[str, int]) -> None:
    """A model (a teacher, a student dir) can embed every sequence length it will be fed.

    Args:
        model: what the model is, e.g. ``"teacher <path>"``, quoted in the error.
        config: its config (``read_teacher_config``, ``AutoConfig.from_pretrained``).
        lengths: config key -> the sequence length it sets (e.g. ``{"data.max_seq_len": 128}``).
    Raises:
        ValueError: a length above the model's ``max_position_embeddings``; names the key and the model.
    """
    positions = getattr(config, "max_position_embeddings", None)
    for key, length in lengths.items():
        if positions is not None and length > positions:
            raise ValueError(
                f"{key}={length} exceeds {model}'s max_position_embeddings={positions}; set {key} <= {positions}"
            )


def check_vocabulary(model: str, config: transformers.PretrainedConfig, tokenizer: PreTrainedTokenizerBase) -> None:
    """A model embeds every id its tokenizer produces.

    Raises:
        ValueError: the tokenizer has more tokens than the model's ``vocab_size``.
    """
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"{model}: its tokenizer has {len(tokenizer)} tokens but the model embeds {config.vocab_size}: "
            "the tokenizer was not saved with this model"
        )


def load_teacher(cfg: TeacherConfig) -> Teacher:
    """Load, freeze and describe a teacher.

    Raises:
        FileNotFoundError: a local/pkg path that does not exist.
        ValueError: a tokenizer with more tokens than the model embeds; a head asked for (``mlm_head: true``/``nsp_head: true``) that the checkpoint lacks.

    ``mlm_head: fit`` loads like null: the checkpoint's head when it has one; otherwise the recipe fits one
    (``modules.mlm_head.attach_fitted_mlm_head``).
    """
    path = teacher_path(cfg)
    # The per-key load report is noisy and alarming for a bare encoder ("MISSING ... newly initialized");
    # we read the same facts from output_loading_info and say them once, plainly, below.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model, missing = _load_with_heads(path, DTYPES[cfg.dtype], cfg.revision)
        tokenizer = AutoTokenizer.from_pretrained(path, revision=cfg.revision)
    finally:
        transformers.logging.set_verbosity(verbosity)
    check_vocabulary(f"teacher.name_or_path={cfg.name_or_path}", model.config, tokenizer)
    has_mlm, has_nsp = _head_presence(model, missing)

    for head, present, wanted in (("MLM", has_mlm, cfg.mlm_head), ("NSP", has_nsp, cfg.nsp_head)):
        if wanted is True and not present:
            raise ValueError(
                f"teacher.{head.lower()}_head=true but '{cfg.name_or_path}' has no trained {head} head "
                f"(its checkpoint lacks those weights). Use a teacher with one (e.g. bert-base-uncased) "
                f"or set teacher.{head.lower()}_head=null to distil without it."
            )
    use_mlm = has_mlm and cfg.mlm_head is not False
    if has_mlm and cfg.mlm_head == "fit":
        log.info("teacher.mlm_head=fit: %s has a trained MLM head; using it, no fit", cfg.name_or_path)
    use_nsp = has_nsp and cfg.nsp_head is not False
    if not has_mlm and not has_nsp:
        # A bare encoder: keep only it, so no randomly initialised head sits in memory.
        model = model.base_model
    teacher = Teacher(model, tokenizer, use_mlm, use_nsp)
    absent = [h for h, present in (("MLM", has_mlm), ("NSP", has_nsp)) if not present]
    if not has_mlm and cfg.mlm_head == "fit":
        absent.remove("MLM")
        log.info("teacher %s has no MLM head: teacher.mlm_head=fit fits one on it", cfg.name_or_path)
    if absent:
        log.info(
            "teacher %s has no %s head: losses that need %s are disabled",
            cfg.name_or_path,
            " / ".join(absent),
            " / ".join(f"{h} logits" for h in absent),
        )
    return teacher
