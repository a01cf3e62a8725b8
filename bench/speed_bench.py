"""Training speed: tuneforge against TRL's SFTTrainer and Microsoft Olive's ``olive finetune`` on the same work.

The work (fixed by the speed issue): SmolLM2-135M-Instruct, LoRA r=16 alpha=32 dropout 0 on all
linear layers, batch 8, max_length 512, lr 2e-4, linear decay, no warmup, one epoch over the first
64 rows of bench/data/docstrings.jsonl, loss on the assistant answers only. tuneforge runs its
default precision (``auto``: bf16 where the CPU has AMX/AVX512-BF16, else fp32) unless a
configuration says otherwise; TRL runs fp32 ("tuned for CPU", as the speed issue measured it), bf16
autocast, and its defaults (bf16 + gradient checkpointing), so its best configuration on *this*
machine is known rather than assumed. Olive (``olive-*``) runs from its own venv (``make setup-olive``; skipped
with the reason where it is missing) through bench/olive_peer.py, which says what Olive forces (packing to 512,
loss on all tokens, LoRA dropout 0.05 unless its saved config is edited).

Each configuration runs in a fresh subprocess (one process tree, one at a time). The harness itself:
- counts real (non-padding) tokens and label tokens from the batches that reach the model,
- stamps the end of every optimizer step with its own clock, and leaves the first step out of the
  throughput (warm-up),
- reads peak RSS (``ru_maxrss``) when training ends, and peak GPU memory on a GPU,
- records the CPU time the hypervisor stole from this VM while training (``steal`` in /proc/stat):
  on a shared cloud VM that is the main source of noise, so every figure carries it,
- scores every trained model with one shared function (tuneforge's token-level loss on rows
  64-127, which neither side trained on),
- measures this machine's fp32 and bf16 matmul peaks for MFU (each run against the peak of the
  format it computed in).

A bf16 configuration (TRL's ``bf16: True``) is skipped, with the reason recorded, on a CPU without native bf16,
where it would take hours; naming it in ``--only`` runs it anyway.

    python bench/speed_bench.py            # everything; writes bench/results/speed.json and BENCHMARKS.md
    python bench/speed_bench.py --only tuneforge-b8 trl-tuned
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import cpu_steal, machine, matmul_peak_gflops, steal_percent  # noqa: F401  (used below and by the workers)
from olive_peer import run_olive
from olive_peer import skip_reason as olive_skip_reason

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "docstrings.jsonl"
RESULTS = ROOT / "bench" / "results"
TRAIN_ROWS = range(0, int(os.environ.get("BENCH_TRAIN_ROWS", "64")))  # fewer only for smoke tests
HELD_OUT_ROWS = range(64, 128)
MAX_LENGTH = 512

GLIBC = {"TUNEFORGE_ALLOCATOR": "system"}  # glibc's malloc, not the tcmalloc the `tuneforge` command takes when installed
CONFIGS: dict[str, dict[str, Any]] = {  # in the order they run: the headline comparison first
    "tuneforge-b8": {"framework": "tuneforge", "batch_size": 8},
    "trl-tuned": {"framework": "trl", "batch_size": 8},
    "trl-bf16": {"framework": "trl", "batch_size": 8, "bf16": True},
    "trl-tuned-packing": {"framework": "trl", "batch_size": 8, "packing": True},
    "trl-defaults": {"framework": "trl", "batch_size": 8, "bf16": True, "gradient_checkpointing": True},
    "tuneforge-b8-fp32": {"framework": "tuneforge", "batch_size": 8, "precision": "fp32"},
    "tuneforge-b8-checkpointing": {"framework": "tuneforge", "batch_size": 8, "gradient_checkpointing": True},
    "tuneforge-full-b8": {"framework": "tuneforge", "batch_size": 8, "method": "full", "learning_rate": 2e-5},
    "tuneforge-b32": {"framework": "tuneforge", "batch_size": 32},
    "tuneforge-b1": {"framework": "tuneforge", "batch_size": 1},
    "tuneforge-b8-padded": {"framework": "tuneforge", "batch_size": 8, "packing": False},
    "tuneforge-b8-whole-batches": {"framework": "tuneforge", "batch_size": 8, "micro_batch_tokens": None},
    # The memory lever of the scale issue: smaller passes (same gradients), their cost in speed.
    "tuneforge-b8-passes-1024": {"framework": "tuneforge", "batch_size": 8, "micro_batch_tokens": 1024},
    "tuneforge-b8-passes-512": {"framework": "tuneforge", "batch_size": 8, "micro_batch_tokens": 512},
    # The allocator lever (bench/results/saved.md): glibc's dynamic mmap threshold keeps freed activations in its heap;
    # a fixed 1 MB threshold hands every large block back to the kernel when freed (the cost: page faults on reuse).
    "tuneforge-b8-mmap-1mb": {"framework": "tuneforge", "batch_size": 8, "env": {"MALLOC_MMAP_THRESHOLD_": "1048576", **GLIBC}},
    "tuneforge-b8-passes-1024-mmap-1mb": {"framework": "tuneforge", "batch_size": 8, "micro_batch_tokens": 1024,
                                          "env": {"MALLOC_MMAP_THRESHOLD_": "1048576", **GLIBC}},
    # The same lever with transparent huge pages for glibc's mmapped blocks (glibc >= 2.35: one page fault per 2 MB
    # instead of per 4 KB), larger thresholds, other allocators (PyTorch's CPU tuning guide: jemalloc, tcmalloc), and
    # the saved-tensor recipes off (their cost in speed against their saving in memory).
    "tuneforge-b8-hugetlb": {"framework": "tuneforge", "batch_size": 8, "env": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", **GLIBC}},
    "tuneforge-b8-mmap-1mb-hugetlb": {"framework": "tuneforge", "batch_size": 8,
                                      "env": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=1048576", **GLIBC}},
    "tuneforge-b8-mmap-4mb": {"framework": "tuneforge", "batch_size": 8, "env": {"MALLOC_MMAP_THRESHOLD_": "4194304", **GLIBC}},
    "tuneforge-b8-jemalloc": {"framework": "tuneforge", "batch_size": 8, "preload": "jemalloc"},
    "tuneforge-b8-tcmalloc": {"framework": "tuneforge", "batch_size": 8, "preload": "tcmalloc_minimal"},
    "tuneforge-b8-glibc": {"framework": "tuneforge", "batch_size": 8, "env": GLIBC},
    "tuneforge-b8-passes-2048-glibc": {"framework": "tuneforge", "batch_size": 8, "micro_batch_tokens": 2048, "env": GLIBC},
    "tuneforge-b8-recipes-off": {"framework": "tuneforge", "batch_size": 8, "saved_recipes": False},
    "tuneforge-b8-tcmalloc-recipes-off": {"framework": "tuneforge", "batch_size": 8, "preload": "tcmalloc_minimal",
                                         "saved_recipes": False},
    "tuneforge-b8-passes-1024-tcmalloc": {"framework": "tuneforge", "batch_size": 8, "micro_batch_tokens": 1024,
                                          "preload": "tcmalloc_minimal"},
    "tuneforge-b8-passes-1024-tcmalloc-recipes-off": {"framework": "tuneforge", "batch_size": 8, "micro_batch_tokens": 1024,
                                                      "preload": "tcmalloc_minimal", "saved_recipes": False},
    "tuneforge-b8-mmap-1mb-recipes-off": {"framework": "tuneforge", "batch_size": 8, "saved_recipes": False,
                                          "env": {"MALLOC_MMAP_THRESHOLD_": "1048576", **GLIBC}},
    # Microsoft Olive 0.13 `olive finetune --torch_dtype float32` (bench/olive_peer.py): Olive's defaults for what the
    # work does not fix (gradient checkpointing on, LoRA dropout 0.05), then without checkpointing, then also dropout 0.
    "olive-fp32": {"framework": "olive", "batch_size": 8},
    # Olive with the base in bf16 (`--torch_dtype bfloat16`), for CPUs that multiply bf16 natively (skipped elsewhere).
    "olive-bf16": {"framework": "olive", "batch_size": 8, "torch_dtype": "bfloat16"},
    "olive-fp32-no-checkpointing": {"framework": "olive", "batch_size": 8, "gradient_checkpointing": False},
    "olive-fp32-no-checkpointing-dropout0": {"framework": "olive", "batch_size": 8, "gradient_checkpointing": False,
                                             "lora_dropout": 0.0},
    # Every other training method on the same work (issue "every training method"), each at its own default rate
    # (`full` is tuneforge-full-b8 above, lora is tuneforge-b8).
    **{f"tuneforge-b8-{method}": {"framework": "tuneforge", "batch_size": 8, "method": method,
                                  # virtual tokens on every row: these two train on padded batches, not packed ones
                                  **({"packing": False} if method in ("prompt_tuning", "prefix_tuning") else {})}
       for method in ("qlora", "dora", "ia3", "adapter", "prompt_tuning", "prefix_tuning", "loha", "lokr")},
}


# ----------------------------------------------------------------------------------------------
# shared by both workers


def read_rows(indices: range) -> list[dict[str, Any]]:
    with open(DATA, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [rows[i] for i in indices]


class StepClock:
    """Harness-side counters: tokens of each batch built, and the time each optimizer step ends.

    Every configuration here runs one batch per optimizer step, so batch i belongs to step i; the
    counts are matched by order because data loaders may build the next batch before a step ends.
    """

    def __init__(self) -> None:
        self.start: float | None = None
        self.step_ends: list[float] = []
        self.step_batches: list[int] = []  # batches built by the end of each step
        self.batch_tokens: list[int] = []
        self.batch_labels: list[int] = []
        self.steal_start = cpu_steal()

    def batch(self, batch: dict[str, Any]) -> None:
        if "attention_mask" in batch and batch["attention_mask"] is not None:
            self.batch_tokens.append(int(batch["attention_mask"].sum()))
        else:
            self.batch_tokens.append(int(batch["input_ids"].numel()))
        labels = batch.get("labels")
        # A label counts when it is a prediction target: shifted, so position 0 never counts.
        self.batch_labels.append(int((labels[..., 1:] != -100).sum()) if labels is not None else 0)

    def step_end(self, batches_so_far: int | None = None) -> None:
        """A step ended; ``batches_so_far`` when a step may run several passes (tuneforge splits
        big batches), else one batch per step."""
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.step_ends.append(time.perf_counter())
        self.step_batches.append(batches_so_far if batches_so_far is not None else len(self.step_ends))

    def _per_step(self, counts: list[int]) -> list[int]:
        starts = [0] + self.step_batches[:-1]
        return [sum(counts[a:b]) for a, b in zip(starts, self.step_batches)]

    @property
    def step_tokens(self) -> list[int]:
        return self._per_step(self.batch_tokens)

    @property
    def step_labels(self) -> list[int]:
        return self._per_step(self.batch_labels)

    def summary(self) -> dict[str, Any]:
        steps = len(self.step_ends)
        timed = range(1, steps)  # step 1 is warm-up
        seconds = self.step_ends[-1] - self.step_ends[0] if steps > 1 else float("nan")
        tokens = sum(self.step_tokens[i] for i in timed)
        durations = sorted(self.step_ends[i] - self.step_ends[i - 1] for i in timed)
        return {
            "steps": steps,
            "timed_steps": len(durations),
            "real_tokens_total": sum(self.step_tokens),
            "label_tokens_total": sum(self.step_labels),
            "timed_seconds": seconds,
            "tokens_per_second": tokens / seconds if steps > 1 else float("nan"),
            "label_tokens_per_second": sum(self.step_labels[i] for i in timed) / seconds if steps > 1 else float("nan"),
            "median_step_seconds": durations[len(durations) // 2] if durations else float("nan"),
            "first_step_seconds": (self.step_ends[0] - self.start) if self.start else float("nan"),
            "cpu_steal_percent": steal_percent(self.steal_start, cpu_steal()),
            "load_average_1min": os.getloadavg()[0],
        }


def peak_memory() -> dict[str, float]:
    import torch

    memory = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        memory["peak_gpu_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        memory["peak_gpu_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    return memory


def held_out_loss(model: Any, tokenizer: Any) -> float:
    """The one scoring function both frameworks' models go through."""
    from tuneforge.data.batching import iter_eval_batches
    from tuneforge.data.examples import TrainingExample
    from tuneforge.data.tokenize import encode_examples
    from tuneforge.model.loss import mean_label_loss

    examples = [TrainingExample(messages=row["messages"]) for row in read_rows(HELD_OUT_ROWS)]
    encoded = encode_examples(tokenizer, examples, MAX_LENGTH)
    return mean_label_loss(model, iter_eval_batches(encoded.items, 8, tokenizer.pad_token_id))["loss"]


