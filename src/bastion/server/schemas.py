"""Request and response bodies of the HTTP edge.

Requests forbid unknown fields (OWASP API3, mass assignment): a client cannot
slip ``is_active`` or ``email_verified`` into a registration. Responses are
explicit allow-lists, so a password hash can never be serialised by accident.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from bastion.stores.protocols import AuditEvent, RefreshSession, Role, User

MAX_PASSWORD_INPUT = 4096
"""Characters accepted on the wire; the policy's own maximum (128 by default)
answers with a clear reason below this, this only stops absurd payloads."""

Username = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
]


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    email: Annotated[EmailStr, Field(max_length=320)]
    password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_INPUT)]
    username: Username | None = None


class UserOut(BaseModel):
    id: UUID
    email: str
    username: str | None
    is_active: bool
    email_verified: bool
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            username=user.username,
            is_active=user.is_active,
            email_verified=user.email_verified,
            created_at=user.created_at,
        )


class TokenResponse(BaseModel):
    """RFC 6749 §5.1 successful token response."""

    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    scope: str
    refresh_token: str | None = None


class OAuthErrorBody(BaseModel):
    """RFC 6749 §5.2 error response."""

    error: str
    error_description: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


class HealthOut(BaseModel):
    """``GET /health``: the server and each dependency it was configured with.

    ``status`` is ``unavailable`` (and the answer 503) when any configured
    dependency is down; ``redis`` is ``not_configured`` without
    ``BASTION_REDIS_URL``."""

    status: Literal["ok", "unavailable"]
    database: Literal["ok", "down"]
    redis: Literal["ok", "down", "not_configured"]


class PasswordChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_INPUT)]
    new_password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_INPUT)]


class LogoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: Annotated[str, Field(max_length=256)] | None = None


class SessionOut(BaseModel):
    """A refresh family as the user sees it; never the token itself."""

    id: UUID
    client_id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str | None
    ip_address: str | None
    current: bool

    @classmethod
    def of(cls, session: RefreshSession, *, current: bool) -> SessionOut:
        return cls(
            id=session.id,
            client_id=session.client_id,
            created_at=session.created_at,
            last_used_at=session.last_used_at,
            expires_at=session.expires_at,
            user_agent=session.user_agent,
            ip_address=session.ip_address,
            current=current,
        )


class RevokedSessions(BaseModel):
    revoked: int


# ----------------------------------------------------------------- admin API

RoleName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")
]
Permission = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Description = Annotated[str, StringConstraints(max_length=500, pattern=r"^[^\x00]*$")]
"""Free text, but no NUL: PostgreSQL cannot store one in a text column."""


class AdminUserOut(UserOut):
    roles: list[str]
    updated_at: datetime

    @classmethod
    def with_roles(cls, user: User, roles: frozenset[str]) -> AdminUserOut:
        return cls(**UserOut.of(user).model_dump(), roles=sorted(roles), updated_at=user.updated_at)


class AdminUserList(BaseModel):
    items: list[AdminUserOut]
    total: int
    offset: int
    limit: int


class AdminUserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Annotated[EmailStr, Field(max_length=320)]
    password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_INPUT)]
    username: Username | None = None
    roles: Annotated[list[RoleName], Field(max_length=64)] | None = None
    email_verified: bool = False


class AdminUserUpdate(BaseModel):
    """Only these fields; anything else is refused (OWASP API3)."""

    model_config = ConfigDict(extra="forbid")

    roles: Annotated[list[RoleName], Field(max_length=64)] | None = None
    is_active: bool | None = None
    email_verified: bool | None = None
    username: Username | None = None


class RoleOut(BaseModel):
    name: str
    description: str
    parents: list[str]
    permissions: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, role: Role) -> RoleOut:
        return cls(
            name=role.name,
            description=role.description,
            parents=sorted(role.parents),
            permissions=sorted(role.permissions),
            created_at=role.created_at,
            updated_at=role.updated_at,
        )


class RoleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: RoleName
    description: Description = ""
    parents: Annotated[list[RoleName], Field(max_length=64)] = []
    permissions: Annotated[list[Permission], Field(max_length=256)] = []


class RoleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: Description | None = None
    parents: Annotated[list[RoleName], Field(max_length=64)] | None = None
    permissions: Annotated[list[Permission], Field(max_length=256)] | None = None


class AuditEventOut(BaseModel):
    id: UUID
    at: datetime
    action: str
    actor: str | None
    target: str | None
    request_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    details: dict[str, Any]

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            id=event.id,
            at=event.at,
            action=event.action,
            actor=event.actor,
            target=event.target,
            request_id=event.request_id,
            before=event.before,
            after=event.after,
            details=event.details,
        )


class AuditPageOut(BaseModel):
    items: list[AuditEventOut]
    next_cursor: str | None


# ----------------------------------------------------------------- browser sessions


class SessionLoginRequest(BaseModel):
    """``POST /auth/session``, as JSON or as a form with the same fields."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    email: Annotated[str, Field(min_length=1, max_length=320)]
    password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_INPUT)]


class SessionStarted(BaseModel):
    """A browser session has started; the cookie came in ``Set-Cookie``."""

    csrf_token: str
    """Send it back as ``X-CSRF-Token`` (or a ``csrf_token`` form field) with
    every POST, PUT, PATCH and DELETE of this session."""
    expires_at: datetime
    """Absolute end of the session."""
    idle_timeout: int
    """Seconds of inactivity after which the session ends."""


class BrowserSessionOut(BaseModel):
    """The caller's browser session, for single-page apps."""

    session_id: str
    """The public id (never the cookie value)."""
    user_id: UUID
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    idle_expires_at: datetime
    idle_timeout: int
    csrf_token: str
