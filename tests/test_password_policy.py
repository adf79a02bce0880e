"""The password policy: NIST SP 800-63B-4 §3.1.1.2 and OWASP ASVS v4 2.1."""

from __future__ import annotations

import unicodedata

import pytest

from bastion.errors import InvalidInput, PasswordRejected
from bastion.password_policy import (
    MAX_INPUT_LENGTH,
    PasswordPolicy,
    load_common_passwords,
    normalize_password,
)

OK = None
"""Expected outcome: the password is accepted."""


def fullwidth(text: str) -> str:
    """``text`` (printable ASCII) in fullwidth forms, as some East Asian keyboards type it."""
    return "".join(chr(ord(ch) + 0xFEE0) for ch in text)


@pytest.fixture(scope="module")
def policy() -> PasswordPolicy:
    return PasswordPolicy()


@pytest.mark.parametrize(
    ("password", "email", "expected"),
    [
        pytest.param("tr0ub4d", None, "too_short", id="7-chars"),
        pytest.param("tr0ub4dr", None, OK, id="8-chars"),
        pytest.param("x7" * 32, None, OK, id="64-chars"),
        pytest.param("x7" * 64, None, OK, id="128-chars"),
        pytest.param("x7" * 64 + "q", None, "too_long", id="129-chars"),
        pytest.param("x7" * 500, None, "too_long", id="1000-chars"),
        pytest.param("x" * (MAX_INPUT_LENGTH + 1), None, "too_long", id="huge-input"),
        pytest.param("", None, "too_short", id="empty"),
        pytest.param("password", None, "common", id="common"),
        pytest.param("Password", None, "common", id="common-capitalised"),
        pytest.param("PASSWORD", None, "common", id="common-upper"),
        pytest.param("123456789", None, "common", id="common-digits"),
        pytest.param(fullwidth("password"), None, "common", id="common-fullwidth"),
        pytest.param("zzzzzzzzzzzz", None, "common", id="one-repeated-char"),
        pytest.param("correct horse battery", None, OK, id="lowercase-passphrase"),
        pytest.param("nothing uppercase or digit", None, OK, id="no-composition-rules"),
        pytest.param("my name is jdoe, ok", "jdoe@example.com", "contains_email", id="email-local"),
        pytest.param("my name is JDOE, ok", "jdoe@example.com", "contains_email", id="email-case"),
        pytest.param("my name is jdoe, ok", "JDoe@Example.com", "contains_email", id="email-upper"),
        pytest.param("i am jdoe really", "jdoe+news@example.com", "contains_email", id="subaddr"),
        pytest.param("a bad idea, sure", "a@example.com", OK, id="short-local-ignored"),
        pytest.param("joe cool at home", "jo@example.com", OK, id="2-char-local-ignored"),
        pytest.param("entirely unrelated", "jdoe@example.com", OK, id="email-absent"),
        pytest.param("🔐🦄🌈 rainbow unicorn", None, OK, id="emoji-passphrase"),
        pytest.param("👨\u200d👩\u200d👧 family time", None, OK, id="emoji-zwj-sequence"),
        pytest.param("пароль-очень-длинный", None, OK, id="cyrillic"),
        pytest.param("  spaced  out  ", None, OK, id="spaces-kept"),
        pytest.param("nul\x00in the middle", None, "invalid_characters", id="nul"),
        pytest.param("tab\there and there", None, "invalid_characters", id="tab"),
        pytest.param("line\nbreak inside", None, "invalid_characters", id="newline"),
        pytest.param("del\x7fcharacter here", None, "invalid_characters", id="del"),
        pytest.param("c1\x85control here", None, "invalid_characters", id="c1-control"),
        pytest.param("lone \ud800 surrogate", None, "invalid_characters", id="lone-surrogate"),
    ],
)
def test_check_table(
    policy: PasswordPolicy, password: str, email: str | None, expected: str | None
) -> None:
    """Each password is accepted or refused with the stable reason code."""
    if expected is OK:
        assert policy.check(password, email=email) == normalize_password(password)
    else:
        with pytest.raises(PasswordRejected) as info:
            policy.check(password, email=email)
        assert info.value.reason == expected


