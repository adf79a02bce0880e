"""OAuth clients (RFC 6749 §2) as data: registration, secrets, authentication.

Called by the token, revocation and introspection endpoints, the HTTP Basic
guard and the ``bastion clients`` command; knows nothing of HTTP.

- A client id is made of RFC 6749 Appendix A.1 ``VSCHAR`` (%x20-7E), at most
  :data:`MAX_CLIENT_ID_LENGTH` characters, without leading or trailing spaces;
  generated ones are ``bcl_`` and 16 hex digits.
- A confidential client's secret is 256 bits from :mod:`secrets`, shown once
  and stored as its SHA-256. A fast hash is right here, unlike for passwords:
  nobody can enumerate 2**256 candidates, so a slow hash would only cost every
  legitimate request without slowing any attacker down (the same reasoning as
  for refresh tokens). Comparisons go through :func:`hmac.compare_digest`.
- Public clients (§2.1) have no secret: they are identified, not
  authenticated. The built-in ``bastion`` client of Bastion's own login is one
  (seeded by migration 0004) and cannot be deleted.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Final
from urllib.parse import urlsplit
from uuid import UUID

from bastion.audit import AuditLog
from bastion.authz.permissions import validate_permissions
from bastion.clock import Clock
from bastion.errors import Conflict, InvalidClient, InvalidInput, NotFound
from bastion.stores.protocols import ClientStore, OAuthClient

__all__ = [
    "FIRST_PARTY_CLIENT_ID",
    "GRANT_TYPES",
    "MAX_CLIENT_ID_LENGTH",
    "ClientService",
    "IssuedClientSecret",
    "OAuthClient",
    "hash_client_secret",
    "is_valid_client_id",
]

FIRST_PARTY_CLIENT_ID: Final = "bastion"
"""The built-in public client of Bastion's own login (Swagger UI, CLI, pages)."""

GRANT_TYPES: Final = frozenset(
    {"password", "refresh_token", "client_credentials", "authorization_code"}
)
"""Grants a client may be registered for; ``authorization_code`` is stored
for the authorization-code flow of a later release."""

MAX_CLIENT_ID_LENGTH: Final = 64
MAX_CLIENT_SECRET_LENGTH: Final = 512
"""Longer presented secrets fail without hashing: no generated one is near it."""
MAX_NAME_LENGTH: Final = 200
MAX_REDIRECT_URIS: Final = 20
MAX_REDIRECT_URI_LENGTH: Final = 2000
LOOPBACK_HOSTS: Final = frozenset({"localhost"})

_VSCHAR_ID = re.compile(rf"[\x20-\x7e]{{1,{MAX_CLIENT_ID_LENGTH}}}")
_GENERIC: Final = "Client authentication failed."
# Compared against when the client does not exist, so an unknown id costs the
# same as a wrong secret and timing does not reveal which ids exist.
_DUMMY_HASH: Final = hashlib.sha256(b"bastion: no such client").hexdigest()


