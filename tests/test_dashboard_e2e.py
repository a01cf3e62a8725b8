"""End to end in Chromium: upload, start a job from the form, watch its curves gain points live, read its results,
chat with base and tuned side by side, compare, export with parity figures, and cancel another job — on a live server whose worker trains the tiny model.

The job page is opened while the job is still queued (no worker yet), so every point its charts
end with arrived over the server-sent event stream, without a reload. Set
``TUNEFORGE_DASHBOARD_DOCS=1`` to also write the job page's screenshot to docs/images/dashboard-job.png.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from dashboard_support import ConsoleWatch, chat_rows, launch_chromium, require_browser  # noqa: E402
from server_support import API_KEY, live_server  # noqa: E402

sync_api = require_browser()
DOCS_SHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "dashboard-job.png"
EXTRA = '{"test_split": 0.25, "estimate_steps": 0, "max_new_tokens": 4, "baselines": false, "forgetting_check": false}'


@pytest.mark.slow
def test_dashboard_end_to_end(tiny_model_dir, tmp_path) -> None:
    from tuneforge.jobs import FineTuningManager, Worker
    from tuneforge.monitor.events import read_events
    from tuneforge.server import ServerSettings, create_app

    manager = FineTuningManager(home=tmp_path / "home")
    app = create_app(ServerSettings(models=[str(tiny_model_dir)], home=tmp_path / "home"), manager=manager, api_key=API_KEY)
    worker = Worker(manager, poll_seconds=0.2)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with live_server(app) as url, sync_api.sync_playwright() as playwright:
        base = url.removesuffix("/v1")
        browser = launch_chromium(playwright)
        page = browser.new_context(base_url=base, viewport={"width": 1200, "height": 900}).new_page()
        page.set_default_timeout(60_000)
        watch = ConsoleWatch(page)
        try:
            page.goto("/login")
            page.get_by_label("API key").fill(API_KEY)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url("**/jobs")

            page.goto("/data")
            page.wait_for_selector("main[data-ready='1']")
            page.get_by_label("Training file").set_input_files(
                {"name": "colors.jsonl", "mimeType": "application/jsonl", "buffer": chat_rows(24)})
            page.get_by_role("button", name="Upload and check").click()
            page.locator(".verdict.ok").wait_for()
            page.get_by_role("link", name="Start a job with this file").click()
            page.wait_for_selector("main[data-ready='1']")
            page.get_by_label("Epochs").fill("3")
            page.get_by_label("Batch size").fill("2")
            page.get_by_label("Max tokens per example").fill("128")
            page.get_by_label("Validation share").fill("0.2")
            page.get_by_label("Name suffix").fill("e2e")
            page.get_by_label("More FineTuningConfig fields").fill(EXTRA)
            page.get_by_role("button", name="Start the job").click()
            page.wait_for_url("**/jobs/ftjob-*")
            page.wait_for_selector("main[data-ready='1']")
            job_id = page.url.rsplit("/", 1)[1]
            loss = page.locator("#chart-loss")
            assert loss.get_attribute("data-points") == "0"  # queued: nothing trained yet

            worker.start()  # from now on every point reaches the open page over the event stream
            _wait_until(page, lambda: int(loss.get_attribute("data-points")) > 0, 240)  # (the page's CSP forbids eval'd waits)
            page.locator("#job-status", has_text="succeeded").wait_for(timeout=240_000)
            page.locator("#fine-tuned", has_text="ft:").wait_for()
            page.wait_for_timeout(700)  # the last stream messages
            events = list(read_events(manager.get_job(job_id).run_dir / "events.jsonl"))
            steps = {e["step"] for e in events if e["type"] == "train.step" and "loss" in e}
            evals = {e["step"] for e in events if e["type"] == "eval.result" and "validation_loss" in e}
            assert int(loss.get_attribute("data-points")) == len(steps) + len(evals) >= 10
            assert int(page.locator("#chart-lr").get_attribute("data-points")) == len(steps)
            assert page.locator("#timeline li").count() >= 1 and page.locator("#checkpoints table").count() == 1
            page.screenshot(path=str(shots / "job.png"), full_page=True)
            if os.environ.get("TUNEFORGE_DASHBOARD_DOCS"):
                DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(DOCS_SHOT))

            page.get_by_role("link", name="Results").click()
            page.wait_for_selector("main[data-ready='1']")
            assert page.locator("#comparison").count() == 1
            rows = page.locator("#predictions tbody tr").count()
            assert rows >= 1
            page.get_by_label("Show").select_option("still wrong")
            assert page.locator("#predictions tbody tr").count() == page.locator("#predictions tbody tr.outcome-still-wrong").count()
            page.screenshot(path=str(shots / "results.png"), full_page=True)

            tuned = manager.get_job(job_id).fine_tuned_model
            page.goto(f"/try?model={tuned}")
            page.wait_for_selector("main[data-ready='1']")
            assert page.get_by_label("Model B").input_value() == tuned
            page.get_by_label("Prompt").fill("color of sky?")
            page.get_by_role("button", name="Send to both").click()
            for side in ("a", "b"):
                page.wait_for_selector(f"#answer-{side}[data-done='1']")
                assert not page.locator(f"#answer-{side}").inner_text().startswith("error")
                assert int(page.locator(f"#answer-{side}").get_attribute("data-tokens")) >= 1  # an answer came back
            assert page.locator(".answers h2").nth(1).inner_text() == tuned
            page.screenshot(path=str(shots / "try.png"), full_page=True)

            page.goto(f"/compare?job={job_id}")
            page.wait_for_selector("main[data-ready='1']")
            page.locator("#comparison .chart").first.wait_for()
            page.screenshot(path=str(shots / "compare.png"), full_page=True)

            page.goto(f"/export/{job_id}")
            page.wait_for_selector("main[data-ready='1']")
            page.get_by_label("Format").select_option("merged")
            page.get_by_role("button", name="Export and check parity").click()
            page.locator("article.export[data-status='succeeded'], article.export[data-status='failed']").wait_for(timeout=240_000)
            assert page.locator("article.export").first.get_attribute("data-status") == "succeeded", \
                page.locator("article.export").first.inner_text()
            assert "greedy_agreement" in page.locator("#exports").inner_text()
            page.screenshot(path=str(shots / "export.png"), full_page=True)

            other = manager.create_job(manager.list_files(purpose="fine-tune").data[0].id, model=str(tiny_model_dir), extra={"max_length": 128})
            page.goto(f"/jobs/{other.id}")
            page.wait_for_selector("main[data-ready='1']")
            page.get_by_role("button", name="Cancel").click()
            page.locator("#job-status", has_text="cancelled").wait_for()
            assert manager.get_job(other.id).status == "cancelled"
            assert watch.errors == []
        finally:
            browser.close()
            worker.stop(wait=True, timeout=60)
    assert sorted(p.name for p in shots.iterdir()) == ["compare.png", "export.png", "job.png", "results.png", "try.png"]


def _wait_until(page, condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(200)
