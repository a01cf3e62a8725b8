"""The errors of the job API. Each names what was wrong and carries what a face needs to report it.

``http_status`` is the status the OpenAI-compatible server answers with, ``param`` the request
field at fault (OpenAI's ``error.param``) and ``code`` OpenAI's ``error.code``; the CLI prints the
message. All are ``TuneforgeError``s, so anything that already catches those keeps working.
"""

from __future__ import annotations

from tuneforge.core.errors import TuneforgeError


class JobsError(TuneforgeError):
    """Base of the job API's errors."""

    http_status = 400

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class NotFound(JobsError):
    """No file, job, checkpoint or model has that id (HTTP 404)."""

    http_status = 404


class InvalidRequest(JobsError):
    """A request value is invalid; ``param`` names it (HTTP 400)."""

    http_status = 400


class Conflict(JobsError):
    """The object exists but its state forbids the action, e.g. cancelling a finished job.

    HTTP 400, not 409: the ``openai`` SDK retries 409 responses, and a state error never heals by retrying.
    """

    http_status = 400


class PayloadTooLarge(InvalidRequest):
    """An upload is over the store's size limit (HTTP 413)."""

    http_status = 413
