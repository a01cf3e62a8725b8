"""The pipeline layer: one fine-tuning run end to end (``FineTuningPipeline``), composed of the layers below.

validate data → load model → evaluate base → train → save → evaluate tuned. The order of stages and
the contents of the run directory live in this package and nowhere else:

    runs/<name>/config.yaml, events.jsonl, data/, checkpoints/, adapter/ | model/, results.json, predictions.jsonl,
                base_predictions.jsonl, baseline_predictions.jsonl, report.html, error.log (after an unexpected error)

A run directory is self-sufficient: config.yaml holds absolute paths, and data/ the prepared splits
the run trains on (with their SHA-256), so ``resume`` needs nothing else and works from any
directory, also for a run started from in-memory records. A resumed run reuses the base model's
evaluation of its first attempt (events.jsonl ``eval.finished`` + base_predictions.jsonl).

Every input problem (data, model, config) is found before the run directory is created.

Where each part is:

- run.py: ``FineTuningPipeline``, the stages in order, the events around them, results.json.
- result.py: ``TrainingResult`` (what results.json holds).
- inputs.py: the data, its label set (``label_space``) and the encoded splits, checked before the run directory exists.
- run_dir.py: where a run goes (``default_run_dir``, ``with_absolute_paths``), what a resume may continue.
- evaluation.py: the base and tuned models' evaluations, result checks, error analysis, judge.
- baselines.py: the prompting baselines and the verdict against them.
- estimate.py: the time and cost estimate before training.
- cross_validation.py: K folds as K runs.
"""

from tuneforge.pipeline.baselines import BASELINE_PREDICTIONS
from tuneforge.pipeline.evaluation import BASE_PREDICTIONS
from tuneforge.pipeline.inputs import EncodedInputs, label_space
from tuneforge.pipeline.result import EventCallback, TrainingResult
from tuneforge.pipeline.run import FineTuningPipeline
from tuneforge.pipeline.run_dir import RESUME_MAY_CHANGE, RUN_DATA, default_run_dir, with_absolute_paths

__all__ = ["BASELINE_PREDICTIONS", "BASE_PREDICTIONS", "RESUME_MAY_CHANGE", "RUN_DATA", "EncodedInputs", "EventCallback",
           "FineTuningPipeline", "TrainingResult", "default_run_dir", "label_space", "with_absolute_paths"]
