"""The attack table: hostile access tokens (RFC 8725, RFC 9068 §4) each end in
``InvalidToken`` for the intended reason, and well-formed ones pass.

Every hostile token is checked for the *cause* too, so a case cannot pass by
failing early for an unrelated reason. Payload attacks are validly signed by
the real key: they prove the parser refuses them, not just the signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bastion.clock import FrozenClock
from bastion.errors import InvalidToken
from bastion.jwt import (
    AccessTokenClaims,
    encode_access_token,
    parse_token,
    validate_claims,
    verify_access_token,
    verify_signature,
)
from bastion.keys import PrivateKey, SigningKey, VerificationKey
from tests.recording_server import RecordingServer, recording_server

pytestmark = pytest.mark.anyio

ISS = "https://auth.example"
AUD = "https://api.example"
CLOCK = FrozenClock()
NOW = int(CLOCK.timestamp())
LEEWAY = 30


def _key(kid: str, alg: str, private_key: PrivateKey) -> SigningKey:
    return SigningKey(kid, alg, private_key)  # type: ignore[arg-type]


# Two keys per algorithm: the second for "signed by one key, claims another's kid".
KEYS: dict[str, SigningKey] = {
    "ed": _key("ed-1", "EdDSA", ed25519.Ed25519PrivateKey.generate()),
    "ed2": _key("ed-2", "EdDSA", ed25519.Ed25519PrivateKey.generate()),
    "es": _key("es-1", "ES256", ec.generate_private_key(ec.SECP256R1())),
    "es2": _key("es-2", "ES256", ec.generate_private_key(ec.SECP256R1())),
    "rs": _key("rs-1", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "rs2": _key("rs-2", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
}
ATTACKER = _key("attacker", "EdDSA", ed25519.Ed25519PrivateKey.generate())


class DictKeySource:
    """A fixed set of published keys."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = {k.kid: k.verification_key() for k in keys}

    async def get(self, kid: str) -> VerificationKey | None:
        return self.keys.get(kid)


SOURCE = DictKeySource(list(KEYS.values()))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "sub": "user-1",
        "aud": AUD,
        "exp": NOW + 900,
        "iat": NOW,
        "nbf": NOW,
        "jti": "jti-1",
        "client_id": "bastion",
        "scope": "read write",
        "roles": ["admin"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP: Any = object()


def header(key: SigningKey = KEYS["ed"], /, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"alg": key.algorithm, "typ": "at+jwt", "kid": key.kid}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


def forge(
    head: dict[str, Any] | bytes,
    payload: dict[str, Any] | bytes,
    signer: SigningKey | None = KEYS["ed"],
    *,
    hmac_secret: bytes | None = None,
    signature: bytes | None = None,
) -> str:
    """A compact JWS built by hand, signed by ``signer`` (with its own algorithm),
    by HMAC-SHA256 under ``hmac_secret``, or carrying a fixed ``signature``."""
    h = head if isinstance(head, bytes) else json.dumps(head).encode()
    p = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(h)}.{b64(p)}".encode()
    if signature is None:
        if hmac_secret is not None:
            signature = hmac.new(hmac_secret, signing_input, hashlib.sha256).digest()
        else:
            assert signer is not None
            algorithm = pyjwt.get_algorithm_by_name(signer.algorithm)
            signature = algorithm.sign(signing_input, signer.private_key)
    return f"{signing_input.decode()}.{b64(signature)}"


async def verify(token: str) -> AccessTokenClaims:
    return await verify_access_token(
        token, SOURCE, issuer=ISS, audience=AUD, clock=CLOCK, leeway=LEEWAY
    )


# --------------------------------------------------------- HMAC-confusion secrets


def _public(key: SigningKey) -> Any:
    return key.private_key.public_key()


def pem(key: SigningKey) -> bytes:
    return _public(key).public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def der(key: SigningKey) -> bytes:
    return _public(key).public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def raw_ed25519(key: SigningKey) -> bytes:
    return _public(key).public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def jwk_json(key: SigningKey) -> bytes:
    return json.dumps(key.verification_key().to_jwk()).encode()


