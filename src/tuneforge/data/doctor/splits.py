"""Split discovery: the train/validation/test files of a directory (``prepare``'s output, a saved ``DatasetDict``)."""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.data.stream import SUFFIXES

SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
               "dev": "validation", "test": "test"}


def find_splits(path: str | Path) -> list[tuple[str, Path]]:
    """``[(split, file)]``: one train file, or the split files of a directory (``prepare``'s output, or a
    saved ``DatasetDict``)."""
    root = Path(path)
    if not root.is_dir():
        return [("train", root)]
    if (root / "dataset_dict.json").is_file():
        try:
            names = json.loads((root / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        except (ValueError, OSError, AttributeError):
            names = []
        found = [(SPLIT_NAMES.get(str(n), str(n)), root / str(n)) for n in names if (root / str(n)).is_dir()]
        return sorted(found, key=lambda item: _split_rank(item[0])) or [("train", root)]
    found = []
    for file in sorted(root.iterdir()):
        name = SPLIT_NAMES.get(file.stem.lower())
        if name and file.is_file() and file.suffix.lower() in SUFFIXES:
            found.append((name, file))
    names = [name for name, _ in found]
    if "train" in names and len(set(names)) == len(names):
        return sorted(found, key=lambda item: _split_rank(item[0]))
    return [("train", root)]


def _split_rank(name: str) -> int:
    return {"train": 0, "validation": 1, "test": 2}.get(name, 3)
