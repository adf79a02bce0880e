"""RFC 7662 token introspection at ``POST /oauth/introspect``: only callers
holding ``tokens:introspect``; an active token's claims; and exactly
``{"active": false}`` for anything not usable right now, whatever the reason."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.settings import Settings
from tests.conftest import ISSUER
from tests.http_checks import assert_oauth_error, assert_problem, bearer_challenge
from tests.token_flows import bearer, login, refresh, running

pytestmark = pytest.mark.anyio

INTROSPECT = "tokens:introspect"


@pytest.fixture
async def tokens(client: httpx.AsyncClient, registered: dict[str, str]) -> dict[str, Any]:
    """The token response of one password-grant login of ``registered``."""
    return await login(client, registered["email"], registered["password"])


async def caller_token(bastion: Bastion) -> str:
    """An access token holding ``tokens:introspect``, minted directly (the
    password grant cannot grant it until roles exist), valid from the clock's now."""
    issued = await bastion.tokens.issue(
        subject="introspecting-service", scopes=[INTROSPECT], client_id="bastion"
    )
    return issued.access_token


async def introspect(
    client: httpx.AsyncClient, caller: str | None, form: dict[str, str]
) -> httpx.Response:
    headers = bearer(caller) if caller is not None else {}
    return await client.post("/oauth/introspect", data=form, headers=headers)


