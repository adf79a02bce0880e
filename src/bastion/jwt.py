"""Access tokens as strict JWTs: RFC 7515 (JWS), RFC 7519 (JWT), RFC 8725 (JWT
best practices) and RFC 9068 (JWT profile for OAuth 2.0 access tokens).

Signing is PyJWT's :func:`jwt.encode`. Verification does not use
:func:`jwt.decode`: it is split into stages so each rule is visible and the
guard can stop at the first, cheapest failure, and it uses PyJWT's algorithm
objects for the signature itself. In order:

1. **Shape** (:func:`parse_token`): size cap before anything else, ASCII, three
   canonical unpadded base64url segments, a header that is a JSON object with no
   duplicate members (RFC 7515 §5.2), ``typ`` ``at+jwt`` (RFC 9068 §4), a
   string ``kid``, no ``crit`` (RFC 7515 §4.1.11: we understand no extension).
   ``jku``, ``x5u``, ``jwk`` and ``x5c`` are never read (RFC 8725 §3.10).
2. **Signature** (:func:`verify_signature`): the key is looked up by ``kid``;
   the key alone decides the algorithm and the header's ``alg`` must equal it
   (RFC 8725 §2.1, §3.1), so ``none`` and HMAC-with-a-public-key cannot pass.
3. **Claims** (:func:`validate_claims`): the payload is parsed only once it is
   authenticated, then ``iss``, ``aud``, ``exp``, ``nbf``, ``iat``, ``sub``,
   ``client_id``, ``jti`` and ``scope`` are checked (RFC 7519 §4.1, RFC 9068
   §2.2, §4) into a typed :class:`AccessTokenClaims`.

Every failure is :class:`bastion.errors.InvalidToken` with its generic text,
raised ``from`` a :class:`TokenRejected` naming the real cause for the debug
log. No message ever contains the token.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import Algorithm as JWSAlgorithm

from bastion.clock import Clock
from bastion.errors import InvalidToken
from bastion.keys import (
    MAX_KID_LENGTH,
    SUPPORTED_ALGORITHMS,
    KeySource,
    KeySourceUnavailable,
    SigningKey,
    VerificationKey,
    strict_object_pairs,
)

__all__ = [
    "ACCESS_TOKEN_TYP",
    "MAX_TOKEN_BYTES",
    "SCOPE_PATTERN",
    "AccessTokenClaims",
    "ParsedToken",
    "TokenRejected",
    "encode_access_token",
    "parse_token",
    "validate_claims",
    "verify_access_token",
    "verify_signature",
]

logger = logging.getLogger("bastion.jwt")

ACCESS_TOKEN_TYP: Final = "at+jwt"
"""RFC 9068 §2.1: the ``typ`` of a JWT access token, so an ID token or any other
JWT signed by the same key cannot be replayed as an access token (RFC 8725 §3.11)."""

MAX_TOKEN_BYTES: Final = 8192
"""Default size cap, checked before any parsing; ours are well under 1 KiB."""

MAX_JSON_DEPTH: Final = 8
"""Deepest nesting accepted in a header or payload; claims are nearly flat."""

_ACCEPTED_TYP: Final = frozenset({ACCESS_TOKEN_TYP, "application/" + ACCESS_TOKEN_TYP})
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+")
SCOPE_PATTERN: Final = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+(?: [\x21\x23-\x5B\x5D-\x7E]+)*")
"""RFC 6749 §3.3: ``scope = scope-token *( SP scope-token )``, ``scope-token = 1*NQCHAR``."""
_MAX_NUMERIC_DATE: Final = 253_402_300_799  # 9999-12-31T23:59:59Z
_ALGORITHMS: Final[Mapping[str, JWSAlgorithm]] = {
    name: jwt.get_algorithm_by_name(name) for name in SUPPORTED_ALGORITHMS
}


class TokenRejected(Exception):
    """Why a token was refused. Internal: it travels as ``InvalidToken.__cause__``
    to debug logs and never to the client. Messages never contain the token."""


@dataclass(frozen=True, slots=True)
class AccessTokenClaims:
    """The verified claims of an RFC 9068 access token.

    Immutable, including :attr:`raw`, because the verifier shares one instance
    between every request that presents the same token."""

    subject: str
    """``sub`` (RFC 7519 §4.1.2): whom the token is about; a user id, or the
    client's own id for a client-credentials token (RFC 9068 §2.2)."""

    issuer: str
    """``iss`` (RFC 7519 §4.1.1): the authorization server that signed it; checked
    to equal the expected issuer."""

    audience: tuple[str, ...]
    """``aud`` (RFC 7519 §4.1.3): the resource servers it is for; checked to
    contain ours. A single string in the token becomes a one-element tuple."""

    expires_at: float
    """``exp`` (RFC 7519 §4.1.4), seconds since the epoch: rejected from then on
    (plus the leeway)."""

    issued_at: float
    """``iat`` (RFC 7519 §4.1.6): when it was issued; required by RFC 9068 §2.2
    and refused if in the future beyond the leeway."""

    not_before: float | None
    """``nbf`` (RFC 7519 §4.1.5): not accepted before this time, when present."""

    jwt_id: str | None
    """``jti`` (RFC 7519 §4.1.7): unique id of the token, the handle a denylist
    uses to revoke it."""

    client_id: str
    """``client_id`` (RFC 9068 §2.2, RFC 8693 §4.3): the OAuth client the token
    was issued to."""

    scopes: frozenset[str]
    """``scope`` (RFC 9068 §2.2.3, RFC 6749 §3.3): the granted scopes, parsed from
    the space-separated string."""

    roles: tuple[str, ...]
    """``roles`` (RFC 9068 §2.2.3.1, after RFC 7643 §4.1.2): role names of the
    subject, in the order the issuer listed them."""

    raw: Mapping[str, Any] = field(hash=False, repr=False)
    """Every claim as decoded, read-only; for claims this class does not model."""


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A token whose shape and header passed, not yet authenticated."""

    kid: str
    alg: str
    header: Mapping[str, Any] = field(repr=False)
    signing_input: bytes = field(repr=False)
    payload: bytes = field(repr=False)
    signature: bytes = field(repr=False)


# ------------------------------------------------------------------ encoding


def encode_access_token(claims: Mapping[str, Any], key: SigningKey) -> str:
    """Sign ``claims`` as a JWS compact serialisation with PyJWT.

    The header is ``{"alg", "kid", "typ": "at+jwt"}`` (RFC 9068 §2.1); the
    algorithm is the key's own."""
    return jwt.encode(
        dict(claims),
        key.private_key,
        algorithm=key.algorithm,
        headers={"typ": ACCESS_TOKEN_TYP, "kid": key.kid},
    )


