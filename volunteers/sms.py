"""Queue an SMS in the outbox, in the caller's transaction.

The caller's state change and its message commit together or not at all (DESIGN.md, "Outbox for
messages"); :mod:`volunteers.outbox_sender` delivers later. The cause names the message with an
idempotency key (for example ``offer:<offer id>`` or ``stood_down:<case>:<volunteer>``), so a
retried cause finds the row it already wrote instead of queueing a second SMS.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from callcenter.models import OutboxMessage, OutboxStatus
from callcenter.phones import normalise_phone
from callcenter.settings import get_settings

# Two UCS-2 segments of 70 characters: Chinese texts cost one SMS per 70 characters, and a
# volunteer reads a short text on a lock screen.
MAX_SMS_CHARS = 140


class SmsKeyConflict(ValueError):
    """The idempotency key already names a message to someone else: a bug in the caller."""


def queue_sms(
    session: Session, *, to: str, body: str, key: str, case_id: int | None = None
) -> OutboxMessage:
    """The outbox row for ``key``: written now, or the one an earlier call wrote.

    ``to`` is normalised to E.164. Raises ``ValueError`` for an empty or over-long body and
    :class:`SmsKeyConflict` when ``key`` was used for another recipient.
    """
    body = body.strip()
    if not body:
        raise ValueError("empty SMS body")
    if len(body) > MAX_SMS_CHARS:
        raise ValueError(f"SMS body has {len(body)} characters; at most {MAX_SMS_CHARS}")
    if not key or len(key) > 128:
        raise ValueError("the idempotency key must be 1–128 characters")
    to = normalise_phone(to, get_settings().phone_region)
    existing = _by_key(session, key)
    if existing is None:
        row = OutboxMessage(
            channel="sms",
            to=to,
            body=body,
            idempotency_key=key,
            case_id=case_id,
            status=OutboxStatus.QUEUED,
        )
        try:
            # A savepoint, so that losing the race to a concurrent writer of the same key
            # leaves the caller's transaction usable.
            with session.begin_nested():
                session.add(row)
            return row
        except IntegrityError:
            existing = _by_key(session, key)
            if existing is None:
                raise
    if existing.to != to:
        raise SmsKeyConflict(f"key {key!r} already names a message to another number")
    return existing


def _by_key(session: Session, key: str) -> OutboxMessage | None:
    return session.scalar(select(OutboxMessage).where(OutboxMessage.idempotency_key == key))
