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

    Everything else is ``auto``, as ``tuneforge finetune --data`` alone would choose (train/auto.py): on
    this task 1.5 epochs of batch 8 at twice the LoRA rate (a short run), early stopping on the
    validation split — 0.861 test accuracy in bench/results/auto.md, where 72 steps of batch 4 at the
    plain rate (this demo's settings before ``auto``) reached 0.75-0.78.
    """
    from tuneforge.config import make_config

    values = {"data": str(CUSTOMER_INTENTS), "output": output or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"}
    return make_config({**values, **({"epochs": epochs} if epochs is not None else {})})
