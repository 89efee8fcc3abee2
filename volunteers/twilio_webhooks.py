"""Twilio's requests to us: message status callbacks, and the signature check all of them share.

Every request must carry a valid ``X-Twilio-Signature``: HMAC-SHA1 under the auth token of the
URL Twilio called plus the sorted form parameters (Twilio's documented scheme, checked with the
library's own ``RequestValidator``). The URL is rebuilt from ``HYT_PUBLIC_BASE_URL``, not from what
the proxy in front of us forwarded, because that public URL is the one Twilio signed. A forged or
missing signature gets 403 before anything is read from or written to the database, and a body
larger than any Twilio request gets 413 before it is parsed.

The token: ``HYT_TWILIO_AUTH_TOKEN``, or without one (console backend, development, the demo) the
development token derived from ``HYT_SECRET_KEY`` (see :mod:`volunteers.sms_settings`).
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from twilio.request_validator import RequestValidator

from callcenter.db import utcnow
from callcenter.models import OutboxMessage, OutboxStatus
from callcenter.settings import get_settings
from callcenter.web.deps import SessionDep
from volunteers.outbox_sender import STATUS_PATH
from volunteers.sms_settings import webhook_auth_token

log = structlog.get_logger(__name__)

router = APIRouter(tags=["webhooks"])

# Twilio's message statuses in the order a message passes through them. Callbacks can arrive out
# of order, so a later callback never moves a row back to an earlier status.
_STAGE: dict[str, int] = {
    "accepted": 0, "scheduled": 0, "queued": 0, "sending": 1, "sent": 2,
    "receiving": 2, "received": 2, "delivered": 3, "undelivered": 3, "failed": 3,
    "read": 4, "canceled": 3,
}  # fmt: skip
_FINAL = {"delivered": OutboxStatus.DELIVERED, "read": OutboxStatus.DELIVERED}
# Twilio's webhook requests are a few hundred bytes (an SMS body is at most 1,600 characters);
# the cap keeps a forged multi-megabyte body from being read into memory and parsed.
MAX_BODY_BYTES = 64 * 1024
_FAILED = {"undelivered", "failed", "canceled"}


def public_url(request: Request) -> str:
    """The URL Twilio called, as it knows it: the public base URL, our path and query."""
    url = get_settings().public_base_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    return url


def validate_twilio_request(request: Request, form: FormData) -> bool:
    """True if ``X-Twilio-Signature`` signs this request's public URL and form parameters."""
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        return False
    if any(not isinstance(value, str) for _, value in form.multi_items()):
        return False  # Twilio never uploads files: a file part is not one of its requests
    # The MultiDict itself, so that a repeated field is checked the way the library signs it.
    validator = RequestValidator(webhook_auth_token())
    return bool(validator.validate(public_url(request), form, signature))


async def read_bounded_body(request: Request, limit: int = MAX_BODY_BYTES) -> None:
    """Read the body, refusing with 413 one longer than ``limit`` (declared or streamed)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        _too_large(request, int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            _too_large(request, size)
        chunks.append(chunk)
    request._body = b"".join(chunks)  # what Request.body() caches; form() reads it from there


def _too_large(request: Request, size: int) -> None:
    log.warning("twilio.webhook.too_large", path=request.url.path, bytes=size)
    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "request body too large")


async def signed_form(request: Request) -> FormData:
    """The request's form, if Twilio signed it; 403 otherwise (nothing else has run yet).
    A body larger than any Twilio request gets 413 before it is parsed."""
    await read_bounded_body(request)
    form = await request.form()
    if not validate_twilio_request(request, form):
        log.warning("twilio.webhook.bad_signature", path=request.url.path)
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid Twilio signature")
    return form


TwilioForm = Annotated[FormData, Depends(signed_form)]


@router.post(STATUS_PATH, status_code=status.HTTP_204_NO_CONTENT)
def twilio_status(form: TwilioForm, session: SessionDep, request: Request) -> Response:
    """Record a message status callback (``MessageSid``, ``MessageStatus``, ``ErrorCode``)."""
    sid = str(form.get("MessageSid") or form.get("SmsSid") or "")
    message_status = str(form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
    outbox_id = request.query_params.get("outbox")
    if sid and message_status:
        record_status(
            session,
            sid=sid,
            message_status=message_status,
            error_code=str(form.get("ErrorCode") or "") or None,
            outbox_id=int(outbox_id) if outbox_id and outbox_id.isdigit() else None,
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def record_status(
    session: Session,
    *,
    sid: str,
    message_status: str,
    error_code: str | None = None,
    outbox_id: int | None = None,
) -> OutboxMessage | None:
    """Apply one status callback to its outbox row; None if the message is not ours."""
    row = session.scalar(select(OutboxMessage).where(OutboxMessage.provider_id == sid))
    if row is None and outbox_id is not None:
        row = session.get(OutboxMessage, outbox_id, with_for_update=True)
        if row is not None and row.provider_id not in (None, sid):
            # Twilio holds two messages for one row: the duplicate the sender's design narrows
            # but cannot close (see volunteers.outbox_sender). Keep the first, tell a human.
            row.last_error = f"duplicate at provider: {sid} besides {row.provider_id}"
            log.error("outbox.sms.duplicate", outbox_id=row.id, sid=sid, first=row.provider_id)
            return row
        if row is not None:
            # The callback beat the sender's own record, or settles an unknown outcome.
            row.provider_id = sid
            # Also from failed: a row given up as "needs a human check" was sent after all.
            if row.status in (OutboxStatus.QUEUED, OutboxStatus.SENDING, OutboxStatus.FAILED):
                row.status = OutboxStatus.SENT
                row.sent_at = row.sent_at or utcnow()
                row.last_error = None
    if row is None:
        log.info("twilio.status.unknown_message", sid=sid, status=message_status)
        return None
    stage = _STAGE.get(message_status, -1)
    if stage < _STAGE.get(row.provider_status or "", -1):
        return row  # an older callback arriving late
    row.provider_status = message_status[:24]
    if message_status in _FINAL:
        row.status = OutboxStatus.DELIVERED
    elif message_status in _FAILED:
        row.status = OutboxStatus.FAILED
        row.last_error = f"provider reported {message_status} (error {error_code or '-'})"
    log.info("twilio.status", outbox_id=row.id, sid=sid, status=message_status)
    return row
