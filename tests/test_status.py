"""Run status in one place: the OpenAI job vocabulary plus ``interrupted``, stored as plain words."""

from __future__ import annotations

import json

from tuneforge.core.status import RunStatus, can_resume, is_terminal, parse_status


def test_the_vocabulary_is_openais_plus_interrupted():
    assert [s.value for s in RunStatus] == [
        "validating_files", "queued", "running", "succeeded", "failed", "cancelled", "interrupted"]


def test_members_are_their_words_in_json_and_strings():
    assert RunStatus.SUCCEEDED == "succeeded" and f"{RunStatus.FAILED}" == "failed" and str(RunStatus.QUEUED) == "queued"
    assert json.dumps({"status": RunStatus.INTERRUPTED}) == '{"status": "interrupted"}'


def test_terminal_and_resumable():
    assert [s.value for s in RunStatus if s.is_terminal] == ["succeeded", "failed", "cancelled", "interrupted"]
    assert [s.value for s in RunStatus if s.can_resume] == ["failed", "cancelled", "interrupted"]
    assert is_terminal("succeeded") and not is_terminal("running") and not is_terminal("nonsense")
    assert can_resume("interrupted") and not can_resume("succeeded")
    assert can_resume(None)  # a killed run wrote no results.json: resumable
    assert parse_status("bogus") is None and parse_status("queued") is RunStatus.QUEUED


def test_results_json_and_events_hold_the_words(lora_run):
    saved = json.loads((lora_run.run_dir / "results.json").read_text())
    assert saved["status"] == "succeeded" and lora_run.status is RunStatus.SUCCEEDED
    finished = [json.loads(line) for line in (lora_run.run_dir / "events.jsonl").read_text().splitlines()][-1]
    assert finished["type"] == "run.finished" and finished["status"] == "succeeded"
