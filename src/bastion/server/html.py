"""What the HTML pages share: templates, fixed messages, safe redirects, and
the mapping of errors to pages instead of problem details.

- **Templates** are Jinja2 with autoescaping on for everything, so a name or
  a user agent can never become markup. The pages carry no script and no
  inline style: the CSP (:data:`bastion.security_headers.PAGES_CSP`) allows
  the one stylesheet from this origin and nothing else.
- **Messages after a redirect** travel as a short code in the query string
  (``?done=key_revoked``) that maps to a fixed sentence here; an unknown code
  shows nothing. No input is ever reflected, and no flash cookie is needed.
- **``next``** after a login is a same-site path only (:func:`safe_next`):
  the login form must not become an open redirect (OWASP Unvalidated
  Redirects and Forwards Cheat Sheet).
- **Errors** raised by a page route (:class:`~bastion.errors.BastionError`,
  ``HTTPException``, a malformed form) become an HTML page with the same
  status and a clear sentence (:func:`page_route_class`); a 429 keeps its
  ``Retry-After``. Every page is ``Cache-Control: no-store``: they show
  personal data, CSRF tokens and, once, a new API key (RFC 9111 §5.2.2.5).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined

from bastion.errors import BastionError, RateLimited
from bastion.server.errors import rate_limit_headers

__all__ = [
    "DEFAULT_NEXT",
    "MESSAGES",
    "NO_STORE",
    "LoginRequired",
    "Pages",
    "page_route_class",
    "safe_next",
]

logger = logging.getLogger("bastion.server.pages")

DEFAULT_NEXT: Final = "/account"
MAX_NEXT_LENGTH: Final = 512
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}

MESSAGES: Final[Mapping[str, str]] = {
    "signed_out": "You are signed out.",
    "session_expired": "Your session has ended. Sign in again to continue.",
    "password_changed": "Your password was changed and every session ended. "
    "Sign in with the new password.",
    "session_ended": "The session was ended.",
    "key_revoked": "The API key was revoked; it no longer works.",
}
"""What a ``done`` code says; the only texts a redirect can make a page show."""

FORM_INVALID: Final = "The form was incomplete or malformed; nothing was changed."


def safe_next(value: str | None) -> str:
    """``value`` when it is a path on this site, else :data:`DEFAULT_NEXT`.

    Refused: anything with a scheme or a host (``https://evil.example``,
    ``javascript:…``), protocol-relative ``//evil.example``, backslashes
    (browsers read ``/\\evil.example`` as ``//evil.example``), control
    characters and whitespace (browsers strip some of them before parsing),
    and overlong values."""
    if not value or len(value) > MAX_NEXT_LENGTH:
        return DEFAULT_NEXT
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return DEFAULT_NEXT
    if any(c <= " " or c == "\x7f" for c in value):
        return DEFAULT_NEXT
    try:
        parts = urlsplit(value)
    except ValueError:
        return DEFAULT_NEXT
    if parts.scheme or parts.netloc:
        return DEFAULT_NEXT
    return value


def when(moment: datetime | None) -> str:
    """A time as the pages show it: to the minute, in UTC."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class LoginRequired(Exception):
    """No live session: send the browser to the login page. ``expired`` when
    a cookie came but named no live session (it is cleared then)."""

    def __init__(self, next_path: str, *, expired: bool) -> None:
        self.next_path = next_path
        self.expired = expired
        super().__init__(next_path)


class Pages:
    """Renders the templates of :mod:`bastion.server.templates`."""

    def __init__(self, clear_cookie: Callable[[Response], None]) -> None:
        self.env = Environment(
            loader=PackageLoader("bastion.server", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals["when"] = when
        self._clear_cookie = clear_cookie

    def render(
        self,
        request: Request,
        template: str,
        *,
        title: str,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """A page, never cached. ``notice`` comes from a ``done`` code in the
        query unless the caller gives one; ``error`` only from the caller."""
        root = request.scope.get("root_path", "")
        values: dict[str, Any] = {
            "title": title,
            "signed_in": False,
            "error": None,
            "notice": MESSAGES.get(request.query_params.get("done", "")),
            "url": lambda path: root + path,
        }
        values.update(context)
        body = self.env.get_template(template).render(values)
        return HTMLResponse(body, status_code=status, headers={**NO_STORE, **(headers or {})})

    def error(
        self,
        request: Request,
        status: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        signed_in: bool = False,
    ) -> HTMLResponse:
        """The error page: a heading, the message, a way back."""
        title = _TITLES.get(status, "Something went wrong")
        return self.render(
            request,
            "error.html",
            title=title,
            status=status,
            headers=headers,
            error=message,
            signed_in=signed_in,
        )

    def to_login(self, request: Request, required: LoginRequired) -> RedirectResponse:
        """303 to the login page, keeping where the user wanted to go."""
        root = request.scope.get("root_path", "")
        query: dict[str, str] = {"next": required.next_path}
        if required.expired:
            query["done"] = "session_expired"
        response = RedirectResponse(
            f"{root}/login?{urlencode(query)}", status_code=303, headers=NO_STORE
        )
        if required.expired:
            self._clear_cookie(response)
        return response


_TITLES: Final = {
    400: "Bad request",
    401: "Sign-in needed",
    403: "Request refused",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    422: "Invalid input",
    429: "Too many attempts",
    503: "Service unavailable",
}

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


def page_route_class(pages: Pages) -> type[APIRoute]:
    """An :class:`APIRoute` whose errors are pages (see the module docstring)."""

    class PageRoute(APIRoute):
        def get_route_handler(self) -> Endpoint:
            handler = super().get_route_handler()

            async def page_handler(request: Request) -> Response:
                try:
                    return await handler(request)
                except LoginRequired as required:
                    return pages.to_login(request, required)
                except RateLimited as exc:
                    return pages.error(request, 429, exc.detail, headers=rate_limit_headers(exc))
                except BastionError as exc:
                    if exc.status_code >= 500:
                        logger.error("page %s failed: %s", request.url.path, exc.detail)
                    return pages.error(request, exc.status_code, exc.detail)
                except RequestValidationError:
                    return pages.error(request, 422, FORM_INVALID)
                except HTTPException as exc:
                    detail = exc.detail if isinstance(exc.detail, str) else FORM_INVALID
                    headers = {
                        k: v for k, v in (exc.headers or {}).items() if k.lower() == "retry-after"
                    }
                    return pages.error(request, exc.status_code, detail, headers=headers)

            return page_handler

    return PageRoute
