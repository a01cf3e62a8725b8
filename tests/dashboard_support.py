"""Helpers of the dashboard's browser tests: a live server with a job manager, Debian's Chromium through Playwright."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from helpers import make_rows

CHROMIUM = "/usr/bin/chromium"
# A job that trains in seconds on the tiny model: no estimate, short answers, no baselines or forgetting check.
FAST_JOB = {"max_length": 128, "estimate_steps": 0, "max_new_tokens": 4, "batch_size": 4, "baselines": False,
            "forgetting_check": False}


def chat_rows(n: int = 24) -> bytes:
    rows = [{"messages": [{"role": "user", "content": r["input"]}, {"role": "assistant", "content": r["output"]}]}
            for r in make_rows(n)]
    return ("\n".join(json.dumps(row) for row in rows) + "\n").encode()


def bad_rows(line: int, n: int = 12) -> bytes:
    """``n`` good chat rows, except that line ``line`` (1-based) is not JSON."""
    lines = chat_rows(n).decode().splitlines()
    lines[line - 1] = '{"messages": [{"role": "user", "content": "no answer"'
    return ("\n".join(lines) + "\n").encode()


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])


def require_browser() -> Any:
    """``playwright.sync_api``, or skip saying what is missing."""
    if not Path(CHROMIUM).is_file() and not shutil.which("chromium"):
        pytest.skip(f"{CHROMIUM} is missing (apt install chromium): the dashboard's browser tests need it")
    return pytest.importorskip("playwright.sync_api", reason="the playwright package is missing (pip install playwright)")


class ConsoleWatch:
    """Every console error and uncaught page error of a page, to assert there are none."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda message: self.errors.append(f"console: {message.text}") if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
