"""Plan a run's memory before it trains: estimate the peak, and choose pass size and recomputation to fit.

Two checks, both cheap:

1. ``check_fits_at_all`` runs before the run directory exists (only the model's ``config.json``
   is read): when even the smallest possible setting — gradient checkpointing, one example per
   pass — needs more than the memory available, the run is refused with the figures and what to
   change. A run that is certain to be killed by the kernel never starts.
2. ``plan_memory`` runs once the trainable model is in memory (its resident size is then measured,
   not guessed): it estimates the peak of a training step at the configured pass size and, when
   that would not fit, halves the pass size (``micro_batch_tokens``) and then turns on gradient
   checkpointing until it does. Neither changes the result — the passes' gradients add up to the
   whole batch's, and recomputation is exact — so only memory and speed move.

Under FSDP (``distributed: fsdp``, train/fsdp.py) each of the N processes holds 1/N of the
weights, gradients and AdamW state, plus what is gathered whole while a step runs (the root's
embeddings and head, and the decoder layer being computed with the one prefetched); rank 0 also
keeps the whole model parked in CPU memory. ``Sharding`` says which, and each process plans its own
share (``micro_batch_tokens`` and ``gradient_checkpointing`` may differ between processes: they
change memory, not results).

The activation figures are a model of what the training step saves for the backward pass, per
token, fitted to peak-RSS measurements of tuneforge's own step on this code path (random Llama
shapes, fp32, 512 and 2,048 tokens per pass; ``bench/scale_bench.py`` re-measures them against the
estimate). In bf16 the saved activations are assumed to halve (the loss's logits chunks stay fp32).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tuneforge.data.tokenize import EncodedDataset
from tuneforge.model.methods import get_method

from tuneforge.config import FineTuningConfig
from tuneforge.core.allocator import loaded_allocator
from tuneforge.core.errors import TuneforgeError
from tuneforge.core.memory import available_memory_mb, parse_memory_size

MB = 1e6
# Saved for backward per token and decoder layer, in activation elements: a·hidden + b·intermediate
# (LoRA on every linear layer; full fine-tuning saves no adapter intermediates: FULL_FACTOR of it).
LAYER_HIDDEN_FACTOR = 17.5
LAYER_INTERMEDIATE_FACTOR = 3.5
# The fused LoRA MLP (model/fast_mlp.py) keeps gate(x) and up(x) only, not SiLU(gate) and the product: two
# intermediate-width tensors fewer are saved, but its backward pass recomputes them, so the peak falls by less —
# about 1.1 of them, measured (SmolLM2-1.7B shape, LoRA, 1,024 tokens: 13.58 GB peak RSS, bench/results/scale.md).
FUSED_MLP_SAVING = 1.1
# Saved-tensor recipes (model/saved_recipes.py) keep no copy of the norms' outputs and o_proj's input: three
# hidden-wide tensors per layer fewer are saved with packed batches (two with padded ones: transformers' SDPA
# output stays), counted with saved_tensors_hooks (bench/results/saved.md: SmolLM2-135M LoRA 7,615 -> 5,887 floats
# per token and layer). What the planner plans is peak RSS, and there the saving does not show with glibc's default
# malloc: one 2,413-token LoRA pass peaked within ±120 MB either way (two fresh-process runs each way, -0.25 and
# +0.23 of each dropped tensor), because its dynamic mmap threshold keeps freed activations in the heap; with
# MALLOC_MMAP_THRESHOLD_=1048576 the same pass peaks 478 MB lower (0.97 of each tensor). So RECIPE_SAVING, the
# hidden-widths of peak each dropped tensor saves, stays 0 (never plan low) until the allocator returns freed
# activations; then ~0.97 is what was measured. Not under checkpointing (a recomputed layer runs without recipes).
# Under tcmalloc the recipes' saving does show (the speed work: 2.44 GB with them, 2.80 GB without); it is part of
# what TCMALLOC_ACTIVATION_FACTOR below was measured with, so it is not counted again here.
RECIPE_SAVING = 0.0
# Under tcmalloc (core/allocator.py: the `tuneforge` command trains under it when installed) freed activations are
# reused across differently shaped passes instead of growing glibc's heap. In one quiet run of bench/scale_bench.py
# (bench/results/scale.json, peaks read in bytes) a step's activations peaked at 0.42-0.52 of this model's
# glibc-fitted figure with the fused LoRA MLP (SmolLM2-135M/360M/1.7B, Qwen2.5-0.5B/1.5B, Llama-3.2-1B shapes,
# 128-2,048 tokens; the largest at 1.7B) and at 0.58-0.70 without it (QLoRA's 4-bit layers keep PEFT's MLP: SmolLM2-135M,
# Qwen2.5-0.5B, SmolLM2-1.7B). Planned with a margin over the highest of each; glibc measured 0.67-1.0.
TCMALLOC_ACTIVATION_FACTOR = 0.55
TCMALLOC_UNFUSED_ACTIVATION_FACTOR = 0.75
FULL_FACTOR = 0.87
# Outside the layers (embeddings, final norm, hidden-state gradients) per token: this many × hidden.
OUTSIDE_HIDDEN_FACTOR = 10.3
# With gradient checkpointing a layer keeps only its input; one layer is recomputed at a time and
# its activations and their gradients coexist: about this many layers' worth.
# 2 (one layer's activations and their gradients) planned a checkpointed SmolLM2-1.7B-shaped step 12 % low
# (8.55 planned, 9.70 GB measured at 1,024 tokens): fitted to that measured run.
RECOMPUTED_LAYERS = 6.8
# The fused loss works on chunks of 128 logit rows (logits and their gradient, fp32): bytes per vocabulary entry.
LOGITS_BYTES_PER_VOCAB = 128 * 4 * 2
FIXED_STEP_MB = 10.0
# Whole runs of the pipeline peaked 2.5-3.5 % above the step model (bench/scale_bench.py): a margin over it.
ACTIVATION_MARGIN = 1.05
# Measured resident size of the Python process with torch, transformers and tuneforge loaded, weights aside.
RUNTIME_MB = 500.0
# AdamW: the parameter, its gradient and two moments, fp32.
TRAINABLE_BYTES = 16
# Never plan to use the last of the memory: leave this share of it (and at least HEADROOM_MIN_MB).
HEADROOM_SHARE = 0.10
HEADROOM_MIN_MB = 512.0
MIN_PASS_TOKENS = 64
# FSDP gathers one decoder layer for its forward/backward and prefetches the next: two layers whole at a time.
GATHERED_LAYERS = 2


class MemoryPlanError(TuneforgeError):
    """The run cannot fit in the memory available; the message has the figures and what to change."""


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on in a decoder model: its size and its widths."""

    parameters: int
    hidden: int
    intermediate: int
    layers: int
    vocab: int

    @classmethod
    def from_model_dir(cls, model_dir: Path, trust_remote_code: bool = False) -> "ModelShape":
        """Read ``config.json`` and count the parameters on the meta device (no weights are loaded).

        Both checks of a run ask for the same model: the shape is read once per directory.
        """
        directory = Path(model_dir).resolve()
        config_file = directory / "config.json"
        stamp = config_file.stat().st_mtime_ns if config_file.is_file() else 0
        return _shape_of(str(directory), stamp, trust_remote_code)

    @classmethod
    def _read(cls, model_dir: Path, trust_remote_code: bool) -> "ModelShape":
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        text = getattr(config, "text_config", None) or config
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        parameters = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0) or 0)
        return cls(
            parameters=parameters, hidden=hidden,
            intermediate=int(getattr(text, "intermediate_size", 0) or getattr(text, "n_inner", 0) or 4 * hidden),
            layers=int(getattr(text, "num_hidden_layers", 0) or getattr(text, "n_layer", 0) or 1),
            vocab=int(getattr(text, "vocab_size", 0) or 0),
        )


