"""Volunteers answer offers by SMS: 接/是/1/Y/YES accept, 不/否/2/N/NO decline, with or without
the case code (``1 K7F3Q``, ``接 K7F3Q``, ``K7F3Q 不去``). Anything unclear changes nothing and
gets a helpful reply."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from callcenter.cases import CODE_ALPHABET
from callcenter.models import Case
from callcenter.phones import PhoneError, normalise_phone
from volunteers import sms_texts
from volunteers.models import Offer, OfferStatus, Volunteer
from volunteers.offers import accept_offer, decline_offer

Intent = Literal["accept", "decline", "unclear"]
ACCEPT_WORDS = ("接单", "接受", "接", "是", "好", "1", "y", "yes", "ok")
DECLINE_WORDS = ("不去", "不接", "拒绝", "不", "否", "2", "n", "no")
_CODE = re.compile(rf"\b([{CODE_ALPHABET}]{{5}})\b")


@dataclass(frozen=True, slots=True)
class ParsedReply:
    intent: Intent
    case_code: str | None


def parse_reply(text: str) -> ParsedReply:
    cleaned = text.strip().upper()
    code_match = _CODE.search(cleaned)
    code = code_match.group(1) if code_match else None
    rest = _CODE.sub(" ", cleaned).strip().lower()
    rest = re.sub(r"[\s,，.。!！:：【】\[\]]+", " ", rest).strip()
    # Decline first: "不接" contains "接".
    if any(rest == w or rest.startswith(w) for w in DECLINE_WORDS):
        return ParsedReply("decline", code)
    if any(rest == w or rest.startswith(w) for w in ACCEPT_WORDS):
        return ParsedReply("accept", code)
    return ParsedReply("unclear", code)


def handle_reply(session: Session, *, from_number: str, text: str, region: str = "CN") -> str:
    """Act on one SMS reply; returns the text to answer with."""
    try:
        phone = normalise_phone(from_number, region)
    except PhoneError:
        return sms_texts.render("unknown_sender")
    volunteer = session.scalars(select(Volunteer).where(Volunteer.phone == phone)).first()
    if volunteer is None:
        return sms_texts.render("unknown_sender")
    reply = parse_reply(text)
    query = (
        select(Offer, Case.code)
        .join(Case, Case.id == Offer.case_id)
        .where(Offer.volunteer_id == volunteer.id, Offer.status == OfferStatus.PENDING)
        .order_by(Offer.sent_at.desc())
    )
    if reply.case_code:
        query = query.where(Case.code == reply.case_code)
    pending = session.execute(query).first()
    if reply.intent == "unclear":
        return sms_texts.reply_unknown_text()
    if pending is None:
        return sms_texts.render("no_pending", code=reply.case_code or "")
    offer, code = pending
    if reply.intent == "decline":
        decline_offer(session, offer.id)
        return sms_texts.render("declined", code=code)
    outcome = accept_offer(session, offer.id)
    if outcome == "accepted":
        from volunteers.links import link_url

        return sms_texts.assigned_text(code, link=link_url("offer", offer.id, offer.case_id))
    return sms_texts.too_late_text(code)
