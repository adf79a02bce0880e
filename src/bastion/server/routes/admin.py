"""``/admin``: users, roles and the audit log, for holders of admin permissions.

Each sub-API is guarded by one permission (``users:admin``, ``roles:admin``,
``sessions:admin``, ``audit:read``), checked from the token's scope; every
write names its actor in the audit log. Request bodies forbid unknown fields
(OWASP API3): the only way to change roles is the ``roles`` field here.

Changing what a user may do (their roles, a role's permissions or parents, a
role's deletion, disabling the user) also expires the affected users' access
tokens in strict mode, so the change holds at once; their sessions survive,
and the next refresh issues tokens with the new roles and without the
permissions taken away. Permissions *added* need a new login: a refresh never
widens the scope granted at login (RFC 6749 §6).
"""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures at runtime, and they refer to the local `bastion`.
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, status

from bastion.errors import InvalidInput, NotFound
from bastion.guard import Principal
from bastion.server.schemas import (
    AdminUserCreate,
    AdminUserList,
    AdminUserOut,
    AdminUserUpdate,
    AuditEventOut,
    AuditPageOut,
    Problem,
    RevokedSessions,
    RoleCreate,
    RoleOut,
    RoleUpdate,
)
from bastion.stores.protocols import User

if TYPE_CHECKING:
    from bastion.core import Bastion

MAX_PAGE = 100
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
"""Filters and names from the URL: no control characters. PostgreSQL refuses
a NUL in text outright (a 500, not an empty answer), and SQLite's LIKE stops
at one, so a NUL would match everything there."""
Filter = Annotated[str | None, Query(max_length=255, pattern=PRINTABLE)]
RoleNameInPath = Annotated[str, Path(max_length=64, pattern=PRINTABLE)]
PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem},
    403: {"model": Problem},
    404: {"model": Problem},
    409: {"model": Problem},
    422: {"model": Problem},
}


def _user_snapshot(user: User, roles: frozenset[str]) -> dict[str, Any]:
    return {
        "email": user.email,
        "username": user.username,
        "is_active": user.is_active,
        "email_verified": user.email_verified,
        "roles": sorted(roles),
    }


