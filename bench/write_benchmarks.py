"""Write BENCHMARKS.md from the measured results in bench/results/ (nothing here is typed in by hand).

    python bench/write_benchmarks.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench_common import cpu_label  # noqa: E402  (bench/ is on sys.path: the benches run as scripts)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# Figures the speed issue gives for TRL on this kind of machine (quiet 2-core AVX2 box, fp32),
# shown beside ours because they were measured with nothing else running.
ISSUE_TRL = {"trl-tuned": 31.0, "trl-tuned-packing": 39.0}

LABELS = {
    "tuneforge-b8": "tuneforge, batch 8 (the default path)",
    "tuneforge-b8-fp32": "tuneforge, batch 8, --precision fp32",
    "tuneforge-b8-padded": "tuneforge, batch 8, packing off (length-grouped padding)",
    "tuneforge-b8-whole-batches": "tuneforge, batch 8, whole batches (micro_batch_tokens: null)",
    "tuneforge-b8-passes-1024": "tuneforge, batch 8, passes of at most 1,024 tokens",
    "tuneforge-b8-passes-512": "tuneforge, batch 8, passes of at most 512 tokens",
    "tuneforge-b8-checkpointing": "tuneforge, batch 8, --gradient-checkpointing",
    "tuneforge-b8-mmap-1mb": "tuneforge, batch 8, MALLOC_MMAP_THRESHOLD_=1048576 (glibc returns freed blocks)",
    "tuneforge-b8-passes-1024-mmap-1mb": "tuneforge, batch 8, passes of 1,024 tokens, MALLOC_MMAP_THRESHOLD_=1048576",
    "tuneforge-b8-hugetlb": "tuneforge, batch 8, GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (transparent huge pages)",
    "tuneforge-b8-mmap-1mb-hugetlb": "tuneforge, batch 8, glibc mmap threshold 1 MB with transparent huge pages",
    "tuneforge-b8-mmap-4mb": "tuneforge, batch 8, MALLOC_MMAP_THRESHOLD_=4194304",
    "tuneforge-b8-jemalloc": "tuneforge, batch 8, jemalloc (LD_PRELOAD)",
    "tuneforge-b8-tcmalloc": "tuneforge, batch 8, tcmalloc (LD_PRELOAD)",
    "tuneforge-b8-glibc": "tuneforge, batch 8, glibc's malloc (TUNEFORGE_ALLOCATOR=system)",
    "tuneforge-b8-passes-2048-glibc": "tuneforge, batch 8, passes of 2,048 tokens, glibc's malloc (the defaults before)",
    "tuneforge-b8-recipes-off": "tuneforge, batch 8, saved-tensor recipes off",
    "tuneforge-b8-tcmalloc-recipes-off": "tuneforge, batch 8, tcmalloc, saved-tensor recipes off",
    "tuneforge-b8-passes-1024-tcmalloc": "tuneforge, batch 8, passes of 1,024 tokens, tcmalloc",
    "tuneforge-b8-passes-1024-tcmalloc-recipes-off": "tuneforge, batch 8, passes of 1,024 tokens, tcmalloc, recipes off",
    "tuneforge-b8-mmap-1mb-recipes-off": "tuneforge, batch 8, MALLOC_MMAP_THRESHOLD_=1048576, saved-tensor recipes off",
    "tuneforge-b1": "tuneforge, batch 1",
    "tuneforge-b32": "tuneforge, batch 32",
    "tuneforge-full-b8": "tuneforge, full fine-tuning, batch 8",
    "trl-tuned": "TRL SFTTrainer, bf16 off, grad-ckpt off",
    "trl-bf16": "TRL SFTTrainer, bf16 autocast, grad-ckpt off",
    "trl-tuned-packing": "TRL SFTTrainer, bf16 off, grad-ckpt off, packing=True",
    "trl-defaults": "TRL SFTTrainer defaults (bf16 autocast, grad-ckpt on)",
    "olive-fp32": "Olive `olive finetune --torch_dtype float32` (packs to 512, grad-ckpt on, dropout 0.05)",
    "olive-bf16": "Olive `olive finetune --torch_dtype bfloat16` (packs to 512, grad-ckpt on, dropout 0.05)",
    "olive-fp32-no-checkpointing": "Olive, fp32, `--gradient_checkpointing False` (packs to 512, dropout 0.05)",
    "olive-fp32-no-checkpointing-dropout0": "Olive, fp32, grad-ckpt off, its config with lora_dropout 0 (packs to 512)",
    **{f"tuneforge-b8-{method}": f"tuneforge, --method {method}, batch 8 (its default rate)"
       for method in ("qlora", "dora", "ia3", "adapter", "prompt_tuning", "prefix_tuning", "loha", "lokr")},
}
PEERS = ("trl", "olive")  # the other tools' configuration names start with these


def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _peaks(report: dict[str, Any]) -> dict[str, float]:
    peak = report["matmul_peak_gflops"]
    return peak if isinstance(peak, dict) else {"fp32": peak}


def _allocator(name: str, result: dict[str, Any]) -> str:
    """The malloc a configuration trained with: recorded by the worker; before that was recorded, glibc's (or the
    library its configuration preloaded)."""
    recorded = result.get("allocator")
    if recorded is None:
        recorded = next((lib for lib in ("tcmalloc", "jemalloc") if lib in name), "system")
    return "glibc" if recorded == "system" else recorded


def speed_section(report: dict[str, Any]) -> str:
    machine, results = report["machine"], report["results"]
    peaks = _peaks(report)
    flops = report["flops_per_token"]
    peak_text = ", ".join(f"{name} **{value:.0f} GFLOP/s**" for name, value in peaks.items())
    limits = ", ".join(f"{peaks[name] * 1e9 / flops['lora']:.0f} tokens/s in {name}" for name in peaks)
    lines = [
        f"## Training speed: tuneforge vs TRL SFTTrainer and Microsoft Olive ({cpu_label(machine)})",
        "",
        "Reproduce: `make bench` (installs the `bench` extra with TRL and Olive's own venv, `make setup-olive`, "
        "then runs `bench/speed_bench.py`).",
        "",
        f"Machine: {cpu_label(machine)}, {machine['cores']} cores, {machine['memory_gb']} GiB"
        + (", native bf16 (AMX/AVX512-BF16)" if machine.get("native_bf16") else ", no native bf16")
        + f"; Python {machine['python']}, torch {machine['torch']} ({machine['threads']} threads), "
        f"transformers {machine['transformers']}, peft {machine['peft']}, trl {machine['trl']}. Measured {report['date']}."
        + (f" GPU: {machine['gpu']}." if machine.get("gpu") else " No GPU.")
        + (f" Load average when it started: {machine['load_average_at_start']} (other jobs shared the machine: speed "
           "figures are low by about that much; memory figures are not affected)."
           if (machine.get("load_average_at_start") or 0) >= 1.0 else ""),
        "",
        f"Work: SmolLM2-135M-Instruct, LoRA r=16 alpha=32 dropout 0 on all linear layers, batch 8, max_length 512, "
        f"lr 2e-4 linear, one epoch over the first {report['work']['rows']} rows of `bench/data/docstrings.jsonl` "
        f"({report['work']['real_tokens']:,} real tokens), loss on the answers only. Every configuration runs in a "
        "fresh process; the harness counts real (non-padding) tokens from the batches itself, leaves the first "
        "optimizer step out (warm-up), reads peak RSS when training ends, records the CPU time the hypervisor "
        "stole from this VM during training, and scores every trained model with one function: token-level loss "
        "(fp32) on rows 64–127, which no configuration trained on.",
        "",
        f"This machine's matmul peaks ([4096×576]·[576×1536]): {peak_text}. Model FLOPs per token "
        f"(PaLM convention, PERFORMANCE.md §7.1, lm_head over all tokens): LoRA {flops['lora'] / 1e6:.0f} MFLOP, full "
        f"{flops['full'] / 1e6:.0f} MFLOP, so the physical limit for LoRA is {limits}. MFU is taken against the peak "
        "of the format each run computed in.",
        "",
        "| configuration | computes in | allocator | real tokens/s | label tokens/s | median step (s) | peak RSS (MiB) | held-out loss | MFU | CPU stolen |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results.items():
        if "skipped" in result:
            lines.append(f"| {LABELS.get(name, name)} | | | skipped: {result['skipped']} | | | | | | |")
            continue
        if "error" in result:
            lines.append(f"| {LABELS.get(name, name)} | | | failed: {result['error'][-120:].strip()} | | | | | | |")
            continue
        per_token = flops["full"] if "full" in name else flops["lora"]
        dtype = result.get("precision") or "fp32"
        mfu = result["tokens_per_second"] * per_token / (peaks.get(dtype, peaks["fp32"]) * 1e9)
        steal = result.get("cpu_steal_percent")
        lines.append(
            f"| {LABELS.get(name, name)} | {dtype} | {_allocator(name, result)} | {_f(result['tokens_per_second'])} | {_f(result['label_tokens_per_second'])} | "
            f"{_f(result['median_step_seconds'], 2)} | {_f(result['peak_rss_mb'], 0)} | {_f(result['held_out_loss'], 4)} | "
            f"{mfu:.0%} | {'—' if steal is None else f'{steal:.0f} %'} |"
        )
    if report.get("rerun"):
        span = report["rerun"].get("first_date")
        span = f"from {span} to {report['rerun']['date']}" if span and span != report["rerun"]["date"] else report["rerun"]["date"]
        lines += ["", f"Measured later, {span}, with `--rerun` (same machine and work; a rerun after heavy CPU steal, or rows added): "
                  + ", ".join(LABELS.get(name, name) for name in report["rerun"]["configurations"]) + "."]
    untrained = report.get("untrained", {}).get("held_out_loss")
    lines += ["", f"Held-out loss of the untrained model: {_f(untrained, 4)}.", ""]
    lines += olive_lines(results)
    lines += ratio_lines(results, machine)
    return "\n".join(lines) + "\n"


def best_trl(results: dict[str, Any]) -> str | None:
    """The TRL configuration with the most real tokens/s measured here."""
    measured = {name: r["tokens_per_second"] for name, r in results.items()
                if name.startswith("trl") and math.isfinite(r.get("tokens_per_second", float("nan")))}
    return max(measured, key=measured.get) if measured else None


def olive_lines(results: dict[str, Any]) -> list[str]:
    """What Olive's rows measure: its own forced choices differ from the work (bench/olive_peer.py)."""
    ran = {name: r for name, r in results.items() if name.startswith("olive") and "tokens_per_second" in r}
    if not ran:
        return []
    first = next(iter(ran.values()))
    return [f"Olive {first.get('olive', '')} (its own venv, same torch/transformers/peft): `olive finetune` packs the "
            f"chat-templated rows into {first.get('packed_rows')} rows of "
            f"{first.get('real_tokens_per_packed_row', 0):.0f} tokens (the tail under one row is dropped, attention "
            "crosses row boundaries) and takes the loss on all tokens, so its real tokens/s counts every packed token "
            "and its held-out loss (scored on the answers, like every row) is not from the same objective. Its step "
            "clock is the harness's, hooked into Olive's transformers.Trainer; peak RSS is that of Olive's process"
            + (f" (each configuration ran twice: its peak moved between runs, "
               f"{' and '.join(f'{mib:,.0f}' for mib in first['peak_rss_mb_runs'])} MiB; the lower is shown)"
               if first.get("peak_rss_mb_runs") else "")
            + f". The command: `{first.get('olive_command', '')}`"
            + (" (in bf16 the same with `--torch_dtype bfloat16`)" if "olive-bf16" in ran and len(ran) > 1 else "")
            + ".", ""]


