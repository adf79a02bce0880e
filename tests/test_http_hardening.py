"""The HTTP edge's hardening: security headers, no-store on secret-bearing
answers, the docs pages' CSP, CORS, trusted hosts, HTTPS only, and the limits
on JSON depth, form fields and header size."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from bastion.core import Bastion
from bastion.errors import ConfigurationError
from bastion.middleware import json_nesting_exceeds
from bastion.security_headers import STRICT_CSP, SecurityHeaders, TrustedHosts
from bastion.server.app import create_app
from bastion.settings import Settings
from tests.conftest import ISSUER, PASSWORD
from tests.http_checks import assert_oauth_error, assert_problem, bearer_challenge

pytestmark = pytest.mark.anyio

COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}

AppClient = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def app_client(make_settings: Callable[..., Settings]) -> AsyncIterator[AppClient]:
    """Clients of apps built with overridden settings, for answers given before
    any route touches the database (middleware refusals, docs, 401s)."""
    clients: list[httpx.AsyncClient] = []
    instances: list[Bastion] = []

    def make(base_url: str = ISSUER, **overrides: Any) -> httpx.AsyncClient:
        instance = Bastion(make_settings(**overrides))
        instances.append(instance)
        app = create_app(bastion=instance)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
    for instance in instances:
        await instance.engine.dispose()


def assert_hardened(response: httpx.Response) -> None:
    for name, value in COMMON.items():
        assert response.headers.get(name) == value, name
    assert response.headers["content-security-policy"] == STRICT_CSP


# ------------------------------------------------------------------ security headers


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/health", 200),
        ("GET", "/.well-known/jwks.json", 200),
        ("GET", "/me", 401),
        ("GET", "/no/such/route", 404),
        ("DELETE", "/health", 405),
        ("POST", "/oauth/token", 400),
        ("GET", "/openapi.json", 200),
    ],
)
async def test_every_answer_carries_the_security_headers(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    """nosniff, no-referrer, DENY, COOP and the strict CSP on success and error alike."""
    response = await client.request(method, path)
    assert response.status_code == status
    assert_hardened(response)
    assert "strict-transport-security" not in response.headers  # development mode


async def test_refusals_of_the_middleware_are_hardened_too(client: httpx.AsyncClient) -> None:
    """A 413 from the body limit still carries the headers."""
    response = await client.post("/auth/register", content=b"x" * 100_000)
    assert_problem(response, 413)
    assert_hardened(response)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param({}, None, id="development"),
        pytest.param({"hsts": True}, "max-age=63072000; includeSubDomains", id="dev-forced-on"),
        pytest.param(
            {"mode": "production", "issuer": "https://auth.example"},
            "max-age=63072000; includeSubDomains",
            id="production",
        ),
        pytest.param(
            {"mode": "production", "issuer": "https://auth.example", "hsts": False},
            None,
            id="production-off",
        ),
        pytest.param(
            {"mode": "production", "issuer": "https://auth.example", "hsts_max_age": 300},
            "max-age=300; includeSubDomains",
            id="production-max-age",
        ),
    ],
)
async def test_hsts_is_sent_in_production_or_when_asked(
    app_client: AppClient, overrides: dict[str, Any], expected: str | None
) -> None:
    """Strict-Transport-Security follows the mode unless BASTION_HSTS says otherwise."""
    response = await app_client(**overrides).get("/me")
    assert response.headers.get("strict-transport-security") == expected


# ------------------------------------------------------------------ no-store


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/oauth/token", {"data": {"grant_type": "password"}}),
        ("POST", "/oauth/revoke", {"data": {}}),
        ("POST", "/oauth/introspect", {"data": {"token": "x"}}),
        ("GET", "/me", {}),
        ("GET", "/me/sessions", {}),
        ("GET", "/admin/users", {}),
        ("POST", "/auth/register", {"json": {}}),
        ("POST", "/auth/logout", {}),
    ],
)
async def test_secret_bearing_routes_are_never_cached(
    client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    """Token, account and admin answers say no-store, errors included."""
    response = await client.request(method, path, **kwargs)
    assert response.status_code >= 400
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_successful_token_and_me_answers_are_not_cached(
    client: httpx.AsyncClient, access_token: str
) -> None:
    """/me and the session list, which carry personal data, are no-store too."""
    for path in ("/me", "/me/sessions"):
        response = await client.get(path, headers={"Authorization": f"Bearer {access_token}"})
        assert response.status_code == 200
        assert response.headers.get_list("cache-control") == ["no-store"]


@pytest.mark.parametrize(
    ("path", "cache_control"),
    [
        ("/.well-known/jwks.json", "public, max-age=60"),
        ("/.well-known/oauth-authorization-server", "public, max-age=3600"),
    ],
)
async def test_public_discovery_documents_stay_cacheable(
    client: httpx.AsyncClient, path: str, cache_control: str
) -> None:
    """The route's own Cache-Control wins; nothing adds no-store or Pragma."""
    response = await client.get(path)
    assert response.headers.get_list("cache-control") == [cache_control]
    assert "pragma" not in response.headers


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/oauth/token", True),
        ("/me", True),
        ("/me/sessions/1", True),
        ("/admin", True),
        ("/auth/register", True),
        ("/metrics", False),
        ("/mentions", False),
        ("/authority", False),
        ("/health", False),
        ("/", False),
    ],
)
def test_no_store_prefixes_match_whole_segments(path: str, expected: bool) -> None:
    """/me matches /me and /me/..., never /metrics."""
    middleware = SecurityHeaders(app=None)  # type: ignore[arg-type]
    assert middleware.needs_no_store(path) is expected


