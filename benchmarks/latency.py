"""Latency numbers for the attached device (AutoDistill §3.4), in one run:

    .venv/bin/python benchmarks/latency.py [--device auto] [--samples 50] [--blocks 4]

1. Repeatability: 5 independent measurements (uncached) of the demo student; CV of their p50s and the
   wall time of one measurement.
2. Our student vs transformers.MobileBertModel at MobileBERT's default configuration (24 blocks,
   512/128, 4 heads, 512 FFN, 4 FFNs), batch 1 x 128 tokens, eager: p50 ratio, measured interleaved.
3. Proxies vs measurement: --samples Table-1 blocks stacked --blocks times; Spearman and Kendall of
   params and of FLOPs against measured p50.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import MobileBertConfig, MobileBertModel

from callbacks.latency import LatencyConfig, measure_latency
from modules.student import StudentConfig, StudentModel
from modules.student_costs import flops, num_parameters
from modules.student_spec import BlockSpec, StudentSpec
from recipes.latency import rank_correlations, table1_blocks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=4)
    args = parser.parse_args()
    cfg = LatencyConfig(device=args.device, cache_path=None)

    # 1. repeatability
    demo = StudentConfig.from_spec(StudentSpec(num_blocks=4, block=BlockSpec(256, 128, 4, 512, 2)), vocab_size=30522)
    p50s, walls = [], []
    for _ in range(5):
        start = time.perf_counter()
        p50s.append(measure_latency(demo, cfg).p50_ms)
        walls.append(time.perf_counter() - start)
    cv = statistics.stdev(p50s) / statistics.fmean(p50s)
    print(f"1. repeatability ({demo.name}, bs1 x 128): p50s {[round(p, 2) for p in p50s]} ms, "
          f"CV {cv * 100:.2f}% (target < 5%), one measurement {statistics.median(walls):.2f} s")  # fmt: skip

    # 2. student vs MobileBertModel, same configuration, interleaved rounds
    torch.manual_seed(0)
    hf = MobileBertModel(MobileBertConfig(), add_pooling_layer=True)
    ours = StudentModel(
        StudentConfig.from_spec(StudentSpec(num_blocks=24, block=BlockSpec(512, 128, 4, 512, 4), hidden_act="relu"),
            vocab_size=30522
        )
    )
    rounds = {"MobileBertModel": [], "student": []}
    for _ in range(3):
        rounds["MobileBertModel"].append(measure_latency(hf, cfg).p50_ms)
        rounds["student"].append(measure_latency(ours, cfg).p50_ms)
    theirs, mine = statistics.median(rounds["MobileBertModel"]), statistics.median(rounds["student"])
    print(f"2. 24 x Model_512_128_4_512_4, bs1 x 128: MobileBertModel p50 {theirs:.1f} ms "
          f"({hf.num_parameters() / 1e6:.1f}M params), student {mine:.1f} ms ({ours.num_parameters() / 1e6:.1f}M): "
          f"ratio {mine / theirs:.2f} (target <= 0.75)")  # fmt: skip

    # 3. proxies vs measured latency over sampled Table-1 students
    rows = []
    for block in table1_blocks(args.samples, seed=0):
        config = StudentConfig.from_spec(StudentSpec(num_blocks=args.blocks, block=block), vocab_size=30522)
        rows.append(
            {
                "params": num_parameters(config),
                "flops": flops(config, 128),
                "p50_ms": measure_latency(config, cfg).p50_ms,
            }
        )
    corr = rank_correlations(rows)
    print(f"3. {len(rows)} Table-1 students x {args.blocks} blocks: Spearman params {corr['spearman/params_vs_latency']:.3f}, "
          f"FLOPs {corr['spearman/flops_vs_latency']:.3f}; Kendall params {corr['kendall/params_vs_latency']:.3f}, "
          f"FLOPs {corr['kendall/flops_vs_latency']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