def model_dir() -> Path:
    from tuneforge.model.resolve import resolve_model

    return resolve_model("smollm2-135m-instruct")


# ----------------------------------------------------------------------------------------------
# workers


def tuneforge_settings(config: dict[str, Any], output: Path, **overrides: Any) -> Any:
    """The ``FineTuningConfig`` of one tuneforge configuration of the speed work (``overrides`` on top)."""
    from tuneforge.config import make_config

    method = config.get("method", "lora")
    # LoRA's options only for the LoRA family (another method refuses them); a method's own rate unless given.
    lora_options = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0} if method in ("lora", "qlora", "dora") else {}
    rate = config.get("learning_rate", 2e-4 if method == "lora" else None)
    return make_config({
        "model": "smollm2-135m-instruct", "method": method, **lora_options,
        "batch_size": config["batch_size"], "max_length": MAX_LENGTH,
        **({"learning_rate": rate} if rate is not None else {}), "epochs": 1, "warmup_steps": 0, "lr_scheduler": "linear",
        "weight_decay": 0.0, "max_grad_norm": 1.0, "evaluation_strategy": "no", "saving_strategy": "no",
        "evaluate_base": False, "packing": config.get("packing", True), "output": str(output), "seed": 0,
        "gradient_checkpointing": config.get("gradient_checkpointing", False), "precision": config.get("precision", "auto"),
        **({"micro_batch_tokens": config["micro_batch_tokens"]} if "micro_batch_tokens" in config else {}),
        **overrides,
    })


