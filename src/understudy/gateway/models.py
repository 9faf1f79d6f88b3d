"""``GET /v1/models``: the upstream's model list, passed through."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from understudy.gateway.state import upstream_of
from understudy.gateway.upstream import returned_headers, upstream_failure

router = APIRouter()


@router.get("/v1/models")
@router.get("/v1/models/{model_id:path}")
async def models(request: Request) -> Response:
    """Forward the model listing (or one model) to the upstream and return its answer."""
    upstream = upstream_of(request)
    path = request.url.path.removeprefix("/v1")
    response = await upstream.send(
        "GET", path, upstream.headers(request.headers), None, stream=False
    )
    if response.status_code >= 500:
        raise upstream_failure(response, response.content)
    return Response(
        content=response.content,
        status_code=response.status_code,
        headers=returned_headers(response),
        media_type=response.headers.get("content-type", "application/json"),
    )
