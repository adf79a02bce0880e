"""BearerGuard and TokenVerifier in a tiny FastAPI app: RFC 6750 answers
(status, ``WWW-Authenticate``, body), scopes through ``Security()``, the
OpenAPI document, and the verification cache."""

# No `from __future__ import annotations`: FastAPI must evaluate the route
# annotations, which refer to the local `guard`.
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import FastAPI, Security

import bastion.guard
import bastion.jwt
from bastion.clock import FrozenClock
from bastion.errors import InsufficientScope, InvalidToken
from bastion.guard import (
    BearerGuard,
    Principal,
    RemoteJWKS,
    TokenVerifier,
    invalid_token_error,
    www_authenticate,
)
from bastion.jwt import encode_access_token
from bastion.keys import KeySource, KeySourceUnavailable, SigningKey, VerificationKey

pytestmark = pytest.mark.anyio

ISS = "https://auth.example"
AUD = "https://api.example"
KEY = SigningKey("k1", "EdDSA", ed25519.Ed25519PrivateKey.generate())
INVALID = (
    'Bearer error="invalid_token", error_description="The access token is invalid or has expired."'
)


class CountingKeySource:
    """Publishes KEY and counts lookups (one per full verification)."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None

    async def get(self, kid: str) -> VerificationKey | None:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return KEY.verification_key() if kid == KEY.kid else None


@pytest.fixture
def source() -> CountingKeySource:
    return CountingKeySource()


def token(clock: FrozenClock, scope: str = "notes:read", **claims: Any) -> str:
    now = int(clock.timestamp())
    body: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "user-1",
        "client_id": "web",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": "jti-1",
        "scope": scope,
        "roles": ["editor"],
    }
    body.update(claims)
    return encode_access_token(body, KEY)


def make_app(guard: BearerGuard, optional: BearerGuard | None = None) -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    async def me(principal: Annotated[Principal, Security(guard)]) -> dict[str, Any]:
        return {
            "subject": principal.subject,
            "scopes": sorted(principal.scopes),
            "roles": list(principal.roles),
            "client_id": principal.client_id,
            "token_id": principal.token_id,
            "issuer": principal.claims.issuer,
        }

    @app.get("/notes")
    async def notes(
        principal: Annotated[Principal, Security(guard, scopes=["notes:read"])],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.delete("/notes")
    async def delete_notes(
        principal: Annotated[Principal, Security(guard, scopes=["notes:read", "notes:admin"])],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    if optional is not None:

        @app.get("/maybe")
        async def maybe(
            principal: Annotated[Principal | None, Security(optional)],
        ) -> dict[str, Any]:
            return {"subject": principal.subject if principal else None}

    return app


@pytest.fixture
def verifier(source: CountingKeySource, clock: FrozenClock) -> TokenVerifier:
    return TokenVerifier(source, issuer=ISS, audience=AUD, clock=clock, leeway=0)


@pytest.fixture
async def client(verifier: TokenVerifier) -> AsyncIterator[httpx.AsyncClient]:
    guard = BearerGuard(verifier, token_url="/oauth/token", scopes={"notes:read": "Read notes"})
    app = make_app(guard, BearerGuard(verifier, auto_error=False, scheme_name="optional"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


# ------------------------------------------------------------------ 401 / 403


@pytest.mark.parametrize(
    ("authorization", "challenge", "detail"),
    [
        pytest.param(None, "Bearer", "Not authenticated", id="no-header"),
        pytest.param("", "Bearer", "Not authenticated", id="empty-header"),
        pytest.param("Basic dXNlcjpwYXNz", "Bearer", "Not authenticated", id="basic-scheme"),
        pytest.param("Token abc", "Bearer", "Not authenticated", id="other-scheme"),
        pytest.param("Bearer", "Bearer", "Not authenticated", id="bearer-without-token"),
        pytest.param("Bearertoken", "Bearer", "Not authenticated", id="no-space"),
        pytest.param("Bearer a.b.c d.e.f", INVALID, None, id="two-tokens"),
        pytest.param("Bearer  {token}", INVALID, None, id="two-spaces"),
        pytest.param("Bearer {token} {token}", INVALID, None, id="same-token-twice"),
        pytest.param("Bearer garbage", INVALID, None, id="garbage"),
        pytest.param("Bearer {token}x", INVALID, None, id="bad-signature"),
    ],
)
async def test_unauthenticated_requests_get_401_with_a_bearer_challenge(
    client: httpx.AsyncClient,
    clock: FrozenClock,
    authorization: str | None,
    challenge: str,
    detail: str | None,
) -> None:
    """Missing or malformed credentials: 401, WWW-Authenticate, generic detail, never 422."""
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization.format(token=token(clock))
    response = await client.get("/notes", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == challenge
    assert response.json() == {"detail": detail or InvalidToken.default_detail}


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_scheme_is_case_insensitive(
    client: httpx.AsyncClient, clock: FrozenClock, scheme: str
) -> None:
    """RFC 7235 §2.1: the auth-scheme is case-insensitive."""
    response = await client.get("/notes", headers={"Authorization": f"{scheme} {token(clock)}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"exp": 0}, id="expired"),
        pytest.param({"iss": "https://evil.example"}, id="wrong-issuer"),
        pytest.param({"aud": "https://other.example"}, id="wrong-audience"),
    ],
)
async def test_bad_token_gets_invalid_token(
    client: httpx.AsyncClient, clock: FrozenClock, claims: dict[str, Any]
) -> None:
    """A bad token: 401 with error="invalid_token" and the same text whatever the cause."""
    response = await client.get(
        "/me", headers={"Authorization": f"Bearer {token(clock, **claims)}"}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == INVALID
    assert response.json() == {"detail": InvalidToken.default_detail}


async def test_missing_scope_gets_403_insufficient_scope(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    """A valid token without a required scope: 403 naming every scope the route needs."""
    response = await client.delete("/notes", headers={"Authorization": f"Bearer {token(clock)}"})
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", '
        f'error_description="{InsufficientScope.default_detail}", '
        'scope="notes:read notes:admin"'
    )
    assert response.json() == {"detail": InsufficientScope.default_detail}


async def test_all_scopes_present_passes(client: httpx.AsyncClient, clock: FrozenClock) -> None:
    """A token with every required scope (and more) is let through."""
    bearer = token(clock, scope="notes:admin notes:read extra")
    response = await client.delete("/notes", headers={"Authorization": f"Bearer {bearer}"})
    assert response.status_code == 200


async def test_valid_token_gives_the_principal(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    """The handler receives a Principal built from the verified claims."""
    response = await client.get("/me", headers={"Authorization": f"Bearer {token(clock)}"})
    assert response.status_code == 200
    assert response.json() == {
        "subject": "user-1",
        "scopes": ["notes:read"],
        "roles": ["editor"],
        "client_id": "web",
        "token_id": "jti-1",
        "issuer": ISS,
    }


async def test_optional_guard_returns_none_without_a_token(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    """auto_error=False: no token is anonymous, but a bad token is still a 401."""
    assert (await client.get("/maybe")).json() == {"subject": None}
    ok = await client.get("/maybe", headers={"Authorization": f"Bearer {token(clock)}"})
    assert ok.json() == {"subject": "user-1"}
    bad = await client.get("/maybe", headers={"Authorization": "Bearer a.b.c"})
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == INVALID


@pytest.mark.parametrize(
    ("error", "level"),
    [
        pytest.param(KeySourceUnavailable(), None, id="unavailable"),
        pytest.param(RuntimeError("bug"), "WARNING", id="programming-error"),
    ],
)
async def test_key_source_failure_is_401_not_500(
    client: httpx.AsyncClient,
    clock: FrozenClock,
    source: CountingKeySource,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    level: str | None,
) -> None:
    """A key source that fails rejects the token; a real bug is also logged at WARNING."""
    source.error = error
    bearer = token(clock)
    with caplog.at_level(logging.DEBUG):
        response = await client.get("/me", headers={"Authorization": f"Bearer {bearer}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == INVALID
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in warnings] == ([level] if level else [])
    assert bearer not in caplog.text


async def test_unexpected_verifier_error_is_401_and_logged(
    client: httpx.AsyncClient,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug inside verification fails closed (401) and is logged at WARNING on bastion.guard."""

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError

    monkeypatch.setattr(bastion.guard, "verify_access_token", broken)
    response = await client.get("/me", headers={"Authorization": f"Bearer {token(clock)}"})
    assert response.status_code == 401
    assert [(r.name, r.levelname) for r in caplog.records] == [("bastion.guard", "WARNING")]


