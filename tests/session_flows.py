"""Helpers for the browser-session tests: log in through ``POST /auth/session``
and send the cookie by hand.

By hand because the cookie is ``Secure`` and the test server is
``http://testserver``: httpx's cookie jar (like a browser on a non-local
origin) would not send it back over plain http. Every cookie value and CSRF
token made here is registered with the secrets-in-logs check.
"""

# No `from __future__ import annotations`: the probe routes' signatures refer
# to local guards, which FastAPI must resolve at runtime.
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Form, Request, Security
from pydantic import BaseModel

from bastion.core import Bastion
from bastion.guard import Principal
from bastion.server.app import create_app
from tests.conftest import ISSUER
from tests.secrets_in_logs import register

COOKIE = "__Host-bastion_session"
SAME_ORIGIN = {"Origin": ISSUER}


@dataclass(frozen=True)
class SessionLogin:
    cookie: str
    csrf_token: str
    body: dict[str, Any]

    def headers(self, *, csrf: bool = True, origin: str | None = ISSUER) -> dict[str, str]:
        """The cookie, and for unsafe methods the CSRF token and Origin."""
        headers = {"Cookie": f"{COOKIE}={self.cookie}"}
        if csrf:
            headers["X-CSRF-Token"] = self.csrf_token
        if origin is not None:
            headers["Origin"] = origin
        return headers


def cookie_header(value: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}"}


def set_cookies(response: httpx.Response) -> dict[str, dict[str, str]]:
    """Each ``Set-Cookie`` of the answer: name -> attributes (lowercased
    names; the value under ``"value"``)."""
    found: dict[str, dict[str, str]] = {}
    for line in response.headers.get_list("set-cookie"):
        first, *attributes = (part.strip() for part in line.split(";"))
        name, _, value = first.partition("=")
        parsed = {"value": value.strip('"')}
        for attribute in attributes:
            key, _, val = attribute.partition("=")
            parsed[key.lower()] = val
        found[name] = parsed
    return found


async def session_login(
    client: httpx.AsyncClient,
    email: str,
    password: str,
    *,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
) -> SessionLogin:
    """Log in (from the issuer's own origin); fails the test unless it worked."""
    sent = {**SAME_ORIGIN, **(headers or {})}
    if cookie is not None:
        sent.update(cookie_header(cookie))
    response = await client.post(
        "/auth/session", json={"email": email, "password": password}, headers=sent
    )
    assert response.status_code == 200, response.text
    value = set_cookies(response)[COOKIE]["value"]
    body: dict[str, Any] = response.json()
    register(value, body["csrf_token"])
    return SessionLogin(value, body["csrf_token"], body)


PROBE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def probe_router(bastion: Bastion, calls: list[str]) -> APIRouter:
    """Routes guarded by the session guard and by ``any_principal``, as an
    embedding application would write them. Each appends to ``calls`` when
    its body runs, so a test can tell that a refused request changed nothing."""
    router = APIRouter(prefix="/probe")
    session = bastion.session_principal
    anyone = bastion.any_principal

    def described(principal: Principal) -> dict[str, Any]:
        return {
            "auth_method": principal.auth_method,
            "subject": principal.subject,
            "scopes": sorted(principal.scopes),
            "roles": list(principal.roles),
            "client_id": principal.client_id,
            "claims": principal.claims is not None,
            "token_id": principal.token_id,
            "session_id": principal.session_id,
        }

    async def session_plain(
        request: Request, principal: Annotated[Principal, Security(session)]
    ) -> dict[str, Any]:
        calls.append(f"session {request.method}")
        return described(principal)

    async def any_plain(
        request: Request, principal: Annotated[Principal, Security(anyone)]
    ) -> dict[str, Any]:
        calls.append(f"any {request.method}")
        return described(principal)

    for method in ("GET", *PROBE_METHODS):
        for path, endpoint in (("/session", session_plain), ("/any", any_plain)):
            router.add_api_route(
                path,
                endpoint,
                methods=[method],
                operation_id=f"probe{path.replace('/', '_')}_{method.lower()}",
            )

    @router.post("/session/form")
    async def session_form(
        note: Annotated[str, Form()], principal: Annotated[Principal, Security(session)]
    ) -> dict[str, Any]:
        calls.append(f"form {note}")
        return {"note": note, **described(principal)}

    @router.post("/session/json")
    async def session_json(
        body: Note, principal: Annotated[Principal, Security(session)]
    ) -> dict[str, Any]:
        calls.append(f"json {body.note}")
        return {"note": body.note, **described(principal)}

    @router.get("/session/profile")
    async def session_profile(
        principal: Annotated[Principal, Security(session, scopes=["profile"])],
    ) -> dict[str, Any]:
        return described(principal)

    @router.get("/session/admin")
    async def session_admin(
        principal: Annotated[Principal, Security(session, scopes=["users:admin"])],
    ) -> dict[str, Any]:
        return described(principal)

    @router.get("/any/profile")
    async def any_profile(
        principal: Annotated[Principal, Security(anyone, scopes=["profile"])],
    ) -> dict[str, Any]:
        return described(principal)

    @router.get("/any/admin")
    async def any_admin(
        principal: Annotated[Principal, Security(anyone, scopes=["users:admin"])],
    ) -> dict[str, Any]:
        return described(principal)

    @router.get("/any/role-user")
    async def any_role(
        principal: Annotated[Principal, Depends(anyone.require_roles("user"))],
    ) -> dict[str, Any]:
        return described(principal)

    @router.get("/any/role-admin")
    async def any_role_admin(
        principal: Annotated[Principal, Depends(anyone.require_roles("admin"))],
    ) -> dict[str, Any]:
        return described(principal)

    @router.get("/any/permission")
    async def any_permission(
        principal: Annotated[Principal, Depends(anyone.require_permissions("profile", "email"))],
    ) -> dict[str, Any]:
        return described(principal)

    @router.get("/any/optional")
    async def any_optional(
        principal: Annotated[Principal | None, Security(anyone.optional())],
    ) -> dict[str, Any]:
        return described(principal) if principal else {"auth_method": None}

    return router


class Note(BaseModel):
    note: str


@asynccontextmanager
async def probe_client(bastion: Bastion, calls: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    """A client of Bastion's app with :func:`probe_router` mounted."""
    from tests.secrets_in_logs import EVENT_HOOKS

    app = create_app(bastion=bastion)
    app.include_router(probe_router(bastion, calls))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url=ISSUER, event_hooks=EVENT_HOOKS
    ) as http:
        yield http