def _noncanonical(token: str) -> str:
    """The same signature bytes, spelled with non-zero unused trailing bits."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    return token[:-1] + alphabet[last | 1 if last % 2 == 0 else last & ~1]


def _strip_signature(token: str) -> str:
    return token.rsplit(".", 1)[0] + "."


def _tamper_payload(token: str) -> str:
    h, _, s = token.split(".")
    return f"{h}.{b64(json.dumps(claims(sub='admin')).encode())}.{s}"


def _deep(levels: int) -> bytes:
    nested = "[" * levels + "]" * levels
    return json.dumps(claims()).encode()[:-1] + b', "deep": ' + nested.encode() + b"}"


def _raw(**overrides: Any) -> bytes:
    """Claims as JSON with raw replacements (for NaN, duplicates)."""
    return json.dumps(claims(**overrides)).encode()


HOSTILE: list[tuple[str, Callable[[], str], str]] = [
    # -- time
    ("expired", lambda: forge(header(), claims(exp=NOW - LEEWAY - 1)), "expired"),
    ("exp-exactly-at-leeway", lambda: forge(header(), claims(exp=NOW - LEEWAY)), "expired"),
    ("not-yet-valid", lambda: forge(header(), claims(nbf=NOW + LEEWAY + 1)), "nbf"),
    ("iat-in-future", lambda: forge(header(), claims(iat=NOW + LEEWAY + 1)), "iat"),
    ("exp-string", lambda: forge(header(), claims(exp=str(NOW + 900))), "exp is not a number"),
    ("exp-bool", lambda: forge(header(), claims(exp=True)), "exp is not a number"),
    ("exp-missing", lambda: forge(header(), claims(exp=_DROP)), "exp is missing"),
    ("iat-missing", lambda: forge(header(), claims(iat=_DROP)), "iat is missing"),
    ("nbf-null", lambda: forge(header(), claims(nbf=None)), "nbf is missing"),
    (
        "exp-nan",
        lambda: forge(header(), _raw(exp=12345).replace(b"12345", b"NaN")),
        "constant",
    ),
    (
        "exp-huge",
        lambda: forge(header(), _raw(exp=12345).replace(b"12345", b"1e400")),
        "out of range",
    ),
    # -- who
    ("wrong-issuer", lambda: forge(header(), claims(iss="https://evil.example")), "iss"),
    ("wrong-audience", lambda: forge(header(), claims(aud="https://other.example")), "aud"),
    ("audience-list-without-ours", lambda: forge(header(), claims(aud=["a", "b"])), "aud"),
    ("audience-empty-list", lambda: forge(header(), claims(aud=[])), "aud"),
    ("sub-missing", lambda: forge(header(), claims(sub=_DROP)), "sub"),
    ("sub-empty", lambda: forge(header(), claims(sub="")), "sub"),
    ("sub-number", lambda: forge(header(), claims(sub=42)), "sub"),
    ("client-id-missing", lambda: forge(header(), claims(client_id=_DROP)), "client_id"),
    ("jti-number", lambda: forge(header(), claims(jti=7)), "jti"),
    ("scope-list", lambda: forge(header(), claims(scope=["read"])), "scope"),
    ("scope-double-space", lambda: forge(header(), claims(scope="read  write")), "scope"),
    ("scope-quote", lambda: forge(header(), claims(scope='read "x')), "scope"),
    ("roles-string", lambda: forge(header(), claims(roles="admin")), "roles"),
    # -- alg: none, in every casing, with an empty and with a junk signature
    *[
        (
            f"alg-{alg}-empty-signature",
            (lambda a=alg: forge(header(alg=a), claims(), signature=b"")),
            "signature",
        )
        for alg in ("none", "None", "NONE", "nOnE")
    ],
    *[
        (
            f"alg-{alg}-junk-signature",
            (lambda a=alg: forge(header(alg=a), claims(), signature=b"x")),
            "header alg",
        )
        for alg in ("none", "None", "NONE", "nOnE")
    ],
    # -- HS256 with the public key as the HMAC secret (algorithm confusion)
    *[
        (
            f"hs256-{name}-{k}",
            (
                lambda s=secret, k=k: forge(
                    header(KEYS[k], alg="HS256"), claims(), hmac_secret=s(KEYS[k])
                )
            ),
            "header alg",
        )
        for name, secret in (("pem", pem), ("der", der), ("jwk-json", jwk_json))
        for k in ("ed", "es", "rs")
    ],
    (
        "hs256-raw-ed25519",
        lambda: forge(header(alg="HS256"), claims(), hmac_secret=raw_ed25519(KEYS["ed"])),
        "header alg",
    ),
    ("alg-not-a-string", lambda: forge(header(alg=["EdDSA"]), claims()), "alg"),
    ("alg-missing", lambda: forge(header(alg=_DROP), claims()), "alg"),
    ("alg-wrong-case", lambda: forge(header(alg="eddsa"), claims()), "header alg"),
    (
        "alg-of-another-allowed-key",
        lambda: forge(header(KEYS["ed"], alg="ES256"), claims(), KEYS["es"]),
        "header alg",
    ),
    # -- signature
    ("tampered-payload", lambda: _tamper_payload(forge(header(), claims())), "does not verify"),
    ("signature-stripped", lambda: _strip_signature(forge(header(), claims())), "signature"),
    (
        "es256-all-zero-signature",
        lambda: forge(header(KEYS["es"]), claims(), signature=bytes(64)),
        "does not verify",
    ),
    (
        "es256-der-signature",
        lambda: forge(header(KEYS["es"]), claims(), signature=bytes(72)),
        "wrong length",
    ),
    ("non-canonical-base64", lambda: _noncanonical(forge(header(), claims())), "canonical"),
    # -- kid
    ("unknown-kid", lambda: forge(header(kid="nobody"), claims()), "no published key"),
    ("missing-kid", lambda: forge(header(kid=_DROP), claims()), "kid"),
    ("kid-not-a-string", lambda: forge(header(kid=1), claims()), "kid"),
    ("kid-too-long", lambda: forge(header(kid="k" * 1000), claims()), "kid"),
    *[
        (
            f"{a}-signed-by-{b}-claims-{a}-kid",
            (lambda a=a, b=b: forge(header(KEYS[a]), claims(), KEYS[b])),
            "does not verify",
        )
        for a, b in (("ed", "ed2"), ("es", "es2"), ("rs", "rs2"))
    ],
    # -- typ, crit
    ("typ-JWT", lambda: forge(header(typ="JWT"), claims()), "typ"),
    ("typ-missing", lambda: forge(header(typ=_DROP), claims()), "typ"),
    ("typ-not-a-string", lambda: forge(header(typ=["at+jwt"]), claims()), "typ"),
    (
        "crit-unknown",
        lambda: forge(header(crit=["x-bastion"], **{"x-bastion": 1}), claims()),
        "crit",
    ),
    ("crit-empty", lambda: forge(header(crit=[]), claims()), "crit"),
    # -- embedded keys are never used
    (
        "embedded-jwk-attacker-key",
        lambda: forge(
            header(jwk=ATTACKER.verification_key().to_jwk()), claims(sub="admin"), ATTACKER
        ),
        "does not verify",
    ),
    (
        "embedded-jwk-attacker-kid",
        lambda: forge(
            header(ATTACKER, jwk=ATTACKER.verification_key().to_jwk()), claims(), ATTACKER
        ),
        "no published key",
    ),
    # -- JSON
    (
        "duplicate-claim",
        lambda: forge(header(), _raw(sub="user-1")[:-1] + b', "sub": "admin"}'),
        "duplicate",
    ),
    (
        "duplicate-header-member",
        lambda: forge(json.dumps(header()).encode()[:-1] + b', "kid": "rs-1"}', claims()),
        "duplicate",
    ),
    ("payload-not-utf8", lambda: forge(header(), b'{"sub": "\xff\xfe"}'), "UTF-8"),
    ("payload-not-json", lambda: forge(header(), b"sub=admin"), "not valid JSON"),
    ("payload-array", lambda: forge(header(), b"[1, 2, 3]"), "not a JSON object"),
    ("payload-string", lambda: forge(header(), b'"hello"'), "not a JSON object"),
    ("payload-nested-20", lambda: forge(header(), _deep(20)), "nested"),
    ("payload-nested-2000", lambda: forge(header(), _deep(2000)), "nested"),
    ("header-not-json", lambda: forge(b"alg=none", claims()), "not valid JSON"),
    ("header-array", lambda: forge(b"[]", claims()), "not a JSON object"),
    # -- shape
    ("100-KiB", lambda: forge(header(), claims(pad="x" * 100 * 1024)), "longer than"),
    ("padding-in-header", lambda: "eyJ=" + forge(header(), claims())[3:], "base64url"),
    ("padding-at-end", lambda: forge(header(), claims()) + "==", "base64url"),
    ("two-segments", lambda: forge(header(), claims()).rsplit(".", 1)[0], "segments"),
    ("four-segments", lambda: forge(header(), claims()) + ".AAAA", "segments"),
    ("one-segment", lambda: "eyJhbGciOiJub25lIn0", "segments"),
    ("empty", lambda: "", "segments"),
    ("non-ascii", lambda: forge(header(), claims()) + "é", "ASCII"),
    ("standard-alphabet-plus", lambda: forge(header(), claims())[:-1] + "+", "base64url"),
    ("standard-alphabet-slash", lambda: forge(header(), claims())[:-1] + "/", "base64url"),
    ("whitespace", lambda: " " + forge(header(), claims()), "base64url"),
]


@pytest.mark.parametrize(("make", "cause"), [pytest.param(m, c, id=i) for i, m, c in HOSTILE])
async def test_hostile_token_is_rejected_for_the_intended_reason(
    make: Callable[[], str], cause: str
) -> None:
    """Each hostile token raises the generic InvalidToken, caused by the named check."""
    token = make()
    with pytest.raises(InvalidToken) as caught:
        await verify(token)
    assert str(caught.value) == InvalidToken.default_detail
    reason = str(caught.value.__cause__)
    assert cause in reason, reason
    if token:
        assert token not in reason
        assert token not in str(caught.value)


# ------------------------------------------------------------ jku / x5u never fetched


@pytest.fixture
def recorder() -> Iterator[RecordingServer]:
    """A loopback HTTP server that records every request and serves the attacker's JWKS."""
    with recording_server({"keys": [ATTACKER.verification_key().to_jwk()]}) as server:
        yield server