async def test_rejection_cause_is_logged_at_debug_without_the_token(
    client: httpx.AsyncClient, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The real cause goes to the bastion.guard debug log; the token never does."""
    bearer = token(clock, exp=0)
    with caplog.at_level(logging.DEBUG, logger="bastion.guard"):
        await client.get("/me", headers={"Authorization": f"Bearer {bearer}"})
    assert [(r.name, r.levelname) for r in caplog.records] == [("bastion.guard", "DEBUG")]
    assert "expired" in caplog.text
    assert bearer not in caplog.text


# ------------------------------------------------------------------ OpenAPI


async def test_openapi_lists_the_oauth2_scheme_and_scopes(client: httpx.AsyncClient) -> None:
    """With token_url, OpenAPI has a password flow (Swagger's Authorize) and per-route scopes."""
    document = (await client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["BearerGuard"] == {
        "type": "oauth2",
        "flows": {"password": {"tokenUrl": "/oauth/token", "scopes": {"notes:read": "Read notes"}}},
    }
    paths = document["paths"]
    assert paths["/me"]["get"]["security"] == [{"BearerGuard": []}]
    assert paths["/notes"]["get"]["security"] == [{"BearerGuard": ["notes:read"]}]
    assert paths["/notes"]["delete"]["security"] == [{"BearerGuard": ["notes:read", "notes:admin"]}]
    assert "422" not in paths["/me"]["get"]["responses"]


async def test_openapi_without_token_url_is_http_bearer(verifier: TokenVerifier) -> None:
    """Without token_url the scheme is HTTP bearer with a JWT format, under scheme_name."""
    guard = BearerGuard(verifier, scheme_name="jwt", description="Bastion access token")
    app = make_app(guard)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        document = (await c.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"] == {
        "jwt": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "Bastion access token",
        }
    }


# ------------------------------------------------------------------ the cache


async def test_repeat_request_is_served_from_the_cache(
    client: httpx.AsyncClient,
    clock: FrozenClock,
    source: CountingKeySource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same token again costs no key lookup and no signature check."""
    checks: list[str] = []
    real = bastion.jwt.verify_access_token

    async def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        checks.append("verify")
        return await real(token, *args, **kwargs)

    monkeypatch.setattr(bastion.guard, "verify_access_token", counting)
    headers = {"Authorization": f"Bearer {token(clock)}"}
    for _ in range(5):
        assert (await client.get("/notes", headers=headers)).status_code == 200
    assert (source.calls, len(checks)) == (1, 1)
    # The scope check still runs on a cached principal.
    assert (await client.delete("/notes", headers=headers)).status_code == 403
    assert source.calls == 1


async def test_cached_token_expires_at_exp(
    client: httpx.AsyncClient, clock: FrozenClock, source: CountingKeySource
) -> None:
    """A cached token is served until exp and not a moment after."""
    headers = {"Authorization": f"Bearer {token(clock)}"}
    assert (await client.get("/me", headers=headers)).status_code == 200
    clock.advance(899)
    assert (await client.get("/me", headers=headers)).status_code == 200
    assert source.calls == 1
    clock.advance(1)
    response = await client.get("/me", headers=headers)
    assert response.status_code == 401
    assert source.calls == 2  # re-verified, and refused


async def test_rejected_tokens_are_not_cached(
    verifier: TokenVerifier, clock: FrozenClock, source: CountingKeySource
) -> None:
    """Every presentation of a bad token is verified again; nothing is remembered."""
    bad = token(clock, iss="https://evil.example")
    for _ in range(3):
        with pytest.raises(InvalidToken):
            await verifier.verify(bad)
    assert source.calls == 3
    assert verifier.cached(bad) is None


async def test_cache_is_bounded_and_evicts_the_oldest(
    source: CountingKeySource, clock: FrozenClock
) -> None:
    """With cache_size=2 a third token pushes out the first."""
    verifier = TokenVerifier(source, issuer=ISS, audience=AUD, clock=clock, cache_size=2)
    tokens = [token(clock, jti=f"j{i}") for i in range(3)]
    for t in tokens:
        await verifier.verify(t)
    assert [verifier.cached(t) is not None for t in tokens] == [False, True, True]
    assert source.calls == 3


async def test_cache_size_zero_disables_caching(
    source: CountingKeySource, clock: FrozenClock
) -> None:
    """cache_size=0 verifies every time."""
    verifier = TokenVerifier(source, issuer=ISS, audience=AUD, clock=clock, cache_size=0)
    bearer = token(clock)
    await verifier.verify(bearer)
    await verifier.verify(bearer)
    assert source.calls == 2


# ------------------------------------------------------------------ pieces


@pytest.mark.parametrize(
    ("args", "header"),
    [
        pytest.param({}, "Bearer", id="bare"),
        pytest.param({"error": "invalid_token"}, 'Bearer error="invalid_token"', id="error"),
        pytest.param(
            {"error": "insufficient_scope", "scope": "a b"},
            'Bearer error="insufficient_scope", scope="a b"',
            id="scope",
        ),
        pytest.param(
            {"description": 'say "hi"\\\r\n'}, 'Bearer error_description="say hi"', id="sanitised"
        ),
    ],
)
def test_www_authenticate_header(args: dict[str, str], header: str) -> None:
    """The RFC 6750 §3 challenge is built in one place and cannot be broken by its values."""
    assert www_authenticate(**args) == header


def test_error_factories_return_fresh_instances() -> None:
    """Each answer is a new exception object: no shared, mutable exception instances."""
    first, second = invalid_token_error(), invalid_token_error()
    assert first is not second
    assert (first.status_code, first.headers) == (401, {"WWW-Authenticate": INVALID})


def test_principal_has_scopes(clock: FrozenClock) -> None:
    """has_scopes() is true only when every named scope was granted."""
    principal = Principal(
        subject="s",
        scopes=frozenset({"a", "b"}),
        roles=(),
        client_id="c",
        claims=None,
        token_id=None,
    )
    assert principal.has_scopes("a", "b")
    assert principal.has_scopes()
    assert not principal.has_scopes("a", "c")


def test_public_surface() -> None:
    """bastion.guard exports what a resource server needs, and those names exist."""
    assert {"Principal", "TokenVerifier", "BearerGuard", "RemoteJWKS", "KeySource"} <= set(
        bastion.guard.__all__
    )
    for name in bastion.guard.__all__:
        assert hasattr(bastion.guard, name)
    assert bastion.guard.RemoteJWKS is RemoteJWKS
    assert bastion.guard.KeySource is KeySource