def run_tuneforge(config: dict[str, Any]) -> dict[str, Any]:
    """The default ``tuneforge finetune`` path (FineTuningPipeline), with the harness's counters."""
    import tuneforge.train.accumulation as accumulation
    from tuneforge.data.examples import TrainingData, TrainingExample
    from tuneforge.pipeline import FineTuningPipeline
    from tuneforge.model import saved_recipes
    from tuneforge.runs import load_trained

    saved_recipes.ENABLED = config.get("saved_recipes", True)
    clock = StepClock()
    original = accumulation.training_loss_sums  # the loop's one loss call (the estimate's steps go through it too)

    def counted(loss_sums: Any, model: Any, batch: dict[str, Any]) -> Any:
        clock.batch(batch)
        return original(loss_sums, model, batch)

    accumulation.training_loss_sums = counted

    ready: dict[str, Any] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "model.ready":
            ready.update(event)
        elif event["type"] == "train.estimate":
            ready["estimate"] = event
        elif event["type"] == "train.started":
            clock.batch_tokens.clear()  # batches of the estimate's timed steps are not training's
            clock.batch_labels.clear()
            clock.start = time.perf_counter()
            clock.steal_start = cpu_steal()
        elif event["type"] == "train.step":
            clock.step_end(len(clock.batch_tokens))

    examples = [TrainingExample(messages=row["messages"]) for row in read_rows(TRAIN_ROWS)]
    out = Path(tempfile.mkdtemp(prefix="tf-bench-")) / "run"
    settings = tuneforge_settings(config, out)
    started = time.perf_counter()
    result = FineTuningPipeline(settings, on_event=on_event).train(TrainingData(examples=examples))
    wall = time.perf_counter() - started
    memory = peak_memory()
    model, tokenizer, _ = load_trained(out)
    estimate = ready.get("estimate") or {}
    return {**clock.summary(), **memory, "wall_seconds": wall, "precision": ready.get("precision"),
            "held_out_loss": held_out_loss(model, tokenizer), "estimated_train_seconds": estimate.get("seconds"),
            "train_seconds": result.train.get("train_seconds")}


