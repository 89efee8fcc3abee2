"""The live queue as the console shows it: one builder for ``GET /api/queue`` and for the queue
the event stream pushes with each change (:mod:`callcenter.web.live_events`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from callcenter.console import QueuePage, QueueRow
from callcenter.web.console_schemas import QueueCounts, QueueItem


def queue_items(
    rows: Iterable[QueueRow], *, now: dt.datetime, supervisor: bool, flag_s: int
) -> list[QueueItem]:
    """The queue rows as API items. For supervisors, a life-safety alarm nobody has claimed for
    more than ``flag_s`` seconds is flagged (issue 5: flagged to supervisors)."""
    items = []
    for r in rows:
        flagged = (
            supervisor
            and r.life_safety
            and r.claimed_by_id is None
            and (now - r.received_at).total_seconds() > flag_s
        )
        items.append(
            QueueItem(
                id=r.id,
                kind=r.kind.value,
                priority=r.priority,
                life_safety=r.life_safety,
                status=r.status.value,
                source=r.source.value,
                caller=r.caller,
                received_at=r.received_at,
                wait_s=r.wait_s,
                elder_id=r.elder_id,
                elder_name=r.elder_name,
                terminal_serial=r.terminal_serial,
                case_id=r.case_id,
                case_code=r.case_code,
                claimed_by_id=r.claimed_by_id,
                claimed_by=r.claimed_by,
                flagged=flagged,
            )
        )
    return items


def queue_counts(page: QueuePage) -> QueueCounts:
    """How many unhandled alarms there are and how many the console is not sent, per kind."""
    return QueueCounts(
        total=page.total, not_shown=page.not_shown, not_shown_by_kind=page.not_shown_by_kind
    )
