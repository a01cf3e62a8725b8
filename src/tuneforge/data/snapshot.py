"""The prepared splits a run trained on, kept inside its run directory so the run needs nothing outside it.

``write_snapshot(data, RUN_DIR/data)`` writes ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl``
in the portable chat/text row format (``{"messages": [...]}`` or ``{"text": ...}``, with the row's
``metadata``), each atomically, and ``manifest.json`` with every file's SHA-256, its row count,
where each row came from (``file:line`` of the original data) and the data's metadata. The files are
ordinary tuneforge data: ``tuneforge validate RUN_DIR/data`` and ``finetune --data RUN_DIR/data`` read
them. ``read_snapshot`` reads them back through the one data reader, checks the hashes, and returns
the same ``TrainingData``: same examples in the same order, same sources, same metadata. This is
what ``resume`` trains on, from any directory, even when the run started from in-memory records.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tuneforge.core.errors import CheckpointError
from tuneforge.core.paths import atomic_write_json, atomic_write_text, file_sha256, read_json_object
from tuneforge.data.examples import TrainingData, TrainingExample

SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"
VERSION = 1


def write_snapshot(data: TrainingData, directory: Path, originals: dict[str, str] | None = None) -> dict[str, Any]:
    """Write ``data``'s three splits and their manifest into ``directory``; return the manifest.

    ``originals`` names the files the data was prepared from (``{"data": path, ...}``): their SHA-256
    is recorded, so a later ``changed_originals`` can say that one was edited since.
    """
    files: dict[str, Any] = {}
    for split, examples in zip(SPLITS, (data.examples, data.validation, data.test)):
        text = "".join(json.dumps(example.to_dict(), ensure_ascii=False) + "\n" for example in examples)
        atomic_write_text(directory / f"{split}.jsonl", text)
        files[split] = {"file": f"{split}.jsonl", "rows": len(examples), "sha256": _sha256(text.encode("utf-8")),
                        "sources": [example.source for example in examples]}
    hashed = {name: {"path": str(path), "sha256": file_sha256(Path(path))}
              for name, path in (originals or {}).items() if path and Path(path).is_file()}
    manifest = {"version": VERSION, "kind": "tuneforge run data", "files": files, "originals": hashed,
                "metadata": data.metadata}
    atomic_write_json(directory / MANIFEST, manifest)  # last: a manifest means every file is complete
    return manifest


def has_snapshot(directory: Path) -> bool:
    """Whether ``directory`` holds a complete snapshot (its manifest is written last)."""
    return (directory / MANIFEST).is_file()


def read_snapshot(directory: Path) -> TrainingData:
    """The ``TrainingData`` ``write_snapshot`` wrote; ``CheckpointError`` when a file is missing, changed or damaged."""
    from tuneforge.data.manager import TrainingDataManager

    fix = "the run's data/ must stay as the run wrote it; restore it from a copy, or start a new run"
    manifest = read_json_object(directory / MANIFEST, fix)
    splits: dict[str, list[TrainingExample]] = {}
    for split in SPLITS:
        entry = (manifest.get("files") or {}).get(split)
        if not isinstance(entry, dict):
            raise CheckpointError(f"{directory / MANIFEST} is damaged (no entry for the {split} split); {fix}")
        path = directory / str(entry.get("file", f"{split}.jsonl"))
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; {fix}")
        digest = _sha256(path.read_bytes())
        if digest != entry.get("sha256"):
            raise CheckpointError(f"{path} changed since the run wrote it (sha256 {digest[:12]}..., "
                                  f"the manifest says {str(entry.get('sha256'))[:12]}...); {fix}")
        examples = TrainingDataManager().load(path)[0] if entry.get("rows") else []
        sources = entry.get("sources") or []
        if len(examples) != entry.get("rows") or len(sources) != len(examples):
            raise CheckpointError(f"{path} holds {len(examples)} examples, the manifest says {entry.get('rows')}; {fix}")
        for example, source in zip(examples, sources):
            example.source = source
        splits[split] = examples
    metadata = manifest.get("metadata")
    return TrainingData(examples=splits["train"], validation=splits["validation"], test=splits["test"],
                        metadata=dict(metadata) if isinstance(metadata, dict) else {})


def changed_originals(directory: Path) -> list[str]:
    """The original data files (recorded by ``write_snapshot``) that changed or vanished since."""
    try:
        originals = read_json_object(directory / MANIFEST, "").get("originals") or {}
    except CheckpointError:
        return []
    return [str(entry.get("path")) for entry in originals.values() if isinstance(entry, dict)
            and (not Path(str(entry.get("path"))).is_file() or file_sha256(Path(str(entry["path"]))) != entry.get("sha256"))]




def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
