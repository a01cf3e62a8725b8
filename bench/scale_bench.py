"""How training cost grows with model size and sequence length, on models of real architectures.

The models are built from their published configurations (SmolLM2-135M/360M/1.7B, Qwen2.5-0.5B/1.5B,
Llama-3.2-1B) with random weights: nothing is downloaded, the loss figures mean nothing, the speed
and memory are real. Each configuration trains a few optimizer steps of ``tuneforge finetune``'s own
path (FineTuningPipeline: memory planner, packing, passes, fused loss) in a fresh process, on
synthetic text rows that fill ``max_length`` exactly, so every step holds the same number of tokens.

Per row: tokens/s over the timed steps (the first step is a warm-up), peak RSS of the process, the
memory planner's estimate of a step's peak and what it chose, the model FLOPs per token (PaLM
convention, as the speed bench) and the fraction of this CPU's measured matmul peak.

    python bench/scale_bench.py                       # the default grid (see GRID) and its peers (PEERS)
    python bench/scale_bench.py --only smollm2-135m:lora:512 qwen2.5-0.5b:qlora:512
    python bench/scale_bench.py --only olive:smollm2-135m:lora:512 trl:smollm2-135m:lora:512 smollm2-135m:lora:512
    python bench/scale_bench.py --memory-limit 12GB --only smollm2-1.7b:lora:1024

Peer rows (``olive:MODEL:METHOD:LENGTH``, ``trl:...``) train the same rows and steps with Microsoft Olive's
``olive finetune`` and TRL's SFTTrainer (bench/scale_peers.py), shown beside tuneforge's row of the same key.

Writes bench/results/scale.json (results merge across invocations) and bench/results/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]
from bench_common import cpu_label  # noqa: E402
from scale_peers import PEERS, gb_of_mib, parse_key, peer_key, peer_lines, peer_row, skip_reason, train_peer  # noqa: E402
RESULTS = ROOT / "bench" / "results"
MODELS_HOME = Path(os.environ.get("TUNEFORGE_HOME") or Path.home() / ".cache" / "tuneforge") / "scale-models"

# Published configurations (config.json of each model on the Hugging Face hub), the fields that shape cost.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "smollm2-135m": {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True,
                     "rope_theta": 100000.0, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5},
    "smollm2-360m": {"model_type": "llama", "hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                     "num_attention_heads": 15, "num_key_value_heads": 5, "vocab_size": 49152, "tie_word_embeddings": True,
                     "rope_theta": 100000.0, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5},
    "qwen2.5-0.5b": {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
                     "rope_theta": 1000000.0, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6},
    "llama-3.2-1b": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True,
                     "rope_theta": 500000.0, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                     "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 8192}},
    "qwen2.5-1.5b": {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                     "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
                     "rope_theta": 1000000.0, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6},
    "smollm2-1.7b": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                     "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 49152, "tie_word_embeddings": True,
                     "rope_theta": 130000.0, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5},
}

# (model, method, max_length), cheapest first so that a run cut short still has the small sizes: sequence length
# on two sizes, then the parameter scale at 512 tokens, QLoRA beside LoRA, the 1B-and-up models last.
GRID = [
    *[("smollm2-135m", "lora", n) for n in (128, 512, 1024, 2048)],
    ("smollm2-360m", "lora", 512),
    *[("qwen2.5-0.5b", "lora", n) for n in (128, 512, 2048)],
    ("smollm2-135m", "qlora", 512), ("qwen2.5-0.5b", "qlora", 512),
    ("llama-3.2-1b", "lora", 512), ("qwen2.5-1.5b", "lora", 512), ("smollm2-1.7b", "lora", 512),
    ("smollm2-1.7b", "lora", 1024),  # the scale issue's goal: a 1.7B model with LoRA at 1,024 tokens within 12 GB
    ("smollm2-1.7b", "qlora", 512),
]
TOKENS_PER_STEP = 1024  # batch_size × max_length is held at this (batch at least 1)
STEPS = 3  # optimizer steps; the first is a warm-up and not timed (2 timed steps of TOKENS_PER_STEP each)


def default_keys() -> list[str]:
    """The grid's keys in order, each peer (PEERS) right after tuneforge's row of the same model:method:length."""
    keys = []
    for name, method, length in GRID:
        keys.append(f"{name}:{method}:{length}")
        keys += [peer_key(*peer) for peer in PEERS if peer[1:] == (name, method, length)]
    return keys


def model_dir(name: str) -> Path:
    """The random-weight model ``name`` (built once, cached), with SmolLM2's tokenizer (ids fit every vocabulary)."""
    target = MODELS_HOME / name
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from tuneforge.model.resolve import resolve_model

    settings = dict(ARCHITECTURES[name])
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=MODELS_HOME.mkdir(parents=True, exist_ok=True) or MODELS_HOME))
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    tokenizer.save_pretrained(staging)
    staging.rename(target)
    return target


