"""What the services need from storage, as Protocols and plain records.

Services depend on these, never on SQLAlchemy or Redis, so each backend
(``stores.sql`` for SQLite and PostgreSQL; Redis and memory stores in later
features) can be swapped by settings and tested with one shared contract suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    roles: frozenset[str] = frozenset()
    """Assigned in the same transaction as the user: an unknown role
    (:class:`~bastion.errors.InvalidInput`) writes nothing at all."""


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


# ------------------------------------------------------------------ authorization


@dataclass(frozen=True, slots=True)
class Role:
    """A role as data: operators change the hierarchy without a deploy.

    ``parents`` are the roles this one *includes* (inherits from): with the
    seeded set, ``admin`` has parent ``editor`` and ``editor`` has parent
    ``user``, so an admin may do everything an editor may."""

    name: str
    description: str
    parents: frozenset[str]
    permissions: frozenset[str]
    """Permission strings, ``resource:action`` with ``resource:*`` wildcards."""
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class UserPage:
    users: list[User]
    total: int


class RoleStore(Protocol):
    async def list_roles(self) -> list[Role]:
        """Every role, by name. Small by nature: loaded whole to compute closures."""
        ...

    async def get_role(self, name: str) -> Role | None: ...

    async def create_role(self, role: Role) -> Role:
        """Insert; :class:`~bastion.errors.Conflict` if the name is taken and
        :class:`~bastion.errors.InvalidInput` if a parent does not exist. Cycle
        checks are the service's job (it sees the whole graph); the store
        writes parents and permissions in the same transaction as the role."""
        ...

    async def replace_role(
        self, role: Role, *, expected_updated_at: datetime | None = None
    ) -> Role:
        """Overwrite description, parents and permissions of an existing role in
        one transaction; :class:`~bastion.errors.NotFound` if it does not exist.
        With ``expected_updated_at``, refuse (:class:`~bastion.errors.Conflict`)
        when the row changed since it was read (optimistic concurrency)."""
        ...

    async def delete_role(self, name: str) -> None:
        """Delete a role, its grants, its parent links and its user assignments;
        :class:`~bastion.errors.NotFound` if it does not exist."""
        ...

    async def user_roles(self, user_id: UUID) -> frozenset[str]:
        """The roles assigned directly to the user (no closure)."""
        ...

    async def set_user_roles(self, user_id: UUID, roles: frozenset[str]) -> None:
        """Replace the user's direct roles in one transaction;
        :class:`~bastion.errors.InvalidInput` for an unknown role,
        :class:`~bastion.errors.NotFound` for an unknown user."""
        ...

    async def users_with_role(self, name: str) -> list[UUID]: ...


class UserAdminStore(Protocol):
    """What the admin API needs beyond :class:`UserStore`."""

    async def list_users(
        self,
        *,
        offset: int,
        limit: int,
        email_contains: str | None = None,
        role: str | None = None,
        is_active: bool | None = None,
    ) -> UserPage:
        """A page of users ordered by creation time then id, and the total
        matching the filters. ``email_contains`` matches case-insensitively and
        literally (``%`` and ``_`` are not wildcards)."""
        ...

    async def delete_user(self, user_id: UUID) -> None:
        """Delete the user and everything hanging off it (roles, sessions);
        :class:`~bastion.errors.NotFound` if it does not exist."""
        ...

    async def update_user(
        self,
        user_id: UUID,
        *,
        now: datetime,
        is_active: bool | None = None,
        email_verified: bool | None = None,
        username: str | None = None,
    ) -> User:
        """Change the given fields; :class:`~bastion.errors.NotFound` if unknown,
        :class:`~bastion.errors.Conflict` if the username is taken."""
        ...


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One security-relevant action: who did what to whom, what changed."""

    id: UUID
    at: datetime
    action: str
    actor: str | None
    target: str | None
    request_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: list[AuditEvent]
    next_cursor: str | None


class AuditStore(Protocol):
    async def add(self, event: AuditEvent) -> None: ...

    async def page(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        target: str | None = None,
    ) -> AuditPage:
        """Newest first. ``cursor`` is opaque (from the previous page's
        ``next_cursor``); a malformed cursor raises
        :class:`~bastion.errors.InvalidInput`."""
        ...


# ------------------------------------------------------------------ API keys


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key as stored: never the secret, only its SHA-256 (hex), keyed
    by the public ``key_id`` (see :mod:`bastion.api_keys` for the format)."""

    key_id: str
    user_id: UUID
    name: str
    permissions: frozenset[str]
    secret_hash: str = field(repr=False)
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    def is_live(self, now: datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


class ApiKeyStore(Protocol):
    """API keys by id. Writes are single transactions; outages raise
    :class:`~bastion.errors.ServiceUnavailable`."""

    async def add(self, record: ApiKeyRecord, *, max_live: int, now: datetime) -> bool:
        """Insert ``record`` unless its owner already holds ``max_live`` live
        (unrevoked, unexpired at ``now``) keys: False then, nothing written.
        An unknown owner raises :class:`~bastion.errors.NotFound`."""
        ...

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        """The key, revoked or expired alike."""
        ...

    async def list_for_user(self, user_id: UUID) -> list[ApiKeyRecord]:
        """The user's unrevoked keys (expired ones included), newest first."""
        ...

    async def revoke(
        self, key_id: str, *, now: datetime, user_id: UUID | None = None
    ) -> ApiKeyRecord | None:
        """Mark an unrevoked key revoked (only ``user_id``'s when given) and
        return it, revoked; None when no such unrevoked key (of that user)."""
        ...

    async def revoke_all(self, user_id: UUID, *, now: datetime) -> list[str]:
        """Revoke every unrevoked key of the user; their ids."""
        ...

    async def replace(
        self, key_id: str, successor: ApiKeyRecord, *, now: datetime, user_id: UUID | None = None
    ) -> bool:
        """Rotation, atomically: revoke the live key ``key_id`` (only
        ``user_id``'s when given) and insert ``successor``. False, with nothing
        written, when there is no such live key."""
        ...

    async def touch(self, key_id: str, *, at: datetime) -> None:
        """Set ``last_used_at`` (never backwards); nothing for an unknown key."""
        ...

    async def purge(self, *, before: datetime) -> int:
        """Delete keys that expired or were revoked before ``before``; how many."""
        ...


