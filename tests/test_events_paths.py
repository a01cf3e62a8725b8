"""events.jsonl (sequence numbers, NaN safety, torn lines) and crash-safe file writing."""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.core.paths import atomic_write_json, atomic_write_text, publish_directory
from tuneforge.monitor.events import EventWriter, read_events


def test_event_writer_sequence_and_fields(tmp_path: Path):
    path = tmp_path / "run" / "events.jsonl"
    with EventWriter(path) as events:
        first = events.emit("run.started", model="m")
        events.emit("train.step", step=1, loss=float("nan"), extra={"inf": float("inf"), "list": [1.0, float("-inf")]})
    assert first["seq"] == 0 and first["type"] == "run.started" and first["model"] == "m"
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    step = json.loads(lines[1])  # strict JSON: NaN/Inf written as strings
    assert step["seq"] == 1 and step["loss"] == "nan" and step["extra"] == {"inf": "inf", "list": [1.0, "-inf"]}
    assert isinstance(step["time"], float)


def test_event_writer_continues_sequence_and_reader_skips_torn_line(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as events:
        events.emit("a")
        events.emit("b")
    with open(path, "a") as handle:
        handle.write('{"seq": 2, "type": "tor')  # a crash in the middle of a line
    assert [e["type"] for e in read_events(path)] == ["a", "b"]
    with open(path, "a") as handle:
        handle.write("\n")
    with EventWriter(path) as events:
        assert events.emit("c")["seq"] == 2
    assert [e["seq"] for e in read_events(path)] == [0, 1, 2]
    assert [e["type"] for e in read_events(path, after=0)] == ["b", "c"]
    assert list(read_events(tmp_path / "missing.jsonl")) == []


def test_atomic_writes(tmp_path: Path):
    target = tmp_path / "deep" / "file.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    atomic_write_text(target, "replaced")
    assert target.read_text() == "replaced"
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]  # no temporary files left


def test_publish_directory_replaces_whole(tmp_path: Path):
    final = tmp_path / "adapter"
    final.mkdir()
    (final / "old.bin").write_text("old")
    staging = tmp_path / ".adapter.staging"
    staging.mkdir()
    (staging / "new.bin").write_text("new")
    publish_directory(staging, final)
    assert sorted(p.name for p in final.iterdir()) == ["new.bin"]
    assert not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_tuneforge_home_is_isolated(tuneforge_home: Path):
    from tuneforge.core import paths

    assert paths.tuneforge_home() == tuneforge_home
    assert tuneforge_home.is_dir() and ".cache" not in tuneforge_home.parts