# ------------------------------------------------------------------ docs


def _inline_script_hashes(html: bytes) -> set[str]:
    return {
        "'sha256-" + base64.b64encode(hashlib.sha256(m).digest()).decode() + "'"
        for m in re.findall(rb"<script>(.*?)</script>", html, re.DOTALL)
    }


@pytest.mark.parametrize("path", ["/docs", "/docs/oauth2-redirect"])
async def test_swagger_pages_allow_the_cdn_and_exactly_their_inline_scripts(
    app_client: AppClient, path: str
) -> None:
    """The docs CSP names the page's own inline scripts by hash, never 'unsafe-inline'."""
    response = await app_client().get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = dict(
        d.partition(" ")[::2] for d in response.headers["content-security-policy"].split("; ")
    )
    hashes = _inline_script_hashes(response.content)
    assert hashes
    assert set(csp["script-src"].split()) == {"https://cdn.jsdelivr.net", *hashes}
    assert csp["frame-ancestors"] == "'none'"
    assert csp["default-src"] == "'none'"
    assert response.headers["x-frame-options"] == "DENY"
    if path == "/docs":
        assert b"https://cdn.jsdelivr.net/npm/swagger-ui-dist" in response.content


async def test_redoc_page_gets_the_docs_csp(app_client: AppClient) -> None:
    """ReDoc has no inline script: script-src is the CDN alone."""
    response = await app_client().get("/redoc")
    assert response.status_code == 200
    assert "script-src https://cdn.jsdelivr.net;" in response.headers["content-security-policy"]
    assert "https://fonts.googleapis.com" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        pytest.param({}, 200, id="development"),
        pytest.param({"docs_enabled": False}, 404, id="development-off"),
        pytest.param({"mode": "production", "issuer": "https://auth.example"}, 404, id="prod"),
        pytest.param(
            {"mode": "production", "issuer": "https://auth.example", "docs_enabled": True},
            200,
            id="production-on",
        ),
    ],
)
async def test_docs_are_on_in_development_and_off_in_production(
    app_client: AppClient, overrides: dict[str, Any], status: int
) -> None:
    """The docs pages follow the mode unless BASTION_DOCS_ENABLED says otherwise;
    the OpenAPI document stays available either way."""
    client = app_client(**overrides)
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert (await client.get(path)).status_code == status
    assert (await client.get("/openapi.json")).status_code == 200


# ------------------------------------------------------------------ CORS

ORIGIN = "https://app.example"