def build(bastion: "Bastion") -> APIRouter:
    guard = bastion.current_principal
    UsersAdmin = Annotated[Principal, Depends(guard.require_permissions("users:admin"))]
    RolesAdmin = Annotated[Principal, Depends(guard.require_permissions("roles:admin"))]
    SessionsAdmin = Annotated[Principal, Depends(guard.require_permissions("sessions:admin"))]
    AuditReader = Annotated[Principal, Depends(guard.require_permissions("audit:read"))]
    router = APIRouter(prefix="/admin", tags=["admin"], responses=PROBLEMS)

    async def load(user_id: UUID) -> tuple[User, frozenset[str]]:
        user = await bastion.users.get(user_id)
        if user is None:
            raise NotFound("No such user.")
        return user, await bastion.authz.user_roles(user_id)

    # ------------------------------------------------------------------ users

    @router.get("/users", response_model=AdminUserList)
    async def list_users(
        admin: UsersAdmin,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        email: Annotated[str | None, Query(max_length=320, pattern=PRINTABLE)] = None,
        role: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE)] = None,
        active: bool | None = None,
    ) -> AdminUserList:
        """Users oldest first, filtered by email substring, direct role and state."""
        page = await bastion.users.list_users(
            offset=offset, limit=limit, email_contains=email, role=role, is_active=active
        )
        items = [
            AdminUserOut.with_roles(user, await bastion.authz.user_roles(user.id))
            for user in page.users
        ]
        return AdminUserList(items=items, total=page.total, offset=offset, limit=limit)

    @router.post("/users", response_model=AdminUserOut, status_code=status.HTTP_201_CREATED)
    async def create_user(body: AdminUserCreate, admin: UsersAdmin) -> AdminUserOut:
        """Create an account with the given roles (the default roles if none)."""
        roles = bastion.settings.default_roles if body.roles is None else body.roles
        user = await bastion.accounts.register(
            email=str(body.email),
            password=body.password,
            username=body.username,
            roles=frozenset(roles),
            email_verified=body.email_verified,
        )
        assigned = await bastion.authz.user_roles(user.id)
        await bastion.audit.record(
            "user.created",
            actor=admin.subject,
            target=str(user.id),
            after=_user_snapshot(user, assigned),
        )
        return AdminUserOut.with_roles(user, assigned)

    @router.get("/users/{user_id}", response_model=AdminUserOut)
    async def read_user(user_id: UUID, admin: UsersAdmin) -> AdminUserOut:
        user, roles = await load(user_id)
        return AdminUserOut.with_roles(user, roles)

    @router.patch("/users/{user_id}", response_model=AdminUserOut)
    async def update_user(user_id: UUID, body: AdminUserUpdate, admin: UsersAdmin) -> AdminUserOut:
        """Change roles, state or username. Taking a permission away (roles, or
        disabling) takes effect at once for tokens checked strictly."""
        before, roles_before = await load(user_id)
        if body.roles is not None:
            # Refuse unknown roles before writing anything, and write the
            # fields that can conflict (username) before the roles: a refused
            # update must leave the roles as they were, not half applied.
            unknown = set(body.roles) - (await bastion.authz.roles_by_name()).keys()
            if unknown:
                raise InvalidInput(f"Unknown role: {' '.join(sorted(unknown))}.")
        user = await bastion.users.update_user(
            user_id,
            now=bastion.clock.now(),
            is_active=body.is_active,
            email_verified=body.email_verified,
            username=body.username,
        )
        roles = roles_before
        if body.roles is not None:
            roles = await bastion.authz.set_user_roles(user_id, body.roles, actor=admin.subject)
        if before.is_active and not user.is_active:
            await bastion.revocations.revoke_everything(
                user_id, reason="user_disabled", actor=admin.subject
            )
        elif roles != roles_before:
            await bastion.revocations.expire_access_tokens([user_id])
        if (before, roles_before) != (user, roles):
            await bastion.audit.record(
                "user.updated",
                actor=admin.subject,
                target=str(user_id),
                before=_user_snapshot(before, roles_before),
                after=_user_snapshot(user, roles),
            )
        return AdminUserOut.with_roles(user, roles)

    @router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
    async def delete_user(user_id: UUID, admin: UsersAdmin) -> None:
        """Delete the account with its sessions; its access tokens stop working."""
        before, roles = await load(user_id)
        await bastion.users.delete_user(user_id)
        await bastion.revocations.expire_access_tokens([user_id])
        await bastion.audit.record(
            "user.deleted",
            actor=admin.subject,
            target=str(user_id),
            before=_user_snapshot(before, roles),
        )

    @router.post("/users/{user_id}/unlock", status_code=status.HTTP_204_NO_CONTENT)
    async def unlock_user(user_id: UUID, admin: UsersAdmin) -> None:
        """Lift the user's failed-login lockout: the account lock and the
        failure counters of every address (audit event ``account.unlocked``)."""
        user, _ = await load(user_id)
        await bastion.lockout.unlock(user.email, actor=admin.subject, subject=str(user_id))

    @router.post("/users/{user_id}/sessions/revoke", response_model=RevokedSessions)
    async def revoke_user_sessions(user_id: UUID, admin: SessionsAdmin) -> RevokedSessions:
        """End every session of the user and every access token issued until now."""
        await load(user_id)
        count = await bastion.revocations.revoke_everything(
            user_id, reason="admin_request", actor=admin.subject
        )
        return RevokedSessions(revoked=count)

    # ------------------------------------------------------------------ roles

    @router.get("/roles", response_model=list[RoleOut])
    async def list_roles(admin: RolesAdmin) -> list[RoleOut]:
        roles = await bastion.authz.roles_by_name()
        return [RoleOut.of(roles[name]) for name in sorted(roles)]

    @router.post("/roles", response_model=RoleOut, status_code=status.HTTP_201_CREATED)
    async def create_role(body: RoleCreate, admin: RolesAdmin) -> RoleOut:
        """Create a role; a parent that would close a cycle is refused (409)."""
        role = await bastion.authz.create_role(
            body.name,
            description=body.description,
            parents=body.parents,
            permissions=body.permissions,
            actor=admin.subject,
        )
        return RoleOut.of(role)

    @router.get("/roles/{name}", response_model=RoleOut)
    async def read_role(name: RoleNameInPath, admin: RolesAdmin) -> RoleOut:
        return RoleOut.of(await bastion.authz.get_role(name))

    @router.patch("/roles/{name}", response_model=RoleOut)
    async def update_role(name: RoleNameInPath, body: RoleUpdate, admin: RolesAdmin) -> RoleOut:
        """Change a role's description, parents or permissions. Holders of the
        role, or of any role including it, get their tokens expired."""
        affected = await bastion.authz.affected_users(name)
        role = await bastion.authz.update_role(
            name,
            description=body.description,
            parents=body.parents,
            permissions=body.permissions,
            actor=admin.subject,
        )
        if body.parents is not None or body.permissions is not None:
            await bastion.revocations.expire_access_tokens(affected)
        return RoleOut.of(role)

    @router.delete("/roles/{name}", status_code=status.HTTP_204_NO_CONTENT)
    async def delete_role(name: RoleNameInPath, admin: RolesAdmin) -> None:
        affected = await bastion.authz.affected_users(name)
        await bastion.authz.delete_role(name, actor=admin.subject)
        await bastion.revocations.expire_access_tokens(affected)

    # ------------------------------------------------------------------ audit

    @router.get("/audit", response_model=AuditPageOut)
    async def audit(
        reader: AuditReader,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        action: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE)] = None,
        actor: Filter = None,
        target: Filter = None,
    ) -> AuditPageOut:
        """Audit events, newest first; pass ``next_cursor`` back for the next page."""
        page = await bastion.audit.page(
            limit=limit, cursor=cursor, action=action, actor=actor, target=target
        )
        return AuditPageOut(
            items=[AuditEventOut.of(e) for e in page.events], next_cursor=page.next_cursor
        )

    return router
