"""Which passwords Bastion accepts, after NIST SP 800-63B and OWASP ASVS v4.

Section numbers: SP 800-63B-4 §3.1.1.2 "Password Verifiers" (the same rules
were §5.1.1.2 "Memorized Secret Verifiers" in revision 3); ASVS v4.0.3 §2.1
"Password Security". The rules, and where each comes from:

- **Length, counted in Unicode code points after NFKC normalisation**, never in
  bytes (SP 800-63B: each code point counts as one character). Defaults: at
  least 8 (the SP 800-63B rev. 3 floor; revision 4 keeps 8 for passwords used
  with a second factor), at most 128 (ASVS 2.1.2: permit at least 64, deny
  more than 128). Operators who rely on the password alone should raise the
  minimum (``BASTION_PASSWORD_MIN_LENGTH``): ASVS 2.1.1 asks for 12 and
  SP 800-63B-4 for 15.
- **No composition rules** (SP 800-63B; ASVS 2.1.9): a long all-lowercase
  passphrase is fine.
- **Every printable character is allowed**, spaces and emoji included
  (ASVS 2.1.4; SP 800-63B: accept printing ASCII, space and Unicode).
  Refused, with reason ``invalid_characters``: control characters (Unicode
  category ``Cc``: NUL, tab, line breaks, DEL, C1 controls) and lone
  surrogates (``Cs``). They are not printable, a user cannot type them
  reliably on another device, NUL truncates in C-string consumers, and a lone
  surrogate cannot be encoded as UTF-8 at all. Format characters (``Cf``) stay
  allowed: emoji sequences need the zero-width joiner.
- **NFKC normalisation** before anything else (SP 800-63B: apply the
  Normalization Process for Stabilized Strings with NFKC or NFKD, UAX #15), so
  the same password typed on keyboards that produce different code points
  (fullwidth forms, ligatures, combining accents) verifies.
  :func:`normalize_password` is the one place this happens; login applies it
  too.
- **Blocklist** of the 20,000 most common passwords (SP 800-63B: compare new
  passwords against commonly used, expected or compromised values; ASVS
  2.1.7), compared case-insensitively, plus passwords made of one repeated
  character (SP 800-63B's "repetitive characters" example).
- **Context words**: the name part of the user's email address (SP 800-63B's
  "context-specific words"), only when it has at least 3 characters so that
  ``a@example.com`` does not forbid every password containing an ``a``.
- **Never truncated** (SP 800-63B; ASVS 2.1.3): the checked, normalised
  password is what gets hashed. Spaces are kept as typed (both documents only
  *allow* collapsing repeated spaces).
"""

from __future__ import annotations

import functools
import unicodedata
from importlib import resources
from typing import Final, Literal

from bastion.errors import PasswordRejected

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_MIN_LENGTH",
    "MAX_INPUT_LENGTH",
    "PasswordPolicy",
    "RejectionReason",
    "load_common_passwords",
    "normalize_password",
]

RejectionReason = Literal["too_short", "too_long", "common", "contains_email", "invalid_characters"]
"""The stable machine codes carried in :attr:`PasswordRejected.reason`."""

DEFAULT_MIN_LENGTH: Final = 8
DEFAULT_MAX_LENGTH: Final = 128

MAX_INPUT_LENGTH: Final = 4096
"""Code points of raw input worth normalising at all.

NFKC can shrink text (a Hangul syllable typed as three jamo becomes one code
point), so the real limit is checked after normalising; this bound stops a
megabyte "password" from costing normalisation time first. NFKC composes at
most four code points into one (polytonic Greek such as U+1F82), and this is
four times the largest ``max_length`` settings allow (1024), so it never
refuses a password the policy would accept; a policy with a larger
``max_length`` raises its bound to four times that
(:attr:`PasswordPolicy.max_input_length`)."""

_MIN_CONTEXT_WORD_LENGTH: Final = 3
_COMMON_PASSWORDS_RESOURCE: Final = "data/common-passwords.txt"
_INVALID_CATEGORIES: Final = frozenset({"Cc", "Cs"})


