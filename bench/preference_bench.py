"""DPO and ORPO on a real model: held-out preference accuracy, base vs tuned, for BENCHMARKS.md.

    flock /tmp/tuneforge-bench.lock .venv/bin/python bench/preference_bench.py [--no-write]

The task: the bundled customer-intent data (src/tuneforge/samples/customer_intents.jsonl) as preference
pairs: the prompt is the instruction and the message, ``chosen`` the right intent, ``rejected`` another
intent (the next one in the label list, so every pair is wrong in a fixed way). Rows 0-159 train
(160 pairs), rows 300-359 are the held-out test pairs (60). The embedded SmolLM2-135M-Instruct is
trained with LoRA (defaults) for one epoch, batch 8, once with ``--objective dpo`` (β 0.1) and once
with ``--objective orpo`` (λ 0.1), each in a fresh `tuneforge finetune` process. Reported from each
run's results.json: ``preference_accuracy`` / ``preference_margin`` (log π(chosen) − log π(rejected))
of the base and the tuned model on the test pairs, the greedy answers' accuracy, training time and
peak memory. The load average is sampled every 10 s while the runs go (the machine is shared).
Writes bench/results/preference.json and preference.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
from bench_common import write_results  # noqa: E402  (bench/ is on sys.path: these run as scripts)
DATA = ROOT / "src" / "tuneforge" / "samples" / "customer_intents.jsonl"
TRAIN_ROWS, TEST_ROWS = range(0, 160), range(300, 360)
FLAGS = ["--epochs", "1", "--batch-size", "8", "--evaluation-strategy", "no",
         "--saving-strategy", "no", "--no-baselines", "--no-forgetting-check", "--estimate-steps", "0",
         "--evaluation-metrics", "accuracy", "--validation-split", "0", "--seed", "7"]
RUNS = {"dpo": ["--objective", "dpo", "--dpo-beta", "0.1"], "orpo": ["--objective", "orpo", "--orpo-alpha", "0.1"]}


def pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    labels = sorted({row["output"] for row in rows})
    return [{"prompt": f"{row['instruction']}\n\n{row['input']}", "chosen": row["output"],
             "rejected": labels[(labels.index(row["output"]) + 1) % len(labels)]} for row in rows]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown CPU"


def run(name: str, directory: Path, model: str | None, max_length: str) -> dict[str, Any]:
    started = time.perf_counter()
    command = [sys.executable, "-m", "tuneforge.cli.main", "finetune", "--data", str(directory / "train.jsonl"),
               "--test-data", str(directory / "test.jsonl"), *FLAGS, "--max-length", max_length, *RUNS[name], *(["--model", model] if model else []), "--output", str(directory / name), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    result = json.loads((directory / name / "results.json").read_text())
    keys = ("preference_accuracy", "preference_margin", "accuracy")
    return {"base": {k: result["base"].get(k) for k in keys}, "tuned": {k: result["tuned"].get(k) for k in keys},
            "train_seconds": result["train"].get("train_seconds"), "steps": result["train"].get("steps"),
            "peak_memory_mb": result["train"].get("peak_memory_mb"), "wall_seconds": round(time.perf_counter() - started, 1)}


def markdown(report: dict[str, Any]) -> str:
    lines = ["## Preference tuning: DPO and ORPO (held-out preference accuracy, base vs tuned)", "",
             "Reproduce: `flock /tmp/tuneforge-bench.lock .venv/bin/python bench/preference_bench.py`. "
             f"{report['model']} with LoRA (defaults), 160 training pairs from the customer-intent sample "
             "(chosen: the right intent; rejected: the next intent in the label list), 1 epoch, batch 8; "
             "60 held-out pairs. `preference accuracy`: share of test pairs where the model gives the chosen "
             "answer the higher log-probability; `margin`: mean log π(chosen) − log π(rejected) in nats; "
             "`answer accuracy`: the greedy answers, exact intent.", "",
             "| objective | preference accuracy base → tuned | margin base → tuned | answer accuracy base → tuned | "
             "steps | training time (s) | peak memory (MB) |", "|---|---|---|---|---|---|---|"]
    for name, row in report["runs"].items():
        base, tuned = row["base"], row["tuned"]
        lines.append(f"| {name} | {base['preference_accuracy']:.3f} → {tuned['preference_accuracy']:.3f} | "
                     f"{base['preference_margin']:.2f} → {tuned['preference_margin']:.2f} | "
                     f"{base['accuracy']:.3f} → {tuned['accuracy']:.3f} | {row['steps']} | {row['train_seconds']:.0f} | "
                     f"{row['peak_memory_mb']:.0f} |")
    lines += ["", f"Measured {report['date']} on {report['cpu']} ({report['cores']} cores, shared with other work: "
              f"load average {report['load_min']:.1f}-{report['load_max']:.1f} while it ran; quality figures do not "
              "depend on load, times do), commit " + report["commit"] + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-write", action="store_true", help="print, do not write bench/results")
    parser.add_argument("--model", default=None, help="another model (a smoke run; the figures are for the default)")
    parser.add_argument("--max-length", default="160", help="tokens per sequence (160 holds every prompt of the default model)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    loads: list[float] = [os.getloadavg()[0]]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(10):
            loads.append(os.getloadavg()[0])

    threading.Thread(target=sample, daemon=True).start()
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        for split, picked in (("train", TRAIN_ROWS), ("test", TEST_ROWS)):
            (directory / f"{split}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs([rows[i] for i in picked])))
        runs = {name: run(name, directory, args.model, args.max_length) for name in RUNS}
    stop.set()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    report = {"model": args.model or "SmolLM2-135M-Instruct (embedded)", "runs": runs, "date": datetime.date.today().isoformat(),
              "cpu": cpu_name(), "cores": os.cpu_count(), "load_min": min(loads), "load_max": max(loads), "commit": commit}
    write_results("preference", report, markdown(report), write=not args.no_write)


if __name__ == "__main__":
    main()
