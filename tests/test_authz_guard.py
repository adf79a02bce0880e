"""Roles, permissions and ownership at the edge: `guard.require_roles`,
`guard.require_permissions` and `ensure_owner_or_permission` in tiny FastAPI
apps with real tokens from `bastion.testing.TokenFactory`."""

# No `from __future__ import annotations`: FastAPI must evaluate the route
# annotations, which refer to the local `guard`.
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from examples.ownership import create_app as create_example_app
from fastapi import APIRouter, Depends, FastAPI, Security

from bastion import install_error_handlers
from bastion.authz import ensure_owner_or_permission
from bastion.errors import AuthorizationError, InsufficientScope
from bastion.guard import BearerGuard, Principal
from bastion.testing import TokenFactory

pytestmark = pytest.mark.anyio

FACTORY = TokenFactory(issuer="https://auth.example.test")

USER_SCOPES = ["profile", "email"]
EDITOR_SCOPES = [*USER_SCOPES, "content:read", "content:write"]
ADMIN_SCOPES = [*EDITOR_SCOPES, "users:admin", "docs:admin"]

CALLERS: dict[str, dict[str, Any]] = {
    "user": {"subject": "u-user", "roles": ["user"], "scopes": USER_SCOPES},
    "editor": {"subject": "u-editor", "roles": ["editor", "user"], "scopes": EDITOR_SCOPES},
    "admin": {"subject": "u-admin", "roles": ["admin", "editor", "user"], "scopes": ADMIN_SCOPES},
    "wildcard": {"subject": "u-wild", "roles": ["user"], "scopes": ["content:*"]},
    "no-roles": {"subject": "u-none", "roles": [], "scopes": []},
}

DOCUMENTS = {"doc-1": "u-user", "doc-2": "u-editor"}
"""Document id → owner subject."""


def headers_for(caller: str | None) -> dict[str, str]:
    if caller is None:
        return {}
    if caller == "bad-token":
        return {"Authorization": "Bearer not-a-token"}
    spec = CALLERS[caller]
    token = FACTORY.mint(spec["subject"], roles=spec["roles"], scopes=spec["scopes"])
    return {"Authorization": f"Bearer {token}"}


