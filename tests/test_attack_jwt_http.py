"""The JWT attack table over HTTP: every hostile bearer token sent to ``/me``
of the real app is a 401 with ``WWW-Authenticate: Bearer error="invalid_token"``.

``test_jwt_verification`` pins each token's *cause* at the verifier; this
table proves the same refusals hold end to end through the guard, the SQL key
store (``kid`` injection reaches a real query) and the error mapping, for an
EdDSA and an ES256 server. Tokens start from the claims of a real login and
are re-signed with the server's own key where the attack needs a valid
signature, and a control case proves that the unmodified forgery is accepted.
Covers RFC 8725 §2 / §3 and the issue's list: ``alg: none`` in every casing,
HMAC keyed with the public key (PEM, DER, raw, JWK), embedded ``jwk``,
``jku``/``x5u`` (never fetched), ``kid`` injection, an all-zero signature,
unknown ``crit``, duplicate members, oversized, deeply nested and non-UTF-8
tokens.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.errors import InvalidToken
from bastion.keys import SigningKey
from bastion.server.app import create_app
from bastion.settings import Settings
from bastion.stores.sql.migrate import upgrade
from tests.conftest import ISSUER, PASSWORD, TEST_SECRET
from tests.http_checks import assert_no_leak, bearer_challenge
from tests.recording_server import RecordingServer, recording_server
from tests.test_jwt_verification import ATTACKER, der, forge, jwk_json, pem

pytestmark = pytest.mark.anyio


@dataclass
class Target:
    """A running app, its signing key, a real token's claims and a URL that
    records every request made to it."""

    client: httpx.AsyncClient
    key: SigningKey
    claims: dict[str, Any]
    recorder_url: str
    recorder_hits: list[str]

    def header(self, **overrides: Any) -> dict[str, Any]:
        head: dict[str, Any] = {"alg": self.key.algorithm, "typ": "at+jwt", "kid": self.key.kid}
        head.update(overrides)
        return {k: v for k, v in head.items() if v is not DROP}

    def payload(self, **overrides: Any) -> dict[str, Any]:
        return {**self.claims, **overrides}

    def signed(self, head: dict[str, Any] | bytes, payload: dict[str, Any] | bytes) -> str:
        """Signed by the server's own key: only the named defect is wrong."""
        return forge(head, payload, self.key)


DROP: Any = object()


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingServer]:
    """A loopback server serving the attacker's JWKS and recording each request."""
    with recording_server({"keys": [ATTACKER.verification_key().to_jwk()]}) as server:
        yield server


@pytest.fixture(scope="module", params=["EdDSA", "ES256"])
async def target(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    recorder: RecordingServer,
) -> AsyncIterator[Target]:
    """One app per algorithm for the whole table: each case is one request."""
    path: Path = tmp_path_factory.mktemp("attack") / "bastion.db"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite+aiosqlite:///{path}",
        secret_key=TEST_SECRET,
        issuer=ISSUER,
        argon2_memory_cost=8192,
        argon2_time_cost=1,
        key_algorithm=request.param,
        rate_limits_enabled=False,
        lockout_enabled=False,
    )
    await upgrade(settings.database_url)
    instance = Bastion(settings, clock=FrozenClock())
    async with instance.lifespan():
        app = create_app(bastion=instance)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=ISSUER
        ) as client:
            email = "mallory@example.com"
            registered = await client.post(
                "/auth/register", json={"email": email, "password": PASSWORD}
            )
            assert registered.status_code == 201, registered.text
            login = await client.post(
                "/oauth/token",
                data={"grant_type": "password", "username": email, "password": PASSWORD},
            )
            token = login.json()["access_token"]
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            url, hits = recorder.url, recorder.hits
            yield Target(client, await instance.keys.signing_key(), claims, url, hits)


def raw_public(key: SigningKey) -> bytes:
    """The public key as bare bytes: Ed25519's 32, or the EC point X9.62-encoded."""
    public = key.private_key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _hmac(t: Target, alg: str, secret: Callable[[SigningKey], bytes]) -> str:
    return forge(t.header(alg=alg), t.payload(), None, hmac_secret=secret(t.key))


def _raw_json(t: Target, extra: bytes) -> bytes:
    """The real claims as JSON with ``extra`` spliced in before the closing brace."""
    return json.dumps(t.payload()).encode()[:-1] + extra + b"}"


def _nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


