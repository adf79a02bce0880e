"""Cross-site request forgery defence for cookie-authenticated requests.

A browser attaches the session cookie to any request to our site, whoever's
page made it: the cookie is an *ambient* credential. So a state-changing
request authenticated by it must also prove it came from our own pages, twice
over (OWASP CSRF Prevention Cheat Sheet, "defense in depth"):

1. **A token bound to the session** (the synchronizer-token pattern): the
   ``X-CSRF-Token`` header or the ``csrf_token`` form field must equal
   HMAC-SHA256(k, id_hash), where ``k`` is derived from the server's secret
   key and ``id_hash`` is the SHA-256 of the session cookie. Another site can
   neither read it (the same-origin policy) nor compute it (no key), and a
   token of one session is worthless in another. Nothing extra is stored.
2. **The request's origin**: ``Origin`` (RFC 6454 §7; Fetch sends it on every
   cross-origin request and on same-origin ones that are not GET/HEAD) or,
   when a client sent none, the origin of ``Referer`` (RFC 9110 §10.1.3) must
   be one of the trusted origins. ``Origin: null`` (sandboxed frames,
   redirects across origins, ``file:`` pages) is refused, as is a request
   with neither header.

Safe methods (RFC 9110 §9.2.1: GET, HEAD, OPTIONS, TRACE) are exempt, which is
only sound because Bastion never changes state on them. So are requests that
carry a bearer token or an API key: a browser never attaches those by itself.
``SameSite=Lax`` on the cookie is a third layer, not relied upon (it does not
cover same-site, cross-origin attackers such as a sibling subdomain).

No HTTP here: the edge passes header values in and maps
:class:`~bastion.errors.CsrfRejected` to a 403 problem.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from bastion.errors import CsrfRejected

__all__ = [
    "CROSS_SITE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SAFE_METHODS",
    "TOKEN_MISMATCH",
    "OriginPolicy",
    "csrf_token_for",
    "derive_csrf_key",
    "is_safe_method",
    "origin_of",
    "token_matches",
]

CSRF_HEADER: Final = "X-CSRF-Token"
CSRF_FIELD: Final = "csrf_token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""RFC 9110 §9.2.1."""

CROSS_SITE: Final = "Cross-site request refused."
TOKEN_MISMATCH: Final = "CSRF token missing or wrong."

MAX_TOKEN_LENGTH: Final = 128
"""Longer presented tokens are refused before any comparison."""

_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_safe_method(method: str) -> bool:
    return method.upper() in SAFE_METHODS


def derive_csrf_key(secret: str) -> bytes:
    """A key for CSRF tokens only, derived from the server's secret so that a
    token never doubles as anything else the secret protects."""
    return hmac.new(secret.encode(), b"bastion csrf token v1", hashlib.sha256).digest()


def csrf_token_for(key: bytes, id_hash: str) -> str:
    """The session's CSRF token: base64url HMAC-SHA256 of its id hash (43 characters)."""
    mac = hmac.new(key, id_hash.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def token_matches(expected: str, presented: str | None) -> bool:
    """Constant-time comparison; a missing or oversized token never matches."""
    if not presented or len(presented) > MAX_TOKEN_LENGTH:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "replace"))


def origin_of(url: str) -> str | None:
    """The RFC 6454 §6.2 ASCII serialisation ``scheme://host[:port]`` of an
    http(s) URL, with the scheme and host lowercased and a default port
    dropped; ``None`` for anything else (``null``, other schemes, garbage)."""
    if len(url) > 2048 or any(c < " " or c == "\x7f" for c in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password:
        return None
    if ":" in host:  # IPv6 literal: back into brackets
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class OriginPolicy:
    """Which origins may send state-changing, cookie-authenticated requests.

    Raises :class:`ValueError` for a trusted origin that is not an http(s)
    origin (a path, a query or a fragment make it one that can never match)."""

    def __init__(self, trusted: Iterable[str]) -> None:
        normalized: set[str] = set()
        for entry in trusted:
            origin = origin_of(entry)
            parts = urlsplit(entry)
            if origin is None or parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"not an origin (scheme://host[:port]): {entry!r}")
            normalized.add(origin)
        if not normalized:
            raise ValueError("at least one trusted origin is needed")
        self.trusted = frozenset(normalized)

    def allows(self, origin: str | None, referer: str | None) -> bool:
        """``Origin`` decides when present; otherwise ``Referer``; neither: no."""
        if origin is not None:
            if origin.strip().lower() == "null":
                return False
            parts = urlsplit(origin) if len(origin) <= 2048 else None
            if parts is None or parts.path or parts.query or parts.fragment:
                return False  # an Origin header is an origin, nothing more
            return origin_of(origin) in self.trusted
        if referer:
            return origin_of(referer) in self.trusted
        return False

    def check(self, origin: str | None, referer: str | None) -> None:
        """:class:`CsrfRejected` ("Cross-site request refused.") unless :meth:`allows`."""
        if not self.allows(origin, referer):
            raise CsrfRejected(CROSS_SITE)
