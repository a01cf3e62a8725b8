"""The OpenAI-compatible HTTP server: ``create_app(settings)`` (FastAPI, under ``/v1``) and ``serve(settings)``.

The top layer beside the CLI: routes parse, call the library (``tuneforge.jobs`` for files, jobs
and fine-tuned models; ``tuneforge.inference`` through ``server.generation`` for completions) and
render OpenAI's objects. Imports of FastAPI happen here only, so the rest of tuneforge never needs it.
"""

from tuneforge.server.settings import ServerConfigError, ServerSettings, resolve_api_key

__all__ = ["ServerConfigError", "ServerSettings", "create_app", "resolve_api_key", "serve"]


def __getattr__(name: str):
    if name == "create_app":
        from tuneforge.server.app import create_app

        return create_app
    if name == "serve":
        from tuneforge.server.run import serve

        return serve
    raise AttributeError(name)
