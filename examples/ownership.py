"""Object-level authorization (OWASP API1:2023) in a resource server.

Every route below is behind the router-level role ``user``; on top of that:

- ``GET /invoices/{id}``: the invoice's owner, or anyone holding
  ``invoices:admin``; everyone else gets the same 404 as for an invoice that
  does not exist, so ids cannot be probed;
- ``PUT /invoices/{id}``: needs ``invoices:write`` *and* ownership. An
  ``invoices:admin`` holder may see the invoice, so for them a refusal is an
  honest 403; a stranger still gets the 404.

The invoices live in a dict to keep the example short. In tests, build the
guard from :class:`bastion.testing.TokenFactory`::

    factory = TokenFactory()
    app = create_app(BearerGuard(factory.verifier()))
    token = factory.mint("alice", roles=["user"], scopes=["invoices:read"])

Against a running Bastion, build it as in ``examples/resource_server.py``.
"""

# No `from __future__ import annotations`: FastAPI resolves the route
# signatures at runtime, and they refer to the local `guard`.
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Security
from pydantic import BaseModel, Field

from bastion import AuthorizationError, install_error_handlers
from bastion.authz import ensure_owner_or_permission, is_owner
from bastion.guard import BearerGuard, Principal


class Invoice(BaseModel):
    id: str
    owner: str
    amount_cents: int


class InvoiceUpdate(BaseModel):
    amount_cents: int = Field(ge=0)


def create_app(guard: BearerGuard) -> FastAPI:
    """The invoice service, guarded by ``guard``."""
    invoices: dict[str, Invoice] = {
        "inv-1": Invoice(id="inv-1", owner="alice", amount_cents=1200),
        "inv-2": Invoice(id="inv-2", owner="bob", amount_cents=800),
    }

    app = FastAPI(title="Invoices")
    install_error_handlers(app)  # NotFound → 404, AuthorizationError → 403, as problem details
    router = APIRouter(prefix="/invoices", dependencies=[Depends(guard.require_roles("user"))])

    @router.get("/{invoice_id}")
    async def read_invoice(
        invoice_id: str,
        principal: Annotated[Principal, Security(guard)],
    ) -> Invoice:
        invoice = invoices.get(invoice_id)
        ensure_owner_or_permission(principal, invoice.owner if invoice else None, "invoices:admin")
        assert invoice is not None  # ensure_owner_or_permission raised otherwise
        return invoice

    @router.put("/{invoice_id}")
    async def update_invoice(
        invoice_id: str,
        change: InvoiceUpdate,
        principal: Annotated[Principal, Depends(guard.require_permissions("invoices:write"))],
    ) -> Invoice:
        invoice = invoices.get(invoice_id)
        # First: may this caller know the invoice exists? (404 if not.)
        ensure_owner_or_permission(principal, invoice.owner if invoice else None, "invoices:admin")
        assert invoice is not None
        # Then: only its owner may change it.
        if not is_owner(principal, invoice.owner):
            raise AuthorizationError("Only the owner may change an invoice.")
        updated = invoice.model_copy(update={"amount_cents": change.amount_cents})
        invoices[invoice_id] = updated
        return updated

    app.include_router(router)
    return app
