"""``POST /webhooks/twilio/sms``: a volunteer's SMS reply, signed by Twilio.

A forged or missing ``X-Twilio-Signature`` gets 403 and changes nothing (the signed-form
dependency refuses it before anything else runs). A reply delivered again with the same
``MessageSid`` gets the first answer and acts on nothing (:mod:`volunteers.sms_inbound`). The
answer is TwiML with one short message; the reply's own text is never echoed back.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

import structlog
from fastapi import APIRouter
from fastapi.responses import Response

from callcenter.phones import mask_phone
from callcenter.settings import get_settings
from callcenter.web.deps import SessionDep
from volunteers import sms_inbound
from volunteers.sms_replies import handle_reply
from volunteers.twilio_webhooks import TwilioForm

log = structlog.get_logger(__name__)
router = APIRouter(tags=["webhooks"])


@router.post("/webhooks/twilio/sms")
def sms_reply(form: TwilioForm, session: SessionDep) -> Response:
    """Accept (接/是/1/Y/YES) or decline (不/否/2/N/NO) an offer by SMS, code optional."""
    sender = str(form.get("From") or "")
    sid = str(form.get("MessageSid") or form.get("SmsSid") or "")[: sms_inbound.SID_CHARS]
    claimed = sms_inbound.claim(session, sid) if sid else None
    if sid and claimed is None:
        # Delivered again (Twilio retrying, or a replay): the first answer, nothing acted on.
        log.warning("webhook.sms.repeated", sender=mask_phone(sender), sid=sid)
        answer = sms_inbound.earlier_answer(session, sid)
    else:
        answer = handle_reply(
            session,
            from_number=sender,
            text=str(form.get("Body") or "")[:500],
            region=get_settings().phone_region,
        )
        if claimed is not None:
            claimed.answer = answer
        log.info("webhook.sms.handled", sender=mask_phone(sender))
    twiml = f"<Response><Message>{escape(answer)}</Message></Response>"
    return Response('<?xml version="1.0" encoding="UTF-8"?>' + twiml, media_type="application/xml")
