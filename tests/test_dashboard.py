"""The web dashboard in Debian's Chromium (Playwright), against a live server with a job manager on the tiny model.

Log in (the key becomes an HttpOnly, SameSite=Strict session cookie that does not open /v1), upload a
file with a broken line and see that line, every invalid Start value shown at once next to its
field, cancel / pause / resume a job from its page, the job page's curves and issue timeline growing
over server-sent events as the job's events.jsonl is written, chat with two models side by side, and every
page loads without a console error (a screenshot of each is saved under the test's temp dir). The
server has no worker here, so jobs stay queued; test_dashboard_e2e.py trains one.
"""

from __future__ import annotations

import time

import httpx
import pytest

pytest.importorskip("fastapi")

from dashboard_support import ConsoleWatch, bad_rows, chat_rows, launch_chromium, require_browser  # noqa: E402
from server_support import API_KEY, live_server  # noqa: E402

sync_api = require_browser()
AUTH = {"Authorization": f"Bearer {API_KEY}"}
PAGES = ["/jobs", "/data", "/start", "/compare", "/try", "/export"]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    from tuneforge.jobs import FineTuningManager
    from tuneforge.server import ServerSettings, create_app

    home = tmp_path_factory.mktemp("dash-home")
    manager = FineTuningManager(home=home)
    app = create_app(ServerSettings(models=[str(tiny_model_dir)], home=home), manager=manager, api_key=API_KEY)
    with live_server(app) as url:
        yield url.removesuffix("/v1"), manager


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("dashboard-screenshots")


@pytest.fixture(scope="module")
def session_state(server, browser):
    """The storage state of a logged-in browser context (logged in through the page, once)."""
    base, _ = server
    context = browser.new_context(base_url=base)
    page = context.new_page()
    page.goto("/login")
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/jobs")
    state = context.storage_state()
    context.close()
    return state


