"""Student template: shapes, exact parity with HF BERT where the template reduces to it, analytic size and
FLOPs against the real model, HF save/load, and clear errors for impossible configs."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    BertForPreTraining,
)

import modules.auto  # noqa: F401  (registers the Auto classes)
from modules.embedding_init import (
    EmbeddingWeights,
    init_embeddings_from_teacher,
    pca_basis,
    resample_features,
)
from modules.student import (
    StudentConfig,
    StudentForPreTraining,
    StudentForQuestionAnswering,
    StudentForSequenceClassification,
    StudentModel,
)
from modules.student_costs import flops, num_parameters
from modules.student_spec import BlockSpec, StudentSpec
from tests.conftest import tiny_bert_config

VOCAB = 97
TABLE1 = dict(
    hidden_size=[128, 256, 384, 512],
    bottleneck_size=[64, 96, 128, 160],
    num_heads=[1, 2, 4, 8],
    intermediate_size=[384, 512, 640],
    num_ffn=[2, 4, 6],
)
ALL_TABLE1 = [BlockSpec(*values) for values in itertools.product(*TABLE1.values())]


def make_config(blocks: list[BlockSpec], **kwargs) -> StudentConfig:
    spec = StudentSpec(
        num_blocks=len(blocks), blocks=blocks, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    kwargs.setdefault("max_position_embeddings", 64)
    config = StudentConfig.from_spec(spec, vocab_size=VOCAB)
    for key, value in kwargs.items():
        setattr(config, key, value)
    return config


def batch(batch_size: int = 2, seq_len: int = 12, pad_last: int = 4) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, VOCAB, (batch_size, seq_len), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, seq_len - pad_last :] = 0
    input_ids[-1, seq_len - pad_last :] = 0
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, seq_len // 2 :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


# --------------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["Model_512_128_4_512_4", "Model_128_64_1_384_2", "Model_384_160_8_640_6", "Model_256_96_2_512_4"],
)
def test_uniform_table1_shapes(name: str) -> None:
    block = BlockSpec.from_name(name)
    config = make_config([block] * 2)
    model = StudentForPreTraining(config).eval()
    out = model(**batch(), output_hidden_states=True, output_attentions=True)
    assert config.name == f"{name}x2"
    assert out.mlm_logits.shape == (2, 12, VOCAB)
    assert out.nsp_logits.shape == (2, 2)
    assert [t.shape for t in out.encoder.block_outputs] == [(2, 12, block.hidden_size)] * 2
    assert [t.shape for t in out.encoder.attentions] == [(2, block.num_heads, 12, 12)] * 2
    assert out.encoder.embeddings.shape == (2, 12, block.hidden_size)
    probs = out.encoder.attentions[0]
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    assert probs[-1, :, :, -4:].abs().max() == 0  # padded keys get no attention


def test_per_block_list_with_changing_widths() -> None:
    blocks = [BlockSpec(128, 64, 2, 384, 2), BlockSpec(256, 160, 8, 640, 4), BlockSpec(256, 96, 1, 512, 6)]
    config = make_config(blocks)
    model = StudentModel(config).eval()
    out = model(**batch(), output_hidden_states=True, output_attentions=True)
    assert [t.shape[-1] for t in out.block_outputs] == [128, 256, 256]
    assert [t.shape[1] for t in out.attentions] == [2, 8, 1]
    assert out.embeddings.shape[-1] == 128 and out.last_hidden_state.shape[-1] == 256
    assert isinstance(model.transitions[0], torch.nn.Linear) and isinstance(
        model.transitions[1], torch.nn.Identity
    )
    assert config.name == "Model_128_64_2_384_2-256_160_8_640_4-256_96_1_512_6"


def test_sdpa_path_equals_explicit_softmax_path() -> None:
    model = StudentModel(make_config([BlockSpec(128, 64, 4, 384, 2)] * 3)).eval()
    fused = model(**batch())
    explicit = model(**batch(), output_attentions=True)
    real = batch()["attention_mask"].bool()
    torch.testing.assert_close(
        fused.last_hidden_state[real], explicit.last_hidden_state[real], atol=1e-5, rtol=1e-5
    )


def test_padding_does_not_change_real_positions() -> None:
    model = StudentModel(make_config([BlockSpec(128, 96, 2, 384, 2)] * 2)).eval()
    b = batch(batch_size=1, seq_len=8, pad_last=0)
    padded = {k: torch.cat([v, torch.zeros(1, 5, dtype=v.dtype)], dim=1) for k, v in b.items()}
    short, long = model(**b).last_hidden_state, model(**padded).last_hidden_state
    torch.testing.assert_close(short, long[:, :8], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# Parity with HF BERT: hidden == bottleneck and one FFN per block is exactly a BERT layer
# --------------------------------------------------------------------------------------------------


def bert_to_student(bert_state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Rename a BertForPreTraining state dict into StudentForPreTraining's names."""
    out = {}
    for name, value in bert_state.items():
        if name == "cls.predictions.decoder.bias":  # BERT keeps the MLM bias twice (tied); ours once
            continue
        new = name.replace("bert.embeddings.", "student.embeddings.").replace(
            "bert.pooler.dense.", "student.pooler."
        )
        for i in range(num_layers):
            layer, block = f"bert.encoder.layer.{i}.", f"student.blocks.{i}."
            new = (
                new.replace(layer + "attention.self.", block + "attention.")
                .replace(layer + "attention.output.", block + "attention_output.")
                .replace(layer + "intermediate.dense.", block + "ffns.0.up.")
                .replace(layer + "output.", block + "ffns.0.down.")
            )
        new = (
            new.replace("cls.predictions.transform.dense.", "mlm.dense.")
            .replace("cls.predictions.transform.LayerNorm.", "mlm.LayerNorm.")
            .replace("cls.predictions.decoder.", "mlm.decoder.")
            .replace("cls.predictions.bias", "mlm.bias")
            .replace("cls.seq_relationship.", "nsp.")
        )
        out[new] = value
    return out