def run_trl(config: dict[str, Any]) -> dict[str, Any]:
    """TRL's SFTTrainer: tuned for CPU (bf16 off, gradient checkpointing off), or as ``config`` says; no workers."""
    rows = read_rows(TRAIN_ROWS)
    # Prompt/completion form, so TRL takes the loss on the answers only, as tuneforge does.
    dataset = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]
    trainer, measured = train_trl(config, model_dir(), dataset, MAX_LENGTH)
    return {**measured, "held_out_loss": held_out_loss(trainer.model, trainer.processing_class)}


def train_trl(config: dict[str, Any], path: Path, rows: list[dict[str, Any]], max_length: int,
              max_steps: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Train ``path`` with TRL's SFTTrainer (LoRA r16 alpha 32 on all linear layers) on ``rows`` (prompt/completion
    or ``text`` rows, as TRL reads them) with the harness's counters; the trainer and the measured figures.

    Used by the speed bench and by the scale bench's ``trl:*`` rows (bench/scale_bench.py, a few ``max_steps``)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    clock = StepClock()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    dataset = Dataset.from_list(rows)
    gpu = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"), per_device_train_batch_size=config["batch_size"],
        num_train_epochs=1, max_steps=max_steps or -1, learning_rate=2e-4, lr_scheduler_type="linear", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, max_length=max_length, bf16=config.get("bf16", gpu),
        gradient_checkpointing=config.get("gradient_checkpointing", False),
        packing=config.get("packing", False), dataloader_num_workers=0, logging_steps=1000, save_strategy="no",
        eval_strategy="no", report_to="none", seed=0, use_cpu=not gpu,
    )
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)

    collate = trainer.data_collator

    def counted(features: list[Any]) -> Any:
        batch = collate(features)
        clock.batch(batch)
        return batch

    trainer.data_collator = counted

    class Clock(TrainerCallback):
        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            clock.start = time.perf_counter()
            clock.steal_start = cpu_steal()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            clock.step_end()

    trainer.add_callback(Clock())
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    memory = peak_memory()
    return trainer, {**clock.summary(), **memory, "wall_seconds": wall, "precision": "bf16" if args.bf16 else "fp32"}