HOSTILE: list[tuple[str, Callable[[Target], str]]] = [
    # -- alg none, every casing; empty and junk signatures
    *[
        (
            f"alg-{alg}-{sig_name}",
            lambda t, a=alg, s=sig: forge(t.header(alg=a), t.payload(), signature=s),
        )
        for alg in ("none", "None", "NONE", "nOnE", "nonE")
        for sig_name, sig in (("empty", b""), ("junk", b"x"))
    ],
    # -- HMAC keyed with the public key, in every encoding
    *[
        (f"{alg}-public-key-{name}", lambda t, a=alg, s=secret: _hmac(t, a, s))
        for alg in ("HS256", "HS512")
        for name, secret in (("pem", pem), ("der", der), ("raw", raw_public), ("jwk", jwk_json))
    ],
    # -- keys and key URLs inside the token
    (
        "embedded-jwk-attacker-key-real-kid",
        lambda t: forge(
            t.header(alg=ATTACKER.algorithm, jwk=ATTACKER.verification_key().to_jwk()),
            t.payload(),
            ATTACKER,
        ),
    ),
    (
        "embedded-jwk-attacker-kid",
        lambda t: forge(
            t.header(
                alg=ATTACKER.algorithm, kid=ATTACKER.kid, jwk=ATTACKER.verification_key().to_jwk()
            ),
            t.payload(),
            ATTACKER,
        ),
    ),
    *[
        (
            f"{member}-attacker-jwks-{which}-kid",
            lambda t, m=member, w=which: forge(
                t.header(
                    alg=ATTACKER.algorithm,
                    kid=ATTACKER.kid if w == "attacker" else t.key.kid,
                    **{m: f"{t.recorder_url}/jwks.json"},
                ),
                t.payload(),
                ATTACKER,
            ),
        )
        for member in ("jku", "x5u")
        for which in ("attacker", "real")
    ],
    (
        "x5c-junk-chain",
        lambda t: forge(t.header(alg=ATTACKER.algorithm, x5c=["MIIB"]), t.payload(), ATTACKER),
    ),
    # -- kid injection (reaches the SQL key store's lookup)
    *[
        (f"kid-{name}", lambda t, k=kid: t.signed(t.header(kid=k), t.payload()))
        for name, kid in (
            ("path-traversal", "../../etc/passwd"),
            ("path-traversal-encoded", "..%2F..%2Fetc%2Fpasswd"),
            ("sql-or", "' OR 1=1 --"),
            ("sql-union", "x' UNION SELECT kid, public_jwk FROM signing_keys --"),
            ("sql-like-wildcard", "%"),
            ("nul", "\x00"),
            ("real-kid-nul-suffix", "{real}\x00"),
            ("real-kid-trailing-space", "{real} "),
            ("real-kid-upper", "{REAL}"),
            ("10-KiB", "k" * 10 * 1024),
            ("empty", ""),
            ("int", 1),
            ("null", None),
            ("list", ["{real}"]),
            ("object", {"kid": "{real}"}),
            ("bool", True),
        )
    ],
    # -- signature
    ("all-zero-64-byte-signature", lambda t: forge(t.header(), t.payload(), signature=bytes(64))),
    (
        "all-zero-es256-signature",
        lambda t: forge(t.header(alg="ES256"), t.payload(), signature=bytes(64)),
    ),
    ("empty-signature", lambda t: forge(t.header(), t.payload(), signature=b"")),
    (
        "signed-by-attacker-real-kid",
        lambda t: forge(t.header(alg=ATTACKER.algorithm), t.payload(), ATTACKER),
    ),
    (
        "real-signature-other-alg-header",
        lambda t: t.signed(
            t.header(alg="ES256" if t.key.algorithm == "EdDSA" else "EdDSA"), t.payload()
        ),
    ),
    (
        "alg-RS256-downgrade",
        lambda t: forge(t.header(alg="RS256"), t.payload(), signature=bytes(256)),
    ),
    # -- header members
    (
        "crit-unknown",
        lambda t: t.signed(t.header(crit=["x-bastion"], **{"x-bastion": 1}), t.payload()),
    ),
    ("crit-b64", lambda t: t.signed(t.header(crit=["b64"], b64=False), t.payload())),
    ("typ-JWT-id-token-replay", lambda t: t.signed(t.header(typ="JWT"), t.payload())),
    ("typ-missing", lambda t: t.signed(t.header(typ=DROP), t.payload())),
    (
        "duplicate-header-kid",
        lambda t: t.signed(
            json.dumps(t.header()).encode()[:-1] + b', "kid": "other"}', t.payload()
        ),
    ),
    ("header-not-utf8", lambda t: t.signed(b'{"alg": "\xff\xfe", "typ": "at+jwt"}', t.payload())),
    (
        "header-nested-2000",
        lambda t: t.signed(
            json.dumps(t.header()).encode()[:-1] + b', "x": ' + _nested(2000) + b"}", t.payload()
        ),
    ),
    # -- payload, validly signed by the server's key
    ("duplicate-claim-sub", lambda t: t.signed(t.header(), _raw_json(t, b', "sub": "admin"'))),
    (
        "duplicate-claim-scope",
        lambda t: t.signed(t.header(), _raw_json(t, b', "scope": "users:admin"')),
    ),
    ("duplicate-claim-exp", lambda t: t.signed(t.header(), _raw_json(t, b', "exp": 99999999999'))),
    ("payload-not-utf8", lambda t: t.signed(t.header(), b'{"sub": "\xff\xfe"}')),
    (
        "payload-latin1-claims",
        lambda t: t.signed(
            t.header(), json.dumps(t.payload()).encode().replace(b"}", b', "n": "\xe9"}')
        ),
    ),
    ("payload-nested-9", lambda t: t.signed(t.header(), _raw_json(t, b', "deep": ' + _nested(9)))),
    (
        "payload-nested-5000",
        lambda t: t.signed(t.header(), _raw_json(t, b', "deep": ' + _nested(5000))),
    ),
    ("payload-nan-exp", lambda t: t.signed(t.header(), _raw_json(t, b', "exp": NaN'))),
    ("payload-array", lambda t: t.signed(t.header(), b"[]")),
    ("expired", lambda t: t.signed(t.header(), t.payload(exp=t.claims["iat"] - 3600))),
    ("wrong-issuer", lambda t: t.signed(t.header(), t.payload(iss="https://evil.example"))),
    ("wrong-audience", lambda t: t.signed(t.header(), t.payload(aud="https://evil.example"))),
    (
        "unknown-subject",
        lambda t: t.signed(t.header(), t.payload(sub="00000000-0000-0000-0000-000000000000")),
    ),
    ("subject-not-uuid", lambda t: t.signed(t.header(), t.payload(sub="../admin"))),
    # -- size and shape
    ("9-KiB", lambda t: t.signed(t.header(), t.payload(pad="x" * 9 * 1024))),
    ("20-KiB", lambda t: t.signed(t.header(), t.payload(pad="x" * 20 * 1024))),
    ("two-segments", lambda t: t.signed(t.header(), t.payload()).rsplit(".", 1)[0]),
    ("four-segments", lambda t: t.signed(t.header(), t.payload()) + ".e30"),
    ("padded", lambda t: t.signed(t.header(), t.payload()) + "=="),
    ("dots-only", lambda t: ".."),
]


