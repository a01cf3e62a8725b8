"""The contract matrix's "exact resume after a kill", for every registered training method (``full`` included).

``tests/test_method_contract.py`` stops a run gracefully after step 1 and resumes it; here the training
process is SIGKILLed from inside training (a real process, no chance to save anything more), resumed
in this process, and must end with exactly the weights of an uninterrupted run of the same config.
A new method inherits this test through the registry. Slow (a fresh process per method: ~15-20 s each).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tuneforge.config import make_config
from tuneforge.core.registries import METHODS
from tuneforge.model.methods import get_method
from tuneforge.pipeline import FineTuningPipeline

pytestmark = pytest.mark.slow

STEPS = 4
KILL_AT = 3  # checkpoints after every step: the resume starts from step 2 or 3
CONFIG = dict(max_steps=STEPS, batch_size=4, max_length=64, evaluate_base=False, test_split=0.0, validation_split=0.1,
              evaluation_strategy="no", saving_strategy="steps", save_steps=1, save_total_limit=2, final_weights="last",
              precision="fp32", seed=7, estimate_steps=0)

CHILD = r"""
import json, os, signal, sys
spec = json.loads(sys.argv[1])
from tuneforge.config import make_config
from tuneforge.pipeline import FineTuningPipeline

def on_event(event):
    if event.get("type") == "train.step" and event.get("step") == spec["kill_at_step"]:
        os.kill(os.getpid(), signal.SIGKILL)

FineTuningPipeline(make_config(spec["config"]), on_event=on_event).train()
print("finished without being killed")
"""


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    assert tensors, f"no safetensors in {directory}"
    return tensors


@pytest.mark.parametrize("name", METHODS.names())
def test_exact_resume_after_a_sigkill(name, tiny_model_dir, session_dataset, tmp_path):
    method = get_method(name)
    if method.quantization == "bnb-4bit":
        pytest.importorskip("bitsandbytes", reason="qlora needs the qlora extra (bitsandbytes)")
    values = {"data": str(session_dataset), "model": str(tiny_model_dir), "method": name, **CONFIG}
    whole = FineTuningPipeline(make_config({**values, "output": str(tmp_path / "whole")}), handle_signals=False).train()
    assert str(whole.status) == "succeeded" and whole.train["steps"] == STEPS

    killed_dir = tmp_path / "killed"
    spec = {"config": {**values, "output": str(killed_dir)}, "kill_at_step": KILL_AT}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}  # the same threads as this process: bitwise equality needs the same reduction order
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, env=env, timeout=300)
    assert child.returncode == -signal.SIGKILL, (child.stdout, child.stderr[-2000:])
    assert not (killed_dir / method.output_dir).exists() and not (killed_dir / "results.json").exists()

    resumed = FineTuningPipeline(make_config({**values, "output": str(killed_dir), "resume": True}), handle_signals=False).train()
    assert str(resumed.status) == "succeeded" and 1 <= resumed.train["resumed_from_step"] < STEPS
    a, b = _weights(tmp_path / "whole" / method.output_dir), _weights(killed_dir / method.output_dir)
    assert a.keys() == b.keys()
    differing = [key for key in a if not torch.equal(a[key], b[key])]
    assert not differing, f"{name}: after a SIGKILL at step {KILL_AT} and resume, {differing[:3]} differ from the uninterrupted run"
