"""Where a training step's time goes: the default LoRA path on the speed work, its matrix multiplies timed alone.

    python bench/step_profile_bench.py                    # writes bench/results/step_profile.json and .md
    python bench/step_profile_bench.py --precision bf16   # on a bf16 CPU: step_profile-bf16.json and .md

The speed issue asks for 85 % of this CPU's fp32 matmul limit. This trains the speed bench's own work
(bench/speed_bench.py: SmolLM2-135M-Instruct, LoRA r16 on every linear layer, batch 8, the default
``tuneforge finetune`` path) for a few optimizer steps and:

1. times the steps as they run (the median of ``TIMED_STEPS`` after a warm-up step);
2. records, in one more step under a ``TorchDispatchMode``, every operator the step calls (forward and
   backward) with the shapes, strides and dtypes of each matrix multiply (``mm``, ``addmm``, ``bmm``);
3. replays those matrix multiplies alone, on tensors of the same shapes and strides, and times them
   (the best of ``REPLAYS``).

The replayed time is what the step's model FLOPs cost at this CPU's matmul speed; the rest of the
step is time outside the matrix multiplies (attention, norms, SiLU, the loss, copies, Python and
autograd bookkeeping), which the matmul limit does not count.

The recorded step also times every operator by category, the clock read around the operator's own call
only, so the mode's bookkeeping (and Python's, autograd's and the dispatcher's) falls between operators:
that share is the step's time at the timed steps' pace less the sum of its operators. A profiler's
per-op timing is not used: with tens of thousands of small ops a step, its own overhead is in its figures.

Runs under the allocator the ``tuneforge`` command trains with (tcmalloc when installed; it re-executes
itself once with it, as the command does).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]
RESULTS = ROOT / "bench" / "results"
TIMED_STEPS = int(os.environ.get("TIMED_STEPS", "4"))
REPLAYS = 3
MATMULS = ("mm", "addmm", "bmm", "baddbmm")
GOALS = {"fp32": 85, "bf16": 40}  # the scale issue's speed goals: % of the format's matmul limit


def category(name: str) -> str:
    """The bucket of one aten operator name (``aten.mm.default`` -> ``mm``)."""
    op = name.split(".")[1] if name.startswith("aten.") else name
    if op in MATMULS:
        return "matrix multiplies"
    if "scaled_dot_product" in op or "flash_attention" in op:
        return "attention kernels"
    if op.startswith("_foreach") or "adam" in op:
        return "optimizer"
    if op in ("copy_", "cat", "clone", "_to_copy", "index_select", "index", "gather", "scatter_add_", "fill_", "zero_",
              "zeros", "empty", "empty_strided", "new_zeros", "new_empty_strided", "split_with_sizes_copy", "contiguous"):
        return "copies and allocation"
    if op in ("view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "slice", "select", "split",
              "split_with_sizes", "unsqueeze", "squeeze", "as_strided", "detach", "alias", "narrow", "unbind"):
        return "views (no data moved)"
    return "elementwise and reductions"


class Recorder:
    """A dispatch mode that counts every operator and keeps each matrix multiply's operands' layout."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        recorder = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                name = str(func.overloadpacket.__name__) if hasattr(func, "overloadpacket") else str(func)
                bucket = category(f"aten.{name}")
                recorder.counts[bucket] += 1
                if name in MATMULS:
                    recorder.matmuls.append((name, [(tuple(a.shape), tuple(a.stride()), a.dtype) for a in args
                                                    if hasattr(a, "shape")],
                                             {k: v for k, v in (kwargs or {}).items() if isinstance(v, (int, float))}))
                started = time.perf_counter()
                result = func(*args, **(kwargs or {}))
                recorder.seconds[bucket] += time.perf_counter() - started
                return result

        self.mode = Mode()
        self.counts: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()  # each operator's own call, by category
        self.matmuls: list[tuple[str, list[tuple[Any, Any, Any]], dict[str, Any]]] = []


def matmul_flops(name: str, operands: list[tuple[Any, Any, Any]]) -> float:
    shapes = [shape for shape, _, _ in operands]
    a, b = shapes[-2], shapes[-1]  # addmm/baddbmm: (input, mat1, mat2)
    if name in ("bmm", "baddbmm"):
        return 2.0 * a[0] * a[1] * a[2] * b[2]
    return 2.0 * a[0] * a[1] * b[1]


def replay_seconds(matmuls: list[tuple[str, list[tuple[Any, Any, Any]], dict[str, Any]]]) -> float:
    """The best of REPLAYS timings of every recorded matrix multiply, run alone on fresh operands."""
    import torch

    # One operand per distinct layout, shared by the calls of that layout: the step's own operands would hold
    # gigabytes at once (the logits chunks' product with the 49,152-row embedding alone is 113 MB each time).
    cache: dict[tuple[Any, Any, Any, int], Any] = {}
    calls = []
    for name, operands, kwargs in matmuls:
        tensors = [cache.setdefault((shape, stride, dtype, position),
                                    torch.empty_strided(shape, stride, dtype=dtype).normal_())
                   for position, (shape, stride, dtype) in enumerate(operands)]
        calls.append((getattr(torch.ops.aten, name).default, tensors, kwargs))
    best = float("inf")
    for _ in range(REPLAYS):
        started = time.perf_counter()
        for func, tensors, kwargs in calls:
            func(*tensors, **kwargs)
        best = min(best, time.perf_counter() - started)
    return best


