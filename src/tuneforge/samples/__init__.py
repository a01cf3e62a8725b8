"""Bundled sample data and the demo configuration that uses it."""

from __future__ import annotations

import time
from pathlib import Path

SAMPLES_DIR = Path(__file__).parent
CUSTOMER_INTENTS = SAMPLES_DIR / "customer_intents.jsonl"
# 30 plain English sentences written for tuneforge (no third-party text), far from any user's domain:
# the forgetting check (evaluate/forgetting.py) compares perplexity on them before and after training.
GENERAL_TEXT = SAMPLES_DIR / "general_text.jsonl"


def demo_config(output: str | None = None, epochs: float | None = None):  # -> FineTuningConfig
    """LoRA on the embedded SmolLM2-135M-Instruct over the customer-intent task (8 labels, 360 rows).

    One epoch in batches of 4 (72 optimizer steps) is enough on this task and keeps ``make demo``
    well inside 15 minutes on 2 CPU cores.
    """
    from tuneforge.config import make_config

    return make_config(
        {
            "data": str(CUSTOMER_INTENTS),
            "epochs": epochs if epochs is not None else 1.0,
            "batch_size": 4,
            "output": output or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}",
            "evaluation_strategy": "epoch",
            "saving_strategy": "no",
        }
    )
