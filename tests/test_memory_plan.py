"""The memory planner: its estimate against a measured step, its choices, and its refusals."""

from __future__ import annotations

import json
import math

import pytest

from tuneforge.core.memory import PeakMemory, current_memory_mb, parse_memory_size
from tuneforge.train import memory_plan
from tuneforge.train.memory_plan import (
    MemoryPlanError, ModelShape, Sharding, check_fits_at_all, estimate_step_memory, plan_memory, step_weights_mb,
    tokens_per_pass,
)

from helpers import read_events

SMOLLM2_135M = ModelShape(parameters=134_515_008, hidden=576, intermediate=1536, layers=30, vocab=49152)


def test_memory_sizes_parse_with_units_and_refuse_nonsense():
    assert parse_memory_size("12GB") == 12_000
    assert parse_memory_size("800 MB") == 800
    assert parse_memory_size("1.5TiB") == 1_500_000
    assert parse_memory_size(16) == 16_000
    for bad in ("lots", "-1GB", "0", "12XB"):
        with pytest.raises(ValueError):
            parse_memory_size(bad)


def test_a_pass_never_splits_an_example():
    assert tokens_per_pass(2048, 8, 512) == 2048
    assert tokens_per_pass(256, 8, 512) == 512  # one whole example at least
    assert tokens_per_pass(None, 8, 100) == 800
    assert tokens_per_pass(4096, 2, 100) == 200  # never more than the batch holds


def test_activations_grow_with_tokens_and_layers_and_checkpointing_cuts_them():
    def activations(tokens: int, checkpointing: bool, shape: ModelShape = SMOLLM2_135M) -> float:
        return estimate_step_memory(shape, weights_mb=0, trainable=0, tokens_per_pass=tokens, checkpointing=checkpointing,
                                    full=False, dtype_bytes=4).activations_mb

    assert activations(2048, False) == pytest.approx(2 * activations(1024, False), rel=0.01)
    assert activations(2048, True) < activations(2048, False) / 3  # 30 layers: most of it goes (RECOMPUTED_LAYERS is measured)
    deeper = ModelShape(**{**SMOLLM2_135M.__dict__, "layers": 60})
    assert activations(1024, False, deeper) > 1.9 * activations(1024, False)


def test_saved_tensor_recipes_lower_the_plan_only_where_they_run(monkeypatch):
    from tuneforge.config import FineTuningConfig
    from tuneforge.model import saved_recipes

    config = FineTuningConfig(data="unused.jsonl")
    assert memory_plan.recipe_tensors_of_run(config, full=False, precision="fp32") == 3  # two norm outputs, o_proj's input
    assert memory_plan.recipe_tensors_of_run(config.model_copy(update={"packing": False}), full=False, precision="fp32") == 2
    assert memory_plan.recipe_tensors_of_run(config.model_copy(update={"distributed": "fsdp"}), full=False, precision="fp32") == 0
    assert memory_plan.recipe_tensors_of_run(config, full=True, precision="bf16") == 0  # autocast saves cast copies
    monkeypatch.setattr(saved_recipes, "ENABLED", False)
    assert memory_plan.recipe_tensors_of_run(config, full=False, precision="fp32") == 0

    def per_token(checkpointing: bool, tensors: int) -> float:
        return memory_plan.activation_bytes_per_token(SMOLLM2_135M, full=False, checkpointing=checkpointing, dtype_bytes=4,
                                                      fused_mlp=True, recipe_tensors=tensors)

    saving = per_token(False, 0) - per_token(False, 3)
    assert saving == pytest.approx(4 * memory_plan.RECIPE_SAVING * 3 * 576 * 30)  # 0 while glibc keeps the memory
    assert per_token(True, 3) == per_token(True, 0)  # a recomputed layer runs without recipes


def test_the_plan_keeps_settings_that_fit(monkeypatch):
    plan = plan_memory(SMOLLM2_135M, resident_mb=1000, trainable=4_800_000, full=False, activation_dtype_bytes=4,
                       batch_size=8, longest_example=512, micro_batch_tokens=2048, gradient_checkpointing=False,
                       memory_limit="64GB")
    assert plan.fits and not plan.changed
    assert plan.micro_batch_tokens == 2048 and plan.gradient_checkpointing is False


