"""What the services need from storage, as Protocols and plain records.

Services depend on these, never on SQLAlchemy or Redis, so each backend
(``stores.sql`` for SQLite and PostgreSQL; Redis and memory stores in later
features) can be swapped by settings and tested with one shared contract suite.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID


@dataclass(frozen=True, slots=True)
class User:
    """An account. ``password_hash`` never leaves the server: the HTTP edge
    serialises users through a response model that does not have it."""

    id: UUID
    email: str
    username: str | None
    password_hash: str
    is_active: bool
    email_verified: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewUser:
    email: str
    username: str | None
    password_hash: str
    is_active: bool = True
    email_verified: bool = False


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    """A signing key as stored: the public JWK in the clear, the private key
    encrypted (AES-GCM, see :mod:`bastion.keys`)."""

    kid: str
    algorithm: str
    public_jwk: dict[str, Any]
    encrypted_private_key: bytes
    created_at: datetime
    retired_at: datetime | None = None

    @property
    def is_active(self) -> bool:
        return self.retired_at is None


class UserStore(Protocol):
    async def add(self, user: NewUser, *, now: datetime) -> User:
        """Insert a user; raise ``EmailAlreadyRegistered`` when the email is taken
        and ``Conflict`` when the username is (both compared case-insensitively,
        see :mod:`bastion.emails`). Nothing is written then."""
        ...

    async def get(self, user_id: UUID) -> User | None: ...

    async def get_by_email(self, email: str) -> User | None:
        """Case-insensitive lookup."""
        ...

    async def set_password_hash(
        self, user_id: UUID, password_hash: str, *, now: datetime
    ) -> None: ...

    async def set_active(self, user_id: UUID, active: bool, *, now: datetime) -> None: ...


class KeyStore(Protocol):
    async def list_keys(self) -> list[SigningKeyRecord]:
        """Every stored key, newest first."""
        ...

    async def activate(self, key: SigningKeyRecord, *, now: datetime) -> None:
        """Insert ``key`` as the active key and retire the previous active key(s)
        at ``now``, in one transaction."""
        ...

    async def delete_retired_before(self, moment: datetime) -> int:
        """Remove keys retired before ``moment``; returns how many."""
        ...


# --------------------------------------------------------------- token lifecycle


@dataclass(frozen=True, slots=True)
class RefreshSession:
    """One refresh-token family: what a user sees as a "session" (one login on
    one device). Rotation keeps the family; reuse of a spent member revokes it
    (RFC 9700 §4.14.2)."""

    id: UUID
    user_id: UUID
    client_id: str
    scope: str
    """The scope granted at login: the ceiling for every rotation (RFC 6749 §6)."""
    created_at: datetime
    expires_at: datetime
    """Absolute end of the family; rotation never extends it."""
    last_used_at: datetime
    user_agent: str | None = None
    ip_address: str | None = None
    revoked_at: datetime | None = None

    def is_live(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    """One refresh token, stored by the SHA-256 of its value only."""

    token_hash: str
    family_id: UUID
    parent_hash: str | None
    scope: str
    created_at: datetime
    idle_expires_at: datetime
    """Unused past this moment, the token is dead (idle timeout)."""
    used_at: datetime | None = None


class RefreshTokenStore(Protocol):
    async def start_family(self, session: RefreshSession, first: RefreshTokenRecord) -> None:
        """Insert a new family and its first token in one transaction."""
        ...

    async def find(self, token_hash: str) -> tuple[RefreshTokenRecord, RefreshSession] | None:
        """The token with ``token_hash`` and its family, spent or not."""
        ...

    async def spend(
        self,
        token_hash: str,
        successor: RefreshTokenRecord,
        *,
        now: datetime,
        user_agent: str | None = None,
        ip_address: str | None = None,
    ) -> bool:
        """Mark the token used and insert its successor, atomically.

        Must be a conditional write (``UPDATE … WHERE used_at IS NULL`` and the
        family not revoked), never read-then-write: of N concurrent calls for one
        token exactly one returns True, and only that one inserts a successor.
        Also stamps the family's ``last_used_at`` (and user agent and IP when
        given)."""
        ...

    async def revoke_family(self, family_id: UUID, *, now: datetime) -> bool:
        """Revoke a family; False when it did not exist or was already revoked."""
        ...

    async def revoke_user_families(self, user_id: UUID, *, now: datetime) -> int:
        """Revoke every live family of a user; returns how many."""
        ...

    async def get_session(self, family_id: UUID) -> RefreshSession | None: ...

    async def list_sessions(self, user_id: UUID, *, now: datetime) -> list[RefreshSession]:
        """The user's live families (not revoked, not expired), newest first."""
        ...

    async def purge(self, *, now: datetime) -> int:
        """Delete families (with their tokens) that expired or were revoked
        before ``now``; returns how many families went."""
        ...


class RevocationStore(Protocol):
    """Denylisted access tokens (by ``jti``) and per-subject "valid after"
    watermarks: the state the strict guard consults.

    Entries carry their own expiry: a denylisted ``jti`` only matters until the
    token's ``exp``, a watermark only until every token issued before it has
    expired; implementations drop them then (Redis by TTL, SQL and memory by
    :meth:`purge`), so nothing grows without bound."""

    async def deny(self, jti: str, *, expires_at: datetime) -> None: ...

    async def set_watermark(self, subject: str, moment: datetime, *, keep_until: datetime) -> None:
        """Tokens of ``subject`` issued at or before ``moment`` are revoked.
        A later watermark replaces an earlier one, never the reverse."""
        ...

    async def is_revoked(self, jti: str | None, subject: str, issued_at: float) -> bool:
        """One round trip: is ``jti`` denylisted, or was the token (issued at
        ``issued_at``, seconds since the epoch) issued at or before the
        subject's watermark?"""
        ...

    async def purge(self, *, now: datetime) -> int:
        """Drop entries whose expiry passed; returns how many."""
        ...
