"""The dashboard's gate rules without a browser: which paths a session opens, session tokens, cross-site refusals."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from tuneforge.server.dashboard.auth import COOKIE, DashboardAuth, session_cookie  # noqa: E402
from tuneforge.server.errors import APIError  # noqa: E402

KEY = "sk-test-0123456789abcdef"


def _headers(auth: DashboardAuth | None = None, **extra: str) -> dict[bytes, bytes]:
    found = {b"host": b"127.0.0.1:8000"}
    if auth is not None:
        found[b"cookie"] = f"other=1; {COOKIE}={auth.new_session()}".encode()
    found.update({k.replace("_", "-").encode(): v.encode() for k, v in extra.items()})
    return found


def test_the_api_and_its_docs_are_never_the_dashboards() -> None:
    auth = DashboardAuth(KEY)
    for path in ("/v1/models", "/v1/fine_tuning/jobs", "/docs", "/openapi.json", "/favicon.ico", "/jobsx"):
        assert auth.verdict("GET", path, _headers(auth)) == "api"  # the bearer key decides, the cookie does not count


def test_a_session_opens_pages_and_ui_routes_and_without_one_pages_go_to_login() -> None:
    auth = DashboardAuth(KEY)
    for path in ("/", "/jobs", "/jobs/ftjob-1", "/results/ftjob-1", "/data", "/try", "/ui/api/jobs", "/ui/v1/models"):
        assert auth.verdict("GET", path, _headers(auth)) == "open", path
    assert auth.verdict("GET", "/jobs", _headers()) == "login"
    with pytest.raises(APIError) as refused:
        auth.verdict("GET", "/ui/api/jobs", _headers())
    assert refused.value.status == 401
    for public in ("/login", "/ui/static/core.js"):
        assert auth.verdict("GET", public, _headers()) == "open"


def test_session_tokens_expire_do_not_survive_a_restart_and_are_not_the_key() -> None:
    auth = DashboardAuth(KEY)
    token = auth.new_session(now=1000.0)
    assert KEY not in token and auth.session_valid(token, now=1000.0 + 60)
    assert not auth.session_valid(token, now=1000.0 + auth.session_seconds + 1)
    assert not DashboardAuth(KEY).session_valid(token, now=1000.0)  # a new app (a restart) has a new secret
    expiry, _, signature = token.partition(".")
    assert not auth.session_valid(f"{int(expiry) + 3600}.{signature}", now=1000.0)  # a longer life is not signed
    assert not auth.session_valid("", now=0) and not auth.session_valid("x.y", now=0)


def test_state_changes_need_the_dashboard_header_and_this_origin() -> None:
    auth = DashboardAuth(KEY)
    path = "/ui/v1/fine_tuning/jobs/ftjob-1/cancel"
    for headers in (_headers(auth), _headers(auth, x_tuneforge_dashboard="1", origin="http://evil.example"),
                    _headers(auth, x_tuneforge_dashboard="1", origin="null"), _headers(auth, x_tuneforge_dashboard="yes")):
        with pytest.raises(APIError) as refused:
            auth.verdict("POST", path, headers)
        assert refused.value.status == 403 and refused.value.code == "csrf_refused"
    assert auth.verdict("POST", path, _headers(auth, x_tuneforge_dashboard="1", origin="http://127.0.0.1:8000")) == "open"
    assert auth.verdict("POST", path, _headers(auth, x_tuneforge_dashboard="1")) == "open"  # browsers may omit Origin on same-origin requests
    with pytest.raises(APIError):
        auth.verdict("POST", "/ui/login", _headers(origin="http://evil.example", x_tuneforge_dashboard="1"))


def test_the_cookie_is_httponly_strict_and_secure_on_https() -> None:
    cookie = session_cookie("t", 60, secure=False)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie and "Secure" not in cookie
    assert session_cookie("t", 60, secure=True).endswith("; Secure")
