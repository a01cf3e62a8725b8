"""The contract every registered training method keeps, run over all of them (a new method inherits it).

On the tiny model, through ``FineTuningPipeline``: train 3 steps with a finite loss; only the
parameters the method declares trainable change (every other one stays bit-identical); the saved
output reloads through the run loader (``load_trained``) with the same logits; and a run stopped
after step 1 and resumed ends with exactly the weights of the uninterrupted run (after a SIGKILL of the
training process too: ``tests/test_method_contract_kill.py``, slow). Directly on the
model: the loss falls when one batch is trained on repeatedly (at the method's default rate, through
its objective path), and evaluation (``evaluate_model``: answer loss and generation) runs.

``QueryOnlyLora`` below is a method defined in a test module and used as
``method: test_method_contract:QueryOnlyLora``: one class, no edit anywhere else, proving that a
new method is one file plus one registry entry.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from helpers import read_events
from tuneforge.config import make_config
from tuneforge.core.errors import ConfigError, PluginError
from tuneforge.core.registries import METHODS
from tuneforge.model.methods import TrainingMethod, get_method, make_trainable
from tuneforge.model.methods.lora import LoraMethod
from tuneforge.pipeline import FineTuningPipeline
from tuneforge.runs import load_trained


class QueryOnlyLora(LoraMethod):
    """LoRA on the attention query projections only: a new method as a user would write one."""

    name = "lora_q"
    description = "LoRA adapters on q_proj only"

    def target_modules(self, config: Any) -> list[str]:
        return ["q_proj"]


PLUGIN = f"{__name__}:QueryOnlyLora"
STEPS = 3
CONTRACT = dict(max_steps=STEPS, batch_size=4, max_length=64, evaluate_base=False, test_split=0.0, validation_split=0.1,
                evaluation_strategy="no", saving_strategy="no", final_weights="last", precision="fp32", seed=5)


def _values(data: Path, model_dir: Path, out: Path, method: str, **extra: Any) -> dict[str, Any]:
    return {"data": str(data), "model": str(model_dir), "output": str(out), "method": method, **CONTRACT, **extra}


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    assert tensors, f"no safetensors in {directory}"
    return tensors


def _initial_model(method: TrainingMethod, model_dir: Path, values: dict[str, Any]) -> Any:
    """The model exactly as the pipeline starts training it (same seed right before wrapping)."""
    config = make_config(values)
    model = method.load_base(model_dir, "cpu", config, "fp32")
    torch.manual_seed(config.seed)
    return make_trainable(method, model, config)


@pytest.fixture
def capture_trained(monkeypatch):
    """Keeps the in-memory model the pipeline saves (to compare with what it started from and what reloads)."""
    captured: list[Any] = []

    def patch(method: TrainingMethod) -> list[Any]:
        real = type(method).save

        def save(model: Any, out_dir: Path) -> None:
            captured.append(model)
            real(method, model, out_dir)

        monkeypatch.setattr(method, "save", save)
        return captured

    return patch


@pytest.mark.parametrize("name", [*METHODS.names(), PLUGIN])
def test_method_contract(name, tiny_model_dir, tiny_tokenizer, session_dataset, tmp_path, capture_trained):
    method = get_method(name)
    if method.quantization == "bnb-4bit":
        pytest.importorskip("bitsandbytes", reason="qlora needs the qlora extra (bitsandbytes)")
    captured = capture_trained(method)
    whole_dir = tmp_path / "whole"
    values = _values(session_dataset, tiny_model_dir, whole_dir, name)
    result = FineTuningPipeline(make_config(values), handle_signals=False).train()

    # trains: 3 steps, finite loss
    assert str(result.status) == "succeeded" and result.train["steps"] == STEPS
    losses = [e["loss"] for e in read_events(whole_dir) if e["type"] == "train.step"]
    assert len(losses) == STEPS and all(math.isfinite(loss) for loss in losses)

    # only the method's trainable parameters changed; every frozen one is bit-identical
    trained = captured[-1]
    initial = _initial_model(method, tiny_model_dir, values)
    trainable = method.trainable_parameter_names(initial)
    assert trainable, f"{name} declares no trainable parameter"
    before = dict(initial.named_parameters())
    after = dict(trained.named_parameters())
    assert before.keys() == after.keys()
    changed = {key for key in before if not torch.equal(before[key].detach(), after[key].detach())}
    assert changed, f"{name}: training changed no parameter"
    assert changed <= trainable, f"{name}: frozen parameters changed: {sorted(changed - trainable)[:5]}"
    assert {key for key, p in trained.named_parameters() if p.requires_grad} == trainable

    # saved in the method's output directory, reloaded by the run loader: same outputs
    assert (whole_dir / method.output_dir).is_dir() and method.holds_weights(whole_dir / method.output_dir)
    reloaded, tokenizer, description = load_trained(whole_dir, device="cpu")
    batch = tokenizer(["what color is the sky?", "name the color of a leaf"], return_tensors="pt", padding=True)
    trained.eval()
    reloaded.eval()
    with torch.no_grad():
        expected = trained(**batch).logits
        got = reloaded(**batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))

    # exact resume: stopped after step 1 (checkpoint), resumed to step 3 -> the same weights
    resumed_dir = tmp_path / "resumed"
    resumed_values = _values(session_dataset, tiny_model_dir, resumed_dir, name)

    def stop_after_first_step(event: dict[str, Any]) -> None:
        if event.get("type") == "train.step" and event["step"] == 1:
            pipeline.request_stop("contract test: stop after step 1")

    pipeline = FineTuningPipeline(make_config(resumed_values), on_event=stop_after_first_step, handle_signals=False)
    stopped = pipeline.train()
    assert str(stopped.status) == "interrupted" and stopped.train["steps"] == 1
    resumed = FineTuningPipeline(make_config({**resumed_values, "resume": True}), handle_signals=False).train()
    assert str(resumed.status) == "succeeded" and resumed.train["resumed_from_step"] == 1
    a, b = _weights(whole_dir / method.output_dir), _weights(resumed_dir / method.output_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a), f"{name}: resumed weights differ from the uninterrupted run"


def test_a_method_from_a_test_module_is_one_class_and_one_reference(tiny_model_dir, session_dataset, tmp_path):
    """method: test_method_contract:QueryOnlyLora trains only q_proj adapters, saves and reloads by its own rules."""
    result = FineTuningPipeline(make_config(_values(session_dataset, tiny_model_dir, tmp_path / "run", PLUGIN)),
                                handle_signals=False).train()
    method = get_method(PLUGIN)
    assert isinstance(method, QueryOnlyLora) and method.name == "lora_q"
    adapter = tmp_path / "run" / "adapter"
    saved = _weights(adapter)
    assert saved and all("q_proj" in key for key in saved)
    assert result.model["method"] == PLUGIN and 0 < result.model["trainable_parameters"] < result.model["total_parameters"]
    assert "q_proj" in (adapter / "adapter_config.json").read_text()
    model, _, description = load_trained(tmp_path / "run", device="cpu")
    assert "adapter" in description
    assert {name for name, _ in model.named_parameters() if "lora_" in name} and all(
        "q_proj" in name for name, _ in model.named_parameters() if "lora_" in name)
    assert make_config({"method": PLUGIN}).resolved_learning_rate == QueryOnlyLora.default_learning_rate


class NotAMethod:
    pass


class NoWrap(TrainingMethod):
    name = "no_wrap"


def test_unknown_or_unfit_methods_are_config_errors_listing_the_valid_ones():
    with pytest.raises(ConfigError) as caught:
        make_config({"method": "qlorax"})
    message = str(caught.value)
    assert "method: unknown training method 'qlorax'" in message and "full, ia3" in message
    with pytest.raises(ConfigError, match="expected a TrainingMethod"):
        make_config({"method": f"{__name__}:NotAMethod"})
    with pytest.raises(ConfigError, match="does not implement wrap"):
        make_config({"method": f"{__name__}:NoWrap"})
    with pytest.raises(ConfigError, match="no attribute 'Missing'"):
        make_config({"method": f"{__name__}:Missing"})
    with pytest.raises(PluginError, match="cannot import module"):
        get_method("no_such_module_for_tuneforge:Method")


def test_builtin_method_specs():
    lora, full = get_method("lora"), get_method("full")
    assert (lora.output_dir, full.output_dir) == ("adapter", "model")
    assert lora.freezes_base and not full.freezes_base and lora.mergeable
    assert not lora.forward_through_wrapper and not full.forward_through_wrapper
    assert (lora.default_learning_rate, full.default_learning_rate) == (1e-3, 5e-5)
    assert lora.base_dtype("bf16") == torch.bfloat16 and full.base_dtype("bf16") == torch.float32
    assert lora.base_dtype("fp32") == torch.float32


def _fresh(name: str, model_dir: Path) -> tuple[TrainingMethod, Any, Any]:
    method = get_method(name)
    if method.quantization == "bnb-4bit":
        pytest.importorskip("bitsandbytes", reason="qlora needs the qlora extra (bitsandbytes)")
    config = make_config({"method": name, "precision": "fp32"})
    torch.manual_seed(0)
    return method, make_trainable(method, method.load_base(model_dir, "cpu", config, "fp32"), config), config


@pytest.mark.parametrize("name", [*METHODS.names(), PLUGIN])
def test_loss_falls_on_a_repeated_batch(name, tiny_model_dir, tiny_tokenizer):
    from tuneforge.model.loss import label_loss_sums

    method, model, config = _fresh(name, tiny_model_dir)
    batch = dict(tiny_tokenizer(["what color is the sky? blue", "name the color of a leaf: green"], return_tensors="pt", padding=True))
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.resolved_learning_rate)
    losses = []
    for _ in range(6):
        sums = label_loss_sums(model, batch, method.forward_through_wrapper)
        loss = sums.loss_sum / sums.tokens
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0] and losses[-1] < min(losses[:3]), f"{name}: {losses}"


@pytest.mark.parametrize("name", [*METHODS.names(), PLUGIN])
def test_evaluation_runs(name, tiny_model_dir, tiny_tokenizer):
    from tuneforge.data.examples import TrainingExample
    from tuneforge.evaluate.run import evaluate_model

    _, model, _ = _fresh(name, tiny_model_dir)
    model.eval()
    examples = [TrainingExample(input="color of sky?", output="blue"), TrainingExample(input="color of leaf?", output="green")]
    evaluation = evaluate_model(model, tiny_tokenizer, examples, max_length=32, batch_size=2, max_new_tokens=3,
                                metrics=("accuracy", "loss"))
    assert math.isfinite(evaluation.performance["loss"]) and evaluation.performance["loss"] > 0
    assert len(evaluation.predictions) == 2 and "accuracy" in evaluation.performance
