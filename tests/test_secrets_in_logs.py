"""The secrets-in-logs plugin can fail: a sub-session whose test logs a token
or a registered secret exits non-zero and names the logger, without printing
the secret; a clean one passes. Sub-sessions run in a subprocess, so their
log lines never reach this session's own collector."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.secrets_in_logs import find_leaks

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c2VyLTEiLCJleHAiOjF9.c2lnbmF0dXJlLWJ5dGVz"
REFRESH = "brt_" + "A" * 43
OWN_SECRET = "a-registered-secret-value-42"


@pytest.fixture(autouse=True)
def _importable_tests_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sub-session loads the plugin as ``tests.secrets_in_logs`` from this repository."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # faster; -p loads ours


def _run(pytester: pytest.Pytester, body: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=body)
    return pytester.runpytest_subprocess("-p", "tests.secrets_in_logs", "-p", "no:cacheprovider")


@pytest.mark.parametrize(
    ("body", "logger"),
    [
        pytest.param(
            "import logging\ndef test_x():\n"
            f"    logging.getLogger('app.tokens').debug('issued %s', {JWT!r})\n",
            "app.tokens",
            id="jwt-at-debug",
        ),
        pytest.param(
            "import logging\ndef test_x():\n"
            f"    logging.getLogger('app.refresh').info('rt=' + {REFRESH!r})\n",
            "app.refresh",
            id="refresh-token-at-info",
        ),
        pytest.param(
            "import logging\nfrom tests.secrets_in_logs import register\n"
            f"def test_x():\n    register({OWN_SECRET!r})\n"
            f"    logging.getLogger('app.users').warning('pw %s', {OWN_SECRET!r})\n",
            "app.users",
            id="registered-secret",
        ),
        pytest.param(
            "import logging\n"
            f"PASSWORD = {OWN_SECRET!r}\n"
            "def test_x():\n    logging.getLogger('app.login').error('tried %s', PASSWORD)\n",
            "app.login",
            id="module-level-password",
        ),
    ],
)
def test_a_leaking_session_fails(pytester: pytest.Pytester, body: str, logger: str) -> None:
    """The test itself passes; the session fails because of what it logged."""
    result = _run(pytester, body)
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    output = result.stdout.str()
    assert "secrets in logs" in output
    assert f"{logger}: " in output
    for secret in (JWT, REFRESH, OWN_SECRET):
        assert secret not in output


def test_a_clean_session_passes(pytester: pytest.Pytester) -> None:
    """Ordinary log lines, short "passwords" and secrets never logged: exit 0."""
    result = _run(
        pytester,
        "import logging\nfrom tests.secrets_in_logs import register\n"
        "PASSWORD = 'password'\n"
        f"def test_x():\n    register({OWN_SECRET!r})\n"
        "    logging.getLogger('app').debug('password rejected: too common')\n",
    )
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK


@pytest.mark.parametrize(
    ("line", "leaks"),
    [
        (f"token {JWT}", True),
        (f"refresh {REFRESH}", True),
        (f"secret {OWN_SECRET}!", True),
        ("eyJhbGciOi is not a token", False),
        ("brt_short", False),
        ("GET /oauth/token 200", False),
    ],
)
def test_find_leaks_masks_what_it_reports(line: str, leaks: bool) -> None:
    """A leak is reported with its logger and with the secret cut short."""
    found = find_leaks([("app", line)], {OWN_SECRET})
    assert bool(found) is leaks
    for report in found:
        assert report.startswith("app: ")
        assert JWT not in report
        assert REFRESH not in report
        assert OWN_SECRET not in report
