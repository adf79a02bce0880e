"""``GET /me`` behind the guard: RFC 6750 §3 answers for every bad credential
(401 with ``WWW-Authenticate: Bearer``, 403 ``insufficient_scope``), with a
generic RFC 9457 body that never repeats the token; never 404, 422 or 500."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.settings import Settings
from tests.http_checks import assert_problem, bearer_challenge
from tests.secrets_in_logs import register
from tests.session_flows import cookie_header, session_login

pytestmark = pytest.mark.anyio

USER_FIELDS = {"id", "email", "username", "is_active", "email_verified", "created_at"}
INVALID_TOKEN_TEXT = "The access token is invalid or has expired."


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(segment: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return decoded


@dataclass
class Ctx:
    """What a bad-credential builder may use."""

    token: str
    user_id: str
    bastion: Bastion
    clock: FrozenClock
    make_settings: Callable[..., Settings]


Builder = Callable[[Ctx], Awaitable[str]]
"""Returns the ``Authorization`` header value to send."""


async def garbage(ctx: Ctx) -> str:
    return "Bearer this-is-not-a-jwt"


async def three_dots(ctx: Ctx) -> str:
    return "Bearer ..."


async def expired(ctx: Ctx) -> str:
    ctx.clock.advance(900 + 30 + 1)  # ttl + leeway + 1
    return f"Bearer {ctx.token}"


async def not_yet_valid(ctx: Ctx) -> str:
    ctx.clock.advance(-(30 + 60))  # nbf/iat a minute past the leeway in the future
    return f"Bearer {ctx.token}"


async def other_issuer(ctx: Ctx) -> str:
    """Minted by a second Bastion over the same database and keys, other ``iss``."""
    other = Bastion(ctx.make_settings(issuer="http://other.example"), clock=ctx.clock)
    async with other.lifespan():
        issued = await other.tokens.issue(
            subject=ctx.user_id, scopes=["profile", "email"], client_id="bastion"
        )
    return f"Bearer {issued.access_token}"


async def other_audience(ctx: Ctx) -> str:
    """Same issuer and keys, but meant for another resource server."""
    other = Bastion(ctx.make_settings(audience="https://api.other.example"), clock=ctx.clock)
    async with other.lifespan():
        issued = await other.tokens.issue(
            subject=ctx.user_id, scopes=["profile", "email"], client_id="bastion"
        )
    return f"Bearer {issued.access_token}"


async def tampered_payload(ctx: Ctx) -> str:
    header, payload, signature = ctx.token.split(".")
    claims = b64url_json(payload)
    claims["sub"] = str(uuid.uuid4())
    forged = b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"Bearer {header}.{forged}.{signature}"


async def tampered_scope(ctx: Ctx) -> str:
    header, payload, signature = ctx.token.split(".")
    claims = b64url_json(payload)
    claims["scope"] = "profile email admin"
    forged = b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"Bearer {header}.{forged}.{signature}"


async def signature_stripped(ctx: Ctx) -> str:
    header, payload, _ = ctx.token.split(".")
    return f"Bearer {header}.{payload}."


async def signature_of_another_token(ctx: Ctx) -> str:
    other = await ctx.bastion.tokens.issue(
        subject=str(uuid.uuid4()), scopes=["profile"], client_id="bastion"
    )
    header, payload, _ = ctx.token.split(".")
    return f"Bearer {header}.{payload}.{other.access_token.split('.')[2]}"


async def alg_none(ctx: Ctx) -> str:
    header = b64url_json(ctx.token.split(".")[0])
    header["alg"] = "none"
    payload = ctx.token.split(".")[1]
    return f"Bearer {b64url(json.dumps(header).encode())}.{payload}."


async def foreign_key_same_kid(ctx: Ctx) -> str:
    """Signed by a key Bastion never made, claiming the real key's ``kid``."""
    header = b64url_json(ctx.token.split(".")[0])
    claims = b64url_json(ctx.token.split(".")[1])
    forged = pyjwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers=header)
    return f"Bearer {forged}"


async def unknown_user(ctx: Ctx) -> str:
    """Validly signed, for a user that does not exist (deleted, say)."""
    issued = await ctx.bastion.tokens.issue(
        subject=str(uuid.uuid4()), scopes=["profile"], client_id="bastion"
    )
    return f"Bearer {issued.access_token}"


