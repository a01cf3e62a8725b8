"""The typed configuration of a fine-tuning run: one schema for YAML files, CLI flags and the API.

``FineTuningConfig`` is validated once, at the edge; every invalid value is reported at the same
time with its field name. ``load_config`` reads YAML and applies overrides (CLI flags win).

This module holds the fields, in groups (what to train on, what to train, how, evaluation, ...).
The checks its validators run are in config_checks.py; the ``auto`` values and the method's
default learning rate in config_auto.py. Their public names are importable from here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuneforge import config_checks as checks
from tuneforge.config_auto import (AUTO, AUTO_FALLBACKS, AUTO_FIELDS, DEFAULT_LEARNING_RATE, Auto, ResolvedValue,
                                   resolved_problems)
from tuneforge.config_checks import (DEFAULT_ISSUE_ACTIONS, FSDP_METHODS, ISSUE_ACTIONS, ISSUE_KINDS,
                                     method_option_owners, objective_option_owners, template_problem)
from tuneforge.core.errors import ConfigError
from tuneforge.core.registries import METHODS, OBJECTIVES

__all__ = ["AUTO", "AUTO_FALLBACKS", "AUTO_FIELDS", "DEFAULT_ISSUE_ACTIONS", "DEFAULT_LEARNING_RATE", "DEFAULT_MODEL",
           "FSDP_METHODS", "ISSUE_ACTIONS", "ISSUE_KINDS", "Auto", "BestMetric", "DataFormat", "FinalWeights",
           "FineTuningConfig", "Metric", "ResolvedValue", "Scheduler", "Strategy", "load_config", "make_config",
           "method_option_owners", "objective_option_owners", "template_problem"]

DEFAULT_MODEL = "smollm2-135m-instruct"

Strategy = Literal["steps", "epoch", "no"]
Scheduler = Literal["cosine", "linear", "constant"]
DataFormat = str  # a row format registered in core.registries.ROW_FORMATS (data/row_formats/), or "auto"
Metric = str  # an evaluation metric registered in core.registries.METRICS (evaluate/metrics.py), or a module:attribute plug-in
BestMetric = Literal["validation_loss", "validation_accuracy", "validation_perplexity"]
FinalWeights = Literal["best", "last"]


class FineTuningConfig(BaseModel):
    """Everything that decides what a run does. Unknown fields are rejected, not ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # What to train on
    data: str | None = Field(None, description="training data file (.jsonl .json .csv .parquet) or saved datasets dir")
    validation_data: str | None = Field(None, description="validation file; default: split off the training data")
    test_data: str | None = Field(None, description="test file for the base-vs-tuned evaluation; default: split off")
    data_format: DataFormat = Field("auto", description="row format (data/row_formats/); auto-detected from the columns by default")
    text_template: str | None = Field(None, description="render any columns as text, e.g. '{question} {answer}'")
    validation_split: float = Field(0.1, ge=0.0, lt=1.0, description="share of rows held out for validation")
    test_split: float = Field(0.1, ge=0.0, lt=1.0, description="share of rows held out for the final test")
    train_on_prompt: bool = Field(False, description="also compute the loss on prompt tokens")
    skip_invalid: bool = Field(False, description="drop rows the data doctor finds errors in (and say which) instead of refusing to train")
    max_length: Annotated[int, Field(ge=16, le=131072)] | Auto = Field(AUTO, description="tokens per example; longer ones are truncated; "
                                   "auto: the longest example (rounded up, never above the model's context), unless a few "
                                   "extreme outliers would set it")

    # What to train
    model: str = Field(DEFAULT_MODEL, description="embedded name, HF model dir, .gguf file or cached hub id")
    method: str = Field("lora", description="how to train (README: training methods): lora, qlora (LoRA on a 4-bit base), "
                        "dora, ia3, loha, lokr, prompt_tuning, prefix_tuning, adapter (bottleneck adapters), full (every weight), "
                        "or a plug-in module:attribute (a registered training method, see docs/SEAMS.md). Each method takes only "
                        "its own options (the fields below marked with its name)")
    # Per-method options: each method's spec lists the fields it reads (TrainingMethod.options);
    # an option of another method set to a non-default value is refused (config_checks.method_option_problems).
    lora_r: Annotated[int, Field(ge=1, le=1024)] | Auto = Field(AUTO, description="lora, qlora, dora, loha, lokr: adapter rank; auto: 16, "
                               "32 from 20,000 training examples, 64 from 200,000")
    lora_alpha: float = Field(32.0, gt=0, description="lora, qlora, dora, loha, lokr: scaling; updates are scaled by alpha/r")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="lora, qlora, dora: dropout on the adapter input")
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="lora, qlora, dora, loha, lokr: the linear layers that get adapters (module names), or all-linear")
    qlora_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="qlora: 4-bit data type the frozen base weights are stored in")
    qlora_double_quant: bool = Field(True, description="qlora: also quantize the per-block scales (about 0.4 bits per weight less)")
    ia3_target_modules: list[str] | None = Field(
        None, description="ia3: modules whose activations get learned scales; default: PEFT's for the architecture "
        "(k_proj, v_proj, down_proj for Llama/Qwen/SmolLM)")
    ia3_feedforward_modules: list[str] | None = Field(
        None, description="ia3: which target modules are feed-forward (scaled at their input); default: PEFT's for the "
        "architecture, within ia3_target_modules")
    num_virtual_tokens: int = Field(20, ge=1, le=1024, description="prompt_tuning, prefix_tuning: learned virtual tokens per layer input")
    prompt_tuning_init_text: str | None = Field(
        None, description="prompt_tuning: start the virtual tokens from this text's embeddings (default: random)")
    prefix_projection: bool = Field(False, description="prefix_tuning: learn the prefix through a two-layer MLP (more parameters, steadier)")
    bottleneck_size: int = Field(16, ge=1, le=16384, description="adapter: width of each bottleneck adapter (down-projection size)")
    bottleneck_nonlinearity: Literal["relu", "gelu", "silu", "tanh"] = Field(
        "relu", description="adapter: the nonlinearity between the down- and up-projection")
    bottleneck_placement: Literal["pfeiffer", "houlsby"] = Field(
        "pfeiffer", description="adapter: pfeiffer = one adapter after each feed-forward block; houlsby = also one after each attention block")
    adapter_name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="name of this run's adapter, for several adapters on one base: the run directory defaults to "
        "runs/NAME, `tuneforge adapters list` shows it, inference loads it by this name")
    init_from: str | None = Field(
        None, description="continue training an earlier run: start from RUN_DIR's adapter (or full model) instead of fresh "
        "weights, on this run's data; its base, method and method options are taken over (naming other ones is refused); "
        "results.json records the lineage")
    trust_remote_code: bool = False

    # How to train
    epochs: Annotated[float, Field(gt=0, le=1000)] | Auto = Field(AUTO, description="passes over the training data; auto: from the "
                                 "dataset size (about 500 examples seen, 1 to 3 epochs; at most 50,000 examples)")
    batch_size: Annotated[int, Field(ge=1, le=4096)] | Auto = Field(AUTO, description="examples per optimizer step; auto: about 1,024 "
                                   "tokens per step, 4 to 64 examples, smaller when that would leave under 32 steps or under 16 an epoch")
    gradient_accumulation_steps: int = Field(1, ge=1, le=4096)
    learning_rate: Annotated[float, Field(gt=0, le=1.0)] | Auto | None = Field(AUTO, description="peak learning rate; null: the method's "
                                               "own; auto: the method's own, lower for models above 500M parameters")
    objective: str = Field("sft", description="the training loss: sft (cross-entropy on the answers); dpo or orpo on "
                           "preference pairs (rows with chosen and rejected answers); or your own loss as "
                           "module:attribute (the protocol: docs/SEAMS.md, example: examples/focal_loss.py)")
    dpo_beta: float = Field(0.1, gt=0, le=100, description="dpo: inverse temperature β of the DPO loss (higher: stay "
                            "closer to the base model)")
    orpo_alpha: float = Field(0.1, gt=0, le=100, description="orpo: weight λ of the odds-ratio term beside the "
                              "chosen answers' cross-entropy")
    lr_scheduler: Scheduler = "cosine"
    warmup_steps: Annotated[int, Field(ge=0)] | Auto | None = Field(AUTO, description="null: 10% of the optimizer steps; auto: 5% for "
                                            "methods that keep the base frozen, 10% for full fine-tuning")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = Field(42, ge=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    packing: bool = Field(True, description="put each batch in one row with no padding; attention never crosses examples "
                          "(off by default for prompt_tuning and prefix_tuning, whose wrappers cannot take packed batches)")
    # 1,024 (was 2,048): on the speed work passes of 1,024 tokens peaked 1.9 GB against 2.4 GB under tcmalloc (3.4 vs
    # 2.4 GB under glibc) at the same speed (212 vs 206 tokens/s; bench/results/speed-amd-epyc.json).
    micro_batch_tokens: int | None = Field(
        1024, ge=16, description="most tokens one forward/backward pass holds; a bigger batch is split into passes "
        "whose gradients add up to the same update (caps activation memory, same result); null = never split")
    memory_limit: str | None = Field(
        None, description="the most memory training may use, e.g. 12GB; the memory planner fits the pass size and "
        "gradient checkpointing to it (default: the memory this machine has free, less headroom)")
    memory_plan: bool = Field(True, description="estimate peak memory before training and shrink passes / turn on "
                              "gradient checkpointing when it would not fit (never changes the result)")
    estimate_steps: int = Field(
        2, ge=0, le=100, description="before training, time this many optimizer steps (after one warm-up) on the real "
        "training path and print the expected training time, tokens and cost; the model is left unchanged; 0 = skip")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: far less memory, about a third slower")
    distributed: Literal["ddp", "fsdp"] = Field(
        "ddp", description="how several processes (--nproc N, torchrun) share the training: ddp (every process holds the "
        "whole model) or fsdp (weights, gradients and optimizer state sharded over the processes; methods "
        + ", ".join(FSDP_METHODS) + ")")
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "auto", description="compute format: auto = bf16 where the CPU (AMX/AVX512-BF16) or GPU does bf16 natively, "
        "else fp32; LoRA keeps the frozen base in bf16 and the adapters in fp32, full fine-tuning uses bf16 autocast")

    # Evaluation and saving during training
    evaluation_strategy: Strategy = "epoch"
    eval_steps: int = Field(50, ge=1)
    saving_strategy: Strategy = "epoch"
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1, description="keep this many newest checkpoints (plus the best one)")
    logging_steps: int = Field(1, ge=1)

    # Watching training: early stopping, the best checkpoint, issue policies, resume
    best_metric: BestMetric = Field(
        "validation_loss", description="the evaluation metric that picks the best checkpoint and drives early stopping"
    )
    final_weights: FinalWeights = Field(
        "best", description="which weights become adapter/ (or model/): the best evaluation by best_metric, or the last step's"
    )
    early_stopping: bool | Auto = Field(
        AUTO, description="stop when best_metric has not improved by early_stopping_min_delta for early_stopping_patience "
        "evaluations; auto: on when there is a validation split (then, unless set, evaluations every quarter epoch, "
        "patience 2 (4 for runs of 2+ epochs), an improvement must beat the best by 5 % of it and by 0.001, a validation loss of 0.0025 ends the run), off without one"
    )
    early_stopping_patience: int = Field(3, ge=1, description="evaluations without improvement before early stopping")
    early_stopping_min_delta: float = Field(0.0, ge=0.0, description="smallest change of best_metric that counts as an improvement")
    early_stopping_goal: float | None = Field(
        None, ge=0.0, description="with early stopping, stop as soon as best_metric reaches this value (a loss at or "
        "under it, an accuracy at or over it): nothing is left to gain (auto: a validation loss of 0.0025)")
    early_stopping_relative_delta: float = Field(
        0.0, ge=0.0, lt=1.0, description="smallest change of best_metric, as a share of the best value so far, that counts "
        "as an improvement (0.05: a loss must fall 5 %); an evaluation improves when it beats both deltas")
    on_issue: dict[str, str] = Field(
        default_factory=dict,
        description="what to do when the monitor detects an issue, per kind: KIND=ACTION,... with ACTION one of "
        + ", ".join(ISSUE_ACTIONS) + " (rollback: back to the last healthy checkpoint with a lower learning rate); kinds: "
        + ", ".join(ISSUE_KINDS) + ". Defaults: nan_loss and nan_gradient stop, overfitting stops under early stopping, the rest warn",
    )
    rollback_lr_factor: float = Field(0.5, gt=0.0, lt=1.0, description="learning-rate multiplier applied at each rollback")
    max_rollbacks: int = Field(3, ge=0, description="rollbacks allowed in one run; after that a rollback policy stops")
    report_to: list[str] = Field(
        default_factory=list, description="also log metrics to these trackers (tensorboard: RUN_DIR/tensorboard/), "
        "or a plug-in module:attribute naming a SinkSpec; never to a network"
    )
    resume: bool = Field(
        False, description="continue the run in --output from its newest intact checkpoint, exactly where it stopped"
    )

    # Final evaluation
    evaluation_metrics: list[Metric] = Field(
        default_factory=lambda: ["accuracy", "precision", "recall", "f1", "loss", "perplexity", "bleu", "rouge"]
    )
    evaluate_base: bool = Field(True, description="also evaluate the untuned base model for comparison")
    max_eval_examples: int | None = Field(None, ge=1)
    baselines: bool = Field(True, description="also score prompting baselines on the test split (the base model with "
                            "baseline_shots training examples in the prompt: seeded few-shot and retrieval few-shot) "
                            "and say whether fine-tuning beat them")
    baseline_shots: int = Field(5, ge=1, le=64, description="training examples shown in a baseline's prompt")
    cross_validation: int | None = Field(None, ge=2, le=20, description="train K runs (RUN_DIR/fold-1 ... fold-K), "
                                         "each tested on one fold of the train and test examples (stratified by label "
                                         "for label tasks), and report every metric as mean ± standard deviation")
    forgetting_check: bool = Field(True, description="measure perplexity on a small general-text sample shipped with "
                                   "tuneforge before and after training, to show when fine-tuning damaged general ability")
    judge: str | None = Field(None, description="also grade the base and tuned answers with an LLM judge: 'base' (the run's "
                              "base model) or any model name or path; reports judge_score and its agreement with exact match")
    judge_rubric: str | None = Field(None, description="the judge's instructions (default: PASS when the answer means the "
                                     "same as the reference)")
    json_schema: str | None = Field(None, description="a JSON Schema file that structured answers must conform to: "
                                    "scored as json_schema (added to evaluation_metrics), for every test example without "
                                    "its own metadata.json_schema")
    baseline_retriever: Literal["bm25"] = Field("bm25", description="how retrieval few-shot finds the training "
                                                "examples most like each test input")
    max_new_tokens: int = Field(64, ge=1, le=4096)
    cost_per_hour: float = Field(0.0, ge=0.0, description="price of this machine per hour, for the cost figure")

    # What auto chose (written by the run, read back by resume): field -> {value, reason}
    resolved: dict[str, ResolvedValue] = Field(
        default_factory=dict, description="the values the run chose for the fields left auto (and the evaluation "
        "cadence early stopping needs), each with its reason; written to config.yaml by the run so that resume trains "
        "with the same values; not meant to be set by hand")

    # Where
    output: str | None = Field(None, description="run directory; default runs/<name>")
    name: str | None = None

    # --- validators: the checks are in config_checks.py -----------------------------------------
    @field_validator("memory_limit")
    @classmethod
    def _check_memory_limit(cls, value: str | None) -> str | None:
        return checks.check_memory_limit(value)

    @field_validator("data_format")
    @classmethod
    def _check_data_format(cls, value: str) -> str:
        return checks.check_data_format(value)

    @field_validator("on_issue", mode="before")
    @classmethod
    def _parse_on_issue(cls, value: Any) -> Any:
        return checks.parse_on_issue(value)

    @field_validator("on_issue")
    @classmethod
    def _check_on_issue(cls, value: dict[str, str]) -> dict[str, str]:
        return checks.check_on_issue(value)

    @field_validator("report_to", mode="before")
    @classmethod
    def _parse_report_to(cls, value: Any) -> Any:
        return checks.comma_list(value)

    @field_validator("report_to")
    @classmethod
    def _drop_none(cls, value: list[str]) -> list[str]:
        return checks.check_report_to(value)

    @field_validator("method")
    @classmethod
    def _check_method(cls, value: str) -> str:
        return checks.registered(METHODS, "method", value)

    @field_validator("evaluation_metrics")
    @classmethod
    def _check_metrics(cls, value: list[str]) -> list[str]:
        return checks.check_metrics(value)

    @field_validator("objective")
    @classmethod
    def _check_objective(cls, value: str) -> str:
        return checks.registered(OBJECTIVES, "objective", value)

    @model_validator(mode="before")
    @classmethod
    def _packing_default(cls, values: Any) -> Any:
        return checks.packing_default(values)

    @model_validator(mode="after")
    def _check_cross_fields(self) -> FineTuningConfig:
        problems = checks.cross_field_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("resolved")
    @classmethod
    def _check_resolved(cls, value: dict[str, ResolvedValue]) -> dict[str, ResolvedValue]:
        problems = resolved_problems(cls.model_fields, value)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    # --- what the run reads ---------------------------------------------------------------------
    @property
    def issue_actions(self) -> dict[str, str]:
        """The action for every issue kind: the defaults, overfitting stopping under early stopping, then ``on_issue``."""
        actions = dict(DEFAULT_ISSUE_ACTIONS)
        if self.concrete().early_stopping is True:
            actions["overfitting"] = "stop"
        return actions | self.on_issue

    @property
    def resolved_learning_rate(self) -> float:
        """The learning rate in use: the user's, else the method's default."""
        rate = self.concrete().learning_rate
        return rate if isinstance(rate, float) else DEFAULT_LEARNING_RATE[self.method]

    def auto_fields(self) -> list[str]:
        """The fields left ``auto`` that nothing has resolved yet (what the run still has to choose)."""
        return [name for name in AUTO_FIELDS if getattr(self, name) == AUTO and name not in self.resolved]

    def concrete(self) -> FineTuningConfig:
        """This config with no ``auto`` left: ``resolved`` values where the run chose them, else ``AUTO_FALLBACKS``.

        What training, evaluation and estimates read; ``config.yaml`` keeps the ``auto`` form (``to_yaml``).
        Not validated again: the resolved values were checked when they were chosen.
        """
        update = {name: AUTO_FALLBACKS[name] for name in AUTO_FIELDS if getattr(self, name) == AUTO}
        update.update({name: item.value for name, item in self.resolved.items()})
        return self.model_copy(update=update) if update else self

    def to_yaml(self) -> str:
        """The config as YAML that ``load_config`` reads back to an equal config.

        A field left ``auto`` stays ``auto`` (so re-running with another ``method`` picks that method's
        default), beside the value a run chose for it in ``resolved``; the rate actually used is also in
        ``results.json`` (``train.learning_rate``, ``hyperparameters``).
        """
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)



def make_config(values: dict[str, Any], source: str | None = None) -> FineTuningConfig:
    """Validate ``values`` into a config, raising ``ConfigError`` with every problem at once."""
    try:
        return FineTuningConfig(**values)
    except ValidationError as error:
        raise ConfigError(checks.problems_of(error), source) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> FineTuningConfig:
    """Read a YAML config (optional), apply ``overrides`` (``None`` values are ignored), validate."""
    values: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        file = Path(path)
        if not file.is_file():
            raise ConfigError([f"config file not found: {file}; check the path given to --config"])
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ConfigError([f"not valid YAML: {error}"], source) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(["the file must hold a mapping of field: value"], source)
        values.update(loaded)
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    return make_config(values, source)
