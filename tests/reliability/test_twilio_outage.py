"""A Twilio outage (issue #7): 500s, 503s, stalls and dropped connections for a while, then
recovery. The outbox keeps every message and, once Twilio answers again, each goes exactly once.

The real ``twilio`` client talks to the local fake of ``tests/volunteers/test_outbox.py``; time
is passed to the sender, so the back-off schedule runs without waiting for it.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from callcenter.models import OutboxMessage, OutboxStatus
from tests.volunteers.test_outbox import (  # noqa: F401  (pytest fixtures, used by name)
    FakeTwilio,
    factory,
    fake_twilio,
    later,
    queue,
    sms_settings,
    twilio_backend,
)
from volunteers.outbox_sender import send_due

MESSAGES = 30
# The outage, as Twilio's API shows it: errors, time-outs after creating the message or before,
# connections cut after creating it. Thirty of them, then it answers again.
OUTAGE = ["500", "503", "stall", "500", "stall_lost", "hang_up", "429", "503", "500", "stall"] * 3


def test_everything_queued_during_an_outage_is_sent_once_after_it(
    factory: sessionmaker[Session],  # noqa: F811
    fake_twilio: FakeTwilio,  # noqa: F811
) -> None:
    fake_twilio.script = list(OUTAGE)
    fake_twilio.stall_s = 1.0
    backend = twilio_backend(fake_twilio.port, timeout=0.3)
    # Enough attempts to outlast the outage: a real site sets this for its longest expected one.
    settings = sms_settings(sms_max_attempts=12)
    ids = queue(factory, MESSAGES)
    now = later(1)
    for _ in itertools.count():
        send_due(factory, backend, now=now, sms=settings)
        with factory() as s:
            rows = s.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(ids))).all()
        if all(r.status is OutboxStatus.SENT for r in rows):
            break
        assert not any(r.status is OutboxStatus.FAILED for r in rows), [r.last_error for r in rows]
        assert now < later(6 * 3600), "the outbox did not drain within six simulated hours"
        # The next moment anything is due: back-off, or the grace before asking Twilio.
        waiting = [r.next_attempt_at or now for r in rows if r.status is not OutboxStatus.SENT]
        now = max(now, min(waiting)) + dt.timedelta(seconds=1)
    assert not fake_twilio.script, "the outage was not over when the test ended"
    created = Counter((m["to"], m["body"]) for m in fake_twilio.created)
    assert len(created) == MESSAGES and set(created.values()) == {1}  # each once, none lost
    # Every row knows the message Twilio holds for it.
    assert {r.provider_id for r in rows} == {m["sid"] for m in fake_twilio.created}
