"""Checkpoint faults: corrupt checkpoints are detected by their manifest and skipped (with the reason), the disk
filling up mid-save leaves the earlier checkpoints intact with a clear error, pickled code in a checkpoint is
refused, remote model code does not run, and a resume refuses settings or data that differ from the run's."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from helpers import make_rows, read_events, write_jsonl
from test_resume_kill import assert_same_as_reference, config_values, uninterrupted_run
from tuneforge.cli.main import main
from tuneforge.config import make_config
from tuneforge.core.errors import CheckpointError, ConfigError
from tuneforge.pipeline import FineTuningPipeline
from tuneforge.train import checkpoint
from tuneforge.train.checkpoint import (
    MANIFEST,
    list_checkpoints,
    load_state_file,
    newest_valid_checkpoint,
    verify_checkpoint,
)


class Crash(Exception):
    pass


def crashed_run(run_dir: Path, model: Path, data: Path, at_step: int = 10) -> dict:
    """A run of the kill-test config that died after step ``at_step`` (checkpoints 6 and 9 kept)."""
    values = config_values(data, model, run_dir)

    def crash(event):
        if event.get("type") == "train.step" and event["step"] == at_step:
            raise Crash()

    with pytest.raises(Crash):
        FineTuningPipeline(make_config(values), on_event=crash).train()
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step-000006", "step-000009"]
    return values


@pytest.fixture
def reference(tiny_model_dir, session_dataset, tmp_path_factory) -> Path:
    return uninterrupted_run(tmp_path_factory, tiny_model_dir, session_dataset)


@pytest.fixture(scope="module")
def crashed(tiny_model_dir, session_dataset, tmp_path_factory) -> Path:
    """A run that died after step 10; tests copy it (``copy_run``) before they break something."""
    run_dir = tmp_path_factory.mktemp("crashed") / "run"
    crashed_run(run_dir, tiny_model_dir, session_dataset)
    return run_dir


@pytest.fixture
def pristine(crashed) -> Path:
    return crashed / "checkpoints"


def copy_run(crashed: Path, destination: Path) -> tuple[Path, dict]:
    """A copy of the crashed run, and the config values that resume it (its --output is the copy)."""
    shutil.copytree(crashed, destination)
    values = {**yaml.safe_load((destination / "config.yaml").read_text()), "output": str(destination)}
    return destination, values


def rehash(path: Path, name: str) -> None:
    """Make the manifest agree with a file an attacker replaced (the manifest is integrity, not authenticity)."""
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["files"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    (path / MANIFEST).write_text(json.dumps(manifest))


def truncate(path: Path) -> str:
    file = path / "weights" / "adapter_model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    return "adapter_model.safetensors"


def flip_byte(path: Path) -> str:
    file = path / "weights" / "adapter_model.safetensors"
    data = bytearray(file.read_bytes())
    data[-3] ^= 0x01
    file.write_bytes(bytes(data))
    return "adapter_model.safetensors"


def delete_trainer_state(path: Path) -> str:
    (path / "trainer_state.json").unlink()
    return "trainer_state.json"


def invalid_manifest(path: Path) -> str:
    (path / MANIFEST).write_text('{"step": 9, "files": ')
    return "manifest"


def huge_header(path: Path) -> str:
    file = path / "weights" / "adapter_model.safetensors"
    data = bytearray(file.read_bytes())
    data[:8] = struct.pack("<Q", 2**63)
    file.write_bytes(bytes(data))
    return "adapter_model.safetensors"


CORRUPTIONS = [truncate, flip_byte, delete_trainer_state, invalid_manifest, huge_header]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_each_corruption_is_detected_and_the_older_checkpoint_used(pristine, tmp_path, corrupt):
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(pristine, checkpoints)
    newest = checkpoints / "step-000009"
    named = corrupt(newest)
    problems = verify_checkpoint(newest)
    assert problems and named in problems[0]
    chosen, skipped = newest_valid_checkpoint(checkpoints)
    assert chosen == checkpoints / "step-000006"
    assert [s.path for s in skipped] == [newest] and skipped[0].problems == problems


def test_resume_skips_a_corrupt_checkpoint_with_a_message_and_stays_exact(reference, crashed, tmp_path, capsys):
    run_dir, _ = copy_run(crashed, tmp_path / "run")
    flip_byte(run_dir / "checkpoints" / "step-000009")
    assert main(["resume", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "skipped corrupt checkpoint step-000009" in err and "adapter_model.safetensors" in err
    events = read_events(run_dir)
    skipped = [e for e in events if e["type"] == "checkpoint.skipped"]
    assert len(skipped) == 1 and "do not match the manifest" in skipped[0]["problems"][0]
    assert [e["step"] for e in events if e["type"] == "train.resumed"] == [6]
    assert_same_as_reference(run_dir, reference, "resumed past a corrupt checkpoint")


def test_with_every_checkpoint_corrupt_resume_starts_over_and_says_so(reference, crashed, tmp_path):
    run_dir, values = copy_run(crashed, tmp_path / "run")
    for path in list_checkpoints(run_dir / "checkpoints"):
        truncate(path)
    result = FineTuningPipeline(make_config({**values, "resume": True})).train()
    resumed = [e for e in read_events(run_dir) if e["type"] == "train.resumed"]
    assert resumed[0]["step"] == 0 and "starting from the beginning" in resumed[0]["message"]
    assert result.status == "succeeded"
    assert_same_as_reference(run_dir, reference, "every checkpoint corrupt")


# ---------------------------------------------------------------- no pickle from files


class Payload:
    """Pickles to "call os.system(...)": loading it with plain pickle would create the canary file."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.canary}",))


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng.pt"])
def test_pickled_code_in_checkpoint_state_is_refused_not_run(pristine, tmp_path, name):
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(pristine, checkpoints)
    canary = tmp_path / "canary"
    newest = checkpoints / "step-000009"
    torch.save({"state": Payload(canary)}, newest / name)
    rehash(newest, name)
    assert verify_checkpoint(newest) == []  # the hashes agree: only the loader stands in the way
    with pytest.raises(CheckpointError) as caught:
        load_state_file(newest / name)
    assert "refused" in str(caught.value) and name in str(caught.value)
    assert not canary.exists()


