"""Fully sharded data parallel training (``distributed: fsdp``): FSDP2's ``fully_shard`` under the loop.

With DDP (train/distributed.py) every process holds the whole model, its gradients and the
optimizer state; with FSDP each process holds 1/N of each, gathered layer by layer for the forward
and backward passes, and the gradients are reduce-scattered. The batching is the same as with DDP
(each process trains its share of the global group, divided by the global group's labelled
tokens); the reduction is a *sum* (the divide factor is 1), so N processes compute one process's
gradient.

What makes it correct for tuneforge's loss: the fused head (model/loss.py) reads ``lm_head.weight``
(tied to the embeddings) outside any module's forward, where FSDP would neither gather it nor
reduce its gradient. So the model and the run's objective are wrapped in one module,
``ShardedObjective``, whose ``forward`` computes the objective; it is the FSDP root: its forward
gathers the root's parameters (embeddings, final norm, head), the decoder layers are FSDP units of
their own, and the root's gradients are reduce-scattered after the backward pass like any other.
The single-process path does not go through any of this.

Checkpoints keep tuneforge's format: the full (unsharded) state is gathered onto rank 0's CPU
(``get_state_dict(full_state_dict=True, cpu_offload=True)``), rank 0 copies the weights into its
plain copy of the model and saves that with the method's own ``save`` (the ordinary safetensors),
and the optimizer state is written indexed as ``optimizer.state_dict()`` would be. So a checkpoint
of an FSDP run resumes under DDP or in one process, and the other way round. Loading broadcasts
rank 0's plain state into the shards (``set_state_dict(full_state_dict=True, broadcast_from_rank0=True)``).

Every process must run the same number of forward and backward passes (each one all-gathers):
a process whose share of a step is smaller makes zero-weight passes (``filler_passes``).
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch

from tuneforge.model.adapters import decoder_and_head
from tuneforge.model.loss import LossSums



class ShardedObjective(torch.nn.Module):
    """The model and the run's objective as one module: ``forward(batch)`` = ``(loss_sum, LossSums)``.

    As the FSDP root, its forward gathers every parameter the objective reads outside the decoder
    layers (the tied embeddings and head), and the returned tensor carries FSDP's backward hooks.
    """

    def __init__(self, model: Any, loss_sums: Callable[[Any, dict[str, Any]], LossSums]) -> None:
        super().__init__()
        self.model = model
        self._loss_sums = loss_sums

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, LossSums]:
        sums = self._loss_sums(self.model, batch)
        return sums.loss_sum, sums


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The repeated blocks of a (possibly PEFT-wrapped) causal LM, each one FSDP unit."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or [])
    found = [module for module in base.modules() if type(module).__name__ in names]
    if found:
        return found
    decoder, _ = decoder_and_head(model)
    return list(getattr(decoder, "layers", []))


def shard(model: Any, loss_sums: Callable[[Any, dict[str, Any]], LossSums]) -> ShardedObjective:
    """``model`` sharded over the process group in place (its layers, then the root), with ``loss_sums`` as its forward.

    Rank 0's trainable weights are made everybody's first (a freshly initialised adapter), as DDP does.
    """
    from torch.distributed.fsdp import FSDPModule, fully_shard

    from tuneforge.train.distributed import broadcast_parameters

    broadcast_parameters(model)
    root = ShardedObjective(model, loss_sums)
    for layer in decoder_layers(model):
        fully_shard(layer)
    fully_shard(root)
    for module in root.modules():
        if isinstance(module, FSDPModule):  # gradients are summed, not averaged: the loss is already divided
            module.set_force_sum_reduction_for_comms(True)
            module.set_gradient_divide_factor(1.0)
    return root


def sharded_loss_sums(root: ShardedObjective) -> Callable[[Any, dict[str, Any]], LossSums]:
    """The loop's ``loss_sums(model, batch)`` that runs through the FSDP root (``model`` is its inner model)."""

    def loss_sums(model: Any, batch: dict[str, Any]) -> LossSums:
        return root(batch)[1]

    return loss_sums


def copy_to_shard(model: Any, is_main: bool) -> Any:
    """What to shard: rank 0 shards a copy and keeps ``model`` whole (it saves, publishes and evaluates the
    whole model), parked in CPU memory while training (``unpark`` brings it back); the others shard ``model``
    itself."""
    if not is_main:
        return model
    device = next(model.parameters()).device
    model.to("cpu")  # first, so that the accelerator never holds two whole copies
    return copy.deepcopy(model).to(device)


def unpark(plain: Any, device: str | torch.device) -> None:
    """Rank 0's whole model back on the training device (after ``copy_to_shard`` parked it)."""
    plain.to(device)


# ---------------------------------------------------------------------------------------------- state


def _options(**kwargs: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def gather_full_state(model: Any, optimizer: torch.optim.Optimizer | None = None,
                      ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(the full model state dict, the optimizer state in ``optimizer.state_dict()``'s indexed form) on rank 0's CPU.

    A collective: every process calls it; the others get ({}, None).
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    options = _options(cpu_offload=True)
    if optimizer is None:
        return get_model_state_dict(model, options=options), None
    weights, state = get_state_dict(model, optimizer, options=options)
    if dist.get_rank() != 0:
        return {}, None
    names = _parameter_names(model, optimizer)
    indexed = {}
    for index, fqns in enumerate(names):
        found = next((state["state"][fqn] for fqn in fqns if fqn in state["state"]), None)
        if found is not None:
            indexed[index] = found
    return weights, {"state": indexed, "param_groups": optimizer.state_dict()["param_groups"]}


def load_full_weights(model: Any, weights: dict[str, torch.Tensor] | None) -> None:
    """Rank 0's full ``weights`` into every process's shards. A collective; the other processes pass None."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    own = weights if dist.get_rank() == 0 and weights is not None else {}
    set_model_state_dict(model, own, options=_options(broadcast_from_rank0=True, strict=False))


def load_full_optimizer(model: Any, optimizer: torch.optim.Optimizer, state: dict[str, Any] | None) -> None:
    """Rank 0's optimizer ``state`` (``optimizer.state_dict()``'s indexed form) into every process's shards.
    A collective; the other processes pass None."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    named: dict[str, Any] = {}
    if dist.get_rank() == 0 and state is not None:
        names = _parameter_names(model, optimizer)
        groups = [{**group, "params": [names[i][0] for i in group["params"]]} for group in state["param_groups"]]
        named = {"state": {names[int(i)][0]: value for i, value in state["state"].items()}, "param_groups": groups}
    set_optimizer_state_dict(model, optimizer, named, options=_options(broadcast_from_rank0=True))


def into_plain(plain: Any, weights: dict[str, torch.Tensor]) -> None:
    """Copy gathered full ``weights`` into the unsharded model ``plain`` (rank 0's copy)."""
    missing, unexpected = plain.load_state_dict(weights, strict=False)
    if unexpected:
        raise RuntimeError(f"the gathered state does not fit the model: unexpected {unexpected[:3]}")


class SavedOptimizer:
    """What ``save_checkpoint`` asks of an optimizer (``state_dict()``), for a state gathered from the shards."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state


def _parameter_names(model: Any, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """Every name of each optimizer parameter (a tied one has several), in the optimizer's order."""
    names: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    return [names[id(parameter)] for group in optimizer.param_groups for parameter in group["params"]]


def filler_passes(own: int) -> int:
    """How many zero-weight passes this process makes so that every process makes as many passes as the busiest."""
    from tuneforge.train.distributed import max_over_ranks

    return int(max_over_ranks([float(own)])[0]) - own
