"""``prompt_completion``: ``{"prompt": ..., "completion": ...}`` (``system`` optional) → user / assistant turns."""

from __future__ import annotations

from tuneforge.core.registries import ROW_FORMATS
from tuneforge.data.examples import TrainingExample
from tuneforge.data.row_formats.base import flat_format

PROMPT_COMPLETION = ROW_FORMATS.register("prompt_completion", flat_format(
    "prompt_completion", ("prompt", "completion"),
    lambda v: TrainingExample.from_pair(v["prompt"], v["completion"], system=v["system"] or None),
    sample={"prompt": "2+2=", "completion": "4"}, becomes="user: prompt / assistant: completion",
    optional=("system",), priority=30, prompt_keys=("prompt",),
))
