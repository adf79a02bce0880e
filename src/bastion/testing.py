"""Helpers for *your* tests: real tokens without a running Bastion.

:class:`TokenFactory` holds an in-memory signing key, mints real RFC 9068
access tokens with it, and gives a :class:`~bastion.guard.TokenVerifier` that
trusts exactly that key. Build your app's guard from ``factory.verifier()`` in
tests, and every scope check, expiry and error answer runs for real; nothing
is overridden or mocked::

    factory = TokenFactory(issuer="https://auth.example.test")
    app = create_my_app(guard=BearerGuard(factory.verifier()))
    token = factory.mint("user-1", scopes=["invoices:read"])
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from pydantic import SecretStr

from bastion.clock import Clock, SystemClock
from bastion.guard import TokenVerifier
from bastion.jwt import encode_access_token
from bastion.keys import Algorithm, VerificationKey, decrypt_signing_key, generate_signing_key
from bastion.scopes import format_scope

__all__ = ["StaticKeys", "TokenFactory"]


class StaticKeys:
    """A :class:`~bastion.keys.KeySource` over a fixed set of public keys."""

    def __init__(self, keys: Iterable[VerificationKey]) -> None:
        self._keys = {key.kid: key for key in keys}

    async def get(self, kid: str) -> VerificationKey | None:
        return self._keys.get(kid)


class TokenFactory:
    """Mints signed access tokens and verifies them with the matching key."""

    def __init__(
        self,
        *,
        issuer: str = "https://bastion.test",
        audience: str | None = None,
        algorithm: Algorithm = "EdDSA",
        ttl: int = 900,
        clock: Clock | None = None,
    ) -> None:
        self.issuer = issuer
        self.audience = audience or issuer
        self.ttl = ttl
        self.clock = clock or SystemClock()
        secret = SecretStr(secrets.token_urlsafe(32))
        record = generate_signing_key(algorithm, secret, self.clock.now())
        self.signing_key = decrypt_signing_key(record, secret)

    def verifier(self, **options: Any) -> TokenVerifier:
        """A verifier that trusts this factory's key; ``options`` pass through."""
        return TokenVerifier(
            StaticKeys([self.signing_key.verification_key()]),
            issuer=self.issuer,
            audience=self.audience,
            clock=options.pop("clock", self.clock),
            **options,
        )

    def mint(
        self,
        subject: str = "user-1",
        *,
        scopes: Iterable[str] = (),
        roles: Sequence[str] = (),
        client_id: str = "bastion",
        ttl: int | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A token for ``subject``; ``claims`` override or add any claim, so a
        test can also make expired or wrong-audience tokens on purpose."""
        now = self.clock.now()
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self.ttl if ttl is None else ttl)).timestamp()),
            "jti": secrets.token_urlsafe(16),
            "client_id": client_id,
            "scope": format_scope(scopes),
            "roles": list(roles),
        }
        payload.update(claims or {})
        return encode_access_token(payload, self.signing_key)
