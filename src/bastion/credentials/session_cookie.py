"""The browser-session scheme: the session cookie, and its CSRF defence.

    @app.post("/notes")
    async def add(p: Annotated[Principal, Security(bastion.session_principal)]): ...

:class:`SessionGuard` is a ``fastapi.security`` scheme (OpenAPI: ``apiKey``
in the cookie ``__Host-bastion_session``). It resumes the server-side session
(:class:`~bastion.browser_sessions.BrowserSessionService`), requires the user
to be active, and gives a :class:`~bastion.guard.Principal` with
``auth_method="session"``, the user's effective roles and permissions (read
afresh, so a role taken away counts at once) and ``session_id`` = the
session's public id. Unsafe methods must pass :mod:`bastion.csrf`.

Answers:

- no cookie: 401 when ``auto_error``, else ``None``;
- a cookie that is malformed, unknown, ended or expired, or whose user is
  disabled: 401, whatever ``auto_error`` says, and the answer clears the
  cookie. RFC 9110 §11.6.1 requires a challenge on every 401, and no cookie
  scheme is registered; Bastion sends the one of the (expired)
  draft-broyer-http-cookie-auth, ``Cookie realm="bastion",
  form-action="/login", cookie-name="__Host-bastion_session"``, which tells a
  client where to log in and which cookie it would get;
- CSRF proof missing or wrong on POST/PUT/PATCH/DELETE: 403 problem
  ("Cross-site request refused." or "CSRF token missing or wrong.");
- a scope from ``Security(..., scopes=[...])`` that the user's permissions
  lack (exact names): 403 ``insufficient_scope``; wildcards through
  :meth:`SessionGuard.require_permissions`;
- the session store or database unreachable: 503, never a pass.

The cookie (:func:`set_session_cookie`): ``HttpOnly`` (no script reads it),
``Secure``, ``SameSite=Lax`` (not sent on cross-site subrequests and POSTs:
a third layer under the CSRF checks), ``Path=/`` and no ``Domain``, which the
``__Host-`` prefix demands (RFC 6265bis §4.1.3.2) so no sibling subdomain can
set or shadow it. It is a *session* cookie, without ``Max-Age``: the browser
drops it when it closes (OWASP recommends non-persistent session cookies),
and the server's idle and absolute timeouts bound its life either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from fastapi import HTTPException, Request, Response
from fastapi.openapi.models import APIKey, APIKeyIn
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase

from bastion.clients import FIRST_PARTY_CLIENT_ID
from bastion.csrf import CSRF_FIELD, CSRF_HEADER, is_safe_method
from bastion.errors import CsrfRejected, ServiceUnavailable
from bastion.guard import (
    NOT_AUTHENTICATED,
    Principal,
    PrincipalDependency,
    insufficient_scope_error,
    require_permissions_of,
    require_roles_of,
)
from bastion.stores.protocols import BrowserSession, User

if TYPE_CHECKING:
    from bastion.accounts import AccountService
    from bastion.authz import AuthorizationService
    from bastion.browser_sessions import BrowserSessionService
    from bastion.settings import Settings

__all__ = [
    "LOGIN_URL",
    "SESSION_EXPIRED",
    "SessionCaller",
    "SessionCallerScheme",
    "SessionGuard",
    "clear_session_cookie",
    "read_csrf_token",
    "session_challenge",
    "set_session_cookie",
]

logger = logging.getLogger("bastion.credentials.session")

LOGIN_URL: Final = "/login"
SESSION_EXPIRED: Final = "The session has expired or is not valid; log in again."
FORM_TYPES: Final = ("application/x-www-form-urlencoded", "multipart/form-data")


def set_session_cookie(response: Response, value: str, settings: Settings) -> None:
    """Put the session cookie on ``response`` (see the module docstring)."""
    response.set_cookie(
        settings.session_cookie_name,
        value,
        path="/",
        secure=settings.session_cookie_secure,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    """Tell the browser to drop the session cookie. The deletion carries the
    same attributes: a ``__Host-`` cookie is only replaced by a ``Secure``,
    ``Path=/`` one."""
    response.delete_cookie(
        settings.session_cookie_name,
        path="/",
        secure=settings.session_cookie_secure,
        httponly=True,
        samesite="lax",
    )


def session_challenge(cookie_name: str, login_url: str = LOGIN_URL) -> str:
    """The ``WWW-Authenticate`` value of a 401 (draft-broyer-http-cookie-auth)."""

    def quoted(value: str) -> str:
        return "".join(c for c in value if " " <= c <= "~" and c not in '"\\')

    return (
        f'Cookie realm="bastion", form-action="{quoted(login_url)}", '
        f'cookie-name="{quoted(cookie_name)}"'
    )


async def read_csrf_token(request: Request, *, max_fields: int, max_part_size: int) -> str | None:
    """The CSRF token a request carries: the ``X-CSRF-Token`` header, else the
    ``csrf_token`` field of a form body. The body is read only when it is a
    form; Starlette caches the parsed form on the request, so a route's own
    ``Form()`` parameters see the same data (FastAPI parsed it before the
    dependencies ran, with the app's limits, or we parse it here with the
    same limits). A JSON body is never touched."""
    header = request.headers.get(CSRF_HEADER)
    if header is not None:
        return header
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in FORM_TYPES:
        return None
    form = await request.form(max_files=0, max_fields=max_fields, max_part_size=max_part_size)
    value = form.get(CSRF_FIELD)
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class SessionCaller:
    """Everything a cookie-authenticated request resolved to."""

    principal: Principal
    session: BrowserSession
    user: User


class SessionGuard(SecurityBase):
    """A FastAPI security scheme that turns the session cookie into a
    :class:`~bastion.guard.Principal` (see the module docstring)."""

    def __init__(
        self,
        service: BrowserSessionService,
        accounts: AccountService,
        authz: AuthorizationService,
        settings: Settings,
        *,
        auto_error: bool = True,
        scheme_name: str | None = "session",
        login_url: str = LOGIN_URL,
        description: str | None = None,
    ) -> None:
        self.service = service
        self.accounts = accounts
        self.authz = authz
        self.settings = settings
        self.cookie_name = settings.session_cookie_name
        self.auto_error = auto_error
        self.login_url = login_url
        self.scheme_name = scheme_name or type(self).__name__
        self.model = APIKey(
            **{"in": APIKeyIn.cookie},
            name=self.cookie_name,
            description=description
            or "A browser session from `POST /auth/session` or the login page. Unsafe "
            f"methods also need the `{CSRF_HEADER}` header (or a `{CSRF_FIELD}` form "
            "field) and a trusted `Origin`.",
        )
        self.challenge = session_challenge(self.cookie_name, login_url)

    def optional(self) -> SessionGuard:
        """The same scheme with ``auto_error=False``."""
        return type(self)(
            self.service,
            self.accounts,
            self.authz,
            self.settings,
            auto_error=False,
            scheme_name=self.scheme_name,
            login_url=self.login_url,
            description=self.model.description,
        )

    def presented(self, request: Request) -> str | None:
        return request.cookies.get(self.cookie_name)

    async def __call__(self, request: Request, security_scopes: SecurityScopes) -> Principal | None:
        caller = await self.caller(request, security_scopes.scopes)
        return caller.principal if caller is not None else None

    async def caller(
        self, request: Request, required: list[str] | None = None
    ) -> SessionCaller | None:
        """The session, user and principal behind the cookie, with CSRF
        checked for unsafe methods and ``required`` scopes checked exactly.
        ``None`` only when no cookie came and ``auto_error`` is off."""
        value = self.presented(request)
        if value is None:
            if self.auto_error:
                raise HTTPException(
                    401, NOT_AUTHENTICATED, headers={"WWW-Authenticate": self.challenge}
                )
            return None
        try:
            session = await self.service.resume(value)
            user = await self.accounts.get_active_user(session.user_id) if session else None
            if session is not None and user is None:
                await self.service.store.delete(session.id_hash)
        except ServiceUnavailable:
            logger.warning("session store unavailable; refusing the request", exc_info=True)
            raise HTTPException(503, ServiceUnavailable.default_detail) from None
        if session is None or user is None:
            logger.debug("session cookie refused: unknown, expired or user inactive")
            raise self.expired_error()
        if not is_safe_method(request.method):
            await self._check_csrf(request, session)
        effective = await self.authz.effective(user.id)
        principal = Principal(
            subject=str(user.id),
            scopes=effective.permissions,
            roles=tuple(sorted(effective.roles)),
            client_id=FIRST_PARTY_CLIENT_ID,
            claims=None,
            token_id=None,
            auth_method="session",
            session_id=session.public_id,
        )
        if required and not principal.scopes.issuperset(required):
            logger.debug("session user lacks scopes %s", required)
            raise insufficient_scope_error(list(required))
        return SessionCaller(principal, session, user)

    def expired_error(self) -> HTTPException:
        """401 for a dead cookie: the challenge, and the cookie cleared."""
        clearing = Response()
        clear_session_cookie(clearing, self.settings)
        return HTTPException(
            401,
            SESSION_EXPIRED,
            headers={
                "WWW-Authenticate": self.challenge,
                "Set-Cookie": clearing.headers["set-cookie"],
            },
        )

    async def _check_csrf(self, request: Request, session: BrowserSession) -> None:
        token = await read_csrf_token(
            request,
            max_fields=self.settings.max_form_fields,
            max_part_size=self.settings.max_form_part_bytes,
        )
        try:
            self.service.check_csrf(
                session,
                token,
                origin=request.headers.get("origin"),
                referer=request.headers.get("referer"),
            )
        except CsrfRejected as exc:
            logger.info("CSRF check failed on %s %s: %s", request.method, request.url.path, exc)
            raise HTTPException(403, exc.detail) from None

    def caller_dependency(self) -> SessionCallerScheme:
        """A dependency giving the whole :class:`SessionCaller` (session and
        user too), with the same checks and the same OpenAPI scheme."""
        return SessionCallerScheme(self)

    # ------------------------------------------------------------------ roles and permissions

    def require_roles(self, *roles: str) -> PrincipalDependency:
        """Admit session users holding every one of ``roles`` (hierarchy
        included: the principal carries the role closure); 403 otherwise."""
        return require_roles_of(self, *roles)

    def require_permissions(self, *permissions: str) -> PrincipalDependency:
        """Admit session users whose permissions grant every one of
        ``permissions``, wildcards honoured; 403 ``insufficient_scope`` otherwise."""
        return require_permissions_of(self, *permissions)


class SessionCallerScheme(SecurityBase):
    """:meth:`SessionGuard.caller_dependency`: the guard's scheme, answering
    a :class:`SessionCaller`; a missing cookie is always a 401."""

    def __init__(self, guard: SessionGuard) -> None:
        self.guard = guard
        self.model = guard.model
        self.scheme_name = guard.scheme_name

    async def __call__(self, request: Request, security_scopes: SecurityScopes) -> SessionCaller:
        caller = await self.guard.caller(request, security_scopes.scopes)
        if caller is None:  # an optional guard and no cookie
            raise HTTPException(
                401, NOT_AUTHENTICATED, headers={"WWW-Authenticate": self.guard.challenge}
            )
        return caller
