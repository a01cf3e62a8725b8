"""Hyperparameter search with Optuna: a YAML search space over ``FineTuningConfig`` fields, trials as run directories.

The public API (``from tuneforge.search import ...``, also ``tuneforge.run_search``):

- ``run_search(search, output=..., storage=..., join=..., num_trials=..., timeout=..., seed=...)`` (run.py):
  a search end to end, or one more worker on an existing study; returns a ``SearchResult``.
- ``load_search(path_or_mapping, overrides)`` / ``SearchSpec`` (space.py): the search file, validated.
- ``TrialRunner`` (trial.py): one trial as an ordinary run directory, pruned from inside.
- ``create_study`` / ``join_study`` (study.py): the Optuna study in SQLite or PostgreSQL.
"""

from __future__ import annotations

from tuneforge.core.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "run_search": "tuneforge.search.run", "SearchResult": "tuneforge.search.run", "load_search": "tuneforge.search.run",
    "SearchSpec": "tuneforge.search.space", "Param": "tuneforge.search.space", "parse_search": "tuneforge.search.space",
    "TrialRunner": "tuneforge.search.trial", "SearchError": "tuneforge.search.study",
    "create_study": "tuneforge.search.study", "join_study": "tuneforge.search.study",
})
