"""The Olive peer of the speed bench: the command it builds and its skip without Olive's venv (no Olive needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import olive_peer  # noqa: E402
import speed_bench  # noqa: E402


def _value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_finetune_args_fix_the_speed_work(tmp_path: Path) -> None:
    args = olive_peer.finetune_args({"batch_size": 8}, tmp_path / "model", tmp_path / "train.jsonl", tmp_path / "out", 512)
    assert args[0] == "finetune"
    # Olive's own defaults differ (r 64, alpha 16, q/v only, bf16, constant lr, 3 epochs): each is overridden
    expected = {"--lora_r": "16", "--lora_alpha": "32", "--torch_dtype": "float32", "--max_seq_len": "512",
                "--per_device_train_batch_size": "8", "--num_train_epochs": "1", "--learning_rate": "2e-4",
                "--lr_scheduler_type": "linear", "--warmup_steps": "0", "--seed": "0", "--data_files": str(tmp_path / "train.jsonl")}
    assert {flag: _value(args, flag) for flag in expected} == expected
    assert set(_value(args, "--target_modules").split(",")) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert "--use_chat_template" in args and "--gradient_checkpointing" not in args  # Olive's default: on


def test_no_checkpointing_and_dropout_overrides(tmp_path: Path) -> None:
    config = speed_bench.CONFIGS["olive-fp32-no-checkpointing-dropout0"]
    command = olive_peer.olive_command(config, tmp_path / "m", tmp_path / "d.jsonl", tmp_path / "o", 512)
    assert command[1].endswith("olive_peer.py")
    assert command[2:4] == ["--lora-dropout", "0.0"] and command[4] == "finetune"
    assert _value(command, "--gradient_checkpointing") == "False"


def test_missing_venv_is_a_skip_with_the_fix(tmp_path: Path) -> None:
    assert olive_peer.olive_python(tmp_path) is None
    reason = olive_peer.skip_reason(tmp_path)
    assert reason is not None and "make setup-olive" in reason


def test_shown_command_names_no_temporary_path(tmp_path: Path) -> None:
    work, model = tmp_path / "work", tmp_path / "model"
    command = olive_peer.olive_command({"batch_size": 8}, model, work / "train.jsonl", work / "out", 512)
    shown = olive_peer.shown_command(command, model, work)
    assert shown.startswith("olive finetune -m <smollm2-135m-instruct> -o <work>/out")
    assert str(tmp_path) not in shown


def _report(results: dict) -> dict:
    return {"machine": {"cpu": "x", "cores": 2, "memory_gb": 1, "python": "3", "torch": "t", "threads": 1,
                        "transformers": "t", "peft": "p", "trl": "r"},
            "date": "d", "matmul_peak_gflops": {"fp32": 100.0}, "flops_per_token": {"lora": 6e8, "full": 9e8},
            "work": {"rows": 64, "real_tokens": 1000}, "results": results}


def test_benchmarks_show_a_skipped_olive_row() -> None:
    from bench.write_benchmarks import speed_section

    assert "skipped: no Olive venv" in speed_section(_report({"olive-fp32": {"skipped": "no Olive venv"}}))


def test_benchmarks_compare_tuneforge_with_a_measured_olive_row() -> None:
    from bench.write_benchmarks import speed_section

    row = {"tokens_per_second": 50.0, "label_tokens_per_second": 50.0, "median_step_seconds": 80.0, "peak_rss_mb": 4000.0,
           "held_out_loss": 2.9, "precision": "fp32", "cpu_steal_percent": 0.0, "olive": "0.13.0", "packed_rows": 18,
           "real_tokens_per_packed_row": 512.0, "olive_command": "olive finetune -m <smollm2-135m-instruct>"}
    ours = {**row, "tokens_per_second": 100.0, "peak_rss_mb": 2000.0}
    text = speed_section(_report({"tuneforge-b8": ours, "olive-fp32": row}))
    assert "18 rows of 512 tokens" in text and "`olive finetune -m <smollm2-135m-instruct>`" in text
    assert "| 2.00× | 0.50× |" in text  # speed and memory against Olive's row
