"""Who may open the dashboard: a login page turns the API key into a session cookie, only for the dashboard.

The API key is typed once into ``/login`` and checked in constant time; the browser then holds a
session token (never the key) in an ``HttpOnly``, ``SameSite=Strict`` cookie. The token is an HMAC
of its expiry under the key and a secret made when the app starts, so it cannot be used as a
bearer key, stops working when the server restarts or the key changes, and expires by itself.

The cookie opens only the dashboard: its pages, ``/ui/api/*`` and ``/ui/v1/*`` (the same routes as
``/v1``, mounted again for the pages). ``/v1`` keeps its bearer key alone. Against cross-site
requests: the cookie is ``SameSite=Strict``, and every request that changes something (any method
but GET/HEAD) must carry the ``X-Tuneforge-Dashboard`` header — which a page of another origin cannot
send without a CORS preflight this server never grants — and, when the browser sends ``Origin``,
come from this very host.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from tuneforge.server.errors import APIError

COOKIE = "tuneforge_session"
CSRF_HEADER = b"x-tuneforge-dashboard"
SESSION_SECONDS = 12 * 3600
PAGE_PATHS = ("/", "/data", "/start", "/jobs", "/compare", "/try", "/export")  # and /jobs/<id>, /results/<id>, /export/<id>
PAGE_PREFIXES = ("/jobs/", "/results/", "/export/")
PUBLIC_PATHS = ("/login", "/ui/login", "/ui/logout")
STATIC_PREFIX = "/ui/static/"
SAFE_METHODS = ("GET", "HEAD")

Verdict = Literal["api", "open", "login"]


@dataclass
class DashboardAuth:
    """Decides, per request, whether the dashboard's rules apply and whether they admit it (see the module docstring)."""

    api_key: str
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    session_seconds: int = SESSION_SECONDS

    def key_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.api_key.encode())

    def new_session(self, now: float | None = None) -> str:
        """A session token valid for ``session_seconds``: ``<expiry>.<hmac>``."""
        expires = int((now or time.time()) + self.session_seconds)
        return f"{expires}.{self._sign(expires)}"

    def session_valid(self, token: str, now: float | None = None) -> bool:
        expires, _, signature = token.partition(".")
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return False
        return hmac.compare_digest(signature, self._sign(int(expires)))

    def _sign(self, expires: int) -> str:
        return hmac.new(self.secret + self.api_key.encode(), str(expires).encode(), hashlib.sha256).hexdigest()

    def verdict(self, method: str, path: str, headers: dict[bytes, bytes]) -> Verdict:
        """``api``: not the dashboard's (the bearer key decides); ``open``: let it in; ``login``: send it to log in.

        Raises ``APIError`` (403) for a state-changing request without the dashboard header or from
        another origin, and (401) for a dashboard JSON request without a valid session.
        """
        if not is_dashboard_path(path):
            return "api"
        if method not in SAFE_METHODS:
            self._check_same_origin(headers)
        if path in PUBLIC_PATHS or path.startswith(STATIC_PREFIX):
            return "open"
        if self.session_valid(_cookie(headers, COOKIE)) or self._bearer_ok(headers):
            return "open"
        if is_page_path(path):
            return "login"
        raise APIError(401, "Log in to the dashboard first (open /login), or send 'Authorization: Bearer <key>'.",
                       code="invalid_api_key")

    def _bearer_ok(self, headers: dict[bytes, bytes]) -> bool:
        return hmac.compare_digest(headers.get(b"authorization", b""), f"Bearer {self.api_key}".encode())

    @staticmethod
    def _check_same_origin(headers: dict[bytes, bytes]) -> None:
        if headers.get(CSRF_HEADER) != b"1":
            raise APIError(403, "This dashboard request lacks the X-Tuneforge-Dashboard: 1 header; requests that change "
                                "something must come from the dashboard's own pages.", code="csrf_refused")
        origin = headers.get(b"origin")
        if origin is not None and origin != b"null":
            host = headers.get(b"host", b"").decode("latin-1").lower()
            if urlsplit(origin.decode("latin-1")).netloc.lower() != host:
                raise APIError(403, "This dashboard request comes from another origin; open the dashboard on this server.",
                               code="csrf_refused")
        elif origin == b"null":
            raise APIError(403, "This dashboard request comes from an opaque origin.", code="csrf_refused")


def is_page_path(path: str) -> bool:
    return path in PAGE_PATHS or path.startswith(PAGE_PREFIXES)


def is_dashboard_path(path: str) -> bool:
    """Pages, the login page, the static files and the ``/ui`` JSON routes; never ``/v1``, ``/docs`` or ``/openapi.json``."""
    return is_page_path(path) or path == "/login" or path.startswith("/ui/")


def _cookie(headers: dict[bytes, bytes], name: str) -> str:
    raw = headers.get(b"cookie", b"").decode("latin-1")
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def session_cookie(token: str, max_age: int, secure: bool) -> str:
    """The ``Set-Cookie`` value of a session (``max_age`` 0 clears it)."""
    flags = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    return flags + ("; Secure" if secure else "")