def test_the_plan_shrinks_passes_first_then_recomputes():
    common = dict(resident_mb=1000, trainable=4_800_000, full=False, activation_dtype_bytes=4, batch_size=8,
                  longest_example=256, micro_batch_tokens=2048, gradient_checkpointing=False)
    at_2048 = plan_memory(SMOLLM2_135M, **common, memory_limit="64GB").estimate.total_mb
    smaller = plan_memory(SMOLLM2_135M, **common, memory_limit=f"{(at_2048 - 1000) / 1000:.2f}GB")
    assert smaller.fits and smaller.changed == {"micro_batch_tokens": 1024}
    assert "micro_batch_tokens 2048 → 1024" in smaller.message
    # Below what one example per pass needs without recomputation: checkpointing comes on.
    one_example = plan_memory(SMOLLM2_135M, **{**common, "micro_batch_tokens": 256}, memory_limit="64GB").estimate.total_mb
    tight = plan_memory(SMOLLM2_135M, **common, memory_limit=f"{(one_example - 50) / 1000:.3f}GB")
    assert tight.fits and tight.changed["gradient_checkpointing"] is True
    assert tight.estimate.total_mb <= tight.limit_mb
    hopeless = plan_memory(SMOLLM2_135M, **common, memory_limit="1.1GB")
    assert not hopeless.fits and "may be killed" in hopeless.message


def test_fsdp_divides_the_training_state_by_the_world_size_and_shards_the_weights():
    def estimate(sharding: Sharding):
        return estimate_step_memory(SMOLLM2_135M, weights_mb=538.0, trainable=SMOLLM2_135M.parameters, tokens_per_pass=512,
                                    checkpointing=False, full=True, dtype_bytes=4, sharding=sharding)

    alone, rank1, rank0 = estimate(Sharding()), estimate(Sharding(4)), estimate(Sharding(4, keeps_full_copy=True))
    assert rank1.training_state_mb == pytest.approx(alone.training_state_mb / 4)
    assert rank1.activations_mb == alone.activations_mb  # each process runs its passes whole
    # A shard of the weights plus what is gathered whole (embeddings, two layers); rank 0 also parks the whole model.
    assert 538.0 / 4 < rank1.weights_mb < 538.0 * 0.6
    assert rank0.weights_mb == pytest.approx(rank1.weights_mb + 538.0)
    assert step_weights_mb(538.0, SMOLLM2_135M, Sharding()) == 538.0


def test_under_fsdp_each_process_plans_its_share():
    common = dict(resident_mb=1100, trainable=SMOLLM2_135M.parameters, full=True, activation_dtype_bytes=4, batch_size=4,
                  longest_example=512, micro_batch_tokens=None, gradient_checkpointing=False, weights_mb=538.0)
    whole = plan_memory(SMOLLM2_135M, **common, memory_limit="64GB").estimate
    limit = whole.total_mb - whole.training_state_mb / 3  # short of what one process holding everything needs
    alone = plan_memory(SMOLLM2_135M, **common, memory_limit=f"{limit / 1000:.3f}GB")
    shared = plan_memory(SMOLLM2_135M, **common, memory_limit=f"{limit / 1000:.3f}GB", sharding=Sharding(2))
    assert alone.changed and not shared.changed and shared.fits
    assert shared.estimate.training_state_mb == pytest.approx(whole.training_state_mb / 2)
    assert shared.estimate.runtime_mb == pytest.approx(1100 - 538.0)  # the loaded weights are counted by their share


def test_the_sharding_comes_from_the_process_group_and_the_config(monkeypatch):
    from tuneforge.config import FineTuningConfig
    from tuneforge.train import distributed

    config = FineTuningConfig(data="unused.jsonl", distributed="fsdp")
    assert Sharding.of_run(config) == Sharding()  # not distributed: one process holds everything
    monkeypatch.setattr(distributed, "current_world", lambda: distributed.World(rank=0, size=4))
    assert Sharding.of_run(config) == Sharding(4, keeps_full_copy=True)
    monkeypatch.setattr(distributed, "current_world", lambda: distributed.World(rank=3, size=4))
    assert Sharding.of_run(config) == Sharding(4)
    assert Sharding.of_run(config.model_copy(update={"distributed": "ddp"})) == Sharding()