async def test_preflight_is_answered_before_authentication(app_client: AppClient) -> None:
    """A preflight to a guarded route is 200 with the CORS grant, never 401."""
    client = app_client(cors_origins=[ORIGIN], cors_allow_credentials=True)
    response = await client.options(
        "/me",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


async def test_actual_request_from_an_allowed_origin_exposes_the_challenge(
    app_client: AppClient,
) -> None:
    """The 401's WWW-Authenticate and X-Request-ID are readable by the allowed origin."""
    client = app_client(cors_origins=[ORIGIN])
    response = await client.get("/me", headers={"Origin": ORIGIN})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == ORIGIN
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "www-authenticate" in exposed
    assert "x-request-id" in exposed


async def test_other_origins_get_no_cors_grant(app_client: AppClient) -> None:
    """An origin not listed is not granted, in preflight or in the answer."""
    client = app_client(cors_origins=[ORIGIN])
    evil = {"Origin": "https://evil.example"}
    preflight = await client.options(
        "/me", headers={**evil, "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    response = await client.get("/me", headers=evil)
    assert "access-control-allow-origin" not in response.headers


async def test_no_cors_without_origins(client: httpx.AsyncClient) -> None:
    """By default there is no CORS at all: a preflight is an ordinary 405."""
    response = await client.options(
        "/me", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    )
    assert response.status_code == 405
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("mode", ["development", "production"])
def test_wildcard_origin_with_credentials_is_refused_in_every_mode(
    make_settings: Callable[..., Settings], mode: str
) -> None:
    """'*' plus credentials would let every site read every user's answers."""
    settings = make_settings(
        mode="development", cors_origins=["*"], cors_allow_credentials=True
    ).model_copy(update={"mode": mode})
    with pytest.raises(ConfigurationError) as caught:
        create_app(settings)
    assert "BASTION_CORS_ALLOW_CREDENTIALS" in str(caught.value)


@pytest.mark.parametrize("origin", ["https://app.example/", "app.example", "https://a.example/x"])
def test_an_origin_that_can_never_match_is_refused(
    make_settings: Callable[..., Settings], origin: str
) -> None:
    """Origins compare as exact strings: a path or trailing slash is a silent miss."""
    with pytest.raises(ConfigurationError) as caught:
        create_app(make_settings(cors_origins=[origin]))
    assert "scheme://host[:port]" in str(caught.value)


def test_wildcard_origin_without_credentials_is_allowed(
    make_settings: Callable[..., Settings],
) -> None:
    """'*' alone is a public API's choice, not a hole."""
    create_app(make_settings(cors_origins=["*"]))


# ------------------------------------------------------------------ trusted hosts, HTTPS


async def test_untrusted_host_is_refused_with_problem_details(app_client: AppClient) -> None:
    """A Host outside BASTION_TRUSTED_HOSTS gets a 400 problem, hardened, with an id."""
    client = app_client(trusted_hosts=["testserver", "*.example.com"])
    response = await client.get("/openapi.json", headers={"Host": "evil.example"})
    assert_problem(response, 400)
    assert_hardened(response)
    assert response.headers["x-request-id"]
    for host in ("testserver", "testserver:8000", "api.example.com", "API.Example.COM"):
        assert (await client.get("/openapi.json", headers={"Host": host})).status_code == 200


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("auth.example.com", True),
        ("auth.example.com:443", True),
        ("a.b.example.com", True),
        ("example.com", False),
        ("evilexample.com", False),
        ("example.com.evil", False),
        ("[::1]:8000", True),
        ("[::2]", False),
        ("", False),
    ],
)
def test_trusted_host_matching(host: str, allowed: bool) -> None:
    """Exact names and *.suffix wildcards, port and case ignored."""
    middleware = TrustedHosts(app=None, hosts=["*.example.com", "[::1]"])  # type: ignore[arg-type]
    assert middleware.allows(host) is allowed


async def test_plain_http_get_is_redirected_to_https(app_client: AppClient) -> None:
    """GET over http: 308 to the same path and query over https."""
    client = app_client(https_redirect=True)
    response = await client.get("/openapi.json?x=1", headers={"Host": "auth.example:8080"})
    assert response.status_code == 308
    assert response.headers["location"] == "https://auth.example/openapi.json?x=1"
    assert response.headers["content-type"] == "application/problem+json"
    assert_hardened(response)


async def test_plain_http_post_is_refused_not_redirected(app_client: AppClient) -> None:
    """A password sent over http is not bounced to https: the client must be fixed."""
    client = app_client(https_redirect=True)
    response = await client.post(
        "/oauth/token", data={"grant_type": "password", "username": "a", "password": PASSWORD}
    )
    body = assert_problem(response, 400, PASSWORD)
    assert body["title"] == "HTTPS required"
    assert "location" not in response.headers


async def test_https_requests_pass_the_redirect(app_client: AppClient) -> None:
    """Over https nothing changes."""
    client = app_client(base_url="https://testserver", https_redirect=True)
    assert (await client.get("/openapi.json")).status_code == 200


# ------------------------------------------------------------------ JSON depth


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("text", "limit", "exceeds"),
    [
        ('{"a": 1}', 1, False),
        ('{"a": {"b": 1}}', 1, True),
        (_nested(32), 32, False),
        (_nested(33), 32, True),
        ('{"a": "' + "[" * 100 + '"}', 2, False),
        ('{"a": "\\"' + "[" * 100 + '"}', 2, False),
        ('{"a": "\\\\", "b": ' + _nested(5) + "}", 4, True),
        ("[" + ",".join(["[]"] * 100) + "]", 2, False),
        ("[" + ",".join(["[]"] * 100) + "]", 1, True),
        ("[" * 65_000, 32, True),
        ('"' + "[" * 65_000 + '"', 32, False),
    ],
)
def test_json_nesting_is_measured_outside_strings(text: str, limit: int, exceeds: bool) -> None:
    """Brackets inside strings (escaped quotes included) do not count."""
    assert json_nesting_exceeds(text.encode(), limit) is exceeds


