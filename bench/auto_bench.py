"""Hyper-parameters chosen from the data (``auto``) against the fixed defaults tuneforge had before them.

    flock /tmp/tuneforge-bench.lock .venv/bin/python bench/auto_bench.py [--arms fixed,auto] [--tasks labels,...]

Six tasks (bench/auto_tasks.py: five generated deterministically, plus the bundled demo data), each trained
twice on the embedded SmolLM2-135M-Instruct with LoRA, same seed, same splits, same machine:

- fixed: the old defaults, given explicitly: 3 epochs, batch 8, lr 1e-3, max_length 512, LoRA r16,
  warmup 10 % of the steps, no early stopping (the best validation checkpoint kept, as before);
- auto: nothing given; the run chooses (train/auto.py) and stops early on the validation split.

Every run is a fresh process (``--one``) that writes its results.json; this script reads back the tuned
test metrics, the training time (``train.train_seconds``: the loop's wall time, evaluations and
checkpoints included), the steps and where early stopping stopped. The base model, prompting baselines
and the forgetting check are off in both arms (they do not depend on the hyper-parameters). Results are
merged into bench/results/auto.json (a rerun of one arm or task keeps the others) and auto.md is written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))

FIXED = {"epochs": 3.0, "batch_size": 8, "learning_rate": 1e-3, "max_length": 512, "lora_r": 16, "warmup_steps": None,
         "early_stopping": False}
COMMON = {"evaluate_base": False, "baselines": False, "forgetting_check": False, "estimate_steps": 0, "seed": 42}
MAX_NEW_TOKENS = {"long_text": 80}
ARMS = ("fixed", "auto")
TASKS = ("labels", "short_text", "long_text", "chat", "tiny", "demo")


def task_config(task: str, arm: str, work: Path) -> dict[str, Any]:
    from auto_tasks import write_tasks

    from tuneforge.samples import CUSTOMER_INTENTS

    paths = {"data": str(CUSTOMER_INTENTS)} if task == "demo" else write_tasks(work / "data")[task]
    values = {**COMMON, **paths, "output": str(work / f"{task}-{arm}"), "max_new_tokens": MAX_NEW_TOKENS.get(task, 64)}
    if "test_data" in paths:
        values["test_split"] = 0.0
    return {**values, **(FIXED if arm == "fixed" else {})}


def run_one(task: str, arm: str, work: Path) -> None:
    """Train one task under one arm in this process (the child side of ``--one``)."""
    from tuneforge.config import make_config
    from tuneforge.pipeline import FineTuningPipeline

    config = make_config(task_config(task, arm, work))
    marks: dict[str, float] = {}

    def on_event(event: dict[str, Any]) -> None:
        # CPU seconds of training (this process, OMP_NUM_THREADS=1): far steadier than wall time on a shared machine.
        if event.get("type") == "train.started":
            marks["start"] = time.process_time()
        elif event.get("type") in ("model.saved", "train.interrupted") and "start" in marks and "end" not in marks:
            marks["end"] = time.process_time()

    FineTuningPipeline(config, on_event=on_event, handle_signals=False).train()
    if "end" in marks:
        (Path(config.output) / "bench_cpu.json").write_text(json.dumps({"train_cpu_seconds": marks["end"] - marks["start"]}))


def summarize(task: str, arm: str, run_dir: Path, wall: float, load: list[float]) -> dict[str, Any]:
    results = json.loads((run_dir / "results.json").read_text())
    cpu = run_dir / "bench_cpu.json"
    cpu_seconds = round(json.loads(cpu.read_text())["train_cpu_seconds"], 1) if cpu.is_file() else None
    train, tuned = results.get("train") or {}, results.get("tuned") or {}
    started = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if '"train.started"' in line]
    label_task = results.get("task") == "classification" or "f1_score" in tuned
    metric = "accuracy" if label_task else "rouge_l" if "rouge_l" in tuned else "exact_match"
    return {
        "task": task, "arm": arm, "status": results["status"], "metric": metric, "score": tuned.get(metric),
        "exact_match": tuned.get("exact_match"), "accuracy": tuned.get("accuracy"), "rouge_l": tuned.get("rouge_l"),
        "train_seconds": train.get("train_seconds"), "train_cpu_seconds": cpu_seconds, "steps": train.get("steps"), "planned_steps": started[0]["total_steps"] if started else None, "epochs": train.get("epochs"),
        "stopped_early": train.get("stopped_early"), "best_step": train.get("best_step"),
        "hyperparameters": results.get("hyperparameters"), "train_examples": (results.get("data") or {}).get("train"),
        "process_seconds": round(wall, 1), "load_average": [round(x, 2) for x in load],
    }


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version()}


def run_all(arms: list[str], tasks: list[str], work: Path) -> dict[str, Any]:
    path = RESULTS / "auto.json"
    report = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    report["machine"], report["date"] = machine(), time.strftime("%Y-%m-%d")
    fresh: dict[str, Any] = {}  # the rows this instance measured
    for task in tasks:
        for arm in arms:
            run_dir = work / f"{task}-{arm}"
            if run_dir.exists():
                subprocess.run(["rm", "-rf", str(run_dir)], check=True)
            started = time.perf_counter()
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
            done = subprocess.run([sys.executable, __file__, "--one", task, arm, "--work", str(work)], env=env)
            wall = time.perf_counter() - started
            load = list(os.getloadavg())
            if done.returncode != 0 or not (run_dir / "results.json").is_file():
                print(f"{task}/{arm}: failed (exit {done.returncode})", flush=True)
                continue
            row = summarize(task, arm, run_dir, wall, load)
            # Re-read before writing: another instance (other tasks, another --work) may have added its rows.
            fresh[f"{task}/{arm}"] = row
            report["runs"] = {**(json.loads(path.read_text())["runs"] if path.is_file() else {}), **fresh}
            print(json.dumps(row), flush=True)
            path.write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "auto.md").write_text(markdown(report))
    return report


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _stopped(row: dict[str, Any]) -> str:
    stopped = row.get("stopped_early")
    if not stopped:
        return f"ran all {row.get('steps')} steps ({row.get('epochs')} epochs)"
    best = f", best step {row['best_step']}" if row.get("best_step") else ""
    return f"step {stopped['step']} of {row.get('planned_steps')}, epoch {row.get('epochs')}{best}"


def _chosen(row: dict[str, Any]) -> str:
    chosen = row.get("hyperparameters") or {}
    shown = [f"{name} {item['value']}" for name, item in chosen.items()
             if item.get("auto") and name in ("epochs", "batch_size", "learning_rate", "max_length", "lora_r", "warmup_steps")]
    return ", ".join(shown) or "—"


def markdown(report: dict[str, Any]) -> str:
    runs, m = report["runs"], report["machine"]
    lines = [
        "## Hyper-parameters chosen from the data (`auto`) vs the old fixed defaults",
        "",
        "Reproduce: `flock /tmp/tuneforge-bench.lock .venv/bin/python bench/auto_bench.py` (tasks: `bench/auto_tasks.py`).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores (shared with other work: the load average after each run is in the "
        f"table), torch {m['torch']}, one thread per run (`OMP_NUM_THREADS=1`). Measured {report['date']}. Model: the embedded "
        "SmolLM2-135M-Instruct, LoRA. **fixed**: 3 epochs, batch 8, lr 1e-3, max_length 512, r 16, warmup 10 %, no "
        "early stopping (the best validation checkpoint kept). **auto**: nothing set; the values chosen are listed. "
        "Training time is the loop's wall time (validation passes and checkpoints included); speed figures depend "
        "on the machine's load, the scores do not.",
        "",
        "| task | rows (train) | metric | fixed | auto | fixed training CPU s (wall s) | auto training CPU s (wall s) "
        "| speed-up (CPU) | auto stopped at | auto chose | load (1 min) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    ratios, pairs = [], []
    for task in TASKS:
        fixed, auto = runs.get(f"{task}/fixed"), runs.get(f"{task}/auto")
        if not fixed and not auto:
            continue
        speed = None
        if fixed and auto and fixed.get("train_cpu_seconds") and auto.get("train_cpu_seconds"):
            speed = fixed["train_cpu_seconds"] / auto["train_cpu_seconds"]
            ratios.append(speed)
            pairs.append((fixed["train_cpu_seconds"], auto["train_cpu_seconds"]))
        any_row = auto or fixed
        time_of = lambda row: f"{_fmt(row.get('train_cpu_seconds'), 1)} ({_fmt(row.get('train_seconds'), 1)})" if row else "—"  # noqa: E731
        lines.append(
            f"| {task} | {any_row.get('train_examples')} | {any_row['metric']} | {_fmt(fixed and fixed['score'])} | "
            f"{_fmt(auto and auto['score'])} | {time_of(fixed)} | {time_of(auto)} | "
            f"{_fmt(speed, 2) + '×' if speed else '—'} | {_stopped(auto) if auto else '—'} | "
            f"{_chosen(auto) if auto else '—'} | {_fmt((auto or fixed)['load_average'][0], 2)} |")
    if ratios:
        mean = sum(ratios) / len(ratios)
        geometric = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        total_fixed, total_auto = sum(f for f, _ in pairs), sum(a for _, a in pairs)
        lines += ["", f"Mean speed-up in training CPU time over the {len(ratios)} tasks: **{mean:.2f}×** (geometric mean "
                  f"{geometric:.2f}×; total {total_fixed:.0f} s fixed vs {total_auto:.0f} s auto, "
                  f"{total_fixed / total_auto:.2f}×, which the longest tasks dominate). Training CPU "
                  "time is the process's CPU seconds from `train.started` to the saved weights, one thread "
                  "(`OMP_NUM_THREADS=1`): it counts the work done, where wall time also counts the other jobs "
                  "sharing the machine."]
    worse = [t for t in TASKS if f"{t}/fixed" in runs and f"{t}/auto" in runs
             and (runs[f"{t}/auto"]["score"] or 0) < (runs[f"{t}/fixed"]["score"] or 0)]
    lines += ["", ("Tasks where auto scored below fixed: " + ", ".join(worse) + ".") if worse
              else "auto scored at least as well as fixed on every task measured."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--work", default="/tmp/tuneforge-auto-bench")
    parser.add_argument("--one", nargs=2, metavar=("TASK", "ARM"), help=argparse.SUPPRESS)
    parser.add_argument("--markdown-only", action="store_true", help="rewrite auto.md from auto.json")
    args = parser.parse_args()
    work = Path(args.work)
    if args.one:
        run_one(args.one[0], args.one[1], work)
        return
    if args.markdown_only:
        (RESULTS / "auto.md").write_text(markdown(json.loads((RESULTS / "auto.json").read_text())))
        return
    run_all(args.arms.split(","), args.tasks.split(","), work)


if __name__ == "__main__":
    main()
