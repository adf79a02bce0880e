"""Roles, permissions and scopes as a service: no HTTP, a store and a clock.

Reads compute what a token carries (:meth:`AuthorizationService.effective`,
:meth:`AuthorizationService.grant_scopes`); writes administer the role table
and users' assignments. Every write validates names and permissions, refuses a
cycle in the hierarchy before anything is written (:class:`Conflict` naming the
cycle, ``a → b → a``), and records an audit event with the acting user.

Changes reach callers at their next token: an access token keeps the roles and
scopes it was issued with until it expires (the hierarchy is resolved at issue
time, not per request).

Deleting a role is allowed even if it is seeded or is the last one holding
``roles:admin``: the store drops its grants, its links and its assignments, so
roles that included it lose what it gave them. That only ever takes
privileges away, and the audit event records what the role was.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import anyio

from bastion.audit import AuditLog
from bastion.authz.hierarchy import effective_permissions, expand_roles, find_cycle, format_cycle
from bastion.authz.permissions import narrow, validate_permissions, validate_role_name
from bastion.clock import Clock
from bastion.errors import Conflict, InvalidInput, InvalidScope, NotFound
from bastion.scopes import format_scope, parse_scope
from bastion.stores.protocols import Role, RoleStore

__all__ = ["AuthorizationService", "Effective"]

logger = logging.getLogger("bastion.authz")

MAX_DESCRIPTION_LENGTH = 500


@dataclass(frozen=True, slots=True)
class Effective:
    """What a user may do, resolved through the hierarchy."""

    roles: frozenset[str]
    """The user's direct roles and every role they include."""

    permissions: frozenset[str]
    """The union of the permissions of :attr:`roles`."""


