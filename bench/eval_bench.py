"""Examples per second of evaluation's generation: the path before the inference engine vs the engine.

    .venv/bin/python bench/eval_bench.py [--model smollm2-135m-instruct] [--examples 48] [--repeats 2] [--no-write]

"Before" is ``generate_answers`` as it was at commit e233b23 (``model.generate`` in batches of 8,
the evaluation's batch size, copied below unchanged). "After" is what ``evaluate_model`` calls now
(``tuneforge.evaluate.generate.generate_answers``, the inference engine). Both get the same
rendered prompts and the same token budget, in two workloads:

- label: the bundled customer-intent task (what ``make demo`` evaluates), budget = longest label
  + ``LABEL_SLACK_TOKENS`` as ``evaluate_model`` sets it;
- free text: open questions with a 48-token budget, where answers end at different lengths.

Runs alternate before/after ``--repeats`` times and keep each side's fastest run (the machine is
shared). Greedy answers of both sides are compared. Writes bench/results/eval.json and eval.md
(``bench/write_benchmarks.py`` puts eval.md, its own section, into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "bench" / "results"
from bench_common import write_results  # noqa: E402  (bench/ is on sys.path: these run as scripts)

FREE_QUESTIONS = [
    "Explain what a refund is.", "Write one sentence about the sea.", "Why is the sky blue?", "Name three fruits.",
    "What is a password for?", "Describe a cat in a few words.", "How do I reset my router?", "What does shipping cost mean?",
    "Give me a short tip for sleeping well.", "What is 2 + 2?", "Say hello in French.", "What is a subscription?",
    "Summarise what an invoice is.", "Tell me a fact about the moon.", "What is the capital of Italy?", "How do trains work?",
]


def before_generate_answers(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 16,
                            on_batch: Callable[[int], None] | None = None) -> list[str]:
    """tuneforge's evaluation generation at commit e233b23 (src/tuneforge/evaluate/generate.py), unchanged."""
    import torch
    from transformers import GenerationConfig

    from tuneforge.model.load import end_of_turn_ids

    with torch.no_grad():
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        stop_ids = end_of_turn_ids(tokenizer)
        settings = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id
        )
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        answers: list[str] = [""] * len(prompts)
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            for start in range(0, len(order), batch_size):
                indices = order[start : start + batch_size]
                encoded = tokenizer([prompts[i] for i in indices], add_special_tokens=False, padding=True, return_tensors="pt")
                encoded = {key: value.to(device) for key, value in encoded.items()}
                output = model.generate(**encoded, generation_config=settings)
                new_tokens = output[:, encoded["input_ids"].shape[1] :]
                for index, tokens in zip(indices, new_tokens):
                    answers[index] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
                if on_batch:
                    on_batch(len(indices))
        finally:
            tokenizer.padding_side = side
            model.train(was_training)
    return answers


def load(model_name: str) -> tuple[Any, Any, str]:
    """The model as the pipeline evaluates it (its precision on this machine), its tokenizer, and what it is."""
    from tuneforge.model.load import load_model, load_tokenizer, pick_device
    from tuneforge.model.precision import base_weight_dtype, resolve_precision
    from tuneforge.model.resolve import resolve_model

    device = pick_device()
    precision = resolve_precision("auto", device)
    path = resolve_model(model_name)
    return load_model(path, device, dtype=base_weight_dtype(precision, "lora")), load_tokenizer(path), precision