@dataclass(frozen=True)
class Sharding:
    """How a process's share of the model is cut under FSDP (``processes`` 1: it holds everything)."""

    processes: int = 1  # the world size the parameters, gradients and optimizer state are split over
    keeps_full_copy: bool = False  # rank 0 parks the whole model in CPU memory while training (fsdp.copy_to_shard)

    @classmethod
    def of_run(cls, config: FineTuningConfig) -> Sharding:
        """This process's sharding: FSDP's over the initialised process group, else none."""
        from tuneforge.train.distributed import current_world

        world = current_world()
        if config.distributed != "fsdp" or not world.active:
            return NOT_SHARDED
        return cls(processes=world.size, keeps_full_copy=world.is_main)


NOT_SHARDED = Sharding()


def step_weights_mb(weights_mb: float, shape: ModelShape, sharding: Sharding) -> float:
    """The weights one process holds during a step, of a model whose weights are ``weights_mb`` whole.

    Unsharded: all of them. Under FSDP: its 1/N shard, the parameters gathered whole while the step
    runs (the root's embeddings and head throughout, ``GATHERED_LAYERS`` decoder layers at a time),
    and on rank 0 the whole parked copy.
    """
    if sharding.processes <= 1:
        return weights_mb
    root = min(shape.parameters, shape.vocab * shape.hidden)  # embeddings (a tied head reads the same)
    layer = (shape.parameters - root) / max(shape.layers, 1)
    gathered = weights_mb * min(1.0, (root + GATHERED_LAYERS * layer) / max(shape.parameters, 1))
    return weights_mb / sharding.processes + gathered + (weights_mb if sharding.keeps_full_copy else 0.0)


