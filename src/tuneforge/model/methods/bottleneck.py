"""``adapter``: bottleneck adapters between the layers (Houlsby et al. 2019, Pfeiffer et al. 2020), tuneforge's own.

PEFT has no bottleneck adapter and AdapterHub's ``adapters`` pins an older transformers, so this
is a small module of its own: ``h + up(act(down(h)))`` on the output of each decoder layer's
feed-forward block (``pfeiffer``) and also of its attention block (``houlsby``), attached by
forward hooks so the base keeps its parameter names. ``up`` starts at zero, so the adapted model
starts exactly as the base. Only the adapters train. They are saved as ``bottleneck.safetensors``
plus ``bottleneck_config.json`` in the run's ``adapter/`` and attached to the base again on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tuneforge.core.errors import CheckpointError, ConfigError
from tuneforge.core.registries import METHODS
from tuneforge.model.methods.base import TrainingMethod

if TYPE_CHECKING:
    import torch.nn as nn

    from tuneforge.config import FineTuningConfig

CONFIG_FILE = "bottleneck_config.json"
WEIGHTS_FILE = "bottleneck.safetensors"
# where an adapter sits in a decoder layer, by placement: (layer attribute of the block, adapter name)
SITES = {"pfeiffer": (("mlp", "adapter_mlp"),), "houlsby": (("self_attn", "adapter_attn"), ("mlp", "adapter_mlp"))}


def bottleneck_module(hidden_size: int, size: int, nonlinearity: str) -> nn.Module:
    """One adapter: ``h + up(act(down(h)))``, fp32 weights, ``up`` zero so it starts as the identity."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    activations = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}

    class Bottleneck(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = nn.Linear(hidden_size, size)
            self.up = nn.Linear(size, hidden_size)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
            self.act = activations[nonlinearity]

        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            # fp32 masters, computed in the activations' dtype (bf16 under precision: bf16)
            dtype = hidden.dtype
            inner = self.act(F.linear(hidden, self.down.weight.to(dtype), self.down.bias.to(dtype)))
            return hidden + F.linear(inner, self.up.weight.to(dtype), self.up.bias.to(dtype))

    return Bottleneck()


def _decoder_layers(model: Any) -> list[Any]:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ConfigError([f"method: adapter needs a decoder with .layers (Llama, Qwen, Mistral, SmolLM, ...); "
                           f"{type(model).__name__} has none; use --method lora"])
    return list(layers)


def _adapt_output(adapter: Any) -> Callable[..., Any]:
    def hook(_module: Any, _args: Any, output: Any) -> Any:
        if isinstance(output, tuple):  # attention returns (output, weights)
            return (adapter(output[0]), *output[1:])
        return adapter(output)

    return hook


def attach_bottlenecks(model: Any, settings: dict[str, Any]) -> Any:
    """Freeze ``model`` and attach fresh adapters as ``settings`` say (size, nonlinearity, placement); return it."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    hidden = int(model.config.hidden_size)
    device = next(model.parameters()).device
    for layer in _decoder_layers(model):
        for block_name, adapter_name in SITES[settings["placement"]]:
            block = getattr(layer, block_name, None)
            if block is None:
                raise ConfigError([f"method: adapter found no .{block_name} in {type(layer).__name__}; use --method lora"])
            adapter = bottleneck_module(hidden, int(settings["size"]), settings["nonlinearity"]).to(device)
            layer.add_module(adapter_name, adapter)
            block.register_forward_hook(_adapt_output(adapter))
    model.tuneforge_bottleneck = dict(settings)
    return model


def adapter_state(model: Any) -> dict[str, Any]:
    """The adapters' tensors, by parameter name."""
    return {name: tensor.detach().contiguous() for name, tensor in model.named_parameters() if tensor.requires_grad}


class BottleneckAdapterMethod(TrainingMethod):
    name = "adapter"
    description = "bottleneck adapters after the feed-forward (and attention) blocks"
    output_dir = "adapter"
    default_learning_rate = 1e-3
    freezes_base = True
    mergeable = False  # a nonlinearity: nothing to fold into the base weights
    options = ("bottleneck_size", "bottleneck_nonlinearity", "bottleneck_placement")

    def wrap(self, model: Any, config: FineTuningConfig) -> Any:
        return attach_bottlenecks(model, {"size": config.bottleneck_size, "nonlinearity": config.bottleneck_nonlinearity,
                                          "placement": config.bottleneck_placement})

    def save(self, model: Any, out_dir: Path) -> None:
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_file(adapter_state(model), str(out_dir / WEIGHTS_FILE))
        settings = {**model.tuneforge_bottleneck, "hidden_size": int(model.config.hidden_size),
                    "base_model": str(getattr(model, "name_or_path", ""))}
        (out_dir / CONFIG_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    def load_weights(self, model: Any, weights_dir: Path) -> bool:
        from safetensors.torch import load_file

        state = load_file(str(Path(weights_dir) / WEIGHTS_FILE))
        own = dict(model.named_parameters())
        unknown = sorted(set(state) - set(own))
        missing = sorted(set(adapter_state(model)) - set(state))
        if unknown or missing:
            raise CheckpointError(f"{weights_dir} does not fit this model's adapters: unexpected {unknown[:3]}, missing {missing[:3]}")
        import torch

        with torch.no_grad():
            for name, tensor in state.items():
                own[name].copy_(tensor)
        return True

    def holds_weights(self, directory: Path) -> bool:
        return (directory / CONFIG_FILE).is_file() and (directory / WEIGHTS_FILE).is_file()

    def load_saved(self, weights_dir: Path, load_base: Callable[[], Any], device: str) -> Any:
        settings = json.loads((weights_dir / CONFIG_FILE).read_text())
        model = load_base()
        if int(model.config.hidden_size) != int(settings.get("hidden_size", model.config.hidden_size)):
            raise CheckpointError(f"{weights_dir} holds adapters for hidden size {settings['hidden_size']}, "
                                  f"the base has {model.config.hidden_size}: load it on the base it was trained on")
        attach_bottlenecks(model, settings)
        self.load_weights(model, weights_dir)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model

    def describe_saved(self, weights_dir: Path, base_name: str) -> str:
        return f"{base_name} + bottleneck adapters {weights_dir}"


ADAPTER = METHODS.register("adapter", BottleneckAdapterMethod())
