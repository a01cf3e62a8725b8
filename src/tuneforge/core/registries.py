"""The registry instances of tuneforge's extension points, in one place any layer can import.

Each registry names the modules that register its built-in entries (``builtins``); they are
imported on the first lookup, so ``config`` can validate ``method: lora`` or ``objective: sft``
without importing the model or train layers, and ``import tuneforge.config`` stays free of torch.
How to add an entry (built in, ``module:attribute`` plug-in or entry point): docs/SEAMS.md.
"""

from __future__ import annotations

from typing import Any

from tuneforge.core.registry import Registry

# Training methods: how the base loads, is wrapped, sped up, saved, reloaded (model/methods/).
METHODS: Registry[Any] = Registry(
    "training method", entry_point_group="tuneforge.methods", builtins=("tuneforge.model.methods",),
    hint="or give a plug-in as 'module:attribute' naming a TrainingMethod; see docs/SEAMS.md",
)

# Training objectives: the loss sums of one batch (train/objectives/).
OBJECTIVES: Registry[Any] = Registry(
    "training objective", entry_point_group="tuneforge.objectives", builtins=("tuneforge.train.objectives",),
    hint="or give a plug-in as 'module:attribute' naming a loss function; see docs/SEAMS.md",
)

# Metric sinks: copies of the event stream for other local tools, ``report_to`` (monitor/sinks.py).
SINKS: Registry[Any] = Registry(
    "metric sink", entry_point_group="tuneforge.sinks", builtins=("tuneforge.monitor.sinks",),
    hint="or give a plug-in as 'module:attribute' naming a SinkSpec; see docs/SEAMS.md",
)

# Exporters: turn a finished run into another format (export/). None are built in yet.
EXPORTERS: Registry[Any] = Registry(
    "exporter", entry_point_group="tuneforge.exporters", builtins=("tuneforge.export",),
    hint="or give a plug-in as 'module:attribute' naming an Exporter; see docs/SEAMS.md",
)

# Row formats: keys, converter and checks of each format (data/row_formats/, one file each).
ROW_FORMATS: Registry[Any] = Registry(
    "row format", entry_point_group="tuneforge.row_formats", builtins=("tuneforge.data.row_formats",),
    hint="or 'auto' to detect it, --text-template for other columns, or a plug-in as 'module:attribute' naming a RowFormat",
)

# Evaluation metrics: scores of generated answers or of the answer-token loss (evaluate/metrics.py).
METRICS: Registry[Any] = Registry(
    "evaluation metric", entry_point_group="tuneforge.metrics", builtins=("tuneforge.evaluate.metrics", "tuneforge.evaluate.answer_checks"),
    hint="or give a plug-in as 'module:attribute' naming a MetricSpec or a function (predictions, references) -> float; "
         "see docs/SEAMS.md",
)