def test_a_run_that_cannot_fit_at_all_is_refused_with_figures():
    seven_b = ModelShape(parameters=7_000_000_000, hidden=4096, intermediate=11008, layers=32, vocab=32000)
    with pytest.raises(MemoryPlanError) as error:
        check_fits_at_all(seven_b, quantization=None, full=True, weight_dtype_bytes=4, activation_dtype_bytes=4,
                          longest_example=512, memory_limit="16GB")
    message = str(error.value)
    assert "16.0 GB is available (--memory-limit)" in message and "qlora" in message and "weights 28.0 GB" in message
    # The same model with a 4-bit base and LoRA fits a bigger machine.
    check_fits_at_all(seven_b, quantization="bnb-4bit", full=False, weight_dtype_bytes=4, activation_dtype_bytes=4,
                      longest_example=512, memory_limit="16GB")


def test_budget_without_a_limit_is_free_memory_less_headroom(monkeypatch):
    monkeypatch.setattr(memory_plan, "available_memory_mb", lambda: 10_000.0)
    limit, source = memory_plan.memory_budget_mb(None, resident_mb=2_000)
    assert limit == pytest.approx(2_000 + 10_000 - 1_200) and "headroom" in source
    monkeypatch.setattr(memory_plan, "available_memory_mb", lambda: None)
    assert memory_plan.memory_budget_mb(None, resident_mb=2_000)[0] == math.inf


def _return_free_heap() -> None:
    """glibc's ``malloc_trim(0)``: hand the heap's free pages back to the kernel (nothing where libc is not glibc)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def test_the_estimate_is_close_to_a_measured_training_step(tiny_model_dir, tmp_path):
    """The activation model against tuneforge's own step on a wider random Llama (so activations dominate the noise)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tuneforge.config import FineTuningConfig
    from tuneforge.data.tokenize import EncodedExample
    from tuneforge.model.methods import get_method, make_trainable
    from tuneforge.train.accumulation import accumulate_gradients
    from tuneforge.train.objectives import run_loss_sums

    shape = ModelShape(parameters=0, hidden=512, intermediate=1536, layers=4, vocab=8000)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                                         num_hidden_layers=shape.layers, num_attention_heads=8, num_key_value_heads=2,
                                         max_position_embeddings=2048, tie_word_embeddings=True))
    config = FineTuningConfig(data="unused.jsonl", micro_batch_tokens=None, precision="fp32")
    model = make_trainable(get_method("lora"), model, config)
    model.train()
    items = [EncodedExample(input_ids=[(i * 31 + j) % shape.vocab for j in range(256)],
                            labels=[-100] * 128 + [(i + j) % shape.vocab for j in range(128)]) for i in range(8)]
    _return_free_heap()  # memory earlier tests freed would otherwise be reused unseen by the peak RSS
    before = current_memory_mb()
    with PeakMemory("cpu") as span:
        accumulate_gradients(model, [items], config, run_loss_sums(config), "fp32", 0, "cpu")
    measured = span.peak_mb - before
    estimate = estimate_step_memory(shape, weights_mb=0, trainable=0, tokens_per_pass=2048, checkpointing=False,
                                    full=False, dtype_bytes=4,
                                    recipe_tensors=memory_plan.recipe_tensors_of_run(config, full=False, precision="fp32"))
    predicted = estimate.activations_mb + estimate.logits_mb
    assert 0.7 * measured <= predicted <= 1.4 * measured, (predicted, measured)


