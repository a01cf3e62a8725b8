"""The models a job store serves: bases, fine-tuned models, checkpoints; listing, deleting, resolving, scoring them.

Model ids follow OpenAI's: a base by name, ``ft:<base>:<suffix>:<job-id>`` for a job's final
weights, ``ft:...:ckpt-step-N`` for one of its checkpoints still on disk. ``resolve_model`` is what
the server loads to serve an id; ``evaluate_model`` / ``compare_models`` score ids as the CLI does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

from tuneforge.jobs.errors import InvalidRequest, NotFound
from tuneforge.jobs.objects import ORGANIZATION, TrainingJob
from tuneforge.jobs.store import JobStore


class ResolvedModel(NamedTuple):
    """What serving a model id loads: the base (a name or path for ``resolve_model``) and the trained weights."""

    base: str
    weights: Path | None  # an adapter / model directory (the job's output or a checkpoint's weights), None for a base


class JobModels:
    """``FineTuningManager``'s models part; it needs the manager's ``store``, ``get_job`` and ``_data_path``."""

    store: JobStore

    if TYPE_CHECKING:  # what the manager provides
        def get_job(self, job_id: str) -> TrainingJob:
            ...

        def _data_path(self, data: str | Path) -> Path:
            ...

    def list_models(self) -> list[dict[str, Any]]:
        """``model`` objects: the embedded default, every base a job used, every fine-tuned model, every checkpoint."""
        from tuneforge.config import DEFAULT_MODEL

        listed: dict[str, dict[str, Any]] = {DEFAULT_MODEL: _model_wire(DEFAULT_MODEL, 0, "system")}
        fine_tuned_jobs: set[str] = set()
        for row in self.store.list_models():
            listed[row["id"]] = _model_wire(row["id"], row["created"], row["owned_by"])
            if row["kind"] == "fine-tuned" and row["job_id"]:
                fine_tuned_jobs.add(row["job_id"])
        for job_id in fine_tuned_jobs | self._jobs_with_checkpoints():
            job = self.get_job(job_id)
            if self._deleted(job):
                continue
            for row in self.store.list_checkpoints(job_id):
                if checkpoint_exists(job, row):
                    listed.setdefault(row["fine_tuned_model_checkpoint"],
                                      _model_wire(row["fine_tuned_model_checkpoint"], row["created_at"], ORGANIZATION))
        return list(listed.values())

    def get_model(self, model_id: str) -> dict[str, Any]:
        """One ``model`` object; ``NotFound`` (``code="model_not_found"``) for an id ``list_models`` does not show."""
        for model in self.list_models():
            if model["id"] == model_id:
                return model
        raise _model_not_found(model_id)

    def delete_model(self, model_id: str) -> dict[str, Any]:
        """Delete a fine-tuned model (and with it its checkpoints' models); the run directory stays on disk.

        ``InvalidRequest`` for a base model or a checkpoint, ``NotFound`` for an unknown id.
        """
        row = self.store.get_model(model_id)
        if row is None or row["deleted"]:
            self.get_model(model_id)  # raises NotFound unless it is a checkpoint or the default
            raise InvalidRequest(f"only fine-tuned models can be deleted; {model_id!r} is not one", param="model")
        if row["kind"] != "fine-tuned":
            raise InvalidRequest(f"only fine-tuned models can be deleted; {model_id!r} is a base model", param="model")
        self.store.mark_model_deleted(model_id)
        return {"id": model_id, "object": "model", "deleted": True}

    def resolve_model(self, model_id: str) -> ResolvedModel:
        """(base, weights directory or None) to serve ``model_id``: a base, a fine-tuned model or a checkpoint.

        ``NotFound`` (``code="model_not_found"``) for anything ``list_models`` does not list.
        """
        from tuneforge.config import DEFAULT_MODEL
        from tuneforge.model.methods import find_saved_weights

        row = self.store.get_model(model_id)
        if row is not None and not row["deleted"]:
            if row["kind"] == "base":
                return ResolvedModel(row["base"] or model_id, None)
            job = self.get_job(row["job_id"])
            found = find_saved_weights(job.run_dir, job.config.get("method"))
            if found is None:
                raise NotFound(f"the weights of {model_id} are gone from {job.run_dir}", param="model", code="model_not_found")
            return ResolvedModel(str(job.config.get("model")), found[1])
        if model_id == DEFAULT_MODEL:
            return ResolvedModel(DEFAULT_MODEL, None)
        match = re.match(r"\A(?P<model>.+):ckpt-step-(?P<step>\d+)\Z", model_id)
        if match:
            for job_id in self._jobs_with_checkpoints():
                job = self.get_job(job_id)
                for cp in self.store.list_checkpoints(job_id):
                    if cp["fine_tuned_model_checkpoint"] == model_id and checkpoint_exists(job, cp) and not self._deleted(job):
                        return ResolvedModel(str(job.config.get("model")), job.run_dir / cp["path"] / "weights")
        raise _model_not_found(model_id)

    def evaluate_model(self, model_id: str, data: str | Path, max_examples: int | None = None, **options: Any) -> Any:
        """Score a model id on ``data`` (a path or an uploaded file id): a ``ModelEvaluation``.

        ``options`` go to ``evaluate.run.evaluate_model`` (``max_length``, ``batch_size``, ``max_new_tokens``, ``metrics``).
        """
        from tuneforge.data.manager import TrainingDataManager
        from tuneforge.evaluate.run import evaluate_model
        from tuneforge.runs import load_trained

        base, weights = self.resolve_model(model_id)
        examples, _ = TrainingDataManager().load(self._data_path(data))
        examples = examples[:max_examples] if max_examples else examples
        model, tokenizer, _ = load_trained(weights, base)
        return evaluate_model(model, tokenizer, examples, **options)

    def compare_models(self, model_ids: Sequence[str], data: str | Path | None = None, **options: Any) -> dict[str, Any]:
        """Evaluate every model id on the same ``data`` with ``tuneforge compare``'s code (``evaluate.compare.compare_sources``).

        ``data``: a path or an uploaded file id (default: the first job's test split). ``options`` go to
        ``compare_sources`` (``metric``, ``baseline``, ``fail_if_worse``, ``max_examples`` and
        ``evaluate_model``'s settings). Returns ``Comparison.to_dict()`` (table, pairs with McNemar's test
        and the bootstrap interval, regressions) with ``evaluations`` (id -> performance) and ``comparison``
        (the ``Comparison`` itself, for ``write_comparison``).
        """
        from tuneforge.evaluate.compare import compare_sources

        comparison = compare_sources(model_ids, self._data_path(data) if data is not None else None,
                                     resolve=self.compare_contender, **options)
        return {"evaluations": comparison.performances, **comparison.to_dict(), "comparison": comparison}

    def compare_contender(self, model_id: str) -> Any:
        """A model id of this store (fine-tuned ``ft:…``, checkpoint ``…:ckpt-step-N``, base) as an
        ``evaluate.compare.Contender`` (its weights, base and run directory), or None when the store does not know it."""
        from tuneforge.evaluate.compare import Contender

        try:
            base, weights = self.resolve_model(model_id)
        except NotFound:
            if is_store_model_id(model_id):
                raise  # an ft: id or a checkpoint id this store does not (or no longer) know: say so
            return None  # a run directory, a model name: the file system's business
        if weights is None:
            return Contender(name=model_id, source=model_id, kind="model", base_model=base)
        row = self.store.get_model(model_id)
        if row is not None and row.get("job_id"):
            return Contender(name=model_id, source=model_id, kind="fine-tuned", run_dir=self.get_job(row["job_id"]).run_dir,
                             weights=weights, base_model=base)
        # A checkpoint: RUN_DIR/checkpoints/step-N/weights.
        return Contender(name=model_id, source=model_id, kind="checkpoint", run_dir=weights.parent.parent.parent,
                         weights=weights, base_model=base)

    def fine_tuned_name(self, job: TrainingJob) -> str:
        """``ft:<base>:<suffix>:<job-id>``; the base is its last path component for a local model directory."""
        base = str(job.model).rstrip("/")
        base = base.rsplit("/", 1)[-1] if "/" in base else base
        return f"ft:{base.replace(':', '-')}:{job.suffix or ''}:{job.id}"

    def _jobs_with_checkpoints(self) -> set[str]:
        return {row["job_id"] for row in self.store.list_checkpoints()}

    def _deleted(self, job: TrainingJob) -> bool:
        if not job.fine_tuned_model:
            return False
        row = self.store.get_model(job.fine_tuned_model)
        return bool(row and row["deleted"])


def checkpoint_exists(job: TrainingJob, row: dict[str, Any]) -> bool:
    """Whether a recorded checkpoint is still on disk (older ones are pruned); a run directory not here counts as yes."""
    if not job.run_dir.is_dir():
        return True
    return (job.run_dir / row["path"] / "weights").is_dir()


def _model_wire(model_id: str, created: float, owned_by: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": int(created), "owned_by": owned_by}


def is_store_model_id(model_id: str) -> bool:
    """Whether ``model_id`` has the shape of a model only a job store knows: ``ft:…`` or ``…:ckpt-step-N``."""
    return model_id.startswith("ft:") or re.search(r":ckpt-step-\d+\Z", model_id) is not None


def _model_not_found(model_id: str) -> NotFound:
    return NotFound(f"The model `{model_id}` does not exist; list the models with GET /v1/models or `tuneforge jobs list`",
                    param="model", code="model_not_found")