# ------------------------------------------------------------------ OAuth clients


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """An OAuth client (RFC 6749 §2): a program that asks for tokens.

    Confidential clients hold a secret (only its SHA-256 is stored); public
    clients (§2.1), such as the built-in ``bastion`` client of Bastion's own
    login, have none and are identified by ``client_id`` alone."""

    client_id: str
    name: str
    secret_hash: str | None
    """SHA-256 (hex) of the secret; ``None`` for a public client."""
    grant_types: frozenset[str]
    """The grants the client may use at the token endpoint (RFC 6749 §5.2
    ``unauthorized_client`` for any other)."""
    scopes: frozenset[str]
    """Permissions the client may get for itself (client credentials, HTTP
    Basic); user grants are bounded by the user's permissions instead."""
    redirect_uris: tuple[str, ...]
    """Registered redirection endpoints (RFC 6749 §3.1.2), for the
    authorization-code flow."""
    created_at: datetime
    updated_at: datetime
    secret_rotated_at: datetime | None = None

    @property
    def is_confidential(self) -> bool:
        return self.secret_hash is not None


class ClientStore(Protocol):
    async def add(self, client: OAuthClient) -> OAuthClient:
        """Insert ``client``; :class:`~bastion.errors.Conflict` when the id is
        taken, and then nothing is written."""
        ...

    async def get(self, client_id: str) -> OAuthClient | None:
        """Exact, case-sensitive lookup (client ids are compared as strings)."""
        ...

    async def list_clients(self) -> list[OAuthClient]:
        """Every client, by id."""
        ...

    async def set_secret_hash(
        self, client_id: str, secret_hash: str, *, now: datetime
    ) -> OAuthClient:
        """Replace the secret's hash and stamp ``secret_rotated_at`` and
        ``updated_at``; :class:`~bastion.errors.NotFound` for an unknown id."""
        ...

    async def delete(self, client_id: str) -> None:
        """Delete the client; :class:`~bastion.errors.NotFound` for an unknown id."""
        ...


# ------------------------------------------------------------------ browser sessions


@dataclass(frozen=True, slots=True)
class BrowserSession:
    """One signed-in browser: the server side of a session cookie.

    Stored by the SHA-256 of the cookie value only (``id_hash``), so a copy of
    the store does not hold a usable cookie. ``public_id`` is a separate random
    name for the account page's "end session" button: it reveals nothing about
    the cookie. The CSRF token is not stored: it is an HMAC of ``id_hash``
    under a server key (:mod:`bastion.csrf`)."""

    id_hash: str
    public_id: str
    user_id: UUID
    created_at: datetime
    last_seen_at: datetime
    """Coalesced: moved at most once per touch interval, not on every request."""
    idle_expires_at: datetime
    """``last_seen_at`` plus the idle timeout, never past ``expires_at``."""
    expires_at: datetime
    """Absolute end: activity never extends it."""
    ip_address: str | None = None
    user_agent: str | None = None

    def is_live(self, now: datetime) -> bool:
        return now < self.idle_expires_at and now < self.expires_at


class BrowserSessionStore(Protocol):
    """Server-side browser sessions: memory, SQL and Redis implement it alike.

    Liveness is the record's own (:meth:`BrowserSession.is_live`): stores keep
    no settings. Redis drops a session by itself when it dies; memory and SQL
    keep it until :meth:`purge` (or the service deletes it on sight)."""

    async def add(self, session: BrowserSession) -> None: ...

    async def get(self, id_hash: str) -> BrowserSession | None:
        """The stored session, live or not (the caller judges)."""
        ...

    async def touch(self, session: BrowserSession) -> bool:
        """Store ``session``'s ``last_seen_at`` and ``idle_expires_at`` if it
        still exists; never recreates an ended one. False when it is gone."""
        ...

    async def delete(self, id_hash: str) -> bool:
        """End one session; False when there was none."""
        ...

    async def delete_by_public_id(self, user_id: UUID, public_id: str) -> bool:
        """End the session ``public_id`` *of this user*; False when the user
        has no such session (another user's counts as none)."""
        ...

    async def delete_all(self, user_id: UUID, *, now: datetime) -> int:
        """End every session of the user, atomically with respect to
        :meth:`add`; returns how many were live."""
        ...

    async def list_for_user(self, user_id: UUID, *, now: datetime) -> list[BrowserSession]:
        """The user's live sessions, newest first."""
        ...

    async def purge(self, *, now: datetime) -> int:
        """Delete sessions dead at ``now`` (idle or absolute); returns how many."""
        ...
