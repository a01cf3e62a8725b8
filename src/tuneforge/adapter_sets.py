"""Several adapters on one base: find the adapters trained so far, and combine some into one.

Runs trained with ``--adapter-name NAME`` live side by side in ``runs/NAME/`` (any run directory
with an adapter counts; its name is the run's ``adapter_name`` or, without one, its folder name).
``list_adapters`` finds them with their base model and method; ``merge_adapters`` combines LoRA
adapters of one base through PEFT's ``add_weighted_adapter`` and scores the result on the test
set of every source run (the run's own ``data/test.jsonl``), beside that run's own tuned score.
Loading several at once for inference is ``InferenceEngine.load_adapter(name, path)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from tuneforge.core.errors import CheckpointError, ConfigError
from tuneforge.model.methods import find_saved_weights

DEFAULT_ROOTS = (Path("runs"),)
MERGE_FILE = "merge.json"


@dataclass
class AdapterInfo:
    """One trained adapter: its ``name``, weights directory ``path``, the run it came from, base model and method."""

    name: str
    path: str
    run_dir: str | None
    base: str | None
    method: str
    size_bytes: int
    peft_type: str | None = None
    task: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def adapter_info(path: Path) -> AdapterInfo | None:
    """The adapter of run directory (or adapter directory) ``path``; None when it holds no adapter."""
    path = Path(path)
    config = _read_yaml(path / "config.yaml")
    method_name = config.get("method") if isinstance(config.get("method"), str) else None
    try:
        found = find_saved_weights(path, method_name)
    except Exception:  # an unknown plug-in method in an old run: not an adapter we can list
        return None
    if found is None:
        return None
    method, weights = found
    if method.output_dir != "adapter" and weights == path / method.output_dir:
        return None  # a fully fine-tuned model, not an adapter
    peft = _read_json(weights / "adapter_config.json")
    is_run = weights != path
    results = _read_json(path / "results.json") if is_run else {}
    return AdapterInfo(
        name=str(config.get("adapter_name") or (path.name if is_run else weights.name)),
        path=str(weights), run_dir=str(path) if is_run else None,
        base=config.get("model") or peft.get("base_model_name_or_path"), method=method_name or method.name,
        size_bytes=sum(file.stat().st_size for file in weights.iterdir() if file.is_file()),
        peft_type=peft.get("peft_type"), task=results.get("task"))


def list_adapters(roots: Sequence[str | Path] = DEFAULT_ROOTS) -> list[AdapterInfo]:
    """Every adapter in ``roots``: each root that is itself a run/adapter directory, else its sub-directories."""
    found: list[AdapterInfo] = []
    for root in map(Path, roots):
        info = adapter_info(root)
        if info is not None:
            found.append(info)
        elif root.is_dir():
            found += [info for child in sorted(root.iterdir()) if child.is_dir() and (info := adapter_info(child))]
    return found


def find_adapter(reference: str, roots: Sequence[str | Path] = DEFAULT_ROOTS) -> AdapterInfo:
    """The adapter ``reference`` names: a run or adapter directory, else an adapter name found in ``roots``."""
    path = Path(reference)
    if path.is_dir():
        info = adapter_info(path)
        if info is None:
            raise CheckpointError(f"{path} holds no adapter (a run directory with adapter/, or a PEFT adapter directory)")
        return info
    matches = [info for info in list_adapters(roots) if info.name == reference]
    if not matches:
        where = ", ".join(str(root) for root in roots)
        raise CheckpointError(f"no adapter named {reference!r} in {where}; `tuneforge adapters list` shows the adapters, "
                              "or give the run directory's path")
    if len(matches) > 1:
        raise CheckpointError(f"{len(matches)} adapters are named {reference!r} ({', '.join(m.path for m in matches)}); "
                              "give the run directory's path instead")
    return matches[0]


@dataclass
class MergeResult:
    """The combined adapter in ``out_dir`` and its score on each source run's test set."""

    out_dir: str
    name: str
    base: str
    how: str
    weights: list[float]
    density: float | None
    sources: list[dict[str, Any]]
    evaluations: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_mergeable(infos: list[AdapterInfo], weights: Sequence[float]) -> str:
    problems = []
    if len(infos) < 2:
        problems.append("name at least two adapters to merge")
    if len(weights) != len(infos):
        problems.append(f"weights: give one weight per adapter ({len(infos)}), got {len(weights)}")
    not_lora = [info.name for info in infos if info.peft_type != "LORA"]
    if not_lora:
        problems.append(f"only LoRA adapters (methods lora, qlora, dora) can be merged; {', '.join(not_lora)} "
                        f"{'is' if len(not_lora) == 1 else 'are'} not")
    bases = {str(info.base) for info in infos}
    if len(bases) > 1:
        problems.append(f"the adapters were trained on different base models ({', '.join(sorted(bases))}); merge adapters of one base")
    names = [info.name for info in infos]
    if len(set(names)) != len(names):
        problems.append("name each adapter once")
    if problems:
        raise ConfigError(problems)
    return bases.pop()


