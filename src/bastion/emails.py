"""The case-insensitive keys under which emails and usernames are unique.

The store keeps an address as the user typed it and, beside it, this canonical
form under a unique constraint, so ``Alice@Example.com`` and ``alice@example.COM``
are one account. The whole address is folded, local part included: RFC 5321
§2.4 lets a mail server treat local parts as case-sensitive, but no real
provider does, and two accounts that differ only in case invite takeover.

Folding is Unicode *caseless matching* (Unicode §3.13, D145): decompose,
``casefold()`` (so ``ß`` matches ``SS``), then recompose to NFC, so a composed
``ü`` and ``u`` + combining diaeresis are the same key too.
"""

from __future__ import annotations

import unicodedata

__all__ = ["canonical_email", "canonical_username"]


def _caseless(value: str) -> str:
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", value.strip()).casefold())


def canonical_email(email: str) -> str:
    """The uniqueness key of an email address: stripped, case-folded, NFC."""
    return _caseless(email)


def canonical_username(username: str) -> str:
    """The uniqueness key of a username; the same folding as emails."""
    return _caseless(username)
