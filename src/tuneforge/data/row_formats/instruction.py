"""``instruction``: ``{"instruction": ..., "input": optional, "output": ...}`` (Alpaca style).

The user turn is the instruction, then a blank line and the input when there is one. Detected
before ``input_output``, whose keys an instruction row also has.
"""

from __future__ import annotations

from tuneforge.core.registries import ROW_FORMATS
from tuneforge.data.examples import TrainingExample
from tuneforge.data.row_formats.base import flat_format


def _build(values: dict[str, str]) -> TrainingExample:
    instruction, extra = values["instruction"], values["input"]
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return TrainingExample.from_pair(prompt, values["output"], system=values["system"] or None)


INSTRUCTION = ROW_FORMATS.register("instruction", flat_format(
    "instruction", ("instruction", "output"), _build,
    sample={"instruction": "Translate to French.", "input": "cat", "output": "chat"},
    becomes="user: instruction + input / assistant: output", optional=("input", "system"), priority=20,
    prompt_keys=("input", "instruction"),
))
