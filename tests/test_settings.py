"""Settings: environment parsing, derived defaults and the production gate."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from bastion.errors import ConfigurationError
from bastion.settings import Settings

GOOD_SECRET = SecretStr("s" * 40)


def test_issuer_and_audience_default_to_host_and_port() -> None:
    """ISSUER defaults to http://HOST:PORT and AUDIENCE to the issuer."""
    settings = Settings(_env_file=None, host="127.0.0.2", port=9000)
    assert settings.issuer == "http://127.0.0.2:9000"
    assert settings.audience == settings.issuer


def test_environment_variables_with_prefix_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """BASTION_* variables configure the server, lists as comma-separated text."""
    monkeypatch.setenv("BASTION_ACCESS_TOKEN_TTL", "600")
    monkeypatch.setenv("BASTION_KEY_ALGORITHM", "ES256")
    monkeypatch.setenv("BASTION_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("BASTION_DEFAULT_ROLES", "user,editor")
    settings = Settings(_env_file=None)
    assert settings.access_token_ttl == 600
    assert settings.key_algorithm == "ES256"
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.default_roles == ["user", "editor"]


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    """A .env file supplies settings like the environment does."""
    env = tmp_path / ".env"
    env.write_text("BASTION_PORT=8123\nBASTION_ALLOW_REGISTRATION=false\n")
    settings = Settings(_env_file=env)
    assert settings.port == 8123
    assert settings.allow_registration is False


def test_secret_key_is_masked_in_repr() -> None:
    """The secret never shows in a repr or str of the settings."""
    settings = Settings(
        _env_file=None, secret_key=SecretStr("super-secret-value-1234567890-abcdef")
    )
    assert "super-secret-value" not in repr(settings)
    assert "super-secret-value" not in str(settings)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"secret_key": None}, "BASTION_SECRET_KEY is not set"),
        ({"secret_key": SecretStr("short")}, "BASTION_SECRET_KEY is shorter"),
        ({"issuer": "http://auth.example.com"}, "BASTION_ISSUER"),
        ({"issuer": "ftp://auth.example.com"}, "BASTION_ISSUER"),
        (
            {"cors_origins": ["*"], "cors_allow_credentials": True},
            "BASTION_CORS_ORIGINS",
        ),
    ],
)
def test_production_refuses_unsafe_configuration(overrides: dict[str, object], named: str) -> None:
    """Production mode refuses to start and names the offending setting."""
    values: dict[str, object] = {
        "mode": "production",
        "secret_key": GOOD_SECRET,
        "issuer": "https://auth.example.com",
    }
    values.update(overrides)
    settings = Settings(_env_file=None, **values)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as info:
        settings.check_production()
    assert named in str(info.value)


@pytest.mark.parametrize(
    "issuer", ["https://auth.example.com", "http://127.0.0.1:8000", "http://localhost:8000"]
)
def test_production_accepts_safe_configuration(issuer: str) -> None:
    """https, or plain http on loopback only, passes the production gate."""
    settings = Settings(_env_file=None, mode="production", secret_key=GOOD_SECRET, issuer=issuer)
    settings.check_production()


def test_production_lists_every_problem_at_once() -> None:
    """All offending settings are reported together, not one per restart."""
    settings = Settings(
        _env_file=None,
        mode="production",
        issuer="http://auth.example.com",
        cors_origins=["*"],
        cors_allow_credentials=True,
    )
    assert len(settings.production_problems()) == 3


def test_development_generates_and_keeps_a_secret(tmp_path: Path) -> None:
    """Without BASTION_SECRET_KEY, development makes one, stores it 0600 and reuses it."""
    path = tmp_path / "secret"
    first = Settings(_env_file=None, secret_key_file=path).resolved_secret_key()
    second = Settings(_env_file=None, secret_key_file=path).resolved_secret_key()
    assert first.get_secret_value() == second.get_secret_value()
    assert len(first.get_secret_value()) >= 32
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "overrides",
    [
        {"port": 0},
        {"access_token_ttl": 5},
        {"key_algorithm": "HS256"},
        {"key_algorithm": "none"},
        {"password_min_length": 4},
        {"password_max_length": 32},
        {"mode": "staging"},
    ],
)
def test_invalid_values_are_refused(overrides: dict[str, object]) -> None:
    """Out-of-range or unknown values fail validation instead of running weakened."""
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's ValidationError
        Settings(_env_file=None, **overrides)  # type: ignore[arg-type]
