"""API shapes of the supervisor's view (read from :mod:`callcenter.supervision`'s dataclasses)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict


class _FromAttributes(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class KindCountsOut(_FromAttributes):
    kind: str
    total: int
    by_state: dict[str, int]


class ThresholdShareOut(_FromAttributes):
    within_s: int
    met: int
    missed: int
    pending: int
    share: float | None  # met / (met + missed); None when nothing can be judged yet


class ComplianceOut(_FromAttributes):
    group: str
    alarms: int
    answered: int
    waiting: int
    median_answer_s: float | None
    max_answer_s: float | None
    thresholds: list[ThresholdShareOut]


class LateCaseOut(_FromAttributes):
    id: int
    code: str
    kind: str
    state: str
    priority: int
    elder_name: str | None
    summary: str
    opened_at: dt.datetime
    target_at: dt.datetime
    late_s: int


class SilentTerminalOut(_FromAttributes):
    id: int
    serial: str
    status: str
    elder_name: str | None
    street: str | None
    community: str | None
    last_seen_at: dt.datetime | None
    report_interval_s: int
    silent_s: int


class EscalatedVisitOut(_FromAttributes):
    visit_id: int
    elder_id: int
    elder_name: str
    street: str
    community: str
    kind: str
    period: str
    window_end: dt.date
    volunteer_name: str | None
    reassign_count: int


class OnDutyOut(_FromAttributes):
    total: int
    by_community: dict[str, int]


class WaitingAlarmOut(_FromAttributes):
    id: int
    kind: str
    elder_name: str | None
    caller: str
    received_at: dt.datetime
    wait_s: int


class SupervisorOut(_FromAttributes):
    now: dt.datetime
    day: dt.date
    alarms: list[KindCountsOut]
    cases: list[KindCountsOut]
    compliance: list[ComplianceOut]
    answer_within_s: list[int]
    late_cases_count: int
    late_cases: list[LateCaseOut]
    silent_terminals_count: int
    silent_terminals: list[SilentTerminalOut]
    escalated_visits_count: int
    escalated_visits: list[EscalatedVisitOut]
    on_duty: OnDutyOut
    unclaimed_life_safety: list[WaitingAlarmOut]
    flag_after_s: int
