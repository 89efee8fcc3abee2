"""Settings of the operational endpoints and the login limiter (``HYT_*`` variables).

Kept beside :mod:`callcenter.settings` (same prefix, each ignores the other's variables) so that
readiness, metrics and rate limiting own their knobs. Read once per process, validated at
start-up like every other setting.
"""

from __future__ import annotations

import functools

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

READY_CHECKS = ("database", "sip", "scheduler", "outbox")


class OpsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HYT_", env_file=None, extra="ignore")

    # Login: this many failed attempts for one username from one address within the window,
    # or this many from one address whatever the usernames, and further attempts get 429.
    login_max_failures: int = Field(default=5, ge=1, le=1000)
    login_max_failures_per_address: int = Field(default=20, ge=1, le=10_000)
    login_window_s: float = Field(default=60.0, gt=0.0, le=86_400.0)

    # /readyz: the whole probe must answer within this (a load balancer's probe times out too).
    ready_timeout_s: float = Field(default=2.0, gt=0.0, le=30.0)
    # Which checks count; a small site that runs no `hyt scheduler` drops "scheduler".
    ready_checks: str = ",".join(READY_CHECKS)
    # Unsent SMS (queued or being sent) above this many, or older than this, is not ready.
    ready_outbox_max: int = Field(default=200, ge=1)
    ready_outbox_max_age_s: int = Field(default=900, ge=1)
    # Without a visible leader lock (SQLite has none), a scheduler job run this recent counts.
    ready_scheduler_stale_s: int = Field(default=180, ge=1)

    # /metrics: a bearer token the scraper sends; empty = loopback clients only.
    metrics_token: str = ""
    # The window of the "recent" gauges (alarms received, answer times seen in the database).
    metrics_window_s: int = Field(default=900, ge=60, le=86_400)

    @field_validator("ready_checks")
    @classmethod
    def _known_checks(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = sorted(set(names) - set(READY_CHECKS))
        if unknown:
            raise ValueError(f"HYT_READY_CHECKS: unknown {unknown}; known: {list(READY_CHECKS)}")
        return ",".join(names)

    @property
    def ready_check_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.ready_checks.split(",") if n)


@functools.lru_cache(maxsize=1)
def get_ops_settings() -> OpsSettings:
    """The process-wide operational settings, read once."""
    return OpsSettings()
