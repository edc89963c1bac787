"""MobileBERT's operational optimisations on this machine: p50 latency of the paper's student (24 x
Model_512_128_4_512_4) with LayerNorm + GELU vs NoNorm + ReLU, each with and without the trigram embedding, in one run.

    nice .venv/bin/python benchmarks/mobilebert_opt.py [--device cpu] [--blocks 24] [--repeats 3] [--backend eager]
        [--threads N] [--warmup 10] [--passes 50] [--max-cv 0.05] [--max-other-load 0.25 | none]

Sun et al. 2020 (MobileBERT §3.4 and its latency table): NoNorm + ReLU ("OPT") cut the latency on a Pixel 4 from
192 ms to 62 ms at the same FLOPs. Here every variant is measured with the project's ``measure_latency`` (bs1 x 128
tokens, fp32, a fresh random build: weights do not change the time), uncached, ``--repeats`` times interleaved (A, B,
C, D, A, B, ...) so machine noise hits them alike; the table shows the median p50, the ratio to LayerNorm + GELU
without the trigram (``student=mobilebert_baseline``), parameters and analytic FLOPs (``modules/student_costs.py``).
The machine's load average is printed before and after: on a shared machine pass ``--max-other-load none`` (else
every reading waits out the others' load, then comes back flagged contended) and read the ratios, not the times.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from callbacks.latency import LatencyConfig, measure_latency
from modules.student import StudentConfig
from modules.student_costs import flops, num_parameters
from modules.student_spec import BlockSpec, StudentSpec

# name -> the student's MobileBERT factors; the first is the reference of the ratios
VARIANTS = {
    "LayerNorm + GELU": {},
    "LayerNorm + ReLU": {"hidden_act": "relu"},
    "NoNorm + GELU": {"normalization_type": "no_norm"},
    "NoNorm + ReLU (OPT)": {"normalization_type": "no_norm", "hidden_act": "relu"},
    "LayerNorm + GELU, trigram 128": {"embedding_size": 128, "trigram_input": True},
    "NoNorm + ReLU, trigram 128 (student=mobilebert)": {"normalization_type": "no_norm", "hidden_act": "relu",
                                                        "embedding_size": 128, "trigram_input": True},  # fmt: skip
}


def student(blocks: int, factors: dict) -> StudentConfig:
    spec = StudentSpec(num_blocks=blocks, block=BlockSpec(512, 128, 4, 512, 4), **factors)
    return StudentConfig.from_spec(spec, vocab_size=30522)


def load_average() -> str:
    """/proc/loadavg's 1, 5 and 15 minute averages ('n/a' off Linux): how shared the machine was."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--blocks", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measurements per variant")
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads while timing (default: torch's)")
    parser.add_argument("--warmup", type=int, default=10, help="latency.warmup: untimed passes first")
    parser.add_argument("--passes", type=int, default=50, help="latency.repeats: timed passes per round")
    parser.add_argument("--max-cv", type=float, default=0.05, help="latency.max_cv: re-measure above this spread")
    parser.add_argument("--max-other-load", default="0.25", help="latency.max_other_load; none: never wait or flag")
    args = parser.parse_args()
    other = None if args.max_other_load.lower() in ("none", "null") else float(args.max_other_load)
    cfg = LatencyConfig(device=args.device, backend=args.backend, threads=args.threads, warmup=args.warmup, repeats=args.passes,
                        max_cv=args.max_cv, max_other_load=other, cache_path=None)  # fmt: skip
    print(f"load average before: {load_average()}")
    configs = {name: student(args.blocks, factors) for name, factors in VARIANTS.items()}
    p50s: dict[str, list[float]] = {name: [] for name in configs}
    contended: dict[str, int] = dict.fromkeys(configs, 0)
    for _ in range(args.repeats):
        for name, config in configs.items():
            result = measure_latency(config, cfg)
            p50s[name].append(result.p50_ms)
            contended[name] += result.contended
    print(f"load average after: {load_average()}")
    reference = statistics.median(p50s[next(iter(configs))])
    print(f"{args.blocks} x Model_512_128_4_512_4, bs{cfg.batch_size} x {cfg.seq_len}, {args.device}, {args.backend}, "
          f"median of {args.repeats} interleaved p50s")  # fmt: skip
    print("| variant | params | GFLOPs | p50 ms (each run) | ratio |")
    print("|---|---|---|---|---|")
    for name, config in configs.items():
        p50 = statistics.median(p50s[name])
        runs = ", ".join(f"{p:.1f}" for p in p50s[name])
        flag = f" ({contended[name]} contended)" if contended[name] else ""
        print(f"| {name} | {num_parameters(config) / 1e6:.1f}M | {flops(config, cfg.seq_len) / 1e9:.2f} | "
              f"**{p50:.1f}** ({runs}){flag} | {p50 / reference:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