def ratio_lines(results: dict[str, Any], machine: dict[str, Any] | None = None) -> list[str]:
    """The default path against every peer measured in the same run; against the speed issue's TRL figures too where
    the run's CPU is of their kind (AVX2 only, or not recorded)."""
    ours = results.get("tuneforge-b8", {})
    best = best_trl(results)
    peers = [name for name, r in results.items() if name.startswith(PEERS) and "tokens_per_second" in r]
    if "tokens_per_second" not in ours or not peers:
        return []
    goals = (f"TRL's best configuration measured here: **{LABELS.get(best, best)}**. The goal against TRL: at least "
             "5× its speed, at most ¼ of its peak memory, held-out loss within 2 %. " if best else "")
    if any(name.startswith("olive") for name in peers):
        goals += "The goal against Olive (scale issue): at most ½ of its peak memory, no loss of speed."
    lines = ["### Ratios (tuneforge's default path, batch 8, against TRL and Olive)", "", goals.strip(), "",
             "| against | speed | peak memory | held-out loss |", "| --- | ---: | ---: | ---: |"]
    for name in peers:
        theirs = results[name]
        speed = ours["tokens_per_second"] / theirs["tokens_per_second"]
        memory = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
        loss = (ours["held_out_loss"] - theirs["held_out_loss"]) / theirs["held_out_loss"]
        label = LABELS.get(name, name) + (" — **TRL's best here**" if name == best else "")
        lines.append(f"| {label} | {speed:.2f}× | {memory:.2f}× | {loss:+.2%} |")
    machine = machine or {}
    avx2_only = machine.get("cpu_isa", "AVX512-BF16" if machine.get("native_bf16") else "AVX2") == "AVX2"
    for name, figure in ISSUE_TRL.items() if avx2_only else ():
        lines.append(f"| {LABELS[name]} (the issue's figure on its AVX2 machine, {figure:.0f} tok/s) | "
                     f"{ours['tokens_per_second'] / figure:.2f}× | | |")
    return lines + [""]


