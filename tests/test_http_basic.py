"""HTTP Basic for internal callers (``bastion.basic_principal``, RFC 7617):
off by default, strict parsing, client secrets in constant time, scopes and
permissions, rate limits, OpenAPI, and no secret in any log line."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Security

from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.guard import Principal
from bastion.server.errors import install_error_handlers
from bastion.settings import Settings
from tests.client_flows import Registered, basic, new_client, raw_basic
from tests.conftest import ISSUER
from tests.http_checks import assert_problem
from tests.limit_flows import WallClock, install_wall_clock
from tests.token_flows import audit_events, running

pytestmark = pytest.mark.anyio

CHALLENGE = 'Basic realm="bastion", charset="UTF-8"'
Start = Callable[..., AbstractAsyncContextManager[Bastion]]


def embedding_app(bastion: Bastion) -> FastAPI:
    """A small app of an embedding user, guarding routes with the Basic guard."""
    app = FastAPI()
    install_error_handlers(app)
    guard = bastion.basic_principal

    @app.get("/internal/whoami")
    async def whoami(p: Principal = Security(guard)) -> dict[str, Any]:  # noqa: B008
        return {
            "subject": p.subject,
            "client_id": p.client_id,
            "scopes": sorted(p.scopes),
            "roles": list(p.roles),
            "auth_method": p.auth_method,
            "claims": p.claims,
            "token_id": p.token_id,
        }

    @app.get("/internal/content")
    async def content(p: Principal = Security(guard, scopes=["content:read"])) -> None:  # noqa: B008
        return None

    @app.get("/internal/write")
    async def write(p: Principal = Security(guard, scopes=["content:write"])) -> None:  # noqa: B008
        return None

    @app.get("/internal/reports", dependencies=[Depends(guard.require_permissions("reports:read"))])
    async def reports() -> None:
        return None

    @app.get("/internal/admin", dependencies=[Depends(guard.require_roles("admin"))])
    async def admin() -> None:
        return None

    return app


@asynccontextmanager
async def http_for(bastion: Bastion, ip: str = "203.0.113.9") -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=embedding_app(bastion), client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
        yield http


@pytest.fixture
def start(make_settings: Callable[..., Settings], clock: FrozenClock) -> Start:
    """A started Bastion with HTTP Basic on, rate limits off unless overridden."""

    @asynccontextmanager
    async def start(**overrides: object) -> AsyncIterator[Bastion]:
        settings = make_settings(**{"http_basic_enabled": True, **overrides})
        async with running(settings, clock) as instance:
            yield instance

    return start


@pytest.fixture
async def enabled(start: Start) -> AsyncIterator[Bastion]:
    async with start() as instance:
        yield instance


@pytest.fixture
async def service(enabled: Bastion) -> Registered:
    return await new_client(enabled, scopes=["content:read", "reports:*"])


@pytest.fixture
def wall_clock(monkeypatch: pytest.MonkeyPatch) -> WallClock:
    return install_wall_clock(monkeypatch)


def assert_challenge(response: httpx.Response, *secrets: str) -> None:
    """401 problem details with the RFC 7617 challenge."""
    assert_problem(response, 401, *secrets)
    assert response.headers["www-authenticate"] == CHALLENGE


# ------------------------------------------------------------------ off by default


async def test_off_by_default_answers_401_as_if_nothing_came(
    bastion: Bastion, caplog: pytest.LogCaptureFixture
) -> None:
    """With BASTION_HTTP_BASIC_ENABLED unset, even right credentials get the
    401 challenge, and the debug log says the guard is off."""
    assert bastion.settings.http_basic_enabled is False
    caplog.set_level(logging.DEBUG, logger="bastion.credentials.basic")
    service = await new_client(bastion)
    async with http_for(bastion) as http:
        response = await http.get(
            "/internal/whoami", headers=basic(service.client_id, service.secret)
        )
    assert_challenge(response, service.secret)
    assert any("BASTION_HTTP_BASIC_ENABLED=false" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ success


async def test_right_credentials_give_a_basic_principal(
    enabled: Bastion, service: Registered
) -> None:
    """The principal is the client: subject and client_id its id, its allowed
    scopes, no roles, no claims, ``auth_method="basic"``."""
    async with http_for(enabled) as http:
        response = await http.get(
            "/internal/whoami", headers=basic(service.client_id, service.secret)
        )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "subject": service.client_id,
        "client_id": service.client_id,
        "scopes": ["content:read", "reports:*"],
        "roles": [],
        "auth_method": "basic",
        "claims": None,
        "token_id": None,
    }


async def test_a_client_not_registered_for_client_credentials_is_refused(
    enabled: Bastion,
) -> None:
    """Basic stands in for a client-credentials token: a login app (password
    grant only) is 401 with the right secret."""
    app = await new_client(enabled, grants=["password"], scopes=["content:read"])
    async with http_for(enabled) as http:
        response = await http.get("/internal/whoami", headers=basic(app.client_id, app.secret))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/internal/content", 200, id="scope-held"),
        pytest.param("/internal/write", 403, id="scope-missing"),
        pytest.param("/internal/reports", 200, id="permission-through-wildcard"),
        pytest.param("/internal/admin", 403, id="role-clients-never-hold"),
    ],
)
async def test_scopes_permissions_and_roles(
    enabled: Bastion, service: Registered, path: str, status: int
) -> None:
    """``Security(guard, scopes=...)`` is exact, ``require_permissions`` honours
    wildcards, and a client holds no role."""
    async with http_for(enabled) as http:
        response = await http.get(path, headers=basic(service.client_id, service.secret))
    assert response.status_code == status, response.text
    if status == 403:
        assert_problem(response, 403, service.secret)


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Bearer abc.def.ghi"}, id="bearer-scheme"),
        pytest.param({"Authorization": "Basic"}, id="scheme-only"),
        pytest.param({"Authorization": "Basic !!!"}, id="bad-base64"),
        pytest.param({"Authorization": "Basic c3Zj"}, id="bad-padding"),
        pytest.param({"Authorization": "Basic " + "QUFB" * 400}, id="over-long"),
        pytest.param(raw_basic(b"no-colon"), id="no-colon"),
        pytest.param(raw_basic(b":secret-only"), id="empty-id"),
        pytest.param(raw_basic(b"svc:\xc3\x28"), id="non-utf8"),
        pytest.param(raw_basic(b"svc\x01:x"), id="control-character"),
        pytest.param(raw_basic(b"bcl_0000000000000000:whatever"), id="unknown-client"),
        pytest.param(raw_basic(b"bastion:"), id="public-client-empty-secret"),
        pytest.param("wrong-secret", id="wrong-secret"),
        pytest.param("secret-of-another", id="secret-of-another-client"),
    ],
)
async def test_every_refusal_is_401_with_the_basic_challenge(
    enabled: Bastion, service: Registered, headers: dict[str, str] | str
) -> None:
    """RFC 7617: missing, malformed or wrong credentials are 401 problem
    details with ``WWW-Authenticate: Basic realm="bastion", charset="UTF-8"``."""
    if headers == "wrong-secret":
        headers = basic(service.client_id, service.secret[:-2] + "zz")
    elif headers == "secret-of-another":
        other = await new_client(enabled)
        headers = basic(service.client_id, other.secret)
    assert isinstance(headers, dict)
    async with http_for(enabled) as http:
        response = await http.get("/internal/whoami", headers=headers)
    assert_challenge(response, service.secret)


async def test_optional_guard_returns_none_without_credentials(enabled: Bastion) -> None:
    """``auto_error=False``: no Basic header is ``None``; a bad one still 401."""
    from bastion.credentials.basic import HttpBasicGuard

    optional = HttpBasicGuard(enabled.clients, enabled.limiter, enabled=True, auto_error=False)
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/maybe")
    async def maybe(p: Principal | None = Security(optional)) -> dict[str, bool]:  # noqa: B008
        return {"anonymous": p is None}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
        assert (await http.get("/maybe")).json() == {"anonymous": True}
        bad = await http.get("/maybe", headers=raw_basic(b"nobody:nothing"))
    assert_challenge(bad)


async def test_failures_of_a_known_client_are_audited_without_the_secret(
    enabled: Bastion, service: Registered, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong secret for an existing client writes ``client.authentication_failed``;
    no log line holds the presented or the real secret."""
    caplog.set_level(logging.DEBUG)
    wrong = service.secret[::-1]
    async with http_for(enabled) as http:
        await http.get("/internal/whoami", headers=basic(service.client_id, wrong))
        await http.get("/internal/whoami", headers=basic(service.client_id, service.secret))
    [event] = audit_events(caplog, "client.authentication_failed")
    assert event["target"] == service.client_id
    for record in caplog.records:
        assert service.secret not in record.getMessage()
        assert wrong not in record.getMessage()


