"""report.html in a real headless browser (Debian's chromium): it loads with no console errors, asks the
network for nothing, and every chart is drawn.

The browser is driven over the Chrome DevTools Protocol on a pipe (``--remote-debugging-pipe``: JSON
messages ended by NUL on file descriptors 3 and 4), so no driver package is needed. Without chromium
(``make test`` installs it) the test is skipped, saying so.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from test_report import monitored_run_dir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _move_fds(commands: int, replies: int) -> None:
    """In the child: put the pipes on fds 3 and 4 (through fds >= 10, so neither overwrites the other)."""
    import fcntl

    high_commands, high_replies = fcntl.fcntl(commands, fcntl.F_DUPFD, 10), fcntl.fcntl(replies, fcntl.F_DUPFD, 10)
    os.dup2(high_commands, 3)
    os.dup2(high_replies, 4)


class Browser:
    """A headless chromium with one page, spoken to over the DevTools protocol on a pipe."""

    def __init__(self, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The browser reads commands on fd 3 and writes replies on fd 4: the pipes are moved there before exec
        # (pass_fds keeps 3 and 4 open through the close of inherited descriptors that follows preexec_fn).
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
             "--window-size=1100,900", "about:blank"],
            pass_fds=(3, 4), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=lambda: _move_fds(to_browser_r, from_browser_w),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if ready:
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and log errors the page produced."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                found.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                found.append(f"log {params['entry']['level']}: {params['entry'].get('text')}")
        return found

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


CHARTS_DRAWN = """
(() => Array.from(document.querySelectorAll('.chart svg')).map(svg => {
  const box = svg.getBoundingClientRect();
  const lines = Array.from(svg.querySelectorAll('polyline.series'));
  return {title: svg.getAttribute('aria-label'), width: box.width, height: box.height,
          series: lines.length, drawn: lines.filter(l => l.getTotalLength() > 0 && l.getBBox().width > 0).length,
          markers: svg.querySelectorAll('line.marker').length};
}))()
"""

HOVER = """
(() => { const svg = document.querySelector('.chart svg'); const box = svg.getBoundingClientRect();
  svg.dispatchEvent(new MouseEvent('mousemove', {clientX: box.left + box.width * 0.6, clientY: box.top + box.height / 2}));
  return svg.parentNode.querySelector('.readout').textContent; })()
"""


@pytest.fixture
def monitored_run(tmp_path_factory, tiny_model_dir, session_dataset) -> Path:
    return monitored_run_dir(tmp_path_factory, tiny_model_dir, session_dataset)


@pytest.fixture
def browser(tmp_path: Path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium: apt-get install chromium)")
    instance = Browser(tmp_path / "profile")
    yield instance
    instance.close()


def test_report_renders_in_a_real_browser(browser, monitored_run, tmp_path):
    """The report of a run with issues, a resume and evaluations: no console errors, no requests, every chart drawn."""
    from tuneforge.report import write_report

    page = write_report(monitored_run)
    browser.open(page.resolve().as_uri())
    charts = browser.evaluate(CHARTS_DRAWN)
    assert browser.problems() == []
    assert [url for url in browser.requests() if url != page.resolve().as_uri()] == []  # self-contained
    titles = [chart["title"] for chart in charts]
    assert {"loss", "learning rate", "gradient norm (before clipping)", "throughput (tokens/s)", "memory (MB)"} <= set(titles)
    for chart in charts:
        assert chart["width"] > 100 and chart["height"] > 100, chart
        assert chart["series"] >= 1 and chart["drawn"] == chart["series"], chart
    loss = charts[titles.index("loss")]
    assert loss["series"] == 2  # training and validation
    assert loss["markers"] >= 1  # the issues are on the timeline
    assert browser.evaluate("document.querySelectorAll('#issues tr').length") >= 2
    assert "train" in browser.evaluate(HOVER)  # the read-out script ran
    assert browser.problems() == []
    browser.screenshot(tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 10_000