@pytest.mark.parametrize(
    ("password", "normalized"),
    [
        pytest.param("ﬁnancial ﬁgures", "financial figures", id="fi-ligature"),
        pytest.param(
            fullwidth("Fullwidth") + " " + fullwidth("text"), "Fullwidth text", id="fullwidth"
        ),
        pytest.param("cafe\u0301 au lait", "caf\u00e9 au lait", id="combining-accent"),
        pytest.param("  two  spaces  ", "  two  spaces  ", id="spaces-untouched"),
    ],
)
def test_check_returns_nfkc_form(policy: PasswordPolicy, password: str, normalized: str) -> None:
    """The returned (to-be-hashed) password is the NFKC form, spaces kept, never truncated."""
    assert policy.check(password) == normalized


def test_length_counts_code_points_after_nfkc() -> None:
    """Four ligatures are eight characters once normalised, so they meet a minimum of 8."""
    assert PasswordPolicy(min_length=8).check("ﬁﬂﬁﬂ") == "fiflfifl"


def test_input_bound_never_refuses_an_acceptable_password() -> None:
    """Maximally decomposed input (4 code points per letter) at max_length=1024 is accepted."""
    letter = unicodedata.normalize("NFD", "\u1f82")
    assert len(letter) == 4
    password = letter * 1024
    policy = PasswordPolicy(max_length=1024)
    assert len(password) == policy.max_input_length
    assert policy.check(password) == "\u1f82" * 1024


def test_length_counts_code_points_not_bytes() -> None:
    """Eight 4-byte emoji are 8 characters, not 32: within a maximum of 8."""
    password = "🦄🌈🔐🎲🧩🛸🪐🌋"
    assert len(password.encode()) == 32
    assert PasswordPolicy(min_length=8, max_length=8).check(password) == password


@pytest.mark.parametrize(
    ("min_length", "max_length", "password", "detail"),
    [
        pytest.param(8, 128, "short", "Password must be at least 8 characters long.", id="short"),
        pytest.param(8, 64, "y7" * 33, "Password must be at most 64 characters long.", id="long"),
        pytest.param(12, 128, "abcdefgh1", "Password must be at least 12 characters", id="min-12"),
        pytest.param(8, 128, "password", "too common", id="common"),
        pytest.param(8, 128, "tab\tinside", "control characters", id="control"),
    ],
)
def test_detail_says_why(min_length: int, max_length: int, password: str, detail: str) -> None:
    """The detail is a human sentence naming the rule and the limit actually configured."""
    with pytest.raises(PasswordRejected) as info:
        PasswordPolicy(min_length=min_length, max_length=max_length).check(password)
    assert detail in info.value.detail


def test_rejection_is_invalid_input() -> None:
    """A refused password is a 422-class domain error, for the edge to map."""
    with pytest.raises(InvalidInput) as info:
        PasswordPolicy().check("password")
    assert info.value.status_code == 422


def test_shipped_list_has_at_least_10000_entries() -> None:
    """The blocklist covers at least the 10,000 most common passwords, casefolded."""
    common = load_common_passwords()
    assert len(common) >= 10_000
    assert {"123456", "password", "qwerty", "iloveyou"} <= common
    assert all(entry == entry.casefold() and entry for entry in common)
    assert not any(entry.startswith("#") for entry in common)


def test_shipped_list_is_loaded_once() -> None:
    """The list is read once and shared (cached), not per policy or per check."""
    assert load_common_passwords() is load_common_passwords()
    assert PasswordPolicy().common_passwords is load_common_passwords()


def test_custom_blocklist_replaces_shipped_one_case_insensitively() -> None:
    """A caller's list is used instead of the shipped one, whatever its entries' case."""
    policy = PasswordPolicy(common_passwords=frozenset({"Bastion-Rocks"}))
    with pytest.raises(PasswordRejected) as info:
        policy.check("BASTION-ROCKS")
    assert info.value.reason == "common"
    assert policy.check("password") == "password"


@pytest.mark.parametrize(
    ("min_length", "max_length"),
    [
        pytest.param(0, 128, id="zero-min"),
        pytest.param(16, 15, id="max-below-min"),
    ],
)
def test_nonsense_limits_refused(min_length: int, max_length: int) -> None:
    """A policy that could accept nothing, or an empty password, cannot be built."""
    with pytest.raises(ValueError, match="length"):
        PasswordPolicy(min_length=min_length, max_length=max_length)
