"""Label-preserving augmentation for ``prepare --augment`` (off by default; train split only).

Each method changes the *prompt* of an example (the user's text), never the answer, in a way that
should not change the right answer of a classification or extraction task:

| method      | does                                                             |
| ----------- | ---------------------------------------------------------------- |
| `typo`      | swaps two adjacent letters inside one word of four letters or more |
| `lowercase` | lower-cases the prompt                                           |
| `no-punct`  | removes the punctuation marks . , ; : ! ? from the prompt          |

Do not use them where spelling or case is the point of the task (spelling correction, code).
Text-format rows (no prompt) are never augmented. A method that would not change a prompt adds nothing.
"""

from __future__ import annotations

import copy
import random
import re
from typing import Any, Callable

_WORD = re.compile(r"[^\W\d_]{4,}")
_PUNCT = re.compile(r"[.,;:!?]")


def _typo(text: str, rng: random.Random) -> str:
    words = list(_WORD.finditer(text))
    if not words:
        return text
    word = rng.choice(words)
    i = rng.randrange(word.start(), word.end() - 1)
    if text[i] == text[i + 1]:
        return text
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def _lowercase(text: str, rng: random.Random) -> str:
    return text.lower()


def _no_punct(text: str, rng: random.Random) -> str:
    return " ".join(_PUNCT.sub("", text).split(" ")).strip()


AUGMENTERS: dict[str, Callable[[str, random.Random], str]] = {"typo": _typo, "lowercase": _lowercase, "no-punct": _no_punct}

def _prompt_path(row: dict[str, Any], data_format: str) -> tuple[Any, ...] | None:
    """The prompt text augmentation may rewrite: the format spec says where it is."""
    from tuneforge.data.row_formats import ROW_FORMATS, get_format

    return get_format(data_format).prompt(row) if data_format in ROW_FORMATS else None


def augment_row(row: dict[str, Any], data_format: str, method: str, rng: random.Random) -> dict[str, Any] | None:
    """A copy of ``row`` with its prompt changed by ``method``, or None when nothing would change."""
    path = _prompt_path(row, data_format)
    if path is None:
        return None
    new = copy.deepcopy(row)
    target: Any = new
    for part in path[:-1]:
        target = target[part]
    before = target[path[-1]]
    after = AUGMENTERS[method](before, rng)
    if after == before or not after.strip():
        return None
    target[path[-1]] = after
    return new