def assert_no_store(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


# ------------------------------------------------------------------ who may ask


async def test_caller_without_a_token_is_401(
    client: httpx.AsyncClient, tokens: dict[str, Any]
) -> None:
    """No bearer: 401 with ``WWW-Authenticate: Bearer`` and no answer about the token."""
    response = await introspect(client, None, {"token": tokens["access_token"]})
    assert_problem(response, 401, tokens["access_token"])
    assert "error" not in bearer_challenge(response)
    assert "active" not in response.text


async def test_caller_without_the_scope_is_403(
    client: httpx.AsyncClient, tokens: dict[str, Any]
) -> None:
    """A normal user token is 403 ``insufficient_scope`` naming ``tokens:introspect``:
    the endpoint is no token-scanning oracle (RFC 7662 §4)."""
    response = await introspect(client, tokens["access_token"], {"token": tokens["refresh_token"]})
    assert_problem(response, 403, tokens["refresh_token"])
    challenge = bearer_challenge(response)
    assert challenge["error"] == "insufficient_scope"
    assert challenge["scope"] == INTROSPECT
    assert "active" not in response.text


async def test_caller_with_a_revoked_token_is_401(
    client: httpx.AsyncClient, bastion: Bastion, tokens: dict[str, Any]
) -> None:
    """The caller's own token is checked strictly: revoked, it is 401 ``invalid_token``."""
    caller = await caller_token(bastion)
    revoked = await client.post("/oauth/revoke", data={"token": caller})
    assert revoked.status_code == 200
    response = await introspect(client, caller, {"token": tokens["access_token"]})
    assert_problem(response, 401)
    assert bearer_challenge(response)["error"] == "invalid_token"


# ------------------------------------------------------------------ active tokens


async def test_active_access_token(
    client: httpx.AsyncClient,
    bastion: Bastion,
    clock: FrozenClock,
    tokens: dict[str, Any],
    registered: dict[str, str],
) -> None:
    """An active access token: ``active`` and its claims (RFC 7662 §2.2), never cached."""
    response = await introspect(
        client, await caller_token(bastion), {"token": tokens["access_token"]}
    )
    assert response.status_code == 200, response.text
    assert_no_store(response)
    body = response.json()
    assert set(body) == {
        "active",
        "token_type",
        "scope",
        "client_id",
        "sub",
        "iss",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
    }
    now = int(clock.timestamp())
    assert body["active"] is True
    assert body["token_type"] == "access_token"
    assert body["sub"] == registered["id"]
    assert body["scope"] == "email profile"
    assert body["client_id"] == "bastion"
    assert body["iss"] == ISSUER
    assert body["aud"] == [ISSUER]
    assert body["iat"] == now
    assert body["nbf"] == now
    assert body["exp"] == now + 900
    assert isinstance(body["jti"], str)
    assert len(body["jti"]) >= 22
    assert tokens["access_token"] not in response.text


async def test_active_refresh_token(
    client: httpx.AsyncClient,
    bastion: Bastion,
    clock: FrozenClock,
    tokens: dict[str, Any],
    registered: dict[str, str],
) -> None:
    """An unspent refresh token of a live family: active, ``token_type``
    ``refresh_token``, ``exp`` the family's absolute end."""
    login_at = int(clock.timestamp())
    clock.advance(60)
    response = await introspect(
        client, await caller_token(bastion), {"token": tokens["refresh_token"]}
    )
    assert response.status_code == 200, response.text
    assert_no_store(response)
    body = response.json()
    assert body == {
        "active": True,
        "token_type": "refresh_token",
        "scope": "email profile",
        "client_id": "bastion",
        "sub": registered["id"],
        "exp": login_at + 7 * 86_400,
        "iat": login_at,
    }
    assert tokens["refresh_token"] not in response.text


async def test_refresh_token_scope_is_its_familys(
    client: httpx.AsyncClient, bastion: Bastion, tokens: dict[str, Any]
) -> None:
    """A refresh token made by a narrowing refresh still reports the login
    scope: that is what it can obtain (RFC 6749 §6)."""
    narrowed = await refresh(client, tokens["refresh_token"], scope="profile")
    assert narrowed.json()["scope"] == "profile"
    response = await introspect(
        client, await caller_token(bastion), {"token": narrowed.json()["refresh_token"]}
    )
    assert response.json()["scope"] == "email profile"
    assert (
        await refresh(client, narrowed.json()["refresh_token"], scope="email")
    ).status_code == 200


@pytest.mark.parametrize(
    "hint",
    [
        pytest.param("access_token", id="wrong-hint"),
        pytest.param("bogus", id="unknown-hint"),
    ],
)
async def test_hint_is_ignored(
    client: httpx.AsyncClient, bastion: Bastion, tokens: dict[str, Any], hint: str
) -> None:
    """RFC 7662 §2.1: a wrong or unknown ``token_type_hint`` changes nothing."""
    response = await introspect(
        client,
        await caller_token(bastion),
        {"token": tokens["refresh_token"], "token_type_hint": hint},
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "refresh_token"


# ------------------------------------------------------------------ inactive tokens


@dataclass
class Ctx:
    client: httpx.AsyncClient
    bastion: Bastion
    clock: FrozenClock
    tokens: dict[str, Any]
    make_settings: Callable[..., Settings]


async def garbage(ctx: Ctx) -> str:
    return "this-is-not-a-token"


async def unknown_refresh(ctx: Ctx) -> str:
    return "brt_" + "A" * 43


async def tampered(ctx: Ctx) -> str:
    header, payload, signature = ctx.tokens["access_token"].split(".")
    return f"{header}.{payload}.{signature[::-1]}"


async def expired_access(ctx: Ctx) -> str:
    ctx.clock.advance(900 + 30 + 1)
    return str(ctx.tokens["access_token"])


async def expired_refresh(ctx: Ctx) -> str:
    ctx.clock.advance(3 * 86_400)  # the idle timeout
    return str(ctx.tokens["refresh_token"])


async def logged_out(ctx: Ctx) -> str:
    access = str(ctx.tokens["access_token"])
    response = await ctx.client.post("/auth/logout", headers=bearer(access))
    assert response.status_code == 204
    return access


async def spent_refresh(ctx: Ctx) -> str:
    assert (await refresh(ctx.client, ctx.tokens["refresh_token"])).status_code == 200
    return str(ctx.tokens["refresh_token"])


async def revoked_family(ctx: Ctx) -> str:
    """The unspent successor of a family revoked through RFC 7009."""
    successor = (await refresh(ctx.client, ctx.tokens["refresh_token"])).json()["refresh_token"]
    revoked = await ctx.client.post("/oauth/revoke", data={"token": ctx.tokens["refresh_token"]})
    assert revoked.status_code == 200
    return str(successor)


async def signed_out_everywhere(ctx: Ctx) -> str:
    access = str(ctx.tokens["access_token"])
    response = await ctx.client.post("/me/sessions/revoke-all", headers=bearer(access))
    assert response.status_code == 200
    return access


async def other_issuer(ctx: Ctx) -> str:
    """Signed with this server's keys (same database), but another ``iss``."""
    settings = ctx.make_settings(issuer="http://other.example")
    async with running(settings, ctx.clock) as other:
        issued = await other.tokens.issue(
            subject="someone", scopes=["profile"], client_id="bastion"
        )
    return issued.access_token


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(garbage, id="garbage"),
        pytest.param(unknown_refresh, id="unknown-refresh"),
        pytest.param(tampered, id="tampered-signature"),
        pytest.param(expired_access, id="expired-access"),
        pytest.param(expired_refresh, id="idle-expired-refresh"),
        pytest.param(logged_out, id="revoked-by-logout"),
        pytest.param(spent_refresh, id="spent-refresh"),
        pytest.param(revoked_family, id="revoked-family"),
        pytest.param(signed_out_everywhere, id="watermarked"),
        pytest.param(other_issuer, id="other-issuer"),
    ],
)
async def test_inactive_tokens_answer_only_active_false(
    client: httpx.AsyncClient,
    bastion: Bastion,
    clock: FrozenClock,
    tokens: dict[str, Any],
    make_settings: Callable[..., Settings],
    build: Callable[[Ctx], Awaitable[str]],
) -> None:
    """RFC 7662 §2.2: anything not usable now is exactly ``{"active": false}``,
    which does not say why."""
    token = await build(Ctx(client, bastion, clock, tokens, make_settings))
    response = await introspect(client, await caller_token(bastion), {"token": token})
    assert response.status_code == 200, response.text
    assert_no_store(response)
    assert response.json() == {"active": False}


@pytest.mark.parametrize(
    "form",
    [
        pytest.param({}, id="missing"),
        pytest.param({"token": ""}, id="empty"),
        pytest.param({"token": "x" * 5000}, id="5000-chars"),
        pytest.param({"token_type_hint": "access_token"}, id="hint-only"),
    ],
)
async def test_missing_token_is_invalid_request(
    client: httpx.AsyncClient, bastion: Bastion, form: dict[str, str]
) -> None:
    """RFC 7662 §2.1: ``token`` is required: 400 ``invalid_request``, never cached."""
    response = await introspect(client, await caller_token(bastion), form)
    assert_oauth_error(response, 400, "invalid_request", "x" * 100)
