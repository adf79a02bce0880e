"""RemoteJWKS against a real HTTP server on loopback: caching, bounded
re-fetching on unknown kids, refusal of unusable keys and responses, and
failure handling (stale keys kept; none at all → 401, never 500)."""

# No `from __future__ import annotations`: FastAPI evaluates the route annotations.
import asyncio
import http.server
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import anyio
import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastapi import FastAPI, Security

from bastion.clock import FrozenClock
from bastion.errors import InvalidToken
from bastion.guard import BearerGuard, Principal, RemoteJWKS, TokenVerifier
from bastion.jwt import encode_access_token
from bastion.keys import KeySourceUnavailable, SigningKey

pytestmark = pytest.mark.anyio

ISS = "https://auth.example"
AUD = "https://api.example"
ED = SigningKey("ed", "EdDSA", ed25519.Ed25519PrivateKey.generate())
ES = SigningKey("es", "ES256", ec.generate_private_key(ec.SECP256R1()))
RS = SigningKey("rs", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))
NEW = SigningKey("new", "EdDSA", ed25519.Ed25519PrivateKey.generate())


def jwks(*keys: SigningKey, extra: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {"keys": [k.verification_key().to_jwk() for k in keys] + list(extra)}


class JWKSServer:
    """A loopback HTTP server whose answer the test sets; it counts requests.

    ``gate`` holds every answer until set, so a test can pile up concurrent
    lookups behind one in-flight fetch."""

    def __init__(self) -> None:
        self.document: Any = jwks(ED, ES, RS)
        self.raw: bytes | None = None
        self.status = 200
        self.send_length = True
        self.location: str | None = None
        self.hits = 0
        self.gate = threading.Event()
        self.gate.set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                server.gate.wait(timeout=10)
                body = server.raw if server.raw is not None else json.dumps(server.document)
                data = body if isinstance(body, bytes) else body.encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/jwk-set+json")
                if server.location:
                    self.send_header("Location", server.location)
                if server.send_length:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,), daemon=True)

    def __enter__(self) -> "JWKSServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def server() -> Iterator[JWKSServer]:
    with JWKSServer() as running:
        yield running


@pytest.fixture
async def remote(server: JWKSServer, clock: FrozenClock) -> AsyncIterator[RemoteJWKS]:
    async with RemoteJWKS(
        server.url, cache_ttl=300, min_refetch_interval=30, clock=clock
    ) as source:
        yield source


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/jwks.json"  # nothing listens there any more


def token(key: SigningKey, clock: FrozenClock) -> str:
    now = int(clock.timestamp())
    claims = {"iss": ISS, "aud": AUD, "sub": "u1", "client_id": "c", "iat": now, "exp": now + 60}
    return encode_access_token(claims, key)


# ------------------------------------------------------------------ caching


async def test_keys_are_cached_for_cache_ttl(
    remote: RemoteJWKS, server: JWKSServer, clock: FrozenClock
) -> None:
    """One fetch serves every lookup until cache_ttl passes; then one more fetch."""
    for _ in range(100):
        key = await remote.get("ed")
        assert key is not None
        assert key.algorithm == "EdDSA"
    assert server.hits == 1
    clock.advance(299)
    assert await remote.get("es") is not None
    assert server.hits == 1
    clock.advance(1)
    assert await remote.get("rs") is not None
    assert server.hits == 2


async def test_unknown_kid_refetches_at_most_once_per_interval(
    remote: RemoteJWKS, server: JWKSServer, clock: FrozenClock
) -> None:
    """An unknown kid re-fetches, but not again within min_refetch_interval."""
    await remote.get("ed")
    assert await remote.get("new") is None  # just fetched: no second request yet
    assert server.hits == 1
    server.document = jwks(ED, NEW)  # the issuer rotates
    clock.advance(29)
    for _ in range(10):
        assert await remote.get("new") is None
    assert server.hits == 1
    clock.advance(1)
    assert await remote.get("new") is not None
    assert server.hits == 2
    assert await remote.get("nobody") is None
    assert server.hits == 2