@dataclass
class MemoryEstimate:
    """The expected peak resident memory of a training step, by part, in MB."""

    weights_mb: float
    training_state_mb: float
    activations_mb: float
    logits_mb: float
    runtime_mb: float

    @property
    def total_mb(self) -> float:
        return self.weights_mb + self.training_state_mb + self.activations_mb + self.logits_mb + self.runtime_mb

    def to_dict(self) -> dict[str, float]:
        return {**{k: round(v, 1) for k, v in asdict(self).items()}, "total_mb": round(self.total_mb, 1)}


@dataclass
class MemoryPlan:
    """What the planner chose and why; ``fits`` is False only when even its smallest setting does not fit."""

    limit_mb: float
    limit_source: str
    micro_batch_tokens: int | None
    gradient_checkpointing: bool
    estimate: MemoryEstimate
    fits: bool
    changed: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"limit_mb": round(self.limit_mb, 1), "limit_source": self.limit_source,
                "micro_batch_tokens": self.micro_batch_tokens, "gradient_checkpointing": self.gradient_checkpointing,
                "estimate": self.estimate.to_dict(), "fits": self.fits, "changed": self.changed, "reasons": self.reasons}

    @property
    def message(self) -> str:
        head = (f"memory: a training step needs about {_gb(self.estimate.total_mb)} of the {_gb(self.limit_mb)} "
                f"available ({self.limit_source})")
        return "; ".join([head, *self.reasons])


def memory_budget_mb(memory_limit: str | float | None, resident_mb: float) -> tuple[float, str]:
    """The peak this process may reach, and where the figure comes from.

    ``memory_limit`` (``--memory-limit``) wins; else what this process holds now plus what the
    machine has available, less headroom. Unknown machine memory: no limit (infinity).
    """
    if memory_limit is not None:
        return parse_memory_size(memory_limit), "--memory-limit"
    available = available_memory_mb()
    if available is None:
        return math.inf, "memory available unknown"
    headroom = max(HEADROOM_MIN_MB, HEADROOM_SHARE * (available + resident_mb))
    return resident_mb + available - headroom, f"free memory less {_gb(headroom)} headroom"


def activation_bytes_per_token(shape: ModelShape, full: bool, checkpointing: bool, dtype_bytes: int,
                               fused_mlp: bool = False, recipe_tensors: int = 0) -> float:
    """Bytes one token of a pass keeps for the backward pass (logits aside); ``fused_mlp``: LoRA's fused gated MLP.

    ``recipe_tensors``: hidden-wide tensors per layer that saved-tensor recipes keep no copy of (``recipe_tensors_of_run``).
    """
    intermediate = LAYER_INTERMEDIATE_FACTOR - (FUSED_MLP_SAVING if fused_mlp else 0.0)
    layer = dtype_bytes * (LAYER_HIDDEN_FACTOR * shape.hidden + intermediate * shape.intermediate)
    if full:
        layer *= FULL_FACTOR
    outside = dtype_bytes * OUTSIDE_HIDDEN_FACTOR * shape.hidden
    if checkpointing:
        return shape.layers * dtype_bytes * shape.hidden + RECOMPUTED_LAYERS * layer + outside
    layer -= dtype_bytes * RECIPE_SAVING * recipe_tensors * shape.hidden  # the same tensors, LoRA or full
    return shape.layers * layer + outside


def recipe_tensors_of_run(config: FineTuningConfig, full: bool, precision: str) -> int:
    """Hidden-wide tensors per layer that saved-tensor recipes (model/saved_recipes.py) keep no copy of in this run.

    None when they are off (the module switch, FSDP) or under autocast (full fine-tuning in bf16: the layers save
    the cast copies of the norms' outputs); else the norms' two outputs, and o_proj's input with packed batches.
    """
    from tuneforge.model import saved_recipes

    if not saved_recipes.ENABLED or config.distributed == "fsdp" or (full and precision == "bf16"):
        return 0
    return 3 if config.packing else 2


