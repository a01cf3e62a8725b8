"""What one training pass saves for backward, per token and decoder layer, with saved-tensor recipes off and on.

The work: the speed work's first batch (SmolLM2-135M-Instruct, LoRA r=16 alpha=32 on all linear layers,
8 rows of bench/data/docstrings.jsonl at max_length 512, packed, fp32) and, for comparison, the same batch
with full fine-tuning. One forward and backward pass through ``train.accumulation.accumulate_gradients``
(what training runs), under a ``model.saved_recipes.SavedTally``: every saved tensor is counted once per
storage, parameters aside, and only while a decoder layer's forward runs (so the figure is per layer; the
first layer, whose input is the frozen embeddings' output, is left out). A recipe counts nothing: the
tensors it is rebuilt from are counted where their own producer saves them. Then the peak resident memory
of one LoRA pass over 16 rows, recipes off and on, each in a fresh process, with glibc's default malloc and
with a fixed mmap threshold (``MALLOC_MMAP_THRESHOLD_``: freed activations go back to the kernel).

    python bench/saved_bench.py             # writes bench/results/saved.md and .json
    python bench/saved_bench.py --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import machine, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATA = ROOT / "bench" / "data" / "docstrings.jsonl"


class LayerTally:
    """A SavedTally that counts only while one of the chosen decoder layers runs its forward."""

    def __init__(self, layers: list[Any]) -> None:
        from tuneforge.model.saved_recipes import SavedTally

        self.tally = SavedTally()
        self.inside = False
        add = self.tally.add
        self.tally.add = lambda tensor: add(tensor) if self.inside else None  # type: ignore[method-assign]
        for layer in layers:
            layer.register_forward_pre_hook(lambda *_: setattr(self, "inside", True))
            layer.register_forward_hook(lambda *_: setattr(self, "inside", False))


def _trainable(method: str, rows: int) -> tuple[Any, Any, list[Any], Any]:
    """The embedded SmolLM2 made trainable as the speed work does, and the first ``rows`` rows encoded."""
    import torch

    from tuneforge.config import make_config
    from tuneforge.data.examples import TrainingExample
    from tuneforge.data.tokenize import encode_examples
    from tuneforge.model.load import load_model, load_tokenizer
    from tuneforge.model.methods import get_method, make_trainable
    from tuneforge.model.resolve import resolve_model

    path = resolve_model("smollm2-135m-instruct")
    tokenizer = load_tokenizer(path)
    with open(DATA, encoding="utf-8") as handle:
        lines = [json.loads(line) for _, line in zip(range(rows), handle)]
    items = encode_examples(tokenizer, [TrainingExample(messages=row["messages"]) for row in lines], 512).items
    lora = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0} if method == "lora" else {}
    config = make_config({"model": "smollm2-135m-instruct", "method": method, **lora, "batch_size": rows, "max_length": 512,
                          "precision": "fp32", "packing": True, "micro_batch_tokens": None, "data": "unused.jsonl"})
    torch.manual_seed(0)
    model = make_trainable(get_method(method), load_model(path, dtype=torch.float32), config)
    model.train()
    return model, config, items, tokenizer


def peak_worker(method: str, recipes: bool, rows: int) -> dict[str, Any]:
    """One training pass in this (fresh) process: its peak resident memory above what was resident before it."""
    from tuneforge.core.memory import PeakMemory, current_memory_mb
    from tuneforge.model.saved_recipes import saving_recipes
    from tuneforge.train.accumulation import accumulate_gradients
    from tuneforge.train.objectives import run_loss_sums

    model, config, items, tokenizer = _trainable(method, rows)
    before = current_memory_mb()
    started = time.perf_counter()
    with PeakMemory("cpu") as span, saving_recipes(enabled=recipes):
        accumulate_gradients(model, [items], config, run_loss_sums(config), "fp32", tokenizer.pad_token_id, "cpu")
    return {"method": method, "recipes": recipes, "tokens": sum(len(item.input_ids) for item in items),
            "step_peak_mb": span.peak_mb - before, "pass_seconds": time.perf_counter() - started,
            "load_average_1min": os.getloadavg()[0]}


# glibc's malloc raises its mmap threshold to the largest block freed (up to 32 MB), so freed activations stay in
# the heap and the peak RSS follows the heap's high-water mark, not what is live; a fixed threshold returns them.
ALLOCATORS = {"glibc default": {}, "MALLOC_MMAP_THRESHOLD_=1048576": {"MALLOC_MMAP_THRESHOLD_": "1048576"}}


def measure_peak(method: str, recipes: bool, rows: int, allocator: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--peak-worker", method, str(int(recipes)), str(rows)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, **ALLOCATORS[allocator]})
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "allocator": allocator}


def measure(method: str, recipes: bool) -> dict[str, Any]:

    from tuneforge.model.saved_recipes import saving_recipes
    from tuneforge.train.accumulation import accumulate_gradients
    from tuneforge.train.fsdp import decoder_layers
    from tuneforge.train.objectives import run_loss_sums

    model, config, items, tokenizer = _trainable(method, 8)
    layers = decoder_layers(model)
    counter = LayerTally(layers[1:])
    started = time.perf_counter()
    with saving_recipes(enabled=recipes, tally=counter.tally):
        accumulate_gradients(model, [items], config, run_loss_sums(config), "fp32", tokenizer.pad_token_id, "cpu")
    seconds = time.perf_counter() - started
    tokens = sum(len(item.input_ids) for item in items)
    per_token_layer = counter.tally.saved_bytes / tokens / (len(layers) - 1)
    return {"method": method, "recipes": recipes, "tokens": tokens, "layers_counted": len(layers) - 1,
            "saved_bytes_per_token_layer": per_token_layer, "saved_floats_per_token_layer": per_token_layer / 4,
            "recipes_used": counter.tally.recipes, "pass_seconds": seconds, "load_average_1min": os.getloadavg()[0]}


def write_markdown(report: dict[str, Any]) -> str:
    rows = report["rows"]
    lines = ["## Saved for backward: per token and decoder layer, saved-tensor recipes off and on", "",
             "Reproduce: `.venv/bin/python bench/saved_bench.py`. One training pass of SmolLM2-135M-Instruct (fp32, packed, "
             "the default fast paths) over the speed work's first batch of 8 rows; every tensor saved for backward "
             "inside decoder layers 2-30 counted once per storage, parameters aside (`model/saved_recipes.py`'s "
             "`SavedTally`). Recipes: the norms' outputs and o_proj's input are rebuilt in the backward pass from "
             "tensors saved anyway (bitwise the same values).", "",
             f"Machine: {report['machine'].get('cpu', '?')}, {report['machine'].get('cores', '?')} cores; {report['date']}.", "",
             "| method | recipes | floats / token / layer | MB / token (30 layers) | recipes used | pass seconds | load avg |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(f"| {row['method']} | {'on' if row['recipes'] else 'off'} | {row['saved_floats_per_token_layer']:,.0f} | "
                     f"{row['saved_bytes_per_token_layer'] * 30 / 1e6:.3f} | {row['recipes_used']} | "
                     f"{row['pass_seconds']:.1f} | {row['load_average_1min']:.2f} |")
    for method in sorted({row["method"] for row in rows}):
        off, on = (next(r for r in rows if r["method"] == method and r["recipes"] is flag) for flag in (False, True))
        cut = 1 - on["saved_bytes_per_token_layer"] / off["saved_bytes_per_token_layer"]
        lines.append("")
        lines.append(f"{method}: {off['saved_floats_per_token_layer']:,.0f} → {on['saved_floats_per_token_layer']:,.0f} "
                     f"floats per token and layer ({cut:.1%} less).")
    peaks = report.get("peaks") or []
    if peaks:
        lines += ["", "Peak resident memory of one training pass (a fresh process each, the peak above what was resident "
                  "before the pass: saved activations plus what the backward pass holds at its peak), the first "
                  f"{report['peak_rows']} rows in one pass:", "",
                  "| method | allocator | recipes | tokens | step peak MB | pass seconds | load avg |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
        for row in peaks:
            lines.append(f"| {row['method']} | {row['allocator']} | {'on' if row['recipes'] else 'off'} | {row['tokens']:,} | "
                         f"{row['step_peak_mb']:,.0f} | {row['pass_seconds']:.1f} | {row['load_average_1min']:.2f} |")
        for allocator in ALLOCATORS:
            mine = [row for row in peaks if row["allocator"] == allocator]
            if not mine:
                continue
            off = min(row["step_peak_mb"] for row in mine if not row["recipes"])
            on = min(row["step_peak_mb"] for row in mine if row["recipes"])
            dropped = 3 * 30 - 1  # three per layer, but the first layer's input norm offers nothing under LoRA
            lines += ["", f"{allocator}: the step's peak falls by {off - on:,.0f} MB (lowest of each), "
                      f"{(off - on) * 1e6 / (mine[0]['tokens'] * dropped * 576 * 4):.2f} of each of the {dropped} "
                      "hidden-wide fp32 tensors no longer saved."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print the table; write nothing")
    parser.add_argument("--methods", nargs="*", default=["lora", "full"])
    parser.add_argument("--peak-rows", type=int, default=16, help="rows in the one pass whose peak memory is measured")
    parser.add_argument("--peak-repeats", type=int, default=2, help="fresh processes per setting (0: no peak figures)")
    parser.add_argument("--peak-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.peak_worker:
        method, recipes, rows = args.peak_worker
        print(json.dumps(peak_worker(method, recipes == "1", int(rows))))
        return
    rows = [measure(method, recipes) for method in args.methods for recipes in (False, True)]
    peaks = [measure_peak("lora", recipes, args.peak_rows, allocator) for allocator in ALLOCATORS
             for _ in range(args.peak_repeats) for recipes in (False, True)]
    report = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows,
              "peaks": peaks, "peak_rows": args.peak_rows}
    write_results("saved", report, write_markdown(report), write=not args.no_write)


if __name__ == "__main__":
    main()
