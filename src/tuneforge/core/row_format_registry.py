"""``ROW_FORMATS``: the row-format registry, importable from any layer (config validates names with it).

Its built-in entries live in ``tuneforge.data.row_formats`` (one file per format), imported on the
first lookup. (It moves into ``core/registries.py`` beside the other registries once that lands;
this module then re-exports it.)
"""

from __future__ import annotations

from typing import Any

from tuneforge.core.registry import Registry

# Row formats: keys, converter and checks of each format (data/row_formats/, one file each).
ROW_FORMATS: Registry[Any] = Registry(
    "row format", entry_point_group="tuneforge.row_formats", builtins=("tuneforge.data.row_formats",),
    hint="or 'auto' to detect it, --text-template for other columns, or a plug-in as 'module:attribute' naming a RowFormat",
)
