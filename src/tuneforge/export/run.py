"""What an exporter needs to know about a finished run: its weights, method, base model and test examples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.export import ExportError


@dataclass
class FinishedRun:
    """A run directory that finished training: where its weights are and what trained them."""

    run_dir: Path
    method: Any  # the TrainingMethod that saved the weights
    weights_dir: Path
    base_model: str
    config: dict[str, Any]
    status: str

    @property
    def is_adapter(self) -> bool:
        return (self.weights_dir / "adapter_config.json").is_file()

    def base_dir(self) -> Path:
        """The base model's directory (resolved offline, as training did)."""
        from tuneforge.model.resolve import resolve_model

        return Path(resolve_model(self.base_model))

    def tokenizer(self) -> Any:
        """The run's tokenizer (saved beside the weights, else the base model's), without loading the model."""
        from tuneforge.model.load import load_tokenizer

        return load_tokenizer(self.weights_dir if (self.weights_dir / "tokenizer_config.json").is_file() else self.base_dir())

    def load_trained(self) -> tuple[Any, Any]:
        """(trained model in fp32 on the CPU, eval mode; its tokenizer), as ``tuneforge chat`` loads it."""
        from tuneforge.runs import load_trained

        model, tokenizer, _ = load_trained(self.run_dir, device="cpu")
        model.float().eval()
        return model, tokenizer


def open_run(run_dir: str | Path) -> FinishedRun:
    """The finished run in ``run_dir``; ``ExportError`` when it is not a run, unfinished, or has no weights."""
    from tuneforge.core.errors import CheckpointError
    from tuneforge.core.status import SUCCEEDED, parse_status
    from tuneforge.model.methods import find_saved_weights
    from tuneforge.runs import read_results, run_config

    path = Path(run_dir)
    if not path.is_dir():
        raise ExportError(f"{path} is not a directory; give the run directory `tuneforge finetune` wrote (runs/<name>)")
    try:
        config = run_config(path)
        results = read_results(path)
    except CheckpointError as error:
        raise ExportError(f"cannot export {path}: {error}") from None
    status = parse_status(results.get("status"))
    if status is not None and status != SUCCEEDED:
        raise ExportError(f"{path} did not finish training (status {status}); finish it first with "
                          f"`tuneforge resume {path}`, then export")
    method_name = config.get("method") if isinstance(config.get("method"), str) else None
    found = find_saved_weights(path, method_name)
    if found is None:
        raise ExportError(f"{path} holds no trained weights (no adapter/ or model/ with safetensors); "
                          "was it trained by `tuneforge finetune` and not cleaned up since?")
    method, weights_dir = found
    from tuneforge.config import DEFAULT_MODEL

    return FinishedRun(path, method, weights_dir, str(config.get("model") or DEFAULT_MODEL), config, str(status or SUCCEEDED))


def parity_examples(run: FinishedRun, data: str | Path | None = None) -> list[Any]:
    """The examples the parity check runs on: ``data`` if given, else the run's own test split (then validation)."""
    from tuneforge.data.manager import TrainingDataManager

    if data is not None:
        return TrainingDataManager().load(data)[0]
    for split in ("test", "validation"):
        path = run.run_dir / "data" / f"{split}.jsonl"
        if path.is_file() and path.stat().st_size:
            return TrainingDataManager().load(path)[0]
    raise ExportError(f"{run.run_dir}/data has no test or validation examples to check the export on; "
                      "give some with --data FILE")
