"""``/me/api-keys`` and the admin's view of them: create, list, revoke, rotate.

The owner's routes authenticate with a bearer token (an API key cannot mint
or rotate keys: a leaked key must not be able to outlive its revocation).
Another user's key id answers 404 exactly like an unknown one (OWASP API1,
BOLA). The key itself appears once, in the 201 answer of a creation or a
rotation, which is never cached (``Cache-Control: no-store``); lists show its
public ``prefix`` only. The logic lives in :class:`bastion.api_keys.ApiKeyService`,
which the account page calls too; this module only maps HTTP onto it.
"""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures at runtime, and they refer to the local `bastion`.
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from bastion.api_keys import MAX_PERMISSIONS, IssuedApiKey, prefix_of
from bastion.authz.permissions import MAX_PERMISSION_LENGTH, allows, validate_permission
from bastion.errors import AuthorizationError, NotFound
from bastion.guard import Principal
from bastion.server.errors import NO_STORE
from bastion.server.routes.me import current_user_dependency
from bastion.server.schemas import Problem
from bastion.stores.protocols import ApiKeyRecord, User

if TYPE_CHECKING:
    from bastion.core import Bastion

MAX_NAME_INPUT = 200
"""Characters accepted on the wire; the service's own limit (100, after
stripping) answers with a clear reason below this."""

KeyIdInPath = Annotated[str, Path(max_length=64)]
PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem},
    403: {"model": Problem},
    404: {"model": Problem},
    422: {"model": Problem},
}


class ApiKeyCreate(BaseModel):
    """A new key: a name, the permissions it carries (a subset of the
    owner's), and optionally an expiry, as a moment or in days."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_INPUT)]
    permissions: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_PERMISSION_LENGTH)]],
        Field(min_length=1, max_length=MAX_PERMISSIONS),
    ]
    expires_at: AwareDatetime | None = None
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class ApiKeyOut(BaseModel):
    """A key as its owner sees it later: never the secret."""

    id: str
    prefix: str
    name: str
    permissions: list[str]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def of(cls, record: ApiKeyRecord) -> "ApiKeyOut":
        return cls(
            id=record.key_id,
            prefix=prefix_of(record.key_id),
            name=record.name,
            permissions=sorted(record.permissions),
            created_at=record.created_at,
            last_used_at=record.last_used_at,
            expires_at=record.expires_at,
        )


class ApiKeyCreated(ApiKeyOut):
    """A key just created or rotated, with the whole key: shown this once."""

    key: str

    @classmethod
    def issued(cls, issued: IssuedApiKey) -> "ApiKeyCreated":
        return cls(key=issued.key, **ApiKeyOut.of(issued.record).model_dump())


class RevokedApiKeys(BaseModel):
    revoked: int


def _within_credential(principal: Principal, permissions: Iterable[str]) -> None:
    """A key never carries more than the credential that makes it: a token
    narrowed to ``profile`` must not mint (or, by rotating, reveal) a key with
    all of its owner's permissions. The owner's own limit is the service's."""
    checked = [validate_permission(permission) for permission in permissions]  # 422 first
    if not all(allows(principal.scopes, permission) for permission in checked):
        raise AuthorizationError("The key would hold permissions this credential does not carry.")


def build(bastion: "Bastion") -> APIRouter:
    router = APIRouter(tags=["api keys"], responses=PROBLEMS)
    Caller = Annotated[tuple[Principal, User], Depends(current_user_dependency(bastion, []))]
    UsersAdmin = Annotated[
        Principal, Depends(bastion.current_principal.require_permissions("users:admin"))
    ]
    service = bastion.api_keys

    # ------------------------------------------------------------------ the owner

    @router.post(
        "/me/api-keys",
        response_model=ApiKeyCreated,
        status_code=status.HTTP_201_CREATED,
        responses={409: {"model": Problem, "description": "Too many keys"}},
    )
    async def create_api_key(
        body: ApiKeyCreate, caller: Caller, response: Response
    ) -> ApiKeyCreated:
        """Create a key; the answer holds it, once. Its permissions must be
        ones the caller holds now (403 otherwise)."""
        principal, user = caller
        _within_credential(principal, body.permissions)
        issued = await service.create(
            user.id,
            body.name,
            body.permissions,
            body.expires_at,
            expires_in_days=body.expires_in_days,
        )
        response.headers.update(NO_STORE)
        return ApiKeyCreated.issued(issued)

    @router.get("/me/api-keys", response_model=list[ApiKeyOut])
    async def list_api_keys(caller: Caller) -> list[ApiKeyOut]:
        """The caller's keys that are not revoked, newest first, without secrets."""
        _, user = caller
        return [ApiKeyOut.of(record) for record in await service.list(user.id)]

    @router.delete("/me/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
    async def revoke_api_key(key_id: KeyIdInPath, caller: Caller) -> None:
        """Revoke one of the caller's keys; it stops working at once."""
        _, user = caller
        await service.revoke(key_id, owner=user.id)

    @router.post(
        "/me/api-keys/{key_id}/rotate",
        response_model=ApiKeyCreated,
        status_code=status.HTTP_201_CREATED,
        responses={409: {"model": Problem, "description": "The key has expired"}},
    )
    async def rotate_api_key(
        key_id: KeyIdInPath, caller: Caller, response: Response
    ) -> ApiKeyCreated:
        """Replace a key by a new one (new id and secret; same name,
        permissions and expiry); the old one stops working in the same step."""
        principal, user = caller
        _within_credential(principal, (await service.get(key_id, owner=user.id)).permissions)
        issued = await service.rotate(key_id, owner=user.id)
        response.headers.update(NO_STORE)
        return ApiKeyCreated.issued(issued)

    # ------------------------------------------------------------------ administrators

    @router.get("/admin/users/{user_id}/api-keys", response_model=list[ApiKeyOut], tags=["admin"])
    async def list_user_api_keys(user_id: UUID, admin: UsersAdmin) -> list[ApiKeyOut]:
        """A user's keys that are not revoked, newest first, without secrets."""
        if await bastion.users.get(user_id) is None:
            raise NotFound("No such user.")
        return [ApiKeyOut.of(record) for record in await service.list(user_id)]

    @router.delete("/admin/users/{user_id}/api-keys", response_model=RevokedApiKeys, tags=["admin"])
    async def revoke_user_api_keys(user_id: UUID, admin: UsersAdmin) -> RevokedApiKeys:
        """Revoke every key of a user."""
        if await bastion.users.get(user_id) is None:
            raise NotFound("No such user.")
        count = await service.revoke_all_for_user(user_id, actor=admin.subject)
        return RevokedApiKeys(revoked=count)

    @router.delete(
        "/admin/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["admin"]
    )
    async def revoke_any_api_key(key_id: KeyIdInPath, admin: UsersAdmin) -> None:
        """Revoke any user's key."""
        await service.revoke(key_id, owner=None, actor=admin.subject)

    return router
