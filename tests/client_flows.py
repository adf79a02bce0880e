"""Steps shared by the OAuth client tests: register a client through the
service, build RFC 6749 §2.3.1 Basic headers, ask for client-credentials
tokens."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote_plus

import httpx

from bastion.core import Bastion
from tests.secrets_in_logs import register


@dataclass(frozen=True)
class Registered:
    client_id: str
    secret: str


async def new_client(
    bastion: Bastion,
    *,
    grants: Iterable[str] = ("client_credentials",),
    scopes: Iterable[str] = ("content:read", "reports:*"),
    client_id: str | None = None,
) -> Registered:
    """A confidential client; its secret is registered with the log check."""
    issued = await bastion.clients.create(
        name="Test service", grant_types=grants, scopes=scopes, client_id=client_id
    )
    assert issued.secret is not None
    register(issued.secret)
    return Registered(issued.client.client_id, issued.secret)


def basic(client_id: str, secret: str, *, encode: bool = True) -> dict[str, str]:
    """``Authorization: Basic`` over id and secret, form-urlencoded first
    (RFC 6749 §2.3.1) unless ``encode`` is false (plain RFC 7617)."""
    if encode:
        client_id, secret = quote_plus(client_id), quote_plus(secret)
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def raw_basic(payload: bytes) -> dict[str, str]:
    """``Authorization: Basic`` over arbitrary bytes."""
    return {"Authorization": "Basic " + base64.b64encode(payload).decode()}


async def client_credentials(
    http: httpx.AsyncClient,
    registered: Registered,
    *,
    method: str = "basic",
    **form: str,
) -> httpx.Response:
    """``grant_type=client_credentials`` authenticated with ``method``
    (``basic`` or ``post``)."""
    data = {"grant_type": "client_credentials", **form}
    headers: dict[str, str] = {}
    if method == "basic":
        headers = basic(registered.client_id, registered.secret)
    else:
        data |= {"client_id": registered.client_id, "client_secret": registered.secret}
    return await http.post("/oauth/token", data=data, headers=headers)
