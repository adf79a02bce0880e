"""The OAuth client registry (bastion.clients.ClientService) and the
``bastion clients`` command: ids, secrets shown once and stored hashed,
validation of grants, scopes and redirect URIs (RFC 6749 §3.1.2), rotation,
deletion, and constant-time authentication."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from typing import Any

import pytest

from bastion import clients as clients_module
from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.errors import Conflict, InvalidClient, InvalidInput, NotFound
from tests.client_flows import new_client
from tests.secrets_in_logs import register
from tests.test_cli import Result, Scenario, Step, assert_clean_failure, run_scenarios
from tests.token_flows import audit_events

pytestmark = pytest.mark.anyio


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# ------------------------------------------------------------------ create


async def test_create_generates_an_id_and_a_secret_shown_once(bastion: Bastion) -> None:
    """A confidential client gets ``bcl_`` + 16 hex and a 256-bit secret; only
    the secret's SHA-256 is stored."""
    issued = await bastion.clients.create(
        name="Reports", grant_types=["client_credentials"], scopes=["content:read"]
    )
    assert issued.secret is not None
    register(issued.secret)
    assert re.fullmatch(r"bcl_[0-9a-f]{16}", issued.client.client_id)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", issued.secret)
    stored = await bastion.client_store.get(issued.client.client_id)
    assert stored is not None
    assert stored.secret_hash == sha256(issued.secret)
    assert stored.grant_types == {"client_credentials"}
    assert stored.scopes == {"content:read"}


async def test_create_is_audited_without_secret_or_hash(
    bastion: Bastion, caplog: pytest.LogCaptureFixture
) -> None:
    """``client.created`` names the client and its public fields, never the secret or its hash."""
    caplog.set_level(logging.INFO, logger="bastion.audit")
    issued = await bastion.clients.create(
        name="Reports", grant_types=["client_credentials"], actor="admin-1"
    )
    assert issued.secret is not None
    register(issued.secret)
    [event] = audit_events(caplog, "client.created")
    assert event["actor"] == "admin-1"
    assert event["target"] == issued.client.client_id
    assert event["after"]["confidential"] is True
    line = caplog.text
    assert issued.secret not in line
    assert sha256(issued.secret) not in line


async def test_public_clients_have_no_secret(bastion: Bastion) -> None:
    """``public=True``: no secret returned, none stored."""
    issued = await bastion.clients.create(
        name="Mobile", grant_types=["password", "refresh_token"], public=True, client_id="mobile"
    )
    assert issued.secret is None
    assert not issued.client.is_confidential
    assert (await bastion.clients.get("mobile")).secret_hash is None


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example/callback",
        "https://app.example:8443/cb?x=1",
        "http://127.0.0.1:8080/cb",
        "http://[::1]/cb",
        "http://localhost/cb",
        "https://xn--bcher-kva.example/cb",
    ],
)
async def test_valid_redirect_uris_are_stored(bastion: Bastion, uri: str) -> None:
    """Absolute https URIs, or http on a loopback host (RFC 8252 §7.3), are kept as given."""
    issued = await bastion.clients.create(
        name="Web", grant_types=["authorization_code"], redirect_uris=[uri]
    )
    register(issued.secret)
    assert issued.client.redirect_uris == (uri,)


