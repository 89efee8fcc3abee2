"""Deliver queued SMS from the outbox: claim, send, record; retry with back-off; never twice.

Life of a row (``OutboxMessage.status``)::

    queued ──claim──► sending ──provider said yes──► sent ──status callback──► delivered | failed
      ▲                  │ definite failure, attempts left: back to queued, next_attempt_at later
      │                  │ definite failure, none left or permanent (bad number): failed
      │                  │ outcome unknown (time-out after the request left): stays sending
      └── not found at the provider after the grace period ◄── resolve_unknown ──┘

Exactly once, and where it stops being exact
--------------------------------------------
Twilio's Messages API has no idempotency key: two POSTs are two SMS. So the one thing that must
never happen is a second POST for a row whose first POST may have reached Twilio. The steps:

1. **Claim** one row in its own committed transaction: ``queued → sending``, ``attempts + 1``,
   ``next_attempt_at = now + lease``. PostgreSQL picks the row with ``FOR UPDATE SKIP LOCKED``;
   SQLite (where the engine begins ``IMMEDIATE``, one writer at a time) needs no lock. The
   ``UPDATE`` is also conditional on ``status = 'queued'``, so of two senders one wins.
2. **POST** to Twilio, outside any transaction. The status-callback URL carries the outbox id
   (``…/webhooks/twilio/status?outbox=<id>``), so if Twilio created the message, its first callback
   (seconds later) names our row even when we never saw the answer.
3. **Record** the outcome in a second transaction, conditional on the claim (``status='sending'
   AND attempts=n``), so a sender that lost its claim cannot overwrite anything.

The answers sort into three kinds:

- *sent*: Twilio answered 2xx with a Message SID → ``sent``, ``provider_id``.
- *definitely not sent*: Twilio answered with an error status (it took the request and refused
  it; 429 and 5xx are retried with exponential back-off, other 4xx such as an invalid number fail
  at once), or the connection was never made (connect error or connect time-out). Safe to retry.
- *unknown*: the request may have left (read time-out, connection reset, any unexpected error).
  The row **stays** ``sending`` with ``next_attempt_at = now + grace`` and is never re-sent
  blindly. Either the status callback arrives and marks it sent, or after the grace period
  :func:`resolve_unknown` asks Twilio: the recent messages to that number from our number whose
  body matches and whose SID no other row holds. Found → ``sent`` with that SID; not found →
  ``queued`` again; Twilio unreachable → asked again later, and after
  :data:`UNRESOLVED_GIVE_UP` the row is ``failed`` with "needs a human check" in ``last_error``.

A row left ``sending`` by a crash (between claim and record) is the same case: its lease expires,
and :func:`resolve_unknown` treats it exactly like an unknown outcome.

Remaining window (documented, not closed): a duplicate can still happen if (a) a sender stalls
for longer than the lease (at least a minute, three HTTP time-outs) between its claim and Twilio
receiving its POST, while another sender resolves and re-sends the row; or (b) Twilio created the
message but neither sent a status callback nor listed it within the grace period. Both are rare,
and both are logged: a status callback for a second SID on one row is recorded in ``last_error`` as
a duplicate. The console backend keeps nothing to look up: a crash there can print a text twice.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

import requests
import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from callcenter.db import utcnow
from callcenter.models import OutboxMessage, OutboxStatus
from callcenter.phones import mask_phone
from callcenter.settings import get_settings
from volunteers.sms_settings import SmsSettings, get_sms_settings

log = structlog.get_logger(__name__)

STATUS_PATH = "/webhooks/twilio/status"
# Time for a status callback to settle an unknown outcome before we ask Twilio ourselves.
UNKNOWN_GRACE = dt.timedelta(minutes=2)
# Allowance for Twilio's clock against ours when matching its messages to our rows.
CLOCK_SKEW = dt.timedelta(minutes=2)
# An outcome still unknown after this long goes to a human: an offer this late is worthless.
UNRESOLVED_GIVE_UP = dt.timedelta(hours=1)
BACKOFF_CAP = dt.timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    """What a backend needs to send one outbox row."""

    outbox_id: int
    to: str
    body: str
    attempt: int


@dataclass(frozen=True, slots=True)
class SendResult:
    provider_id: str
    provider_status: str | None = None


class SendFailed(Exception):
    """The provider did not take the message: nothing was sent."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.retryable = retryable