def run_untrained() -> dict[str, Any]:
    from tuneforge.model.load import load_model, load_tokenizer

    path = model_dir()
    return {"held_out_loss": held_out_loss(load_model(path), load_tokenizer(path))}


# ----------------------------------------------------------------------------------------------
# the harness


def flops_per_token(method: str, config_path: Path, lengths: list[int], lora_params: int) -> float:
    """PaLM-convention model FLOPs per token (PERFORMANCE.md §7.1): 4·N_lin (+2·N_lin full) + 12·L·d·T_eff + 6·N_lora."""
    config = json.loads(config_path.read_text())
    hidden, layers, inter = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = hidden // heads
    per_layer = hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + heads * head_dim * hidden + 3 * hidden * inter
    n_lin = layers * per_layer + hidden * config["vocab_size"]  # lm_head counted once (tied embeddings)
    t_eff = sum(n * n for n in lengths) / sum(lengths)
    attention = 12 * layers * heads * head_dim * t_eff
    if method == "full":
        return 6 * n_lin + attention
    return 4 * n_lin + attention + 6 * lora_params


def config_precision(config: dict[str, Any]) -> str:
    """The format a configuration asks to compute in: ``bf16`` (TRL's ``bf16: True``, tuneforge's ``precision: bf16``),
    else what it runs by default (``auto`` for tuneforge: bf16 only where the hardware has it, so never emulated)."""
    if config.get("bf16") or config.get("precision") == "bf16" or config.get("torch_dtype") == "bfloat16":
        return "bf16"
    return config.get("precision", "auto" if config["framework"] == "tuneforge" else "fp32")