BAD_CREATE: list[Any] = [
    pytest.param({"client_id": ""}, id="id-empty"),
    pytest.param({"client_id": "x" * 65}, id="id-65-chars"),
    pytest.param({"client_id": "caf\u00e9"}, id="id-non-ascii"),
    pytest.param({"client_id": "a\x00b"}, id="id-nul"),
    pytest.param({"client_id": "a\tb"}, id="id-tab"),
    pytest.param({"client_id": " padded"}, id="id-leading-space"),
    pytest.param({"client_id": "0b6f1a9e-3c55-4d3f-9c1e-2f0e5a7d8b11"}, id="id-shaped-like-a-user"),
    pytest.param({"name": ""}, id="name-empty"),
    pytest.param({"name": "   "}, id="name-blank"),
    pytest.param({"name": "n" * 201}, id="name-too-long"),
    pytest.param({"name": "evil\nname"}, id="name-newline"),
    pytest.param({"grant_types": []}, id="no-grant"),
    pytest.param({"grant_types": ["implicit"]}, id="implicit-grant"),
    pytest.param({"grant_types": ["client_credentials", "x" * 500]}, id="long-unknown-grant"),
    pytest.param({"grant_types": "client_credentials"}, id="grant-as-string"),
    pytest.param({"scopes": ["content read"]}, id="scope-with-space"),
    pytest.param({"scopes": ["*"]}, id="scope-star"),
    pytest.param({"scopes": ["x" * 200]}, id="scope-too-long"),
    pytest.param({"redirect_uris": ["/relative/cb"]}, id="uri-relative"),
    pytest.param({"redirect_uris": ["https://app.example/cb#frag"]}, id="uri-fragment"),
    pytest.param({"redirect_uris": ["https://app.example/cb#"]}, id="uri-empty-fragment"),
    pytest.param({"redirect_uris": ["http://app.example/cb"]}, id="uri-http-not-loopback"),
    pytest.param(
        {"redirect_uris": ["http://127.0.0.1.evil.example/cb"]}, id="uri-loopback-lookalike"
    ),
    pytest.param({"redirect_uris": ["javascript:alert(1)"]}, id="uri-javascript"),
    pytest.param({"redirect_uris": ["ftp://app.example/cb"]}, id="uri-ftp"),
    pytest.param({"redirect_uris": ["https:///no-host"]}, id="uri-no-host"),
    pytest.param({"redirect_uris": ["https://app.example:99999/cb"]}, id="uri-bad-port"),
    pytest.param({"redirect_uris": ["https://app.example/a b"]}, id="uri-space"),
    pytest.param({"redirect_uris": ["https://app.example/\u00e9"]}, id="uri-non-ascii"),
    pytest.param({"redirect_uris": ["https://a.example/" + "x" * 2000]}, id="uri-too-long"),
    pytest.param({"redirect_uris": "https://app.example/cb"}, id="uris-as-string"),
    pytest.param({"redirect_uris": [f"https://app.example/{i}" for i in range(21)]}, id="uris-21"),
    pytest.param(
        {"public": True, "grant_types": ["client_credentials"]}, id="public-client-credentials"
    ),
]


@pytest.mark.parametrize("changes", BAD_CREATE)
async def test_invalid_registrations_are_refused_and_write_nothing(
    bastion: Bastion, changes: dict[str, Any]
) -> None:
    """Malformed ids, names, grants, scopes and redirect URIs (RFC 6749 §3.1.2,
    Appendix A.1) raise InvalidInput; no client is added."""
    before = await bastion.clients.list_clients()
    values: dict[str, Any] = {
        "name": "Service",
        "grant_types": ["client_credentials"],
        "scopes": ["content:read"],
        **changes,
    }
    with pytest.raises(InvalidInput):
        await bastion.clients.create(**values)
    assert await bastion.clients.list_clients() == before


async def test_a_taken_id_is_a_conflict(bastion: Bastion) -> None:
    """Registering ``bastion`` (or any existing id) again is a Conflict."""
    with pytest.raises(Conflict):
        await bastion.clients.create(name="Impostor", grant_types=["password"], client_id="bastion")
    assert (await bastion.clients.get("bastion")).secret_hash is None


# ------------------------------------------------------------------ rotate and delete


async def test_rotate_secret_replaces_the_old_one_at_once(
    bastion: Bastion, clock: FrozenClock
) -> None:
    """After rotation the new secret authenticates, the old one does not, and
    ``secret_rotated_at`` says when."""
    service = await new_client(bastion)
    clock.advance(60)
    secret = await bastion.clients.rotate_secret(service.client_id, actor="cli")
    register(secret)
    assert secret != service.secret
    client = await bastion.clients.authenticate(service.client_id, secret)
    assert client.secret_rotated_at == clock.now()
    with pytest.raises(InvalidClient):
        await bastion.clients.authenticate(service.client_id, service.secret)


@pytest.mark.parametrize(
    ("client_id", "error"),
    [
        pytest.param("bastion", InvalidInput, id="public-client"),
        pytest.param("ghost", NotFound, id="unknown"),
        pytest.param("a\x00", NotFound, id="malformed-id"),
    ],
)
async def test_rotate_refusals(bastion: Bastion, client_id: str, error: type[Exception]) -> None:
    """A public client has no secret to rotate; an unknown id is NotFound."""
    with pytest.raises(error):
        await bastion.clients.rotate_secret(client_id)


async def test_delete_ends_authentication_and_is_audited(
    bastion: Bastion, caplog: pytest.LogCaptureFixture
) -> None:
    """A deleted client is gone: authentication fails, ``client.deleted`` is recorded."""
    caplog.set_level(logging.INFO, logger="bastion.audit")
    service = await new_client(bastion)
    await bastion.clients.delete(service.client_id, actor="cli")
    with pytest.raises(InvalidClient):
        await bastion.clients.authenticate(service.client_id, service.secret)
    with pytest.raises(NotFound):
        await bastion.clients.get(service.client_id)
    [event] = audit_events(caplog, "client.deleted")
    assert event["target"] == service.client_id