def estimate_step_memory(shape: ModelShape, *, weights_mb: float, trainable: int, tokens_per_pass: int,
                         checkpointing: bool, full: bool, dtype_bytes: int, runtime_mb: float = RUNTIME_MB,
                         fused_mlp: bool = False, sharding: Sharding = NOT_SHARDED, recipe_tensors: int = 0,
                         activation_factor: float = 1.0) -> MemoryEstimate:
    """The peak of one training step: weights, AdamW state of the trainable parameters, one pass's activations.

    ``weights_mb`` is the whole model's; under FSDP (``sharding``) the process holds its share of it
    (``step_weights_mb``) and 1/N of the trainable parameters' gradients and optimizer state.
    ``activation_factor`` scales the activations and logits for the allocator (``allocator_activation_factor``).
    """
    per_token = activation_bytes_per_token(shape, full, checkpointing, dtype_bytes, fused_mlp, recipe_tensors)
    activations = activation_factor * ACTIVATION_MARGIN * tokens_per_pass * per_token / MB
    return MemoryEstimate(
        weights_mb=step_weights_mb(weights_mb, shape, sharding),
        training_state_mb=trainable * TRAINABLE_BYTES / MB / max(sharding.processes, 1),
        activations_mb=activations + FIXED_STEP_MB,
        logits_mb=activation_factor * LOGITS_BYTES_PER_VOCAB * shape.vocab / MB,
        runtime_mb=runtime_mb,
    )


def allocator_activation_factor(allocator: str, fused_mlp: bool = True) -> float:
    """How much of the glibc-fitted activation estimate a step under ``allocator`` (``loaded_allocator()``) peaks at;
    ``fused_mlp``: whether the model's MLPs are the fused LoRA MLP (model/fast_mlp.py)."""
    if allocator != "tcmalloc":
        return 1.0
    return TCMALLOC_ACTIVATION_FACTOR if fused_mlp else TCMALLOC_UNFUSED_ACTIVATION_FACTOR


def tokens_per_pass(micro_batch_tokens: int | None, batch_size: int, longest_example: int) -> int:
    """The most tokens one forward/backward pass can hold: a pass never splits an example."""
    whole_batch = batch_size * longest_example
    if micro_batch_tokens is None:
        return whole_batch
    return min(whole_batch, max(micro_batch_tokens, longest_example))


def weight_bytes_per_parameter(quantization: str | None, dtype_bytes: int) -> float:
    """Resident bytes per base weight: 4-bit NF4 with its block constants, else the storage dtype."""
    return 0.56 if quantization == "bnb-4bit" else float(dtype_bytes)


def trainable_guess(shape: ModelShape, full: bool) -> int:
    """Trainable parameters before the model exists: all of them (full) or a generous adapter share (2 %)."""
    return shape.parameters if full else int(0.02 * shape.parameters)


def check_fits_at_all(shape: ModelShape, *, quantization: str | None, full: bool, weight_dtype_bytes: int,
                      activation_dtype_bytes: int, longest_example: int, memory_limit: str | float | None,
                      sharding: Sharding = NOT_SHARDED) -> MemoryEstimate:
    """Refuse (``MemoryPlanError``) a run that cannot fit even at its smallest setting; return that smallest estimate.

    ``sharding``: this process's FSDP share (the check is each process's own).
    """
    weights = shape.parameters * weight_bytes_per_parameter(quantization, weight_dtype_bytes) / MB
    smallest = estimate_step_memory(shape, weights_mb=weights, trainable=trainable_guess(shape, full),
                                    tokens_per_pass=max(longest_example, MIN_PASS_TOKENS), checkpointing=True, full=full,
                                    dtype_bytes=activation_dtype_bytes, sharding=sharding)
    limit, source = memory_budget_mb(memory_limit, resident_mb=_current_mb())
    if smallest.total_mb > limit:
        raise MemoryPlanError(
            f"this run needs at least {_gb(smallest.total_mb)} (weights {_gb(smallest.weights_mb)}, optimizer state "
            f"{_gb(smallest.training_state_mb)}, one example of {longest_example} tokens with gradient checkpointing "
            f"{_gb(smallest.activations_mb + smallest.logits_mb)}, runtime {_gb(smallest.runtime_mb)}) but "
            f"{_gb(limit)} is available ({source}); it would be killed. Choose a smaller model, --method qlora "
            "(4-bit base) or lora instead of full, a lower --max-length, or free memory"
            + (" (or raise --memory-limit)" if memory_limit is not None else "")
        )
    return smallest


