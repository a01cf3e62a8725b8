"""The layers of tuneforge, lowest first: a module may import its own layer and the ones below, never above.

This is the one place the map lives; ``tests/test_layers.py`` parses every module's imports (with
``ast``: function-level and ``TYPE_CHECKING`` imports included) and fails on an import that goes up,
or on a module the map does not place. A new package or top-level module gets a line here.

Packages of one layer may import each other (evaluation generates through inference, the monitor's
result checks score answers as evaluation does); what the map forbids is reaching up.

Where the top-level modules sit, decided by what they import and who needs them:

- ``config_checks`` and ``config_auto`` (the checks behind ``FineTuningConfig``'s validators; its ``auto``
  values) are parts of ``config``: layer 1 with it.
- ``report`` (report.html from events.jsonl and results.json) imports only core and monitor, and the
  monitor's ``generate_report`` uses it: layer 1, beside the events it draws.
- ``runs`` (find and load a finished run directory) imports config, model and monitor: layer 3, beside
  the train/inference/evaluate packages that produce and use trained models; the pipeline and the
  faces use it.
- ``adapter_sets`` (list the adapters trained so far, merge some) imports core, data, model and
  evaluate: layer 3 too; the CLI uses it.
- ``lineage`` (continued fine-tuning: the ``init_from`` run a run starts from) imports config, model, runs
  and train's checkpoint loader: layer 3; the pipeline uses it.
- ``samples`` (bundled sample data and the demo config) imports config: layer 2, beside data.
- ``pipeline`` is a layer of its own: it composes every layer below into a run.
- the package itself (``tuneforge/__init__.py``, the lazy public API) is the top: it names things in
  every layer, so nothing inside the package imports it (``__version__`` lives in ``core.version``).
"""

from __future__ import annotations

# (layer name, what it is, module prefixes). A module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, str, tuple[str, ...]]] = [
    ("core", "errors, paths, registries, status words, small helpers: standard library only",
     ("tuneforge.core",)),
    ("config+monitor", "the validated run configuration; events.jsonl, metric sinks and the report drawn from them",
     ("tuneforge.config", "tuneforge.config_auto", "tuneforge.config_checks", "tuneforge.monitor", "tuneforge.report")),
    ("data+model", "reading, checking and tokenizing data; loading and wrapping models (methods, losses, kernels)",
     ("tuneforge.data", "tuneforge.model", "tuneforge.samples")),
    ("train+inference+evaluate+export", "what is done with a model and data: train, generate, score, export, load a run",
     ("tuneforge.train", "tuneforge.inference", "tuneforge.evaluate", "tuneforge.export", "tuneforge.runs",
      "tuneforge.adapter_sets", "tuneforge.lineage")),
    ("pipeline", "one fine-tuning run end to end, composed of the layers below",
     ("tuneforge.pipeline",)),
    ("jobs+search", "many runs: a job runner, hyper-parameter search",
     ("tuneforge.jobs", "tuneforge.search")),
    ("cli+server", "the thin faces: parse, call the library, render",
     ("tuneforge.cli", "tuneforge.server")),
    ("package", "tuneforge/__init__.py: the lazy public API over everything",
     ("tuneforge",)),
]


def layer_of(module: str) -> int | None:
    """The index in ``LAYERS`` of ``module`` (a dotted name under ``tuneforge``), or None when no prefix places it.

    The bare package ``tuneforge`` matches only itself: ``tuneforge.newthing`` is unplaced, not the top.
    """
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, (_, _, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact_only = prefix == "tuneforge"
            if module == prefix or (not exact_only and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), index)
    return best[1] if best else None