OWN_SECTIONS = {"demo.md", "speed_notes.md", "validate.md"}  # placed by main() itself


def main() -> None:
    parts = ["# Benchmarks", "", "Every figure below is measured by a script in `bench/` and written here by "
             "`bench/write_benchmarks.py`; rerun the script to reproduce it.", ""]
    demo = RESULTS / "demo.md"
    if demo.is_file():
        parts += [demo.read_text(), ""]
    # speed.json first, then any other machine's run of the same benchmark (speed-<machine>.json).
    for speed in sorted(RESULTS.glob("speed*.json"), key=lambda path: (path.name != "speed.json", path.name)):
        parts.append(speed_section(json.loads(speed.read_text())))
    notes = RESULTS / "speed_notes.md"
    if notes.is_file():
        parts += [notes.read_text(), ""]
    validate = RESULTS / "validate.md"
    if validate.is_file():
        parts += ["## Data doctor: `tuneforge validate` on large files", "",
                  "Reproduce: `.venv/bin/python bench/validate_bench.py`.", "", validate.read_text(), ""]
    # Every other bench writes its own section as bench/results/<name>.md (estimate, eval, serve, methods ...).
    # A bench's main table first, then other machines' runs of it (scale.md, then scale-avx512bf16.md).
    for section in sorted(RESULTS.glob("*.md"), key=lambda path: (path.stem.split("-")[0], "-" in path.stem, path.stem)):
        if section.name not in OWN_SECTIONS:
            parts += [section.read_text(), ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts).rstrip() + "\n")
    print(ROOT / "BENCHMARKS.md")


def write_benchmarks() -> None:
    main()


if __name__ == "__main__":
    main()