@pytest.mark.parametrize(
    ("client_id", "error"),
    [
        pytest.param("bastion", Conflict, id="builtin"),
        pytest.param("ghost", NotFound, id="unknown"),
    ],
)
async def test_delete_refusals(bastion: Bastion, client_id: str, error: type[Exception]) -> None:
    """The built-in ``bastion`` client cannot be deleted; an unknown id is NotFound."""
    with pytest.raises(error):
        await bastion.clients.delete(client_id)
    assert await bastion.clients.find("bastion") is not None


# ------------------------------------------------------------------ authenticate


@pytest.mark.parametrize(
    "presented",
    [
        pytest.param(("service", "wrong"), id="wrong-secret"),
        pytest.param(("service", ""), id="empty-secret"),
        pytest.param(("service", "s" * 10_000), id="huge-secret"),
        pytest.param(("bcl_ffffffffffffffff", "secret"), id="unknown-id"),
        pytest.param(("", "secret"), id="empty-id"),
        pytest.param(("bastion", ""), id="public-client"),
    ],
)
async def test_authenticate_refuses_with_one_generic_error(
    bastion: Bastion, presented: tuple[str, str]
) -> None:
    """Wrong secret, unknown id, public client: the same InvalidClient text."""
    service = await new_client(bastion)
    client_id, secret = presented
    with pytest.raises(InvalidClient) as raised:
        await bastion.clients.authenticate(
            service.client_id if client_id == "service" else client_id, secret
        )
    assert raised.value.detail == "Client authentication failed."


