"""The memory allocator a training process runs with: tcmalloc when it is installed, glibc's malloc otherwise.

Why: PyTorch on a CPU allocates every activation with ``malloc``. glibc's malloc raises its mmap threshold
as large blocks are freed, so freed activations stay in its heap and the heap grows with every differently
shaped pass: on the speed work (SmolLM2-135M, LoRA, batch 8) a step peaked at 3.36 GB resident with glibc
against 2.44 GB with tcmalloc at the same speed (bench/results/speed-amd-epyc.json: 202 vs 206 tokens/s);
forcing glibc to hand large blocks back (``MALLOC_MMAP_THRESHOLD_``) reached 1.47 GB but cost 28 % of the
speed in page faults, and jemalloc 1.28 GB at -18 %. PyTorch's own CPU performance guide recommends
tcmalloc or jemalloc for the same reason.

An allocator is chosen when a process starts (``LD_PRELOAD``), so the ``tuneforge`` command re-executes
itself once with ``LD_PRELOAD`` set when it is about to train (``reexec_with_allocator``); the processes it
starts (job workers, ``--nproc`` ranks) inherit it. ``TUNEFORGE_ALLOCATOR=system`` keeps glibc's malloc;
``TUNEFORGE_ALLOCATOR=/path/to/libtcmalloc.so`` names the library. Nothing changes where the library is not
installed (Debian/Ubuntu: ``apt-get install libtcmalloc-minimal4``) or on systems other than Linux. Python
code that calls ``tuneforge.fit`` in its own process keeps the allocator that process started with.
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

ALLOCATOR_ENV = "TUNEFORGE_ALLOCATOR"
# Set in the re-executed process: never re-execute twice (even when the preload did not take).
REEXEC_MARK = "TUNEFORGE_ALLOCATOR_REEXEC"
LIBRARY_NAMES = ("libtcmalloc_minimal.so", "libtcmalloc.so")
SEARCH_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
SYSTEM_CHOICES = frozenset({"system", "glibc", "none", "off"})  # TUNEFORGE_ALLOCATOR values that keep the system's malloc
TCMALLOC_CHOICES = frozenset({"", "auto", "tcmalloc"})
KNOWN_CHOICES = SYSTEM_CHOICES | TCMALLOC_CHOICES
# The commands that train (or start processes that train): the others gain nothing from a second exec.
TRAINING_COMMANDS = frozenset({"finetune", "resume", "demo", "search", "worker", "serve"})


def find_shared_library(stem: str, search_dirs: tuple[str, ...] = SEARCH_DIRS) -> str | None:
    """The path of an installed shared library named ``stem`` (``libtcmalloc_minimal.so``, with any version
    suffix), from the first directory that has it; None when none does."""
    for directory in search_dirs:
        matches = sorted(glob.glob(os.path.join(directory, stem + "*")), key=len)
        if matches:
            return matches[0]
    return None


def find_tcmalloc(search_dirs: tuple[str, ...] = SEARCH_DIRS) -> str | None:
    """The path of an installed tcmalloc shared library (the minimal build first), None when there is none."""
    return next((path for name in LIBRARY_NAMES if (path := find_shared_library(name, search_dirs))), None)


def loaded_allocator() -> str:
    """``tcmalloc`` or ``jemalloc`` when that library is mapped into this process, else ``system`` (glibc's malloc)."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "system"
    for name in ("tcmalloc", "jemalloc"):
        if f"lib{name}" in maps:
            return name
    return "system"


def preload_library(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """The library a training process should preload per ``TUNEFORGE_ALLOCATOR`` (None: keep the system's)."""
    choice = environ.get(ALLOCATOR_ENV, "auto").strip()
    if choice in SYSTEM_CHOICES or not sys.platform.startswith("linux"):
        return None
    if choice in TCMALLOC_CHOICES:
        return find_tcmalloc()
    return choice if Path(choice).is_file() else None


def allocator_environment(environ: dict[str, str] | os._Environ = os.environ) -> dict[str, str]:
    """Variables to add to a child process's environment so that it starts with the chosen allocator ({} for none)."""
    library = preload_library(environ)
    if library is None or library in environ.get("LD_PRELOAD", "").split(":"):
        return {}
    preload = ":".join(part for part in (library, environ.get("LD_PRELOAD", "")) if part)
    # tcmalloc prints a line for every allocation over 1 GB (a big model's weights): not the user's concern.
    quiet = {} if "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD" in environ else {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}
    return {"LD_PRELOAD": preload, REEXEC_MARK: "1", **quiet}


def reexec_with_allocator(argv: list[str], command: str | None) -> None:
    """Replace this process by the same command under the chosen allocator, when it trains and does not run with it.

    Returns (doing nothing) when the command does not train, or as ``restart_under_allocator`` does.
    ``argv`` is the command line after the program name.
    """
    if command in TRAINING_COMMANDS:
        restart_under_allocator([sys.executable, "-m", "tuneforge.cli.main", *argv])


def restart_under_allocator(command_line: list[str]) -> None:
    """Replace this process by ``command_line`` (an interpreter and its arguments) under the chosen allocator.

    Returns (doing nothing) when the allocator is already loaded, this process is already the re-executed one,
    no library is chosen (a misnamed ``TUNEFORGE_ALLOCATOR`` is reported on stderr), or the exec fails.
    """
    if os.environ.get(REEXEC_MARK) or loaded_allocator() != "system":
        return
    extra = allocator_environment()
    if not extra:
        _warn_if_misnamed(os.environ.get(ALLOCATOR_ENV, "").strip())
        return
    sys.stdout.flush(), sys.stderr.flush()
    try:
        os.execve(command_line[0], command_line, {**os.environ, **extra})
    except OSError:  # the interpreter could not be started again: go on in this process, with the system's malloc
        return


def _warn_if_misnamed(choice: str) -> None:
    """A ``TUNEFORGE_ALLOCATOR`` that is neither a known word nor an existing file is a mistake: say so, and go on."""
    if choice and choice not in KNOWN_CHOICES and not Path(choice).is_file():
        print(f"warning: {ALLOCATOR_ENV}={choice}: no such library file; training with the system's malloc "
              f"(set it to auto, tcmalloc, system or the path of a .so file)", file=sys.stderr)


__all__ = ["ALLOCATOR_ENV", "allocator_environment", "find_shared_library", "find_tcmalloc", "loaded_allocator", "preload_library",
           "reexec_with_allocator", "restart_under_allocator"]