@pytest.fixture
def page(server, browser, session_state):
    context = browser.new_context(base_url=server[0], storage_state=session_state, viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.watch = ConsoleWatch(page)
    yield page
    context.close()


@pytest.fixture(scope="module")
def uploaded(server):
    base, _ = server
    response = httpx.post(f"{base}/v1/files", headers=AUTH, data={"purpose": "fine-tune"},
                          files={"file": ("colors.jsonl", chat_rows(), "application/jsonl")})
    response.raise_for_status()
    return response.json()


def _queued_job(server, uploaded, suffix: str) -> dict:
    base, _ = server
    response = httpx.post(f"{base}/v1/fine_tuning/jobs", headers=AUTH, json={
        "model": "tiny-llama", "training_file": uploaded["id"], "suffix": suffix, "tuneforge": {"max_length": 128}})
    response.raise_for_status()
    return response.json()


def _ready(page, path: str) -> None:
    page.goto(path)
    page.wait_for_selector("main[data-ready='1']")


def test_login_sets_a_strict_httponly_session_cookie_that_does_not_open_the_api(server, browser) -> None:
    base, _ = server
    context = browser.new_context(base_url=base)
    page = context.new_page()
    watch = ConsoleWatch(page)
    page.goto("/jobs")
    assert page.url.endswith("/login")  # no session: the page sends you to log in
    page.get_by_label("API key").fill("sk-wrong-wrong-wrong-wrong")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("not this server's API key").wait_for()
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/jobs")
    cookie, = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and API_KEY not in cookie["value"]
    assert API_KEY not in page.url
    assert context.request.get(f"{base}/v1/models").status == 401  # the cookie opens the dashboard only
    assert context.request.get(f"{base}/ui/v1/models").status == 200
    # the one console error allowed: the 401 of the wrong key, which the page shows as its message
    assert [e for e in watch.errors if "401" not in e] == []
    context.close()


def test_state_changing_dashboard_requests_need_the_header_and_the_same_origin(server, uploaded, session_state) -> None:
    base, _ = server
    job = _queued_job(server, uploaded, "csrf")
    cookie = {c["name"]: c["value"] for c in session_state["cookies"]}
    url = f"{base}/ui/v1/fine_tuning/jobs/{job['id']}/cancel"
    assert httpx.post(url, cookies=cookie).status_code == 403  # no X-Tuneforge-Dashboard header
    header = {"X-Tuneforge-Dashboard": "1"}
    assert httpx.post(url, cookies=cookie, headers={**header, "Origin": "http://evil.example"}).status_code == 403
    assert httpx.post(url, headers=header).status_code == 401  # no session
    assert httpx.post(url, cookies={"tuneforge_session": "9999999999.forged"}, headers=header).status_code == 401
    assert httpx.post(url, cookies=cookie, headers={**header, "Origin": base}).json()["status"] == "cancelled"


def test_upload_with_a_broken_line_shows_that_line_and_field(page, shots) -> None:
    _ready(page, "/data")
    page.get_by_label("Training file").set_input_files(
        {"name": "broken.jsonl", "mimeType": "application/jsonl", "buffer": bad_rows(line=7)})
    page.get_by_role("button", name="Upload and check").click()
    finding = page.locator("#findings tr.finding.sev-error").first
    finding.wait_for()
    assert "broken.jsonl:7" in finding.locator("td.where").inner_text()
    assert "error(s) in broken.jsonl" in page.locator(".verdict").inner_text()
    page.screenshot(path=str(shots / "data-errors.png"), full_page=True)
    assert page.watch.errors == []


def test_good_upload_shows_token_counts_statistics_and_an_estimate(page, shots) -> None:
    _ready(page, "/data")
    page.get_by_label("Training file").set_input_files(
        {"name": "good.jsonl", "mimeType": "application/jsonl", "buffer": chat_rows(30)})
    page.get_by_label("Estimate the training time").check()
    page.get_by_label("Price of this machine per hour").fill("2")
    page.get_by_role("button", name="Upload and check").click()
    page.locator(".verdict.ok").wait_for(timeout=120_000)
    stats = page.locator("#stats").inner_text()
    assert "usable examples" in stats and "tokens (all examples)" in stats
    assert "estimated time" in stats and "estimated cost" in stats
    page.screenshot(path=str(shots / "data.png"), full_page=True)
    assert page.watch.errors == []


def test_start_form_shows_every_invalid_value_at_once_next_to_its_field(page, uploaded, shots) -> None:
    _ready(page, "/start")
    page.get_by_label("Training file", exact=True).select_option(uploaded["id"])
    page.get_by_label("Epochs").fill("-1")
    page.get_by_label("Batch size").fill("0")
    page.get_by_label("LoRA rank").fill("many")
    page.get_by_role("button", name="Start the job").click()
    for field in ("epochs", "batch_size", "lora_r"):
        error = page.locator(f"#e-{field}")
        error.wait_for()
        assert error.inner_text().strip(), field
        assert page.locator(f"#f-{field}").get_attribute("aria-invalid") == "true"
    assert page.locator("#e-learning_rate").inner_text() == ""
    assert "3 value(s) to fix" in page.locator("#form-problems").inner_text()
    page.screenshot(path=str(shots / "start-invalid.png"), full_page=True)
    assert page.url.endswith("/start")  # nothing was submitted


def test_start_form_with_defaults_queues_a_job_and_opens_its_page(page, uploaded) -> None:
    _ready(page, f"/start?training_file={uploaded['id']}")
    page.get_by_label("Name suffix").fill("from-form")
    page.get_by_label("More FineTuningConfig fields").fill('{"max_length": 128}')
    page.get_by_role("button", name="Start the job").click()
    page.wait_for_url("**/jobs/ftjob-*")
    page.wait_for_selector("main[data-ready='1']")
    assert page.locator("#job-status").inner_text().strip() in ("queued", "validating_files")
    assert page.watch.errors == []


def test_cancel_pause_resume_from_the_job_page(page, server, uploaded, shots) -> None:
    paused = _queued_job(server, uploaded, "pause-me")
    _ready(page, f"/jobs/{paused['id']}")
    page.get_by_role("button", name="Pause").click()
    page.locator("#job-status", has_text="paused").wait_for()
    assert page.get_by_role("button", name="Resume").is_enabled()
    page.get_by_role("button", name="Resume").click()
    page.locator("#job-status", has_text="queued").wait_for()

    doomed = _queued_job(server, uploaded, "cancel-me")
    _ready(page, f"/jobs/{doomed['id']}")
    page.get_by_role("button", name="Cancel").click()
    page.locator("#job-status", has_text="cancelled").wait_for()
    assert page.get_by_role("button", name="Cancel").is_disabled()
    assert server[1].get_job(doomed["id"]).status == "cancelled"
    page.screenshot(path=str(shots / "job-cancelled.png"), full_page=True)
    _ready(page, "/jobs")
    row = page.locator(f"tr[data-job='{doomed['id']}']")
    assert "cancelled" in row.inner_text()
    assert page.watch.errors == []


def test_try_sends_one_prompt_to_two_models_and_shows_both_answers(page, shots) -> None:
    _ready(page, "/try")
    page.get_by_label("Prompt").fill("color of sky?")
    page.get_by_label("Max tokens").fill("6")
    page.get_by_role("button", name="Send to both").click()
    for side in ("a", "b"):
        page.wait_for_selector(f"#answer-{side}[data-done='1']")
        text = page.locator(f"#answer-{side}").inner_text()
        assert not text.startswith("error"), text
        assert int(page.locator(f"#answer-{side}").get_attribute("data-tokens")) >= 1, side  # an answer streamed back
    page.screenshot(path=str(shots / "try.png"), full_page=True)
    assert page.watch.errors == []


def test_every_page_loads_without_console_errors(page, server, uploaded, shots) -> None:
    job = _queued_job(server, uploaded, "pages")
    for path in [*PAGES, f"/jobs/{job['id']}", f"/results/{job['id']}", f"/export/{job['id']}", f"/compare?job={job['id']}"]:
        _ready(page, path)
        assert page.locator("main .error[role=alert]").count() == 0 or not page.locator("main .error[role=alert]").first.inner_text(), path
        name = "page-" + path.strip("/").replace("/", "-").replace("?", "-").replace("=", "-")
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert page.watch.errors == []


def test_every_control_has_a_label(page, server, uploaded) -> None:
    job = _queued_job(server, uploaded, "labels")
    for path in ["/data", "/start", "/try", "/export", f"/jobs/{job['id']}", "/compare"]:
        _ready(page, path)
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
            .filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label')).map(c => c.id || c.outerHTML)""")
        assert unlabelled == [], (path, unlabelled)
        page.keyboard.press("Tab")  # the first Tab reaches the skip link: the page is keyboard usable
        assert page.evaluate("document.activeElement.className") == "skip"


def test_the_job_page_draws_new_events_as_they_are_written(page, server, uploaded, shots) -> None:
    """The job's events.jsonl grows while the page is open: points and the explained issue arrive over SSE, no reload."""
    from tuneforge.monitor.events import EventWriter

    job = _queued_job(server, uploaded, "live")
    run_dir = server[1].get_job(job["id"]).run_dir
    _ready(page, f"/jobs/{job['id']}")
    loss = page.locator("#chart-loss")
    assert loss.get_attribute("data-points") == "0"
    page.evaluate("window.__not_reloaded = true")
    with EventWriter(run_dir / "events.jsonl") as events:
        events.emit("train.started", total_steps=4)
        events.emit("train.step", step=1, total_steps=4, loss=2.5, learning_rate=1e-3, tokens_per_second=900.0, memory_mb=400.0)
        page.locator("#chart-loss[data-points='1']").wait_for()
        events.emit("train.step", step=2, total_steps=4, loss=2.1, learning_rate=8e-4, tokens_per_second=950.0, memory_mb=410.0)
        events.emit("issue.detected", step=2, kind="loss_spike", severity="warning", message="the loss jumped 3x",
                    suggestion="lower the learning rate or raise warmup_steps", action="warn")
        events.emit("eval.result", step=2, validation_loss=2.3)
        page.locator("#chart-loss[data-points='3']").wait_for()  # two train points and one validation point
    assert page.locator("#chart-lr").get_attribute("data-points") == "2"
    assert page.locator("#chart-memory").get_attribute("data-points") == "2"
    issue = page.locator("#timeline li.sev-warning")
    assert "loss_spike" in issue.inner_text() and "lower the learning rate" in issue.locator(".explain").inner_text()
    assert page.evaluate("window.__not_reloaded") is True
    page.screenshot(path=str(shots / "job-live.png"), full_page=True)
    assert page.watch.errors == []


def test_an_export_that_cannot_be_made_reports_why(server, uploaded, session_state) -> None:
    base, _ = server
    job = _queued_job(server, uploaded, "export")
    cookie = {c["name"]: c["value"] for c in session_state["cookies"]}
    header = {"X-Tuneforge-Dashboard": "1"}
    url = f"{base}/ui/api/jobs/{job['id']}/exports"
    assert httpx.post(url, cookies=cookie, headers=header, json={"format": "nope"}).status_code == 400
    started = httpx.post(url, cookies=cookie, headers=header, json={"format": "merged"}).json()
    assert started["status"] == "running" and started["format"] == "merged"
    for _ in range(100):
        state = httpx.get(url, cookies=cookie).json()["started"][0]
        if state["status"] != "running":
            break
        time.sleep(0.1)
    assert state["status"] == "failed" and state["error"]  # a queued job has no trained weights to export