def test_a_run_shrinks_its_passes_to_a_tight_limit_and_says_so(tiny_model_dir, tmp_path, write_dataset, monkeypatch):
    import tuneforge.core.memory as core_memory
    from tuneforge.config import FineTuningConfig
    from tuneforge.pipeline import FineTuningPipeline

    from helpers import FAST

    # The planner reads the process's resident size when the model is ready: pin it so the budget is exact.
    monkeypatch.setattr(core_memory, "current_memory_mb", lambda: 1000.0)
    config = FineTuningConfig(**{**FAST, "data": str(write_dataset()), "model": str(tiny_model_dir),
                                 "output": str(tmp_path / "run"), "memory_limit": "1.0115GB", "max_steps": 2,
                                 "batch_size": 8, "micro_batch_tokens": 4096,
                                 "precision": "fp32"})  # the budget is set for fp32 (auto is bf16 on bf16 CPUs)
    result = FineTuningPipeline(config, handle_signals=False).train()
    planned = [e for e in read_events(result.run_dir) if e["type"] in ("memory.planned", "memory.warning")]
    assert [e["type"] for e in planned] == ["memory.planned"]
    plan = planned[0]
    assert plan["limit_source"] == "--memory-limit" and plan["estimate"]["total_mb"] <= 1011.5
    assert 0 < plan["changed"]["micro_batch_tokens"] < 4096 and "micro_batch_tokens 4096 →" in plan["message"]
    assert json.loads((result.run_dir / "results.json").read_text())["status"] == "succeeded"


def test_no_plan_when_switched_off(tiny_model_dir, tmp_path, write_dataset):
    from tuneforge.config import FineTuningConfig
    from tuneforge.pipeline import FineTuningPipeline

    from helpers import FAST

    config = FineTuningConfig(**{**FAST, "data": str(write_dataset()), "model": str(tiny_model_dir),
                                 "output": str(tmp_path / "run"), "memory_plan": False, "max_steps": 1})
    result = FineTuningPipeline(config, handle_signals=False).train()
    assert not [e for e in read_events(result.run_dir) if e["type"].startswith("memory.")]


def test_a_memory_limit_that_is_not_a_size_is_a_config_error():
    from tuneforge.config import FineTuningConfig
    from tuneforge.core.errors import ConfigError

    with pytest.raises((ConfigError, ValueError)) as error:
        FineTuningConfig(data="x.jsonl", memory_limit="plenty")
    assert "12GB" in str(error.value)


def test_under_tcmalloc_the_activations_are_planned_at_the_measured_share():
    from tuneforge.train.memory_plan import TCMALLOC_ACTIVATION_FACTOR, allocator_activation_factor

    shape = ModelShape(parameters=1_700_000_000, hidden=2048, intermediate=8192, layers=24, vocab=49152)
    common = dict(weights_mb=6_900, trainable=18_000_000, tokens_per_pass=1024, checkpointing=False, full=False,
                  dtype_bytes=4, fused_mlp=True)
    glibc = estimate_step_memory(shape, **common, activation_factor=allocator_activation_factor("system"))
    tcmalloc = estimate_step_memory(shape, **common, activation_factor=allocator_activation_factor("tcmalloc"))
    assert tcmalloc.weights_mb == glibc.weights_mb and tcmalloc.training_state_mb == glibc.training_state_mb
    moving = lambda e: e.activations_mb + e.logits_mb - memory_plan.FIXED_STEP_MB  # noqa: E731
    assert moving(tcmalloc) == pytest.approx(TCMALLOC_ACTIVATION_FACTOR * moving(glibc))
    # the measured SmolLM2-1.7B-shaped step (bench/results/scale.json): 10,756 MB peak under tcmalloc at 1,024 tokens;
    # the plan (500 MB runtime assumed here) stays above what tcmalloc measured and below glibc's plan
    assert 10_756 <= tcmalloc.total_mb < glibc.total_mb


def test_without_the_fused_mlp_tcmalloc_is_planned_at_its_own_higher_share():
    from tuneforge.train.memory_plan import allocator_activation_factor

    # QLoRA's 4-bit layers keep PEFT's MLP: its steps peaked at 0.58-0.70 of the glibc figure, the fused ones 0.42-0.52
    assert allocator_activation_factor("tcmalloc", fused_mlp=False) >= 0.70
    assert 0.52 <= allocator_activation_factor("tcmalloc") < allocator_activation_factor("tcmalloc", fused_mlp=False)
    assert allocator_activation_factor("system", fused_mlp=False) == allocator_activation_factor("system") == 1.0