class AuthorizationService:
    """Effective permissions, scope grants and role administration."""

    def __init__(
        self, roles: RoleStore, audit: AuditLog, clock: Clock, *, cache_ttl: float = 0
    ) -> None:
        self._roles = roles
        self._audit = audit
        self._clock = clock
        # The role table is read at every token issue and changes rarely, so it
        # is remembered for ``cache_ttl`` seconds (changes made through this
        # service drop it at once; other instances' changes show within the
        # TTL). 0 reads it every time.
        self._cache_ttl = cache_ttl
        self._cached: tuple[float, dict[str, Role]] | None = None
        # Serialises read-check-write sequences in this process, so two updates
        # that are each acyclic cannot together close a cycle, and two
        # assignments to one user cannot lose each other. Across processes the
        # readers tolerate a cycle (see bastion.authz.hierarchy).
        self._write_lock = anyio.Lock()

    # ------------------------------------------------------------------ reads

    async def roles_by_name(self, *, fresh: bool = False) -> dict[str, Role]:
        """The whole role table, keyed by name; ``fresh`` bypasses the cache
        (every read-check-write sequence does)."""
        now = self._clock.timestamp()
        if not fresh and self._cached is not None and now < self._cached[0]:
            return self._cached[1]
        roles = {role.name: role for role in await self._roles.list_roles()}
        if self._cache_ttl:
            self._cached = (now + self._cache_ttl, roles)
        return roles

    def _forget_roles(self) -> None:
        self._cached = None

    async def get_role(self, name: str) -> Role:
        """The role called ``name``; :class:`NotFound` if there is none."""
        role = await self._roles.get_role(name)
        if role is None:
            raise NotFound(f"No role is called {name!r}.")
        return role

    async def effective(self, user_id: UUID) -> Effective:
        """The user's role closure and effective permissions: one read of the
        role table and one of the user's assignments."""
        roles = await self.roles_by_name()
        direct = await self._roles.user_roles(user_id)
        return _resolve(direct, roles)

    async def grant_scopes(
        self, user_id: UUID, requested: str | None
    ) -> tuple[frozenset[str], frozenset[str]]:
        """The ``roles`` and ``scope`` claims for a token issued to the user.

        RFC 6749 §3.3: nothing requested grants every effective permission; a
        request is narrowed to what the user's permissions grant. Only when
        scopes were requested and none is left is the request refused
        (:class:`InvalidScope`); a malformed scope string is refused too."""
        wanted = parse_scope(requested)
        effective = await self.effective(user_id)
        scopes = narrow(wanted, effective.permissions)
        if wanted and not scopes:
            raise InvalidScope("None of the requested scopes may be granted to this account.")
        return effective.roles, scopes

    # ------------------------------------------------------------------ role writes

    async def create_role(
        self,
        name: str,
        *,
        description: str = "",
        parents: Iterable[str] = (),
        permissions: Iterable[str] = (),
        actor: str | None,
    ) -> Role:
        """Add a role; :class:`Conflict` if the name is taken or a cycle would
        form, :class:`InvalidInput` for a bad name, permission or unknown parent."""
        validate_role_name(name)
        new_parents = _role_names(parents)
        new_permissions = validate_permissions(_not_a_string(permissions, "permissions"))
        _validate_description(description)
        async with self._write_lock:
            roles = await self.roles_by_name(fresh=True)
            if name in roles:
                raise Conflict(f"A role called {name!r} already exists.")
            now = self._clock.now()
            role = Role(
                name=name,
                description=description,
                parents=new_parents,
                permissions=new_permissions,
                created_at=now,
                updated_at=now,
            )
            _check_graph(roles, role)
            created = await self._roles.create_role(role)
            self._forget_roles()
        await self._audit.record("role.created", actor=actor, target=name, after=_snapshot(created))
        return created

    async def update_role(
        self,
        name: str,
        *,
        description: str | None = None,
        parents: Iterable[str] | None = None,
        permissions: Iterable[str] | None = None,
        actor: str | None,
    ) -> Role:
        """Change the given fields of a role (None leaves one as it is);
        :class:`NotFound` if there is no such role, :class:`Conflict` if the new
        parents would close a cycle (nothing is written then)."""
        new_parents = None if parents is None else _role_names(parents)
        new_permissions = (
            None
            if permissions is None
            else validate_permissions(_not_a_string(permissions, "permissions"))
        )
        if description is not None:
            _validate_description(description)
        async with self._write_lock:
            roles = await self.roles_by_name(fresh=True)
            current = roles.get(name)
            if current is None:
                raise NotFound(f"No role is called {name!r}.")
            role = Role(
                name=name,
                description=current.description if description is None else description,
                parents=current.parents if new_parents is None else new_parents,
                permissions=current.permissions if new_permissions is None else new_permissions,
                created_at=current.created_at,
                updated_at=self._clock.now(),
            )
            if new_parents is not None:
                _check_graph(roles, role)
            updated = await self._roles.replace_role(role, expected_updated_at=current.updated_at)
            self._forget_roles()
        await self._audit.record(
            "role.updated",
            actor=actor,
            target=name,
            before=_snapshot(current),
            after=_snapshot(updated),
        )
        return updated

    async def delete_role(self, name: str, *, actor: str | None) -> None:
        """Remove a role with its grants, links and assignments; :class:`NotFound`
        if there is none. Roles that included it no longer inherit through it."""
        async with self._write_lock:
            roles = await self.roles_by_name(fresh=True)
            current = roles.get(name)
            if current is None:
                raise NotFound(f"No role is called {name!r}.")
            included_by = sorted(r.name for r in roles.values() if name in r.parents)
            holders = await self._roles.users_with_role(name)
            await self._roles.delete_role(name)
            self._forget_roles()
        await self._audit.record(
            "role.deleted",
            actor=actor,
            target=name,
            before=_snapshot(current),
            included_by=" ".join(included_by),
            users=len(holders),
        )

    async def affected_users(self, name: str) -> set[UUID]:
        """Users whose permissions depend on role ``name``: its holders and the
        holders of every role that includes it. Read before a change, these are
        the users whose existing tokens the change makes stale."""
        roles = await self.roles_by_name(fresh=True)
        including = [r for r in roles if name in expand_roles([r], roles)]
        users: set[UUID] = set()
        for role in including:
            users.update(await self._roles.users_with_role(role))
        return users

    # ------------------------------------------------------------------ assignments

    async def user_roles(self, user_id: UUID) -> frozenset[str]:
        """The roles assigned to the user directly (no closure)."""
        return await self._roles.user_roles(user_id)

    async def set_user_roles(
        self, user_id: UUID, roles: Iterable[str], *, actor: str | None
    ) -> frozenset[str]:
        """Replace the user's direct roles; :class:`InvalidInput` for an unknown
        role, :class:`NotFound` for an unknown user (from the store). Returns the
        new set; when it equals the old one nothing is written or recorded."""
        wanted = _role_names(roles)
        async with self._write_lock:
            before = await self._roles.user_roles(user_id)
            return await self._replace_user_roles(user_id, before, wanted, actor=actor)

    async def assign(self, user_id: UUID, role: str, *, actor: str | None) -> frozenset[str]:
        """Give the user ``role`` (no change if it already has it)."""
        validate_role_name(role)
        async with self._write_lock:
            before = await self._roles.user_roles(user_id)
            return await self._replace_user_roles(user_id, before, before | {role}, actor=actor)

    async def unassign(self, user_id: UUID, role: str, *, actor: str | None) -> frozenset[str]:
        """Take ``role`` from the user (no change if it does not have it)."""
        async with self._write_lock:
            before = await self._roles.user_roles(user_id)
            return await self._replace_user_roles(user_id, before, before - {role}, actor=actor)

    async def _replace_user_roles(
        self,
        user_id: UUID,
        before: frozenset[str],
        wanted: frozenset[str],
        *,
        actor: str | None,
    ) -> frozenset[str]:
        if before == wanted:
            return before
        unknown = wanted - (await self.roles_by_name(fresh=True)).keys()
        if unknown:
            raise InvalidInput(f"Unknown role: {format_scope(unknown)}.")
        await self._roles.set_user_roles(user_id, wanted)
        await self._audit.record(
            "user.roles_changed",
            actor=actor,
            target=str(user_id),
            before={"roles": sorted(before)},
            after={"roles": sorted(wanted)},
        )
        return wanted


