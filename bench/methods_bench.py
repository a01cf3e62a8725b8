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
    # The demo task as `tuneforge demo` trains it (SmolLM2-135M-Instruct, customer intents, batch 4, the
    # precision `auto` picks), every method at its own default rate, the same reduced budget of steps for
    # each (the demo itself runs one epoch, 72 steps), scored on the whole 36-row test split.
    "demo": {"methods": ["lora", "qlora", "dora", "ia3", "adapter", "prompt_tuning", "prefix_tuning", "loha", "lokr", "full"],
             "steps": int(os.environ.get("DEMO_STEPS", "36")), "batch": 4, "rate_factor": None},
}
# `--one load METHOD`: the base loaded as METHOD loads it (qlora: quantized to NF4 while loading), nothing else.
# The third row: the same qlora load with glibc's mmap threshold pinned at its 128 KiB default, so freed
# fp32 temporaries of the quantization go back to the system instead of staying in the heap.
LOAD_METHODS = ["lora", "qlora", "qlora@MALLOC_MMAP_THRESHOLD_=131072"]


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

    if workload == "load":
        return _load_peak(method, model)
    spec = WORKLOADS[workload]
    if workload == "demo":
        return _demo_run(method, out, spec)
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


def _demo_run(method: str, out: str, spec: dict[str, Any]) -> dict[str, Any]:
    """``method`` on the demo task (``samples.demo_config``'s data, model, batch and precision) for ``spec['steps']`` steps."""
    from tuneforge.config import make_config
    from tuneforge.model.methods import get_method
    from tuneforge.pipeline import FineTuningPipeline
    from tuneforge.samples import demo_config

    demo = demo_config(out)
    values = {"data": demo.data, "model": demo.model, "output": out, "method": method, "batch_size": demo.batch_size,
              "max_steps": spec["steps"], "precision": demo.precision, "evaluation_strategy": "no", "saving_strategy": "no",
              "evaluate_base": False, "estimate_steps": 0, "seed": demo.seed,
              # the same work for every method: no prompting baselines or forgetting check (they do not depend on
              # the method), no early stopping (the step budget is the comparison), warm-up as auto chooses it
              "baselines": False, "forgetting_check": False, "early_stopping": False}
    started = time.perf_counter()
    result = FineTuningPipeline(make_config(values), handle_signals=False).train().to_dict()
    weights = Path(out) / get_method(method).output_dir
    tuned = result.get("tuned") or {}
    return {
        "workload": "demo", "method": method, "status": result["status"], "steps": spec["steps"],
        "learning_rate": result["train"].get("learning_rate"), "precision": result["model"].get("precision"),
        "accuracy": tuned.get("accuracy"), "f1": tuned.get("f1"), "loss": tuned.get("loss"),
        "test_examples": (result.get("data") or {}).get("test"),
        "trainable_parameters": result["model"].get("trainable_parameters"),
        "total_parameters": result["model"].get("total_parameters"),
        "tokens_per_second": result["train"].get("tokens_per_second"),
        "train_seconds": result["train"].get("train_seconds"),
        "peak_memory_mb": result["train"].get("peak_memory_mb"),
        "adapter_kb": sum(f.stat().st_size for f in weights.rglob("*") if f.is_file()) / 1024,
        "run_seconds": time.perf_counter() - started, "load_average": os.getloadavg(),
    }


def _load_peak(method: str, model: str) -> dict[str, Any]:
    """The memory of loading the base as ``method`` does, in a fresh process: the peak RSS while loading
    (qlora: the fp32 weights are read, then quantized layer by layer) against what stays resident after."""
    import gc

    from tuneforge.config import make_config
    from tuneforge.core.memory import PeakMemory, current_memory_mb
    from tuneforge.model.adapters import resident_bytes
    from tuneforge.model.methods import get_method
    from tuneforge.model.resolve import resolve_model

    model_dir = resolve_model(model)
    config = make_config({"model": model, "method": method.split("@")[0], "data": "unused.jsonl"})
    chosen = get_method(method.split("@")[0])
    import bitsandbytes  # noqa: F401  (the libraries are imported before the span: their memory is not the load's)
    import peft  # noqa: F401
    import torch  # noqa: F401

    gc.collect()
    before, split_before = current_memory_mb(), _rss_split()
    with PeakMemory("cpu") as span:
        base = chosen.load_base(model_dir, "cpu", config, "fp32")
    gc.collect()
    after, split_after = current_memory_mb(), _rss_split()
    return {"workload": "load", "method": method, "rss_before_mb": before, "load_peak_mb": span.peak_mb,
            "rss_after_mb": after, "load_peak_over_start_mb": span.peak_mb - before,
            "resident_after_over_start_mb": after - before, "base_resident_mb": resident_bytes(base) / 2**20,
            "anon_after_over_start_mb": split_after["RssAnon"] - split_before["RssAnon"],
            "file_after_over_start_mb": split_after["RssFile"] - split_before["RssFile"]}


