"""``create_app(settings)``: the FastAPI application, every route under ``/v1``.

The app is thin: it parses requests, calls the library (``FineTuningManager`` for files, jobs and
fine-tuned models; a ``ModelHost`` per served base model for generation) and renders OpenAI's
objects. ``app.state.tuneforge`` is the ``ServerState`` holding those.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import APIRouter, FastAPI, Request

from tuneforge.core.errors import TuneforgeError
from tuneforge.server.errors import APIError, install_error_handlers, model_not_found
from tuneforge.server.generation import ModelHost
from tuneforge.server.ids import is_model_id
from tuneforge.server.middleware import APIGate
from tuneforge.server.settings import ServerConfigError, ServerSettings, resolve_api_key

log = logging.getLogger("tuneforge.server")
OWNED_BY = "tuneforge"


@dataclass
class ServedModel:
    """A base model the server was started with: its id in the API and the ``--model`` spec it loads."""

    id: str
    spec: str


def served_model(argument: str) -> ServedModel:
    """``NAME=SPEC`` names a model explicitly; a bare spec is named by itself, a path by its last part."""
    name, sep, spec = argument.partition("=")
    if sep and name and spec and is_model_id(name) and "/" not in name:
        return ServedModel(name, spec)
    path = Path(argument).expanduser()
    if path.exists():
        return ServedModel(path.stem if path.suffix.lower() == ".gguf" else path.name, str(path))
    if not is_model_id(argument):
        raise ServerConfigError(f"--model {argument!r}: give a model name, directory or .gguf file (or NAME=SPEC)")
    return ServedModel(argument, argument)


@dataclass
class ServerState:
    """What the routes share: the settings, the served base models and their hosts, the job manager."""

    settings: ServerSettings
    models: dict[str, ServedModel]
    hosts: dict[str, ModelHost]
    manager: Any = None  # tuneforge.jobs.FineTuningManager (None: generation only)
    started_at: int = field(default_factory=lambda: int(time.time()))

    def base_for(self, name: str) -> ServedModel | None:
        """The served base model ``name`` refers to (its id, or the spec it was started with)."""
        if name in self.models:
            return self.models[name]
        same = [m for m in self.models.values() if m.spec == name or _same_path(m.spec, name)]
        return same[0] if same else None

    def host_for(self, model_id: str) -> tuple[ModelHost, Path | None]:
        """(the host that serves ``model_id``, the adapter directory or None for a base model); 404 otherwise."""
        if not is_model_id(model_id):
            raise model_not_found(model_id)
        base = self.base_for(model_id)
        if base is not None:
            return self.hosts[base.id], None
        if self.manager is None:
            raise model_not_found(model_id)
        try:
            base_name, adapter_dir = self.manager.resolve_model(model_id)
        except TuneforgeError as error:
            if getattr(error, "http_status", 404) == 404:
                raise model_not_found(model_id) from None
            raise
        base = self.base_for(str(base_name))
        if base is None:
            raise APIError(404, f"The model `{model_id}` was fine-tuned from {base_name}, which this server does not serve; "
                                f"start it with --model {base_name}", param="model", code="model_not_found")
        return self.hosts[base.id], (Path(adapter_dir) if adapter_dir else None)

    def base_model_objects(self) -> list[dict[str, Any]]:
        return [{"id": m.id, "object": "model", "created": self.started_at, "owned_by": OWNED_BY}
                for m in self.models.values()]

    def close(self) -> None:
        for host in self.hosts.values():
            host.close()


def _same_path(a: str, b: str) -> bool:
    """Whether two specs are the same local path (a job records its base as an absolute path)."""
    try:
        pa, pb = Path(a).expanduser(), Path(b).expanduser()
        return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()
    except (OSError, ValueError):
        return False


def _loader(spec: str, device: str | None):
    def load() -> tuple[Any, Any]:
        from tuneforge.model.load import load_model, load_tokenizer
        from tuneforge.model.resolve import resolve_model

        directory = resolve_model(spec)
        # trust_remote_code stays False: nothing a request says can make the server run a model's own code.
        return load_model(directory, device), load_tokenizer(directory)

    return load


def build_state(settings: ServerSettings, manager: Any = None) -> ServerState:
    problems = settings.problems()
    if problems:
        raise ServerConfigError("cannot start the server:\n" + "\n".join(f"  - {p}" for p in problems))
    models: dict[str, ServedModel] = {}
    for argument in settings.models:
        model = served_model(argument)
        if model.id in models:
            raise ServerConfigError(f"two --model arguments are both named {model.id!r}; name one with NAME=SPEC")
        models[model.id] = model
    hosts = {m.id: ModelHost(m.id, _loader(m.spec, settings.device), settings.max_batch, settings.batch_window_ms,
                             settings.max_loaded_adapters, settings.batch_gap_ms) for m in models.values()}
    return ServerState(settings, models, hosts, manager)


def create_app(settings: ServerSettings | None = None, manager: Any = None, api_key: str | None = None) -> FastAPI:
    """The ASGI application: FastAPI under ``/v1`` behind the gate (request ids, bearer key, size limit),
    and the web dashboard at ``/`` (``settings.dashboard``; ``server/dashboard/``).

    ``manager`` is the ``FineTuningManager`` behind files, jobs and fine-tuned models (None: only
    the base models are served and those routes answer 404). ``api_key`` defaults to
    ``resolve_api_key(settings)``.
    """
    settings = settings or ServerSettings()
    state = build_state(settings, manager)
    key = api_key or resolve_api_key(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

    app = FastAPI(title="tuneforge", version=_version(), lifespan=lifespan,
                  description="OpenAI-compatible fine-tuning and inference, on your machine. Every route needs "
                              "'Authorization: Bearer <key>'.",
                  docs_url="/docs", openapi_url="/openapi.json", redoc_url=None)
    app.state.tuneforge = state
    install_error_handlers(app)
    from tuneforge.server.completions import router as completions_router
    from tuneforge.server.models_routes import router as models_router

    routers = [models_router, completions_router]
    if manager is not None:
        from tuneforge.server.jobs_routes import router as jobs_router

        routers.append(jobs_router)
    v1 = APIRouter(prefix="/v1")
    for router in routers:
        v1.include_router(router)
    app.include_router(v1)
    dashboard = None
    if settings.dashboard:
        from tuneforge.server.dashboard import install_dashboard

        dashboard = install_dashboard(app, key, routers)  # pages at /, the same routes again at /ui/v1 for them
    app.add_middleware(APIGate, api_key=key, max_body_bytes=settings.max_upload_bytes, dashboard=dashboard)
    return app


def _version() -> str:
    from tuneforge.core.version import __version__

    return __version__


def state_of(request: Request) -> ServerState:
    return request.app.state.tuneforge