async def test_concurrent_unknown_kids_share_one_fetch(
    remote: RemoteJWKS, server: JWKSServer, clock: FrozenClock
) -> None:
    """50 concurrent unknown-kid lookups wait for one in-flight fetch and share it."""
    await remote.get("ed")
    clock.advance(30)
    server.document = jwks(ED, NEW)
    server.gate.clear()
    results: list[Any] = []

    async def lookup(kid: str) -> None:
        results.append(await remote.get(kid))

    async with anyio.create_task_group() as tg:
        for i in range(49):
            tg.start_soon(lookup, f"made-up-{i}")
        tg.start_soon(lookup, "new")
        await anyio.wait_all_tasks_blocked()
        assert server.hits == 2  # one fetch in flight; everyone else waits on the lock
        server.gate.set()
    assert server.hits == 2
    assert sum(r is not None for r in results) == 1


# ------------------------------------------------------------------ what is kept


def _with(key: SigningKey, **changes: Any) -> dict[str, Any]:
    jwk = key.verification_key().to_jwk()
    jwk.update(changes)
    return {k: v for k, v in jwk.items() if v is not None}


def _private_jwk(key: SigningKey, kid: str) -> dict[str, Any]:
    private = pyjwt.get_algorithm_by_name(key.algorithm).to_jwk(key.private_key, as_dict=True)
    return {**private, "kid": kid, "alg": key.algorithm}


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(_private_jwk(ED, "leaky"), id="okp-with-d"),
        pytest.param(_private_jwk(RS, "leaky"), id="rsa-with-private-members"),
        pytest.param({"kty": "oct", "k": "c2VjcmV0", "kid": "leaky", "alg": "HS256"}, id="hs256"),
        pytest.param(_with(RS, kid="leaky", alg="RS384"), id="alg-rs384"),
        pytest.param(_with(RS, kid="leaky", alg="PS256"), id="alg-ps256"),
        pytest.param(_with(ES, kid="leaky", alg=None), id="no-alg"),
        pytest.param(_with(ES, kid="leaky", alg="EdDSA"), id="kty-mismatch"),
        pytest.param(_with(ED, kid="leaky", use="enc"), id="use-enc"),
        pytest.param({"kid": "leaky", "alg": "none", "kty": "none"}, id="alg-none"),
        pytest.param("not-a-jwk", id="string-entry"),
    ],
)
async def test_unusable_keys_are_ignored_and_the_rest_kept(
    remote: RemoteJWKS, server: JWKSServer, entry: Any
) -> None:
    """Keys with private members, a disallowed alg or a mismatched kty are skipped."""
    server.document = jwks(ED, extra=(entry,))
    assert await remote.get("leaky") is None
    assert await remote.get("ed") is not None


async def test_a_kid_naming_two_keys_is_dropped(remote: RemoteJWKS, server: JWKSServer) -> None:
    """RFC 7517 §4.5: a kid that names several keys picks none of them."""
    server.document = jwks(ED, ES, extra=(_with(NEW, kid="ed"),))
    assert await remote.get("ed") is None
    assert await remote.get("es") is not None


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param({"raw": b"x" * (64 * 1024 + 1)}, id="oversized-with-length"),
        pytest.param({"raw": b"x" * (64 * 1024 + 1), "send_length": False}, id="oversized-stream"),
        pytest.param({"raw": b"<html>not json</html>"}, id="not-json"),
        pytest.param({"raw": b'{"keys": [], "keys": []}'}, id="duplicate-member"),
        pytest.param({"document": {"jwks": []}}, id="no-keys-member"),
        pytest.param({"document": [1, 2]}, id="array"),
        pytest.param({"document": {"keys": [{}] * 65}}, id="too-many-keys"),
        pytest.param({"status": 500}, id="http-500"),
        pytest.param({"status": 404}, id="http-404"),
        pytest.param({"status": 302, "location": "http://169.254.169.254/"}, id="redirect"),
    ],
)
async def test_unusable_responses_are_refused(
    remote: RemoteJWKS, server: JWKSServer, setup: dict[str, Any]
) -> None:
    """Oversized, malformed, error or redirect answers give no keys (and no crash)."""
    for name, value in setup.items():
        setattr(server, name, value)
    with pytest.raises(KeySourceUnavailable):
        await remote.get("ed")
    assert server.hits == 1


