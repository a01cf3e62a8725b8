"""Throughput and peak memory of ``tuneforge validate`` on a generated 1,000,000-row JSONL file.

    .venv/bin/python bench/validate_bench.py [--rows 1000000] [--sizes 100000,1000000]

For each size it writes /tmp/tuneforge-bench/rows-N.jsonl (chat rows with a system prompt, varied
user texts, a few labels, some duplicates and secrets), runs ``tuneforge validate FILE --json`` in
a child process and records wall time, rows per second and the child's peak RSS. Running the
sizes side by side shows whether memory stays flat as the file grows. Results go to
bench/results/validate.json and bench/results/validate.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = Path("/tmp/tuneforge-bench")
LABELS = ["billing", "refund", "shipping", "account", "other"]
_VOCAB = random.Random(1)
WORDS = ["".join(_VOCAB.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(_VOCAB.randint(2, 9))) for _ in range(5000)]


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Chat rows: system + user + assistant label; 1% exact duplicates, 0.1% with an e-mail address."""
    if path.is_file() and path.stat().st_size > 0:
        return
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        previous = ""
        for index in range(rows):
            if index and rng.random() < 0.01:
                handle.write(previous)
                continue
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30))) + f" #{index}"
            if rng.random() < 0.001:
                text += " mail me at someone@example.com"
            row = {"messages": [{"role": "system", "content": "Classify the customer message."},
                                {"role": "user", "content": text},
                                {"role": "assistant", "content": rng.choice(LABELS)}]}
            previous = json.dumps(row) + "\n"
            handle.write(previous)


def measure(path: Path, rows: int, extra: list[str]) -> dict[str, object]:
    command = [sys.executable, "-m", "tuneforge.cli.main", "validate", str(path), "--json", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode not in (0, 1):
        raise SystemExit(f"validate failed ({done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    return {"rows": rows, "options": " ".join(extra) or "(defaults)", "seconds": round(seconds, 1),
            "rows_per_second": round(rows / seconds), "peak_rss_mb": round(max(peak_kib, before) / 1024, 1),
            "file_mb": round(path.stat().st_size / 2**20, 1), "usable_examples": report["stats"]["usable_examples"],
            "warnings": report["warnings"], "errors": report["errors"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="row counts to measure")
    parser.add_argument("--no-near-dup-run", action="store_true", help="skip the extra run without near duplicates")
    args = parser.parse_args()
    results = []
    for rows in [int(size) for size in args.sizes.split(",")]:
        path = WORK / f"rows-{rows}.jsonl"
        generate(path, rows)
        # Peak RSS of children is a high-water mark over all children: measure each run in a fresh process.
        runs = [[]] if args.no_near_dup_run else [[], ["--near-dup", "0"]]
        for extra in runs:
            probe = [sys.executable, __file__, "--_one", str(path), str(rows), *extra]
            done = subprocess.run(probe, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            results.append(json.loads(done.stdout))
            print(json.dumps(results[-1]), flush=True)
    machine = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "validate.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    lines = ["| rows | options | file (MB) | seconds | rows/s | peak RSS (MB) |", "| ---: | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['rows']:,} | {r['options']} | {r['file_mb']} | {r['seconds']} | {r['rows_per_second']:,} | {r['peak_rss_mb']} |"
              for r in results]
    (out / "validate.md").write_text(f"`tuneforge validate` on generated chat JSONL ({machine['cpus']} CPUs, Python "
                                     f"{machine['python']}), no --model:\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_one":
        print(json.dumps(measure(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])))
    else:
        main()
