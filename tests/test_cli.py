"""The command line: exit codes 0/1/2, clear messages without tracebacks, --json output, run directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import make_rows, write_jsonl
from tuneforge.cli.main import main

TUNEFORGE = Path(sys.executable).parent / "tuneforge"


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_subprocess(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "COLUMNS": "200"}
    return subprocess.run([str(TUNEFORGE), *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


# ---------------------------------------------------------------- finetune


def test_finetune_writes_the_run_directory(capsys, tiny_model_dir, session_dataset, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "finetune", "--data", session_dataset, "--model", tiny_model_dir, "--epochs", "1",
                             "--output", run_dir)
    assert code == 0, err
    for name in ("config.yaml", "events.jsonl", "results.json", "adapter/adapter_model.safetensors"):
        assert (run_dir / name).is_file(), name
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "succeeded"
    assert results["train"]["epochs"] == 1
    assert str(run_dir) in out  # where the run went
    assert "base" in out and "tuned" in out and "loss" in out
    assert "Traceback" not in err


def test_finetune_prints_leakage_between_test_and_training_files(capsys, tiny_model_dir, tmp_path):
    from helpers import make_rows, write_jsonl

    rows = make_rows(40)
    train = write_jsonl(tmp_path / "train.jsonl", rows[:32])
    test = write_jsonl(tmp_path / "test.jsonl", rows[32:] + [rows[3]])  # the last test row is training row 4
    code, out, err = run_cli(capsys, "finetune", "--data", train, "--test-data", test, "--model", tiny_model_dir,
                             "--epochs", "1", "--estimate-steps", "1", "--no-evaluate-base",
                             "--output", tmp_path / "run")
    assert code == 0, err
    shown = " ".join((out + err).split())
    assert "split_leakage" in shown and f"{test}:9" in shown and f"{train}:4" in shown
    assert "estimated training time" in shown  # the estimate is announced before training
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [w["where"] for w in results["data"]["warnings"]] == [f"{test}:9"]


def test_finetune_json_with_config_file_and_override(capsys, tiny_model_dir, session_dataset, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data: {session_dataset}\nmodel: {tiny_model_dir}\nepochs: 3\nbatch_size: 4\nlora_r: 4\n"
        "max_new_tokens: 8\nlearning_rate: 0.005\nevaluate_base: false\n"
    )
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "finetune", "--config", config, "--epochs", "1", "--learning-rate", "2e-3",
                             "--output", run_dir, "--json")
    assert code == 0, err
    results = json.loads(out)  # only JSON on stdout
    assert results["status"] == "succeeded"
    assert results["train"]["epochs"] == 1  # the flag overrides the file
    assert results["train"]["learning_rate"] == 2e-3
    assert results["base"] is None and results["tuned"] is not None  # evaluate_base: false from the file
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["batch_size"] == 4 and saved["lora_r"] == 4 and saved["epochs"] == 1
    assert json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["r"] == 4


def _bad_input_cases(tmp: Path, model: Path, data: Path) -> dict[str, tuple[list, list[str]]]:
    empty = tmp / "empty.jsonl"
    empty.write_text("")
    text = tmp / "data.txt"
    text.write_text("hello")
    malformed = tmp / "malformed.jsonl"
    malformed.write_text(json.dumps(make_rows(1)[0]) + "\n" + json.dumps(make_rows(2)[1]) + '\n{"input": "x", "output": \n')
    bad_chat = write_jsonl(tmp / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "blue"}]},
        {"messages": [{"role": "user", "content": "grass?"}, {"role": "assistant", "content": "green", "weight": 2}]},
    ])
    missing_field = write_jsonl(tmp / "missing.jsonl", make_rows(3)[:2] + [{"input": "no answer here"}])
    taken = tmp / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    a_file = tmp / "a-file"
    a_file.write_text("not a directory")
    return {
        "missing data file": (["--data", tmp / "nope.jsonl"], [str(tmp / "nope.jsonl"), "not found"]),
        "empty file": (["--data", empty], [str(empty), "empty"]),
        "unknown suffix": (["--data", text], [str(text), ".txt"]),
        "malformed json line": (["--data", malformed], [f"{malformed}:3"]),
        "bad chat weight": (["--data", bad_chat], [f"{bad_chat}:2", "weight"]),
        "missing field": (["--data", missing_field], [f"{missing_field}:3", "'output'"]),
        "unknown model": (["--data", data, "--model", "no-such-model-anywhere"], ["no-such-model-anywhere", "not found"]),
        "two invalid values": (["--data", data, "--epochs", "-1", "--batch-size", "0"], ["epochs", "batch_size"]),
        "invalid choice": (["--data", data, "--method", "qlora2"], ["method", "qlora2"]),
        "no data": ([], ["data"]),
        "existing output": (["--data", data, "--output", taken], [str(taken), "not empty"]),
        "output is a file": (["--data", data, "--output", a_file], [str(a_file)]),
        "missing config file": (["--data", data, "--config", tmp / "nope.yaml"], [str(tmp / "nope.yaml")]),
        "cannot fit in memory": (["--data", data, "--memory-limit", "0.2GB"], ["0.20 GB is available (--memory-limit)", "killed"]),
        "memory limit not a size": (["--data", data, "--memory-limit", "plenty"], ["memory_limit", "12GB"]),
    }


CASES = ["missing data file", "empty file", "unknown suffix", "malformed json line", "bad chat weight", "missing field",
         "unknown model", "two invalid values", "invalid choice", "no data", "existing output", "output is a file",
         "missing config file", "cannot fit in memory", "memory limit not a size"]


@pytest.mark.parametrize("case", CASES)
def test_finetune_bad_input_exits_1_without_a_run_directory(capsys, tiny_model_dir, session_dataset, tmp_path, case):
    args, expected = _bad_input_cases(tmp_path, tiny_model_dir, session_dataset)[case]
    if "--model" not in args:
        args = args + ["--model", tiny_model_dir]
    if "--output" not in args:
        args = args + ["--output", tmp_path / "run"]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, out, err = run_cli(capsys, "finetune", *args)
    assert code == 1
    assert err.startswith("error:")
    for part in expected:
        assert part in err, (part, err)
    assert "Traceback" not in err
    assert out == ""
    assert not (tmp_path / "run").exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written anywhere


def test_finetune_malformed_text_template_exits_1(capsys, tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"question": f"q{i}", "answer": "a"} for i in range(10)])
    code, _, err = run_cli(capsys, "finetune", "--data", data, "--model", tiny_model_dir, "--text-template", "{question",
                           "--output", tmp_path / "run")
    assert code == 1 and "text" in err


def test_wrong_usage_exits_2(capsys):
    for argv in (["finetune", "--no-such-flag"], [], ["frobnicate"], ["eval"], ["eval", "--data"]):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2, argv
        err = capsys.readouterr().err
        assert "usage:" in err


FINETUNE_FLAGS = ["--data", "--validation-data", "--test-data", "--model", "--method", "--epochs", "--batch-size",
                  "--learning-rate", "--max-length", "--lora-r", "--lora-alpha", "--seed", "--evaluation-strategy",
                  "--eval-steps", "--saving-strategy", "--save-steps", "--output", "--config", "--json"]


@pytest.mark.parametrize(
    "command, flags",
    [
        ("finetune", FINETUNE_FLAGS),
        ("eval", ["--data", "--model", "--adapter", "--json", "--max-examples"]),
        ("chat", ["--model", "--adapter", "--prompt", "--system"]),
    ],
)
def test_help(capsys, monkeypatch, command, flags):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tuneforge {command}")
    for flag in flags:
        assert flag in out, flag


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for command in ("finetune", "eval", "chat"):
        assert command in out


# ---------------------------------------------------------------- eval and chat


def test_eval_adapter_json(capsys, lora_run, session_dataset, tmp_path):
    predictions = tmp_path / "predictions.jsonl"
    code, out, err = run_cli(capsys, "eval", "--data", session_dataset, "--adapter", lora_run.run_dir, "--json",
                             "--max-new-tokens", "8", "--predictions", predictions)
    assert code == 0, err
    data = json.loads(out)
    assert "adapter" in data["model"]
    assert data["task"] == "classification"
    for key in ("accuracy", "f1_score", "loss", "perplexity"):
        assert isinstance(data["performance"][key], float), key
    assert data["resources"]["examples"] == 40
    lines = predictions.read_text().splitlines()
    assert len(lines) == 40 and {"input", "reference", "prediction"} <= set(json.loads(lines[0]))


def test_eval_base_model_json(capsys, lora_run, tiny_model_dir, session_dataset):
    code, out, err = run_cli(capsys, "eval", "--data", session_dataset, "--model", tiny_model_dir, "--json",
                             "--max-examples", "10", "--max-new-tokens", "4")
    assert code == 0, err
    base = json.loads(out)
    assert "base model" in base["model"]
    assert base["resources"]["examples"] == 10
    assert base["performance"]["loss"] > 0
    code, out, _ = run_cli(capsys, "eval", "--data", session_dataset, "--adapter", lora_run.run_dir, "--json",
                           "--max-examples", "10", "--max-new-tokens", "4")
    tuned = json.loads(out)
    assert tuned["performance"]["loss"] < base["performance"]["loss"]  # the adapter really is applied


def test_eval_table_output(capsys, tiny_model_dir, session_dataset):
    code, out, err = run_cli(capsys, "eval", "--data", session_dataset, "--model", tiny_model_dir, "--max-examples", "4",
                             "--max-new-tokens", "2")
    assert code == 0, err
    assert "loss" in out and "perplexity" in out


def test_eval_errors_exit_1(capsys, tmp_path, tiny_model_dir, session_dataset):
    code, _, err = run_cli(capsys, "eval", "--data", tmp_path / "nope.jsonl", "--model", tiny_model_dir)
    assert code == 1 and str(tmp_path / "nope.jsonl") in err
    code, _, err = run_cli(capsys, "eval", "--data", session_dataset, "--adapter", tmp_path)
    assert code == 1 and str(tmp_path) in err and "Traceback" not in err


def test_chat_with_adapter(capsys, lora_run, tiny_model_dir):
    from tuneforge.evaluate.chat import ChatSession
    from tuneforge.runs import load_trained

    code, out, err = run_cli(capsys, "chat", "--adapter", lora_run.run_dir, "--prompt", "hi", "--max-new-tokens", "8")
    assert code == 0, err
    assert out.endswith("\n") and len(out.splitlines()) == 1
    # It printed the tuned model's greedy answer.
    model, tokenizer, description = load_trained(lora_run.run_dir, device="cpu")
    assert "adapter" in description
    session = ChatSession(model, tokenizer, max_new_tokens=8)
    assert out.rstrip("\n") == session.reply("hi")
    assert [m["role"] for m in session.messages] == ["user", "assistant"]


def test_chat_base_model_with_system(capsys, tiny_model_dir):
    code, out, err = run_cli(capsys, "chat", "--model", tiny_model_dir, "--system", "Be brief.", "--prompt", "hello",
                             "--max-new-tokens", "4")
    assert code == 0, err
    assert out.endswith("\n")


def test_chat_unknown_adapter_exits_1(capsys, tmp_path):
    code, _, err = run_cli(capsys, "chat", "--adapter", tmp_path / "no-run", "--prompt", "hi")
    assert code == 1 and str(tmp_path / "no-run") in err


def test_report_command(capsys, lora_run, tmp_path):
    code, out, err = run_cli(capsys, "report", lora_run.run_dir)
    assert code == 0, err
    assert out.strip() == str(lora_run.run_dir / "report.html")
    code, _, err = run_cli(capsys, "report", tmp_path)
    assert code == 1 and str(tmp_path) in err


# ---------------------------------------------------------------- the installed command, in a subprocess


def test_subprocess_bad_input_and_usage(tmp_path):
    missing = tmp_path / "missing.jsonl"
    result = run_subprocess("finetune", "--data", missing, "--output", tmp_path / "run")
    assert result.returncode == 1
    assert str(missing) in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()

    result = run_subprocess("finetune", "--data", missing, "--bogus-flag")
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus-flag" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow  # about 14 s: a fresh interpreter imports torch, transformers and peft
def test_subprocess_eval_json(lora_run, session_dataset):
    result = run_subprocess("eval", "--data", session_dataset, "--adapter", lora_run.run_dir, "--json",
                            "--max-examples", "6", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    data = json.loads(result.stdout)
    assert data["resources"]["examples"] == 6 and "loss" in data["performance"]


def test_subprocess_finetune_invalid_config_file(tmp_path, session_dataset):
    config = tmp_path / "bad.yaml"
    config.write_text("epochs: 0\nbatch_size: -2\nwarmup: 3\n")
    result = run_subprocess("finetune", "--config", config, "--data", session_dataset, "--output", tmp_path / "run")
    assert result.returncode == 1
    for part in (str(config), "epochs", "batch_size", "warmup"):
        assert part in result.stderr, part
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- flags: one name, the config's limits (finding 4)


@pytest.mark.parametrize("argv, flag", [
    (["eval", "--data", "x.jsonl", "--batch-size", "0"], "--batch-size"),
    (["eval", "--data", "x.jsonl", "--max-examples", "0"], "--max-examples"),  # 0 no longer silently means all
    (["eval", "--data", "x.jsonl", "--max-length", "8"], "--max-length"),  # the config's own minimum (16)
    (["eval", "--data", "x.jsonl", "--max-new-tokens", "many"], "--max-new-tokens"),
    (["eval", "--data", "x.jsonl", "--text-template", "{question"], "--text-template"),
    (["chat", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["validate", "x.jsonl", "--batch-size", "-3"], "--batch-size"),
    (["validate", "x.jsonl", "--epochs", "0"], "--epochs"),
    (["validate", "x.jsonl", "--test-split", "1.5"], "--test-split"),
    (["validate", "x.jsonl", "--near-dup", "nan"], "--near-dup"),
    (["validate", "x.jsonl", "--show", "-1"], "--show"),
    (["validate", "x.jsonl", "--format", "yaml"], "--data-format/--format"),
    (["prepare", "x.jsonl", "--out", "d", "--seed", "-1"], "--seed"),
    (["prepare", "x.jsonl", "--out", "d", "--near-dup", "2"], "--near-dup"),
    (["monitor", "runs/x", "--interval", "0"], "--interval"),
    (["demo", "--epochs", "-1"], "--epochs"),
])
def test_bad_flag_values_are_usage_errors_naming_the_flag(capsys, argv, flag):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    err = capsys.readouterr().err
    assert caught.value.code == 2, err
    assert "usage:" in err and f"argument {flag}:" in err and "Traceback" not in err


def test_numeric_flags_use_the_configs_limits():
    from tuneforge.cli.flags import config_value
    from tuneforge.config import make_config

    batch_size = config_value("batch_size")
    assert batch_size("4096") == 4096
    low = 16  # FineTuningConfig: max_length is Annotated[int, Field(ge=16, ...)] | "auto"
    with pytest.raises(Exception, match="greater than or equal to 16"):
        make_config({"max_length": low - 1})
    with pytest.raises(Exception):
        config_value("max_length")("auto")  # outside a run (eval, validate) a number is needed
    assert config_value("max_length")(str(low)) == low
    with pytest.raises(Exception, match="greater than or equal to"):
        config_value("max_length")(str(low - 1))
    with pytest.raises(Exception, match="less than or equal to 4096"):
        batch_size("4097")


def test_one_format_flag_name_everywhere_with_the_old_one_as_alias(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    for command in (["eval"], ["validate", "x"], ["prepare", "x", "--out", "d"], ["finetune"]):
        with pytest.raises(SystemExit):
            main([command[0], "--help"])
        out = capsys.readouterr().out
        assert "--data-format" in out and "--text-template" in out, command
    parser_args = []
    from tuneforge.cli.main import build_parser

    for argv in (["validate", "x", "--format", "chat"], ["validate", "x", "--data-format", "chat"],
                 ["prepare", "x", "--out", "d", "--format", "text"], ["eval", "--data", "x", "--format", "input_output"]):
        parser_args.append(build_parser().parse_args(argv).data_format)
    assert parser_args == ["chat", "chat", "text", "input_output"]


def test_eval_with_text_template_and_max_examples(capsys, tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"question": f"what is {i}?", "answer": f"{i}"} for i in range(6)])
    code, out, err = run_cli(capsys, "eval", "--data", data, "--model", tiny_model_dir, "--text-template",
                             "{question} {answer}", "--max-examples", "3", "--max-new-tokens", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["resources"]["examples"] == 3
    code, _, err = run_cli(capsys, "eval", "--data", data, "--model", tiny_model_dir, "--max-new-tokens", "2")
    assert code == 1 and "text-template" in err  # without the template the columns are not a known format


# ---------------------------------------------------------------- no traceback, ever (finding 5)


def _logs(home: Path) -> list[Path]:
    return sorted((home / "logs").glob("error-*.log")) if (home / "logs").is_dir() else []


@pytest.mark.parametrize("error, expected", [
    (MemoryError(), ["ran out of memory", "--micro-batch-tokens", "--gradient-checkpointing", "--batch-size"]),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 8589934592 bytes"), ["ran out of memory", "--micro-batch-tokens"]),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), ["ran out of memory", "--gradient-checkpointing"]),
    (pytest.importorskip("torch").OutOfMemoryError("CUDA out of memory"), ["ran out of memory", "--batch-size"]),
    (ZeroDivisionError("division by zero"), ["tuneforge report failed unexpectedly", "ZeroDivisionError", "--debug"]),
])
def test_an_unexpected_error_is_one_message_and_a_log_not_a_traceback(capsys, monkeypatch, tuneforge_home, tmp_path,
                                                                       error, expected):
    import tuneforge.cli.run_commands as cli

    def fail(args):
        raise error

    monkeypatch.setattr(cli, "cmd_report", fail)
    before = _logs(tuneforge_home)
    code, out, err = run_cli(capsys, "report", tmp_path)
    assert code == 1 and out == ""
    assert "Traceback" not in err and err.startswith("error: ")
    for part in expected:
        assert part in err, (part, err)
    [log] = [p for p in _logs(tuneforge_home) if p not in before]
    assert str(log) in err
    logged = log.read_text()
    assert "Traceback (most recent call last)" in logged and type(error).__name__ in logged and "fail" in logged


def test_debug_shows_the_traceback(capsys, monkeypatch, tmp_path):
    import tuneforge.cli.run_commands as cli

    def fail(args):
        raise KeyError("boom")

    monkeypatch.setattr(cli, "cmd_report", fail)
    for argv in (["--debug", "report", tmp_path], ["report", tmp_path, "--debug"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 1 and "Traceback (most recent call last)" in err and "KeyError" in err


def test_out_of_memory_in_training_goes_to_the_run_directory(capsys, monkeypatch, tiny_model_dir, session_dataset, tmp_path):
    import tuneforge.pipeline.run as pipeline

    def fit(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123456789 bytes")

    monkeypatch.setattr(pipeline, "fit", fit)
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "finetune", "--data", session_dataset, "--model", tiny_model_dir, "--output", run_dir,
                             "--no-evaluate-base", "--json")
    assert code == 1 and "Traceback" not in err
    assert "ran out of memory" in err and "--micro-batch-tokens" in err and str(run_dir / "error.log") in err
    assert "Traceback (most recent call last)" in (run_dir / "error.log").read_text()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "--gradient-checkpointing" in results["error"]
    assert str(run_dir / "error.log") in results["error"]


def test_report_on_damaged_results_or_events_names_the_file(capsys, lora_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(lora_run.run_dir, run_dir, ignore=shutil.ignore_patterns("checkpoints", "adapter"))
    (run_dir / "results.json").write_text('{"status": "succeeded", "train": {')
    code, _, err = run_cli(capsys, "report", run_dir)
    assert code == 1 and str(run_dir / "results.json") in err and "damaged" in err and "Traceback" not in err
    (run_dir / "results.json").write_text("[1, 2]")
    code, _, err = run_cli(capsys, "report", run_dir)
    assert code == 1 and str(run_dir / "results.json") in err

    (run_dir / "results.json").unlink()
    with open(run_dir / "events.jsonl", "ab") as handle:
        handle.write(b"\xff\xfe garbage \x00\n")  # binary garbage: the line is skipped
    code, out, err = run_cli(capsys, "report", run_dir)
    assert code == 0, err
    with open(run_dir / "events.jsonl", "a") as handle:
        handle.write(json.dumps({"seq": 10**6, "type": "train.step", "loss": "x"}) + "\n")  # no step
    code, _, err = run_cli(capsys, "report", run_dir)
    assert code == 1 and "damaged" in err and "events.jsonl" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["chat", "eval"])
def test_adapter_run_with_damaged_config_names_the_file(capsys, lora_run, session_dataset, tmp_path, command):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(lora_run.run_dir / "adapter", run_dir / "adapter")
    (run_dir / "config.yaml").write_text("model: [unclosed\n  - : :\n")
    args = ["chat", "--prompt", "hi"] if command == "chat" else ["eval", "--data", session_dataset]
    code, _, err = run_cli(capsys, *args, "--adapter", run_dir, "--max-new-tokens", "2")
    assert code == 1 and "Traceback" not in err
    assert str(run_dir / "config.yaml") in err and "damaged" in err and "--model" in err


def test_subprocess_unexpected_error_has_no_traceback_and_error_log_has_it(tmp_path, session_dataset, tiny_model_dir):
    """A fresh interpreter: an exception inside training is one message on stderr; RUN_DIR/error.log holds the traceback."""
    run_dir = tmp_path / "run"
    script = (
        "import sys, tuneforge.pipeline.run as p\n"
        "def fit(*a, **k):\n    raise ValueError('something nobody foresaw')\n"
        "p.fit = fit\n"
        "from tuneforge.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    result = subprocess.run([sys.executable, "-c", script, "finetune", "--data", str(session_dataset), "--model",
                             str(tiny_model_dir), "--output", str(run_dir), "--no-evaluate-base", "--epochs", "1"],
                            capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "something nobody foresaw" in result.stderr and str(run_dir / "error.log") in result.stderr
    logged = (run_dir / "error.log").read_text()
    assert "Traceback (most recent call last)" in logged and "ValueError: something nobody foresaw" in logged


@pytest.mark.parametrize("module, handler, argv", [
    ("tuneforge.cli.train_commands", "cmd_finetune", ["finetune", "--data", "x.jsonl"]),
    ("tuneforge.cli.eval_command", "cmd_eval", ["eval", "--data", "x.jsonl"]),
    ("tuneforge.cli.chat_command", "cmd_chat", ["chat", "--prompt", "hi"]),
    ("tuneforge.cli.train_commands", "cmd_resume", ["resume", "runs/x"]),
    ("tuneforge.cli.run_commands", "cmd_monitor", ["monitor", "runs/x"]),
    ("tuneforge.cli.train_commands", "cmd_demo", ["demo"]),
    ("tuneforge.cli.data_commands", "cmd_validate", ["validate", "x.jsonl"]),
    ("tuneforge.cli.data_commands", "cmd_prepare", ["prepare", "x.jsonl", "--out", "d"]),
])
def test_every_command_turns_an_unexpected_error_into_one_message(capsys, monkeypatch, module, handler, argv):
    import importlib

    def fail(args):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")

    monkeypatch.setattr(importlib.import_module(module), handler, fail)
    code, _, err = run_cli(capsys, *argv)
    assert code == 1 and "Traceback" not in err
    assert f"tuneforge {argv[0]} ran out of memory" in err and "--micro-batch-tokens" in err and "error-" in err
