"""Recipe `inspect`: build the teacher and a student, push real batches through both, report and save.

    python run.py recipe=inspect student=mobilebert_baseline data.max_seq_len=128

Reads top to bottom: teacher -> data -> student (embeddings initialised from the teacher) -> one
forward of each on held-out batches -> sizes, FLOPs, forward time, MLM/NSP accuracy of the fresh
student -> metrics.json + the initialised student in HF format under <run dir>/student/. It trains
nothing; it is the quickest way to check that a teacher/student/data combination fits together
before spending compute, and what `python run.py` runs until the distillation recipe lands.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from rich.console import Console
from rich.table import Table

from datamodules.pretraining import PretrainingDataModule
from modules.embedding_init import init_embeddings_from_teacher
from modules.student import StudentConfig, StudentForPreTraining
from modules.student_costs import flops, num_parameters
from modules.teacher import Teacher, load_teacher
from recipes.common import write_metrics
from recipes.config import RunConfig
from recipes.schemas import InspectConfig  # noqa: F401  (public here too)
from recipes.shipping import save_for_serving
from recipes.tracking import tracked

log = logging.getLogger(__name__)


@dataclass
class ForwardStats:
    """Teacher and fresh student over the held-out batches: encoder time, MLM/NSP hits, last outputs."""

    teacher_ms: float = 0.0  # encoder forward time summed over the batches
    student_ms: float = 0.0
    mlm_hits: int = 0
    mlm_total: int = 0
    nsp_hits: int = 0
    nsp_total: int = 0
    teacher_out: Any = None  # the last batch's outputs: their shapes go into the printed report
    student_encoder_out: Any = None


def forward_both(teacher: Teacher, student: StudentForPreTraining, batches: list[dict]) -> ForwardStats:
    """Forward both on the same batches: shapes must line up for layer-wise distillation.

    Timings are encoder against encoder with the attention maps both return in distillation, after one
    warm-up pass each (the first call pays for allocator and kernel set-up); heads are left out of them.
    """
    stats = ForwardStats()
    maps = {"output_hidden_states": True, "output_attentions": True}
    with torch.no_grad():
        warm = {k: batches[0][k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        teacher(**warm), student.student(**warm, **maps)
        for batch in batches:
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
            start = time.perf_counter()
            stats.teacher_out = teacher(**inputs)
            stats.teacher_ms += (time.perf_counter() - start) * 1000.0
            start = time.perf_counter()
            student.student(**inputs, **maps)
            stats.student_ms += (time.perf_counter() - start) * 1000.0
            s_out = student(**inputs, **maps)
            stats.student_encoder_out = s_out.encoder
            masked = batch["labels"] != -100
            stats.mlm_hits += (s_out.mlm_logits.argmax(-1)[masked] == batch["labels"][masked]).sum().item()
            stats.mlm_total += masked.sum().item()
            stats.nsp_hits += (s_out.nsp_logits.argmax(-1) == batch["next_sentence_label"]).sum().item()
            stats.nsp_total += len(batch["next_sentence_label"])
    return stats


@tracked
def run(cfg: RunConfig) -> dict[str, float]:
    """Build teacher and student, forward both on held-out batches, save the initialised student.

    Returns:
        metrics.json's flat dict: sizes, FLOPs, forward times, the fresh student's MLM/NSP accuracy.
    """
    recipe: InspectConfig = cfg.recipe
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)

    # Teacher: frozen, eval, eager attention.
    teacher = load_teacher(cfg.teacher)
    log.info("teacher: %s", teacher.describe())

    # Data: tokenised with the teacher's tokenizer, cached; held-out batches only.
    data = PretrainingDataModule(cfg.data, teacher.tokenizer)
    data.setup("validate")
    batches = [b for _, b in zip(range(recipe.num_batches), data.val_dataloader())]

    # Student: built from the spec, embeddings copied from the teacher and resampled to its width.
    config = StudentConfig.from_spec(cfg.student,
        vocab_size=teacher.vocab_size, pad_token_id=teacher.tokenizer.pad_token_id
    )
    student = StudentForPreTraining(config).eval()
    if cfg.student.init_embeddings_from_teacher:
        init_embeddings_from_teacher(
            student.student, teacher.embedding_weights(), cfg.student.embedding_resample
        )

    # Forward both on the same batches (shapes must line up for layer-wise distillation), timed.
    stats = forward_both(teacher, student, batches)
    seq_len = batches[0]["input_ids"].shape[1]

    metrics = {
        "teacher/params": sum(p.numel() for p in teacher.encoder.parameters()),
        "teacher/layers": teacher.num_layers,
        "teacher/hidden_size": teacher.hidden_size,
        "teacher/forward_ms_per_batch": stats.teacher_ms / len(batches),
        "student/params": num_parameters(config),
        "student/params_with_pretraining_heads": num_parameters(config, "pretraining"),
        "student/blocks": config.num_blocks,
        "student/flops_per_seq@128": flops(config, seq_len=128),
        "student/forward_ms_per_batch": stats.student_ms / len(batches),
        "student/init_mlm_acc": stats.mlm_hits / max(stats.mlm_total, 1),
        "student/init_nsp_acc": stats.nsp_hits / max(stats.nsp_total, 1),
        "data/train_examples": len(data.train_data),
        "data/val_examples": len(data.val_data),
        "data/batch_seq_len": seq_len,
    }
    metrics["student/compression"] = metrics["teacher/params"] / metrics["student/params"]
    _print_report(teacher, config, stats, metrics)

    if recipe.save_student:
        save_for_serving(student, teacher.tokenizer, run_dir / "student")
        log.info(
            "initialised student saved to %s (AutoModel.from_pretrained after `import modules.auto`, or anywhere with trust_remote_code=True)",
            run_dir / "student",
        )
    return write_metrics(run_dir, metrics)


def _print_report(teacher: Teacher, config: StudentConfig, stats: ForwardStats, metrics: dict) -> None:
    t_out, s_enc = stats.teacher_out, stats.student_encoder_out
    table = Table(title="teacher vs student (one held-out batch)")
    for col in ("", "teacher", "student"):
        table.add_column(col)
    table.add_row(
        "model", f"{type(teacher.model).__name__} ({teacher.config.name_or_path.split('/')[-1]})", config.name
    )
    table.add_row("layers / blocks", str(teacher.num_layers), str(config.num_blocks))
    table.add_row(
        "params (encoder)",
        f"{metrics['teacher/params'] / 1e6:.2f}M",
        f"{metrics['student/params'] / 1e6:.2f}M",
    )
    table.add_row(
        "layer output", str(tuple(t_out.hidden_states[0].shape)), str(tuple(s_enc.block_outputs[0].shape))
    )
    table.add_row(
        "attention maps", str(tuple(t_out.attentions[0].shape)), str(tuple(s_enc.attentions[0].shape))
    )
    table.add_row("heads (MLM/NSP)", f"{teacher.has_mlm_head}/{teacher.has_nsp_head}", "True/True")
    table.add_row(
        "encoder forward ms / batch",
        f"{metrics['teacher/forward_ms_per_batch']:.0f}",
        f"{metrics['student/forward_ms_per_batch']:.0f}",
    )
    table.add_row("GFLOPs / seq @128", "", f"{metrics['student/flops_per_seq@128'] / 1e9:.2f}")
    Console().print(table)