def test_parity_with_hf_bert_for_pretraining() -> None:
    torch.manual_seed(0)
    config = tiny_bert_config(VOCAB, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    # eager: HF returns attention maps only from its explicit softmax path
    bert = BertForPreTraining._from_config(config, attn_implementation="eager").eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in bert.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)  # LayerNorms away from identity too
    student = StudentForPreTraining(make_config([BlockSpec(32, 32, 4, 64, 1)] * 2)).eval()
    mapped = bert_to_student(bert.state_dict(), num_layers=2)
    missing, unexpected = student.load_state_dict(mapped, strict=False)
    assert not unexpected
    assert set(missing) <= {"mlm.decoder.weight"}  # tied to the word embeddings
    assert student.mlm.decoder.weight is student.student.embeddings.word_embeddings.weight

    b = batch()
    ref = bert(**b, output_hidden_states=True, output_attentions=True)
    ours = student(**b, output_hidden_states=True, output_attentions=True)
    fused = student(**b)
    real = b["attention_mask"].bool()
    torch.testing.assert_close(ours.encoder.embeddings, ref.hidden_states[0], atol=1e-5, rtol=1e-5)
    for k in range(2):
        torch.testing.assert_close(
            ours.encoder.block_outputs[k], ref.hidden_states[k + 1], atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(ours.encoder.attentions[k], ref.attentions[k], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.mlm_logits, ref.prediction_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.nsp_logits, ref.seq_relationship_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused.mlm_logits[real], ref.prediction_logits[real], atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# Analytic parameter count and FLOPs
# --------------------------------------------------------------------------------------------------


SIZE_CASES = [
    [BlockSpec(512, 128, 4, 512, 4)] * 3,
    [BlockSpec(128, 128, 1, 384, 2)] * 2,  # no bottleneck maps
    [BlockSpec(128, 64, 2, 384, 2), BlockSpec(256, 160, 8, 640, 4), BlockSpec(256, 96, 1, 512, 6)],
    random.Random(0).sample(ALL_TABLE1, 4),
]


@pytest.mark.parametrize("blocks", SIZE_CASES, ids=lambda b: "-".join(x.name for x in b))
def test_num_parameters_formula_equals_model(blocks: list[BlockSpec]) -> None:
    config = make_config(blocks, num_labels=3)
    assert num_parameters(config) == StudentModel(config).num_parameters()
    assert num_parameters(config, "pretraining") == StudentForPreTraining(config).num_parameters()
    assert (
        num_parameters(config, "classification") == StudentForSequenceClassification(config).num_parameters()
    )
    assert num_parameters(config, "qa") == StudentForQuestionAnswering(config).num_parameters()


@pytest.mark.parametrize("blocks", SIZE_CASES, ids=lambda b: "-".join(x.name for x in b))
def test_flops_formula_equals_flop_counter(blocks: list[BlockSpec]) -> None:
    config = make_config(blocks)
    model = StudentModel(config).eval()
    b = batch(batch_size=3, seq_len=16, pad_last=0)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(**b, output_attentions=True)  # the explicit path: every matmul is visible to the counter
    assert flops(config, seq_len=16, batch_size=3) == counter.get_total_flops()


def test_flops_grow_with_every_factor() -> None:
    base = BlockSpec(256, 128, 4, 512, 2)
    reference = flops(make_config([base]), 128)
    for name, bigger in [
        ("hidden_size", 384),
        ("bottleneck_size", 160),
        ("intermediate_size", 640),
        ("num_ffn", 4),
    ]:
        grown = BlockSpec(**{**base.__dict__, name: bigger})
        assert flops(make_config([grown]), 128) > reference, name
    assert flops(make_config([base] * 2), 128) > reference


# --------------------------------------------------------------------------------------------------
# Hugging Face save / load
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls,auto",
    [
        (StudentModel, AutoModel),
        (StudentForPreTraining, AutoModelForPreTraining),
        (StudentForPreTraining, AutoModelForMaskedLM),
        (StudentForSequenceClassification, AutoModelForSequenceClassification),
        (StudentForQuestionAnswering, AutoModelForQuestionAnswering),
    ],
)
def test_save_load_round_trip(tmp_path, cls, auto) -> None:
    blocks = [BlockSpec(128, 64, 2, 384, 2), BlockSpec(256, 96, 4, 512, 4)]
    torch.manual_seed(0)
    model = cls(make_config(blocks)).eval()
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, StudentConfig) and config.block_specs == blocks
    loaded = auto.from_pretrained(tmp_path).eval()
    b = batch()
    with torch.no_grad():
        before, after = model(**b), loaded(**b)
    if (
        auto is AutoModelForMaskedLM
    ):  # the MLM-only class loads the pre-training checkpoint's encoder + MLM head
        torch.testing.assert_close(after.logits, before.mlm_logits, atol=0, rtol=0)
        return
    for key in before.keys():
        if isinstance(before[key], torch.Tensor):
            torch.testing.assert_close(after[key], before[key], atol=0, rtol=0)


