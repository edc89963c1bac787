"""Train-step throughput of our student vs transformers.MobileBertForMaskedLM, same configuration.

    .venv/bin/python benchmarks/student_vs_mobilebert.py [--blocks 24] [--batch 4] [--seq 128] [--steps 5]

MobileBERT's default: 24 blocks, hidden 512, bottleneck 128, 4 heads, intermediate 512, 4 stacked FFNs
(our Model_512_128_4_512_4 x 24). Both get the same batch, request attentions and hidden states (what
layer-wise distillation reads), compute an MLM loss on 15% masked positions, backward, and step AdamW.
The two run interleaved (A, B, A, B ...) so machine noise hits both alike; the ratio is printed.

Two rows for the student: "as in distillation" computes MLM logits only at the masked positions
(what recipes/distill.py does); "same work" computes them at every position as MobileBERT does.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import MobileBertConfig, MobileBertForMaskedLM

from modules.student import StudentConfig, StudentForPreTraining
from modules.student_spec import BlockSpec, StudentSpec


def make_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq), generator=gen)
    labels = torch.full_like(ids, -100)
    masked = torch.rand(batch, seq, generator=gen) < 0.15
    labels[masked] = ids[masked]
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "labels": labels,
    }


def student_step(model: StudentForPreTraining, batch: dict, masked_only: bool) -> torch.Tensor:
    enc = model.student(
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
        output_hidden_states=True,
        output_attentions=True,
    )
    labels = batch["labels"]
    if masked_only:
        where = labels != -100
        logits = model.mlm(enc.last_hidden_state[where])
        return torch.nn.functional.cross_entropy(logits, labels[where])
    logits = model.mlm(enc.last_hidden_state)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def mobilebert_step(model: MobileBertForMaskedLM, batch: dict) -> torch.Tensor:
    return model(**batch, output_hidden_states=True, output_attentions=True).loss


def timed(step, optimizer) -> float:
    start = time.perf_counter()
    loss = step()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=24)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    hf_config = MobileBertConfig(
        num_hidden_layers=args.blocks, attn_implementation="eager"
    )  # eager: attentions
    mobilebert = MobileBertForMaskedLM(hf_config).train()
    spec = StudentSpec(
        num_blocks=args.blocks,
        block=BlockSpec(512, 128, 4, 512, 4),
        hidden_act="relu",
        hidden_dropout_prob=0.0,
    )
    student = StudentForPreTraining(StudentConfig.from_spec(spec, vocab_size=hf_config.vocab_size)).train()
    batch = make_batch(args.batch, args.seq, hf_config.vocab_size)
    tokens = args.batch * args.seq

    runs = {
        "MobileBertForMaskedLM": (
            lambda: mobilebert_step(mobilebert, batch),
            torch.optim.AdamW(mobilebert.parameters()),
        ),
        "student (as in distillation)": (
            lambda: student_step(student, batch, True),
            torch.optim.AdamW(student.parameters()),
        ),
        "student (same work)": (
            lambda: student_step(student, batch, False),
            torch.optim.AdamW(student.parameters()),
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for step, opt in runs.values():  # warm-up: allocator, kernels, AdamW state
        timed(step, opt)
    for _ in range(args.steps):
        for name, (step, opt) in runs.items():
            times[name].append(timed(step, opt))

    base = statistics.median(times["MobileBertForMaskedLM"])
    print(f"config: {args.blocks} x Model_512_128_4_512_4, batch {args.batch} x seq {args.seq}, {args.threads} threads, "
          f"{args.steps} timed steps each (median), attentions + hidden states requested")  # fmt: skip
    params = {"MobileBertForMaskedLM": mobilebert.num_parameters(), "student": student.num_parameters()}
    print(
        f"params: MobileBERT {params['MobileBertForMaskedLM'] / 1e6:.1f}M, student {params['student'] / 1e6:.1f}M"
    )
    print(f"{'model':32s} {'s/step':>8s} {'tokens/s':>10s} {'vs MobileBERT':>14s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:32s} {median:8.3f} {tokens / median:10.0f} {base / median:13.2f}x")


if __name__ == "__main__":
    main()