# ---------------------------------------------------------------------- helpers


def _resolve(direct: Iterable[str], roles: Mapping[str, Role]) -> Effective:
    closure = expand_roles(direct, roles)
    return Effective(roles=closure, permissions=effective_permissions(closure, roles))


def _not_a_string(values: Iterable[str], what: str) -> Iterable[str]:
    if isinstance(values, str):  # a lone string would iterate by character
        raise InvalidInput(f"{what.capitalize()} must be a list of names.")
    return values


def _role_names(names: Iterable[str]) -> frozenset[str]:
    return frozenset(validate_role_name(n) for n in _not_a_string(names, "roles"))


def _validate_description(description: str) -> None:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidInput(
            f"A description must be text of at most {MAX_DESCRIPTION_LENGTH} characters."
        )


def _check_graph(roles: Mapping[str, Role], role: Role) -> None:
    """Refuse unknown parents and cycles before anything is written."""
    unknown = role.parents - roles.keys() - {role.name}
    if unknown:
        raise InvalidInput(f"Unknown parent role: {format_scope(unknown)}.")
    cycle = find_cycle(roles, role)
    if cycle is not None:
        logger.info("refused a role change that would form a cycle: %s", format_cycle(cycle))
        raise Conflict(f"Role hierarchy cycle: {format_cycle(cycle)}.")


def _snapshot(role: Role) -> dict[str, Any]:
    return {
        "name": role.name,
        "description": role.description,
        "parents": sorted(role.parents),
        "permissions": sorted(role.permissions),
    }