class SendOutcomeUnknown(Exception):
    """The request may have reached the provider: the message may or may not exist."""


class SmsBackend(Protocol):
    """How an outbox row leaves the building."""

    name: str

    def send(self, message: OutgoingSms) -> SendResult:
        """Send once; raise :class:`SendFailed` or :class:`SendOutcomeUnknown` on failure."""
        ...

    def find_sent(self, message: OutgoingSms, *, since: dt.datetime) -> list[SendResult]:
        """Messages at the provider that may be ``message``, newest first; raise if unsure."""
        ...


class ConsoleBackend:
    """Development and demo: the outbox row is the record; the text is printed."""

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def send(self, message: OutgoingSms) -> SendResult:
        stream = self._stream or sys.stdout
        print(f"[SMS #{message.outbox_id} → {message.to}] {message.body}", file=stream, flush=True)
        return SendResult(provider_id=f"console-{message.outbox_id}", provider_status="sent")

    def find_sent(self, message: OutgoingSms, *, since: dt.datetime) -> list[SendResult]:
        # A print leaves nothing to ask; printing again after a crash harms no one.
        return []


def status_callback_url(public_base_url: str, outbox_id: int) -> str:
    """Where Twilio reports a message's status; the id lets a callback settle an unknown send."""
    return f"{public_base_url.rstrip('/')}{STATUS_PATH}?outbox={outbox_id}"


def _never_connected(exc: requests.RequestException) -> bool:
    """True only when the request provably never left: no connection was made."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        # urllib3 wraps a refused or unreachable connect in MaxRetryError(NewConnectionError).
        return type(reason).__name__ in {"NewConnectionError", "NameResolutionError"}
    return False


class TwilioBackend:
    """Twilio's Messages API through the official client (``twilio.rest.Client``)."""

    name = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_: str,
        public_base_url: str,
        timeout_s: float = 10.0,
        http_client: Any = None,
    ) -> None:
        self.from_ = from_
        self.public_base_url = public_base_url
        self.client = Client(
            account_sid, auth_token, http_client=http_client or TwilioHttpClient(timeout=timeout_s)
        )

    def send(self, message: OutgoingSms) -> SendResult:
        try:
            created = self.client.messages.create(
                to=message.to,
                from_=self.from_,
                body=message.body,
                status_callback=status_callback_url(self.public_base_url, message.outbox_id),
            )
        except TwilioException as exc:
            status = getattr(exc, "status", None)
            if status is None:  # raised before or without an HTTP answer
                raise SendOutcomeUnknown(f"twilio: {exc}") from exc
            retryable = status == 429 or status >= 500
            code = getattr(exc, "code", None)
            raise SendFailed(
                f"twilio HTTP {status} code {code}: {exc}", retryable=retryable
            ) from exc
        except requests.RequestException as exc:
            if _never_connected(exc):
                raise SendFailed(f"no connection to Twilio: {exc}") from exc
            raise SendOutcomeUnknown(f"{type(exc).__name__}: {exc}") from exc
        return SendResult(provider_id=created.sid, provider_status=created.status)

    def find_sent(self, message: OutgoingSms, *, since: dt.datetime) -> list[SendResult]:
        found: list[SendResult] = []
        # Twilio lists newest first; the Messages list cannot filter on the body, so we do.
        for msg in self.client.messages.list(to=message.to, from_=self.from_, limit=50):
            created = msg.date_created
            if created is not None and created < since:
                break
            # Trial accounts prefix the body; a match at the end is still our text.
            if (msg.body or "").endswith(message.body):
                found.append(SendResult(provider_id=msg.sid, provider_status=msg.status))
        return found


def backend_from_settings(sms: SmsSettings | None = None) -> SmsBackend:
    """The backend ``HYT_SMS_BACKEND`` names."""
    sms = sms or get_sms_settings()
    if sms.sms_backend == "console":
        return ConsoleBackend()
    assert sms.twilio_account_sid and sms.twilio_auth_token and sms.twilio_from  # validated
    return TwilioBackend(
        account_sid=sms.twilio_account_sid,
        auth_token=sms.twilio_auth_token,
        from_=sms.twilio_from,
        public_base_url=get_settings().public_base_url,
        timeout_s=sms.twilio_timeout_s,
    )


def backoff(attempts: int, base_s: float) -> dt.timedelta:
    """Wait after the ``attempts``-th definite failure: base, 2x base, 4x base … capped."""
    return min(BACKOFF_CAP, dt.timedelta(seconds=base_s * 2 ** max(0, attempts - 1)))