async def subject_not_a_uuid(ctx: Ctx) -> str:
    issued = await ctx.bastion.tokens.issue(
        subject="admin", scopes=["profile"], client_id="bastion"
    )
    return f"Bearer {issued.access_token}"


async def huge(ctx: Ctx) -> str:
    return "Bearer " + ctx.token + "A" * (100 * 1024)


async def huge_garbage(ctx: Ctx) -> str:
    return "Bearer " + "A" * (100 * 1024)


async def two_tokens(ctx: Ctx) -> str:
    return f"Bearer {ctx.token} {ctx.token}"


async def token_with_trailing_junk(ctx: Ctx) -> str:
    return f"Bearer {ctx.token}x"


async def token_with_control_char(ctx: Ctx) -> str:
    return f"Bearer {ctx.token[:20]}\x7f{ctx.token[20:]}"


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(garbage, id="garbage"),
        pytest.param(three_dots, id="empty-segments"),
        pytest.param(expired, id="expired"),
        pytest.param(not_yet_valid, id="not-yet-valid"),
        pytest.param(other_issuer, id="other-issuer"),
        pytest.param(other_audience, id="other-audience"),
        pytest.param(tampered_payload, id="tampered-sub"),
        pytest.param(tampered_scope, id="tampered-scope"),
        pytest.param(signature_stripped, id="signature-stripped"),
        pytest.param(signature_of_another_token, id="signature-swapped"),
        pytest.param(alg_none, id="alg-none"),
        pytest.param(foreign_key_same_kid, id="foreign-key"),
        pytest.param(unknown_user, id="unknown-user"),
        pytest.param(subject_not_a_uuid, id="sub-not-uuid"),
        pytest.param(huge, id="100KiB-token"),
        pytest.param(huge_garbage, id="100KiB-garbage"),
        pytest.param(two_tokens, id="two-tokens"),
        pytest.param(token_with_trailing_junk, id="trailing-junk"),
        pytest.param(token_with_control_char, id="control-char"),
    ],
)
async def test_bad_token_is_401_invalid_token(
    client: httpx.AsyncClient,
    bastion: Bastion,
    clock: FrozenClock,
    make_settings: Callable[..., Settings],
    registered: dict[str, str],
    access_token: str,
    build: Builder,
) -> None:
    """RFC 6750 §3.1: a bad token is 401 ``invalid_token``, generic, never echoing it."""
    ctx = Ctx(access_token, registered["id"], bastion, clock, make_settings)
    authorization = await build(ctx)
    sent_token = authorization.partition(" ")[2]
    response = await client.get("/me", headers={"Authorization": authorization})
    problem = assert_problem(response, 401, access_token, sent_token[:64], sent_token[-64:])
    assert problem["detail"] == INVALID_TOKEN_TEXT
    assert set(problem) == {"type", "title", "status", "detail"}
    challenge = bearer_challenge(response)
    assert challenge["error"] == "invalid_token"
    assert challenge["error_description"] == INVALID_TOKEN_TEXT
    assert len(response.content) < 1024


async def test_every_bad_token_gets_the_same_answer(
    client: httpx.AsyncClient, access_token: str
) -> None:
    """The answer does not tell which check failed: two unrelated causes, one body."""
    header, payload, _ = access_token.split(".")
    stripped = await client.get("/me", headers={"Authorization": f"Bearer {header}.{payload}."})
    nonsense = await client.get("/me", headers={"Authorization": "Bearer nonsense"})
    assert stripped.content == nonsense.content
    assert stripped.headers["www-authenticate"] == nonsense.headers["www-authenticate"]


