"""Ending tokens: ``POST /auth/logout``, RFC 7009 ``POST /oauth/revoke``, and
strict mode across two instances sharing one revocation store (SQL or Redis)
with its one-second staleness bound."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from fastapi import FastAPI, Security

from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.guard import BearerGuard, TokenVerifier
from bastion.settings import Settings
from bastion.stores.redis import RedisRevocationStore
from bastion.stores.sql import SqlRevocationStore
from tests.backends import delete_keys, redis_connection, redis_url
from tests.conftest import ISSUER
from tests.http_checks import assert_oauth_error, assert_problem, bearer_challenge
from tests.token_flows import (
    BOB,
    BOB_PASSWORD,
    audit_events,
    bearer,
    http_client,
    login,
    me_status,
    refresh,
    register,
    running,
)

pytestmark = pytest.mark.anyio

ACCESS_TTL = 900
LEEWAY = 30


@pytest.fixture
async def tokens(client: httpx.AsyncClient, registered: dict[str, str]) -> dict[str, Any]:
    """The token response of one password-grant login of ``registered``."""
    return await login(client, registered["email"], registered["password"])


async def logout(
    client: httpx.AsyncClient, access_token: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    return await client.post("/auth/logout", headers=bearer(access_token), json=body)


async def revoke(client: httpx.AsyncClient, **form: str) -> httpx.Response:
    return await client.post("/oauth/revoke", data=form)


def assert_revoke_ok(response: httpx.Response) -> None:
    """RFC 7009 §2.2: 200, nothing to read, never cached."""
    assert response.status_code == 200, response.text
    assert response.content == b""
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


def assert_invalid_token(response: httpx.Response) -> None:
    """RFC 6750 §3.1: 401 ``invalid_token`` with a problem body."""
    assert_problem(response, 401)
    assert bearer_challenge(response)["error"] == "invalid_token"


# ------------------------------------------------------------------ logout


async def test_logout_ends_the_access_token(
    client: httpx.AsyncClient, tokens: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Logout answers 204 and the same access token is refused at once (strict mode)."""
    access = tokens["access_token"]
    assert await me_status(client, access) == 200  # cached as "not revoked" first
    with caplog.at_level("INFO", logger="bastion.audit"):
        response = await logout(client, access)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_invalid_token(await client.get("/me", headers=bearer(access)))
    assert_invalid_token(await logout(client, access))  # and cannot log out twice
    assert len(audit_events(caplog, "logout")) == 1
    assert access not in caplog.text
    # The refresh token was not sent, so the session lives on.
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200


async def test_logout_with_the_refresh_token_ends_the_session(
    client: httpx.AsyncClient, bastion: Bastion, tokens: dict[str, Any], registered: dict[str, str]
) -> None:
    """With ``refresh_token`` in the body the whole family is revoked too; other
    sessions of the user survive."""
    other = await login(client, registered["email"], registered["password"])
    response = await logout(
        client, tokens["access_token"], {"refresh_token": tokens["refresh_token"]}
    )
    assert response.status_code == 204, response.text
    assert_oauth_error(await refresh(client, tokens["refresh_token"]), 400, "invalid_grant")
    assert await me_status(client, other["access_token"]) == 200
    assert (await refresh(client, other["refresh_token"])).status_code == 200


async def test_logout_with_a_spent_token_of_the_family_ends_the_session(
    client: httpx.AsyncClient, tokens: dict[str, Any]
) -> None:
    """Any token of the caller's family, even an already spent one, names the session to end."""
    rotated = (await refresh(client, tokens["refresh_token"])).json()
    response = await logout(
        client, rotated["access_token"], {"refresh_token": tokens["refresh_token"]}
    )
    assert response.status_code == 204, response.text
    assert_oauth_error(await refresh(client, rotated["refresh_token"]), 400, "invalid_grant")


