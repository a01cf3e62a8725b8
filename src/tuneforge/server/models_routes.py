"""``/v1/models``: the served base models, then every fine-tuned model and checkpoint the job manager knows.

Model ids are matched by ``{model_id:path}``: the SDK percent-encodes a ``/`` in an id
(``org/name``) and the server receives it decoded. An id that is not well-formed is a 404 at once.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from tuneforge.server.errors import APIError, model_not_found
from tuneforge.server.ids import is_model_id
from tuneforge.server.wire import wire, wire_list

router = APIRouter()


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = request.app.state.tuneforge
    data = state.base_model_objects()
    if state.manager is not None:
        data += [m for m in wire_list(state.manager.list_models()) if not _is_base_entry(m)]
    return {"object": "list", "data": data}


def _is_base_entry(model: dict[str, Any]) -> bool:
    """The manager lists every base a job used (by its spec, maybe a path); the server lists the bases it serves."""
    return model.get("owned_by") == "system"


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    state = request.app.state.tuneforge
    if not is_model_id(model_id):
        raise model_not_found(model_id)
    for model in state.base_model_objects():
        if model["id"] == model_id:
            return model
    if state.manager is None:
        raise model_not_found(model_id)
    found = wire(state.manager.get_model(model_id))
    if _is_base_entry(found):
        raise model_not_found(model_id)
    return found


@router.delete("/models/{model_id:path}")
async def delete_model(model_id: str, request: Request) -> dict[str, Any]:
    state = request.app.state.tuneforge
    if not is_model_id(model_id):
        raise model_not_found(model_id)
    if state.base_for(model_id) is not None:
        raise APIError(400, f"`{model_id}` is a base model this server was started with; only fine-tuned models "
                            "can be deleted", param="model")
    if state.manager is None:
        raise model_not_found(model_id)
    return wire(state.manager.delete_model(model_id))