def _lease(sms: SmsSettings) -> dt.timedelta:
    # Longer than any one send can take, so an expired lease means a dead or stuck sender.
    return dt.timedelta(seconds=max(60.0, 3 * sms.twilio_timeout_s))


SessionFactory = Callable[[], Session]


def send_due(
    session_factory: SessionFactory,
    backend: SmsBackend,
    *,
    now: dt.datetime | None = None,
    batch: int = 50,
    sms: SmsSettings | None = None,
) -> int:
    """Send up to ``batch`` due messages; first settle rows whose outcome is unknown.

    Returns how many rows became ``sent`` in this call.
    """
    sms = sms or get_sms_settings()
    settled = resolve_unknown(session_factory, backend, now=now, limit=batch, sms=sms)
    sent = 0
    for _ in range(batch):
        at = now or utcnow()
        claimed = _claim_one(session_factory, at, _lease(sms))
        if claimed is None:
            break
        if _attempt(session_factory, backend, claimed, now or utcnow(), sms):
            sent += 1
    return settled + sent


def _claim_one(
    session_factory: SessionFactory, now: dt.datetime, lease: dt.timedelta
) -> OutgoingSms | None:
    due = (
        select(OutboxMessage.id)
        .where(OutboxMessage.status == OutboxStatus.QUEUED, OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(1)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite renders nothing and serialises
        .scalar_subquery()
    )
    claim = (
        update(OutboxMessage)
        .where(OutboxMessage.id == due, OutboxMessage.status == OutboxStatus.QUEUED)
        .values(
            status=OutboxStatus.SENDING,
            attempts=OutboxMessage.attempts + 1,
            next_attempt_at=now + lease,
        )
        .returning(OutboxMessage.id, OutboxMessage.to, OutboxMessage.body, OutboxMessage.attempts)
        .execution_options(synchronize_session=False)
    )
    with session_factory() as session, session.begin():
        row = session.execute(claim).one_or_none()
    if row is None:
        return None
    return OutgoingSms(outbox_id=row[0], to=row[1], body=row[2], attempt=row[3])


def _update_claimed(session: Session, message: OutgoingSms, **values: Any) -> bool:
    """Change the row only while our claim still holds it; True if it did."""
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message.outbox_id,
            OutboxMessage.status == OutboxStatus.SENDING,
            OutboxMessage.attempts == message.attempt,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def _attempt(
    session_factory: SessionFactory,
    backend: SmsBackend,
    message: OutgoingSms,
    now: dt.datetime,
    sms: SmsSettings,
) -> bool:
    bound = log.bind(
        outbox_id=message.outbox_id, to=mask_phone(message.to), attempt=message.attempt
    )
    try:
        result = backend.send(message)
    except SendFailed as exc:
        give_up = not exc.retryable or message.attempt >= sms.sms_max_attempts
        values: dict[str, Any] = {"last_error": str(exc)[:2000]}
        if give_up:
            values["status"] = OutboxStatus.FAILED
        else:
            values["status"] = OutboxStatus.QUEUED
            values["next_attempt_at"] = now + backoff(message.attempt, sms.sms_backoff_base_s)
        with session_factory() as session, session.begin():
            _update_claimed(session, message, **values)
        bound.warning("outbox.sms.failed" if give_up else "outbox.sms.retry", error=str(exc))
        return False
    except Exception as exc:  # SendOutcomeUnknown and anything unforeseen: the POST may exist
        with session_factory() as session, session.begin():
            _update_claimed(
                session,
                message,
                next_attempt_at=now + UNKNOWN_GRACE,
                last_error=f"outcome unknown, not re-sent until checked: {exc}"[:2000],
            )
        bound.warning("outbox.sms.outcome_unknown", error=str(exc))
        return False
    with session_factory() as session, session.begin():
        recorded = _update_claimed(
            session,
            message,
            status=OutboxStatus.SENT,
            provider_id=result.provider_id,
            provider_status=result.provider_status,
            sent_at=now,
            last_error=None,
        )
        if not recorded:
            holder = session.scalar(
                select(OutboxMessage.provider_id).where(OutboxMessage.id == message.outbox_id)
            )
            # The status callback may have recorded this very SID first: that is success.
            recorded = holder == result.provider_id
            if not recorded:
                # Our claim was taken from us (a stalled sender): the documented window.
                session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == message.outbox_id)
                    .values(
                        last_error=f"duplicate at provider: {result.provider_id} besides {holder}"
                    )
                    .execution_options(synchronize_session=False)
                )
                bound.error("outbox.sms.claim_lost", provider_id=result.provider_id, holder=holder)
    if recorded:
        bound.info("outbox.sms.sent", provider_id=result.provider_id, backend=backend.name)
    return recorded


