"""OAuth 2.0 scope strings (RFC 6749 §3.3).

A scope is a space-delimited list of case-sensitive tokens, each made of the
characters ``%x21 / %x23-5B / %x5D-7E`` (printable ASCII without space, ``"``
and ``\\``). Parsing is strict so a hostile value cannot smuggle separators or
control characters into a token claim.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bastion.errors import InvalidScope

_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
MAX_SCOPE_LENGTH = 2048


def parse_scope(value: str | None) -> frozenset[str]:
    """The set of scope tokens in ``value``; empty for ``None`` or blank.

    Raises :class:`InvalidScope` for characters outside the §3.3 grammar.
    """
    if value is None:
        return frozenset()
    if len(value) > MAX_SCOPE_LENGTH:
        raise InvalidScope("The scope parameter is too long.")
    tokens = value.split(" ")
    result = frozenset(t for t in tokens if t)
    if any(not _SCOPE_TOKEN.fullmatch(t) for t in result):
        raise InvalidScope(
            "The scope parameter contains characters RFC 6749 section 3.3 does not allow."
        )
    return result


def format_scope(scopes: Iterable[str]) -> str:
    """Canonical, sorted, space-delimited form for tokens and responses."""
    return " ".join(sorted(set(scopes)))
