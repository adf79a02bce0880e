"""The role hierarchy as a graph: closures and cycle checks.

Roles are rows (:class:`~bastion.stores.protocols.Role`); a role's ``parents``
are the roles it *includes*. With the seeded set ``admin → editor → user``, an
admin holds the roles ``{admin, editor, user}`` and the union of their
permissions. The closure is computed once per token issue, from one read of the
whole (small) role table, never per request: the token's ``roles`` claim
carries it, so a resource server checks ``editor`` with a tuple lookup.

Everything here is iterative, so a long chain cannot hit Python's recursion
limit, and tolerant: an unknown name (a role deleted since it was assigned) is
skipped, and a cycle that got into the data anyway (written by hand, or by two
concurrent updates on different instances) ends the walk instead of looping.
The writer refuses cycles (:func:`find_cycle`); the readers survive them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from bastion.stores.protocols import Role

__all__ = ["effective_permissions", "expand_roles", "find_cycle", "format_cycle"]


def expand_roles(direct: Iterable[str], roles: Mapping[str, Role]) -> frozenset[str]:
    """``direct`` roles plus every role they include, transitively.

    Names missing from ``roles`` are left out, including direct ones: a role
    that does not exist grants nothing and must not appear in a token."""
    seen: set[str] = set()
    stack = [name for name in direct if name in roles]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(parent for parent in roles[name].parents if parent in roles)
    return frozenset(seen)


def effective_permissions(direct_roles: Iterable[str], roles: Mapping[str, Role]) -> frozenset[str]:
    """The union of the permissions of every role in the closure of ``direct_roles``."""
    permissions: set[str] = set()
    for name in expand_roles(direct_roles, roles):
        permissions.update(roles[name].permissions)
    return frozenset(permissions)


def find_cycle(roles: Mapping[str, Role], changed: Role) -> list[str] | None:
    """Whether writing ``changed`` (new or replacing the role of that name) would
    make the inclusion graph cyclic; the shortest cycle if so, as a path that
    starts and ends with ``changed.name`` (``["a", "b", "a"]``), else None.

    The graph without ``changed`` is taken as acyclic (the invariant every
    write keeps), so a new cycle must pass through ``changed``: a breadth-first
    walk from its parents that comes back to it finds the shortest one.
    Unknown parents are ignored; refusing them is the caller's job."""
    start = changed.name
    came_from: dict[str, str] = {}
    queue: deque[str] = deque()
    for parent in sorted(changed.parents):
        if parent == start:
            return [start, start]
        if parent not in came_from:
            came_from[parent] = start
            queue.append(parent)
    while queue:
        name = queue.popleft()
        role = roles.get(name)
        if role is None:
            continue
        for parent in sorted(role.parents):
            if parent == start:
                path = [start, name]
                while (step := came_from[path[-1]]) != start:
                    path.append(step)
                path.append(start)
                # Built backwards (start, last, ..., first); read it forwards.
                path.reverse()
                return path
            if parent not in came_from:
                came_from[parent] = name
                queue.append(parent)
    return None


def format_cycle(path: Iterable[str]) -> str:
    """``a → b → a``: a cycle path for a message."""
    return " → ".join(path)