def resolve_unknown(
    session_factory: SessionFactory,
    backend: SmsBackend,
    *,
    now: dt.datetime | None = None,
    limit: int = 50,
    sms: SmsSettings | None = None,
) -> int:
    """Settle ``sending`` rows whose lease or grace has run out; returns how many became sent."""
    sms = sms or get_sms_settings()
    now = now or utcnow()
    with session_factory() as session:
        stale = session.execute(
            select(
                OutboxMessage.id,
                OutboxMessage.to,
                OutboxMessage.body,
                OutboxMessage.attempts,
                OutboxMessage.created_at,
                OutboxMessage.next_attempt_at,
            )
            .where(
                OutboxMessage.status == OutboxStatus.SENDING,
                OutboxMessage.next_attempt_at <= now,
            )
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(limit)
        ).all()
    settled = 0
    for outbox_id, to, body, attempts, created_at, seen_next in stale:
        message = OutgoingSms(outbox_id=outbox_id, to=to, body=body, attempt=attempts)
        # Take the row for this check (compare-and-set on the lease), so that two senders
        # never both decide about it.
        with session_factory() as session, session.begin():
            taken = session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == outbox_id,
                    OutboxMessage.status == OutboxStatus.SENDING,
                    OutboxMessage.attempts == attempts,
                    OutboxMessage.next_attempt_at == seen_next,
                )
                .values(next_attempt_at=now + _lease(sms))
                .execution_options(synchronize_session=False)
            )
            if not getattr(taken, "rowcount", 0):
                continue
        if _settle(session_factory, backend, message, created_at, now, sms):
            settled += 1
    return settled


def _settle(
    session_factory: SessionFactory,
    backend: SmsBackend,
    message: OutgoingSms,
    created_at: dt.datetime,
    now: dt.datetime,
    sms: SmsSettings,
) -> bool:
    bound = log.bind(outbox_id=message.outbox_id, to=mask_phone(message.to))
    try:
        matches = backend.find_sent(message, since=created_at - CLOCK_SKEW)
    except Exception as exc:  # the provider cannot tell us now: ask again later, or a human
        hopeless = now - created_at >= UNRESOLVED_GIVE_UP
        values: dict[str, Any] = {
            "last_error": (
                f"needs a human check: may or may not have been sent ({exc})"
                if hopeless
                else f"outcome unknown, lookup failed: {exc}"
            )[:2000]
        }
        if hopeless:
            values["status"] = OutboxStatus.FAILED
        else:
            values["next_attempt_at"] = now + UNKNOWN_GRACE
        with session_factory() as session, session.begin():
            _update_claimed(session, message, **values)
        bound.error("outbox.sms.unresolved", error=str(exc), gave_up=hopeless)
        return False
    with session_factory() as session, session.begin():
        sids = [m.provider_id for m in matches]
        taken = (
            set(
                session.scalars(
                    select(OutboxMessage.provider_id).where(OutboxMessage.provider_id.in_(sids))
                )
            )
            if sids
            else set()
        )
        mine = next((m for m in matches if m.provider_id not in taken), None)
        if mine is not None:
            _update_claimed(
                session,
                message,
                status=OutboxStatus.SENT,
                provider_id=mine.provider_id,
                provider_status=mine.provider_status,
                sent_at=now,
                last_error=None,
            )
            bound.info("outbox.sms.found_at_provider", provider_id=mine.provider_id)
            return True
        if message.attempt >= sms.sms_max_attempts:
            _update_claimed(
                session,
                message,
                status=OutboxStatus.FAILED,
                last_error="not found at the provider; no attempts left",
            )
            bound.error("outbox.sms.failed", reason="not found, no attempts left")
            return False
        _update_claimed(
            session,
            message,
            status=OutboxStatus.QUEUED,
            next_attempt_at=now,
            last_error="earlier attempt not found at the provider; sending again",
        )
        bound.warning("outbox.sms.requeued_after_lookup")
        return False