def profile_steps(precision: str) -> dict[str, Any]:
    """Train the speed work's first rows in ``precision`` (resolved: fp32 or bf16): time steps 2..1+TIMED_STEPS,
    record the step after them."""
    import torch

    import tuneforge.train.accumulation as accumulation
    from speed_bench import CONFIGS, read_rows, tuneforge_settings
    from tuneforge.data.examples import TrainingData, TrainingExample
    from tuneforge.pipeline import FineTuningPipeline

    recorder = Recorder()
    marks: dict[str, Any] = {"ends": [], "tokens": [], "pending": 0}
    original = accumulation.training_loss_sums

    def counted(loss_sums: Any, model: Any, batch: dict[str, Any]) -> Any:
        marks["pending"] += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        return original(loss_sums, model, batch)

    accumulation.training_loss_sums = counted
    record_step = 2 + TIMED_STEPS  # the step recorded under the dispatch mode (its time is not used)

    def on_event(event: dict[str, Any]) -> None:
        if event["type"] != "train.step":
            return
        marks["ends"].append(time.perf_counter())
        marks["tokens"].append(marks["pending"])
        marks["pending"] = 0
        if event["step"] == record_step - 1:
            recorder.mode.__enter__()
        elif event["step"] == record_step:
            recorder.mode.__exit__(None, None, None)

    rows = read_rows(range(0, 8 * (record_step + 1)))
    # The speed bench's own tuneforge configuration (batch 8, its default path), cut to the profiled steps.
    output = Path(os.environ.get("TMPDIR", "/tmp")) / f"tf-step-profile-{os.getpid()}"
    settings = tuneforge_settings(CONFIGS["tuneforge-b8"], output, max_steps=record_step, baselines=False, precision=precision,
                                  forgetting_check=False, estimate_steps=0, validation_split=0.0, test_split=0.0)
    FineTuningPipeline(settings, on_event=on_event, handle_signals=False).train(
        TrainingData(examples=[TrainingExample(messages=row["messages"]) for row in rows]))
    ends, tokens = marks["ends"], marks["tokens"]
    # Step i (1-based) ends at ends[i-1]; steps 2..1+TIMED_STEPS are timed (step 1 is the warm-up).
    timed = [(ends[i] - ends[i - 1], tokens[i]) for i in range(1, 1 + TIMED_STEPS)]
    per_token = statistics.median(seconds / count for seconds, count in timed)
    recorded_tokens = tokens[record_step - 1]
    flops = sum(matmul_flops(name, operands) for name, operands, _ in recorder.matmuls)
    return {"seconds_per_token": per_token, "timed_steps": [{"seconds": s, "tokens": t} for s, t in timed],
            "recorded_step_tokens": recorded_tokens, "matmul_count": len(recorder.matmuls), "matmul_flops": flops,
            "matmul_replay_seconds": replay_seconds(recorder.matmuls), "op_counts": dict(recorder.counts),
            "op_seconds": dict(recorder.seconds), "threads": torch.get_num_threads()}


