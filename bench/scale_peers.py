"""The scale bench's peers: Microsoft Olive's ``olive finetune`` and TRL's SFTTrainer on the scale bench's own work.

A peer row's key is ``FRAMEWORK:MODEL:METHOD:LENGTH`` (``olive:smollm2-135m:lora:512``) beside tuneforge's
``MODEL:METHOD:LENGTH``. It trains the same random-weight model, on the same synthetic rows, the same STEPS steps
of the same batch × max_length tokens, in a fresh process, timed by the same kind of clock (the end of every
optimizer step; the first step is a warm-up). Neither peer is re-implemented here: Olive runs through
bench/olive_peer.py (its own venv, its hooked step clock), TRL through the speed bench's ``train_trl``.

- Olive: LoRA r16 alpha 32 on the same seven linear layers, fp32, ``--text_field text`` (the synthetic rows as
  plain text, like tuneforge's), ``--max_samples`` batch × steps and ``--max_steps`` steps; Olive's own defaults
  for the rest: its rows are the text joined and cut into rows of exactly max_length tokens, loss on all tokens,
  gradient checkpointing on, LoRA dropout 0.05. Peak RSS is that of Olive's process.
- TRL: SFTTrainer fp32, gradient checkpointing off (the speed bench's best TRL configuration on an AVX2 CPU),
  LoRA r16 alpha 32 on all linear layers, no packing, each row cut at max_length.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

PEER_FRAMEWORKS = ("olive", "trl")
# The sizes the peers run at by default; why not the others: left_out_text().
PEER_MODELS = ("smollm2-135m", "smollm2-360m", "qwen2.5-0.5b", "llama-3.2-1b", "qwen2.5-1.5b", "smollm2-1.7b")
PEERS = [(framework, model, "lora", 512) for model in PEER_MODELS for framework in PEER_FRAMEWORKS]


def parse_key(key: str) -> tuple[str, str, str, int]:
    """``MODEL:METHOD:LENGTH`` (tuneforge) or ``FRAMEWORK:MODEL:METHOD:LENGTH`` (a peer) -> (framework, model,
    method, length); ValueError naming the key and the expected forms otherwise."""
    parts = key.split(":")
    framework = parts.pop(0) if len(parts) == 4 else "tuneforge"
    if len(parts) != 3 or not parts[2].isdigit() or framework not in ("tuneforge", *PEER_FRAMEWORKS):
        raise ValueError(f"{key!r}: expected MODEL:METHOD:LENGTH or {'|'.join(PEER_FRAMEWORKS)}:MODEL:METHOD:LENGTH "
                         "(e.g. smollm2-135m:lora:512, olive:smollm2-135m:lora:512)")
    model, method, length = parts
    if framework != "tuneforge" and method != "lora":
        raise ValueError(f"{key!r}: the peers run LoRA only (Olive's venv, `make setup-olive`, has no bitsandbytes)")
    return framework, model, method, int(length)


def peer_key(framework: str, model: str, method: str, length: int) -> str:
    return f"{framework}:{model}:{method}:{length}"


def skip_reason(framework: str) -> str | None:
    """Why a peer cannot run here (None when it can)."""
    if framework == "olive":
        from olive_peer import skip_reason as olive_skip_reason

        return olive_skip_reason()
    if importlib.util.find_spec("trl") is None:
        return "TRL is not installed: install tuneforge's `bench` extra (`make bench` does)"
    return None


def train_peer(framework: str, path: Path, name: str, rows: list[dict[str, Any]], batch: int, steps: int,
               max_length: int) -> dict[str, Any]:
    """Train ``steps`` steps of ``batch`` rows with the peer; its measured figures (StepClock's summary, peak RSS,
    what the framework chose) or ``{"error": ...}``. Runs in the fresh process of one row."""
    if framework == "olive":
        from olive_peer import train_with_olive

        work = Path(tempfile.mkdtemp(prefix="olive-scale-"))
        try:
            config = {"batch_size": batch, "text_field": "text", "max_samples": batch * steps, "max_steps": steps}
            return train_with_olive(config, path, rows, work, max_length, f"<random {name}>")
        finally:
            shutil.rmtree(work, ignore_errors=True)  # Olive copies the base model in there
    import trl
    from speed_bench import train_trl

    _, measured = train_trl({"batch_size": batch}, path, rows, max_length, max_steps=steps)
    return {**measured, "trl": trl.__version__, "gradient_checkpointing": False, "packing": False}


def peer_row(framework: str, measured: dict[str, Any]) -> dict[str, Any]:
    """The scale table's fields from a peer's measured figures (the row's identity and machine are added by the caller)."""
    if "error" in measured:
        return {"error": measured["error"]}
    timed = measured.get("timed_steps") or 0
    kept = ("olive", "olive_command", "packed_rows", "gradient_checkpointing", "lora_dropout", "trl", "packing",
            "real_tokens_total", "cpu_steal_percent")
    return {
        "timed_steps": timed, "precision": measured.get("precision"),
        "tokens_per_second": round(measured["tokens_per_second"], 2) if timed else None,
        "seconds_per_step": round(measured["timed_seconds"] / timed, 2) if timed else None,
        "peak_rss_mb": round(measured["peak_rss_mb"], 1), "wall_seconds": round(measured["wall_seconds"], 1),
        "steal_percent": measured.get("cpu_steal_percent"),
        **{key: measured[key] for key in kept if key in measured and key != "cpu_steal_percent"},
    }


def gb_of_mib(mib: float) -> float:
    """A peak RSS as recorded (``ru_maxrss`` / 1024: MiB) in GB of 10⁹ bytes, the planner's and the budgets' unit."""
    return mib * 2**20 / 1e9


def _gb(mib: float | None) -> str:
    return f"{gb_of_mib(mib):.2f}" if mib else "—"


def peer_lines(rows: list[dict[str, Any]], key_of: Callable[[dict[str, Any]], str]) -> list[str]:
    """The markdown of the peer rows, each beside tuneforge's row of the same model:method:length with the ratios."""
    peers = [row for row in rows if row.get("framework", "tuneforge") != "tuneforge"]
    if not peers:
        return []
    ours = {key_of(row): row for row in rows if row.get("framework", "tuneforge") == "tuneforge"}
    lines = [
        "### Beside Microsoft Olive and TRL (the same models, rows and steps)", "",
        "Reproduce: `.venv/bin/python bench/scale_bench.py --only olive:smollm2-135m:lora:512 trl:smollm2-135m:lora:512` "
        "(Olive from its own venv, `make setup-olive`; TRL from the `bench` extra). Each peer trains the same random-weight "
        "model on the same synthetic rows for the same steps of batch × max_length tokens, in a fresh process, timed by "
        "the harness's clock at every optimizer step's end (the first step left out). **Olive** 0.13 `olive finetune`: "
        "LoRA r16 alpha 32 on the same seven linear layers, `--torch_dtype float32`, `--text_field text`, and Olive's "
        "defaults otherwise: it joins the rows and cuts them into rows of exactly max_length tokens, takes the loss on "
        "all tokens, keeps gradient checkpointing on and LoRA dropout 0.05 (bench/olive_peer.py). **TRL** SFTTrainer: "
        "fp32, gradient checkpointing off, no packing, LoRA r16 alpha 32 on all linear layers. Peak RSS is that of "
        "the process that trained. *Speed* and *memory* are tuneforge's figure ÷ the peer's (speed above 1: tuneforge "
        "faster; memory below 1: tuneforge smaller). *Load* is the load average when the peer's row and when tuneforge's "
        "row ended (the machine is shared): speed ratios between rows measured under different loads are rough.", "",
        "| model | method | max_length | tool | batch | tokens/s | s/step | peak RSS GB | load | tuneforge tokens/s | "
        "tuneforge peak RSS GB | speed | memory |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in peers:
        head = f"| {row['model']} | {row['method']} | {row['max_length']} | {row['framework']} |"
        if "skipped" in row or "error" in row:
            why = row.get("skipped") or (row["error"].strip().splitlines() or ["?"])[-1][:160]
            lines.append(f"{head} | {'skipped' if 'skipped' in row else 'failed'}: {why} | | | | | | | |")
            continue
        tf = ours.get(f"{row['model']}:{row['method']}:{row['max_length']}", {})
        speed = (f"{tf['tokens_per_second'] / row['tokens_per_second']:.2f}×"
                 if tf.get("tokens_per_second") and row.get("tokens_per_second") else "—")
        memory = f"{tf['peak_rss_mb'] / row['peak_rss_mb']:.2f}×" if tf.get("peak_rss_mb") and row.get("peak_rss_mb") else "—"
        lines.append(f"{head} {row['batch_size']} | {row['tokens_per_second'] or 0:,.1f} | {row['seconds_per_step'] or 0:,.1f} | "
                     f"{_gb(row['peak_rss_mb'])} | {row.get('load_average', '—')} / {tf.get('load_average', '—')} | "
                     f"{tf.get('tokens_per_second') or 0:,.1f} | {_gb(tf.get('peak_rss_mb'))} | {speed} | {memory} |")
    command = next((row["olive_command"] for row in peers if row.get("olive_command")), None)
    if command:
        lines += ["", f"Olive's command (one row): `{command}`."]
    return lines + ["", left_out_text(rows)]


def left_out_text(rows: list[dict[str, Any]]) -> str:
    """What the peers do not run by default and why, with what a peer's row cost against tuneforge's here."""
    ours = {(r["model"], r["method"], r["max_length"]): r for r in rows
            if r.get("framework", "tuneforge") == "tuneforge" and r.get("wall_seconds") and not r.get("memory_limit")}
    ratios = [r["wall_seconds"] / ours[(r["model"], r["method"], r["max_length"])]["wall_seconds"] for r in rows
              if r.get("framework", "tuneforge") != "tuneforge" and r.get("wall_seconds")
              and (r["model"], r["method"], r["max_length"]) in ours]
    cost = (f" (a peer's row took {min(ratios):.1f}–{max(ratios):.1f}× the wall time of tuneforge's row of the same "
            "key here, and each length would add two such rows per model)") if ratios else ""
    return ("The peers run by default at every model size (" + ", ".join(PEER_MODELS) + ") at 512 tokens, LoRA only. "
            "Left out: the other lengths, for the time they take" + cost + ". QLoRA is left out: Olive's venv "
            "(`make setup-olive`) has its `lora` extra only, without bitsandbytes. Any key runs on request: "
            "`--only olive:MODEL:lora:LENGTH trl:MODEL:lora:LENGTH`.")
