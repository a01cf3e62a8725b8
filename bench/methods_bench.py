"""Every training method on the same small task: accuracy, trainable parameters, tokens/s, peak memory,
the base weights' resident size and the adapter's size on disk.

    .venv/bin/python bench/methods_bench.py [--workloads tiny,small,smollm2] [--no-write]

Workloads (each method runs in its own process, so peak memory is its own):

- ``tiny``: the tests' random tiny Llama (hidden 32, 2 layers), the colour task (48 rows, 12 held
  out), 60 optimizer steps of batch 8, every registered method at its default options and 10× its default rate (a random
  32-wide model needs big steps to learn anything in 60 steps);
- ``small``: one size bigger (random Llama, hidden 256, 4 layers, 8 heads), same task, lora vs qlora vs dora at 3× the default rate;
- ``smollm2``: the embedded SmolLM2-135M-Instruct on the demo task (customer intents), 12 steps of
  batch 4, lora vs qlora: the speed and the memory of a real base (accuracy after 12 steps is not a
  quality figure).

- ``layers``: one linear layer of SmolLM2-135M's shapes, forward + input-gradient backward on 512
  tokens, frozen fp32 weight vs bitsandbytes' NF4 ``Linear4bit`` forward vs tuneforge's
  just-in-time dequantization (what ``qlora`` uses on a CPU), fastest of 5 after a warm-up.

All fp32 (qlora: NF4 weights, fp32 compute). Writes bench/results/methods.json and methods.md
(rows of workloads not rerun are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

WORKLOADS = {
    "tiny": {"methods": None, "steps": 60, "batch": 8, "rate_factor": 10.0},
    "small": {"methods": ["lora", "qlora", "dora"], "steps": 30, "batch": 8, "rate_factor": 3.0},
    "smollm2": {"methods": ["lora", "qlora"], "steps": 12, "batch": 4, "rate_factor": 1.0},
}


def _build_small(directory: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from helpers import build_tiny_model

    build_tiny_model(directory)  # its tokenizer; the model is replaced by a bigger one
    tokenizer = AutoTokenizer.from_pretrained(directory)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    return directory


def _one(workload: str, method: str, model: str, data: str, out: str) -> dict[str, Any]:
    """Train ``method`` once in this process; the figures of that run."""
    from tuneforge.config import make_config
    from tuneforge.model.adapters import resident_bytes
    from tuneforge.model.methods import get_method
    from tuneforge.model.resolve import resolve_model
    from tuneforge.pipeline import FineTuningPipeline

    spec = WORKLOADS[workload]
    values: dict[str, Any] = {
        "data": data, "model": model, "output": out, "method": method, "max_steps": spec["steps"], "batch_size": spec["batch"],
        "precision": "fp32", "evaluate_base": False, "evaluation_strategy": "no", "saving_strategy": "no",
        "final_weights": "last", "estimate_steps": 0, "seed": 1, "evaluation_metrics": ["accuracy", "loss"],
        "max_new_tokens": 8, "learning_rate": min(1.0, get_method(method).default_learning_rate * spec["rate_factor"])}
    if workload != "smollm2":
        values |= {"test_split": 0.25, "validation_split": 0.0, "max_length": 64}
    else:
        values |= {"max_eval_examples": 12, "max_length": 256}
    result = FineTuningPipeline(make_config(values), handle_signals=False).train().to_dict()
    weights = Path(out) / get_method(method).output_dir
    chosen = get_method(method)
    config = make_config(values)
    base = chosen.load_base(resolve_model(model), "cpu", config, "fp32")
    return {
        "workload": workload, "method": method, "status": result["status"],
        "accuracy": (result.get("tuned") or {}).get("accuracy"), "loss": (result.get("tuned") or {}).get("loss"),
        "trainable_parameters": result["model"].get("trainable_parameters"),
        "total_parameters": result["model"].get("total_parameters"),
        "tokens_per_second": result["train"].get("tokens_per_second"),
        "train_seconds": result["train"].get("train_seconds") or result["train"].get("seconds"),
        "peak_memory_mb": result["train"].get("peak_memory_mb"),
        "base_resident_mb": resident_bytes(base) / 2**20,
        "adapter_kb": sum(f.stat().st_size for f in weights.rglob("*") if f.is_file()) / 1024,
    }


def _layer_timings() -> list[dict[str, Any]]:
    import bitsandbytes as bnb
    import torch

    from tuneforge.model.methods.qlora import JitDequantLinear

    torch.manual_seed(0)
    rows = []
    for out_features, in_features in [(576, 576), (1536, 576), (576, 1536)]:
        dense = torch.nn.Linear(in_features, out_features, bias=False).requires_grad_(False)
        layer = bnb.nn.Linear4bit(in_features, out_features, bias=False, compute_dtype=torch.float32,
                                  compress_statistics=True, quant_type="nf4", device="meta")
        layer.weight = bnb.nn.Params4bit(dense.weight.data.clone(), requires_grad=False, compress_statistics=True,
                                         quant_type="nf4", module=layer)
        layer = layer.to("cpu")
        x = torch.randn(512, in_features, requires_grad=True)
        paths = {"fp32": lambda: dense(x), "bnb": lambda: layer(x),
                 "jit": lambda: JitDequantLinear.apply(x, layer.weight, layer.weight.quant_state)}
        row: dict[str, Any] = {"workload": "layers", "shape": f"{in_features}→{out_features}"}
        for name, forward in paths.items():
            forward().sum().backward()
            times = []
            for _ in range(5):
                started = time.perf_counter()
                forward().sum().backward()
                times.append(time.perf_counter() - started)
            row[f"{name}_ms"] = min(times) * 1000
        row["bytes_fp32"] = dense.weight.numel() * 4
        row["bytes_nf4"] = sum(t.numel() * t.element_size() for t in layer.state_dict().values())
        rows.append(row)
    return rows


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        return platform.processor() or "unknown"


def _markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    def f(value: Any, digits: int = 1) -> str:
        return "—" if value is None else f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)

    lines = ["## Training methods: every `--method` on one small task", "",
             "Reproduce: `.venv/bin/python bench/methods_bench.py` (each method in its own process).", "",
             f"Machine: {meta['cpu']}, {meta['cores']} cores (shared with other work while measured), torch {meta['torch']}, "
             f"peft {meta['peft']}, bitsandbytes {meta['bitsandbytes']}; fp32 (qlora: NF4 weights, fp32 compute); "
             f"measured {meta['when']}. No GPU.", "",
             "*Base resident* is the size of the base model's weights in memory as the method loads them "
             "(4-bit weights and their quantization constants included); *peak memory* is the process's peak RSS "
             "during the run; *adapter* is what the run saves in `adapter/` (`model/` for full).", ""]
    titles = {"tiny": f"Tiny random Llama (hidden 32, 2 layers), colour task, {WORKLOADS['tiny']['steps']} steps of batch {WORKLOADS['tiny']['batch']} at 10× each method's default rate, 12 test rows",
              "small": f"One size bigger (random Llama, hidden 256, 4 layers), same task, {WORKLOADS['small']['steps']} steps of batch {WORKLOADS['small']['batch']} at 3× the default rate",
              "smollm2": f"SmolLM2-135M-Instruct on the demo task, {WORKLOADS['smollm2']['steps']} steps of batch {WORKLOADS['smollm2']['batch']} (speed and memory; accuracy on 12 test rows after 12 steps is not a quality figure)"}
    layers = [row for row in rows if row["workload"] == "layers"]
    if layers:
        lines += ["### QLoRA on a CPU: one linear layer, forward + input gradient, 512 tokens (ms, fastest of 5)", "",
                  "| in → out | frozen fp32 | bitsandbytes Linear4bit | just-in-time dequantization (tuneforge) | weight bytes fp32 → NF4 |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for row in layers:
            lines.append(f"| {row['shape']} | {row['fp32_ms']:.1f} | {row['bnb_ms']:.1f} | {row['jit_ms']:.1f} | "
                         f"{row['bytes_fp32']:,} → {row['bytes_nf4']:,} |")
        lines.append("")
    for workload in WORKLOADS:
        chosen = [row for row in rows if row["workload"] == workload]
        if not chosen:
            continue
        lines += [f"### {titles[workload]}", "",
                  "| method | accuracy | answer loss | trainable params | tokens/s | peak memory MB | base resident MB | adapter KB |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row in chosen:
            if row.get("error"):
                lines.append(f"| {row['method']} | failed: {row['error'][:80]} | | | | | | |")
                continue
            lines.append(f"| {row['method']} | {f(row['accuracy'], 3)} | {f(row['loss'], 3)} | {f(row['trainable_parameters'])} | "
                         f"{f(row['tokens_per_second'])} | {f(row['peak_memory_mb'], 0)} | {f(row['base_resident_mb'], 2)} | {f(row['adapter_kb'], 0)} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", default="tiny,small,smollm2")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--one", nargs=5, metavar=("WORKLOAD", "METHOD", "MODEL", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(_one(*args.one)))
        return
    from helpers import build_tiny_model, make_rows, write_jsonl
    from tuneforge.core.registries import METHODS

    work = Path(tempfile.mkdtemp(prefix="methods-bench-"))
    colours = str(write_jsonl(work / "colours.jsonl", make_rows(48)))
    models = {"tiny": str(build_tiny_model(work / "tiny")), "small": str(_build_small(work / "small")), "smollm2": "smollm2-135m-instruct"}
    data = {"tiny": colours, "small": colours, "smollm2": str(ROOT / "src" / "tuneforge" / "samples" / "customer_intents.jsonl")}
    rows = []
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    for workload in args.workloads.split(","):
        if workload == "layers":
            rows += _layer_timings()
            continue
        for method in WORKLOADS[workload]["methods"] or METHODS.names():
            started = time.perf_counter()
            run = subprocess.run([sys.executable, __file__, "--one", workload, method, models[workload], data[workload],
                                  str(work / f"{workload}-{method}")], capture_output=True, text=True, env=env)
            line = next((l for l in run.stdout.splitlines() if l.startswith("RESULT ")), None)
            row = json.loads(line[7:]) if line else {"workload": workload, "method": method,
                                                   "error": (run.stderr.strip().splitlines() or ["no output"])[-1]}
            rows.append(row)
            print(f"{workload:8s} {method:14s} {time.perf_counter() - started:6.1f}s {json.dumps(row)}", flush=True)
    import bitsandbytes
    import peft
    import torch

    meta = {"cpu": _cpu(), "cores": os.cpu_count(), "torch": torch.__version__, "peft": peft.__version__,
            "bitsandbytes": bitsandbytes.__version__, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    previous = RESULTS / "methods.json"
    if previous.is_file():
        rerun = set(args.workloads.split(","))
        rows = [row for row in json.loads(previous.read_text())["rows"] if row["workload"] not in rerun] + rows
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "methods.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        (RESULTS / "methods.md").write_text(_markdown(rows, meta) + "\n")
    print(_markdown(rows, meta))


if __name__ == "__main__":
    main()
