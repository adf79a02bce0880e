"""Issuing RFC 9068 JWT access tokens.

The issuer fills the claims RFC 9068 §2.2 requires (``iss``, ``exp``, ``aud``,
``sub``, ``client_id``, ``iat``, ``jti``) plus ``nbf``, ``scope`` (§2.2.3) and
``roles`` (§2.2.3.1), and signs with the manager's active key. It is a service:
no HTTP, a clock for time, the key manager for keys.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bastion.clock import Clock
from bastion.jwt import SCOPE_PATTERN, encode_access_token
from bastion.keys import LocalKeyManager

__all__ = ["RESERVED_CLAIMS", "AccessTokenIssuer", "IssuedToken"]

RESERVED_CLAIMS: Final = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "roles"}
)
"""Claims the issuer sets itself; ``extra`` may not override them."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """What the token endpoint answers (RFC 6749 §5.1), plus the ``jti``."""

    access_token: str
    expires_in: int
    scope: str
    jti: str
    expires_at: float
    token_type: str = "Bearer"


class AccessTokenIssuer:
    """Mints access tokens for one issuer and audience with a fixed lifetime."""

    def __init__(
        self, keys: LocalKeyManager, issuer: str, audience: str, ttl: int, clock: Clock
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl
        self._clock = clock

    async def issue(
        self,
        *,
        subject: str,
        scopes: Iterable[str],
        client_id: str,
        roles: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> IssuedToken:
        """Sign a new access token.

        ``scope`` is the sorted, space-separated set (RFC 6749 §3.3). ``jti`` is
        128 random bits (RFC 7519 §4.1.7), the handle for a later denylist.
        ``extra`` adds private claims but cannot replace a registered one: a
        caller must not be able to change ``sub`` or ``exp`` by accident."""
        if not subject or not client_id:
            raise ValueError("subject and client_id must not be empty (RFC 9068 §2.2)")
        if extra:
            clash = RESERVED_CLAIMS.intersection(extra)
            if clash:
                raise ValueError(f"extra claims may not set {sorted(clash)}")
        unique = sorted(set(scopes))
        if any(" " in s or not SCOPE_PATTERN.fullmatch(s) for s in unique):
            # A scope the verifier would refuse (RFC 6749 §3.3) is a bug here, not later.
            raise ValueError("scopes must be non-empty RFC 6749 §3.3 scope-tokens")
        scope = " ".join(unique)
        key = await self._keys.signing_key()
        issued = self._clock.timestamp()
        now = int(issued)
        expires_at = now + self._ttl
        jti = secrets.token_urlsafe(16)
        claims: dict[str, Any] = dict(extra or {})
        claims.update(
            iss=self._issuer,
            sub=subject,
            aud=self._audience,
            exp=expires_at,
            # Millisecond precision (a NumericDate may be fractional, RFC 7519 §2)
            # so a revocation watermark set this second still spares tokens
            # issued after it.
            iat=round(issued, 3),
            nbf=now,
            jti=jti,
            client_id=client_id,
            scope=scope,
            roles=list(roles),
        )
        return IssuedToken(
            access_token=encode_access_token(claims, key),
            expires_in=self._ttl,
            scope=scope,
            jti=jti,
            expires_at=float(expires_at),
        )