def plan_memory(shape: ModelShape, *, resident_mb: float, trainable: int, full: bool, activation_dtype_bytes: int,
                batch_size: int, longest_example: int, micro_batch_tokens: int | None, gradient_checkpointing: bool,
                memory_limit: str | float | None, fused_mlp: bool = False, sharding: Sharding = NOT_SHARDED,
                weights_mb: float = 0.0, recipe_tensors: int = 0, activation_factor: float = 1.0) -> MemoryPlan:
    """Choose pass size and recomputation so that a training step fits the budget (see the module docstring).

    ``resident_mb`` is what the process holds with the trainable model loaded: it stands for the
    weights and the runtime, measured. The configured values are kept whenever they fit; otherwise
    the pass size is halved down to one example, then checkpointing is turned on and the pass size
    searched again from the configured one. ``fits`` is False when nothing fits (the caller warns;
    the estimate is conservative, so the run may still complete).

    Under FSDP (``sharding``), ``weights_mb`` (the whole model's weights, part of ``resident_mb`` as
    loaded) is replaced by the process's share of them during a step (``step_weights_mb``), and the
    training state is its 1/N.
    """
    limit, source = memory_budget_mb(memory_limit, resident_mb)
    sharded = sharding.processes > 1
    whole_weights, runtime = (weights_mb, resident_mb - weights_mb) if sharded else (0.0, resident_mb)

    def estimate(tokens: int, checkpointing: bool) -> MemoryEstimate:
        return estimate_step_memory(shape, weights_mb=whole_weights, trainable=trainable, runtime_mb=runtime, full=full,
                                    tokens_per_pass=tokens_per_pass(tokens, batch_size, longest_example),
                                    checkpointing=checkpointing, dtype_bytes=activation_dtype_bytes, fused_mlp=fused_mlp,
                                    sharding=sharding, recipe_tensors=recipe_tensors, activation_factor=activation_factor)

    configured_tokens = tokens_per_pass(micro_batch_tokens, batch_size, longest_example)
    first = estimate(configured_tokens, gradient_checkpointing)
    if first.total_mb <= limit:
        return MemoryPlan(limit, source, micro_batch_tokens, gradient_checkpointing, first, True)
    # Smaller passes first (no slower per token on a CPU), recomputation only when they are not enough.
    for checkpointing in ([True] if gradient_checkpointing else [False, True]):
        for tokens in _halvings(configured_tokens, longest_example):
            if (tokens, checkpointing) == (configured_tokens, gradient_checkpointing):
                continue
            candidate = estimate(tokens, checkpointing)
            if candidate.total_mb <= limit:
                chosen_tokens = micro_batch_tokens if tokens == configured_tokens else tokens
                return _changed_plan(limit, source, first, candidate, chosen_tokens, checkpointing,
                                     micro_batch_tokens, gradient_checkpointing)
    smallest = estimate(longest_example, True)
    return MemoryPlan(limit, source, longest_example, True, smallest, False,
                      changed={"micro_batch_tokens": longest_example, "gradient_checkpointing": True},
                      reasons=[f"even one example per pass with gradient checkpointing needs about {_gb(smallest.total_mb)}: "
                               "the run may be killed; lower --max-length or --batch-size, or use --method qlora"])