def breakdown_lines(result: dict[str, Any], step: float) -> list[str]:
    """The recorded step's operators timed in place, by category, and what is left between them."""
    seconds = result.get("op_seconds")
    if not seconds:
        return []
    total = sum(seconds.values())
    lines = ["The recorded step's operators timed where they ran (the clock read around each operator's own call):", "",
             "| category | calls | seconds | share of the operators' time |", "| --- | ---: | ---: | ---: |"]
    for name, value in sorted(seconds.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {result['op_counts'].get(name, 0):,} | {value:.2f} | {100 * value / total:.0f} % |")
    between = step - total
    lines += ["", f"The operators' own time adds up to {total:.2f} s, {100 * total / step:.0f} % of the step at the timed "
              "steps' pace" + (f": Python, autograd and the dispatcher between them take the other {100 * between / step:.0f} %."
                               if between > 0 else
                               " (recorded, with the dispatch mode's own work between them, they run slower than in the "
                               "timed steps), so the time between the operators (Python, autograd, the dispatcher) is "
                               "within that slowdown: nearly all of the step is the operators themselves.")]
    matmul = seconds.get("matrix multiplies", 0.0)
    if matmul:
        lines += [f"In place the matrix multiplies ran at {result['matmul_flops'] / matmul / 1e9:.0f} GFLOP/s "
                  f"(replayed alone: {result['matmul_flops'] / result['matmul_replay_seconds'] / 1e9:.0f})."]
    return lines + [""]


def results_name(precision: str) -> str:
    """``step_profile`` for fp32 (the AVX2 machines' only format), ``step_profile-bf16`` for bf16."""
    return "step_profile" if precision == "fp32" else f"step_profile-{precision}"


def write(report: dict[str, Any]) -> None:
    from bench_common import cpu_label

    precision = report.get("precision", "fp32")
    result, peak = report["profile"], report["matmul_peak_gflops"][precision]
    step = result["seconds_per_token"] * result["recorded_step_tokens"]  # the recorded step at the timed steps' pace
    matmul = result["matmul_replay_seconds"]
    rate = result["matmul_flops"] / matmul / 1e9
    outside = max(0.0, step - matmul)
    counts = result["op_counts"]
    lines = [
        "## Where a training step's time goes (the speed work, default LoRA path"
        + (")" if precision == "fp32" else f", {precision})"),
        "",
        f"Reproduce: `.venv/bin/python bench/step_profile_bench.py --precision {precision}` (the steps timed as they run; one more step recorded "
        "op by op under a `TorchDispatchMode`; its matrix multiplies replayed alone on operands of the same shapes and "
        "strides; calls of one layout share their operands, which may sit in cache better than the step's own, so the "
        "replayed rate is an upper bound).",
        "",
        f"Machine: {cpu_label(report['machine'])}, {report['machine']['cores']} cores, {result['threads']} threads, "
        f"torch {report['machine']['torch']}; measured {report['date']}, load average {report['load_average']:.2f} when "
        f"it started (commit {report.get('commit') or '?'}), allocator {report.get('allocator', 'system').replace('system', 'glibc')}. Work: SmolLM2-135M-Instruct, LoRA r16 on every linear "
        f"layer, batch 8, the speed bench's rows, computed in {precision}; {len(result['timed_steps'])} timed steps at "
        f"{1 / result['seconds_per_token']:.0f} real tokens/s (median), the recorded step {result['recorded_step_tokens']:,} "
        "tokens.",
        "",
        "| part of the step | seconds | share |",
        "| --- | ---: | ---: |",
        f"| the step (at the timed steps' tokens/s) | {step:.2f} | 100 % |",
        f"| its {result['matmul_count']:,} matrix multiplies, replayed alone ({result['matmul_flops'] / 1e9:,.0f} GFLOP at "
        f"{rate:.0f} GFLOP/s) | {matmul:.2f} | {100 * matmul / step:.0f} % |",
        f"| everything else | {outside:.2f} | {100 * outside / step:.0f} % |",
        "",
        *breakdown_lines(result, step),
        "Operators the recorded step called (forward and backward): "
        + ", ".join(f"{name} {count:,}" for name, count in sorted(counts.items(), key=lambda kv: -kv[1])) + ".",
        "",
        f"This CPU's {precision} matmul peak, measured at the start: {peak:.0f} GFLOP/s ([4096×576]·[576×1536]). The step's "
        f"own matrix multiplies run at {100 * rate / peak:.0f} % of it (thinner shapes than the peak's: LoRA's rank-16 "
        f"products, the logits chunks) and fill {100 * matmul / step:.0f} % of the step, so by its matrix multiplies' "
        f"FLOPs the step runs at {100 * matmul / step * rate / peak:.0f} % of the peak. The other "
        f"{100 * outside / step:.0f} % (attention kernels, norms, SiLU, the loss, copies, and Python and autograd for "
        f"every op above) is what stands between the step and the {GOALS[precision]} % goal"
        + (f": at the multiplies' own {100 * rate / peak:.0f} %-of-peak rate, the goal leaves almost no time for "
           "anything else." if GOALS[precision] > 50 else "."),
    ]
    (RESULTS / f"{results_name(precision)}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    from bench_common import machine, matmul_peak_gflops

    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="fp32",
                        help="the format the step computes in (auto: bf16 where the CPU has AMX/AVX512-BF16); default fp32")
    parser.add_argument("--render", action="store_true", help="rewrite the .md from the saved .json only")
    args = parser.parse_args()
    from tuneforge.model.precision import resolve_precision

    precision = resolve_precision(args.precision, "cpu")
    if args.render:
        write(json.loads((RESULTS / f"{results_name(precision)}.json").read_text()))
        return
    import subprocess

    from tuneforge.core.allocator import loaded_allocator, restart_under_allocator

    restart_under_allocator([sys.executable, __file__, *sys.argv[1:]])
    report = {"machine": machine(), "allocator": loaded_allocator(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "load_average": os.getloadavg()[0], "precision": precision,
              "matmul_peak_gflops": {precision: matmul_peak_gflops(precision)}}
    try:
        report["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                          text=True).stdout.strip() or None
    except OSError:
        report["commit"] = None
    report["profile"] = profile_steps(precision)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{results_name(precision)}.json").write_text(json.dumps(report, indent=1) + "\n")
    write(report)
    print((RESULTS / f"{results_name(precision)}.md").read_text())


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
