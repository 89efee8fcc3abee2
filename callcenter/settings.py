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

    # Call intake (SIP). The backend is the library the call handler runs on.
    sip_backend: Literal["aiosipua", "pyvoip"] = "aiosipua"
    sip_host: str = "127.0.0.1"
    sip_port: int = Field(default=5060, ge=1, le=65535)
    # The address put in Contact and SDP when the process binds 0.0.0.0 or sits behind NAT.
    sip_advertised_host: str | None = None
    # Empty: terminals call the handler directly (demo, small site). Otherwise the SIP edge
    # (Kamailio) that registers terminals; only its address may send us calls.
    sip_registrar: str = ""
    scaip_port: int = Field(default=5070, ge=1, le=65535)
    rtp_port_low: int = Field(default=20000, ge=1024, le=65534)
    rtp_port_high: int = Field(default=29999, ge=1025, le=65535)
    # Repeat presses of one elder within this window attach to the open case.
    repeat_window_s: int = Field(default=900, ge=0)
    # A terminal that got no acknowledgement calls again: the same content within this window
    # is the same alarm, stored once.
    retry_window_s: int = Field(default=180, ge=0)
    # How long a life-safety call is held open for an operator to take it (once an operator is
    # being connected, the call stays up as long as they talk).
    life_safety_hold_s: int = Field(default=600, ge=10)
    # While held, say "an operator will speak with you, please do not hang up" again every so
    # many seconds (0: silence). An elder hearing nothing for minutes hangs up.
    voice_hold_reminder_s: int = Field(default=30, ge=0)
    # Voice: the operator's SIP phone when their account has none (a small site's one desk).
    operator_phone_uri: str = ""
    # How long the operator's phone (or, for a call-back, the elder's terminal) may ring.
    voice_ring_s: int = Field(default=30, ge=5, le=300)
    # Where call recordings (WAV) are written; the web process serves them from here too.
    recordings_dir: str = "./recordings"
    db_threads: int = Field(default=8, ge=1, le=64)
    # Alarms are committed in batches by these threads (callcenter/alarm_writer.py). 0: one
    # thread on SQLite (it takes one writer at a time anyway), two on PostgreSQL.
    alarm_writers: int = Field(default=0, ge=0, le=16)
    # At most this many alarms per transaction; 1 commits each alarm alone.
    alarm_batch_max: int = Field(default=64, ge=1, le=1000)
    # A writer waits this long for more alarms before it writes a batch (never when a
    # life-safety alarm is in it): a transaction costs ~6 ms of CPU however few alarms it
    # holds, so at 100 presses/s one each took 6.1 ms CPU per alarm and a 50 ms linger ~2.8
    # (bench/handler_costs.py, BENCHMARKS.md), for ~40 ms more before a service press is
    # acknowledged.
    alarm_linger_ms: int = Field(default=50, ge=0, le=500)
    # Let the call ring this long before answering (0: answer at once). Some PBXes and
    # terminals expect to hear ringing first.
    sip_ring_ms: int = Field(default=0, ge=0, le=10_000)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("operator_phone_uri")
    @classmethod
    def _sip_uri(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith("sip:"):
            raise ValueError("HYT_OPERATOR_PHONE_URI must be a sip: URI, e.g. sip:desk1@10.0.0.7")
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
