"""Turning what the library returns into OpenAI's wire objects (the library's ``to_openai()``, or a dict as is)."""

from __future__ import annotations

from typing import Any


def wire(item: Any) -> dict[str, Any]:
    """The wire object of a library value: its ``to_openai()``, or the mapping itself."""
    if hasattr(item, "to_openai"):
        return item.to_openai()
    return dict(item)


def wire_list(items: Any) -> list[dict[str, Any]]:
    return [wire(item) for item in items]
