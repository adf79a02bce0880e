"""Response hardening of the HTTP edge: security headers, trusted hosts, HTTPS only.

Pure ASGI, with every header precomputed: :class:`SecurityHeaders` runs on
every request, so its per-request cost is a path lookup and a list extend.

- Every response: ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
  no-referrer``, ``X-Frame-Options: DENY``, ``Cross-Origin-Opener-Policy:
  same-origin`` and a CSP that allows nothing (``default-src 'none';
  frame-ancestors 'none'; base-uri 'none'; form-action 'self'``). The API
  answers JSON, so the CSP costs nothing there and keeps a response that a
  browser is tricked into rendering inert (OWASP REST Security Cheat Sheet).
- ``Strict-Transport-Security`` (RFC 6797) when configured; the server turns
  it on in production.
- The interactive docs (``/docs``, ``/redoc``) load Swagger UI and ReDoc from
  ``cdn.jsdelivr.net`` and run an inline script: they get a CSP that allows
  that CDN and exactly the inline scripts the page carries (their SHA-256
  hashes, computed from the body actually sent), never ``'unsafe-inline'``
  scripts.
- The HTML pages (``/login``, ``/logout``, ``/account``, ``/static``) get
  :data:`PAGES_CSP`: their own stylesheet and images, forms posting only to
  this origin, and no script at all, inline or not. Their
  ``Referrer-Policy`` is ``same-origin`` instead of ``no-referrer``: under
  ``no-referrer`` a browser sends ``Origin: null`` with a form POST (Fetch
  standard, "serializing a request origin"), and the pages' CSRF defence
  needs the real origin; other sites still get no referrer.
- ``Cache-Control: no-store`` and ``Pragma: no-cache`` on every answer under
  the prefixes that carry tokens, secrets or personal data (RFC 6749 §5.1,
  RFC 9111 §5.2.2.5), unless the route chose its own ``Cache-Control``.

:class:`TrustedHosts` and :class:`HttpsOnly` are optional and refuse with RFC
9457 problem details, like the rest of the API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "DOCS_CSP",
    "HSTS_MAX_AGE",
    "NO_STORE_PREFIXES",
    "PAGES_CSP",
    "PAGE_PREFIXES",
    "STRICT_CSP",
    "HttpsOnly",
    "SecurityHeaders",
    "TrustedHosts",
    "cors_problems",
]

HSTS_MAX_AGE: Final = 63_072_000
"""Two years, the preload list's expectation."""

