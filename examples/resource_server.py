"""A separate service that trusts a running Bastion.

It never sees Bastion's database: it verifies access tokens against the
JWKS that Bastion publishes. Run Bastion (`make serve`), then:

    BASTION_URL=http://127.0.0.1:8000 uvicorn examples.resource_server:app --port 8001

and call it with a token from Bastion's `/oauth/token`.
"""

# No `from __future__ import annotations`: FastAPI resolves the route
# signatures at runtime, and they refer to the local `current_principal`.
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Security

from bastion.guard import BearerGuard, Principal, RemoteJWKS, TokenVerifier


def create_app(bastion_url: str, *, audience: str | None = None) -> FastAPI:
    """A resource server guarded by the Bastion at ``bastion_url``."""
    jwks = RemoteJWKS(f"{bastion_url}/.well-known/jwks.json")
    verifier = TokenVerifier(jwks, issuer=bastion_url, audience=audience or bastion_url)
    current_principal = BearerGuard(verifier)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with jwks:  # closes its HTTP client on shutdown
            yield

    app = FastAPI(title="Example resource server", lifespan=lifespan)

    @app.get("/public")
    async def public() -> dict[str, str]:
        return {"message": "anyone may read this"}

    @app.get("/profile")
    async def profile(
        principal: Annotated[Principal, Security(current_principal, scopes=["profile"])],
    ) -> dict[str, object]:
        return {"subject": principal.subject, "scopes": sorted(principal.scopes)}

    @app.get("/invoices")
    async def invoices(
        principal: Annotated[Principal, Security(current_principal, scopes=["invoices:read"])],
    ) -> list[dict[str, str]]:
        return [{"id": "inv-1", "owner": principal.subject}]

    return app


app = create_app(os.environ.get("BASTION_URL", "http://127.0.0.1:8000"))
