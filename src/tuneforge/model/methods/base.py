"""``TrainingMethod``: everything that differs between ways of fine-tuning, in one object per method.

The pipeline, the training loop and the run loader never ask *which* method runs; they ask the
method: how to load the base (dtype), how to make it trainable, which speed-ups apply, where the
final weights go and how they come back. A new method is one file that subclasses
``TrainingMethod`` and registers an instance in ``core.registries.METHODS`` (see docs/SEAMS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from tuneforge.config import FineTuningConfig


class TrainingMethod:
    """The contract of a training method; subclasses set the attributes and implement ``wrap``.

    Attributes:
        name: the registry name (``method:`` in a config).
        description: one line for help texts.
        output_dir: the run-directory folder the final weights are published in (``adapter``, ``model``).
        default_learning_rate: used when the config sets no ``learning_rate``.
        freezes_base: the base weights stay frozen, so under ``precision: bf16`` they are *stored*
            in bf16 (half the memory, no casts); a method that trains them keeps fp32 masters.
        mergeable: the trained weights can be folded into the base (an exporter may merge them).
        forward_through_wrapper: the loss must call the wrapped model's ``forward`` (prompt and
            prefix tuning inject their state in ``PeftModel.forward``); otherwise the objective may
            run the base decoder directly, which is what the fused loss does fastest.
        quantization: how the base is quantized when loaded (``None``: not at all).
        options: the ``FineTuningConfig`` fields that configure this method (``lora_r``, ...).
            Config validation refuses an option of another method that is set to a non-default
            value, naming the option and the methods it belongs to (``config.method_options``).
        supports_packing: the wrapper can take packed batches (one row, ``cu_seq_lens``). When it
            cannot, ``packing`` defaults to off for this method and an explicit ``packing: true``
            is a config error.
    """

    name: str = ""
    description: str = ""
    output_dir: str = "model"
    default_learning_rate: float = 5e-5
    freezes_base: bool = False
    mergeable: bool = False
    forward_through_wrapper: bool = False
    quantization: str | None = None
    options: tuple[str, ...] = ()
    supports_packing: bool = True

    # loading the base -------------------------------------------------------------------------

    def base_dtype(self, precision: str) -> Any:
        """The dtype to load the base in for a resolved ``precision`` (``fp32``/``bf16``).

        bf16 storage only for frozen weights: bf16 masters would round small updates away.
        """
        import torch

        return torch.bfloat16 if precision == "bf16" and self.freezes_base else torch.float32

    def load_base(self, model_dir: Path, device: str, config: FineTuningConfig, precision: str) -> Any:
        """The base model as this method trains it (dtype, later quantization)."""
        from tuneforge.model.load import load_model

        return load_model(model_dir, device, config.trust_remote_code, self.base_dtype(precision))

    # making it trainable ----------------------------------------------------------------------

    def wrap(self, model: Any, config: FineTuningConfig) -> Any:
        """Return ``model`` made trainable by this method (fresh weights for a new run)."""
        raise NotImplementedError(f"training method {self.name!r} does not implement wrap()")

    def speed_up(self, model: Any, config: FineTuningConfig) -> None:
        """Swap in the faster kernels that keep this method's results identical.

        Default: the fused RMSNorm, and packed attention when batches are packed. A method whose
        wrapper cannot take packed batches (one row, ``cu_seq_lens``) must refuse ``packing``.
        """
        from tuneforge.model.attention import use_packed_attention
        from tuneforge.model.rms_norm import speed_up_rms_norms

        speed_up_rms_norms(model)
        if config.packing:
            use_packed_attention(model)

    def trainable_parameter_names(self, model: Any) -> set[str]:
        """Names of the parameters training may change; every other one must stay bit-identical."""
        return {name for name, parameter in model.named_parameters() if parameter.requires_grad}

    # saving and reloading ---------------------------------------------------------------------

    def save(self, model: Any, out_dir: Path) -> None:
        """Write the trained weights (checkpoints and the final ``output_dir``) as safetensors."""
        model.save_pretrained(out_dir, safe_serialization=True)

    def load_weights(self, model: Any, weights_dir: Path) -> bool:
        """Copy checkpoint weights saved by ``save`` back into ``model``; False leaves it to the loop's
        generic loader (a PEFT adapter or a full model's safetensors), which fits every method that
        saves through ``save_pretrained``. A method with its own file layout loads it and returns True."""
        return False

    def holds_weights(self, directory: Path) -> bool:
        """Whether ``directory`` holds weights this method saved (used to recognise a run's output)."""
        return (directory / "config.json").is_file() and any(directory.glob("*.safetensors"))

    def load_saved(self, weights_dir: Path, load_base: Callable[[], Any], device: str) -> Any:
        """The trained model from ``weights_dir``; ``load_base()`` loads the base it was trained from."""
        from tuneforge.model.load import load_model

        return load_model(weights_dir, device)

    def describe_saved(self, weights_dir: Path, base_name: str) -> str:
        """How ``load_trained`` names the loaded model to the user."""
        return f"{base_name} trained with {self.name} from {weights_dir}"

    def __repr__(self) -> str:
        return f"<training method {self.name!r}>"


def check_method(name: str, entry: Any) -> TrainingMethod:
    """Registry check: a ``TrainingMethod`` instance (a subclass is instantiated) that implements ``wrap``."""
    if isinstance(entry, type) and issubclass(entry, TrainingMethod):
        entry = entry()
    if not isinstance(entry, TrainingMethod):
        raise TypeError(f"expected a TrainingMethod subclass or instance (tuneforge.model.methods.TrainingMethod), "
                        f"got {type(entry).__name__}")
    if type(entry).wrap is TrainingMethod.wrap:
        raise TypeError(f"{type(entry).__name__} does not implement wrap(model, config)")
    if not entry.output_dir or "/" in entry.output_dir or entry.output_dir in ("checkpoints", "tensorboard"):
        raise TypeError(f"output_dir {entry.output_dir!r} must be one plain folder name not used by the run directory")
    if not entry.name:
        entry.name = name
    return entry