async def test_logout_does_not_revoke_someone_elses_refresh_token(
    client: httpx.AsyncClient, tokens: dict[str, Any]
) -> None:
    """Another user's refresh token in the body is ignored, not revoked."""
    await register(client, BOB, BOB_PASSWORD)
    bob = await login(client, BOB, BOB_PASSWORD)
    response = await logout(client, tokens["access_token"], {"refresh_token": bob["refresh_token"]})
    assert response.status_code == 204, response.text
    assert await me_status(client, bob["access_token"]) == 200
    assert (await refresh(client, bob["refresh_token"])).status_code == 200


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        pytest.param({}, None, id="no-header"),
        pytest.param({"Authorization": "Bearer"}, None, id="scheme-only"),
        pytest.param({"Authorization": "Basic YTpi"}, None, id="basic"),
        pytest.param({"Authorization": "Bearer not-a-jwt"}, "invalid_token", id="garbage"),
    ],
)
async def test_logout_without_a_valid_token_is_401(
    client: httpx.AsyncClient, tokens: dict[str, Any], headers: dict[str, str], error: str | None
) -> None:
    """Logout needs the bearer it ends: 401 with ``WWW-Authenticate: Bearer``."""
    response = await client.post(
        "/auth/logout", headers=headers, json={"refresh_token": tokens["refresh_token"]}
    )
    assert_problem(response, 401, tokens["refresh_token"])
    assert bearer_challenge(response).get("error") == error
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200


LONG_REFRESH = "brt_" + "A" * 296


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(
            b'{"refresh_token": null, "everywhere": true}', "application/json", id="unknown-field"
        ),
        pytest.param(
            ('{"refresh_token": "' + LONG_REFRESH + '"}').encode(),
            "application/json",
            id="300-chars",
        ),
        pytest.param(b'{"refresh_token": 42}', "application/json", id="number"),
        pytest.param(b"not json", "application/json", id="not-json"),
        pytest.param(b"[]", "application/json", id="array"),
        pytest.param(b"refresh_token=brt_x", "application/x-www-form-urlencoded", id="form"),
    ],
)
async def test_logout_with_a_bad_body_is_422_and_ends_nothing(
    client: httpx.AsyncClient, tokens: dict[str, Any], content: bytes, content_type: str
) -> None:
    """A malformed body is a 422 problem that does not echo it, and nothing is revoked."""
    response = await client.post(
        "/auth/logout",
        content=content,
        headers={**bearer(tokens["access_token"]), "content-type": content_type},
    )
    body = assert_problem(response, 422, LONG_REFRESH)
    assert body["errors"]
    assert await me_status(client, tokens["access_token"]) == 200


# ------------------------------------------------------------------ RFC 7009


@pytest.mark.parametrize(
    "hint",
    [
        pytest.param(None, id="no-hint"),
        pytest.param("refresh_token", id="right-hint"),
        pytest.param("access_token", id="wrong-hint"),
        pytest.param("id_token", id="unknown-hint"),
        pytest.param("x" * 300, id="silly-hint"),
    ],
)
async def test_revoke_a_refresh_token_ends_its_family(
    client: httpx.AsyncClient, tokens: dict[str, Any], hint: str | None
) -> None:
    """RFC 7009 §2.1: a refresh token revokes its whole family, whatever the hint."""
    rotated = (await refresh(client, tokens["refresh_token"])).json()
    form = {"token": tokens["refresh_token"], **({"token_type_hint": hint} if hint else {})}
    assert_revoke_ok(await revoke(client, **form))
    assert_oauth_error(await refresh(client, rotated["refresh_token"]), 400, "invalid_grant")


@pytest.mark.parametrize(
    "hint",
    [
        pytest.param(None, id="no-hint"),
        pytest.param("access_token", id="right-hint"),
        pytest.param("refresh_token", id="wrong-hint"),
        pytest.param("id_token", id="unknown-hint"),
    ],
)
async def test_revoke_an_access_token(
    client: httpx.AsyncClient, tokens: dict[str, Any], hint: str | None
) -> None:
    """RFC 7009 §2.1: a revoked access token is refused afterwards, whatever the
    hint; its session (refresh family) is left alone."""
    access = tokens["access_token"]
    assert await me_status(client, access) == 200
    form = {"token": access, "client_id": "bastion", **({"token_type_hint": hint} if hint else {})}
    assert_revoke_ok(await revoke(client, **form))
    assert_invalid_token(await client.get("/me", headers=bearer(access)))
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200