def test_encoder_loads_into_task_heads(tmp_path) -> None:
    """A distilled pre-training student fine-tunes as a classifier: the encoder weights carry over."""
    pre = StudentForPreTraining(make_config([BlockSpec(128, 64, 2, 384, 2)])).eval()
    pre.save_pretrained(tmp_path)
    clf = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2).eval()
    b = batch()
    torch.testing.assert_close(clf.student(**b).pooler_output, pre.student(**b).pooler_output, atol=0, rtol=0)


# --------------------------------------------------------------------------------------------------
# Embedding initialisation from a teacher
# --------------------------------------------------------------------------------------------------


def teacher_tables(width: int) -> EmbeddingWeights:
    gen = torch.Generator().manual_seed(3)
    return EmbeddingWeights(
        word=torch.randn(VOCAB, width, generator=gen),
        position=torch.randn(80, width, generator=gen),
        token_type=torch.randn(2, width, generator=gen),
        norm_weight=torch.rand(width, generator=gen) + 0.5,
        norm_bias=torch.randn(width, generator=gen),
    )


def test_init_embeddings_same_width_is_an_exact_copy() -> None:
    student = StudentModel(make_config([BlockSpec(64, 64, 2, 128, 1)]))
    tables = teacher_tables(64)
    init_embeddings_from_teacher(student, tables, "interpolate")
    emb = student.embeddings
    torch.testing.assert_close(emb.word_embeddings.weight, tables.word)
    torch.testing.assert_close(
        emb.position_embeddings.weight, tables.position[:64]
    )  # student has 64 positions
    torch.testing.assert_close(emb.LayerNorm.weight, tables.norm_weight)


@pytest.mark.parametrize("width", [32, 128])
def test_init_embeddings_resamples_down_and_up(width: int) -> None:
    student = StudentModel(make_config([BlockSpec(width, 32, 2, 64, 1)]))
    tables = teacher_tables(64)
    init_embeddings_from_teacher(student, tables, "interpolate")
    word = student.embeddings.word_embeddings.weight
    assert word.shape == (VOCAB, width)
    # linear interpolation keeps both end points of every row
    torch.testing.assert_close(word[:, 0], tables.word[:, 0])
    torch.testing.assert_close(word[:, -1], tables.word[:, -1])


