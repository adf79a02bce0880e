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
