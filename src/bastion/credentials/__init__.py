"""The ways a caller proves who they are, as FastAPI security schemes.

Each module is one scheme and turns its credential into the same
:class:`~bastion.guard.Principal` (``auth_method`` says which): an API key
header, HTTP Basic with a client secret (RFC 7617), a browser session cookie
with its CSRF defence, and ``any_principal``, which accepts any of them and the
bearer token of :mod:`bastion.guard`. The services behind them know nothing of
HTTP (:mod:`bastion.api_keys`, :mod:`bastion.clients`,
:mod:`bastion.browser_sessions`).
"""
