"""Forgetting: perplexity on a small general-text sample (shipped in the package) before and after
fine-tuning, so a user sees when training on their task damaged the model's general ability."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.data.examples import TrainingExample
from tuneforge.evaluate.run import evaluate_model

# More than this relative rise in general-text perplexity is called out as forgetting.
FORGETTING_THRESHOLD = 0.10


def general_text(path: Path | None = None) -> list[TrainingExample]:
    """The general-text sample (``samples/general_text.jsonl``) as text examples."""
    from tuneforge.samples import GENERAL_TEXT

    lines = (path or GENERAL_TEXT).read_text(encoding="utf-8").splitlines()
    return [TrainingExample(text=json.loads(line)["text"]) for line in lines if line.strip()]


def general_perplexity(model: Any, tokenizer: Any, max_length: int = 512, batch_size: int = 8) -> float:
    """The model's perplexity on the general-text sample (every token scored)."""
    evaluation = evaluate_model(model, tokenizer, general_text(), max_length=max_length, batch_size=batch_size,
                                metrics=("perplexity",))
    return float(evaluation.performance["perplexity"])


def forgetting_summary(before: float, after: float, threshold: float = FORGETTING_THRESHOLD) -> dict[str, Any]:
    """``{"before", "after", "change", "forgot", "message"}``: the relative change of general-text perplexity."""
    change = (after - before) / before if before else 0.0
    forgot = change > threshold
    message = (f"general-text perplexity rose {change:+.1%} ({before:.2f} → {after:.2f}): fine-tuning damaged general "
               "ability; try fewer epochs, a lower learning rate, a smaller LoRA rank, or mixing general data into training"
               if forgot else f"general-text perplexity {before:.2f} → {after:.2f} ({change:+.1%}): no sign of forgetting")
    return {"before": before, "after": after, "change": change, "forgot": forgot, "message": message}