# ------------------------------------------------------------------ stage 1


def _b64decode(segment: str, what: str) -> bytes:
    """Strict base64url (RFC 7515 §2, §5.1): unpadded, URL alphabet only, and
    canonical, so one signature has exactly one spelling."""
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise TokenRejected(f"{what} is not unpadded base64url")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=") != segment.encode("ascii"):
        raise TokenRejected(f"{what} is not canonical base64url")
    return data


def _refuse_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity by default; an "exp": NaN never expires.
    raise ValueError(f"non-standard JSON constant {name}")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """A UTF-8 JSON object (RFC 7519 §7.2 steps 3-4, 9-10), refusing duplicate
    members, NaN/Infinity and nesting deeper than :data:`MAX_JSON_DEPTH`."""
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=strict_object_pairs,
            parse_constant=_refuse_constant,
        )
    except UnicodeDecodeError as exc:
        raise TokenRejected(f"{what} is not UTF-8") from exc
    except ValueError as exc:  # JSONDecodeError, duplicates, constants, huge ints
        raise TokenRejected(f"{what} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise TokenRejected(f"{what} is nested too deeply") from exc
    if not isinstance(value, dict):
        raise TokenRejected(f"{what} is not a JSON object")
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > MAX_JSON_DEPTH:
            raise TokenRejected(f"{what} is nested too deeply")
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return value


def _parse(token: str, max_token_bytes: int) -> ParsedToken:
    if len(token) > max_token_bytes:
        raise TokenRejected(f"token is longer than {max_token_bytes} bytes")
    if not token.isascii():
        raise TokenRejected("token is not ASCII")
    segments = token.split(".")
    if len(segments) != 3:
        raise TokenRejected(f"token has {len(segments)} segments, not 3 (RFC 7515 §7.1)")
    header_b64, payload_b64, signature_b64 = segments
    header = _json_object(_b64decode(header_b64, "header"), "header")
    payload = _b64decode(payload_b64, "payload")
    signature = _b64decode(signature_b64, "signature")

    if "crit" in header:
        raise TokenRejected("header has crit (RFC 7515 §4.1.11)")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenRejected("header alg is missing or not a string")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
        raise TokenRejected("header kid is missing, not a string or too long")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP:
        raise TokenRejected("header typ is not at+jwt (RFC 9068 §4)")
    return ParsedToken(
        kid=kid,
        alg=alg,
        header=MappingProxyType(header),
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        payload=payload,
        signature=signature,
    )


def parse_token(token: str, *, max_token_bytes: int = MAX_TOKEN_BYTES) -> ParsedToken:
    """Stage 1: shape and header, without any key. Raises :class:`InvalidToken`."""
    try:
        return _parse(token, max_token_bytes)
    except TokenRejected as exc:
        raise InvalidToken() from exc


# ------------------------------------------------------------------ stage 2


def _expected_signature_length(key: VerificationKey) -> int:
    public_key = key.public_key
    if isinstance(public_key, rsa.RSAPublicKey):
        return (public_key.key_size + 7) // 8  # RFC 8017 §8.2.2: k octets
    return 64  # Ed25519 (RFC 8032 §5.1.6) and ES256 R || S (RFC 7518 §3.4)


def _verify_signature(parsed: ParsedToken, key: VerificationKey) -> None:
    if parsed.alg != key.algorithm:
        # Covers none/None/NONE, HS256 with the public key as secret, and any
        # algorithm other than the one this key was made for (RFC 8725 §2.1).
        raise TokenRejected(f"header alg is not {key.algorithm}, the algorithm of the key")
    if parsed.kid != key.kid:
        raise TokenRejected("the key source returned a key for another kid")
    if len(parsed.signature) != _expected_signature_length(key):
        raise TokenRejected("signature has the wrong length")
    if not _ALGORITHMS[key.algorithm].verify(
        parsed.signing_input, key.public_key, parsed.signature
    ):
        raise TokenRejected("signature does not verify")


def verify_signature(parsed: ParsedToken, key: VerificationKey) -> None:
    """Stage 2: the signature, with the algorithm bound to ``key``."""
    try:
        _verify_signature(parsed, key)
    except TokenRejected as exc:
        raise InvalidToken() from exc


# ------------------------------------------------------------------ stage 3


def _numeric_date(claims: Mapping[str, Any], name: str) -> float:
    """RFC 7519 §2 NumericDate: a JSON number; not a string, not a bool, finite."""
    value = claims.get(name)
    if value is None:
        raise TokenRejected(f"claim {name} is missing")
    if type(value) not in (int, float):  # type() and not isinstance(): bool is an int
        raise TokenRejected(f"claim {name} is not a number")
    if not (math.isfinite(value) and 0 <= value <= _MAX_NUMERIC_DATE):
        raise TokenRejected(f"claim {name} is out of range")
    return float(value)


def _string(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise TokenRejected(f"claim {name} is missing or not a non-empty string")
    return value


def _validate(
    claims: Mapping[str, Any], *, issuer: str, audience: str, now: float, leeway: float
) -> AccessTokenClaims:
    iss = claims.get("iss")
    if not isinstance(iss, str) or iss != issuer:
        raise TokenRejected("claim iss is not the expected issuer")

    aud = claims.get("aud")
    if isinstance(aud, str):
        audiences: tuple[str, ...] = (aud,)
    elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        audiences = tuple(aud)
    else:
        raise TokenRejected("claim aud is missing or not a string or list of strings")
    if audience not in audiences:
        raise TokenRejected("claim aud does not contain the expected audience")

    exp = _numeric_date(claims, "exp")
    iat = _numeric_date(claims, "iat")
    nbf = _numeric_date(claims, "nbf") if "nbf" in claims else None
    if now >= exp + leeway:
        raise TokenRejected("token has expired")
    if nbf is not None and now + leeway < nbf:
        raise TokenRejected("token is not valid yet (nbf)")
    if iat > now + leeway:
        raise TokenRejected("token was issued in the future (iat)")

    subject = _string(claims, "sub")
    client_id = _string(claims, "client_id")
    jwt_id = _string(claims, "jti") if "jti" in claims else None

    scope = claims.get("scope", "")
    if not isinstance(scope, str) or (scope and not SCOPE_PATTERN.fullmatch(scope)):
        raise TokenRejected("claim scope is not a space-separated string (RFC 6749 §3.3)")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise TokenRejected("claim roles is not a list of strings")

    return AccessTokenClaims(
        subject=subject,
        issuer=iss,
        audience=audiences,
        expires_at=exp,
        issued_at=iat,
        not_before=nbf,
        jwt_id=jwt_id,
        client_id=client_id,
        scopes=frozenset(scope.split(" ")) if scope else frozenset(),
        roles=tuple(roles),
        raw=MappingProxyType(dict(claims)),
    )


def validate_claims(
    claims: Mapping[str, Any], *, issuer: str, audience: str, now: float, leeway: float = 30
) -> AccessTokenClaims:
    """Stage 3: the registered claims (RFC 7519 §4.1, RFC 9068 §2.2, §4).

    ``exp``, ``iat``, ``iss``, ``aud``, ``sub`` and ``client_id`` are required;
    times are NumericDates compared with ``leeway`` seconds of clock skew."""
    try:
        return _validate(claims, issuer=issuer, audience=audience, now=now, leeway=leeway)
    except TokenRejected as exc:
        raise InvalidToken() from exc


# ------------------------------------------------------------------ all stages


async def verify_access_token(
    token: str,
    keys: KeySource,
    *,
    issuer: str,
    audience: str,
    clock: Clock,
    leeway: float = 30,
    max_token_bytes: int = MAX_TOKEN_BYTES,
) -> AccessTokenClaims:
    """Every stage, in order; :class:`InvalidToken` on any failure.

    A key source that cannot answer makes the token invalid (401), never a
    server error; an unexpected exception from it is also logged at WARNING,
    since that is a bug or an outage someone should see."""
    try:
        parsed = _parse(token, max_token_bytes)
        try:
            key = await keys.get(parsed.kid)
        except KeySourceUnavailable as exc:
            raise TokenRejected("the key source has no keys") from exc
        except Exception as exc:
            logger.warning("key source %s failed", type(keys).__name__, exc_info=True)
            raise TokenRejected("the key source failed") from exc
        if key is None:
            raise TokenRejected("no published key has this kid")
        _verify_signature(parsed, key)
        claims = _json_object(parsed.payload, "payload")
        return _validate(
            claims, issuer=issuer, audience=audience, now=clock.timestamp(), leeway=leeway
        )
    except TokenRejected as exc:
        raise InvalidToken() from exc