def bf16_skip_reason(config: dict[str, Any], native_bf16: bool, asked: bool, peaks: dict[str, float]) -> str | None:
    """Why a bf16 configuration is left out on this machine (None when it runs).

    Without native bf16 (no AMX/AVX512-BF16) every bf16 matmul is emulated, over a hundred times slower than fp32
    here, so one such configuration takes hours; it still runs when named with ``--only`` (``asked``)."""
    if config_precision(config) != "bf16" or native_bf16 or asked:
        return None
    return (f"bf16 on a CPU without native bf16 (AMX/AVX512-BF16): matmul {peaks.get('bf16', float('nan')):.1f} "
            f"against fp32 {peaks.get('fp32', float('nan')):.0f} GFLOP/s measured here, so it would take hours; "
            "run it with `--only NAME`")


def run_peer_twice(name: str) -> dict[str, Any]:
    """Olive's peak RSS moved between runs of the same configuration (3,828 and 7,846 MiB, 2026-12-01): run it twice
    and keep the run with the lower peak (the figure least favourable to tuneforge), both peaks recorded."""
    runs = [run_worker(name) for _ in range(2)]
    done = [run for run in runs if "peak_rss_mb" in run]
    if not done:
        return runs[-1]
    kept = min(done, key=lambda run: run["peak_rss_mb"])
    return {**kept, "peak_rss_mb_runs": [round(run["peak_rss_mb"], 1) for run in done]}


def preloaded_library(name: str) -> str | None:
    """The path of the shared library ``lib<name>.so*`` (an allocator to LD_PRELOAD), None when not installed."""
    from tuneforge.core.allocator import find_shared_library

    return find_shared_library(f"lib{name}.so")


def run_worker(name: str) -> dict[str, Any]:
    """Run one configuration in a fresh process; return its JSON result."""
    command = [sys.executable, __file__, "--worker", name]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false",
           **CONFIGS.get(name, {}).get("env", {})}  # read by glibc when the process starts, so set for the child
    config = CONFIGS.get(name, {})
    preload = config.get("preload")
    if config.get("framework") == "tuneforge" and not preload:
        from tuneforge.core.allocator import allocator_environment

        env.update(allocator_environment(env))  # the allocator the `tuneforge` command trains with (tcmalloc when installed)
    if preload:
        library = preloaded_library(preload)
        if library is None:
            return {"skipped": f"lib{preload} is not installed (Debian: apt-get install lib{preload.split('_')[0]}*)"}
        env["LD_PRELOAD"] = library
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr or done.stdout)[-2000:]}
    return json.loads(lines[-1])


