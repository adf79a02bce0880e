"""docs/nginx/bastion.conf, run: a real nginx terminating TLS in front of a
real ``bastion serve`` (production mode, BASTION_TRUSTED_PROXIES=127.0.0.1).

The sample file is used as shipped, with only what a deployment changes
rewritten: the listen ports (loopback, IPv4), the certificate paths (a CA and
a certificate for auth.example.com made with ``cryptography`` into the test's
directory) and the upstream address. Clients connect from other loopback
addresses (127.0.0.3 and up) so that "the client" and "the proxy" differ, as
they do in production, and send the SNI and Host of auth.example.com.

Checks: HSTS over https (one header, also on nginx's own errors), http
redirected to https with 308, unknown host names refused, oversized bodies
413 before Bastion, and X-Forwarded-For honoured: rate limits, the lockout
and the audit log see the client's address, not nginx's, and a forged entry
changes nothing.

nginx must be installed (``make test`` and ``.ci/run`` install nginx-light
when it is missing); without it the module skips locally and fails in CI.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.stores.sql.migrate import upgrade
from tests.backends import unavailable
from tests.conftest import PASSWORD, TEST_SECRET
from tests.http_checks import assert_oauth_error
from tests.limit_flows import rate_limit_fields
from tests.server_processes import (
    HOST,
    free_port,
    run_cli,
    server_env,
    servers,
    wait_until_up,
)

pytestmark = pytest.mark.anyio

SAMPLE = Path(__file__).resolve().parent.parent / "docs" / "nginx" / "bastion.conf"
SERVER_NAME = "auth.example.com"
HSTS = "max-age=63072000; includeSubDomains"
TOKEN_IP_QUOTA = 3
ADMIN = "admin@example.com"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope: nginx and Bastion start once for the module."""
    return "asyncio"


def nginx_binary() -> str:
    """nginx on PATH or in /usr/sbin (not on a non-root PATH); never installed here."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        unavailable("nginx is not installed (make test and .ci/run install nginx-light)")
    return found


# ------------------------------------------------------------ certificates


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for SERVER_NAME it signed: the
    CA file, the certificate file and the key file."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Bastion test CA"))
        .issuer_name(_name("Bastion test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(SERVER_NAME))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


# ------------------------------------------------------------ nginx


def deployed_config(
    sample: str, *, http_port: int, https_port: int, upstream: int, cert: Path, key: Path
) -> str:
    """The sample with what a deployment changes rewritten, and nothing else."""
    text = re.sub(r"^\s*listen \[::\]:\d+.*\n", "", sample, flags=re.MULTILINE)
    text = re.sub(r"listen 80\b", f"listen {HOST}:{http_port}", text)
    text = re.sub(r"listen 443\b", f"listen {HOST}:{https_port}", text)
    text = text.replace("/etc/ssl/certs/auth.example.com.pem", str(cert))
    text = text.replace("/etc/ssl/private/auth.example.com.key", str(key))
    text = text.replace("server 127.0.0.1:8000 ", f"server {HOST}:{upstream} ")
    for original in ("listen 80", "listen 443", "/etc/ssl/", "127.0.0.1:8000"):
        assert original not in text, f"the sample changed shape: {original!r} is left"
    return text


def main_config(directory: Path, site: Path) -> str:
    """What /etc/nginx/nginx.conf gives the site, with every path in ``directory``."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers read the test's 0700 dir
    temp = "".join(
        f"    {kind}_temp_path {directory / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\npid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} warn;\ndaemon off;\n"
        "events { worker_connections 128; }\n"
        f"http {{\n    access_log off;\n{temp}    include {site};\n}}\n"
    )


@dataclass
class Stack:
    """nginx on ``http_port``/``https_port`` in front of one ``bastion serve``."""

    http_port: int
    https_port: int
    tls: ssl.SSLContext
    env: dict[str, str]
    cwd: Path
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    def client(self, source: str) -> httpx.AsyncClient:
        """A client whose connections come from ``source`` (a loopback address)."""
        if source not in self.clients:
            transport = httpx.AsyncHTTPTransport(local_address=source, verify=self.tls)
            self.clients[source] = httpx.AsyncClient(transport=transport, timeout=10)
        return self.clients[source]

    async def https(
        self, method: str, path: str, source: str = "127.0.0.3", **kwargs: Any
    ) -> httpx.Response:
        headers = {"Host": SERVER_NAME, **kwargs.pop("headers", {})}
        return await self.client(source).request(
            method,
            f"https://{HOST}:{self.https_port}{path}",
            headers=headers,
            extensions={"sni_hostname": SERVER_NAME},
            **kwargs,
        )

    async def login(self, source: str, email: str, password: str = PASSWORD) -> httpx.Response:
        data = {"grant_type": "password", "username": email, "password": password}
        return await self.https("POST", "/oauth/token", source, data=data)