# ------------------------------------------------------------------ failures


async def test_fetch_failure_keeps_stale_keys(
    remote: RemoteJWKS, server: JWKSServer, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    """When the issuer fails after a good fetch, the cached keys stay in use."""
    assert await remote.get("ed") is not None
    server.status = 503
    clock.advance(300)
    with caplog.at_level(logging.WARNING, logger="bastion.keys"):
        assert await remote.get("ed") is not None
    assert "could not fetch the JWKS" in caplog.text
    assert server.hits == 2
    assert await remote.get("ed") is not None  # no hammering while it is down
    assert server.hits == 2
    clock.advance(30)
    server.status = 200
    assert await remote.get("es") is not None
    assert server.hits == 3


async def test_server_down_rejects_the_token(clock: FrozenClock) -> None:
    """No issuer and no cache: the key source is unavailable and the token invalid."""
    async with RemoteJWKS(_closed_port_url(), clock=clock) as remote:
        with pytest.raises(KeySourceUnavailable):
            await remote.get("ed")
        verifier = TokenVerifier(remote, issuer=ISS, audience=AUD, clock=clock)
        with pytest.raises(InvalidToken) as caught:
            await verifier.verify(token(ED, clock))
        assert "key source has no keys" in str(caught.value.__cause__)


async def test_server_down_is_401_not_500(clock: FrozenClock) -> None:
    """Through the guard, an unreachable issuer answers 401 invalid_token."""
    async with RemoteJWKS(_closed_port_url(), clock=clock) as remote:
        guard = BearerGuard(TokenVerifier(remote, issuer=ISS, audience=AUD, clock=clock))
        app = FastAPI()

        @app.get("/me")
        async def me(principal: Annotated[Principal, Security(guard)]) -> str:
            return principal.subject

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get(
                "/me", headers={"Authorization": f"Bearer {token(ED, clock)}"}
            )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


# ------------------------------------------------------------------ end to end


@pytest.mark.parametrize("key", [ED, ES, RS], ids=lambda k: k.algorithm)
async def test_tokens_verify_against_the_remote_jwks(
    remote: RemoteJWKS, clock: FrozenClock, key: SigningKey
) -> None:
    """A token signed by a published key verifies through RemoteJWKS."""
    verifier = TokenVerifier(remote, issuer=ISS, audience=AUD, clock=clock)
    assert (await verifier.verify(token(key, clock))).subject == "u1"


async def test_rotation_at_the_issuer_is_picked_up(
    remote: RemoteJWKS, server: JWKSServer, clock: FrozenClock
) -> None:
    """A token with a newly published kid verifies after one re-fetch."""
    verifier = TokenVerifier(remote, issuer=ISS, audience=AUD, clock=clock)
    await verifier.verify(token(ED, clock))
    clock.advance(30)
    server.document = jwks(ED, NEW)
    assert (await verifier.verify(token(NEW, clock))).subject == "u1"
    assert server.hits == 2


async def test_injected_client_is_used_and_left_open(
    server: JWKSServer, clock: FrozenClock
) -> None:
    """A caller's httpx client is used for the fetch and not closed by aclose()."""
    async with httpx.AsyncClient() as client:
        remote = RemoteJWKS(server.url, client=client, clock=clock)
        assert await remote.get("ed") is not None
        await remote.aclose()
        assert not client.is_closed


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/jwks", "/relative/jwks.json", "http://"]
)
def test_only_absolute_http_urls_are_accepted(url: str) -> None:
    """The JWKS URL is configuration, checked at construction."""
    with pytest.raises(ValueError, match="http"):
        RemoteJWKS(url)


async def test_concurrent_verifications_during_outage_do_not_crash(clock: FrozenClock) -> None:
    """Many tokens at once against a dead issuer: all InvalidToken, nothing else."""
    async with RemoteJWKS(_closed_port_url(), clock=clock) as remote:
        verifier = TokenVerifier(remote, issuer=ISS, audience=AUD, clock=clock)
        results = await asyncio.gather(
            *(verifier.verify(token(ED, clock)) for _ in range(20)), return_exceptions=True
        )
    assert all(isinstance(r, InvalidToken) for r in results)