async def test_deeply_nested_json_body_is_refused_before_parsing(
    client: httpx.AsyncClient,
) -> None:
    """33 levels: a 400 problem; the route and its validator never run."""
    body = '{"email": "a@example.com", "password": ' + _nested(33) + "}"
    response = await client.post(
        "/auth/register", content=body, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400)
    assert response.json()["detail"] == "The JSON body is nested too deeply."


async def test_deep_json_is_refused_when_it_arrives_in_chunks(
    client: httpx.AsyncClient,
) -> None:
    """A chunked body is checked as a whole, whichever chunk closes it."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"email": "a@example.com", "password": '
        for _ in range(40):
            yield b"["
        yield b"]" * 40 + b"}"

    response = await client.post(
        "/auth/register", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400)


@pytest.mark.parametrize("content_type", [None, "application/merge-patch+json"])
async def test_depth_applies_to_every_body_fastapi_parses_as_json(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    """No content type, and +json types, are parsed as JSON by FastAPI: checked too."""
    request = client.build_request("POST", "/auth/register", content=_nested(40).encode())
    if content_type is None:
        assert "content-type" not in request.headers
    else:
        request.headers["content-type"] = content_type
    assert_problem(await client.send(request), 400)


async def test_brackets_inside_json_strings_are_not_nesting(client: httpx.AsyncClient) -> None:
    """A password made of brackets is an ordinary password."""
    response = await client.post(
        "/auth/register", json={"email": "b@example.com", "password": "[{" * 30 + "x"}
    )
    assert response.status_code == 201, response.text


async def test_form_bodies_are_not_checked_for_json_depth(client: httpx.AsyncClient) -> None:
    """Brackets in a form are text: the token endpoint answers as usual."""
    response = await client.post(
        "/oauth/token", data={"grant_type": "password", "username": "[" * 40, "password": "x"}
    )
    assert_oauth_error(response, 400, "invalid_grant")


# ------------------------------------------------------------------ form limits


async def test_too_many_form_fields_is_invalid_request(client: httpx.AsyncClient) -> None:
    """More than BASTION_MAX_FORM_FIELDS fields: invalid_request, before the grant runs."""
    fields = "&".join(f"f{i}=x" for i in range(40))
    response = await client.post(
        "/oauth/token",
        content=f"grant_type=password&{fields}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_oauth_error(response, 400, "invalid_request")


async def test_file_uploads_are_refused(client: httpx.AsyncClient) -> None:
    """No route takes files: a multipart file part is invalid_request."""
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "password"},
        files={"upload": ("a.txt", b"hello", "text/plain")},
    )
    assert_oauth_error(response, 400, "invalid_request")


async def test_oversized_multipart_field_is_invalid_request(client: httpx.AsyncClient) -> None:
    """A text part over BASTION_MAX_FORM_PART_BYTES is refused while streaming."""
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": "u"},
        files={"password": (None, b"p" * 20_000)},
    )
    assert_oauth_error(response, 400, "invalid_request")


# ------------------------------------------------------------------ headers


async def test_oversized_authorization_header_is_a_plain_invalid_token(
    client: httpx.AsyncClient,
) -> None:
    """A 16 KiB bearer token is refused by its length (401), not parsed."""
    response = await client.get("/me", headers={"Authorization": "Bearer " + "a" * 16_384})
    assert response.status_code == 401
    assert bearer_challenge(response)["error"] == "invalid_token"


async def test_oversized_header_block_is_431(client: httpx.AsyncClient) -> None:
    """Headers adding up to more than BASTION_MAX_HEADER_BYTES: 431 problem."""
    headers = {f"x-filler-{i}": "v" * 4000 for i in range(10)}
    response = await client.get("/health", headers=headers)
    assert_problem(response, 431)
    assert_hardened(response)


async def test_huge_authorization_is_401_not_431(client: httpx.AsyncClient) -> None:
    """Authorization is outside the header cap: 100 KiB is refused by the token cap."""
    response = await client.get("/me", headers={"Authorization": "Bearer " + "a" * 100 * 1024})
    assert response.status_code == 401
    assert bearer_challenge(response)["error"] == "invalid_token"


@pytest.mark.parametrize(
    "value", [b"a" * 65, b"a b", "é".encode("latin-1"), b"<script>", b"a" * 20_000]
)
async def test_unusable_request_ids_are_replaced(client: httpx.AsyncClient, value: bytes) -> None:
    """Only short token-like X-Request-IDs are echoed; others get a fresh id."""
    response = await client.get("/openapi.json", headers={"X-Request-ID": value})
    echoed = response.headers["x-request-id"]
    assert echoed.encode("latin-1") != value
    assert re.fullmatch(r"[0-9a-f]{32}", echoed)
    assert json.loads(response.text)["openapi"]