async def test_unknown_ids_still_pay_a_constant_time_comparison(
    bastion: Bastion, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing does not tell unknown ids from known ones: both go through one
    ``hmac.compare_digest`` of two SHA-256 hex digests."""
    service = await new_client(bastion)
    calls: list[tuple[int, int]] = []
    compare = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((len(a), len(b)))
        return compare(a, b)

    monkeypatch.setattr(clients_module.hmac, "compare_digest", spy)
    for client_id in (service.client_id, "bcl_0123456789abcdef"):
        with pytest.raises(InvalidClient):
            await bastion.clients.authenticate(client_id, "not-the-secret")
    assert calls == [(64, 64), (64, 64)]


@pytest.mark.parametrize(
    ("client_id", "secret", "expected"),
    [
        pytest.param(None, None, "bastion", id="nothing-means-builtin"),
        pytest.param("bastion", None, "bastion", id="public-by-id"),
        pytest.param("service", "right", "service", id="confidential-authenticated"),
        pytest.param("service", None, InvalidClient, id="confidential-without-secret"),
        pytest.param("bastion", "anything", InvalidClient, id="public-with-a-secret"),
        pytest.param("nobody", None, InvalidClient, id="unknown-public"),
        pytest.param("BASTION", None, InvalidClient, id="case-matters"),
    ],
)
async def test_identify(
    bastion: Bastion, client_id: str | None, secret: str | None, expected: object
) -> None:
    """Which client a token request is from, per RFC 6749 §3.2.1."""
    service = await new_client(bastion)
    real_id = service.client_id if client_id == "service" else client_id
    real_secret = service.secret if secret == "right" else secret
    if expected is InvalidClient:
        with pytest.raises(InvalidClient):
            await bastion.clients.identify(real_id, real_secret)
        return
    client = await bastion.clients.identify(real_id, real_secret)
    assert client.client_id == (service.client_id if expected == "service" else expected)


# ------------------------------------------------------------------ CLI

CLI_SCENARIOS: dict[str, list[Step]] = {
    "clients": [
        Step(
            (
                "clients",
                "create",
                "Reporting service",
                "--grant",
                "client_credentials",
                "--scope",
                "content:read",
                "--scope",
                "reports:*",
                "--client-id",
                "svc",
            )
        ),
        Step(
            (
                "clients",
                "create",
                "Mobile app",
                "--public",
                "--grant",
                "password",
                "--grant",
                "refresh_token",
                "--redirect-uri",
                "http://127.0.0.1:8000/cb",
                "--client-id",
                "mobile",
            )
        ),
        Step(("clients", "list")),
        Step(("clients", "rotate-secret", "svc")),
        Step(("clients", "rotate-secret", "mobile")),
        Step(("clients", "delete", "bastion")),
        Step(("clients", "delete", "svc")),
        Step(("clients", "delete", "svc")),
        Step(("clients", "list")),
    ],
    "bad-clients": [
        Step(("clients", "create", "X", "--grant", "implicit")),
        Step(
            (
                "clients",
                "create",
                "X",
                "--grant",
                "authorization_code",
                "--redirect-uri",
                "http://evil.example/cb",
            )
        ),
        Step(("clients", "create", "X", "--public", "--grant", "client_credentials")),
        Step(("clients", "create", "X", "--grant", "client_credentials", "--client-id", "bastion")),
        Step(("clients", "create", "X", "--grant", "client_credentials", "--scope", "no spaces")),
        Step(("clients", "create", "X")),
        Step(("clients", "rotate-secret", "ghost")),
        Step(("clients", "list")),
    ],
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scenario]:
    return run_scenarios(tmp_path_factory.mktemp("cli-clients"), CLI_SCENARIOS, set(CLI_SCENARIOS))


def printed_secret(result: Result) -> str:
    match = re.search(r"^client_secret: (\S+)$", result.stdout, re.MULTILINE)
    assert match is not None, result.stdout
    register(match.group(1))
    return match.group(1)


def test_cli_create_prints_the_id_and_the_secret_once(cli: dict[str, Scenario]) -> None:
    """``clients create`` prints the id and the secret; the database holds only its SHA-256."""
    scenario = cli["clients"]
    created = scenario.results[0]
    assert created.returncode == 0, created.stderr
    assert "client_id: svc" in created.stdout
    secret = printed_secret(created)
    [(stored,)] = scenario.rows("SELECT secret_hash FROM oauth_clients WHERE client_id = 'mobile'")
    assert stored is None
    dump = "\n".join(map(str, scenario.rows("SELECT * FROM oauth_clients")))
    assert secret not in dump
    assert secret not in created.stderr


def test_cli_public_client_prints_no_secret(cli: dict[str, Scenario]) -> None:
    """``--public`` creates a client without a secret and says so."""
    result = cli["clients"].results[1]
    assert result.returncode == 0, result.stderr
    assert "created public client mobile" in result.stdout
    assert "client_secret" not in result.stdout


def test_cli_list_shows_clients_without_secrets(cli: dict[str, Scenario]) -> None:
    """``clients list`` has one row per client with grants and scopes, no secret or hash."""
    scenario = cli["clients"]
    listing = scenario.results[2]
    assert listing.returncode == 0, listing.stderr
    header, *lines = listing.stdout.splitlines()
    assert header.split("\t")[:3] == ["client_id", "name", "type"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines}
    assert set(rows) == {"bastion", "mobile", "svc"}
    assert rows["svc"][2:5] == ["confidential", "client_credentials", "content:read reports:*"]
    assert rows["mobile"][2] == "public"
    assert rows["mobile"][5] == "http://127.0.0.1:8000/cb"
    secret = printed_secret(scenario.results[0])
    assert secret not in listing.stdout
    assert sha256(secret) not in listing.stdout


def test_cli_rotate_secret_prints_a_new_one(cli: dict[str, Scenario]) -> None:
    """``clients rotate-secret`` prints a new secret whose hash replaced the old one;
    a public client has none to rotate."""
    scenario = cli["clients"]
    old = printed_secret(scenario.results[0])
    rotated = scenario.results[3]
    assert rotated.returncode == 0, rotated.stderr
    new = printed_secret(rotated)
    assert new != old
    public = scenario.results[4]
    assert_clean_failure(public)
    assert "public client has no secret" in public.stderr


def test_cli_delete(cli: dict[str, Scenario]) -> None:
    """The built-in client cannot be deleted; another can, once; the list shows the rest."""
    scenario = cli["clients"]
    builtin, deleted, again, listing = scenario.results[5:9]
    assert_clean_failure(builtin)
    assert "cannot be deleted" in builtin.stderr
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == "deleted client svc"
    assert_clean_failure(again)
    assert "does not exist" in again.stderr
    ids = [line.split("\t")[0] for line in listing.stdout.splitlines()[1:]]
    assert ids == ["bastion", "mobile"]


@pytest.mark.parametrize(
    ("index", "message"),
    [
        pytest.param(0, "Unknown grant type", id="unknown-grant"),
        pytest.param(1, "https, or http on a loopback", id="http-redirect"),
        pytest.param(2, "public client cannot use the client_credentials", id="public-cc"),
        pytest.param(3, "already exists", id="taken-id"),
        pytest.param(4, "A permission must be", id="bad-scope"),
        pytest.param(5, "at least one grant type", id="no-grant"),
        pytest.param(6, "does not exist", id="rotate-unknown"),
    ],
)
def test_cli_errors_are_one_clear_line(cli: dict[str, Scenario], index: int, message: str) -> None:
    """Refused commands exit non-zero with an ``error:`` line, no traceback, nothing written."""
    scenario = cli["bad-clients"]
    result = scenario.results[index]
    assert_clean_failure(result)
    assert message in result.stderr
    assert scenario.rows("SELECT client_id FROM oauth_clients") == [("bastion",)]


@pytest.mark.parametrize("name", list(CLI_SCENARIOS))
def test_cli_secrets_never_reach_stderr(cli: dict[str, Scenario], name: str) -> None:
    """No printed secret appears on stderr (where the audit log goes), in any step."""
    secrets = [printed_secret(r) for r in cli[name].results if "client_secret:" in r.stdout]
    for result in cli[name].results:
        for secret in secrets:
            assert secret not in result.stderr