def _halvings(start: int, floor: int) -> list[int]:
    """``start``, then halved down to ``floor`` (included): the pass sizes tried."""
    sizes = [start]
    while sizes[-1] > floor:
        sizes.append(max(floor, sizes[-1] // 2))
    return sizes


def _changed_plan(limit: float, source: str, first: MemoryEstimate, chosen: MemoryEstimate, tokens: int | None,
                  checkpointing: bool, configured_tokens: int | None, configured_checkpointing: bool) -> MemoryPlan:
    changed: dict[str, Any] = {}
    reasons = [f"at the configured settings it would need about {_gb(first.total_mb)}"]
    if tokens != configured_tokens:
        changed["micro_batch_tokens"] = tokens
        reasons.append(f"micro_batch_tokens {configured_tokens} → {tokens} (passes of at most {tokens} tokens; "
                       "same gradients, less activation memory)")
    if checkpointing != configured_checkpointing:
        changed["gradient_checkpointing"] = checkpointing
        reasons.append("gradient checkpointing on (activations recomputed in the backward pass: about a third slower)")
    return MemoryPlan(limit, source, tokens, checkpointing, chosen, True, changed=changed, reasons=reasons)


def check_memory_before_loading(config: FineTuningConfig, model_dir: Path, train_set: EncodedDataset) -> None:
    """The pipeline's first check (before the run directory): ``MemoryPlanError`` for a run that cannot fit at all."""
    if not config.memory_plan or not train_set.items:
        return
    method, precision = _method_and_precision(config)
    shape = ModelShape.from_model_dir(model_dir, config.trust_remote_code)
    check_fits_at_all(shape, quantization=method.quantization, full=not method.freezes_base,
                      weight_dtype_bytes=_dtype_bytes(method.base_dtype(precision)),
                      activation_dtype_bytes=2 if precision == "bf16" else 4,
                      longest_example=_longest(train_set), memory_limit=config.memory_limit,
                      sharding=Sharding.of_run(config))


def fit_memory(model: Any, config: FineTuningConfig, model_dir: Path, train_set: EncodedDataset, trainable: int,
               precision: str, notify: Callable[..., Any]) -> FineTuningConfig:
    """The pipeline's second check, with the trainable ``model`` loaded: the config to train with.

    When the configured pass size and checkpointing would not fit, the returned config has the
    planned ones (and checkpointing is switched on in ``model``); a ``memory.planned`` event says
    what was chosen and why. Where nothing fits, a ``memory.warning`` event says so and training
    goes on with the smallest setting (the estimate is conservative).
    """
    if not config.memory_plan or not train_set.items:
        return config
    from tuneforge.core.memory import current_memory_mb
    from tuneforge.model.fast_mlp import fused_mlp_count
    from tuneforge.model.methods import enable_gradient_checkpointing

    method = get_method(config.method)
    # Weights loaded from safetensors may still be file-backed pages the first pass will touch: count them as resident.
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / MB
    resident = max(current_memory_mb(), weights_mb + RUNTIME_MB)
    allocator = loaded_allocator()  # tcmalloc keeps a step's activations lower than glibc (TCMALLOC_ACTIVATION_FACTOR)
    fused = fused_mlp_count(model) > 0
    plan = plan_memory(ModelShape.from_model_dir(model_dir, config.trust_remote_code), resident_mb=resident,
                       trainable=trainable, full=not method.freezes_base,
                       activation_dtype_bytes=2 if precision == "bf16" else 4, batch_size=config.batch_size,
                       longest_example=_longest(train_set), micro_batch_tokens=config.micro_batch_tokens,
                       gradient_checkpointing=config.gradient_checkpointing, memory_limit=config.memory_limit,
                       fused_mlp=fused, sharding=Sharding.of_run(config), weights_mb=weights_mb,
                       recipe_tensors=recipe_tensors_of_run(config, not method.freezes_base, precision),
                       activation_factor=allocator_activation_factor(allocator, fused))
    notify("memory.planned" if plan.fits else "memory.warning", **plan.to_dict(), allocator=allocator,
           message=plan.message)
    if not plan.changed:
        return config
    if plan.changed.get("gradient_checkpointing") and not config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return config.model_copy(update=plan.changed)


def _method_and_precision(config: FineTuningConfig) -> tuple[Any, str]:
    from tuneforge.model.load import pick_device
    from tuneforge.model.precision import resolve_precision

    return get_method(config.method), resolve_precision(config.precision, pick_device())


def _dtype_bytes(dtype: Any) -> int:
    return int(getattr(dtype, "itemsize", 4))


def _longest(train_set: EncodedDataset) -> int:
    return max(len(item.input_ids) for item in train_set.items)


@functools.lru_cache(maxsize=8)
def _shape_of(model_dir: str, config_stamp: int, trust_remote_code: bool) -> ModelShape:
    """The cached shape of a model directory; ``config_stamp`` (config.json's mtime) keys a changed model anew."""
    return ModelShape._read(Path(model_dir), trust_remote_code)


def _gb(mb: float) -> str:
    if math.isinf(mb):
        return "unlimited"
    return f"{mb / 1e3:.2f} GB" if mb < 10_000 else f"{mb / 1e3:.1f} GB"


def _current_mb() -> float:
    from tuneforge.core.memory import current_memory_mb

    return current_memory_mb()


__all__ = ["check_memory_before_loading", "fit_memory", "MemoryEstimate", "MemoryPlan", "MemoryPlanError", "ModelShape", "activation_bytes_per_token",
           "available_memory_mb", "check_fits_at_all", "estimate_step_memory", "memory_budget_mb",
           "plan_memory", "recipe_tensors_of_run", "Sharding", "step_weights_mb", "tokens_per_pass"]
