"""``lazy_exports``: a package's public names, imported from their modules only when first used.

``import tuneforge`` (and ``tuneforge --help``) must not import torch, Optuna or SQLAlchemy; a
package names its public API in one mapping and the module ``__getattr__`` (PEP 562) imports the
module that defines a name when it is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[list[str], Callable[[str], Any]]:
    """``(__all__, __getattr__)`` for ``package`` whose public ``name`` lives in module ``exports[name]``.

    Use at the bottom of a package's ``__init__.py``::

        __all__, __getattr__ = lazy_exports(__name__, {"Worker": "tuneforge.jobs.worker", ...})

    A name not in ``exports`` raises ``AttributeError`` as a missing attribute does.
    """

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return sorted(exports), __getattr__
