"""The web dashboard on ``tuneforge serve``: pages at ``/``, their JSON under ``/ui``, behind the same API key.

A thin face: the pages (``pages``) are shells that a small vanilla script fills from ``/ui/v1``
(the OpenAI routes, mounted a second time so a session cookie can reach them) and ``/ui/api``
(``api``, ``stream``: the job manager's progress, the data doctor's report, config validation, a
job's events as server-sent events, results, comparisons, exports). Who may open what is
``auth.DashboardAuth``, consulted by the server's gate.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from tuneforge.server.dashboard.auth import DashboardAuth

__all__ = ["DashboardAuth", "install_dashboard"]


def install_dashboard(app: FastAPI, api_key: str, routers: list[APIRouter]) -> DashboardAuth:
    """Add the dashboard's routes to ``app`` (``routers``: the ``/v1`` routers, mounted again at ``/ui/v1``).

    Returns the ``DashboardAuth`` the gate must consult (``APIGate(dashboard=...)``).
    """
    from tuneforge.server.dashboard import api, pages, stream

    auth = DashboardAuth(api_key)
    app.state.dashboard_auth = auth
    app.state.dashboard_exports = api.ExportRuns()
    again = APIRouter(prefix="/ui/v1", include_in_schema=False)
    for router in routers:
        again.include_router(router)
    app.include_router(again, include_in_schema=False)
    app.include_router(api.router)
    app.include_router(stream.router)
    app.include_router(pages.router)
    return auth
