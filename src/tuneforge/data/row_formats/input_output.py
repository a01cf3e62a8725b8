"""``input_output``: ``{"input": ..., "output": ...}`` (``system`` optional) → user / assistant turns."""

from __future__ import annotations

from tuneforge.core.registries import ROW_FORMATS
from tuneforge.data.examples import TrainingExample
from tuneforge.data.row_formats.base import flat_format

INPUT_OUTPUT = ROW_FORMATS.register("input_output", flat_format(
    "input_output", ("input", "output"),
    lambda v: TrainingExample.from_pair(v["input"], v["output"], system=v["system"] or None),
    sample={"input": "color of sky?", "output": "blue"}, becomes="user: input / assistant: output",
    optional=("system",), priority=40, prompt_keys=("input",),
))
