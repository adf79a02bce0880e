"""The SQL schema, as typed SQLAlchemy models; Alembic migrations mirror it.

Constraint and index names come from :data:`NAMING_CONVENTION`, so a migration
names them the same way on every backend and a later ``ALTER`` can find them.
``tests/stores/test_migrations.py`` checks that the migrations and these models
agree.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "NAMING_CONVENTION",
    "ApiKeyRow",
    "AuditEventRow",
    "Base",
    "BrowserSessionRow",
    "OAuthClientRow",
    "RefreshFamilyRow",
    "RefreshTokenRow",
    "RevokedTokenRow",
    "RoleParentRow",
    "RolePermissionRow",
    "RoleRow",
    "SigningKeyRow",
    "TokenWatermarkRow",
    "UTCDateTime",
    "UserRoleRow",
    "UserRow",
    "as_utc",
    "metadata",
]

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

EMAIL_MAX_LENGTH = 320
"""RFC 5321 §4.5.3.1: 64 for the local part, @, 255 for the domain."""

USERNAME_MAX_LENGTH = 64
PASSWORD_HASH_MAX_LENGTH = 512
CLIENT_ID_MAX_LENGTH = 255
USER_AGENT_MAX_LENGTH = 512
IP_ADDRESS_MAX_LENGTH = 64
TOKEN_HASH_LENGTH = 64
"""A SHA-256 in hex."""
JTI_MAX_LENGTH = 255
SUBJECT_MAX_LENGTH = 255
ROLE_NAME_MAX_LENGTH = 64
ROLE_DESCRIPTION_MAX_LENGTH = 500
PERMISSION_MAX_LENGTH = 128
AUDIT_ACTION_MAX_LENGTH = 64
AUDIT_PARTY_MAX_LENGTH = 255
"""An audit event's ``actor`` and ``target``."""
REQUEST_ID_MAX_LENGTH = 64


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that always comes back as aware UTC.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones and hands back
    naive values, so they are written as naive UTC and read back with
    ``tzinfo=UTC``. A naive datetime is refused on the way in: its zone would be
    a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is a programming error (its zone
    would be a guess), so it raises :class:`ValueError`."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime given; pass an aware UTC datetime")
    return moment.astimezone(UTC)


metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Base(DeclarativeBase):
    metadata = metadata


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH))
    email_canonical: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), unique=True)
    username: Mapped[str | None] = mapped_column(String(USERNAME_MAX_LENGTH))
    username_canonical: Mapped[str | None] = mapped_column(String(USERNAME_MAX_LENGTH), unique=True)
    password_hash: Mapped[str] = mapped_column(String(PASSWORD_HASH_MAX_LENGTH))
    is_active: Mapped[bool] = mapped_column(Boolean)
    email_verified: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SigningKeyRow(Base):
    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    encrypted_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


# At most one active key, enforced by the database: every active row has the
# same value (true) in this partial unique index. Rotation takes a lock first
# (see SqlKeyStore.activate); this is the backstop.
Index(
    "uq_signing_keys_one_active",
    SigningKeyRow.retired_at.is_(None),
    unique=True,
    sqlite_where=SigningKeyRow.retired_at.is_(None),
    postgresql_where=SigningKeyRow.retired_at.is_(None),
)


# --------------------------------------------------------------- token lifecycle


class RefreshFamilyRow(Base):
    """One refresh-token family, i.e. one session (see
    :class:`~bastion.stores.protocols.RefreshSession`)."""

    __tablename__ = "refresh_families"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    client_id: Mapped[str] = mapped_column(String(CLIENT_ID_MAX_LENGTH))
    scope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime)
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_MAX_LENGTH))
    ip_address: Mapped[str | None] = mapped_column(String(IP_ADDRESS_MAX_LENGTH))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RefreshTokenRow(Base):
    """One refresh token, by the SHA-256 of its value; ``used_at`` set once it
    has been spent (rotated)."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), primary_key=True)
    family_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("refresh_families.id", ondelete="CASCADE"), index=True
    )
    parent_hash: Mapped[str | None] = mapped_column(String(TOKEN_HASH_LENGTH))
    scope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    idle_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RevokedTokenRow(Base):
    """A denylisted access token, kept until the token's own ``exp``."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(JTI_MAX_LENGTH), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class TokenWatermarkRow(Base):
    """Tokens of ``subject`` issued at or before ``moment`` are revoked.

    ``moment`` is seconds since the epoch (a double: microsecond precision for
    present-day times), the unit of a token's ``iat``, so the guard's check is a
    plain numeric comparison on every backend."""

    __tablename__ = "token_watermarks"

    subject: Mapped[str] = mapped_column(String(SUBJECT_MAX_LENGTH), primary_key=True)
    moment: Mapped[float] = mapped_column(Double)
    keep_until: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


