"""The ASGI layer in front of every route: request ids, the bearer key, the request-size limit.

Pure ASGI (no ``BaseHTTPMiddleware``) so streaming responses pass through untouched and a request
costs microseconds here. Order per request:

1. ``x-request-id``: the client's, when it is a short token of safe characters, else a new
   ``req_<hex>``; set on every response, errors included.
2. ``Authorization: Bearer <key>`` compared in constant time; anything else is 401
   ``invalid_api_key`` — for every path, ``/docs`` and ``/openapi.json`` included. The dashboard's
   own paths (pages, ``/ui/*``) are decided by its ``DashboardAuth`` instead (a session cookie,
   with cross-site checks; ``server/dashboard/auth.py``); a page without a session redirects to ``/login``.
3. A body larger than the limit is 413 before it is read: at once by ``Content-Length``, else
   while it streams in (chunked uploads), without buffering it.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from typing import Any, Awaitable, Callable

from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.server.errors import SERVER_ERROR, APIError, log

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class _TooLarge(StarletteHTTPException):
    """Raised from ``receive`` when the body passes the limit; an HTTPException so FastAPI's body parsing lets it through."""

    def __init__(self, message: str) -> None:
        super().__init__(413, detail=message)


class APIGate:
    """Request ids, authentication and the body-size limit around ``app`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, api_key: str, max_body_bytes: int, dashboard: Any = None) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()
        self.max_body_bytes = max_body_bytes
        self.dashboard = dashboard  # a DashboardAuth, or None: no dashboard, the bearer key for every path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        request_id = _request_id(headers.get(b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        verdict = "api"
        if self.dashboard is not None:
            try:
                verdict = self.dashboard.verdict(scope.get("method", "GET"), scope.get("path", ""), headers)
            except APIError as refused:
                await _send_error(send_with_id, refused)
                return
            if verdict == "login":
                await send_with_id({"type": "http.response.start", "status": 303,
                                    "headers": [(b"location", b"/login"), (b"content-length", b"0")]})
                await send_with_id({"type": "http.response.body", "body": b""})
                return
        if verdict == "api" and not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            await _send_error(send_with_id, APIError(
                401, "Incorrect API key provided. Send it as 'Authorization: Bearer <key>' (the key is in "
                     "$TUNEFORGE_HOME/api_key, or $TUNEFORGE_API_KEY).", code="invalid_api_key"),
                [(b"www-authenticate", b"Bearer")])
            return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _send_error(send_with_id, self._too_large() if length.isdigit() else APIError(400, "Invalid Content-Length."))
            return
        try:
            await self.app(scope, self._limited(receive), send_with_id)
        except _TooLarge:
            if started:
                raise
            await _send_error(send_with_id, self._too_large())
        except Exception:
            # Here rather than in Starlette's outermost handler, so that a 500 carries x-request-id too.
            log.exception("unexpected error on %s %s (request %s)", scope.get("method"), scope.get("path"), request_id)
            if started:
                raise
            await _send_error(send_with_id, APIError(500, "The server had an error while processing your request; "
                                                          "the server log has the details.", type_=SERVER_ERROR))

    def _too_large(self) -> APIError:
        mb = self.max_body_bytes / (1024 * 1024)
        return APIError(413, f"The request body is larger than this server's limit of {mb:g} MB "
                             "(start the server with a larger --max-upload-mb).", code="request_too_large")

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise _TooLarge(self._too_large().message)
            return message

        return counted


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in scope.get("headers", [])}


def _request_id(given: bytes | None) -> str:
    if given:
        text = given.decode("latin-1")
        if CLIENT_REQUEST_ID.fullmatch(text):
            return text
    return "req_" + secrets.token_hex(12)


async def _send_error(send: Send, error: APIError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    if error.status == 409:
        headers.append((b"x-should-retry", b"false"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