@pytest.mark.parametrize("member", ["jku", "x5u"])
@pytest.mark.parametrize("kid", ["attacker", "ed-1"])
async def test_jku_and_x5u_are_never_fetched(
    recorder: RecordingServer, member: str, kid: str
) -> None:
    """A header URL pointing at the attacker's JWKS is ignored: no request, no key."""
    url = f"{recorder.url}/jwks.json"
    token = forge(header(ATTACKER, kid=kid, **{member: url}), claims(sub="admin"), ATTACKER)
    with pytest.raises(InvalidToken):
        await verify(token)
    assert recorder.hits == []
    # The recorder does see requests: the empty list above is not vacuous.
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).status_code == 200
    assert recorder.hits == ["/jwks.json"]


async def test_header_urls_and_keys_do_not_affect_a_valid_token(recorder: RecordingServer) -> None:
    """jku/x5u/jwk/x5c on a genuinely signed token are ignored, not followed."""
    extra = {
        "jku": recorder.url,
        "x5u": recorder.url,
        "x5c": ["AAAA"],
        "jwk": ATTACKER.verification_key().to_jwk(),
    }
    token = forge(header(**extra), claims())
    assert (await verify(token)).subject == "user-1"
    assert recorder.hits == []


# ------------------------------------------------------------------ positive cases


