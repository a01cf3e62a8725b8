"""``text``: ``{"text": ...}`` → raw text, every token trained (no chat template)."""

from __future__ import annotations

from tuneforge.core.registries import ROW_FORMATS
from tuneforge.data.examples import TrainingExample
from tuneforge.data.row_formats.base import flat_format

TEXT = ROW_FORMATS.register("text", flat_format(
    "text", ("text",), lambda v: TrainingExample(text=v["text"]),
    sample={"text": "The sky is blue."}, becomes="raw text, every token trained", priority=90,
    extra={"note": "(every token is trained)"},
))
