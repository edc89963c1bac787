"""``teacher.mlm_head=fit``: give a head-less teacher (a sentence-transformers checkpoint such as the offline
MiniLM) BERT's masked-LM head, fitted on the frozen teacher, so MLM-KD (the soft-target term of L_D) can run.

The head is transformers' own ``BertOnlyMLMHead`` (``BertLMPredictionHead``; Devlin et al. 2019, BERT §3.1
and its released code): transform = dense D->D + activation (the teacher's, gelu for BERT) + LayerNorm,
then a decoder D->V whose weight is TIED to the teacher's input word embeddings (the same frozen
parameter) with a trainable per-token bias. Only the transform and the bias are trained: the teacher's
last hidden state at the masked positions of the pre-training corpus's batches -> head -> cross-entropy
on the original tokens. The teacher's states are computed once and held in memory; the fit then cycles over them.

Start: the transform's dense layer is the identity and the bias the log-unigram of the training labels,
so the untrained head already reads the teacher's space through its own embeddings ("logit lens"). BERT
initialises the head at random because it trains it jointly with the encoder for 1M steps. A short fit on a
frozen encoder does better starting where the tied decoder already scores the hidden state. On MiniLM +
dialog (16 training batches, 150 steps, all 8 validation batches) it reached 0.178 held-out accuracy,
against about 0.153 from BERT's random init N(0, 0.02).

Held-out accuracy is measured on the data module's validation split, against the unigram baseline (always
the most frequent masked token of the training batches). The fitted head is cached on disk under
``teacher.mlm_head_fit.cache_dir/<key>/`` (state dict + ``meta.json``), the key hashing everything that
changes it: the teacher's weights (``teacher_fingerprint``), the corpus and its batches (the data module's
cache key: source bytes, tokenizer, max_seq_len, max_examples, seed, ...; plus masking and batch sizes) and
the fit settings. A later run, or the next trial of a search, loads it instead: about a second for MiniLM,
most of it hashing the teacher's weights for the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertOnlyMLMHead

from core.assets import resolve_path
from core.files import torch_save_atomic, write_json_atomic
from datamodules.pretraining import PretrainingDataModule
from modules.teacher import MLMHeadFitConfig, Teacher, TeacherConfig
from modules.teacher_cache import teacher_fingerprint

log = logging.getLogger(__name__)

# Part of the cache key: bump it when the fitting procedure changes, so older fits are not reused.
FIT_VERSION = 1
# The decoder weight is the teacher's embedding table: never saved with the head, re-tied on load.
_TIED = "predictions.decoder.weight"


@dataclass
class MLMHeadFit:
    """A fitted (or cached) MLM head and how good it is.

    Attributes:
        head: the head, (..., D) hidden states -> (..., V) logits, decoder tied to the teacher's embeddings.
        key: its cache key (also ``Teacher.mlm_head_key`` once attached).
        heldout_acc: MLM accuracy (fraction of masked tokens predicted) on the validation batches.
        unigram_acc: the same for always predicting the most frequent masked token of the training batches.
        heldout_tokens: masked tokens the two accuracies count.
        train_tokens: masked tokens the head was fitted on (distinct; the steps cycle over them).
        steps: optimizer steps of the fit.
        fit_time_s: how long the fit took when it ran, teacher forwards included, in seconds.
        from_cache: True when this call loaded the head from ``path`` instead of fitting it.
        path: the cache folder (``head.pt``, ``meta.json``).
    """

    head: BertOnlyMLMHead
    key: str
    heldout_acc: float
    unigram_acc: float
    heldout_tokens: int
    train_tokens: int
    steps: int
    fit_time_s: float
    from_cache: bool
    path: Path

    def as_metrics(self) -> dict[str, float]:
        """What a distillation run writes into metrics.json about the teacher's fitted head."""
        return {"teacher/mlm_head_acc": self.heldout_acc, "teacher/mlm_head_unigram_acc": self.unigram_acc}


def attach_fitted_mlm_head(
    teacher: Teacher, cfg: TeacherConfig, data: PretrainingDataModule
) -> MLMHeadFit | None:
    """With ``teacher.mlm_head=fit`` on a teacher without a trained MLM head: fit one (or load it from the
    cache) on ``data``'s batches and attach it, so ``teacher(...)`` returns ``mlm_logits`` and MLM-KD runs.

    Returns:
        The fit, or None when nothing was fitted (``mlm_head`` is not ``fit``, or the checkpoint has a head).
    Raises:
        ValueError: input embeddings narrower than the hidden states (see ``build_mlm_head``).
    """
    if cfg.mlm_head != "fit" or teacher.has_mlm_head:
        return None
    fit = fit_mlm_head(teacher, data, cfg.mlm_head_fit)
    teacher.attach_mlm_head(fit.head, fit.key)
    return fit


