"""The allocator a training process runs with (core/allocator.py): tcmalloc when installed, chosen by TUNEFORGE_ALLOCATOR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuneforge.core import allocator
from tuneforge.core.allocator import (REEXEC_MARK, allocator_environment, find_tcmalloc, loaded_allocator,
                                      preload_library, reexec_with_allocator)

TUNEFORGE = Path(sys.executable).parent / "tuneforge"


def fake_library(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"\x7fELF")
    return path


def test_the_minimal_tcmalloc_is_found_first_and_none_when_nothing_is_installed(tmp_path):
    assert find_tcmalloc((str(tmp_path),)) is None
    full = fake_library(tmp_path / "a", "libtcmalloc.so.4")
    minimal = fake_library(tmp_path / "b", "libtcmalloc_minimal.so.4")
    assert find_tcmalloc((str(tmp_path / "a"), str(tmp_path / "b"))) == str(minimal)
    assert find_tcmalloc((str(tmp_path / "a"),)) == str(full)


def test_the_setting_chooses_the_library_or_keeps_the_system_malloc(tmp_path, monkeypatch):
    library = fake_library(tmp_path, "libtcmalloc_minimal.so.4")
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: str(library))
    assert preload_library({}) == str(library)  # auto: the installed tcmalloc
    assert preload_library({"TUNEFORGE_ALLOCATOR": "auto"}) == str(library)
    assert preload_library({"TUNEFORGE_ALLOCATOR": "system"}) is None
    assert preload_library({"TUNEFORGE_ALLOCATOR": str(library)}) == str(library)
    assert preload_library({"TUNEFORGE_ALLOCATOR": str(tmp_path / "missing.so")}) is None
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
    assert preload_library({}) is None  # not installed: nothing changes


def test_the_child_environment_prepends_the_library_once(tmp_path, monkeypatch):
    library = str(fake_library(tmp_path, "libtcmalloc_minimal.so.4"))
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: library)
    assert allocator_environment({}) == {"LD_PRELOAD": library, REEXEC_MARK: "1",
                                         "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}
    assert allocator_environment({"LD_PRELOAD": "/other.so"})["LD_PRELOAD"] == f"{library}:/other.so"
    assert allocator_environment({"LD_PRELOAD": f"/other.so:{library}"}) == {}  # already preloaded
    assert allocator_environment({"TUNEFORGE_ALLOCATOR": "system"}) == {}


def test_only_training_commands_re_execute_and_only_once(tmp_path, monkeypatch):
    library = str(fake_library(tmp_path, "libtcmalloc_minimal.so.4"))
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: library)
    monkeypatch.setattr(allocator, "loaded_allocator", lambda: "system")
    monkeypatch.delenv(REEXEC_MARK, raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("TUNEFORGE_ALLOCATOR", raising=False)
    calls = []
    monkeypatch.setattr(os, "execve", lambda path, args, env: calls.append((path, args, env)))

    reexec_with_allocator(["validate", "data.jsonl"], "validate")
    assert calls == []  # the data doctor does not train: no second exec
    reexec_with_allocator(["finetune", "--data", "d.jsonl"], "finetune")
    (path, args, env), = calls
    assert path == sys.executable and args == [sys.executable, "-m", "tuneforge.cli.main", "finetune", "--data", "d.jsonl"]
    assert env["LD_PRELOAD"] == library and env[REEXEC_MARK] == "1"

    def refuse(path, args, env):
        raise PermissionError("exec refused")

    monkeypatch.setattr(os, "execve", refuse)
    reexec_with_allocator(["finetune"], "finetune")  # exec failed: the command goes on in this process, no traceback
    monkeypatch.setattr(os, "execve", lambda path, args, env: calls.append((path, args, env)))

    monkeypatch.setenv(REEXEC_MARK, "1")  # the re-executed process: never again, even if the preload did not take
    reexec_with_allocator(["finetune"], "finetune")
    assert len(calls) == 1


def test_this_process_reports_the_allocator_it_has():
    expected = "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else loaded_allocator()
    assert loaded_allocator() == expected in ("system", "tcmalloc", "jemalloc")


def _train(tiny_model_dir: Path, data: Path, output: Path, **env: str) -> dict:
    environ = {key: value for key, value in os.environ.items() if key not in ("LD_PRELOAD", REEXEC_MARK)}
    environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", **env})
    done = subprocess.run([str(TUNEFORGE), "finetune", "--data", str(data), "--model", str(tiny_model_dir), "--max-steps", "2",
                           "--evaluation-strategy", "no", "--output", str(output)],
                          capture_output=True, text=True, env=environ, timeout=300)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in (output / "events.jsonl").read_text().splitlines()]
    return next(event for event in events if event["type"] == "run.started")


@pytest.mark.slow  # two fresh interpreters import torch and train two steps: about 30 s
@pytest.mark.skipif(find_tcmalloc() is None, reason="tcmalloc is not installed (apt-get install libtcmalloc-minimal4)")
def test_the_command_trains_under_tcmalloc_unless_told_to_keep_the_system_malloc(tiny_model_dir, session_dataset, tmp_path):
    started = _train(tiny_model_dir, session_dataset, tmp_path / "default")
    assert started["allocator"] == "tcmalloc"
    started = _train(tiny_model_dir, session_dataset, tmp_path / "system", TUNEFORGE_ALLOCATOR="system")
    assert started["allocator"] == "system"


def test_a_misnamed_library_is_reported_and_training_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(allocator, "loaded_allocator", lambda: "system")
    monkeypatch.delenv(REEXEC_MARK, raising=False)
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("no library: nothing to re-execute under"))
    monkeypatch.setenv("TUNEFORGE_ALLOCATOR", str(tmp_path / "libtcmaloc.so"))
    reexec_with_allocator(["finetune"], "finetune")
    err = capsys.readouterr().err
    assert "TUNEFORGE_ALLOCATOR=" in err and "libtcmaloc.so" in err and "no such library file" in err
    monkeypatch.setenv("TUNEFORGE_ALLOCATOR", "system")  # a known word: nothing to say
    reexec_with_allocator(["finetune"], "finetune")
    assert capsys.readouterr().err == ""
