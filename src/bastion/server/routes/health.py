"""``GET /health``: for load balancers; 503 when the database does not answer."""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures at runtime, and they refer to the local `bastion`.
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
        if await bastion.database_ok():
            return JSONResponse({"status": "ok", "database": "ok"})
        return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)

    return router