@pytest.mark.parametrize("name", ["ed", "es", "rs"])
async def test_each_algorithm_verifies_its_own_token(name: str) -> None:
    """A token from encode_access_token verifies for EdDSA, ES256 and RS256."""
    token = encode_access_token(claims(), KEYS[name])
    result = await verify(token)
    assert result == AccessTokenClaims(
        subject="user-1",
        issuer=ISS,
        audience=(AUD,),
        expires_at=float(NOW + 900),
        issued_at=float(NOW),
        not_before=float(NOW),
        jwt_id="jti-1",
        client_id="bastion",
        scopes=frozenset({"read", "write"}),
        roles=("admin",),
        raw=claims(),
    )


def test_encoded_header_is_exactly_alg_kid_typ() -> None:
    """encode_access_token writes {alg, kid, typ: at+jwt} with the key's algorithm."""
    token = encode_access_token(claims(), KEYS["es"])
    head = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert head == {"alg": "ES256", "kid": "es-1", "typ": "at+jwt"}


@pytest.mark.parametrize(
    ("overrides", "head"),
    [
        pytest.param({"aud": ["https://other.example", AUD]}, {}, id="aud-list"),
        pytest.param({}, {"typ": "application/at+jwt"}, id="typ-media-type"),
        pytest.param({}, {"typ": "AT+JWT"}, id="typ-uppercase"),
        pytest.param({"exp": NOW - LEEWAY + 1}, {}, id="expired-within-leeway"),
        pytest.param({"nbf": NOW + LEEWAY}, {}, id="nbf-within-leeway"),
        pytest.param({"iat": NOW + LEEWAY}, {}, id="iat-within-leeway"),
        pytest.param({"nbf": _DROP, "jti": _DROP, "scope": _DROP, "roles": _DROP}, {}, id="min"),
        pytest.param({"scope": ""}, {}, id="empty-scope"),
        pytest.param({"exp": NOW + 900.5}, {}, id="fractional-exp"),
    ],
)
async def test_acceptable_variations_verify(
    overrides: dict[str, Any], head: dict[str, Any]
) -> None:
    """Variations RFC 7519/9068 allow are accepted."""
    result = await verify(forge(header(**head), claims(**overrides)))
    assert result.subject == "user-1"