def build_mlm_head(teacher: Teacher) -> BertOnlyMLMHead:
    """BERT's MLM head on the teacher's width, decoder tied to its input word embeddings (frozen).

    Float32 whatever the teacher's dtype (``Teacher.attach_mlm_head`` casts it to the teacher's). The dense
    layer starts as the identity (module docstring); the bias is set by the caller.

    Raises:
        ValueError: embeddings of another width than the hidden states (MobileBERT, ALBERT factorise them):
            BERT's head cannot tie its decoder to them.
    """
    embeddings = teacher.encoder.get_input_embeddings().weight  # (V, E)
    vocab, width = embeddings.shape
    if width != teacher.hidden_size:
        raise ValueError(
            f"teacher.mlm_head=fit ties BERT's MLM decoder to the input word embeddings, but teacher "
            f"{teacher.config.name_or_path} embeds tokens in {width} dims and its hidden states have "
            f"{teacher.hidden_size}: use a teacher with a trained MLM head, or teacher.mlm_head=null"
        )
    config = teacher.config
    act = getattr(config, "hidden_act", getattr(config, "activation", "gelu"))
    bert = BertConfig(
        hidden_size=width,
        vocab_size=vocab,
        hidden_act=act if isinstance(act, str) else "gelu",
        layer_norm_eps=getattr(config, "layer_norm_eps", 1e-12),
    )
    # Built without initialising (meta, then empty memory): a random init of the V x D decoder that the tie
    # replaces would cost a cached run most of its load time. Every parameter is set below.
    with torch.device("meta"):
        head = BertOnlyMLMHead(bert)
    head.to_empty(device="cpu")
    p = head.predictions
    with torch.no_grad():
        p.transform.dense.weight.copy_(torch.eye(width))
        p.transform.dense.bias.zero_()
        p.bias.zero_()
    p.transform.LayerNorm.reset_parameters()  # gain 1, bias 0
    # Tied as in BERT: the decoder's weight IS the teacher's (frozen) embedding table, one parameter shared by
    # both; a float32 copy of it for a teacher in another dtype, so the fit runs in float32.
    if embeddings.dtype == torch.float32:
        p.decoder.weight = embeddings
    else:
        p.decoder.weight = nn.Parameter(embeddings.detach().float(), requires_grad=False)
    p.decoder.bias = p.bias  # one trainable bias, as transformers ties decoder.bias to predictions.bias
    return head


def mlm_head_key(teacher: Teacher, data: PretrainingDataModule, settings: MLMHeadFitConfig) -> str:
    """The cache key of a fit: teacher weights, corpus and batches, fit settings (not the cache folder)."""
    d = data.cfg
    blob = {
        "teacher": teacher_fingerprint(teacher),
        "data": data.cache_key(),  # source bytes, tokenizer, max_seq_len, max_examples, val_size, seed, ...
        # Masking and batch sizes are applied per step, so the data module's key leaves them out; they
        # still change the batches.
        "batches": [
            d.mlm_probability, d.mask_token_prob, d.random_token_prob, d.batch_size, d.eval_batch_size,
        ],  # fmt: skip
        "fit": {k: v for k, v in asdict(settings).items() if k != "cache_dir"},
        "version": FIT_VERSION,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]


