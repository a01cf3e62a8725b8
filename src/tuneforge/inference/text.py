"""A row's completion as text while it grows: stop strings, and the part safe to stream.

Streaming sends only text that can no longer change: it holds back a trailing incomplete UTF-8
character (decoded as U+FFFD), trailing white space (a tokenizer's clean-up may still join it to
what follows), and a tail that could be the start of a stop string. So the pieces streamed always
add up to the final text.
"""

from __future__ import annotations

from typing import Any, Sequence

REPLACEMENT = "\ufffd"


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> int | None:
    """Where the earliest stop string begins in ``text`` (searching from ``start``), or None."""
    hits = [index for stop in stops if (index := text.find(stop, start)) >= 0]
    return min(hits) if hits else None


def stable_length(text: str, stops: Sequence[str]) -> int:
    """How much of ``text`` can be streamed now (see the module docstring)."""
    end = len(text)
    while end and text[end - 1] == REPLACEMENT:
        end -= 1
    end = len(text[:end].rstrip())
    for stop in stops:
        # The longest tail of text[:end] that is a proper prefix of this stop string.
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[end - size : end] == stop[:size]:
                end -= size
                break
    return end


class RowText:
    """The tokens generated for one request and their text; ``stopped`` once a stop string appears."""

    def __init__(self, tokenizer: Any, stops: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.ids: list[int] = []
        self.text = ""
        self.streamed = 0
        self.stopped = False

    def add(self, token_id: int) -> None:
        """Append a generated token; cut the text before a stop string if one is now complete."""
        self.ids.append(token_id)
        if not self.stops:
            return
        self.text = self.decode()
        longest = max(len(stop) for stop in self.stops)
        cut = find_stop(self.text, self.stops, max(0, self.streamed - longest))
        if cut is not None:
            self.text, self.stopped = self.text[:cut], True

    def decode(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def finish(self) -> str:
        """The final text (decoded now when no stop strings were watched)."""
        if not self.stops:
            self.text = self.decode()
        return self.text

    def new_text(self, final: bool = False) -> str:
        """The text not streamed yet that is safe to stream (all of it when ``final``)."""
        if not self.stops and not final:
            self.text = self.decode()
        end = len(self.text) if final or self.stopped else stable_length(self.text, self.stops)
        if end <= self.streamed:
            return ""
        piece = self.text[self.streamed : end]
        self.streamed = end
        return piece
