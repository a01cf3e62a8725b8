"""K-fold cross-validation (``--cross-validation K``): K ordinary runs under RUN_DIR/fold-<i>, and their mean ± std.

Fold i's examples are its test set, the other train and test examples its training set (validation
stays the validation set). The root's results.json holds every fold and mean ± std; its report links
each fold's own report.
"""

from __future__ import annotations

from typing import Callable

from tuneforge.config import FineTuningConfig
from tuneforge.core.errors import ConfigError
from tuneforge.core.paths import atomic_write_json
from tuneforge.core.status import RunStatus
from tuneforge.data.examples import TrainingData
from tuneforge.pipeline.inputs import prepare_data
from tuneforge.pipeline.result import EventCallback, TrainingResult
from tuneforge.pipeline.run_dir import free_run_dir
from tuneforge.report import write_report

TrainFold = Callable[[FineTuningConfig, TrainingData], TrainingResult]  # one fold's run (a FineTuningPipeline's train)


def cross_validate(config: FineTuningConfig, data: TrainingData | None, train_fold: TrainFold,
                   on_event: EventCallback) -> TrainingResult:
    """Train and evaluate each of ``config.cross_validation`` folds with ``train_fold``; stop at the first that fails."""
    from tuneforge.evaluate.folds import make_folds, summarize_folds

    if config.resume:
        raise ConfigError(["cross_validation: resume one fold's run directory (RUN_DIR/fold-<i>) instead"])
    root = free_run_dir(config)
    data = data or prepare_data(config)
    pool = data.examples + data.test
    folds = make_folds(pool, config.cross_validation, config.seed)
    root.mkdir(parents=True, exist_ok=True)
    result = TrainingResult(run_dir=root, status=RunStatus.SUCCEEDED, data=data.summary())
    runs = []
    for number, fold in enumerate(folds, start=1):
        held = set(fold)
        fold_data = TrainingData(examples=[e for i, e in enumerate(pool) if i not in held], validation=data.validation,
                                 test=[pool[i] for i in fold], metadata=data.metadata)
        fold_config = config.model_copy(update={"cross_validation": None, "output": str(root / f"fold-{number}"), "name": None})
        on_event({"type": "cv.fold", "fold": number, "folds": len(folds), "test": len(fold)})
        outcome = train_fold(fold_config, fold_data)
        runs.append({"fold": number, "run_dir": str(outcome.run_dir), "status": str(outcome.status), "test": len(fold),
                     "base": outcome.base.performance if outcome.base else None,
                     "tuned": outcome.tuned.performance if outcome.tuned else None})
        if outcome.status != RunStatus.SUCCEEDED:
            result.status, result.error = outcome.status, f"fold {number}: {outcome.error}"
            break
    tuned = [run["tuned"] for run in runs if run["tuned"]]
    base = [run["base"] for run in runs if run["base"]]
    result.cross_validation = {"k": len(folds), "folds": runs, "tuned": summarize_folds(tuned) if tuned else {},
                               "base": summarize_folds(base) if base else {}}
    atomic_write_json(root / "results.json", result.to_dict())
    write_report(root)  # the folds' mean ± std, linking each fold's own report
    return result