def masked_states(teacher: Teacher, batches) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The teacher's last hidden state and the label at every masked position, per batch.

    Args:
        batches: data-module batches: ``input_ids``, ``attention_mask``, ``token_type_ids`` and ``labels``,
            each (B, S), labels -100 where not masked.
    Returns:
        (states, labels): per batch, (M_b, D) float32 and (M_b,) token ids.
    """
    states, labels = [], []
    device = teacher.encoder.device
    for batch in batches:
        batch = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids", "labels")}
        hidden = teacher.last_hidden_state(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        )  # (B, S, D)
        masked = batch["labels"] != -100  # (B, S)
        states.append(hidden[masked].float())  # (M_b, D)
        labels.append(batch["labels"][masked])  # (M_b,)
    return states, labels


def train_head(
    head: BertOnlyMLMHead, states: list[torch.Tensor], labels: list[torch.Tensor], settings: MLMHeadFitConfig
) -> float:
    """AdamW on the head's trainable parameters (transform, bias), LR decayed linearly to 0; step s trains
    on batch ``s % len(states)``.

    Returns:
        The cross-entropy of the last step (nats per masked token).
    """
    trainable = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / settings.steps)
    head.train()
    loss = torch.tensor(float("nan"))
    for step in range(settings.steps):
        i = step % len(states)
        loss = nn.functional.cross_entropy(head(states[i]), labels[i])  # head: (M_b, V) logits
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    head.eval()
    return float(loss.detach())


@torch.no_grad()
def accuracy(head: BertOnlyMLMHead, states: list[torch.Tensor], labels: list[torch.Tensor]) -> float:
    """Fraction of masked tokens whose arg-max prediction is the label."""
    hits = sum(int((head(x).argmax(-1) == y).sum()) for x, y in zip(states, labels))
    return hits / max(1, sum(len(y) for y in labels))


def fit_mlm_head(teacher: Teacher, data: PretrainingDataModule, settings: MLMHeadFitConfig) -> MLMHeadFit:
    """Fit BERT's MLM head on the frozen teacher over ``data``'s batches, or load the fit from the cache.

    The global RNG is left as it was (the head is built under ``fork_rng``), so a run whose head came from
    the cache initialises its student exactly as the run that fitted it.

    Raises:
        ValueError: see ``build_mlm_head``; ``data.val_size`` 0 (no held-out text to measure the head on).
    """
    started = time.perf_counter()
    data.setup()
    key = mlm_head_key(teacher, data, settings)
    path = resolve_path(settings.cache_dir) / key
    with torch.random.fork_rng(devices=[]):
        head = build_mlm_head(teacher).to(teacher.encoder.device)  # where the teacher is (CPU in the recipes)
        if (path / "meta.json").exists() and (path / "head.pt").exists():
            return _load(head, key, path, started)
        return _fit(teacher, head, data, settings, key, path, started)


def _fit(
    teacher: Teacher,
    head: BertOnlyMLMHead,
    data: PretrainingDataModule,
    settings: MLMHeadFitConfig,
    key: str,
    path: Path,
    started: float,
) -> MLMHeadFit:
    val = data.val_dataloader()
    if not val:
        raise ValueError("teacher.mlm_head=fit measures the head on held-out text: set data.val_size > 0")
    forwards = time.perf_counter()
    train = data.train_batches()  # batch t of global step t, as distillation sees it (past one epoch too)
    x_train, y_train = masked_states(teacher, (train[t] for t in range(settings.train_batches)))
    x_val, y_val = masked_states(teacher, islice(val, settings.val_batches))
    teacher_s = time.perf_counter() - forwards  # the teacher's forwards: most of a fit's time on CPU
    counts = torch.bincount(torch.cat(y_train), minlength=head.predictions.bias.numel()).float()  # (V,)
    with torch.no_grad():  # start from the log-unigram (add-one smoothed): the head's prior before context
        head.predictions.bias.copy_(torch.log((counts + 1.0) / (counts.sum() + counts.numel())))
    last_loss = train_head(head, x_train, y_train, settings)
    most_frequent = int(counts.argmax())
    fit = MLMHeadFit(
        head=head,
        key=key,
        heldout_acc=accuracy(head, x_val, y_val),
        unigram_acc=sum(int((y == most_frequent).sum()) for y in y_val) / max(1, sum(len(y) for y in y_val)),
        heldout_tokens=sum(len(y) for y in y_val),
        train_tokens=sum(len(y) for y in y_train),
        steps=settings.steps,
        fit_time_s=time.perf_counter() - started,
        from_cache=False,
        path=path,
    )
    torch_save_atomic({k: v.cpu() for k, v in head.state_dict().items() if k != _TIED}, path / "head.pt")
    meta = {
        "teacher": str(teacher.config.name_or_path),
        "heldout_acc": fit.heldout_acc,
        "unigram_acc": fit.unigram_acc,
        "unigram_token": teacher.tokenizer.convert_ids_to_tokens(most_frequent),
        "heldout_tokens": fit.heldout_tokens,
        "train_tokens": fit.train_tokens,
        "steps": fit.steps,
        "last_train_loss": last_loss,
        "fit_time_s": fit.fit_time_s,
        "teacher_forward_s": teacher_s,
        "settings": asdict(settings),
        "data_source": data.cfg.source,
    }
    write_json_atomic(path / "meta.json", meta, indent=2)  # written last: its presence marks a complete fit
    log.info(
        "teacher.mlm_head=fit: fitted in %.1f s (teacher forwards %.1f s; %d steps on %d masked tokens): "
        "held-out MLM accuracy %.4f vs unigram %.4f ('%s') on %d tokens; cached in %s",
        fit.fit_time_s, teacher_s, fit.steps, fit.train_tokens, fit.heldout_acc, fit.unigram_acc,
        meta["unigram_token"], fit.heldout_tokens, path,
    )  # fmt: skip
    return fit


def _load(head: BertOnlyMLMHead, key: str, path: Path, started: float) -> MLMHeadFit:
    missing, unexpected = head.load_state_dict(torch.load(path / "head.pt", weights_only=True), strict=False)
    if missing != [_TIED] or unexpected:
        raise RuntimeError(
            f"{path / 'head.pt'} is not a fitted MLM head (missing {missing}, unexpected {unexpected}): "
            "delete that folder to fit it again"
        )
    head.eval()
    meta = json.loads((path / "meta.json").read_text())
    log.info(
        "teacher.mlm_head=fit: loaded from %s in %.2f s (held-out MLM accuracy %.4f vs unigram %.4f)",
        path, time.perf_counter() - started, meta["heldout_acc"], meta["unigram_acc"],
    )  # fmt: skip
    return MLMHeadFit(
        head=head,
        key=key,
        heldout_acc=meta["heldout_acc"],
        unigram_acc=meta["unigram_acc"],
        heldout_tokens=meta["heldout_tokens"],
        train_tokens=meta["train_tokens"],
        steps=meta["steps"],
        fit_time_s=meta["fit_time_s"],
        from_cache=True,
        path=path,
    )
