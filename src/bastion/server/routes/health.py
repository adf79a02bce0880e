"""``GET /health``: for load balancers and orchestrators.

It reports each dependency the server was configured with: the database
always, Redis when ``BASTION_REDIS_URL`` is set. Any of them down makes the
answer 503, so a load balancer takes this instance out of rotation while the
requests that need the dependency would fail closed anyway. Both are probed
at once, each bounded by its client's timeout; the answer names nothing
but the dependency (no URL, no error text)."""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures at runtime, and they refer to the local `bastion`.
import asyncio
from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from bastion.server.schemas import HealthOut

if TYPE_CHECKING:
    from bastion.core import Bastion


def build(bastion: "Bastion") -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
    async def health() -> JSONResponse:
        database_ok, redis_ok = await asyncio.gather(bastion.database_ok(), bastion.redis_ok())
        body = HealthOut(
            status="ok" if database_ok and redis_ok else "unavailable",
            database="ok" if database_ok else "down",
            redis=("ok" if redis_ok else "down") if bastion.redis is not None else "not_configured",
        )
        return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)

    return router