def token_lengths() -> list[int]:
    from tuneforge.data.examples import TrainingExample
    from tuneforge.data.tokenize import encode_examples
    from tuneforge.model.load import load_tokenizer

    tokenizer = load_tokenizer(model_dir())
    encoded = encode_examples(tokenizer, [TrainingExample(messages=r["messages"]) for r in read_rows(TRAIN_ROWS)], MAX_LENGTH)
    return [len(item.input_ids) for item in encoded.items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", help=f"configurations to run (default all): {', '.join(CONFIGS)}")
    parser.add_argument("--rerun", action="store_true", help="re-measure the --only configurations and keep the other "
                        "results of bench/results/speed.json (for a configuration that ran while the VM was contended)")
    parser.add_argument("--no-write", action="store_true", help="print results; write neither speed.json nor BENCHMARKS.md")
    parser.add_argument("--results", default="speed.json", help="the file under bench/results/ to write (another "
                        "machine's run goes beside the first, e.g. speed-amd-epyc.json; BENCHMARKS.md shows each)")
    args = parser.parse_args()
    if args.worker:
        if args.worker == "untrained":
            result = run_untrained()
        else:
            config = CONFIGS[args.worker]
            workers = {"tuneforge": run_tuneforge, "trl": run_trl, "olive": run_olive}
            result = workers[config["framework"]](config)
            if config["framework"] != "olive":  # Olive trains in a process of its own venv, with glibc's malloc
                from tuneforge.core.allocator import loaded_allocator

                result["allocator"] = loaded_allocator()
        print(json.dumps(result))
        return

    names = args.only or list(CONFIGS)
    report: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    # Without native bf16 a bf16 multiply is emulated and very slow: a few repeats are enough to show it.
    repeats = {"fp32": 20, "bf16": 20 if report["machine"]["native_bf16"] else 2}
    report["matmul_peak_gflops"] = {name: matmul_peak_gflops(name, repeats[name]) for name in ("fp32", "bf16")}
    lengths = token_lengths()
    report["work"] = {"rows": len(lengths), "real_tokens": sum(lengths), "max_length": MAX_LENGTH}
    print(f"machine: {report['machine']}\nmatmul peaks (GFLOP/s): {report['matmul_peak_gflops']}, work: {report['work']}", flush=True)
    report["untrained"] = run_worker("untrained")
    lora_params = 4_884_480  # SmolLM2-135M, r=16 on all 7 linear layers of 30 blocks (printed by tuneforge)
    config_path = model_dir() / "config.json"
    report["flops_per_token"] = {method: flops_per_token(method, config_path, lengths, lora_params) for method in ("lora", "full")}
    previous = RESULTS / args.results
    kept = json.loads(previous.read_text())["results"] if args.rerun and previous.is_file() else {}
    report["results"] = results = dict(kept)
    if kept:  # the rows re-measured by every --rerun since the last full run, the earlier ones first
        before = json.loads(previous.read_text()).get("rerun") or {}
        earlier = [name for name in before.get("configurations", []) if name not in names]
        report["rerun"] = {"configurations": earlier + list(names), "date": report["date"],
                           "first_date": before.get("first_date") or before.get("date") or report["date"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in names:
        print(f"running {name} ...", flush=True)
        config = CONFIGS[name]
        skipped = (olive_skip_reason() if config["framework"] == "olive" else None) or bf16_skip_reason(
            config, report["machine"]["native_bf16"], asked=name in (args.only or []), peaks=report["matmul_peak_gflops"])
        results[name] = {"skipped": skipped} if skipped else (
            run_peer_twice(name) if config["framework"] == "olive" else run_worker(name))
        keys = ("tokens_per_second", "peak_rss_mb", "held_out_loss", "precision", "cpu_steal_percent", "error", "skipped")
        print("  " + json.dumps({key: results[name][key] for key in keys if key in results[name]})[-600:], flush=True)
        if not args.no_write:
            # Written after every configuration, so a long run that is cut short still leaves its figures.
            from bench.write_benchmarks import write_benchmarks

            (RESULTS / args.results).write_text(json.dumps(report, indent=2))
            write_benchmarks()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
