"""``GET /ui/api/jobs/{id}/stream``: a job's ``events.jsonl`` as server-sent events, while it grows.

Each new event the job page draws (``views.live_event``: a curve point, an issue, a checkpoint) is
one SSE message whose ``id`` is the event's ``seq``, so a reconnecting ``EventSource`` (which
sends ``Last-Event-ID``) continues where it stopped. A ``status`` message follows each batch and
every few seconds (the job's status and progress from ``monitor_progress``); the stream ends with
an ``end`` message once the job has finished and every event was sent.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from tuneforge.server.dashboard import views

router = APIRouter(prefix="/ui/api", include_in_schema=False)
POLL_SECONDS = 0.5
STATUS_EVERY = 6  # polls between status messages when nothing new happened


@router.get("/jobs/{job_id}/stream")
async def job_stream(job_id: str, request: Request, after: int = Query(-1, ge=-1)) -> StreamingResponse:
    manager = request.app.state.tuneforge.manager
    job = await asyncio.to_thread(manager.get_job, job_id)  # NotFound before the stream starts: a plain 404
    last = request.headers.get("last-event-id", "")
    after = int(last) if last.isdigit() else after
    return StreamingResponse(_messages(request, manager, job.id, job.run_dir, after), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


async def _messages(request: Request, manager: Any, job_id: str, run_dir: Any, after: int) -> AsyncIterator[bytes]:
    quiet = STATUS_EVERY
    while not await request.is_disconnected():
        events = await asyncio.to_thread(views.events_of, run_dir, after)
        for event in events:
            after = max(after, int(event.get("seq", after)))
            shown = views.live_event(event)
            if shown is not None:
                yield _sse("event", shown, event.get("seq"))
        job = await asyncio.to_thread(manager.get_job, job_id)  # one row: cheap, unlike re-reading events.jsonl
        if events or quiet >= STATUS_EVERY or job.status.is_terminal:
            status = (await asyncio.to_thread(manager.monitor_progress, job_id)).to_dict()
            yield _sse("status", status)
            quiet = 0
            if job.status.is_terminal and not events:
                yield _sse("end", {"status": status["status"]})
                return
        quiet += 1
        await asyncio.sleep(POLL_SECONDS)


def _sse(kind: str, data: Any, ident: Any = None) -> bytes:
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()