# ------------------------------------------------------------------ no credentials


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": ""}, id="empty-header"),
        pytest.param({"Authorization": "Bearer"}, id="bearer-without-token"),
        pytest.param({"Authorization": "Bearer "}, id="bearer-space-only"),
        pytest.param({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, id="basic-scheme"),
        pytest.param({"Authorization": "Token abc"}, id="other-scheme"),
        pytest.param({"Authorization": "BearerXYZ abc"}, id="scheme-prefix"),
        pytest.param({"Cookie": "access_token=abc"}, id="cookie"),
        pytest.param({"X-Access-Token": "abc"}, id="custom-header"),
    ],
)
async def test_no_bearer_credentials_is_401_challenge_without_error(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """RFC 6750 §3.1: no bearer credentials is 401 with a bare ``Bearer`` challenge."""
    response = await client.get("/me", headers=headers)
    assert_problem(response, 401, "YWxpY2U6c2VjcmV0")
    assert response.headers["www-authenticate"] == "Bearer"
    assert bearer_challenge(response) == {}


async def test_token_in_query_string_is_not_accepted(
    client: httpx.AsyncClient, access_token: str
) -> None:
    """RFC 6750 §2.3 URI query tokens leak into logs; Bastion does not read them."""
    response = await client.get("/me", params={"access_token": access_token})
    assert_problem(response, 401, access_token)
    assert response.headers["www-authenticate"] == "Bearer"


# ------------------------------------------------------------------ success and scope


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_valid_token_returns_the_user(
    client: httpx.AsyncClient, registered: dict[str, str], access_token: str, scheme: str
) -> None:
    """A valid ``profile`` token gets the user, whatever the scheme's letter case."""
    response = await client.get("/me", headers={"Authorization": f"{scheme} {access_token}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == USER_FIELDS
    assert body["id"] == registered["id"]
    assert body["email"] == registered["email"]
    assert "$argon2" not in response.text


async def test_disabled_users_token_is_401_not_404(
    client: httpx.AsyncClient,
    bastion: Bastion,
    clock: FrozenClock,
    registered: dict[str, str],
    access_token: str,
) -> None:
    """A disabled user's token is 401 ``invalid_token``, even once cached, never 404."""
    headers = {"Authorization": f"Bearer {access_token}"}
    assert (await client.get("/me", headers=headers)).status_code == 200
    await bastion.users.set_active(UUID(registered["id"]), False, now=clock.now())
    response = await client.get("/me", headers=headers)
    problem = assert_problem(response, 401, access_token)
    assert problem["detail"] == INVALID_TOKEN_TEXT
    assert bearer_challenge(response)["error"] == "invalid_token"


@pytest.mark.parametrize("scope", ["email"])
async def test_token_without_profile_scope_is_403_insufficient_scope(
    client: httpx.AsyncClient, registered: dict[str, str], scope: str
) -> None:
    """RFC 6750 §3.1: a token lacking ``profile`` is 403 ``insufficient_scope``."""
    issued = await client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "username": registered["email"],
            "password": registered["password"],
            "scope": scope,
        },
    )
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    response = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 403, token)
    challenge = bearer_challenge(response)
    assert challenge["error"] == "insufficient_scope"
    assert challenge["scope"] == "profile"
    assert registered["email"] not in response.text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405(
    client: httpx.AsyncClient, access_token: str, method: str
) -> None:
    """``/me`` is read-only: other methods are a 405 problem, even with a valid token."""
    response = await client.request(
        method, "/me", headers={"Authorization": f"Bearer {access_token}"}, json={"is_active": 1}
    )
    assert_problem(response, 405, access_token)
    assert response.headers["allow"] == "GET"


# ------------------------------------------------------------------ other credentials


async def test_me_answers_an_api_key_and_a_browser_session_too(
    client: httpx.AsyncClient, registered: dict[str, str], access_token: str
) -> None:
    """GET /me takes any credential of the user that holds `profile`: the same
    account comes back for a bearer token, an API key and a session cookie."""
    bearer = {"Authorization": f"Bearer {access_token}"}
    created = await client.post(
        "/me/api-keys", json={"name": "me", "permissions": ["profile"]}, headers=bearer
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    register(key)
    session = await session_login(client, registered["email"], registered["password"])

    by_token = await client.get("/me", headers=bearer)
    by_key = await client.get("/me", headers={"X-API-Key": key})
    by_cookie = await client.get("/me", headers=cookie_header(session.cookie))
    assert by_token.status_code == by_key.status_code == by_cookie.status_code == 200
    assert by_token.json() == by_key.json() == by_cookie.json()


async def test_me_refuses_an_api_key_without_profile(
    client: httpx.AsyncClient, access_token: str
) -> None:
    """An API key scoped to something else is a valid credential without the
    scope: 403 insufficient_scope, not the account."""
    created = await client.post(
        "/me/api-keys",
        json={"name": "email only", "permissions": ["email"]},
        headers={"Authorization": f"Bearer {access_token}"},
    )
    key = created.json()["key"]
    register(key)
    response = await client.get("/me", headers={"X-API-Key": key})
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert 'scope="profile"' in response.headers["www-authenticate"]
