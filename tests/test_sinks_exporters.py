"""Metric sinks (``report_to``) and exporters are registries: unknown names list the valid ones, a user sink is
one ``SinkSpec`` named as ``module:attribute``, and the exporter seam lists its built-in exporters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tuneforge.config import make_config
from tuneforge.core.errors import ConfigError, PluginError, UnknownNameError
from tuneforge.core.registries import EXPORTERS, SINKS
from tuneforge.monitor.sinks import SinkSpec, check_sinks, open_sinks
from tuneforge.pipeline import FineTuningPipeline

RECORDED: list[dict[str, Any]] = []
CLOSED: list[Path] = []


class RecordingSink:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def on_event(self, event: dict[str, Any]) -> None:
        RECORDED.append(event)

    def close(self) -> None:
        CLOSED.append(self.run_dir)


RECORDER = SinkSpec(RecordingSink)
NEEDS_MISSING_MODULE = SinkSpec(RecordingSink, requires="no_such_tracker_module_xyz", install="pip install xyz-tracker")


def test_report_to_is_validated_by_the_sink_registry():
    assert "tensorboard" in SINKS.names()
    with pytest.raises(ConfigError, match=r"report_to: unknown metric sink 'wandb'; choose from: tensorboard"):
        make_config({"report_to": "wandb"})
    assert make_config({"report_to": "none"}).report_to == []
    with pytest.raises(ConfigError, match="expected a tuneforge.monitor.sinks.SinkSpec"):
        make_config({"report_to": [f"{__name__}:RecordingSink"]})
    with pytest.raises(ConfigError, match="pip install xyz-tracker"):
        check_sinks([f"{__name__}:NEEDS_MISSING_MODULE"])


def test_a_user_sink_receives_every_event_of_a_run(tiny_model_dir, session_dataset, tmp_path):
    RECORDED.clear()
    CLOSED.clear()
    values = {"data": str(session_dataset), "model": str(tiny_model_dir), "output": str(tmp_path / "run"), "max_steps": 2,
              "evaluate_base": False, "test_split": 0.0, "saving_strategy": "no", "report_to": f"{__name__}:RECORDER"}
    FineTuningPipeline(make_config(values), handle_signals=False).train()
    types = [event["type"] for event in RECORDED]
    assert types[0] == "run.started" and "train.step" in types and types[-1] == "run.finished"
    assert CLOSED == [tmp_path / "run"]
    assert [type(sink) for sink in open_sinks([f"{__name__}:RECORDER"], tmp_path)] == [RecordingSink]


class IncompleteExporter:
    name = "half"

    def export(self, run_dir: Path, out_dir: Path) -> None: ...


def test_the_exporter_registry_lists_the_built_in_exporters():
    from tuneforge.export import Exporter, get_exporter

    assert set(EXPORTERS.names()) >= {"merged", "gguf", "gguf-lora", "ollama", "onnx"}
    with pytest.raises(UnknownNameError, match=r"unknown exporter 'ggml'; choose from: .*merged"):
        get_exporter("ggml")
    with pytest.raises(PluginError, match="an exporter needs description, methods, check"):
        get_exporter(f"{__name__}:IncompleteExporter")
    assert Exporter.__name__ == "Exporter"
