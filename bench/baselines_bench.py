"""Was fine-tuning worth it? The prompting baselines and the verdict of real runs, for BENCHMARKS.md.

    flock /tmp/tuneforge-bench.lock .venv/bin/python bench/baselines_bench.py [--only demo docstrings]
        [--demo-run DIR] [--docstrings-run DIR] [--no-write]

Two runs, each a fresh `tuneforge` process with baselines on (the default):

- ``demo``: `tuneforge demo` (the embedded SmolLM2-135M-Instruct, the bundled customer-intent task);
- ``docstrings``: `tuneforge finetune` on the speed benchmark's data (bench/data/docstrings.jsonl,
  free text): rows 200-391 train (192 rows), rows 64-83 test (20 rows, inside the speed benchmark's
  held-out rows 64-127), LoRA r=16, 1 epoch, batch 8, lr 2e-4 (the speed benchmark's settings, given
  explicitly so that changed defaults do not change this run), answers up to 64 new tokens, no
  training-time estimate (a short budget for a shared 2-core machine).

While each runs, the load average is sampled every 10 s (the machine is shared); the wall time,
the commit, the CPU and its cores go beside the figures in ``RUN_DIR/bench_meta.json``. With
``--demo-run`` / ``--docstrings-run`` an earlier run (with its bench_meta.json) is read instead of
running again. Writes bench/results/baselines.json and baselines.md (`bench/write_benchmarks.py` puts
the section into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
from bench_common import write_results  # noqa: E402  (bench/ is on sys.path: these run as scripts)
DOCSTRINGS = ROOT / "bench" / "data" / "docstrings.jsonl"
TRAIN_ROWS = range(200, 392)
TEST_ROWS = range(64, 84)
DOCSTRING_FLAGS = ["--epochs", "1", "--batch-size", "8", "--learning-rate", "2e-4", "--lora-r", "16", "--lora-alpha", "32",
                   "--max-length", "512", "--max-new-tokens", "64", "--evaluation-strategy", "no", "--saving-strategy", "no",
                   "--estimate-steps", "0"]
LABELS = {"base": "base zero-shot", "few_shot": "few-shot", "retrieval_few_shot": "retrieval few-shot", "tuned": "tuned (LoRA)"}
SHOWN = {"accuracy": "accuracy", "f1_score": "macro F1", "exact_match": "exact match", "rouge_l": "ROUGE-L", "bleu": "BLEU"}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown CPU"


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def tuneforge(*args: str) -> list[str]:
    return [sys.executable, "-m", "tuneforge.cli.main", *args]


def measure(command: list[str], run_dir: Path) -> dict[str, Any]:
    """Run ``command`` (it writes ``run_dir``), sampling the load average; write and return bench_meta.json."""
    loads: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(10):
            loads.append(os.getloadavg()[0])

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    sampler = threading.Thread(target=sample, daemon=True)
    started, stamp = time.perf_counter(), datetime.datetime.now(datetime.timezone.utc)
    loads.append(os.getloadavg()[0])
    sampler.start()
    finished = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done.set()
    if finished.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({finished.returncode}):\n{finished.stderr[-3000:]}")
    meta = {"command": " ".join(command[2:]), "wall_seconds": round(time.perf_counter() - started, 1),
            "date": stamp.strftime("%Y-%m-%d %H:%M UTC"), "commit": commit(), "cpu": cpu_name(), "cores": os.cpu_count(),
            "load_max": round(max(loads), 2), "load_mean": round(sum(loads) / len(loads), 2)}
    (run_dir / "bench_meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def docstring_files(out: Path) -> tuple[Path, Path]:
    rows = DOCSTRINGS.read_text().splitlines()
    out.mkdir(parents=True, exist_ok=True)
    train, test = out / "docstrings-train.jsonl", out / "docstrings-test.jsonl"
    train.write_text("".join(rows[i] + "\n" for i in TRAIN_ROWS))
    test.write_text("".join(rows[i] + "\n" for i in TEST_ROWS))
    return train, test


def run(name: str, work: Path) -> Path:
    run_dir = work / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if name == "demo":
        command = tuneforge("demo", "--output", str(run_dir), "--json")
    else:
        train, test = docstring_files(work)
        command = tuneforge("finetune", "--data", str(train), "--test-data", str(test), "--output", str(run_dir), "--json",
                            *DOCSTRING_FLAGS)
    print(f"running {name}: {' '.join(command[2:])}", flush=True)
    measure(command, run_dir)
    return run_dir


def figures(run_dir: Path) -> dict[str, Any]:
    """What the section shows of one run: each column's scores and request costs, the verdict, the run's facts."""
    results = json.loads((run_dir / "results.json").read_text())
    meta = json.loads((run_dir / "bench_meta.json").read_text())
    evaluation = results.get("evaluation") or {}
    columns = {"base": {"performance": results["base"], "resources": evaluation.get("base") or {}}}
    columns.update({name: {"performance": b["performance"], "resources": b["resources"]} for name, b in results["baselines"].items()})
    columns["tuned"] = {"performance": results["tuned"], "resources": evaluation.get("tuned") or {}}
    shots = next(iter(results["baselines"].values()))["shots"]
    return {"meta": meta, "task": results.get("task"), "data": results.get("data"), "columns": columns, "shots": shots,
            "verdict": results["verdict"], "forgetting": results.get("forgetting"), "model": results.get("model"),
            "train": {k: (results.get("train") or {}).get(k) for k in ("train_seconds", "steps", "epochs", "tokens_per_second")},
            "phases": phases(run_dir)}


PHASES = [("base evaluation", ("eval.started", "base"), ("eval.finished", "base")),
          ("prompting baselines", ("baselines.started", None), ("baselines.finished", None)),
          ("forgetting check before + making the model trainable", ("baselines.finished", None), ("model.ready", None)),
          ("training-time estimate", ("model.ready", None), ("train.started", None)),
          ("training (with its evaluations)", ("train.started", None), ("model.saved", None)),
          ("tuned evaluation", ("eval.started", "tuned"), ("eval.finished", "tuned"))]


def phases(run_dir: Path) -> dict[str, float]:
    """Seconds of each phase of the run, from its events.jsonl."""
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]

    def when(kind: str, model: str | None) -> float | None:
        return next((e["time"] for e in events if e["type"] == kind and (model is None or e.get("model") == model)), None)

    found = {}
    for label, start, end in PHASES:
        began, ended = when(*start), when(*end)
        if began is not None and ended is not None:
            found[label] = round(ended - began, 1)
    return found


def _f(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def table(found: dict[str, Any]) -> list[str]:
    columns = found["columns"]
    names = list(columns)
    metric = found["verdict"]["metric"]
    lines = ["| metric | " + " | ".join(LABELS.get(n, n) for n in names) + " |", "| --- |" + " ---: |" * len(names)]
    for key, label in SHOWN.items():
        values = [columns[n]["performance"].get(key) for n in names]
        if all(v is None for v in values):
            continue
        best = max((v for v in values if v is not None), default=None)
        cells = [(f"**{_f(v)}**" if key == metric and v == best else _f(v)) for v in values]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for key, label, digits in (("prompt_tokens_per_request", "prompt tokens per request", 1),
                               ("seconds_per_request", "generation seconds per request (batched)", 2)):
        lines.append(f"| {label} | " + " | ".join(_f(columns[n]["resources"].get(key), digits) for n in names) + " |")
    return lines


def section(results: dict[str, dict[str, Any]]) -> str:
    lines = ["## Was fine-tuning worth it? Prompting baselines and the verdict", "",
             "Reproduce: `flock /tmp/tuneforge-bench.lock .venv/bin/python bench/baselines_bench.py` (each run a fresh "
             "`tuneforge` process; baselines are on by default). Few-shot: k training examples drawn once with the run's "
             "seed (42), shown as earlier chat turns; retrieval few-shot: for each test input the k training examples most "
             "similar to it by BM25 (`bm25s`), the most similar nearest the question. Shots come from the train split only. "
             "The verdict is `evaluate.baselines.verdict` as the run wrote it to results.json. Quality figures and prompt "
             "tokens do not depend on the machine's load; seconds do (the machine is shared: the load average while each "
             "run ran is given).", ""]
    titles = {"demo": "`tuneforge demo`: customer intents (8 labels)",
              "docstrings": "The speed benchmark's data: Python docstrings (free text)"}
    for name, found in results.items():
        meta, train, data = found["meta"], found["train"], found["data"] or {}
        model = found.get("model") or {}
        lines += [f"### {titles.get(name, name)}", "",
                  f"`{meta['command']}` at commit {meta['commit']}, {meta['date']}, on {meta['cpu']} ({meta['cores']} cores; "
                  f"load average {meta['load_mean']} mean, {meta['load_max']} max while it ran). "
                  f"{model.get('name')} ({model.get('precision')}, {model.get('device')}), {data.get('train')} training / "
                  f"{data.get('test')} test examples, k = {found['shots']}; training {train['steps']} steps in "
                  f"{_f(train['train_seconds'], 1)} s ({_f(train['tokens_per_second'], 1)} tokens/s); the whole run "
                  f"{meta['wall_seconds'] // 60:.0f} min {meta['wall_seconds'] % 60:.0f} s.", ""]
        lines += ["Where the time went: " + "; ".join(f"{label} {seconds:.0f} s" for label, seconds in found["phases"].items())
                  + ".", ""]
        lines += table(found)
        lines += ["", f"Verdict: **{found['verdict']['message']}.**"]
        if found.get("forgetting"):
            lines += ["", f"Forgetting check: {found['forgetting']['message']}."]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=["demo", "docstrings"], default=["demo", "docstrings"])
    parser.add_argument("--demo-run", type=Path, help="read this finished demo run (with bench_meta.json) instead")
    parser.add_argument("--docstrings-run", type=Path, help="read this finished docstrings run instead")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-baselines", help="where new runs go")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    given = {"demo": args.demo_run, "docstrings": args.docstrings_run}
    found = {name: figures(given[name] or run(name, args.work)) for name in args.only}
    write_results("baselines", found, section(found), write=not args.no_write)


if __name__ == "__main__":
    main()
