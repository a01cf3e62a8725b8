"""Choosing the next token of each row: greedy, or sampled with temperature and top-p from the row's own generator."""

from __future__ import annotations

import torch


def row_generator(seed: int | None) -> torch.Generator:
    """A CPU generator for one request: seeded by ``seed``, or by a draw from torch's global generator.

    Each row samples from its own generator, so a request's text depends on its seed and not on
    which other requests share its batch.
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    return torch.Generator(device="cpu").manual_seed(int(seed))


def nucleus_probabilities(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Softmax of ``logits / temperature`` (one row), zero outside the smallest set of tokens whose mass reaches ``top_p``."""
    probabilities = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1:
        return probabilities
    ordered, order = torch.sort(probabilities, descending=True)
    mass_before = ordered.cumsum(-1) - ordered
    ordered[mass_before >= top_p] = 0  # the most likely token always stays (its mass before is 0)
    return torch.zeros_like(probabilities).scatter_(-1, order, ordered)


def pick_tokens(logits: torch.Tensor, temperatures: list[float], top_ps: list[float], generators: list[torch.Generator | None]) -> list[int]:
    """The next token of every row of ``logits`` (rows × vocabulary).

    Rows with temperature 0 take the argmax; the others sample on the CPU with their generator
    (sampling on the CPU keeps a seed's result the same on every device).
    """
    choices = logits.argmax(-1).tolist()
    for row, temperature in enumerate(temperatures):
        if temperature > 0:
            probabilities = nucleus_probabilities(logits[row].cpu(), temperature, top_ps[row])
            choices[row] = int(torch.multinomial(probabilities, 1, generator=generators[row]).item())
    return choices
