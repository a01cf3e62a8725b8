"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with the right HTTP status.

Every response that is not a success goes through here: ``APIError`` raised by a route, FastAPI's
own errors (unknown route 404, wrong method 405, body validation — 400 as OpenAI does, not
FastAPI's 422), a ``TuneforgeError`` from the library (its message is meant for users), and any
other exception (500 ``server_error`` without internals; the traceback goes to the server log).

Status rules (see OPENAI_FT_API.md §2.3): the SDK retries 409 and every 5xx, so business-rule
refusals (cancel a finished job) are 400; 409 is sent with ``x-should-retry: false``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.core.errors import TuneforgeError

log = logging.getLogger("tuneforge.server")

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class APIError(Exception):
    """An error response: ``status``, and the four fields of OpenAI's error object."""

    def __init__(self, status: int, message: str, type_: str = INVALID_REQUEST, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str = INVALID_REQUEST, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def not_found(what: str, ident: str, param: str | None, code: str | None = None) -> APIError:
    return APIError(404, f"No such {what}: {_shown(ident)}", param=param, code=code)


def model_not_found(model: str) -> APIError:
    return APIError(404, f"The model `{_shown(model)}` does not exist or you do not have access to it.",
                    param="model", code="model_not_found")


def _shown(value: str, limit: int = 120) -> str:
    """A client-given value as it may appear in a message: bounded and printable."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))
    return text if len(text) <= limit else text[:limit] + "..."


def response_for(error: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
    extra = dict(headers or {})
    if error.status == 409:
        extra.setdefault("x-should-retry", "false")
    return JSONResponse(error.body(), status_code=error.status, headers=extra or None)


def library_error(error: TuneforgeError) -> APIError:
    """The API error for a library error: its class's ``http_status``/``param``/``code`` when it has them.

    The jobs library marks its errors (not found 404, conflict 400, invalid request 400 + param);
    every other ``TuneforgeError`` is something the request asked that cannot be done: 400.
    """
    status = getattr(error, "http_status", None) or _status_by_name(error)
    return APIError(int(status), str(error), param=getattr(error, "param", None), code=getattr(error, "code", None))


def _status_by_name(error: TuneforgeError) -> int:
    name = type(error).__name__.lower()
    if "notfound" in name:
        return 404
    return 400


def install_error_handlers(app: FastAPI) -> None:
    """Make every error response of ``app`` OpenAI-shaped."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, error: APIError) -> JSONResponse:
        return response_for(error)

    @app.exception_handler(TuneforgeError)
    async def _library_error(request: Request, error: TuneforgeError) -> JSONResponse:
        return response_for(library_error(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = {404: "Not found: no such route. The API is under /v1 (for example /v1/models).",
                   405: f"Method {request.method} is not allowed on this route."}.get(error.status_code, str(error.detail))
        code = "request_too_large" if error.status_code == 413 else None
        return response_for(APIError(error.status_code, message, code=code), headers=dict(error.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return response_for(validation_error(error.errors()))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return response_for(APIError(500, "The server had an error while processing your request; the server log has "
                                          "the details.", type_=SERVER_ERROR))


def validation_error(errors: Any) -> APIError:
    """400 naming the first invalid field (dotted, without FastAPI's ``body``/``query`` prefix) and every problem."""
    items = list(errors or [])
    if not items:
        return APIError(400, "Invalid request.")
    params = [_param(item.get("loc", ())) for item in items]
    messages = [f"{param or 'request'}: {item.get('msg', 'invalid')}" for param, item in zip(params, items)]
    return APIError(400, "Invalid request: " + "; ".join(messages[:10]), param=params[0])


def _param(location: Any) -> str | None:
    parts = [str(part) for part in location if part not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or None
