"""tuneforge: fine-tune pre-trained language models on your own examples, on your own machine.

The public API is imported lazily so ``import tuneforge`` (and ``tuneforge --help``) stays fast and
does not import torch.
"""

from __future__ import annotations

from tuneforge.core.lazy import lazy_exports
from tuneforge.core.version import __version__

__all__, __getattr__ = lazy_exports(__name__, {
    "FineTuningConfig": "tuneforge.config",
    "load_config": "tuneforge.config",
    "TrainingExample": "tuneforge.data.examples",
    "TrainingData": "tuneforge.data.examples",
    "TrainingDataManager": "tuneforge.data.manager",
    "FineTuningPipeline": "tuneforge.pipeline",
    "TrainingResult": "tuneforge.pipeline",
    "ModelEvaluation": "tuneforge.evaluate.run",
    "evaluate_model": "tuneforge.evaluate.run",
    "compare_models": "tuneforge.evaluate.compare",
    "compare_sources": "tuneforge.evaluate.compare",
    "evaluate_baselines": "tuneforge.evaluate.baselines",
    "evaluate_with_baselines": "tuneforge.evaluate.worth_it",
    "write_comparison": "tuneforge.evaluate.compare",
    "MetricSpec": "tuneforge.evaluate.metrics",
    "InferenceEngine": "tuneforge.inference",
    "GenerationRequest": "tuneforge.inference",
    "GenerationResult": "tuneforge.inference",
    "load_trained": "tuneforge.runs",
    "TuneforgeError": "tuneforge.core.errors",
    "TrainingMonitor": "tuneforge.train.monitor",
    "MonitorSettings": "tuneforge.train.monitor",
    "Issue": "tuneforge.train.monitor",
    "TrainingMetrics": "tuneforge.train.metrics",
    "ResultFinding": "tuneforge.train.result_checks",
    "run_search": "tuneforge.search.run",
    "SearchResult": "tuneforge.search.run",
})
__all__ += ["__version__"]
