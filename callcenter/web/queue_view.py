"""The live queue as the console shows it: one builder for ``GET /api/queue`` and for the queue
the event stream pushes with each change (:mod:`callcenter.web.live_events`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from callcenter.console import QueueRow, is_life_safety
from callcenter.web.console_schemas import QueueItem


def queue_items(
    rows: Iterable[QueueRow], *, now: dt.datetime, supervisor: bool, flag_s: int
) -> list[QueueItem]:
    """The queue rows as API items. For supervisors, a life-safety alarm nobody has claimed for
    more than ``flag_s`` seconds is flagged (issue 5: flagged to supervisors)."""
    items = []
    for r in rows:
        life_safety = is_life_safety(r.alarm)
        flagged = (
            supervisor
            and life_safety
            and r.alarm.claimed_by_id is None
            and (now - r.alarm.received_at).total_seconds() > flag_s
        )
        items.append(
            QueueItem(
                id=r.alarm.id,
                kind=r.alarm.kind.value,
                priority=r.alarm.priority,
                life_safety=life_safety,
                status=r.alarm.status.value,
                source=r.alarm.source.value,
                caller=r.alarm.caller,
                received_at=r.alarm.received_at,
                wait_s=r.wait_s,
                elder_id=r.alarm.elder_id,
                elder_name=r.elder_name,
                terminal_serial=r.terminal_serial,
                case_id=r.alarm.case_id,
                case_code=r.case_code,
                claimed_by_id=r.alarm.claimed_by_id,
                claimed_by=r.claimed_by,
                flagged=flagged,
            )
        )
    return items