STRICT_CSP: Final = (
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

DOCS_CSP: Final = (
    "default-src 'none'; "
    "script-src https://cdn.jsdelivr.net {script_hashes}; "  # hashes may be empty
    # ReDoc injects <style> elements at run time; styles cannot run code.
    "style-src https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'; "
    "font-src https://fonts.gstatic.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; "
    "worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""What FastAPI's docs pages need (``fastapi.openapi.docs``): Swagger UI's and
ReDoc's bundles and CSS from jsDelivr, Google Fonts for ReDoc, FastAPI's
favicon, ``data:`` images from Swagger's CSS, a ``blob:`` worker for ReDoc's
search, and ``'self'`` for the schema and "Try it out"."""

PAGES_CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
"""The server-rendered pages: one stylesheet from this origin, no scripts, no
``'unsafe-inline'`` of any kind (CSP Level 3)."""

PAGE_PREFIXES: Final = ("/login", "/logout", "/account", "/static")
"""Where the HTML pages live (:mod:`bastion.server.pages`)."""

NO_STORE_PREFIXES: Final = ("/oauth", "/auth", "/me", "/admin")
"""Token, revocation, introspection, account, session and admin answers."""

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def _under(path: str, prefixes: Iterable[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or below one, segment-wise."""
    for prefix in prefixes:
        if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
            return True
    return False


def _header_tuples(pairs: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in pairs]


class SecurityHeaders:
    """Add the hardening headers to every HTTP response (see the module docstring).

    Headers are appended, not replaced: a route that sets its own
    ``Content-Security-Policy`` ends up with both, and browsers enforce the
    stricter combination. Only ``Cache-Control`` defers to the route.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        hsts_max_age: int | None = None,
        no_store_prefixes: Sequence[str] = NO_STORE_PREFIXES,
        docs_paths: Iterable[str] = (),
        page_prefixes: Sequence[str] = PAGE_PREFIXES,
    ) -> None:
        self.app = app
        common = [
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Frame-Options", "DENY"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
        ]
        if hsts_max_age:
            common.append(
                ("Strict-Transport-Security", f"max-age={hsts_max_age}; includeSubDomains")
            )
        self._common = _header_tuples(common)
        self._strict = [*self._common, *_header_tuples([("Content-Security-Policy", STRICT_CSP)])]
        self._pages = [
            *(pair for pair in self._common if pair[0] != b"referrer-policy"),
            *_header_tuples(
                [("Referrer-Policy", "same-origin"), ("Content-Security-Policy", PAGES_CSP)]
            ),
        ]
        self._no_store = _header_tuples([("Cache-Control", "no-store"), ("Pragma", "no-cache")])
        self._prefixes = tuple(p.rstrip("/") for p in no_store_prefixes)
        self._page_prefixes = tuple(p.rstrip("/") for p in page_prefixes)
        self._docs_paths = frozenset(docs_paths)

    def needs_no_store(self, path: str) -> bool:
        """Whether ``path`` is under one of the no-store prefixes (segment-wise:
        ``/me`` and ``/me/sessions``, not ``/metrics``)."""
        return _under(path, self._prefixes)

    def is_page(self, path: str) -> bool:
        """Whether ``path`` is one of the HTML pages or their static files."""
        return _under(path, self._page_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path in self._docs_paths:
            await self.app(scope, receive, self._docs_sender(send))
            return
        extra = self._pages if self.is_page(path) else self._strict
        no_store = self._no_store if self.needs_no_store(path) else None

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if no_store is not None and not any(n == b"cache-control" for n, _ in headers):
                    headers.extend(no_store)
                headers.extend(extra)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _docs_sender(self, send: Send) -> Send:
        """Hold the (small) docs page until its body is complete, then send it
        with a CSP naming the hashes of exactly the inline scripts it carries."""
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_docs(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            hashes = " ".join(
                "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"
                for m in _INLINE_SCRIPT.finditer(body)
            )
            csp = DOCS_CSP.format(script_hashes=hashes).replace(" ;", ";")
            headers = [*start.get("headers", ()), *self._common]
            headers.append((b"content-security-policy", csp.encode("latin-1")))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return send_docs


# ------------------------------------------------------------------ refusals


def _problem(status: int, title: str, detail: str) -> bytes:
    return json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ).encode()


async def send_problem(
    send: Send, status: int, body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Send a complete ``application/problem+json`` answer (RFC 9457)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_BAD_HOST = _problem(
    400, "Bad request", "The Host header does not name a host this server answers for."
)
_HTTPS_REQUIRED = _problem(
    400, "HTTPS required", "This server accepts requests over HTTPS only; nothing was done."
)
_MOVED = _problem(308, "Permanent redirect", "Use HTTPS.")


def _hostname(host_header: str) -> str:
    """The host of a ``Host`` header without its port; ``[IPv6]`` keeps its brackets."""
    if host_header.startswith("["):
        return host_header.partition("]")[0] + "]"
    return host_header.partition(":")[0]


class TrustedHosts:
    """Refuse requests whose ``Host`` is not one of ``hosts`` with a 400
    problem (RFC 9110 §7.2), against Host-header injection into absolute URLs
    and cache keys. ``*.example.com`` admits subdomains of ``example.com``
    (not ``example.com`` itself); ``*`` admits everything. Hosts compare
    without the port and case-insensitively."""

    def __init__(self, app: ASGIApp, hosts: Sequence[str]) -> None:
        if not hosts:
            raise ValueError("name at least one trusted host")
        self.app = app
        self.allow_any = "*" in hosts
        self.exact = frozenset(h.lower() for h in hosts if not h.startswith("*"))
        self.suffixes = tuple(h[1:].lower() for h in hosts if h.startswith("*."))

    def allows(self, host_header: str) -> bool:
        host = _hostname(host_header).lower()
        if host in self.exact:
            return True
        return any(host.endswith(suffix) and len(host) > len(suffix) for suffix in self.suffixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allow_any:
            await self.app(scope, receive, send)
            return
        host = ""
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
                break
        if self.allows(host):
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await send_problem(send, 400, _BAD_HOST)
        else:
            await send({"type": "websocket.close", "code": 1008})


class HttpsOnly:
    """Plain-HTTP requests never reach the app. ``GET`` and ``HEAD`` are
    redirected to HTTPS with 308; any other method is refused with a 400
    problem instead of a redirect: a form or JSON body already crossed the
    network in clear, and a redirect would hide that mistake from the client
    while making it resend the credentials on every call.

    Behind a TLS-terminating proxy the scheme comes from ``X-Forwarded-Proto``
    only if the ASGI server trusts that proxy (uvicorn ``--proxy-headers``
    with ``--forwarded-allow-ips``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") == "https":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send_problem(send, 400, _HTTPS_REQUIRED)
            return
        host = ""
        for name, value in scope["headers"]:
            if name == b"host":
                host = _hostname(value.decode("latin-1"))
                break
        if not host:
            await send_problem(send, 400, _HTTPS_REQUIRED)
            return
        query = scope.get("query_string", b"")
        target = scope.get("raw_path") or scope["path"].encode("utf-8")
        location = b"https://" + host.encode("latin-1") + target + (b"?" + query if query else b"")
        await send_problem(send, 308, _MOVED, [(b"location", location)])


# ------------------------------------------------------------------ CORS

_ORIGIN = re.compile(r"https?://[^/\s?#]+")


def cors_problems(origins: Sequence[str], allow_credentials: bool) -> list[str]:
    """Why a CORS configuration is refused at start, in every mode.

    ``*`` with credentials would make Starlette reflect any caller's origin
    with ``Access-Control-Allow-Credentials: true``: every site could read
    every user's answers. An origin is ``scheme://host[:port]``, compared as
    an exact string, so a trailing slash or a path would silently never match."""
    problems = []
    if allow_credentials and "*" in origins:
        problems.append(
            "BASTION_CORS_ORIGINS contains '*' while BASTION_CORS_ALLOW_CREDENTIALS is true"
        )
    bad = [o for o in origins if o != "*" and not _ORIGIN.fullmatch(o)]
    if bad:
        problems.append(
            f"BASTION_CORS_ORIGINS entries must be scheme://host[:port] (got {', '.join(bad)})"
        )
    return problems