def _with_real_kid(token_header: dict[str, Any], kid: str) -> dict[str, Any]:
    value = token_header.get("kid")
    if isinstance(value, str):
        token_header["kid"] = value.replace("{real}", kid).replace("{REAL}", kid.upper())
    elif isinstance(value, list):
        token_header["kid"] = [kid]
    elif isinstance(value, dict):
        token_header["kid"] = {"kid": kid}
    return token_header


async def test_the_forgery_helper_makes_tokens_the_server_accepts(target: Target) -> None:
    """Control: the unmodified re-signed token is accepted, so every refusal
    below is caused by its one defect."""
    token = target.signed(target.header(), target.payload())
    response = await target.client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("make", [pytest.param(m, id=i) for i, m in HOSTILE])
async def test_hostile_token_is_401_invalid_token(
    target: Target, make: Callable[[Target], str]
) -> None:
    """Each hostile token: 401, error="invalid_token", the generic text, no echo, no fetch."""
    original = Target.header

    def header(self: Target, **overrides: Any) -> dict[str, Any]:
        return _with_real_kid(original(self, **overrides), self.key.kid)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Target, "header", header)
        token = make(target)
    hits_before = len(target.recorder_hits)
    response = await target.client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert bearer_challenge(response)["error"] == "invalid_token"
    assert response.json()["detail"] == InvalidToken.default_detail
    assert response.headers["cache-control"] == "no-store"
    assert_no_leak(response, token)
    assert len(target.recorder_hits) == hits_before