async def test_openapi_lists_the_basic_scheme(bastion: Bastion) -> None:
    """The guard is a ``fastapi.security`` scheme: OpenAPI shows HTTP basic on its routes."""
    document = embedding_app(bastion).openapi()
    assert document["components"]["securitySchemes"]["bastion_basic"] == {
        "type": "http",
        "scheme": "basic",
    }
    assert document["paths"]["/internal/whoami"]["get"]["security"] == [{"bastion_basic": []}]


# ------------------------------------------------------------------ rate limits


async def test_failures_per_client_are_limited_even_for_the_right_secret(
    start: Start, wall_clock: WallClock
) -> None:
    """Past ``basic_client`` failures for one id, every attempt for it is 429
    with Retry-After (the right secret too) until the window passes."""
    async with start(rate_limits_enabled=True, rate_limit_basic_client="3/minute") as instance:
        service = await new_client(instance)
        wrong = basic(service.client_id, service.secret + "x")
        right = basic(service.client_id, service.secret)
        async with http_for(instance) as http:
            for _ in range(3):
                assert_challenge(await http.get("/internal/whoami", headers=wrong))
            for headers in (wrong, right):
                refused = await http.get("/internal/whoami", headers=headers)
                assert_problem(refused, 429, service.secret)
                assert 0 < int(refused.headers["retry-after"]) <= 60
            wall_clock.advance(61)
            assert (await http.get("/internal/whoami", headers=right)).status_code == 200


async def test_attempts_per_ip_are_limited(start: Start, wall_clock: WallClock) -> None:
    """Every Basic attempt counts against ``basic_ip``: past it, 429 with
    Retry-After; another address is not affected."""
    async with start(rate_limits_enabled=True, rate_limit_basic_ip="4/minute") as instance:
        service = await new_client(instance)
        right = basic(service.client_id, service.secret)
        async with http_for(instance, "198.51.100.4") as http:
            for _ in range(4):
                assert (await http.get("/internal/whoami", headers=right)).status_code == 200
            refused = await http.get("/internal/whoami", headers=right)
            assert_problem(refused, 429, service.secret)
            assert refused.headers["retry-after"]
            assert refused.headers["ratelimit-policy"] == '"basic_ip";q=4;w=60'
        async with http_for(instance, "198.51.100.5") as http:
            assert (await http.get("/internal/whoami", headers=right)).status_code == 200
