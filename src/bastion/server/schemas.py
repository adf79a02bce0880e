"""Request and response bodies of the HTTP edge.

Requests forbid unknown fields (OWASP API3, mass assignment): a client cannot
slip ``is_active`` or ``email_verified`` into a registration. Responses are
explicit allow-lists, so a password hash can never be serialised by accident.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from bastion.stores.protocols import User

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
    status: str
    database: str
