"""Object-level authorization: "the owner, or a holder of permission X".

OWASP API Security Top 10, API1:2023 Broken Object Level Authorization: every
handler that takes an object id from the client must check that *this* caller
may touch *that* object; a valid token and a route-level scope are not enough.
Call :func:`ensure_owner_or_permission` right after loading the object, before
anything about it is used or returned::

    invoice = invoices.get(invoice_id)
    ensure_owner_or_permission(principal, invoice.owner_id if invoice else None,
                               "invoices:admin")

By default a caller who may not see the object gets the same 404 as for an
object that does not exist, so ids cannot be probed for existence. Pass
``hide=False`` where the caller may know the object exists (it is listed to
them, say) and a 403 is the more honest answer.

The helpers raise domain errors (:class:`~bastion.errors.NotFound`,
:class:`~bastion.errors.AuthorizationError`); :func:`bastion.install_error_handlers`
turns them into problem-details responses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from bastion.authz.permissions import allows
from bastion.errors import AuthorizationError, NotFound

if TYPE_CHECKING:  # bastion.guard imports this package; avoid the import cycle
    from bastion.guard import Principal

__all__ = ["ensure_owner_or_permission", "is_owner"]


def is_owner(principal: Principal, owner_id: str | UUID | None) -> bool:
    """Whether the caller's subject is ``owner_id`` (compared as strings; an
    empty or missing owner matches nobody)."""
    if owner_id is None:
        return False
    owner = str(owner_id)
    return bool(owner) and principal.subject == owner


def ensure_owner_or_permission(
    principal: Principal,
    owner_id: str | UUID | None,
    permission: str,
    *,
    hide: bool = True,
) -> None:
    """Pass if the caller owns the object or holds ``permission`` (``resource:*``
    wildcards count); raise otherwise (OWASP API1:2023).

    ``owner_id`` is None when the object does not exist: :class:`NotFound` for
    everyone, permission or not. A caller who is neither owner nor holder gets
    :class:`NotFound` too when ``hide`` (the default), so a stranger cannot tell
    a foreign object from a missing one, and :class:`AuthorizationError` (403)
    when not."""
    if owner_id is None:
        raise NotFound()
    if is_owner(principal, owner_id) or allows(principal.scopes, permission):
        return
    if hide:
        raise NotFound()
    raise AuthorizationError()
