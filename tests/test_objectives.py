"""The objective seam: the loop asks the config's objective for each batch's loss sums; ``sft`` is the fused
path; a method that needs its wrapper's forward (prompt/prefix tuning) gets it; a user loss is one function."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from helpers import read_events
from tuneforge.config import make_config
from tuneforge.core.errors import ConfigError
from tuneforge.core.registries import OBJECTIVES
from tuneforge.data.batching import collate, collate_packed
from tuneforge.data.examples import TrainingExample
from tuneforge.data.tokenize import encode_example
from tuneforge.model.attention import use_packed_attention
from tuneforge.model.loss import LossSums, label_loss_sums
from tuneforge.model.methods.lora import LoraMethod
from tuneforge.pipeline import FineTuningPipeline
from tuneforge.train.objectives import get_objective
from tuneforge.train.objectives.sft import sft

PAIRS = [("color of the sky?", "blue"), ("what color is grass in summer, usually?", "green"), ("snow?", "white")]
FAST_RUN = dict(max_steps=2, batch_size=4, max_length=64, evaluate_base=False, test_split=0.0, validation_split=0.1,
                evaluation_strategy="steps", eval_steps=1, saving_strategy="no", precision="fp32", seed=3)

SEEN_THROUGH_WRAPPER: list[bool] = []


def half_sft(model: Any, batch: dict[str, Any], *, through_wrapper: bool) -> LossSums:
    """A user-defined loss: half the cross-entropy (records how it was asked to run)."""
    SEEN_THROUGH_WRAPPER.append(through_wrapper)
    sums = label_loss_sums(model, batch, through_wrapper)
    sums.loss_sum = sums.loss_sum * 0.5
    return sums


class WrappedLora(LoraMethod):
    """LoRA that asks for the wrapper's forward, as prompt/prefix tuning must."""

    name = "lora_wrapped"
    forward_through_wrapper = True


@pytest.fixture(scope="module")
def batches(tiny_tokenizer):
    items = [encode_example(tiny_tokenizer, TrainingExample.from_pair(q, a), 128) for q, a in PAIRS]
    return collate(items, tiny_tokenizer.pad_token_id), collate_packed(items)


def _grads(model: Any) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    return grads


def test_sft_is_registered_and_is_the_fused_loss(tiny_model, batches):
    assert {"sft", "dpo", "orpo"} <= set(OBJECTIVES.names()) and get_objective("sft") is sft
    padded, _ = batches
    with torch.no_grad():
        a, b = sft(tiny_model, padded, through_wrapper=False), label_loss_sums(tiny_model, padded)
    assert torch.equal(a.loss_sum, b.loss_sum) and (a.tokens, a.correct) == (b.tokens, b.correct)


def test_through_the_wrapper_equals_the_direct_path_for_lora(tiny_model_dir, batches):
    from transformers import AutoModelForCausalLM

    from tuneforge.model.adapters import apply_lora

    torch.manual_seed(0)
    model = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), 4, 8, 0.0, "all-linear")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    use_packed_attention(model)
    for batch in batches:  # padded, then packed
        direct = label_loss_sums(model, batch)
        direct.loss_sum.backward()
        direct_grads = _grads(model)
        wrapped = label_loss_sums(model, batch, through_wrapper=True)
        wrapped.loss_sum.backward()
        assert torch.allclose(wrapped.loss_sum, direct.loss_sum, rtol=1e-6)
        assert (wrapped.tokens, wrapped.correct) == (direct.tokens, direct.correct)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_grads(model), direct_grads))


def test_prompt_tuning_needs_the_wrapper_forward(tiny_model_dir, batches):
    """Prompt tuning injects virtual tokens in PeftModel.forward: only the wrapper path sees (and trains) them."""
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    padded, _ = batches
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                           PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    wrapped = label_loss_sums(model, padded, through_wrapper=True)
    wrapped.loss_sum.backward()
    [(name, prompt)] = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert "prompt_encoder" in name and prompt.grad is not None and prompt.grad.abs().sum() > 0
    with torch.no_grad():
        reference = model(**padded).loss * wrapped.tokens  # PEFT's own loss over the same labels
        direct = label_loss_sums(model, padded)
    assert float(wrapped.loss_sum.detach()) == pytest.approx(float(reference), rel=1e-5)
    assert float(direct.loss_sum) != pytest.approx(float(reference), rel=1e-5)  # the bare decoder ignores the prompt


def test_a_user_objective_is_one_function_named_in_the_config(tiny_model_dir, session_dataset, tmp_path):
    values = {"data": str(session_dataset), "model": str(tiny_model_dir), **FAST_RUN}
    reference = FineTuningPipeline(make_config({**values, "output": str(tmp_path / "sft")}), handle_signals=False).train()
    SEEN_THROUGH_WRAPPER.clear()
    halved = FineTuningPipeline(make_config({**values, "output": str(tmp_path / "half"), "objective": f"{__name__}:half_sft"}),
                                handle_signals=False).train()
    assert str(reference.status) == str(halved.status) == "succeeded"
    first = [next(e for e in read_events(tmp_path / run) if e["type"] == "train.step") for run in ("sft", "half")]
    assert first[1]["loss"] == pytest.approx(first[0]["loss"] / 2, rel=1e-6)  # same start, the loss is the user's
    evals = [next(e for e in read_events(tmp_path / run) if e["type"] == "eval.result") for run in ("sft", "half")]
    assert evals[1]["validation_loss"] < evals[0]["validation_loss"]  # validation measures the objective too
    assert SEEN_THROUGH_WRAPPER and not any(SEEN_THROUGH_WRAPPER)  # LoRA: the fused direct path


def test_the_method_decides_whether_the_objective_runs_through_the_wrapper(tiny_model_dir, session_dataset, tmp_path):
    SEEN_THROUGH_WRAPPER.clear()
    values = {"data": str(session_dataset), "model": str(tiny_model_dir), **FAST_RUN, "output": str(tmp_path / "run"),
              "method": f"{__name__}:WrappedLora", "objective": f"{__name__}:half_sft"}
    result = FineTuningPipeline(make_config(values), handle_signals=False).train()
    assert str(result.status) == "succeeded"
    assert SEEN_THROUGH_WRAPPER and all(SEEN_THROUGH_WRAPPER)


def not_a_loss(model: Any) -> None:
    return None


def test_unknown_or_unfit_objectives_are_config_errors():
    with pytest.raises(ConfigError, match=r"objective: unknown training objective 'ppo'; choose from: dpo, orpo, sft"):
        make_config({"objective": "ppo"})
    with pytest.raises(ConfigError, match=r"objective: .*must accept \(model, batch, \*, through_wrapper\)"):
        make_config({"objective": f"{__name__}:not_a_loss"})
    with pytest.raises(ConfigError, match="expected a loss function"):
        make_config({"objective": f"{__name__}:PAIRS"})
    assert make_config({}).objective == "sft"


def test_evaluation_loss_of_a_prompt_tuned_model_goes_through_the_wrapper(tiny_model_dir, batches):
    """Code holding only a model (evaluate_model) still sees the virtual tokens a prompt-learning wrapper adds."""
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.model.loss import mean_label_loss, wrapper_injects_state

    padded, _ = batches
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert not wrapper_injects_state(base)
    torch.manual_seed(0)
    model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    assert wrapper_injects_state(model)
    with torch.no_grad():
        expected = float(model(**padded).loss)
    assert mean_label_loss(model, [padded])["loss"] == pytest.approx(expected, rel=1e-5)
