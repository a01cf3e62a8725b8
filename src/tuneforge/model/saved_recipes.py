"""Saved-tensor recipes: keep how to rebuild a cheap activation for the backward pass instead of the activation.

A training step keeps for the backward pass every tensor some operation saved. Several of those
are exact, cheap functions of tensors that are saved anyway: the output of the fused RMSNorm
(model/rms_norm.py) is ``weight · (x · rstd)``, and the norm itself keeps ``x``, ``weight`` and
``rstd``; the attention output handed to ``o_proj`` is a concatenation and transpose of the
per-example SDPA outputs (model/attention.py), which SDPA keeps. Yet the layers that consume them
(the q/k/v and MLP projections, ``o_proj``) save them again, as full-width copies: for SmolLM2
1,728 of the 7,616 floats saved per token and layer (22.7 %).

While ``saving_recipes()`` is active (the training forward pass, train/accumulation.py), producers
``offer`` their output with a ``rebuild`` function and the tensors it is made of, and a
``saved_tensors_hooks`` pack hook replaces any saved tensor whose storage is an offered output by a
recipe; the unpack hook rebuilds it, with the very ops the forward used, so the values are bitwise
the same and so are the gradients (``tests/test_saved_recipes.py``). Only selective recomputation
of elementwise and copy work: no matrix multiply is repeated.

Safety, because a wrong match would silently change gradients:
- an offer is matched only while its output is alive (weak reference), by storage pointer, and
  only if the output still owns that whole storage with the same shape, stride, dtype and version
  (not modified in place since it was offered); anything else is saved as usual;
- the registry holds an offered output until its first consumer saves it (or the same producer
  offers again), then weakly; its death drops the offer and the hold on its sources. So it keeps
  at most one extra tensor per producer, in the forward pass only, and it offers nothing inside a
  region whose saved tensors go to other hooks (gradient checkpointing's dropped activations stay
  dropped); it is emptied when the context ends;
- saved_tensors_hooks switch off autograd's in-place modification check, so the hooks make it
  themselves: every saved tensor (and every recipe's sources) carries the version it had when
  saved, and a changed version raises as autograd would;
- the hooks never nest inside another's (torch.utils.checkpoint installs its own around a
  checkpointed region: inside it, that one applies, as it should).

``ENABLED`` (module switch, default True) turns recipes off for comparison; the hooks then only
count (``SavedTally``) when asked to.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch

ENABLED = True  # module switch: False saves every tensor as autograd would (for comparison and measurement)

_active: "_Registry | None" = None


@dataclass
class SavedTally:
    """What one or more passes saved for backward: distinct storages (parameters aside) and recipes kept instead."""

    bytes_by_storage: dict[int, int] = field(default_factory=dict)
    recipes: int = 0

    @property
    def saved_bytes(self) -> int:
        return sum(self.bytes_by_storage.values())

    def add(self, tensor: torch.Tensor) -> None:
        if isinstance(tensor, torch.nn.Parameter) or type(tensor) is not torch.Tensor or tensor.layout != torch.strided:
            return
        storage = tensor.untyped_storage()
        self.bytes_by_storage[storage.data_ptr()] = storage.nbytes()


class _Offer:
    """An output that can be rebuilt: it, its sources, and what it looked like when offered.

    The output is held (strongly) only until its first consumer saves it, or until the same site
    (say, the next layer's norm) offers again — a bound of one tensor per site, in the forward pass
    only — and weakly after that: a match needs the output alive, so its storage cannot have been
    freed and reused. Its death drops the offer, and with it the hold on the sources; from then on
    only recipes keep them, and those stand in for tensors the consumers would have kept.
    """

    __slots__ = ("held", "ref", "sources", "rebuild", "shape", "stride", "dtype", "nbytes", "version", "recipe")

    def __init__(self, output: torch.Tensor, rebuild: Callable[..., torch.Tensor], sources: Sequence[torch.Tensor],
                 on_death: Callable[[Any], None]):
        self.held: torch.Tensor | None = output
        self.ref = weakref.ref(output, on_death)
        self.sources = list(sources)
        self.rebuild = rebuild
        self.shape, self.stride, self.dtype = output.shape, output.stride(), output.dtype
        self.nbytes = output.untyped_storage().nbytes()
        self.version = output._version
        self.recipe: _Recipe | None = None  # shared by every consumer that saves this output

    def recipe_for(self, tensor: torch.Tensor) -> "_Recipe | None":
        """The recipe standing for ``tensor`` (a view of the offered output), or None when it must be saved as is."""
        output = self.ref()
        if output is None or tensor.dtype != self.dtype or output.shape != self.shape or output.stride() != self.stride:
            return None
        if output._version != self.version or output.untyped_storage().nbytes() != self.nbytes:
            return None
        if self.recipe is None:
            self.recipe = _Recipe(self.rebuild, self.sources, self.shape)
        self.held = None  # consumed: from now on alive only as long as the forward pass keeps it
        return self.recipe


class _Recipe:
    """How to rebuild one output; rebuilt once in the backward pass and shared by its consumers' unpacks."""

    __slots__ = ("rebuild", "sources", "versions", "shape", "built", "built_version")

    def __init__(self, rebuild: Callable[..., torch.Tensor], sources: list[torch.Tensor], shape: torch.Size):
        self.rebuild, self.sources, self.shape = rebuild, sources, shape
        self.versions = [source._version for source in sources]
        self.built: torch.Tensor | None = None
        self.built_version = 0

    def tensor(self) -> torch.Tensor:
        if self.built is not None and self.built._version == self.built_version:
            return self.built
        for source, version in zip(self.sources, self.versions):
            _check_version(source, version)
        with torch.no_grad():
            built = self.rebuild(*self.sources)
        if not built.is_contiguous() or built.storage_offset() != 0:
            built = built.contiguous()
        assert built.shape == self.shape, (built.shape, self.shape)
        self.built, self.built_version = built, built._version
        return built


class _Registry:
    """The outputs offered during one context, by storage pointer."""

    def __init__(self, recipes: bool, tally: SavedTally | None) -> None:
        self.recipes = recipes
        self.tally = tally
        self.offers: dict[int, _Offer] = {}
        self.last_by_site: dict[str, _Offer] = {}
        self.hook = self.pack  # the very object installed, to recognise it on top of autograd's hook stack

    def add(self, output: torch.Tensor, rebuild: Callable[..., torch.Tensor], sources: Sequence[torch.Tensor],
            site: str) -> None:
        key = output.untyped_storage().data_ptr()
        offer = _Offer(output, rebuild, sources, functools.partial(self.forget, key))
        previous = self.last_by_site.get(site)
        if previous is not None:
            previous.held = None
        self.offers[key] = self.last_by_site[site] = offer

    def forget(self, key: int, output_ref: Any) -> None:
        """The offered output at ``key`` died: drop its offer (and its hold on the sources), not a newer one there."""
        offer = self.offers.get(key)
        if offer is not None and offer.ref is output_ref:
            del self.offers[key]

    def on_top(self) -> bool:
        """Whether the saved tensors of an op run now would reach this registry's hook (not, say, checkpoint's)."""
        top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
        if top is None:  # private API gone: assume so (an offer then holds one tensor per site at most)
            return True
        hooks = top(False)
        return hooks is not None and hooks[0] is self.hook

    def pack(self, tensor: torch.Tensor) -> Any:
        if self.offers and type(tensor) is torch.Tensor and tensor.layout == torch.strided:
            offer = self.offers.get(tensor.untyped_storage().data_ptr())
            recipe = offer.recipe_for(tensor) if offer is not None else None
            if recipe is not None:
                if self.tally is not None:
                    self.tally.recipes += 1
                return recipe, tuple(tensor.shape), tensor.stride(), tensor.storage_offset()
        if self.tally is not None:
            self.tally.add(tensor)
        # detach(): no reference cycle through a saved output's grad_fn; it shares the version counter.
        return tensor.detach(), tensor._version

    @staticmethod
    def unpack(packed: Any) -> torch.Tensor:
        if len(packed) == 2:
            tensor, version = packed
            _check_version(tensor, version)
            return tensor
        recipe, shape, stride, offset = packed
        built = recipe.tensor()
        if tuple(built.shape) == shape and built.stride() == stride and offset == 0:
            return built
        return built.as_strided(shape, stride, offset)


def _check_version(tensor: torch.Tensor, version: int) -> None:
    if tensor._version != version:
        raise RuntimeError(
            "one of the variables needed for gradient computation has been modified by an inplace operation: "
            f"a tensor of shape {list(tensor.shape)} is at version {tensor._version}; expected version {version} "
            "(checked by tuneforge.model.saved_recipes, whose saved-tensor hooks stand in for autograd's check)")


def offer(site: str, output: torch.Tensor, rebuild: Callable[..., torch.Tensor], *sources: torch.Tensor) -> None:
    """Say that ``output`` equals ``rebuild(*sources)`` bitwise; a no-op outside ``saving_recipes``.

    Call it only when ``sources`` are kept for the backward pass anyway (by the producer's own
    node), else a recipe would keep them instead of the smaller or equal output for nothing.
    ``output`` must own its storage (a fresh tensor, not a view of something larger). ``site``
    names the producer (``"rms_norm"``): its next offer releases the registry's hold on this one.
    Inside a region whose saved tensors go to other hooks (gradient checkpointing) nothing is offered.
    """
    registry = _active
    if registry is None or not registry.recipes or not registry.on_top():
        return
    storage = output.untyped_storage()
    if type(output) is not torch.Tensor or storage.nbytes() == 0 or not output.is_contiguous() \
            or output.storage_offset() != 0 or storage.nbytes() != output.numel() * output.element_size():
        return
    registry.add(output, rebuild, sources, site)


@contextlib.contextmanager
def saving_recipes(enabled: bool | None = None, tally: SavedTally | None = None) -> Iterator[None]:
    """The context of a training forward pass: saved tensors that an offer can rebuild are kept as recipes.

    ``enabled`` defaults to ``ENABLED``; with recipes off and no ``tally`` no hooks are installed. A
    ``tally`` counts what is saved (distinct storages, parameters aside) and how many recipes.
    The outermost context decides: an inner one (the training loop's, inside a benchmark's) does nothing.
    """
    global _active
    recipes = ENABLED if enabled is None else enabled
    if _active is not None:
        yield
        return
    registry = _Registry(recipes, tally)
    _active = registry
    try:
        if recipes or tally is not None:
            with torch.autograd.graph.saved_tensors_hooks(registry.hook, registry.unpack):
                yield
        else:  # off: no hooks, but an inner context (the training loop's) must not turn them on
            yield
    finally:
        _active = None
        registry.offers.clear()
        registry.last_by_site.clear()


__all__ = ["ENABLED", "SavedTally", "offer", "saving_recipes"]