# ------------------------------------------------------------------ authorization


class RoleRow(Base):
    """A role (see :class:`~bastion.stores.protocols.Role`). Migration 0003
    seeds ``user``, ``editor`` and ``admin``."""

    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(ROLE_NAME_MAX_LENGTH), primary_key=True)
    description: Mapped[str] = mapped_column(String(ROLE_DESCRIPTION_MAX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """Also the role's version for optimistic concurrency
    (:meth:`~bastion.stores.sql.roles.SqlRoleStore.replace_role`)."""


class RoleParentRow(Base):
    """``role`` includes (inherits everything of) ``parent``."""

    __tablename__ = "role_parents"
    __table_args__ = (CheckConstraint("role <> parent", name="not_self"),)

    role: Mapped[str] = mapped_column(
        String(ROLE_NAME_MAX_LENGTH),
        ForeignKey("roles.name", ondelete="CASCADE", onupdate="CASCADE"),
        primary_key=True,
    )
    parent: Mapped[str] = mapped_column(
        String(ROLE_NAME_MAX_LENGTH),
        ForeignKey("roles.name", ondelete="CASCADE"),
        primary_key=True,
    )


class RolePermissionRow(Base):
    """``role`` grants ``permission`` (``resource:action``, or ``resource:*``)."""

    __tablename__ = "role_permissions"

    role: Mapped[str] = mapped_column(
        String(ROLE_NAME_MAX_LENGTH),
        ForeignKey("roles.name", ondelete="CASCADE"),
        primary_key=True,
    )
    permission: Mapped[str] = mapped_column(String(PERMISSION_MAX_LENGTH), primary_key=True)


class UserRoleRow(Base):
    """A role assigned directly to a user (its parents follow by closure)."""

    __tablename__ = "user_roles"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(
        String(ROLE_NAME_MAX_LENGTH),
        ForeignKey("roles.name", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    )


class AuditEventRow(Base):
    """One audit event (see :class:`~bastion.stores.protocols.AuditEvent`).
    Paged newest first by ``(at, id)``, which the composite index serves."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at_id", "at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(AUDIT_ACTION_MAX_LENGTH), index=True)
    actor: Mapped[str | None] = mapped_column(String(AUDIT_PARTY_MAX_LENGTH), index=True)
    target: Mapped[str | None] = mapped_column(String(AUDIT_PARTY_MAX_LENGTH), index=True)
    request_id: Mapped[str | None] = mapped_column(String(REQUEST_ID_MAX_LENGTH))
    # none_as_null: a missing before/after is SQL NULL, not the JSON value null.
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


# ------------------------------------------------------------------ API keys

API_KEY_ID_LENGTH = 16
"""Hex characters of an API key's public id (64 random bits)."""
API_KEY_NAME_MAX_LENGTH = 100


class ApiKeyRow(Base):
    """An API key (see :class:`~bastion.stores.protocols.ApiKeyRecord`): the
    SHA-256 of its secret, never the secret. ``permissions`` is a sorted JSON
    list: it is only ever read whole, with its key."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(API_KEY_ID_LENGTH), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(API_KEY_NAME_MAX_LENGTH))
    permissions: Mapped[list[str]] = mapped_column(JSON)
    secret_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# ------------------------------------------------------------------ OAuth clients

OAUTH_CLIENT_ID_MAX_LENGTH = 64
CLIENT_NAME_MAX_LENGTH = 200


class OAuthClientRow(Base):
    """An OAuth client (see :class:`~bastion.stores.protocols.OAuthClient`).
    Grant types, scopes and redirect URIs are short lists read whole with the
    client, so they are JSON arrays rather than tables. Migration 0004 seeds
    the built-in public client ``bastion``."""

    __tablename__ = "oauth_clients"

    client_id: Mapped[str] = mapped_column(String(OAUTH_CLIENT_ID_MAX_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(CLIENT_NAME_MAX_LENGTH))
    secret_hash: Mapped[str | None] = mapped_column(String(TOKEN_HASH_LENGTH))
    grant_types: Mapped[list[str]] = mapped_column(JSON)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# ------------------------------------------------------------------ browser sessions


PUBLIC_ID_MAX_LENGTH = 32
"""A browser session's public id: 16 random bytes in base64url (22 characters)."""


class BrowserSessionRow(Base):
    """One signed-in browser (see :class:`~bastion.stores.protocols.BrowserSession`),
    by the SHA-256 of its cookie value; gone with its user."""

    __tablename__ = "browser_sessions"

    id_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LENGTH), primary_key=True)
    public_id: Mapped[str] = mapped_column(String(PUBLIC_ID_MAX_LENGTH))
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    idle_expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ip_address: Mapped[str | None] = mapped_column(String(IP_ADDRESS_MAX_LENGTH))
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_MAX_LENGTH))