def test_resume_of_a_checkpoint_with_pickled_code_exits_1_without_running_it(crashed, tmp_path, capsys):
    run_dir, _ = copy_run(crashed, tmp_path / "run")
    canary = tmp_path / "canary"
    newest = run_dir / "checkpoints" / "step-000009"
    torch.save({"state": Payload(canary)}, newest / "optimizer.pt")
    rehash(newest, "optimizer.pt")
    assert main(["resume", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "refused to load" in err and "optimizer.pt" in err and "Traceback" not in err
    assert not canary.exists()
    assert json.loads((run_dir / "results.json").read_text())["status"] == "failed"


def test_remote_model_code_does_not_run_unless_asked(tiny_model_dir, session_dataset, tmp_path):
    """A model directory whose config points to its own Python code: tuneforge loads the known architecture."""
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    canary = tmp_path / "canary"
    (model_dir / "modeling_evil.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\n"
                                                 "from transformers import LlamaForCausalLM as EvilModel\n")
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (model_dir / "config.json").write_text(json.dumps(config))
    assert make_config({}).trust_remote_code is False
    values = {"data": str(session_dataset), "model": str(model_dir), "output": str(tmp_path / "run"), "epochs": 1,
              "evaluate_base": False, "test_split": 0.0, "saving_strategy": "no", "evaluation_strategy": "no"}
    FineTuningPipeline(make_config(values)).train()
    assert not canary.exists()


# ---------------------------------------------------------------- disk full


def test_disk_full_while_saving_is_a_clear_error_and_earlier_checkpoints_stay(tiny_model_dir, session_dataset, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    values = config_values(session_dataset, tiny_model_dir, run_dir)
    real_save, hashes = checkpoint.torch.save, {}

    def save(obj, path, *args, **kwargs):
        if ".step-000009." in str(path) and str(path).endswith("scheduler.pt"):
            for kept in list_checkpoints(run_dir / "checkpoints"):
                hashes[kept.name] = {p.name: p.read_bytes() for p in kept.rglob("*") if p.is_file()}
            with open(path, "wb") as handle:
                handle.write(b"\0" * 100)  # part of the file made it to disk
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    with pytest.raises(CheckpointError) as caught:
        FineTuningPipeline(make_config(values)).train()
    message = str(caught.value)
    assert "step-000009" in message and "disk is full" in message and "No space left on device" in message
    assert "newest: step-000006" in message and f"tuneforge resume {run_dir}" in message
    checkpoints = run_dir / "checkpoints"
    assert [p.name for p in list_checkpoints(checkpoints)] == ["step-000003", "step-000006"]
    for kept in list_checkpoints(checkpoints):  # byte for byte what they were before the failed save
        assert verify_checkpoint(kept) == []
        assert {p.name: p.read_bytes() for p in kept.rglob("*") if p.is_file()} == hashes[kept.name]
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "disk is full" in results["error"]


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs (needs root, as on the CI machines; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip() or 'not root'})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_real_full_disk(small_disk, tiny_model_dir, session_dataset):
    """The run directory on a small file system that a filler fills after the first checkpoint."""
    run_dir = small_disk / "run"
    values = config_values(session_dataset, tiny_model_dir, run_dir)

    def fill(event):
        if event.get("type") == "checkpoint.saved" and event["step"] == 3:
            free = shutil.disk_usage(small_disk).free
            with open(small_disk / "filler", "wb") as handle:  # leave ~20 KB: room for events, not for a checkpoint
                handle.write(b"\0" * max(free - 20_000, 0))

    with pytest.raises(CheckpointError) as caught:
        FineTuningPipeline(make_config(values), on_event=fill).train()
    assert "disk is full" in str(caught.value) and "No space left on device" in str(caught.value)
    checkpoints = run_dir / "checkpoints"
    assert [p.name for p in list_checkpoints(checkpoints)] == ["step-000003"]
    assert verify_checkpoint(checkpoints / "step-000003") == []
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- resume refuses what would not be exact


def test_resume_refuses_changed_settings_and_finished_runs(crashed, tmp_path, capsys):
    run_dir, values = copy_run(crashed, tmp_path / "run")
    with pytest.raises(ConfigError) as caught:
        FineTuningPipeline(make_config({**values, "resume": True, "learning_rate": 1e-2, "epochs": 5})).train()
    problems = caught.value.problems
    assert any(p.startswith("learning_rate:") for p in problems) and any(p.startswith("epochs:") for p in problems)
    assert f"tuneforge resume {run_dir}" in str(caught.value)

    assert main(["resume", str(tmp_path / "nowhere")]) == 1
    assert "not a tuneforge run directory" in capsys.readouterr().err
    # finetune --resume --output RUN takes the run's own config.yaml.
    assert main(["finetune", "--resume", "--output", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "succeeded"
    assert main(["resume", str(run_dir)]) == 1
    assert "already finished" in capsys.readouterr().err


def test_resume_refuses_data_that_changed_since_the_checkpoint(tiny_model_dir, tmp_path):
    """Resume trains on the run's own splits (RUN_DIR/data) and says the original file changed; other data given
    explicitly is refused by the checkpoint's data fingerprint."""
    from tuneforge.data.manager import TrainingDataManager

    data = write_jsonl(tmp_path / "data.jsonl", make_rows())
    run_dir = tmp_path / "run"
    values = crashed_run(run_dir, tiny_model_dir, data)
    write_jsonl(data, [dict(row, output="purple") if i % 5 == 0 else row for i, row in enumerate(make_rows())])
    changed = TrainingDataManager().prepare_data(data, validation_split=values.get("validation_split", 0.1),
                                                 test_split=values.get("test_split", 0.1), seed=values.get("seed", 42))
    with pytest.raises(CheckpointError) as caught:
        FineTuningPipeline(make_config({**values, "resume": True})).train(changed)
    assert "other data" in str(caught.value) and "step-000009" in str(caught.value)

    resumed = FineTuningPipeline(make_config({**values, "resume": True})).train()
    assert resumed.status == "succeeded" and resumed.train["resumed_from_step"] == 9
    [warning] = [e for e in read_events(run_dir) if e["type"] == "data.originals_changed"]
    assert warning["files"] == [str(data)] and "splits it trained on" in warning["message"]


def test_resume_refuses_a_run_that_is_still_training(crashed, tmp_path):
    """Two trainers in one run directory would corrupt it: a live writer (its pid alive, no run.finished) is refused."""
    run_dir, values = copy_run(crashed, tmp_path / "run")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        events = (run_dir / "events.jsonl").read_text().splitlines()
        started = json.loads(events[0])
        started.update(seq=len(events), pid=sleeper.pid)
        with open(run_dir / "events.jsonl", "a") as handle:
            handle.write(json.dumps(started) + "\n")
        with pytest.raises(ConfigError) as caught:
            FineTuningPipeline(make_config({**values, "resume": True})).train()
        assert f"still being trained by process {sleeper.pid}" in str(caught.value)
    finally:
        sleeper.kill()
        sleeper.wait()
