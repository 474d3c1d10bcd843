"""``GET /metrics``: the system's Prometheus metrics (text exposition format).

Open by default, as scrape targets usually are on an internal network; set
``FNHOST_METRICS_TOKEN`` to require ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import Response

from fnhost.api.deps import SystemDep
from fnhost.errors import Unauthenticated
from fnhost.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format."}},
)
def metrics(system: SystemDep, authorization: Annotated[str | None, Header()] = None) -> Response:
    token = system.settings.metrics_token
    if token:
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthenticated("GET /metrics needs the metrics token (FNHOST_METRICS_TOKEN) as a bearer token.")
    return Response(system.metrics.render(), media_type=CONTENT_TYPE)
