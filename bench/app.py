"""The benchmark's app: the real Bastion server plus four bench-only routes.

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
    A *stateless* guard: a second :class:`BearerGuard` over a
    :class:`TokenVerifier` with the server's keys, issuer, audience, leeway and
    clock but no ``revocations``. The token alone decides; no database.
``GET /bench/strict``
    ``Security(bastion.current_principal)``: the server's own *strict* guard,
    which also asks the revocation store (SQL, or Redis when
    ``BASTION_REDIS_URL`` is set) through the checker's 1 s cache.

``/bench/protected`` and ``/bench/strict`` share one handler body, and all four
answer a one-member JSON object of about the same size.
"""

# No `from __future__ import annotations`: FastAPI resolves the route
# signatures at runtime.
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Security

from bastion.core import Bastion
from bastion.guard import BearerGuard, Principal, TokenVerifier
from bastion.server.app import create_app
from bastion.settings import Settings

_SUBJECT_LENGTH = 36  # a UUID, what the guarded routes answer


async def read_authorization(request: Request) -> str:
    """The raw ``Authorization`` header: what any auth dependency must at least do."""
    value = request.headers.get("authorization")
    if value is None:
        raise HTTPException(401, "Not authenticated")
    return value


def stateless_guard(bastion: Bastion) -> BearerGuard:
    """The server's verifier without the revocation check: what a resource
    server that trusts the token alone runs (same keys, claims and cache)."""
    settings = bastion.settings
    verifier = TokenVerifier(
        bastion.keys,
        issuer=settings.issuer,
        audience=settings.audience,
        leeway=settings.token_leeway,
        max_token_bytes=settings.max_token_bytes,
        clock=bastion.clock,
        cache_size=settings.verify_cache_size,
    )
    assert verifier.revocations is None
    return BearerGuard(verifier, scheme_name="bench-stateless")


def add_bench_routes(app: FastAPI, bastion: Bastion) -> None:
    """Add ``/bench/open``, ``/bench/header``, ``/bench/protected`` (stateless)
    and ``/bench/strict`` to ``app``."""
    stateless = stateless_guard(bastion)
    strict = bastion.current_principal
    assert strict.verifier.revocations is not None, "the server's own guard is strict"

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
        principal: Annotated[Principal, Security(stateless)],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.get("/bench/strict", include_in_schema=False)
    async def bench_strict(
        principal: Annotated[Principal, Security(strict)],
    ) -> dict[str, str]:
        return {"subject": principal.subject}


def create_bench_app() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from the environment."""
    bastion = Bastion(Settings())
    app = create_app(bastion=bastion)
    add_bench_routes(app, bastion)
    return app
