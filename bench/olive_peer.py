"""Microsoft Olive's ``olive finetune`` as a peer of the speed bench, run from its own venv (``make setup-olive``).

Two halves in one file, because both must build the same command:

- ``train_with_olive(...)`` runs in tuneforge's venv: it runs Olive on a jsonl file in a child process
  (``.bench-venvs/olive``) and reads that process tree's peak RSS (``ru_maxrss`` of the children). Two callers:
  ``run_olive(config)``, the speed bench's worker for an ``olive-*`` configuration, which then loads the adapter
  Olive saved with PEFT and scores it with the bench's shared held-out loss; and the scale bench's ``olive:*`` rows
  (bench/scale_bench.py), which train a few steps of synthetic text rows (``--text_field``) and score nothing.
- ``python bench/olive_peer.py <olive CLI arguments>`` runs *inside* Olive's venv: it hooks ``transformers.Trainer``
  (which Olive's LoRA pass constructs) with the same counters TRL gets in the speed bench, the collator's batches and
  a step-end callback, then calls Olive's own CLI entry point with the arguments unchanged, and prints the
  counters as one JSON line. The step clock is the harness's, not read from Olive's logs.

The closest ``olive finetune`` gets to the speed work, and what it forces (in every configuration):
- it *packs*: the ``join`` strategy concatenates every chat-templated row (joined by "\\n\\n") and cuts the stream
  into rows of exactly ``--max_seq_len`` tokens, dropping the tail shorter than one row, and attends across row
  boundaries (no per-document mask);
- it takes the loss on *all* tokens (labels = input ids), not on the answers only;
- LoRA dropout is 0.05 (the CLI has no flag for it): the ``-dropout0`` configuration runs the same workflow from
  Olive's own saved config (``olive finetune --dry_run`` then ``olive run --config``) with ``lora_dropout: 0``;
- gradient checkpointing is Olive's default (on); ``--gradient_checkpointing False`` turns it off.
Fixed by flags to match the work: r 16, alpha 32, the 7 linear projections of every block (Olive's default for
llama is q/v only), fp32, batch 8, lr 2e-4 linear without warm-up (Olive's default: constant; its 3 % warm-up
ratio is dropped under transformers 5, which has no warmup_ratio), one
epoch (the Trainer's default is 3), seed 0.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OLIVE_VENV = Path(os.environ.get("BENCH_OLIVE_VENV", ROOT / ".bench-venvs" / "olive"))
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def olive_python(venv: Path = OLIVE_VENV) -> Path | None:
    """The Olive venv's interpreter, or None where ``make setup-olive`` has not made it."""
    python = venv / "bin" / "python"
    return python if python.is_file() and (venv / "bin" / "olive").is_file() else None


def skip_reason(venv: Path = OLIVE_VENV) -> str | None:
    """Why the Olive configurations cannot run here (None when they can)."""
    if olive_python(venv) is None:
        return f"no Olive venv at {venv}: run `make setup-olive` (olive-ai 0.13.0 from PyPI, about 2-3 minutes)"
    return None


def finetune_args(config: dict[str, Any], model: Path, data_file: Path, output: Path, max_length: int) -> list[str]:
    """The ``olive`` command line (after ``olive``) that trains the speed work as closely as Olive allows.

    ``config``: ``batch_size``; optional ``torch_dtype`` (Olive's ``--torch_dtype``: float32 unless given),
    ``gradient_checkpointing`` (Olive's default: on), ``text_field`` (rows of
    plain text in that field instead of chat-templated ``messages``), ``max_samples`` (packed rows; default no cap)
    and ``max_steps`` (optimizer steps; default one epoch).
    """
    text = ["--text_field", config["text_field"]] if config.get("text_field") else ["--use_chat_template"]
    args = [
        "finetune", "-m", str(model), "-o", str(output), "--method", "lora",
        "--lora_r", "16", "--lora_alpha", "32", "--target_modules", ",".join(TARGET_MODULES),
        "--torch_dtype", config.get("torch_dtype", "float32"),
        "-d", "json", "--data_files", str(data_file), "--train_split", "train", *text,
        # Olive's default is 256 packed rows: no cap unless the caller asks for one
        "--max_seq_len", str(max_length), "--max_samples", str(config.get("max_samples", 100000)),
        "--disable_telemetry", "--log_level", "2",
        # transformers.TrainingArguments, passed through by Olive
        "--per_device_train_batch_size", str(config["batch_size"]), "--num_train_epochs", "1",
        "--learning_rate", "2e-4", "--lr_scheduler_type", "linear", "--warmup_steps", "0", "--weight_decay", "0",
        "--max_grad_norm", "1.0", "--seed", "0", "--save_strategy", "no", "--logging_steps", "1000",
        "--dataloader_num_workers", "0",
    ]
    if not config.get("gradient_checkpointing", True):
        args += ["--gradient_checkpointing", "False"]
    if config.get("max_steps"):
        args += ["--max_steps", str(config["max_steps"])]
    return args


def olive_command(config: dict[str, Any], model: Path, data_file: Path, output: Path, max_length: int) -> list[str]:
    """This file's hooked runner in Olive's venv, with the ``olive`` arguments (and the dropout override, if any)."""
    python = olive_python() or OLIVE_VENV / "bin" / "python"
    dropout = ["--lora-dropout", str(config["lora_dropout"])] if "lora_dropout" in config else []
    return [str(python), str(Path(__file__).resolve()), *dropout, *finetune_args(config, model, data_file, output, max_length)]


