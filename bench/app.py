"""The benchmark's app: the real Bastion server plus three bench-only routes.

Started by ``bench/run.py`` as::

    taskset -c 0 python -m uvicorn --factory bench.app:create_bench_app ...

with every setting in ``BASTION_*`` environment variables. The extra routes
live on the same app, behind the same middleware, so their differences are
what the guard costs and nothing else:

``GET /bench/open``
    No dependency at all: the floor of routing, middleware and JSON.
``GET /bench/header``
    One async dependency that reads the ``Authorization`` header and returns
    it: the floor FastAPI's dependency system sets for any auth scheme.
``GET /bench/protected``
    ``Security(bastion.current_principal)``: a real bearer-token check, no
    database; answers ``principal.subject``.

All three answer a one-member JSON object of about the same size.
"""

# No `from __future__ import annotations`: FastAPI resolves the route
# signatures at runtime.
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Security

from bastion.core import Bastion
from bastion.guard import Principal
from bastion.server.app import create_app
from bastion.settings import Settings

_SUBJECT_LENGTH = 36  # a UUID, what /bench/protected answers


async def read_authorization(request: Request) -> str:
    """The raw ``Authorization`` header: what any auth dependency must at least do."""
    value = request.headers.get("authorization")
    if value is None:
        raise HTTPException(401, "Not authenticated")
    return value


def add_bench_routes(app: FastAPI, bastion: Bastion) -> None:
    """Add ``/bench/open``, ``/bench/header`` and ``/bench/protected`` to ``app``."""

    @app.get("/bench/open", include_in_schema=False)
    async def bench_open() -> dict[str, str]:
        return {"subject": "0" * _SUBJECT_LENGTH}

    @app.get("/bench/header", include_in_schema=False)
    async def bench_header(
        authorization: Annotated[str, Depends(read_authorization)],
    ) -> dict[str, str]:
        return {"subject": authorization[-_SUBJECT_LENGTH:]}

    @app.get("/bench/protected", include_in_schema=False)
    async def bench_protected(
        principal: Annotated[Principal, Security(bastion.current_principal)],
    ) -> dict[str, str]:
        return {"subject": principal.subject}


def create_bench_app() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from the environment."""
    bastion = Bastion(Settings())
    app = create_app(bastion=bastion)
    add_bench_routes(app, bastion)
    return app