def make_app(guard: BearerGuard) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/roles/user")
    async def role_user(
        principal: Annotated[Principal, Depends(guard.require_roles("user"))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.get("/roles/editor")
    async def role_editor(
        principal: Annotated[Principal, Depends(guard.require_roles("editor"))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.get("/roles/admin")
    async def role_admin(
        principal: Annotated[Principal, Depends(guard.require_roles("admin"))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.get("/roles/admin-and-user")
    async def role_all(
        principal: Annotated[Principal, Depends(guard.require_roles("user", "admin"))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.get("/permissions/content-write")
    async def content_write(
        principal: Annotated[Principal, Depends(guard.require_permissions("content:write"))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.get("/permissions/content-any")
    async def content_any(
        principal: Annotated[Principal, Depends(guard.require_permissions("content:*"))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.get("/permissions/content-read-and-users")
    async def content_and_users(
        principal: Annotated[
            Principal, Depends(guard.require_permissions("content:read", "users:admin"))
        ],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.get("/scopes/content-write")
    async def scoped(
        principal: Annotated[Principal, Security(guard, scopes=["content:write"])],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.get("/documents/{doc_id}")
    async def document(
        doc_id: str, principal: Annotated[Principal, Security(guard)]
    ) -> dict[str, str]:
        ensure_owner_or_permission(principal, DOCUMENTS.get(doc_id), "docs:admin")
        return {"id": doc_id}

    @app.get("/listed-documents/{doc_id}")
    async def listed_document(
        doc_id: str, principal: Annotated[Principal, Security(guard)]
    ) -> dict[str, str]:
        ensure_owner_or_permission(principal, DOCUMENTS.get(doc_id), "docs:admin", hide=False)
        return {"id": doc_id}

    editors = APIRouter(prefix="/editors", dependencies=[Depends(guard.require_roles("editor"))])

    @editors.get("/ping")
    async def editors_ping() -> dict[str, str]:
        return {"pong": "editors"}

    writers = APIRouter(
        prefix="/writers", dependencies=[Depends(guard.require_permissions("content:write"))]
    )

    @writers.get("/ping")
    async def writers_ping() -> dict[str, str]:
        return {"pong": "writers"}

    app.include_router(editors)
    app.include_router(writers)
    return app


@pytest.fixture
def guard() -> BearerGuard:
    return BearerGuard(FACTORY.verifier())


@pytest.fixture
async def client(guard: BearerGuard) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(guard))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


# ------------------------------------------------------------------ who gets in

ROUTES = [
    "/roles/user",
    "/roles/editor",
    "/roles/admin",
    "/roles/admin-and-user",
    "/permissions/content-write",
    "/permissions/content-any",
    "/permissions/content-read-and-users",
    "/scopes/content-write",
    "/editors/ping",
    "/writers/ping",
]
# One row per caller; one column per route above, in order.
EXPECTED = {
    "user": [200, 403, 403, 403, 403, 403, 403, 403, 403, 403],
    "editor": [200, 200, 403, 403, 200, 403, 403, 200, 200, 200],
    "admin": [200, 200, 200, 200, 200, 403, 200, 200, 200, 200],
    # content:* grants content:write through require_permissions, but exact
    # Security(scopes=...) matching does not expand wildcards.
    "wildcard": [200, 403, 403, 403, 200, 200, 403, 403, 403, 200],
    "no-roles": [403, 403, 403, 403, 403, 403, 403, 403, 403, 403],
    None: [401] * len(ROUTES),
    "bad-token": [401] * len(ROUTES),
}
TABLE = [
    pytest.param(caller, route, status, id=f"{caller or 'anonymous'}-{route.strip('/')}")
    for caller, statuses in EXPECTED.items()
    for route, status in zip(ROUTES, statuses, strict=True)
]


@pytest.mark.parametrize(("caller", "route", "status"), TABLE)
async def test_access_table(
    client: httpx.AsyncClient, caller: str | None, route: str, status: int
) -> None:
    """Each caller and route gets the status the hierarchy and wildcards imply; never 401 if
    authenticated, always 401 if not."""
    response = await client.get(route, headers=headers_for(caller))
    assert response.status_code == status, response.text
    if status == 200 and not route.endswith("/ping"):
        assert response.json() == {"subject": CALLERS[str(caller)]["subject"]}


async def test_missing_role_is_a_plain_403_problem(client: httpx.AsyncClient) -> None:
    """A missing role: 403 problem details, no challenge, no role names in the answer."""
    response = await client.get("/roles/admin", headers=headers_for("editor"))
    assert response.status_code == 403
    assert "www-authenticate" not in response.headers
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
        "detail": AuthorizationError.default_detail,
    }
    assert "admin" not in response.text


async def test_missing_permission_is_insufficient_scope(client: httpx.AsyncClient) -> None:
    """A missing permission: 403 with an RFC 6750 insufficient_scope challenge naming all
    the route needs."""
    response = await client.get(
        "/permissions/content-read-and-users", headers=headers_for("editor")
    )
    assert response.status_code == 403
    detail = InsufficientScope.default_detail
    assert response.headers["www-authenticate"] == (
        f'Bearer error="insufficient_scope", error_description="{detail}", '
        'scope="content:read users:admin"'
    )
    assert response.json()["detail"] == detail


async def test_unauthenticated_gets_a_bearer_challenge(client: httpx.AsyncClient) -> None:
    """No token on a role route: 401 with `WWW-Authenticate: Bearer`, as on any guarded route."""
    response = await client.get("/roles/user")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_optional_guard_still_requires_a_token_for_roles() -> None:
    """`auto_error=False` makes the bare guard optional, not the role and permission checks."""
    optional = BearerGuard(FACTORY.verifier(), auto_error=False)
    app = FastAPI()

    @app.get("/roles")
    async def roles(
        principal: Annotated[Principal, Depends(optional.require_roles("user"))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.get("/permissions")
    async def permissions(
        principal: Annotated[Principal, Depends(optional.require_permissions("profile"))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        for path in ("/roles", "/permissions"):
            response = await http.get(path)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            response = await http.get(path, headers=headers_for("user"))
            assert response.status_code == 200


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        pytest.param("permissions", ("invoices:*:x",), id="permission-three-parts"),
        pytest.param("permissions", ("*",), id="permission-star"),
        pytest.param("permissions", ("invoices read",), id="permission-space"),
        pytest.param("permissions", ("content:read", ""), id="permission-empty-among-good"),
        pytest.param("permissions", (), id="no-permissions"),
        pytest.param("roles", ("Admin",), id="role-upper-case"),
        pytest.param("roles", ("admin editor",), id="role-space"),
        pytest.param("roles", (), id="no-roles"),
    ],
)
def test_typos_fail_when_the_dependency_is_built(
    guard: BearerGuard, kind: str, names: tuple[str, ...]
) -> None:
    """A malformed name is a ValueError at import time, not a route that never admits anyone."""
    build = guard.require_permissions if kind == "permissions" else guard.require_roles
    with pytest.raises(ValueError, match=kind[:-1]):
        build(*names)


# ------------------------------------------------------------------ OpenAPI


async def test_openapi_shows_the_scheme_on_every_guarded_route(client: httpx.AsyncClient) -> None:
    """Routes guarded only by require_roles/require_permissions, directly or through a
    router's dependencies, carry the security requirement; permissions appear as its scopes."""
    document = (await client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"] == {
        "BearerGuard": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    security = {path: item["get"].get("security") for path, item in document["paths"].items()}
    assert security["/roles/editor"] == [{"BearerGuard": []}]
    assert security["/roles/admin-and-user"] == [{"BearerGuard": []}]
    assert security["/editors/ping"] == [{"BearerGuard": []}]
    assert security["/permissions/content-write"] == [{"BearerGuard": ["content:write"]}]
    assert security["/permissions/content-read-and-users"] == [
        {"BearerGuard": ["content:read", "users:admin"]}
    ]
    assert security["/writers/ping"] == [{"BearerGuard": ["content:write"]}]
    assert security["/scopes/content-write"] == [{"BearerGuard": ["content:write"]}]


def test_openapi_lists_permissions_as_oauth_scopes() -> None:
    """With an OAuth2 password flow, required permissions are the operation's scopes."""
    guard = BearerGuard(FACTORY.verifier(), token_url="/oauth/token", scopes={"a:b": "A b"})
    app = FastAPI()

    @app.get("/thing")
    async def thing(
        principal: Annotated[Principal, Depends(guard.require_permissions("a:b"))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    document = app.openapi()
    assert document["paths"]["/thing"]["get"]["security"] == [{"BearerGuard": ["a:b"]}]
    scheme = document["components"]["securitySchemes"]["BearerGuard"]
    assert scheme["type"] == "oauth2"
    assert scheme["flows"]["password"]["scopes"] == {"a:b": "A b"}


# ------------------------------------------------------------------ ownership (BOLA)

OWNERSHIP = [
    pytest.param("user", "doc-1", 200, 200, id="owner"),
    pytest.param("editor", "doc-1", 404, 403, id="stranger"),
    pytest.param("wildcard", "doc-1", 404, 403, id="stranger-with-other-permissions"),
    pytest.param("admin", "doc-1", 200, 200, id="permission-holder"),
    pytest.param("user", "missing", 404, 404, id="missing-for-a-user"),
    pytest.param("admin", "missing", 404, 404, id="missing-for-the-permission-holder"),
    pytest.param(None, "doc-1", 401, 401, id="anonymous"),
]


@pytest.mark.parametrize(("caller", "doc_id", "hidden", "visible"), OWNERSHIP)
async def test_owner_or_permission(
    client: httpx.AsyncClient, caller: str | None, doc_id: str, hidden: int, visible: int
) -> None:
    """OWASP API1:2023: the owner or a permission holder passes; a stranger sees 404 like for
    a missing object (403 with hide=False); a missing object is 404 for everyone."""
    response = await client.get(f"/documents/{doc_id}", headers=headers_for(caller))
    assert response.status_code == hidden
    response = await client.get(f"/listed-documents/{doc_id}", headers=headers_for(caller))
    assert response.status_code == visible


async def test_hidden_object_answers_exactly_like_a_missing_one(client: httpx.AsyncClient) -> None:
    """A stranger cannot tell someone else's object from no object: same status, same body."""
    foreign = await client.get("/documents/doc-1", headers=headers_for("editor"))
    missing = await client.get("/documents/nope", headers=headers_for("editor"))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    assert foreign.headers["content-type"] == missing.headers["content-type"]


# ------------------------------------------------------------------ examples/ownership.py


@pytest.fixture
async def example(guard: BearerGuard) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_example_app(guard))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def invoice_token(subject: str, roles: list[str], scopes: list[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {FACTORY.mint(subject, roles=roles, scopes=scopes)}"}


ALICE = invoice_token("alice", ["user"], ["invoices:read", "invoices:write"])
BOB = invoice_token("bob", ["user"], ["invoices:read", "invoices:write"])
AUDITOR = invoice_token("carol", ["user"], ["invoices:admin", "invoices:write"])
ALICE_READ_ONLY = invoice_token("alice", ["user"], ["invoices:read"])
NO_ROLE = invoice_token("alice", [], ["invoices:read", "invoices:write"])


@pytest.mark.parametrize(
    ("headers", "method", "path", "status"),
    [
        pytest.param(ALICE, "GET", "/invoices/inv-1", 200, id="owner-reads"),
        pytest.param(BOB, "GET", "/invoices/inv-1", 404, id="stranger-reads-404"),
        pytest.param(AUDITOR, "GET", "/invoices/inv-1", 200, id="admin-permission-reads"),
        pytest.param(ALICE, "GET", "/invoices/nope", 404, id="missing"),
        pytest.param(NO_ROLE, "GET", "/invoices/inv-1", 403, id="router-role-required"),
        pytest.param({}, "GET", "/invoices/inv-1", 401, id="anonymous"),
        pytest.param(ALICE, "PUT", "/invoices/inv-1", 200, id="owner-writes"),
        pytest.param(BOB, "PUT", "/invoices/inv-1", 404, id="stranger-writes-404"),
        pytest.param(ALICE_READ_ONLY, "PUT", "/invoices/inv-1", 403, id="owner-needs-write"),
        pytest.param(AUDITOR, "PUT", "/invoices/inv-1", 403, id="admin-may-read-not-write"),
        pytest.param(ALICE, "PUT", "/invoices/nope", 404, id="write-missing"),
    ],
)
async def test_ownership_example(
    example: httpx.AsyncClient, headers: dict[str, str], method: str, path: str, status: int
) -> None:
    """The example app: read as owner or `invoices:admin`, write as owner with
    `invoices:write`, and the router-level role applies to every route."""
    body = {"amount_cents": 500} if method == "PUT" else None
    response = await example.request(method, path, headers=headers, json=body)
    assert response.status_code == status, response.text
