"""Fuzz every operation of the server's own OpenAPI spec with schemathesis (in-process ASGI): never a 500.

The app runs over a real ``FineTuningManager`` (SQLite in a temporary home, no worker) and the tiny
model, with answers capped at a few tokens so that generated requests stay fast. Examples per
operation are bounded; the whole run takes a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from server_support import API_KEY  # noqa: E402

AUTH = {"Authorization": f"Bearer {API_KEY}"}
EXAMPLES = 25


@pytest.fixture(scope="module")
def fuzz_app(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from tuneforge.jobs import FineTuningManager
    from tuneforge.server import ServerSettings, create_app

    home = tmp_path_factory.mktemp("fuzz-home")
    app = create_app(ServerSettings(models=[str(tiny_model_dir)], home=home, max_tokens_limit=4, max_upload_mb=1),
                     manager=FineTuningManager(home=home), api_key=API_KEY)
    yield app
    app.state.tuneforge.close()


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app, headers=AUTH)


def test_no_server_errors(api_schema) -> None:
    """Every operation, ``EXAMPLES`` generated requests each (the pytest plug-in's fixture loader does not work
    with this pytest, so the operations' hypothesis strategies are driven here)."""
    from hypothesis import given

    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    statuses: dict[str, set[int]] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            response = case.call(headers=AUTH)
            statuses.setdefault(operation.label, set()).add(response.status_code)
            assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:500])
            if response.status_code >= 400:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"}, error
            assert response.headers.get("x-request-id")

        check()
    # The fuzzing reached past validation: requests the generator made valid were served.
    assert 200 in statuses["GET /v1/models"] and 200 in statuses["GET /v1/fine_tuning/jobs"], statuses
    assert 200 in statuses["POST /v1/files"], statuses
