"""Each SMS reply acted on once: Twilio's ``MessageSid`` is remembered with our answer.

Twilio delivers a webhook again when our answer is slow or lost, with the same ``MessageSid``;
anyone who captured a signed request can also replay it (the signature has no expiry). A reply
"1" acted on twice accepts a *second* pending offer of the same volunteer. The sid is claimed
in the reply's own transaction, before acting (a unique key, so two concurrent deliveries
cannot both act): a second delivery gets the first answer and changes nothing.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String, Text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from callcenter.db import Base, utcnow

SID_CHARS = 64  # Twilio's sids are 34 characters ("SM" + 32 hex)


class InboundSms(Base):
    __tablename__ = "inbound_sms"

    message_sid: Mapped[str] = mapped_column(String(SID_CHARS), primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    answer: Mapped[str] = mapped_column(Text, default="")


def claim(session: Session, sid: str) -> InboundSms | None:
    """Claim ``sid`` for this transaction: the new row to fill in with the answer, or None if
    the reply was seen before (read its answer with :func:`earlier_answer`)."""
    if session.get(InboundSms, sid) is not None:
        return None
    row = InboundSms(message_sid=sid)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()  # the unique key decides a race with a concurrent delivery
    except IntegrityError:
        return None
    return row


def earlier_answer(session: Session, sid: str) -> str:
    row = session.get(InboundSms, sid, populate_existing=True)
    return row.answer if row is not None else ""