def normalize_password(password: str) -> str:
    """The form of ``password`` that is checked, hashed and verified: NFKC.

    Registration, password change and login must all go through here, or a
    password typed with a different (but equivalent) code point sequence would
    not verify.
    """
    return unicodedata.normalize("NFKC", password)


@functools.cache
def load_common_passwords() -> frozenset[str]:
    """The shipped blocklist, casefolded; read once, on first use.

    Lazy so that importing Bastion costs nothing; a server may call this at
    start to move the one-off read (about 20,000 lines) out of the first
    registration.
    """
    text = (
        resources.files("bastion").joinpath(_COMMON_PASSWORDS_RESOURCE).read_text(encoding="utf-8")
    )
    return frozenset(
        line.casefold()
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    )


class PasswordPolicy:
    """Checks a new password and returns the form to hash.

    ``common_passwords`` replaces the shipped blocklist (entries are casefolded
    here, so any case will do); ``None`` uses the shipped list, loaded lazily.
    """

    def __init__(
        self,
        min_length: int = DEFAULT_MIN_LENGTH,
        max_length: int = DEFAULT_MAX_LENGTH,
        common_passwords: frozenset[str] | None = None,
    ) -> None:
        if min_length < 1:
            raise ValueError("min_length must be at least 1")
        if max_length < min_length:
            raise ValueError("max_length must not be smaller than min_length")
        self.min_length = min_length
        self.max_length = max_length
        self._common = (
            None
            if common_passwords is None
            else frozenset(normalize_password(p).casefold() for p in common_passwords)
        )

    @property
    def max_input_length(self) -> int:
        """Raw code points beyond which input is refused before normalising.

        Also the bound login uses: no password this policy accepts is longer.
        """
        return max(MAX_INPUT_LENGTH, 4 * self.max_length)

    @property
    def common_passwords(self) -> frozenset[str]:
        """The blocklist in use, casefolded."""
        return self._common if self._common is not None else load_common_passwords()

    def check(self, password: str, *, email: str | None = None) -> str:
        """Return the NFKC-normalised ``password``, or raise :class:`PasswordRejected`.

        ``email`` is the address of the account the password is for; its name
        part must not appear in the password. Checks run in a fixed order and
        the first failure is reported.
        """
        if len(password) > self.max_input_length:
            raise self._too_long()
        normalized = normalize_password(password)
        if any(unicodedata.category(ch) in _INVALID_CATEGORIES for ch in normalized):
            raise PasswordRejected(
                "invalid_characters",
                "Password must not contain control characters (such as tabs, "
                "line breaks or NUL) or invalid Unicode.",
            )
        length = len(normalized)
        if length < self.min_length:
            raise PasswordRejected(
                "too_short", f"Password must be at least {self.min_length} characters long."
            )
        if length > self.max_length:
            raise self._too_long()
        folded = normalized.casefold()
        if folded in self.common_passwords or len(set(folded)) == 1:
            raise PasswordRejected(
                "common",
                "This password is too common and easy to guess; choose a different one.",
            )
        if email is not None and any(word in folded for word in _email_words(email)):
            raise PasswordRejected(
                "contains_email",
                "Password must not contain the name part of your email address.",
            )
        return normalized

    def _too_long(self) -> PasswordRejected:
        return PasswordRejected(
            "too_long", f"Password must be at most {self.max_length} characters long."
        )


def _email_words(email: str) -> set[str]:
    """Context words taken from ``email``: its local part and, for subaddresses
    (``name+tag@``, RFC 5233), the part before the ``+``; casefolded, and only
    those long enough to mean something."""
    before, at, after = normalize_password(email.strip()).rpartition("@")
    name = (before if at else after).casefold()
    words = {name, name.partition("+")[0]}
    return {w for w in words if len(w) >= _MIN_CONTEXT_WORD_LENGTH}
