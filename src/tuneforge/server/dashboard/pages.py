"""The dashboard's HTML: one small shell per page (navigation, a ``<main>`` the page's script fills), and the login.

Pages carry no data and no inline script: ``/ui/static/core.js`` and the page's own script read
everything from ``/ui/api`` and ``/ui/v1`` after load. The Content-Security-Policy allows only this
origin (``'self'``): nothing is fetched from elsewhere, so the dashboard works offline.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from tuneforge.server.dashboard.auth import SESSION_SECONDS, session_cookie
from tuneforge.server.errors import APIError

router = APIRouter(include_in_schema=False)
NAV = (("/data", "Data"), ("/start", "Start a job"), ("/jobs", "Jobs"), ("/compare", "Compare"), ("/try", "Try"),
       ("/export", "Export"))
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-frame-options": "DENY", "x-content-type-options": "nosniff", "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def page(name: str, title: str, nav_current: str | None, script: str, data: dict[str, Any] | None = None,
         nav: bool = True) -> HTMLResponse:
    """The shell of one page: ``<main data-page=name data-args=...>`` filled by ``/ui/static/<script>.js``."""
    links = "".join(f'<a href="{href}"{" aria-current=page" if href == nav_current else ""}>{label}</a>'
                    for href, label in NAV)
    header = (f'<header><a class="brand" href="/">tuneforge</a><nav aria-label="Dashboard">{links}</nav>'
              '<button type="button" id="logout" class="quiet">Log out</button></header>') if nav else \
             '<header><span class="brand">tuneforge</span></header>'
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} · tuneforge</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,"><link rel="stylesheet" href="/ui/static/dashboard.css">
</head><body><a class="skip" href="#main">Skip to content</a>{header}
<main id="main" tabindex="-1" data-page="{html.escape(name)}" data-args="{html.escape(json.dumps(data or {}))}">
<h1>{html.escape(title)}</h1><p class="muted" id="loading">Loading…</p></main>
<div id="toast" role="status" aria-live="polite"></div>
<script src="/ui/static/core.js"></script><script src="/ui/static/{script}.js"></script></body></html>"""
    return HTMLResponse(body, headers=SECURITY_HEADERS)


@router.get("/login")
def login_page() -> HTMLResponse:
    return page("login", "Log in", None, "login", nav=False)


class Login(BaseModel):
    api_key: str = Field(min_length=1, max_length=4096)


@router.post("/ui/login")
def login(body: Login, request: Request) -> JSONResponse:
    """Check the API key; on success set the session cookie (``HttpOnly``, ``SameSite=Strict``; never the key itself)."""
    auth = request.app.state.dashboard_auth
    if not auth.key_matches(body.api_key.strip()):
        raise APIError(401, "That is not this server's API key (it is in $TUNEFORGE_HOME/api_key, or $TUNEFORGE_API_KEY).",
                       param="api_key", code="invalid_api_key")
    response = JSONResponse({"ok": True})
    response.headers["set-cookie"] = session_cookie(auth.new_session(), SESSION_SECONDS, request.url.scheme == "https")
    return response


@router.post("/ui/logout")
def logout(request: Request) -> JSONResponse:
    response = JSONResponse({"ok": True})
    response.headers["set-cookie"] = session_cookie("", 0, request.url.scheme == "https")
    return response


@router.get("/")
@router.get("/jobs")
def jobs_page() -> HTMLResponse:
    return page("jobs", "Jobs", "/jobs", "jobs")


@router.get("/jobs/{job_id}")
def job_page(job_id: str) -> HTMLResponse:
    return page("job", "Job", "/jobs", "job", {"job_id": job_id})


@router.get("/data")
def data_page() -> HTMLResponse:
    return page("data", "Data", "/data", "data")


@router.get("/start")
def start_page() -> HTMLResponse:
    return page("start", "Start a job", "/start", "start")


@router.get("/results/{job_id}")
def results_page(job_id: str) -> HTMLResponse:
    return page("results", "Results", "/jobs", "results", {"job_id": job_id})


@router.get("/compare")
def compare_page() -> HTMLResponse:
    return page("compare", "Compare runs", "/compare", "compare")


@router.get("/try")
def try_page() -> HTMLResponse:
    return page("try", "Try a model", "/try", "try")


@router.get("/export")
@router.get("/export/{job_id}")
def export_page(job_id: str = "") -> HTMLResponse:
    return page("export", "Export", "/export", "export", {"job_id": job_id})


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    """A file of ``dashboard/static`` (a plain name: no directories, only .js, .css and .svg)."""
    suffix = name[name.rfind("."):] if "." in name else ""
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in STATIC_TYPES:
        raise APIError(404, f"no dashboard file {name[:80]!r}")
    file = resources.files("tuneforge.server.dashboard").joinpath("static", name)
    if not file.is_file():
        raise APIError(404, f"no dashboard file {name[:80]!r}")
    return Response(file.read_bytes(), media_type=STATIC_TYPES[suffix],
                    headers={"x-content-type-options": "nosniff", "cache-control": "no-cache"})
