"""Client authentication at the OAuth endpoints (token, revocation,
introspection): reading which client is calling, per RFC 6749 §2.3.

Two methods, as RFC 8414 advertises them:

- ``client_secret_basic`` (§2.3.1): ``Authorization: Basic`` over the client
  id and secret, each *form-urlencoded first* (Appendix B), so a ``:`` in an
  id survives; decoded here with ``unquote_plus``.
- ``client_secret_post`` (§2.3.1): ``client_id`` and ``client_secret`` form
  fields.

§2.3: a client MUST NOT use more than one method in one request, so Basic
with a ``client_secret`` field is ``invalid_request``; a ``client_id`` field
beside Basic must name the same client. A malformed Basic header is
``invalid_client`` (401, ``WWW-Authenticate: Basic``, §5.2): the client tried
to authenticate and failed. Other ``Authorization`` schemes (a bearer token)
are not client authentication and are left alone here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote_plus

from bastion.credentials.basic import decode_basic_credentials
from bastion.errors import InvalidClient, InvalidRequest

__all__ = ["AUTH_METHODS", "ClientCredentials", "read_client_credentials"]

logger = logging.getLogger("bastion.server")

AUTH_METHODS = ("client_secret_basic", "client_secret_post")
"""What the server metadata lists (RFC 8414 §2), beside ``none`` for public clients."""

Method = Literal["client_secret_basic", "client_secret_post", "none"]


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """What a request said about its client; nothing verified yet."""

    client_id: str | None
    secret: str | None = None
    method: Method = "none"

    @property
    def presented(self) -> bool:
        """Whether the request named a client at all."""
        return self.client_id is not None or self.secret is not None


def read_client_credentials(
    authorization: str | None, client_id: str | None, client_secret: str | None
) -> ClientCredentials:
    """The client credentials of a request: its ``Authorization`` header and
    its ``client_id`` and ``client_secret`` form fields."""
    scheme, _, token68 = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        if client_secret is not None:
            return ClientCredentials(client_id, client_secret, "client_secret_post")
        return ClientCredentials(client_id)
    if client_secret is not None:
        raise InvalidRequest("Use one client authentication method, not two (RFC 6749 2.3).")
    try:
        raw_id, raw_secret = decode_basic_credentials(token68.strip(" "))
    except ValueError as exc:
        logger.debug("client authentication refused: malformed Basic credentials (%s)", exc)
        raise InvalidClient("Client authentication failed.") from None
    try:
        basic_id = unquote_plus(raw_id, errors="strict")
        secret = unquote_plus(raw_secret, errors="strict")
    except UnicodeDecodeError:
        logger.debug("client authentication refused: percent-encoding is not UTF-8")
        raise InvalidClient("Client authentication failed.") from None
    if not basic_id:
        raise InvalidClient("Client authentication failed.")
    if client_id is not None and client_id != basic_id:
        raise InvalidRequest("The client_id parameter names another client than the credentials.")
    return ClientCredentials(basic_id, secret, "client_secret_basic")