def test_pca_resampling_keeps_geometry() -> None:
    tables = teacher_tables(64)
    up = resample_features(tables.word, 96, "pca", pca_basis(tables.word, 96))
    # up-sampling keeps every direction: pairwise inner products survive exactly (orthonormal basis)
    torch.testing.assert_close(up @ up.T, tables.word @ tables.word.T, atol=1e-3, rtol=1e-3)
    down_basis = pca_basis(tables.word, 16)
    torch.testing.assert_close(down_basis.T @ down_basis, torch.eye(16), atol=1e-5, rtol=1e-5)
    student = StudentModel(make_config([BlockSpec(16, 16, 2, 32, 1)]))
    init_embeddings_from_teacher(student, tables, "pca")
    torch.testing.assert_close(student.embeddings.word_embeddings.weight, tables.word @ down_basis)
    assert torch.equal(student.embeddings.LayerNorm.weight, torch.ones(16))


def test_init_embeddings_rejects_other_vocabulary() -> None:
    student = StudentModel(make_config([BlockSpec(64, 64, 2, 128, 1)]))
    tables = teacher_tables(64)
    tables.word = tables.word[:50]
    with pytest.raises(ValueError, match="vocab_size"):
        init_embeddings_from_teacher(student, tables)


# --------------------------------------------------------------------------------------------------
# Impossible configs fail at construction, naming the field
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (
            dict(hidden_size=256, bottleneck_size=96, num_heads=5, intermediate_size=512, num_ffn=2),
            "num_heads",
        ),
        (
            dict(hidden_size=0, bottleneck_size=96, num_heads=2, intermediate_size=512, num_ffn=2),
            "hidden_size",
        ),
        (
            dict(hidden_size=256, bottleneck_size=96, num_heads=2, intermediate_size=-1, num_ffn=2),
            "intermediate_size",
        ),
        (dict(hidden_size=256, bottleneck_size=96, num_heads=2, intermediate_size=512, num_ffn=0), "num_ffn"),
    ],
)
def test_impossible_block_fails_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BlockSpec(**kwargs)


def test_block_list_length_must_match_num_blocks() -> None:
    with pytest.raises(ValueError, match=r"student.blocks has 2 entries but student.num_blocks=3"):
        StudentSpec(num_blocks=3, blocks=[BlockSpec(128, 64, 2, 384, 2)] * 2)


def test_exactly_one_of_block_and_blocks() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        StudentSpec(num_blocks=1)
    with pytest.raises(ValueError, match="exactly one of"):
        StudentSpec(num_blocks=1, block=BlockSpec(128, 64, 2, 384, 2), blocks=[BlockSpec(128, 64, 2, 384, 2)])


def test_hf_config_validates_blocks_with_index() -> None:
    good = dict(hidden_size=128, bottleneck_size=64, num_heads=2, intermediate_size=384, num_ffn=2)
    with pytest.raises(
        ValueError, match=r"student.blocks\[1\]: bottleneck_size=64 is not divisible by num_heads=3"
    ):
        StudentConfig(blocks=[good, {**good, "num_heads": 3}])


def test_vocab_mismatch_with_teacher_is_explained() -> None:
    spec = StudentSpec(num_blocks=1, block=BlockSpec(128, 64, 2, 384, 2), vocab_size=100)
    with pytest.raises(ValueError, match="leave student.vocab_size null"):
        StudentConfig.from_spec(spec, vocab_size=30522)


def test_model_name_round_trip() -> None:
    block = BlockSpec.from_name("Model_512_128_1_640_2")
    assert (
        block.hidden_size,
        block.bottleneck_size,
        block.num_heads,
        block.intermediate_size,
        block.num_ffn,
    ) == (
        512,
        128,
        1,
        640,
        2,
    )
    assert BlockSpec.from_name(block.name) == block
    with pytest.raises(ValueError, match="Model_<hidden>"):
        BlockSpec.from_name("Model_512_128")


def test_table1_has_576_valid_blocks() -> None:
    assert len(ALL_TABLE1) == 576  # every Table-1 combination is a valid block (heads divide bottlenecks)
