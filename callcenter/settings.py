"""One settings object for every process, read from ``HYT_*`` environment variables.

Validated at start-up: a process with a bad setting refuses to start instead of failing later
in the middle of a call.
"""

from __future__ import annotations

import functools
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Public, so that the check below and the tests can name it; never valid outside development.
DEVELOPMENT_SECRET_KEY = "development-only-secret-do-not-use"


class Settings(BaseSettings):
    """Everything a HuYuanTong process can be told from outside."""

    model_config = SettingsConfigDict(env_prefix="HYT_", env_file=None, extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite:///./huyuantong.db"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    secret_key: str = DEVELOPMENT_SECRET_KEY
    timezone: str = "Asia/Shanghai"
    public_base_url: str = "http://127.0.0.1:8000"
    catalog_path: str | None = None
    # The region phone numbers are read in when they carry no +country prefix.
    phone_region: str = "CN"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("HYT_DATABASE_URL must be a sqlite:// or postgresql:// URL")
        if value.startswith("postgresql://"):
            # SQLAlchemy's bare postgresql:// means psycopg2; we ship psycopg 3.
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @model_validator(mode="after")
    def _no_default_secret_outside_development(self) -> Settings:
        if self.secret_key == DEVELOPMENT_SECRET_KEY:
            if self.env != "development":
                raise ValueError(
                    "HYT_SECRET_KEY is the development default; set a long random secret "
                    "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`) "
                    "or set HYT_ENV=development"
                )
        elif len(self.secret_key) < 32:
            raise ValueError("HYT_SECRET_KEY must be at least 32 characters")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