async def already_revoked_access(
    client: httpx.AsyncClient, tokens: dict[str, Any], clock: FrozenClock
) -> str:
    assert (await logout(client, tokens["access_token"])).status_code == 204
    return str(tokens["access_token"])


async def already_revoked_refresh(
    client: httpx.AsyncClient, tokens: dict[str, Any], clock: FrozenClock
) -> str:
    assert_revoke_ok(await revoke(client, token=tokens["refresh_token"]))
    return str(tokens["refresh_token"])


async def expired_access(
    client: httpx.AsyncClient, tokens: dict[str, Any], clock: FrozenClock
) -> str:
    clock.advance(ACCESS_TTL + LEEWAY + 1)
    return str(tokens["access_token"])


async def expired_refresh(
    client: httpx.AsyncClient, tokens: dict[str, Any], clock: FrozenClock
) -> str:
    clock.advance(7 * 86_400)
    return str(tokens["refresh_token"])


def fixed(value: str) -> Callable[..., Any]:
    async def build(client: httpx.AsyncClient, tokens: dict[str, Any], clock: FrozenClock) -> str:
        return value

    return build


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(fixed("brt_" + "A" * 43), id="unknown-refresh"),
        pytest.param(fixed("garbage"), id="garbage"),
        pytest.param(fixed("a.b.c"), id="three-dots"),
        pytest.param(fixed("é" * 100), id="non-ascii"),
        pytest.param(already_revoked_access, id="already-revoked-access"),
        pytest.param(already_revoked_refresh, id="already-revoked-refresh"),
        pytest.param(expired_access, id="expired-access"),
        pytest.param(expired_refresh, id="expired-refresh"),
    ],
)
async def test_revoke_answers_200_when_there_is_nothing_to_revoke(
    client: httpx.AsyncClient,
    tokens: dict[str, Any],
    clock: FrozenClock,
    build: Callable[..., Any],
) -> None:
    """RFC 7009 §2.2: unknown, invalid, already revoked and expired tokens all
    answer 200, so the endpoint tells nobody whether a token existed."""
    token = await build(client, tokens, clock)
    assert_revoke_ok(await revoke(client, token=token))


@pytest.mark.parametrize(
    "form",
    [
        pytest.param({}, id="missing"),
        pytest.param({"token": ""}, id="empty"),
        pytest.param({"token": "x" * 5000}, id="5000-chars"),
        pytest.param({"token_type_hint": "access_token"}, id="hint-only"),
    ],
)
async def test_revoke_without_a_token_is_invalid_request(
    client: httpx.AsyncClient, form: dict[str, str]
) -> None:
    """RFC 7009 §2.1: ``token`` is required: 400 ``invalid_request``."""
    assert_oauth_error(await revoke(client, **form), 400, "invalid_request", "x" * 100)


@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
async def test_revoke_with_an_unknown_client_is_invalid_client(
    client: httpx.AsyncClient, tokens: dict[str, Any], kind: str
) -> None:
    """An unknown ``client_id`` is 401 ``invalid_client`` and revokes nothing."""
    response = await revoke(client, token=tokens[kind], client_id="evil-app")
    assert_oauth_error(response, 401, "invalid_client", tokens[kind])
    assert response.headers["www-authenticate"]
    assert await me_status(client, tokens["access_token"]) == 200
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200


# ------------------------------------------------------------------ strict mode, two instances

STORES = ["sql", pytest.param("redis", marks=pytest.mark.redis)]


@dataclass
class Pair:
    """Clients of two Bastions sharing one database, one clock and one
    revocation store, plus what the test made there."""

    a: httpx.AsyncClient
    b: httpx.AsyncClient
    instance_a: Bastion
    jtis: list[str] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)

    async def login(self, email: str) -> str:
        """Register ``email`` on A and log in there; returns the access token,
        remembering its ``jti`` and ``sub`` for the clean-up."""
        self.subjects.append(await register(self.a, email))
        access: str = (await login(self.a, email))["access_token"]
        self.jtis.append(pyjwt.decode(access, options={"verify_signature": False})["jti"])
        return access