def hash_client_secret(secret: str) -> str:
    """SHA-256 (hex) of a client secret: enough for 256-bit random values."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_client_secret() -> str:
    """A fresh 256-bit secret, URL-safe base64 (43 characters): nothing in it
    changes under the form-urlencoding of RFC 6749 §2.3.1."""
    return secrets.token_urlsafe(32)


def is_valid_client_id(client_id: str) -> bool:
    """RFC 6749 Appendix A.1 ``client-id = *VSCHAR``, 1 to 64 characters,
    no leading or trailing space."""
    return (
        isinstance(client_id, str)
        and _VSCHAR_ID.fullmatch(client_id) is not None
        and client_id.strip(" ") == client_id
    )


@dataclass(frozen=True, slots=True)
class IssuedClientSecret:
    """A client with its secret in the clear: shown once, never stored."""

    client: OAuthClient
    secret: str | None
    """``None`` for a public client."""


class ClientService:
    def __init__(self, store: ClientStore, audit: AuditLog, clock: Clock) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock

    # ------------------------------------------------------------------ registry

    async def create(
        self,
        *,
        name: str,
        grant_types: Iterable[str],
        scopes: Iterable[str] = (),
        redirect_uris: Iterable[str] = (),
        public: bool = False,
        client_id: str | None = None,
        actor: str | None = None,
    ) -> IssuedClientSecret:
        """Register a client; a confidential one gets its secret, returned
        here once. :class:`InvalidInput` for anything malformed,
        :class:`Conflict` for a taken id; nothing is written then."""
        client_id = _checked_client_id(client_id) if client_id is not None else _new_client_id()
        grants = _checked_grant_types(grant_types)
        if public and "client_credentials" in grants:
            # RFC 6749 §4.4: the client credentials grant is for confidential clients only.
            raise InvalidInput("A public client cannot use the client_credentials grant.")
        secret = None if public else new_client_secret()
        now = self._clock.now()
        client = OAuthClient(
            client_id=client_id,
            name=_checked_name(name),
            secret_hash=hash_client_secret(secret) if secret is not None else None,
            grant_types=grants,
            scopes=validate_permissions(list(scopes)),
            redirect_uris=_checked_redirect_uris(redirect_uris),
            created_at=now,
            updated_at=now,
            secret_rotated_at=None,
        )
        stored = await self._store.add(client)
        await self._audit.record(
            "client.created",
            actor=actor,
            target=client_id,
            after=_snapshot(stored),
        )
        return IssuedClientSecret(stored, secret)

    async def get(self, client_id: str) -> OAuthClient:
        """The client; :class:`NotFound` for an unknown (or malformed) id."""
        client = await self.find(client_id)
        if client is None:
            raise NotFound("The client does not exist.")
        return client

    async def find(self, client_id: str) -> OAuthClient | None:
        """The client, or ``None``; a malformed id is not looked up at all."""
        if not is_valid_client_id(client_id):
            return None
        return await self._store.get(client_id)

    async def list_clients(self) -> list[OAuthClient]:
        """Every client, by id (hashes included: strip them at the edge)."""
        return await self._store.list_clients()

    async def rotate_secret(self, client_id: str, *, actor: str | None = None) -> str:
        """A new secret for a confidential client, returned once; the old one
        stops working at once. A public client has none to rotate
        (:class:`InvalidInput`): making it confidential would change what it is."""
        client = await self.get(client_id)
        if not client.is_confidential:
            raise InvalidInput("A public client has no secret to rotate.")
        secret = new_client_secret()
        await self._store.set_secret_hash(
            client_id, hash_client_secret(secret), now=self._clock.now()
        )
        await self._audit.record("client.secret_rotated", actor=actor, target=client_id)
        return secret

    async def delete(self, client_id: str, *, actor: str | None = None) -> None:
        """Delete a client. Its tokens live on until they expire (refresh
        families stay bound to an id nobody can present any more).
        :class:`Conflict` for the built-in ``bastion`` client."""
        if client_id == FIRST_PARTY_CLIENT_ID:
            raise Conflict("The built-in client 'bastion' cannot be deleted.")
        client = await self.get(client_id)
        await self._store.delete(client_id)
        await self._audit.record(
            "client.deleted", actor=actor, target=client_id, before=_snapshot(client)
        )

    # ------------------------------------------------------------------ authentication

    async def authenticate(self, client_id: str, secret: str) -> OAuthClient:
        """The confidential client ``client_id`` if ``secret`` is its secret
        (RFC 6749 §2.3.1); :class:`InvalidClient` with one generic text
        otherwise: unknown id, wrong secret, public client. Unknown ids still
        pay a constant-time comparison, so timing does not tell them apart.
        Failures of existing clients are audited (never the secret)."""
        client = await self.find(client_id)
        stored = client.secret_hash if client is not None else None
        presented = hash_client_secret(secret) if len(secret) <= MAX_CLIENT_SECRET_LENGTH else ""
        matches = hmac.compare_digest(presented, stored or _DUMMY_HASH)
        if client is None or stored is None or not matches:
            if client is not None:
                await self._audit.record("client.authentication_failed", target=client.client_id)
            raise InvalidClient(_GENERIC)
        return client

    async def identify(self, client_id: str | None, secret: str | None) -> OAuthClient:
        """The client making a token-endpoint request (RFC 6749 §3.2.1).

        With a secret, the client authenticates. Without one, only a public
        client may be named (confidential clients MUST authenticate, §3.2.1);
        without an id at all, the built-in ``bastion`` client is meant (the
        first-party login sends none). :class:`InvalidClient` otherwise, with
        the same text whatever was wrong, so ids cannot be probed."""
        if secret is not None:
            return await self.authenticate(client_id or "", secret)
        client = await self.find(client_id if client_id is not None else FIRST_PARTY_CLIENT_ID)
        if client is None:
            raise InvalidClient(_GENERIC)
        if client.is_confidential:
            raise InvalidClient(_GENERIC)
        return client


def _new_client_id() -> str:
    return f"bcl_{secrets.token_hex(8)}"


def _checked_client_id(client_id: str) -> str:
    if not is_valid_client_id(client_id):
        raise InvalidInput(
            f"A client id must be 1 to {MAX_CLIENT_ID_LENGTH} printable ASCII characters "
            "(RFC 6749 Appendix A.1), without leading or trailing spaces."
        )
    if _looks_like_a_user_id(client_id):
        # A client's own tokens carry sub=client_id; a user-shaped id would
        # make them pass for that user's tokens (/me, watermarks).
        raise InvalidInput("A client id must not have the shape of a user id (a UUID).")
    return client_id


def _looks_like_a_user_id(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True


def _checked_name(name: str) -> str:
    if not isinstance(name, str) or not 0 < len(name.strip()) <= MAX_NAME_LENGTH:
        raise InvalidInput(f"A client name must be 1 to {MAX_NAME_LENGTH} characters.")
    if not name.isprintable():
        raise InvalidInput("A client name must not contain control characters.")
    return name.strip()


def _checked_grant_types(grant_types: Iterable[str]) -> frozenset[str]:
    if isinstance(grant_types, str):
        raise InvalidInput("Grant types must be a list.")
    grants = frozenset(grant_types)
    unknown = grants - GRANT_TYPES
    if unknown:
        raise InvalidInput(
            f"Unknown grant type: {' '.join(sorted(map(repr, unknown)))[:200]}; "
            f"use {', '.join(sorted(GRANT_TYPES))}."
        )
    if not grants:
        raise InvalidInput("A client needs at least one grant type.")
    return grants


def _checked_redirect_uris(uris: Iterable[str]) -> tuple[str, ...]:
    if isinstance(uris, str):
        raise InvalidInput("Redirect URIs must be a list.")
    checked = tuple(dict.fromkeys(check_redirect_uri(uri) for uri in uris))
    if len(checked) > MAX_REDIRECT_URIS:
        raise InvalidInput(f"A client may have at most {MAX_REDIRECT_URIS} redirect URIs.")
    return checked


def check_redirect_uri(uri: str) -> str:
    """RFC 6749 §3.1.2: an absolute URI without a fragment; ``https``, or
    ``http`` on a loopback host only (RFC 8252 §7.3, native apps), since a
    code sent over plain HTTP elsewhere can be read on the way."""
    if not isinstance(uri, str) or not 0 < len(uri) <= MAX_REDIRECT_URI_LENGTH:
        raise InvalidInput(f"A redirect URI must be 1 to {MAX_REDIRECT_URI_LENGTH} characters.")
    if not uri.isascii() or not uri.isprintable() or " " in uri:
        raise InvalidInput("A redirect URI must be printable ASCII without spaces.")
    try:
        parts = urlsplit(uri)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError for a malformed port)
    except ValueError as e:
        raise InvalidInput("A redirect URI must be an absolute URI.") from e
    if "#" in uri:
        raise InvalidInput("A redirect URI must not contain a fragment (RFC 6749 §3.1.2).")
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidInput("A redirect URI must be an absolute https URI.")
    if parts.scheme == "http" and not _is_loopback(host):
        raise InvalidInput("A redirect URI must use https, or http on a loopback address.")
    return uri


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _snapshot(client: OAuthClient) -> dict[str, object]:
    """Public fields for the audit trail: never the secret's hash."""
    return {
        "name": client.name,
        "confidential": client.is_confidential,
        "grant_types": sorted(client.grant_types),
        "scopes": sorted(client.scopes),
        "redirect_uris": list(client.redirect_uris),
    }
