import pytest
from pydantic import ValidationError

from callcenter.settings import DEVELOPMENT_SECRET_KEY, Settings


def test_development_default_secret_is_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="HYT_SECRET_KEY"):
        Settings(env="production", secret_key=DEVELOPMENT_SECRET_KEY)


def test_development_default_secret_is_allowed_in_development() -> None:
    settings = Settings(env="development", secret_key=DEVELOPMENT_SECRET_KEY)
    assert settings.timezone == "Asia/Shanghai"
    assert settings.database_url.startswith("sqlite:///")


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match="32 characters"):
        Settings(env="production", secret_key="short")


def test_settings_come_from_hyt_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYT_HTTP_PORT", "9123")
    monkeypatch.setenv("HYT_DATABASE_URL", "postgresql://u@h/db")
    settings = Settings()
    assert settings.http_port == 9123
    assert settings.database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("name", "value"),
    [("HYT_TIMEZONE", "Mars/Olympus"), ("HYT_DATABASE_URL", "mysql://x"), ("HYT_HTTP_PORT", "0")],
)
def test_bad_settings_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()