@pytest.fixture(params=STORES)
async def pair(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], clock: FrozenClock
) -> AsyncIterator[Pair]:
    """Two Bastions over one SQLite database and one clock; with ``redis`` both
    keep their revocations in the test Redis."""
    async with AsyncExitStack() as stack:
        redis = None
        overrides: dict[str, object] = {}
        if request.param == "redis":
            redis = await stack.enter_async_context(redis_connection())
            overrides["redis_url"] = redis_url()
        settings = make_settings(**overrides)
        instance_a = await stack.enter_async_context(running(settings, clock))
        instance_b = await stack.enter_async_context(running(settings, clock))
        stores = (instance_a.revocation_store, instance_b.revocation_store)
        expected = RedisRevocationStore if redis is not None else SqlRevocationStore
        assert all(isinstance(store, expected) for store in stores)
        made = Pair(
            await stack.enter_async_context(http_client(instance_a)),
            await stack.enter_async_context(http_client(instance_b)),
            instance_a,
        )
        yield made
        if redis is not None:
            # Bastion's Redis keys carry no per-test prefix: delete exactly the
            # keys this test's user could have made, its jtis and its watermark.
            store = instance_a.revocation_store
            assert isinstance(store, RedisRevocationStore)
            await delete_keys(
                redis,
                *(store.jti_key(jti) for jti in made.jtis),
                *(store.watermark_key(subject) for subject in made.subjects),
            )


async def test_logout_reaches_another_instance_within_the_staleness_bound(
    pair: Pair, clock: FrozenClock
) -> None:
    """A logout on instance A is seen by B once B's remembered "not revoked"
    answer lapses: B may still accept the token for up to
    ``revocation_cache_ttl`` (1 s), never longer."""
    access = await pair.login("alice@example.com")
    assert pair.instance_a.settings.revocation_cache_ttl == 1.0

    assert await me_status(pair.b, access) == 200  # B remembers "not revoked" for 1 s
    assert (await logout(pair.a, access)).status_code == 204
    assert await me_status(pair.a, access) == 401  # A forgot its own answer at once
    assert await me_status(pair.b, access) == 200  # B: stale, within the bound
    clock.advance(0.999)
    assert await me_status(pair.b, access) == 200
    clock.advance(0.002)  # past 1 s since B asked the store
    assert_invalid_token(await pair.b.get("/me", headers=bearer(access)))


async def test_sign_out_everywhere_reaches_another_instance_within_the_bound(
    pair: Pair, clock: FrozenClock
) -> None:
    """The watermark of "sign out everywhere" on A reaches B within 1 s too."""
    access = await pair.login("alice@example.com")
    assert await me_status(pair.b, access) == 200
    response = await pair.a.post("/me/sessions/revoke-all", headers=bearer(access))
    assert response.status_code == 200, response.text
    assert await me_status(pair.a, access) == 401
    assert await me_status(pair.b, access) == 200
    clock.advance(1.001)
    assert_invalid_token(await pair.b.get("/me", headers=bearer(access)))


async def test_stateless_guard_still_accepts_a_logged_out_token(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock, tokens: dict[str, Any]
) -> None:
    """The trade-off of stateless verification: a resource server whose
    ``TokenVerifier`` has no ``revocations`` checks only signature and claims,
    so a logged-out token keeps working there until its ``exp`` (at most
    ``access_token_ttl``); only strict mode (the server's own routes, or a
    verifier given a ``RevocationChecker``) refuses it at once."""
    access = tokens["access_token"]
    stateless = BearerGuard(
        TokenVerifier(bastion.keys, issuer=ISSUER, audience=ISSUER, clock=clock)
    )
    app = FastAPI()

    @app.get("/resource", dependencies=[Security(stateless)])
    async def resource() -> dict[str, bool]:
        return {"ok": True}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as resource_server:
        assert (await logout(client, access)).status_code == 204
        assert await me_status(client, access) == 401  # strict: refused
        response = await resource_server.get("/resource", headers=bearer(access))
        assert response.status_code == 200, response.text  # stateless: still accepted
        clock.advance(ACCESS_TTL + LEEWAY + 1)
        expired = await resource_server.get("/resource", headers=bearer(access))
        assert expired.status_code == 401  # until it expires