def workloads(tokenizer: Any, examples: int) -> dict[str, tuple[list[str], int]]:
    from tuneforge.data.manager import TrainingDataManager
    from tuneforge.data.tokenize import render_chat, render_prompt
    from tuneforge.evaluate.run import LABEL_SLACK_TOKENS

    sample = ROOT / "src" / "tuneforge" / "samples" / "customer_intents.jsonl"
    rows, _ = TrainingDataManager().load(str(sample))
    chosen = rows[:examples]
    longest = max(len(tokenizer(example.output, add_special_tokens=False)["input_ids"]) for example in rows)
    free = [render_chat(tokenizer, [{"role": "user", "content": q}], add_generation_prompt=True) for q in FREE_QUESTIONS]
    return {
        "label": ([render_prompt(tokenizer, example) for example in chosen], longest + LABEL_SLACK_TOKENS),
        "free text": ((free * (1 + examples // 2 // len(free)))[: max(len(free), examples // 2)], 48),
    }


def timed(function: Callable[[], list[str]]) -> tuple[float, float, list[str]]:
    """(wall seconds, this process's CPU seconds, answers)."""
    start, cpu = time.perf_counter(), time.process_time()
    answers = function()
    return time.perf_counter() - start, time.process_time() - cpu, answers


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import torch
    import transformers

    from tuneforge.evaluate.generate import EVAL_BATCH_SIZE, generate_answers

    model, tokenizer, precision = load(args.model)
    figures: dict[str, Any] = {}
    for name, (prompts, budget) in workloads(tokenizer, args.examples).items():
        best = {"before": float("inf"), "after": float("inf")}
        cpu = {"before": float("inf"), "after": float("inf")}
        answers: dict[str, list[str]] = {}
        runs = {"before": lambda: before_generate_answers(model, tokenizer, prompts, budget, batch_size=8),
                "after": lambda: generate_answers(model, tokenizer, prompts, budget)}
        generate_answers(model, tokenizer, prompts[:2], 2)  # warm-up: first-call allocations stay out
        for _ in range(args.repeats):
            for side, run in runs.items():
                seconds, cpu_seconds, answers[side] = timed(run)
                best[side], cpu[side] = min(best[side], seconds), min(cpu[side], cpu_seconds)
                print(f"{name} {side}: {seconds:.2f} s wall, {cpu_seconds:.2f} s CPU", file=sys.stderr)
        same = sum(a == b for a, b in zip(answers["before"], answers["after"]))
        figures[name] = {
            "examples": len(prompts), "max_new_tokens": budget,
            "before_seconds": round(best["before"], 2), "after_seconds": round(best["after"], 2),
            "before_examples_per_second": round(len(prompts) / best["before"], 2),
            "after_examples_per_second": round(len(prompts) / best["after"], 2),
            "speedup": round(best["before"] / best["after"], 2), "identical_answers": same,
            "before_cpu_seconds": round(cpu["before"], 2), "after_cpu_seconds": round(cpu["after"], 2),
            "cpu_speedup": round(cpu["before"] / cpu["after"], 2),
        }
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python bench/eval_bench.py " + " ".join(sys.argv[1:]),
        "model": args.model, "precision": precision, "cpu": cpu_name(), "cores": os.cpu_count(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__,
        "eval_batch_size": EVAL_BATCH_SIZE, "repeats": args.repeats, "workloads": figures,
    }
    write_results("eval", report, markdown(report), write=not args.no_write)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "## Evaluation speed: generation before and after the inference engine",
        "",
        f"Reproduce: `{report['command'].strip()}`. Measured {report['date']} on {report['cpu']} "
        f"({report['cores']} cores, {report['threads']} torch threads), torch {report['torch']}, transformers "
        f"{report['transformers']}; model {report['model']} in {report['precision']}. Before: `model.generate` in "
        f"batches of 8 (the evaluation path at commit e233b23). After: the inference engine "
        f"(`tuneforge.inference`, batches of {report['eval_batch_size']}, finished rows leave the batch, no vocabulary "
        f"projection of prompt positions, a common prompt start computed once per batch). Fastest of "
        f"{report['repeats']} alternating runs each; the CPU seconds (this process's, less sensitive to other "
        "load on a shared machine) are given beside the wall-clock rates.",
        "",
        "| workload | examples | max new tokens | before (examples/s) | after (examples/s) | speed-up | CPU s before → after | CPU speed-up | identical answers |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, figure in report["workloads"].items():
        lines.append(f"| {name} | {figure['examples']} | {figure['max_new_tokens']} | {figure['before_examples_per_second']:.2f} | "
                     f"{figure['after_examples_per_second']:.2f} | **{figure['speedup']:.2f}×** | "
                     f"{figure['before_cpu_seconds']:.1f} → {figure['after_cpu_seconds']:.1f} | {figure['cpu_speedup']:.2f}× | "
                     f"{figure['identical_answers']}/{figure['examples']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
