"""Serving backends side by side (callbacks/latency.py's ``latency.backend``), in one run:

    .venv/bin/python benchmarks/backends.py [--classifier <finetune run dir>/model] [--backends eager,torch-int8,...]

1. p50 at batch 1 x 128 tokens on CPU of the demo student (4 x Model_256_128_4_512_2), the MobileBERT-shaped
   baseline (24 x Model_512_128_4_512_4) and the teacher (the offline MiniLM-L6), per backend, as a ratio to eager
   (below 1: faster). Every reading is fresh (no cache) and flagged when the machine was busy: run it alone.
2. With ``--classifier``: the int8 dev-score change on the offline sentiment task: dev accuracy in eager PyTorch,
   torch-int8 (dynamic quantisation), ONNX Runtime fp32 and ONNX Runtime int8.
"""

from __future__ import annotations

import argparse

import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModel, AutoTokenizer

import run
from callbacks.latency import BACKENDS, LatencyConfig, measure_latency
from core.assets import resolve_path
from modules.student import StudentConfig


def run_config(*overrides: str):
    run.register_recipe_schemas(["export"])
    with initialize_config_dir(config_dir=str(run.CONF), version_base="1.3"):
        return run.to_run_config(compose("run", overrides=["recipe=export", "recipe.model=teacher", *overrides]),
                                 "/tmp/backends-benchmark")  # fmt: skip


def models() -> dict[str, object]:
    """name -> what measure_latency times: a student config (built fresh) or the teacher model."""
    out = {}
    for name, group in (("demo student", "demo"), ("MobileBERT-shaped baseline", "mobilebert_baseline")):
        cfg = run_config(f"student={group}")
        out[f"{name} ({cfg.student.name})"] = StudentConfig.from_spec(cfg.student, vocab_size=30522)
    teacher = run_config().teacher.name_or_path
    out[f"teacher ({teacher})"] = AutoModel.from_pretrained(resolve_path(teacher)).eval()
    return out


def latency_table(backends: list[str], threads: int | None) -> None:
    print("1. p50 at bs1 x 128 on CPU, ratio to eager (fresh readings; 'busy' = other processes used the CPU)")
    print("| model | " + " | ".join(backends) + " |")
    print("|---|" + "---|" * len(backends))
    for name, model in models().items():
        cells, eager = [], None
        for backend in backends:
            cfg = LatencyConfig(device="cpu", backend=backend, cache_path=None, threads=threads)
            try:
                result = measure_latency(model, cfg)
            except RuntimeError as err:  # a backend not installed here: say so in its cell
                cells.append(f"n/a ({err})")
                continue
            eager = result.p50_ms if backend == "eager" else eager
            ratio = f"{result.p50_ms / eager:.2f}x" if eager else "-"
            cells.append(f"{ratio} ({result.p50_ms:.1f} ms{', busy' if result.contended else ''})")
        print(f"| {name} | " + " | ".join(cells) + " |")


def int8_scores(classifier: str) -> None:
    from datamodules.classification import ClassificationDataModule
    from modules.onnx_export import export_onnx, onnx_session, quantize_int8, run_session
    from recipes.export import dev_accuracy, load_for_export

    cfg = run_config(f"recipe.model={classifier}")
    model = load_for_export(classifier)
    data = ClassificationDataModule(cfg.task, AutoTokenizer.from_pretrained(classifier), seed=cfg.seed)
    data.setup()
    folder = resolve_path("/tmp/backends-benchmark/onnx")
    export_onnx(model, folder / "model.onnx", model.config.vocab_size)
    quantize_int8(folder / "model.onnx", folder / "model.int8.onnx")
    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    fp32, int8 = onnx_session(folder / "model.onnx"), onnx_session(folder / "model.int8.onnx")
    with torch.no_grad():
        scores = {
            "eager": dev_accuracy(lambda b: model(**b).logits, data),
            "torch-int8": dev_accuracy(lambda b: quantized(**b).logits, data),
            "onnxruntime": dev_accuracy(lambda b: run_session(fp32, b)["logits"], data),
            "onnxruntime-int8": dev_accuracy(lambda b: run_session(int8, b)["logits"], data),
        }
    print(f"2. dev accuracy of {classifier} on task {cfg.task.name} (split sizes {data.split_sizes}):")
    for name, acc in scores.items():
        print(f"   {name:18s} {acc:.4f}  ({100 * (acc - scores['eager']):+.2f} points vs eager)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(b for b in BACKENDS if b != "compile"),
                        help="comma-separated; compile is left out by default (minutes of compilation on CPU)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--classifier", default=None, help="a fine-tuned classifier dir: the int8 dev-score change")
    args = parser.parse_args()
    backends = args.backends.split(",")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or "eager" not in backends:
        parser.error(f"--backends must include eager and come from {BACKENDS}; got {backends}")
    latency_table(backends, args.threads)
    if args.classifier:
        int8_scores(args.classifier)


if __name__ == "__main__":
    main()