def synthetic_rows(n: int, max_length: int, seed: int = 0) -> list[dict[str, str]]:
    """Text rows longer than ``max_length`` tokens (so each is cut to exactly that), different from each other."""
    import random

    words = ("the model trains on local data with adapters and the loss falls while memory stays within the plan "
             "every token of every pass counts").split()
    rng = random.Random(seed)
    return [{"text": " ".join(rng.choice(words) for _ in range(max_length * 2))} for _ in range(n)]


def run_one(name: str, method: str, max_length: int, memory_limit: str | None) -> dict[str, Any]:
    """Train STEPS steps in this process; the measured figures."""
    from bench_common import cpu_model, cpu_steal, steal_percent

    from tuneforge.config import make_config
    from tuneforge.core.allocator import loaded_allocator
    from tuneforge.data.examples import TrainingData, TrainingExample
    from tuneforge.pipeline import FineTuningPipeline

    batch = max(1, TOKENS_PER_STEP // max_length)
    path = model_dir(name)
    examples = [TrainingExample(text=row["text"]) for row in synthetic_rows(batch * STEPS, max_length)]
    step_times: list[float] = []
    seen: dict[str, Any] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event["type"] in ("memory.planned", "memory.warning", "model.ready"):
            seen[event["type"]] = event
        elif event["type"] == "train.started":
            seen["start"] = time.perf_counter()
            seen["steal"] = cpu_steal()
        elif event["type"] == "train.step":
            step_times.append(time.perf_counter())

    settings = make_config({
        "model": str(path), "method": method, "max_length": max_length, "batch_size": batch, "epochs": 1,
        "max_steps": STEPS, "learning_rate": 1e-4, "warmup_steps": 0, "evaluation_strategy": "no", "saving_strategy": "no",
        "evaluate_base": False, "baselines": False, "forgetting_check": False, "estimate_steps": 0,
        "validation_split": 0.0, "test_split": 0.0, "output": str(Path(tempfile.mkdtemp(prefix="tf-scale-")) / "run"),
        "seed": 0, **({"memory_limit": memory_limit} if memory_limit else {}),
    })
    started = time.perf_counter()
    FineTuningPipeline(settings, on_event=on_event).train(TrainingData(examples=examples))
    wall = time.perf_counter() - started
    timed = [b - a for a, b in zip(step_times, step_times[1:])]
    plan = seen.get("memory.planned") or seen.get("memory.warning") or {}
    ready = seen.get("model.ready", {})
    return {
        "model": name, "method": method, "max_length": max_length, "batch_size": batch, "timed_steps": len(timed),
        "parameters": ready.get("total_parameters"), "trainable": ready.get("trainable_parameters"),
        "precision": ready.get("precision"),
        "tokens_per_second": round(batch * max_length * len(timed) / sum(timed), 2) if timed else None,
        "seconds_per_step": round(sum(timed) / len(timed), 2) if timed else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "planned_peak_mb": (plan.get("estimate") or {}).get("total_mb"), "plan_changed": plan.get("changed"),
        "plan_limit_mb": plan.get("limit_mb"), "wall_seconds": round(wall, 1),
        "steal_percent": steal_percent(seen["steal"], cpu_steal()) if "steal" in seen else None,
        "load_average": round(os.getloadavg()[0], 2),
        **({"memory_limit": memory_limit} if memory_limit else {}),
        "commit": _commit(), "cpu": cpu_model(), "allocator": loaded_allocator(),
    }


def run_peer(framework: str, name: str, method: str, max_length: int) -> dict[str, Any]:
    """Train the same STEPS steps of the same rows as ``run_one`` with a peer (Olive, TRL); the measured figures."""
    from bench_common import cpu_model

    batch = max(1, TOKENS_PER_STEP // max_length)
    path = model_dir(name)
    measured = train_peer(framework, path, name, synthetic_rows(batch * STEPS, max_length), batch, STEPS, max_length)
    return {"framework": framework, "model": name, "method": method, "max_length": max_length, "batch_size": batch,
            **peer_row(framework, measured), "load_average": round(os.getloadavg()[0], 2), "commit": _commit(),
            "cpu": cpu_model()}


def _commit() -> str | None:
    """The code measured (rows from before the fused LoRA MLP, f0a57ed, keep more activations)."""
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None


def flops_per_token(name: str, method: str, max_length: int, trainable: int) -> float:
    """PaLM-convention model FLOPs per token: 4·N_lin (6·N_lin full) + 12·L·d·T + 6·N_trainable (adapters)."""
    c = ARCHITECTURES[name]
    hidden, layers, inter, heads, kv = (c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"],
                                        c["num_attention_heads"], c["num_key_value_heads"])
    head_dim = hidden // heads
    per_layer = 2 * hidden * heads * head_dim + 2 * hidden * kv * head_dim + 3 * hidden * inter
    n_lin = layers * per_layer + hidden * c["vocab_size"]
    attention = 12 * layers * hidden * max_length
    return (6 * n_lin if method == "full" else 4 * n_lin + 6 * trainable) + attention


def worker(key: str, memory_limit: str | None) -> None:
    framework, name, method, length = parse_key(key)
    row = run_one(name, method, length, memory_limit) if framework == "tuneforge" else run_peer(framework, name, method, length)
    print(json.dumps(row), flush=True)


def identity(key: str, memory_limit: str | None = None) -> dict[str, Any]:
    """The fields that name a row (``key_of`` of it is ``key``): a peer's framework, model, method, length, limit."""
    framework, name, method, length = parse_key(key)
    return {**({"framework": framework} if framework != "tuneforge" else {}), "model": name, "method": method,
            "max_length": length, **({"memory_limit": memory_limit} if memory_limit and framework == "tuneforge" else {})}


def run_in_fresh_process(key: str, memory_limit: str | None) -> dict[str, Any]:
    """One row in a fresh process; a peer that cannot run here is a skipped row with the reason (no process)."""
    framework = parse_key(key)[0]
    if framework != "tuneforge":
        memory_limit = None  # the peers have no memory planner
        reason = skip_reason(framework)
        if reason:
            return {**identity(key), "skipped": reason}
    command = [sys.executable, __file__, "--worker", key, *(["--memory-limit", memory_limit] if memory_limit else [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    if framework == "tuneforge":
        from tuneforge.core.allocator import allocator_environment

        env.update(allocator_environment(env))  # the allocator the `tuneforge` command trains with (tcmalloc when installed)
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {**identity(key, memory_limit), "error": (done.stderr or done.stdout)[-1500:]}
    return {**json.loads(lines[-1]), **identity(key, memory_limit)}


PLANNED_BEFORE_FIX = {"smollm2-135m:lora:128", "smollm2-135m:lora:512", "smollm2-135m:lora:1024"}


def key_of(row: dict[str, Any]) -> str:
    """The row's key: ``[FRAMEWORK:]MODEL:METHOD:LENGTH[@LIMIT]`` (no framework for tuneforge's rows)."""
    limit = f"@{row['memory_limit']}" if row.get("memory_limit") else ""
    framework = f"{row['framework']}:" if row.get("framework", "tuneforge") != "tuneforge" else ""
    return f"{framework}{row['model']}:{row['method']}:{row['max_length']}{limit}"


def limit_percent(row: dict[str, Any], peak: dict[str, float]) -> float | None:
    """tokens/s × model FLOPs per token against the measured matmul peak of the precision the row computed in."""
    if not row.get("tokens_per_second"):
        return None
    gflops = peak["bf16" if row.get("precision") == "bf16" else "fp32"]
    flops = flops_per_token(row["model"], row["method"], row["max_length"], row.get("trainable") or 0)
    return row["tokens_per_second"] * flops / 1e9 / gflops * 100


def _row_line(row: dict[str, Any], peak: dict[str, float]) -> str:
    if "error" in row or not row.get("tokens_per_second"):
        why = (row.get("error") or "").strip().splitlines() or ["no step timed"]
        return f"| {row['model']} | — | {row['method']} | {row['max_length']} | — | failed: {why[-1][:120]} | | | | | | | | |"
    steal = row.get("steal_percent")
    return (
        f"| {row['model']} | {row['parameters'] / 1e6:,.0f}M | {row['method']} | {row['max_length']} | {row['batch_size']} | "
        f"{'glibc' if row.get('allocator', 'system') == 'system' else row['allocator']} | {row['tokens_per_second']:,.1f} | "
        f"{row['seconds_per_step']:,.1f} | {limit_percent(row, peak):.0f} % | {gb_of_mib(row['peak_rss_mb']):.2f} | "
        f"{(row['planned_peak_mb'] or 0) / 1e3:.2f}{'¹' if key_of(row) in PLANNED_BEFORE_FIX and not row.get('commit') else ''} | "
        f"{json.dumps(row['plan_changed']) if row.get('plan_changed') else '—'}"
        f"{' (--memory-limit ' + row['memory_limit'] + ')' if row.get('memory_limit') else ''}"
        f"{'' if row.get('commit') else ' ²'} | {row['load_average']} | {'—' if steal is None else f'{steal:.0f} %'} |")


def _fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares a, b of y ≈ a + b·x."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def growth_lines(rows: list[dict[str, Any]], peak: dict[str, float]) -> list[str]:
    """How cost grows: with parameters (LoRA rows at 512 tokens) and with sequence length (models with three or more
    lengths), derived from the measured rows."""
    import math

    ok = [r for r in rows if r.get("framework", "tuneforge") == "tuneforge" and r.get("tokens_per_second")
          and not r.get("memory_limit")]
    lines = ["### How cost grows", ""]
    by_size = sorted((r for r in ok if r["method"] == "lora" and r["max_length"] == 512), key=lambda r: r["parameters"])
    if len(by_size) >= 3:
        billions = [r["parameters"] / 1e9 for r in by_size]
        a, b = _fit_line(billions, [gb_of_mib(r["peak_rss_mb"]) for r in by_size])
        worst = max(abs(gb_of_mib(r["peak_rss_mb"]) - (a + b * x)) for r, x in zip(by_size, billions))
        slope = _fit_line([math.log(x) for x in billions], [math.log(r["tokens_per_second"]) for r in by_size])[1]
        fractions = ", ".join(f"{r['model']} {limit_percent(r, peak) or 0:.0f} %" for r in by_size)
        lines += [
            f"- **With parameters** (LoRA, 512 tokens, {len(by_size)} models from {billions[0] * 1e3:,.0f}M to "
            f"{billions[-1]:.2f}B): peak RSS ≈ {a:.2f} GB + {b:.2f} GB per billion parameters (least squares; the "
            f"farthest row is {worst:.2f} GB off the line; the frozen base alone is "
            + ("2 GB per billion in bf16" if {r.get("precision") for r in by_size} == {"bf16"} else "4 GB per billion in fp32")
            + "). "
            f"tokens/s falls as parameters^{slope:.2f} (a log-log fit; −1 would be cost in proportion to the weights). "
            f"The fraction of the matmul limit, smallest model to largest: {fractions}.",
        ]
    for model in dict.fromkeys(r["model"] for r in ok):
        lengths = sorted((r for r in ok if r["model"] == model and r["method"] == "lora"), key=lambda r: r["max_length"])
        if len(lengths) < 3:
            continue
        first, last = lengths[0], lengths[-1]
        cells = ", ".join(f"{r['max_length']:,}: {r['tokens_per_second']:,.0f} tokens/s, {gb_of_mib(r['peak_rss_mb']):.2f} GB"
                          for r in lengths)
        flops_growth = (flops_per_token(model, "lora", last["max_length"], last.get("trainable") or 0)
                        / flops_per_token(model, "lora", first["max_length"], first.get("trainable") or 0))
        lines.append(
            f"- **With sequence length, {model}** (the same {TOKENS_PER_STEP:,} tokens a step, fewer and longer rows): {cells}. "
            f"From {first['max_length']:,} to {last['max_length']:,} tokens the model FLOPs per token grow "
            f"{flops_growth:.2f}× (attention's share) and tokens/s changes {last['tokens_per_second'] / first['tokens_per_second']:.2f}×; "
            f"peak RSS changes {last['peak_rss_mb'] / first['peak_rss_mb']:.2f}× (a pass holds one long example's "
            "activations at once).")
    return lines + [""] if len(lines) > 2 else []


def write_markdown(report: dict[str, Any], stem: str = "scale") -> None:
    """``stem``.md from a run's report (``scale`` for the main table; another machine's run goes beside it)."""
    m = report["machine"]
    cpu = cpu_label(m)
    peak = report["matmul_peak_gflops"]
    ours = [r for r in report["rows"] if r.get("framework", "tuneforge") == "tuneforge"]
    loads = [r["load_average"] for r in report["rows"] if r.get("load_average") is not None]
    steals = [r["steal_percent"] for r in ours if r.get("steal_percent") is not None]
    lines = [
        "## Scale: model size and sequence length (random weights, real architectures"
        + (")" if stem == "scale" else f"; {cpu})"), "",
        f"Reproduce: `.venv/bin/python bench/scale_bench.py{'' if stem == 'scale' else ' --results ' + stem}` (the whole grid and its peers in one run, each row in a fresh "
        "process; `--only MODEL:METHOD:LENGTH` adds or re-measures rows of the last run).", "",
        f"Machine: {cpu}, {m['cores']} cores, {m['memory_gb']} GB, torch {m['torch']}; fp32 matmul peak measured "
        f"{peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s"
        + (f"; load average when each row ended {min(loads):.1f}–{max(loads):.1f} (a row's own two threads count about 2)" if loads else "")
        + (f", CPU stolen by the hypervisor while training {min(steals):.0f}–{max(steals):.0f} %" if steals else "")
        + f". Commit {', '.join(sorted({r['commit'] for r in report['rows'] if r.get('commit')})) or '?'}.", "",
        f"Work: {STEPS} optimizer steps of batch × max_length tokens (at least {TOKENS_PER_STEP:,}; rows filled to max_length), "
        "LoRA r16 on all linear layers (qlora: the same on an NF4 base), the default settings otherwise; the first step "
        "is a warm-up. *Planned* is the memory planner's estimate of a step's peak (train/memory_plan.py) beside the "
        "measured peak RSS (the kernel's high-water mark, in GB of 10⁹ bytes like the plan); *limit %* is tokens/s × model FLOPs per token (PaLM convention: 4 per frozen weight, 6 per "
        "trainable one, 12·layers·hidden·length for attention) against the measured matmul peak of the precision used.", "",
        "| model | params | method | max_length | batch | malloc | tokens/s | s/step | limit % | peak RSS GB | planned GB | "
        "plan changed | load | stolen |",
        "| --- | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
        *(_row_line(row, peak) for row in ours),
    ]
    notes = ["qlora's *params* counts the packed 4-bit weights as torch sees them (two per byte); its limit % counts the "
             "full-size weights' FLOPs (QLoRA also dequantizes every weight on every pass, which the convention does not count)."]
    if any(key_of(r) in PLANNED_BEFORE_FIX and not r.get("commit") for r in ours):
        notes.append("¹ Planned by the planner before commit 0844e0c, which did not yet count weights still file-backed "
                     "when the model is ready (about 0.6 GB for this model).")
    if any(not r.get("commit") for r in ours):
        notes.append("² Measured before the fused LoRA MLP (commit f0a57ed), which keeps two intermediate-width "
                     "activations per token and layer fewer: these rows' peaks are higher than the current code's.")
    commits = Counter(r["commit"] for r in ours if r.get("commit"))
    if len(commits) > 1:  # rows re-measured with --only after the grid's run (whose commit most rows have)
        grid = commits.most_common(1)[0][0]
        notes.append("Re-measured after the grid's run (commit " + grid + "): " + "; ".join(
            f"at {c}: " + ", ".join(key_of(r) for r in report["rows"] if r.get("commit") == c)
            for c in commits if c != grid) + ".")
    lines += ["", " ".join(notes), "", *growth_lines(report["rows"], peak)]
    peers = peer_lines(report["rows"], key_of)
    lines += [*peers, *([""] if peers else []), f"Measured from {report.get('first_date') or report['date']} to {report['date']}."]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


PLAN_LENGTH, PLAN_BATCH = 1024, 8  # the sizing table: examples of 1,024 tokens, batch 8 (passes of the default size)
PLAN_BUDGETS_GB = (8, 16, 24)


def lora_parameters(c: dict[str, Any], rank: int = 16) -> int:
    """LoRA r on all seven linear layers of every block: r·(in + out) each."""
    h, i = c["hidden_size"], c["intermediate_size"]
    kv = c["num_key_value_heads"] * (h // c["num_attention_heads"])
    return c["num_hidden_layers"] * rank * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 3)


def planned_rows() -> list[dict[str, Any]]:
    """The memory planner's figures for every architecture (nothing trained): LoRA r16, fp32 and bf16, at the
    default passes (``micro_batch_tokens``' default, at least one example), at one example per pass, and with
    gradient checkpointing."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuneforge.train.memory_plan import (RUNTIME_MB, ModelShape, allocator_activation_factor, estimate_step_memory,
                                             tokens_per_pass)

    default_tokens = tokens_per_pass(default_pass_tokens(), PLAN_BATCH, PLAN_LENGTH)

    rows = []
    for name, settings in ARCHITECTURES.items():
        settings = dict(settings)
        config = AutoConfig.for_model(settings.pop("model_type"), **settings)
        with torch.device("meta"):
            parameters = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        c = ARCHITECTURES[name]
        shape = ModelShape(parameters=parameters, hidden=c["hidden_size"], intermediate=c["intermediate_size"],
                           layers=c["num_hidden_layers"], vocab=c["vocab_size"])
        for precision, dtype_bytes in (("fp32", 4), ("bf16", 2)):
            def peak(tokens: int, checkpointing: bool, allocator: str = "system") -> float:
                return estimate_step_memory(shape, weights_mb=parameters * dtype_bytes / 1e6, trainable=lora_parameters(c),
                                            tokens_per_pass=tokens, checkpointing=checkpointing, full=False,
                                            dtype_bytes=dtype_bytes, runtime_mb=RUNTIME_MB, fused_mlp=True,
                                            activation_factor=allocator_activation_factor(allocator)).total_mb
            rows.append({"model": name, "parameters": parameters, "precision": precision,
                         "default_tokens": default_tokens, "default_mb": peak(default_tokens, False),
                         "default_tcmalloc_mb": peak(default_tokens, False, "tcmalloc"), "one_example_mb": peak(PLAN_LENGTH, False),
                         "checkpointing_mb": peak(PLAN_LENGTH, True)})
    return rows


def default_pass_tokens() -> int | None:
    """``micro_batch_tokens`` as a run gets it when nothing sets it."""
    from tuneforge.config import FineTuningConfig

    return FineTuningConfig.model_fields["micro_batch_tokens"].default


def write_plan_markdown(rows: list[dict[str, Any]]) -> None:
    def fits(row: dict[str, Any], budget_gb: int) -> str:
        limit = budget_gb * 1e3 * 0.9  # the planner leaves 10 % headroom
        if row["default_mb"] <= limit:
            return "defaults"
        if row["one_example_mb"] <= limit:
            return "smaller passes"
        return "checkpointing" if row["checkpointing_mb"] <= limit else "no"

    lines = ["### Which models fit: the memory planner's figures (LoRA r16, examples of 1,024 tokens, batch 8)", "",
             "Reproduce: `.venv/bin/python bench/scale_bench.py --plan` (nothing is trained: `train/memory_plan.py`'s "
             f"estimate, whose activation model is fitted to the measured rows above). *Defaults*: passes of "
             f"{rows[0]['default_tokens']:,} tokens (`micro_batch_tokens`' default; one example per pass when that is an "
             "example's length); *smaller passes*: one example per pass, chosen by the planner; *checkpointing*: the planner also recomputes "
             "activations (about a third slower). A budget is the memory free for the run; the planner keeps 10 % of it "
             "as headroom; the budget columns use the glibc figures (the larger), *under tcmalloc* is the plan where the "
             "`tuneforge` command trains under tcmalloc (memory_plan.TCMALLOC_ACTIVATION_FACTOR). fp32 is what an AVX2-only CPU trains in; bf16 where the CPU has it natively (AMX/AVX512-BF16). Host memory only (the planner does not plan GPU memory).", "",
             "| model | params | precision | peak at defaults GB | under tcmalloc GB | one example per pass GB | "
             "with checkpointing GB | " + " | ".join(f"{b} GB free" for b in PLAN_BUDGETS_GB) + " |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | " + " | ".join("---" for _ in PLAN_BUDGETS_GB) + " |"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['parameters'] / 1e6:,.0f}M | {row['precision']} | {row['default_mb'] / 1e3:.1f} | "
                     f"{row.get('default_tcmalloc_mb', row['default_mb']) / 1e3:.1f} | "
                     f"{row['one_example_mb'] / 1e3:.1f} | {row['checkpointing_mb'] / 1e3:.1f} | "
                     + " | ".join(fits(row, b) for b in PLAN_BUDGETS_GB) + " |")
    (RESULTS / "scale_plan.md").write_text("\n".join(lines) + "\n")


def row_order(rows: Any) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """Rows by model size (a peer's size is its tuneforge row's), method, length, tuneforge before its peers."""
    sizes = {row["model"]: row["parameters"] for row in rows if row.get("parameters")}
    return lambda r: (r.get("parameters") or sizes.get(r["model"], 0), r["method"], r["max_length"], r.get("framework", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", help="MODEL:METHOD:MAX_LENGTH keys, or olive:/trl: and such a key for a "
                        "peer's row (default: the grid and its peers)")
    parser.add_argument("--memory-limit", help="passed to each run (the planner fits the run to it)")
    parser.add_argument("--render", action="store_true", help="only rewrite scale.md from scale.json")
    parser.add_argument("--results", default="scale", help="the name under bench/results/ (.json, .md) of this run: "
                        "another machine's goes beside the main table, e.g. scale-avx512bf16 (default: scale)")
    parser.add_argument("--plan", action="store_true", help="only write scale_plan.md: the planner's figures, nothing trained")
    args = parser.parse_args()
    if args.plan:
        write_plan_markdown(planned_rows())
        return
    if args.worker:
        worker(args.worker, args.memory_limit)
        return
    from bench_common import machine, matmul_peak_gflops

    if args.render:
        write_markdown(json.loads((RESULTS / f"{args.results}.json").read_text()), args.results)
        return
    keys = args.only or default_keys()
    for key in keys:
        try:
            model = parse_key(key)[1]
        except ValueError as error:
            parser.error(str(error))
        if model not in ARCHITECTURES:
            parser.error(f"{key!r}: no model {model!r}; the models: {', '.join(ARCHITECTURES)}")
    path = RESULTS / f"{args.results}.json"
    # The whole grid is one run (a table of one machine state and one commit); --only adds rows to the last run's.
    old = json.loads(path.read_text()) if path.exists() and args.only else {"rows": []}
    rows = {key_of(r): r for r in old.get("rows", [])}
    info = machine()
    # Without native bf16 a bf16 multiply is emulated (seconds each): a few repeats show it, as in the speed bench.
    peaks = {"fp32": matmul_peak_gflops("fp32"), "bf16": matmul_peak_gflops("bf16", 20 if info["native_bf16"] else 2)}
    report = {"machine": info, "matmul_peak_gflops": peaks, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    report["first_date"] = old.get("first_date") or old.get("date") or report["date"]  # rows merge across runs
    for key in keys:
        print(f"{key} ...", flush=True)
        row = run_in_fresh_process(key, args.memory_limit)
        rows[key_of(row)] = row
        print(json.dumps(row)[:400], flush=True)
        report["rows"] = sorted(rows.values(), key=row_order(rows.values()))
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")
        write_markdown(report, args.results)


if __name__ == "__main__":
    main()