def _rss_split() -> dict[str, float]:
    """Resident memory by kind (MB): anonymous (the heap: what the process really holds) and file-backed
    (pages of mapped files: the safetensors file the weights are read from; the kernel can drop them)."""
    with open("/proc/self/status") as handle:
        return {line.split(":")[0]: int(line.split()[1]) * 1024 / 1e6 for line in handle if line.startswith(("RssAnon", "RssFile"))}


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


def _demo_section(rows: list[dict[str, Any]], f: Any) -> list[str]:
    """The quality table: every method on the demo task, the same number of steps each."""
    if not rows:
        return []
    steps = sorted({row.get("steps") for row in rows if row.get("steps")})
    tests = sorted({row.get("test_examples") for row in rows if row.get("test_examples")})
    lines = [f"### Every method on the demo task: SmolLM2-135M-Instruct, customer intents (8 labels), "
             f"{'/'.join(map(str, steps))} steps of batch 4 each (the demo trains 72), each method at its default rate", "",
             f"Reproduce: `flock /tmp/tuneforge-bench.lock .venv/bin/python bench/methods_bench.py --workloads demo` "
             f"(`DEMO_STEPS=N` for another budget). Accuracy and macro F1 on the {'/'.join(map(str, tests))} held-out test "
             "rows (no base evaluation: the base scores 0.111, see the demo section). Speed figures depend on the machine's "
             "load (the 1-minute load average before/after each run is given; the machine is shared with other work).", "",
             "| method | accuracy | macro F1 | answer loss | rate | trainable params | tokens/s | peak memory MB | adapter KB | train s | load avg |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        if row.get("error"):
            lines.append(f"| {row['method']} | failed: {row['error'][:80]} | | | | | | | | | |")
            continue
        load = row.get("load_average") or [None]
        before = row.get("load_average_before") or [None]
        lines.append(f"| {row['method']} | {f(row['accuracy'], 3)} | {f(row.get('f1'), 3)} | {f(row['loss'], 3)} | "
                     f"{row.get('learning_rate'):g} | {f(row['trainable_parameters'])} | {f(row['tokens_per_second'])} | "
                     f"{f(row['peak_memory_mb'], 0)} | {f(row['adapter_kb'], 0)} | {f(row.get('train_seconds'), 0)} | "
                     f"{f(before[0], 2)} / {f(load[0], 2)} |")
    precision = sorted({str(row.get("precision")) for row in rows if row.get("precision")})
    lines += ["", f"Precision (`auto` on this CPU): {', '.join(precision)}.", ""]
    return lines


def _load_section(rows: list[dict[str, Any]]) -> list[str]:
    """Loading the base: the peak while loading against what stays resident (qlora quantizes while it loads)."""
    if not rows:
        return []
    lines = ["### Loading SmolLM2-135M-Instruct: peak memory while loading vs resident after (each in a fresh process)", "",
             "*RSS* is the process's resident memory (MB) measured around `method.load_base` (torch and transformers "
             "imported before); *load peak* is the kernel's high-water mark during the load; *base resident* is the "
             "size of the loaded weights' tensors. The growth after the load is split into anonymous memory (the heap) "
             "and file-backed pages (the mapped safetensors file, which the kernel can drop under pressure): an fp32 "
             "base is read lazily from the mapped file, while quantizing reads every weight once.", "",
             "| method | RSS before | load peak | RSS after | peak − before | after − before | of it: anonymous / file | base resident MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        if row.get("error"):
            lines.append(f"| {row['method']} | failed: {row['error'][:80]} | | | | | | |")
            continue
        lines.append(f"| {row['method']} | {row['rss_before_mb']:,.0f} | {row['load_peak_mb']:,.0f} | {row['rss_after_mb']:,.0f} | "
                     f"{row['load_peak_over_start_mb']:,.0f} | {row['resident_after_over_start_mb']:,.0f} | "
                     f"{row.get('anon_after_over_start_mb', 0):,.0f} / {row.get('file_after_over_start_mb', 0):,.0f} | "
                     f"{row['base_resident_mb']:,.1f} |")
    lines.append("")
    return lines


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
    lines += _demo_section([row for row in rows if row["workload"] == "demo"], f)
    lines += _load_section([row for row in rows if row["workload"] == "load"])
    layers = [row for row in rows if row["workload"] == "layers"]
    if layers:
        lines += ["### QLoRA on a CPU: one linear layer, forward + input gradient, 512 tokens (ms, fastest of 5)", "",
                  "| in → out | frozen fp32 | bitsandbytes Linear4bit | just-in-time dequantization (tuneforge) | weight bytes fp32 → NF4 |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for row in layers:
            lines.append(f"| {row['shape']} | {row['fp32_ms']:.1f} | {row['bnb_ms']:.1f} | {row['jit_ms']:.1f} | "
                         f"{row['bytes_fp32']:,} → {row['bytes_nf4']:,} |")
        lines.append("")
    for workload in ("tiny", "small", "smollm2"):
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


def _meta() -> dict[str, Any]:
    import bitsandbytes
    import peft
    import torch

    return {"cpu": _cpu(), "cores": os.cpu_count(), "torch": torch.__version__, "peft": peft.__version__,
            "bitsandbytes": bitsandbytes.__version__, "threads": torch.get_num_threads(),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _write(rows: list[dict[str, Any]], args: argparse.Namespace, meta: dict[str, Any]) -> None:
    """Merge this invocation's rows with the kept ones of methods.json and rewrite methods.json/.md (after every row,
    so a long run that is stopped keeps what it measured)."""
    if args.no_write:
        return
    previous = RESULTS / "methods.json"
    fresh = {_key(row) for row in rows}
    kept = [row for row in json.loads(previous.read_text())["rows"] if _key(row) not in fresh] if previous.is_file() else []
    merged = kept + rows
    RESULTS.mkdir(parents=True, exist_ok=True)
    previous.write_text(json.dumps({"meta": meta, "rows": merged}, indent=2) + "\n")
    (RESULTS / "methods.md").write_text(_markdown(merged, meta) + "\n")


def _key(row: dict[str, Any]) -> tuple[str, str]:
    """A row replaces the stored row of the same workload and method (layers: shape)."""
    return row["workload"], str(row.get("method") or row.get("shape"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", default="tiny,small,smollm2")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--methods", help="only these methods (comma-separated) of each workload; the other rows are kept")
    parser.add_argument("--one", nargs=5, metavar=("WORKLOAD", "METHOD", "MODEL", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(_one(*args.one)))
        return
    from helpers import build_tiny_model, make_rows, write_jsonl
    from tuneforge.core.registries import METHODS

    work = Path(tempfile.mkdtemp(prefix="methods-bench-"))
    colours = str(write_jsonl(work / "colours.jsonl", make_rows(48)))
    wanted = set(args.workloads.split(","))
    models = {"tiny": str(build_tiny_model(work / "tiny")) if "tiny" in wanted else "",
              "small": str(_build_small(work / "small")) if "small" in wanted else "",
              "smollm2": "smollm2-135m-instruct", "demo": "smollm2-135m-instruct", "load": "smollm2-135m-instruct"}
    samples = str(ROOT / "src" / "tuneforge" / "samples" / "customer_intents.jsonl")
    data = {"tiny": colours, "small": colours, "smollm2": samples, "demo": samples, "load": samples}
    rows: list[dict[str, Any]] = []
    meta = _meta()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    for workload in args.workloads.split(","):
        if workload == "layers":
            rows += _layer_timings()
            continue
        chosen = LOAD_METHODS if workload == "load" else WORKLOADS[workload]["methods"] or METHODS.names()
        if args.methods:
            chosen = [method for method in chosen if method in args.methods.split(",")]
        for method in chosen:
            meta["load_average_before"] = os.getloadavg()
            started = time.perf_counter()
            run = subprocess.run([sys.executable, __file__, "--one", workload, method, models[workload], data[workload],
                                  str(work / f"{workload}-{method}")], capture_output=True, text=True,
                                 env={**env, **dict([method.split("@")[1].split("=", 1)])} if "@" in method else env)
            line = next((l for l in run.stdout.splitlines() if l.startswith("RESULT ")), None)
            row = json.loads(line[7:]) if line else {"workload": workload, "method": method,
                                                   "error": (run.stderr.strip().splitlines() or ["no output"])[-1]}
            row["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            rows.append(row)
            print(f"{workload:8s} {method:14s} {time.perf_counter() - started:6.1f}s {json.dumps(row)}", flush=True)
            _write(rows, args, meta)
    _write(rows, args, meta)
    print(_markdown(rows, meta))


if __name__ == "__main__":
    main()
