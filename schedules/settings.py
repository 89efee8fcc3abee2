"""Settings of the scheduler, the visit plans and the terminal watchdog (``HYT_*`` variables).

Kept apart from :mod:`callcenter.settings` so that this package owns its knobs; both read the same
environment with the same prefix, and each ignores the other's variables.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Frequency = Literal["weekly", "monthly", "quarterly"]

# "HYTSCHED" in ASCII: one fixed advisory-lock key for every scheduler of one database.
DEFAULT_LOCK_KEY = 0x4859545343484544


class ScheduleSettings(BaseSettings):
    """Everything the scheduler process and its jobs can be told from outside."""

    model_config = SettingsConfigDict(env_prefix="HYT_", env_file=None, extra="ignore")

    # Visit frequency per risk level (DOMAIN.md: weekly for high-risk, at least monthly for
    # key elders); configuration, because each street office sets its own.
    visit_frequency_high: Frequency = "weekly"
    visit_frequency_medium: Frequency = "monthly"
    visit_frequency_low: Frequency = "quarterly"
    # An extra visit after a hospital discharge or a bereavement: within this many hours.
    extra_visit_within_h: int = Field(default=24, ge=1, le=24 * 14)
    # Planned dates start this many days after the planning day, so the volunteer hears in time.
    visit_plan_lead_days: int = Field(default=1, ge=0, le=14)
    # A volunteer takes at most (average load × slack) visits a month: continuity yields to
    # fairness above that.
    visit_load_slack: float = Field(default=1.2, ge=1.0, le=10.0)
    # A hard ceiling per volunteer and month on top of the fair share (0: none).
    visit_max_per_volunteer_month: int = Field(default=0, ge=0)
    # How far back "the volunteer who visited last time" is looked for.
    visit_continuity_lookback_days: int = Field(default=120, ge=7)
    # Overdue visits: reassigned this many times, then escalated to the supervisor.
    visit_max_reassign: int = Field(default=1, ge=0, le=5)
    # The new volunteer of a reassigned visit gets this many days.
    visit_reassign_days: int = Field(default=3, ge=1, le=31)
    # Reminders (schedules/reminders.py, through the SMS outbox): one at the evening time this
    # many days before the visit (0: none), one at the morning time of the visit's day. None is
    # queued after the latest time of day: a catch-up after a night's downtime must not wake a
    # volunteer; the next reminder's time comes instead. Local times, HH:MM.
    visit_reminder_days_before: int = Field(default=1, ge=0, le=7)
    visit_reminder_evening_at: str = "18:00"
    visit_reminder_morning_at: str = "07:30"
    visit_reminder_latest_at: str = "21:00"
    # A visit link (in the reminders) works this long: a month's window and a reassignment.
    visit_link_max_age_days: int = Field(default=35, ge=1, le=120)

    # A terminal is silent when it has not reported for its interval plus this grace.
    watchdog_grace_s: int = Field(default=600, ge=0)
    # Mass silence: this many terminals of one street silent within the window ...
    watchdog_group_min_terminals: int = Field(default=20, ge=2)
    # ... or this share of the street's terminals (but at least the floor) ...
    watchdog_group_min_share: float = Field(default=0.5, gt=0.0, le=1.0)
    watchdog_group_floor: int = Field(default=3, ge=2)
    # ... within this window, become one grouped case for the street.
    watchdog_group_window_s: int = Field(default=900, ge=0)

    # When the daily visit planning runs (local time, HH:MM).
    scheduler_plan_at: str = "02:30"
    scheduler_overdue_every_s: int = Field(default=600, ge=1)
    scheduler_watchdog_every_s: int = Field(default=60, ge=1)
    # The reminder job looks for due reminders this often (each is queued once, however often).
    scheduler_remind_every_s: int = Field(default=300, ge=1)
    # A standby scheduler tries the leadership lock this often; the leader checks its lock
    # connection this often. Take-over happens within about this interval of the leader's death.
    scheduler_leader_retry_s: float = Field(default=10.0, gt=0.0, le=60.0)
    # A leader cut off from the database (no FIN, e.g. a dead host) loses its lock after about
    # this long: TCP keepalives on both ends of the lock connection.
    scheduler_lease_s: int = Field(default=60, ge=10)
    scheduler_lock_key: int = Field(default=DEFAULT_LOCK_KEY, ge=-(2**63), lt=2**63)
    # On a database that has never run a job, a job's first run covers this far back.
    scheduler_first_run_lookback_s: int = Field(default=86_400, ge=1)

    @field_validator(
        "scheduler_plan_at",
        "visit_reminder_evening_at",
        "visit_reminder_morning_at",
        "visit_reminder_latest_at",
    )
    @classmethod
    def _clock_time(cls, value: str, info: ValidationInfo) -> str:
        hours, _, minutes = value.partition(":")
        if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
            raise ValueError(f"HYT_{str(info.field_name).upper()} must be HH:MM")
        return f"{int(hours):02d}:{int(minutes):02d}"

    @model_validator(mode="after")
    def _reminders_before_latest(self) -> ScheduleSettings:
        # "HH:MM" strings compare in clock order.
        for name in ("visit_reminder_evening_at", "visit_reminder_morning_at"):
            if getattr(self, name) >= self.visit_reminder_latest_at:
                raise ValueError(
                    f"HYT_{name.upper()} must be before HYT_VISIT_REMINDER_LATEST_AT "
                    f"({self.visit_reminder_latest_at})"
                )
        return self

    @staticmethod
    def clock(value: str) -> dt.time:
        """A validated ``HH:MM`` setting as a time of day."""
        hours, minutes = value.split(":")
        return dt.time(int(hours), int(minutes))

    def frequency_for(self, risk_level: str) -> Frequency:
        """The visit frequency for a risk level (``low``, ``medium``, ``high``)."""
        return {
            "high": self.visit_frequency_high,
            "medium": self.visit_frequency_medium,
            "low": self.visit_frequency_low,
        }[risk_level]


@functools.lru_cache(maxsize=1)
def get_schedule_settings() -> ScheduleSettings:
    """The process-wide schedule settings, read once."""
    return ScheduleSettings()