def merge_adapters(references: Sequence[str], weights: Sequence[float], how: str, out_dir: str | Path,
                   density: float = 0.5, name: str | None = None, roots: Sequence[str | Path] = DEFAULT_ROOTS,
                   evaluate: bool = True, max_eval_examples: int | None = None, device: str | None = None,
                   on_progress: Callable[[str], None] | None = None) -> MergeResult:
    """Combine the LoRA adapters ``references`` with ``weights`` (``how``: linear, ties, dare_linear, ...) into ``out_dir``.

    ``out_dir`` becomes a run-like directory: ``adapter/`` (the combined PEFT adapter),
    ``config.yaml`` (base model, method, adapter name: ``tuneforge eval/chat --adapter OUT`` and
    ``adapters list`` work on it) and ``merge.json`` (the sources, weights and evaluations). With
    ``evaluate`` the combined adapter is scored (``evaluate_model``) on each source run's test set.
    """
    from peft import PeftModel

    from tuneforge.model.adapters import combine_lora_adapters, save_adapter_as
    from tuneforge.model.load import load_model, load_tokenizer, pick_device
    from tuneforge.model.resolve import resolve_model

    infos = [find_adapter(reference, roots) for reference in references]
    base = _check_mergeable(infos, weights)
    out_dir = Path(out_dir)
    name = name or out_dir.name
    device = device or pick_device()
    base_dir = resolve_model(base)
    model = PeftModel.from_pretrained(load_model(base_dir, device), infos[0].path, adapter_name=infos[0].name)
    for info in infos[1:]:
        model.load_adapter(info.path, adapter_name=info.name)
    combine_lora_adapters(model, [info.name for info in infos], [float(w) for w in weights], how, density, name)
    model.eval()
    save_adapter_as(model, name, out_dir / "adapter")
    (out_dir / "config.yaml").write_text(yaml.safe_dump({"model": base, "method": "lora", "adapter_name": name}, sort_keys=False))
    result = MergeResult(out_dir=str(out_dir), name=name, base=base, how=how, weights=[float(w) for w in weights],
                         density=None if how in ("linear", "cat") else density, sources=[info.to_dict() for info in infos])
    if evaluate:
        tokenizer = load_tokenizer(base_dir)
        for info in infos:
            result.evaluations[info.name] = _evaluate_on_source(model, tokenizer, info, max_eval_examples, on_progress)
    (out_dir / MERGE_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def _evaluate_on_source(model: Any, tokenizer: Any, info: AdapterInfo, max_examples: int | None,
                        on_progress: Callable[[str], None] | None) -> dict[str, Any]:
    """The combined model's scores on ``info``'s run test set, beside that run's own tuned and base scores."""
    from tuneforge.data.snapshot import read_snapshot
    from tuneforge.evaluate.run import evaluate_model

    if info.run_dir is None or not (Path(info.run_dir) / "data").is_dir():
        return {"skipped": "not a run directory with its data/ snapshot: no test set to score on"}
    run_dir = Path(info.run_dir)
    test = read_snapshot(run_dir / "data").test[:max_examples]
    if not test:
        return {"skipped": f"{run_dir} has no test split"}
    if on_progress:
        on_progress(f"scoring the combined adapter on {info.name}'s test set ({len(test)} examples)")
    config = _read_yaml(run_dir / "config.yaml")
    evaluation = evaluate_model(model, tokenizer, test, max_length=int(config.get("max_length") or 512),
                                max_new_tokens=int(config.get("max_new_tokens") or 64))
    own = _read_json(run_dir / "results.json")
    return {"examples": len(test), "combined": evaluation.performance, "source_tuned": own.get("tuned"),
            "source_base": own.get("base"), "task": evaluation.task}
