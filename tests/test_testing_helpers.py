"""bastion.testing: tokens minted for users' tests go through the real guard."""

# No `from __future__ import annotations`: the routes refer to a local guard.

from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, Security

from bastion.clock import FrozenClock
from bastion.guard import BearerGuard, Principal
from bastion.testing import TokenFactory

pytestmark = pytest.mark.anyio


def _app(factory: TokenFactory) -> FastAPI:
    guard = BearerGuard(factory.verifier())
    app = FastAPI()

    @app.get("/invoices")
    async def invoices(
        principal: Annotated[Principal, Security(guard, scopes=["invoices:read"])],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    return app


@pytest.fixture
def factory() -> TokenFactory:
    return TokenFactory(issuer="https://auth.example.test", clock=FrozenClock())


async def _get(factory: TokenFactory, token: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app(factory))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        return await http.get("/invoices", headers={"Authorization": f"Bearer {token}"})


async def test_minted_token_with_the_scope_is_accepted(factory: TokenFactory) -> None:
    """A factory token carrying the route's scope passes the real guard."""
    response = await _get(factory, factory.mint("user-7", scopes=["invoices:read"]))
    assert response.status_code == 200
    assert response.json() == {"subject": "user-7"}


async def test_minted_token_without_the_scope_is_forbidden(factory: TokenFactory) -> None:
    """Scope checks are not bypassed: a token lacking the scope gets 403."""
    response = await _get(factory, factory.mint("user-7", scopes=["profile"]))
    assert response.status_code == 403


@pytest.mark.parametrize(
    "claims",
    [{"aud": "https://other.example"}, {"iss": "https://evil.example"}, {"exp": 1}],
    ids=["wrong-audience", "wrong-issuer", "expired"],
)
async def test_factory_can_mint_bad_tokens_on_purpose(
    factory: TokenFactory, claims: dict[str, object]
) -> None:
    """Overridden claims make tokens the guard must refuse with 401."""
    response = await _get(factory, factory.mint(scopes=["invoices:read"], claims=claims))
    assert response.status_code == 401


async def test_another_factorys_token_is_refused(factory: TokenFactory) -> None:
    """Each factory trusts only its own key."""
    other = TokenFactory(issuer=factory.issuer, clock=factory.clock)
    response = await _get(factory, other.mint(scopes=["invoices:read"]))
    assert response.status_code == 401