def launch_nginx(nginx: str, directory: Path, conf: Path) -> subprocess.Popen[bytes]:
    """``nginx -t`` (the configuration must be valid), then nginx in the
    foreground with every path under ``directory``."""
    args = ["-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)]
    checked = subprocess.run(
        [nginx, "-t", "-q", *args], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    return subprocess.Popen([nginx, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


async def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while loop.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited {process.returncode}: {_read(log)}")
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"nginx did not listen on {port}")


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    nginx = nginx_binary()
    directory = tmp_path_factory.mktemp("nginx")
    ca_file, cert_file, key_file = make_certificates(directory)
    env = server_env(
        {
            "BASTION_MODE": "production",
            "BASTION_SECRET_KEY": TEST_SECRET.get_secret_value(),
            "BASTION_ISSUER": f"https://{SERVER_NAME}",
            "BASTION_DATABASE_URL": f"sqlite+aiosqlite:///{directory / 'bastion.db'}",
            "BASTION_TRUSTED_PROXIES": HOST,  # nginx connects from 127.0.0.1
            "BASTION_RATE_LIMIT_TOKEN_IP": f"{TOKEN_IP_QUOTA}/minute",
            "BASTION_LOCKOUT_IP_FAILURES": "2",
            "BASTION_ARGON2_MEMORY_COST": "8192",
            "BASTION_ARGON2_TIME_COST": "1",
            "BASTION_PURGE_INTERVAL": "0",
            "BASTION_LOG_LEVEL": "WARNING",
        }
    )
    await upgrade(env["BASTION_DATABASE_URL"])
    with servers(1, env, directory) as (bastion,):
        # While the server starts: an admin, made the way an operator would.
        run_cli(
            env,
            directory,
            *("users", "create", "--email", ADMIN, "--password-stdin", "--role", "admin"),
            stdin=PASSWORD,
        )
        async with httpx.AsyncClient() as http:
            await wait_until_up(http, bastion)
        http_port, https_port = free_port(), free_port()
        site = directory / "bastion.conf"
        site.write_text(
            deployed_config(
                SAMPLE.read_text(),
                http_port=http_port,
                https_port=https_port,
                upstream=bastion.port,
                cert=cert_file,
                key=key_file,
            )
        )
        conf = directory / "nginx.conf"
        conf.write_text(main_config(directory, site))
        process = launch_nginx(nginx, directory, conf)
        try:
            await wait_for_port(https_port, process, directory / "error.log")
            state = Stack(
                http_port, https_port, ssl.create_default_context(cafile=ca_file), env, directory
            )
            try:
                yield state
            finally:
                for client in state.clients.values():
                    await client.aclose()
        finally:
            process.terminate()
            process.wait(timeout=10)


# ------------------------------------------------------------ TLS, HSTS, redirect


async def test_https_answers_carry_one_hsts_header(stack: Stack) -> None:
    """Over https every answer, Bastion's or nginx's own, has exactly one
    Strict-Transport-Security (RFC 6797 §8.1: a browser heeds only the first)."""
    for path, status in (("/health", 200), ("/no-such-page", 404), ("/me", 401)):
        response = await stack.https("GET", path)
        assert response.status_code == status, response.text
        assert response.headers.get_list("strict-transport-security") == [HSTS]
        assert "server" not in response.headers or "nginx/" not in response.headers["server"]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_plain_http_is_redirected_to_https(stack: Stack, method: str) -> None:
    """Port 80 answers only a 308 to the same path over https (the method is
    kept, RFC 9110 §15.4.9); nothing reaches Bastion over plain http."""
    async with httpx.AsyncClient() as http:
        response = await http.request(
            method,
            f"http://{HOST}:{stack.http_port}/oauth/token?x=1",
            headers={"Host": SERVER_NAME},
        )
    assert response.status_code == 308
    assert response.headers["location"] == f"https://{SERVER_NAME}/oauth/token?x=1"
    assert "strict-transport-security" not in response.headers  # ignored over http anyway


async def test_unknown_host_names_are_refused(stack: Stack) -> None:
    """Another Host over http gets the connection closed (444); another SNI
    over https fails the handshake: no redirect, no certificate shown."""
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"http://{HOST}:{stack.http_port}/", headers={"Host": "evil.test"})
    # A client of its own: a pooled connection would skip the handshake.
    transport = httpx.AsyncHTTPTransport(verify=stack.tls)
    async with httpx.AsyncClient(transport=transport) as fresh:
        with pytest.raises(httpx.ConnectError):
            await fresh.get(
                f"https://{HOST}:{stack.https_port}/health",
                headers={"Host": "evil.test"},
                extensions={"sni_hostname": "evil.test"},
            )


async def test_oversized_body_is_413_at_nginx(stack: Stack) -> None:
    """A body over 64 KiB is refused by nginx with an RFC 9457 problem; one
    just under it reaches Bastion (buffered in memory, no temp file)."""
    big = b'{"email": "a@example.com", "password": "' + b"x" * 70_000 + b'"}'
    headers = {"Content-Type": "application/json"}
    refused = await stack.https("POST", "/auth/register", content=big, headers=headers)
    assert refused.status_code == 413
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 413
    assert refused.headers.get_list("strict-transport-security") == [HSTS]
    near = b'{"email": "a@example.com", "password": "' + b"x" * 60_000 + b'"}'
    passed = await stack.https("POST", "/auth/register", content=near, headers=headers)
    assert passed.status_code in (400, 422), passed.text  # Bastion's answer: too long a password


# ------------------------------------------------------------ X-Forwarded-For


async def test_rate_limit_is_keyed_by_the_client_not_by_nginx(stack: Stack) -> None:
    """Every request reaches Bastion from nginx's address, yet each client has
    its own quota; a forged X-Forwarded-For does not buy a fresh one."""

    async def spent_refresh(source: str, forged: str | None = None) -> httpx.Response:
        headers = {"X-Forwarded-For": forged} if forged else {}
        data = {"grant_type": "refresh_token", "refresh_token": "brt_unknown"}
        return await stack.https("POST", "/oauth/token", source, data=data, headers=headers)

    statuses = [(await spent_refresh("127.0.0.3")).status_code for _ in range(TOKEN_IP_QUOTA)]
    assert statuses == [400] * TOKEN_IP_QUOTA
    refused = await spent_refresh("127.0.0.3", forged="198.51.100.7")
    assert_oauth_error(refused, 429, "invalid_request")
    assert rate_limit_fields(refused)["ratelimit-policy"]["name"] == "token_ip"
    assert refused.headers.get_list("strict-transport-security") == [HSTS]
    assert (await spent_refresh("127.0.0.4")).status_code == 400


async def test_lockout_and_audit_see_the_client_address(stack: Stack) -> None:
    """Two failures from one client lock that client (and only it) out of the
    account; the audit log records each client's own address."""
    email = "lockout@example.com"
    created = await stack.https(
        "POST", "/auth/register", "127.0.0.5", json={"email": email, "password": PASSWORD}
    )
    assert created.status_code == 201, created.text
    for _ in range(2):
        assert_oauth_error(await stack.login("127.0.0.6", email, "wrong"), 400, "invalid_grant")
    locked = await stack.login("127.0.0.6", email)
    assert_oauth_error(locked, 429, "invalid_request", PASSWORD)
    assert "ratelimit-policy" not in locked.headers  # the lockout, not a quota
    assert (await stack.login("127.0.0.7", email)).status_code == 200

    admin = await stack.login("127.0.0.8", ADMIN)
    assert admin.status_code == 200, admin.text
    bearer = {"Authorization": f"Bearer {admin.json()['access_token']}"}
    admin_id = (await stack.https("GET", "/me", "127.0.0.8", headers=bearer)).json()["id"]
    page = await stack.https(
        "GET", "/admin/audit?action=login.succeeded&limit=50", "127.0.0.8", headers=bearer
    )
    assert page.status_code == 200, page.text
    ips = {event["actor"]: event["details"]["ip"] for event in page.json()["items"]}
    assert ips[admin_id] == "127.0.0.8"
    assert "127.0.0.7" in ips.values()
    failed = await stack.https(
        "GET", "/admin/audit?action=login.failed&limit=50", "127.0.0.8", headers=bearer
    )
    assert {event["details"]["ip"] for event in failed.json()["items"]} == {"127.0.0.6"}