def run_olive(config: dict[str, Any]) -> dict[str, Any]:
    """The speed bench's worker for an Olive configuration (runs in tuneforge's venv, Olive in a child process)."""
    work = Path(tempfile.mkdtemp(prefix="olive-bench-"))
    try:
        return _train_and_score(config, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # Olive copies the base model (0.5 GB) and its cache in there


def train_with_olive(config: dict[str, Any], model: Path, rows: list[dict[str, Any]], work: Path, max_length: int,
                     model_label: str) -> dict[str, Any]:
    """Train ``model`` on ``rows`` with Olive's hooked CLI in a child process, ``work`` as its working directory.

    Returns the harness's counters (StepClock's summary, what Olive's Trainer was given), the child's peak RSS, the
    wall time and the command as a person would type it (``model_label`` for the model's path), or ``{"error": ...}``
    with the end of Olive's output. Call it before this process loads anything big: the peak RSS read is that of
    the largest child so far.
    """
    data_file = work / "train.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    command = olive_command(config, model, data_file, work / "out", max_length)
    started = time.perf_counter()
    # cwd: Olive keeps its cache (.olive-cache) in the working directory
    done = subprocess.run(command, capture_output=True, text=True, cwd=work, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"olive"')]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr or done.stdout)[-2000:]}
    return {**json.loads(lines[-1]), "peak_rss_mb": peak_rss_mb, "wall_seconds": wall,
            "precision": "bf16" if config.get("torch_dtype") == "bfloat16" else "fp32",
            "timing": "harness step clock hooked into Olive's transformers.Trainer (first step left out)",
            "olive_command": shown_command(command, model, work, model_label)}


def _train_and_score(config: dict[str, Any], work: Path) -> dict[str, Any]:
    from peft import PeftModel
    from speed_bench import MAX_LENGTH, TRAIN_ROWS, held_out_loss, model_dir, read_rows
    from tuneforge.model.load import load_model, load_tokenizer

    path = model_dir()
    rows = [{"messages": r["messages"]} for r in read_rows(TRAIN_ROWS)]
    result = train_with_olive(config, path, rows, work, MAX_LENGTH, "<smollm2-135m-instruct>")
    if "error" in result:
        return result
    adapters = sorted(work.glob("out/**/adapter_config.json"))
    if not adapters:
        return {"error": f"Olive saved no PEFT adapter under {work / 'out'}"}
    model = PeftModel.from_pretrained(load_model(path), adapters[0].parent)
    return {**result, "held_out_loss": held_out_loss(model, load_tokenizer(path))}


def shown_command(command: list[str], model: Path, work: Path, model_label: str = "<smollm2-135m-instruct>") -> str:
    """The ``olive`` part of ``command`` as a person would type it, this run's temporary paths named instead."""
    text = "olive " + " ".join(command[command.index("finetune"):])
    return text.replace(str(model), model_label).replace(str(work), "<work>")


# ----------------------------------------------------------------------------------------------
# inside Olive's venv


def install_hooks(clock: Any, seen: dict[str, Any]) -> None:
    """Count every batch Olive's Trainer trains on and stamp every optimizer step's end."""
    import transformers

    original_init = transformers.Trainer.__init__

    class Clock(transformers.TrainerCallback):
        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            from bench_common import cpu_steal

            clock.start = time.perf_counter()
            clock.steal_start = cpu_steal()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            clock.step_end()

    def hooked_init(trainer: Any, *args: Any, **kwargs: Any) -> None:
        collate = kwargs["data_collator"]

        def counted(features: list[Any]) -> Any:
            batch = collate(features)
            clock.batch(batch)
            return batch

        kwargs["data_collator"] = counted
        original_init(trainer, *args, **kwargs)
        trainer.add_callback(Clock())
        seen["packed_rows"] = len(kwargs["train_dataset"])
        seen["gradient_checkpointing"] = trainer.args.gradient_checkpointing
        seen["lora_dropout"] = next(iter(trainer.model.peft_config.values())).lora_dropout

    transformers.Trainer.__init__ = hooked_init


def run_hooked(argv: list[str]) -> dict[str, Any]:
    """Olive's CLI with ``argv``; with ``--lora-dropout P`` first: its dry run's config, edited, through ``olive run``."""
    import olive
    from olive.cli.launcher import main as olive_main
    from speed_bench import StepClock

    clock, seen = StepClock(), {}
    install_hooks(clock, seen)
    if argv[0] == "--lora-dropout":
        dropout, argv = float(argv[1]), argv[2:]
        olive_main([*argv, "--dry_run"], called_as_console_script=False)
        output = Path(argv[argv.index("-o") + 1])
        config_file = output / "config.json"
        config = json.loads(config_file.read_text())
        config["passes"]["f"]["lora_dropout"] = dropout
        config_file.write_text(json.dumps(config, indent=2))
        olive_main(["run", "--config", str(config_file)], called_as_console_script=False)
    else:
        olive_main(argv, called_as_console_script=False)
    summary = clock.summary()
    return {"olive": olive.__version__, **summary, **seen,
            "real_tokens_per_packed_row": summary["real_tokens_total"] / max(seen.get("packed_rows", 1), 1)}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(run_hooked(sys.argv[1:])))