async def test_minimal_token_has_empty_optional_fields() -> None:
    """Absent nbf/jti/scope/roles come out as None or empty."""
    token = forge(header(), claims(nbf=_DROP, jti=_DROP, scope=_DROP, roles=_DROP))
    result = await verify(token)
    assert (result.not_before, result.jwt_id, result.scopes, result.roles) == (
        None,
        None,
        frozenset(),
        (),
    )


async def test_claims_are_read_only() -> None:
    """The raw claims mapping cannot be mutated (it is shared by the cache)."""
    result = await verify(forge(header(), claims()))
    with pytest.raises(TypeError):
        result.raw["sub"] = "admin"  # type: ignore[index]


# ------------------------------------------------------------------ the stages


def test_stages_can_be_run_separately() -> None:
    """parse_token → verify_signature → validate_claims give the same result."""
    token = forge(header(), claims())
    parsed = parse_token(token)
    assert parsed.kid == "ed-1"
    verify_signature(parsed, KEYS["ed"].verification_key())
    result = validate_claims(json.loads(parsed.payload), issuer=ISS, audience=AUD, now=NOW)
    assert result.subject == "user-1"
    assert token not in repr(parsed)


def test_stage_failures_are_invalid_token() -> None:
    """Each stage raises InvalidToken chained from its cause."""
    with pytest.raises(InvalidToken):
        parse_token("a.b")
    with pytest.raises(InvalidToken):
        verify_signature(parse_token(forge(header(), claims())), KEYS["ed2"].verification_key())
    with pytest.raises(InvalidToken):
        validate_claims(claims(iss="x"), issuer=ISS, audience=AUD, now=NOW)


def test_size_cap_is_checked_before_parsing() -> None:
    """A token over max_token_bytes is refused by length alone, however it looks."""
    with pytest.raises(InvalidToken) as caught:
        parse_token("." * 9000)
    assert "longer than" in str(caught.value.__cause__)
    with pytest.raises(InvalidToken) as caught:
        parse_token(forge(header(), claims()), max_token_bytes=64)
    assert "longer than" in str(caught.value.__cause__)


class _BrokenSource:
    async def get(self, kid: str) -> VerificationKey | None:
        raise RuntimeError("database on fire")


async def test_key_source_failure_is_invalid_token(caplog: pytest.LogCaptureFixture) -> None:
    """A key source that raises makes the token invalid and is logged at WARNING."""
    token = forge(header(), claims())
    with pytest.raises(InvalidToken) as caught:
        await verify_access_token(token, _BrokenSource(), issuer=ISS, audience=AUD, clock=CLOCK)
    assert "key source failed" in str(caught.value.__cause__)
    assert [r.levelname for r in caplog.records if r.name == "bastion.jwt"] == ["WARNING"]
    assert token not in caplog.text
