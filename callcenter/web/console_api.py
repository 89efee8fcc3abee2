"""The operator console's API: claim an alarm, record its outcome, the live queue (with a
Server-Sent Events stream of changes), the screen pop, elder search and the service catalogue."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from callcenter import db
from callcenter.console import (
    ConsoleError,
    claim_alarm,
    queue,
    record_outcome,
    screen_pop,
    search_elders,
)
from callcenter.db import utcnow
from callcenter.models import Case, Operator, Role
from callcenter.settings import get_settings
from callcenter.supervision_settings import get_supervision_settings
from callcenter.web.auth import RANK, SESSION_COOKIE, require, user_from_token
from callcenter.web.console_schemas import (
    CaseBrief,
    ClaimOut,
    ContactOut,
    ElderHit,
    OutcomeIn,
    OutcomeOut,
    QueueItem,
    ScreenPop,
    TerminalOut,
)
from callcenter.web.deps import ReadSessionDep, SessionDep
from callcenter.web.ids import RowId
from callcenter.web.live_events import current_feed
from callcenter.web.queue_view import queue_counts, queue_items
from volunteers.catalog import get_catalog

router = APIRouter(tags=["console"])
OperatorDep = Annotated[Operator, require(Role.OPERATOR)]

# A stream ends after this long and the browser's EventSource reconnects by itself; this bounds
# how long a server shutting down waits for open consoles (uvicorn waits for open responses).
EVENTS_STREAM_S = 25.0
EVENTS_KEEPALIVE_S = 10.0


def _http_error(exc: ConsoleError) -> HTTPException:
    if exc.missing:
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if exc.conflict:
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    return HTTPException(422, str(exc))


@router.post("/api/alarms/{alarm_id}/claim", response_model=ClaimOut)
def claim(alarm_id: RowId, session: SessionDep, user: OperatorDep) -> ClaimOut:
    """Take the alarm; 409 when another operator took it first."""
    try:
        alarm = claim_alarm(session, alarm_id=alarm_id, operator_id=user.id)
    except ConsoleError as exc:
        raise _http_error(exc) from None
    return ClaimOut(
        alarm_id=alarm.id,
        status=alarm.status.value,
        claimed_by_id=alarm.claimed_by_id,
        claimed_at=alarm.claimed_at,
        elder_id=alarm.elder_id,
        case_id=alarm.case_id,
    )


@router.post("/api/alarms/{alarm_id}/outcome", response_model=OutcomeOut)
def outcome(alarm_id: RowId, body: OutcomeIn, session: SessionDep, user: OperatorDep) -> OutcomeOut:
    """What was done about the alarm; it leaves the queue. A false alarm needs a reason."""
    try:
        alarm = record_outcome(
            session,
            alarm_id=alarm_id,
            operator_id=user.id,
            outcome=body.outcome,
            note=body.note,
            reason=body.reason,
        )
    except ConsoleError as exc:
        raise _http_error(exc) from None
    return OutcomeOut(
        alarm_id=alarm.id,
        status=alarm.status.value,
        outcome=alarm.outcome,
        handled_at=alarm.handled_at,
    )


# The counts of GET /api/queue, in headers so that its body stays the list of items it always was.
QUEUE_HEADERS = {
    "X-Queue-Total": {"description": "unhandled alarms, shown or not",
                      "schema": {"type": "integer"}},
    "X-Queue-Not-Shown": {"description": "unhandled alarms not in the list",
                          "schema": {"type": "integer"}},
    "X-Queue-Not-Shown-By-Kind": {
        "description": "the same per alarm kind, a Structured Field dictionary (RFC 9651), "
                       "e.g. technical=1234, test=5",
        "schema": {"type": "string"},
    },
}  # fmt: skip


@router.get(
    "/api/queue", response_model=list[QueueItem], responses={200: {"headers": QUEUE_HEADERS}}
)
def live_queue(session: ReadSessionDep, user: OperatorDep, response: Response) -> list[QueueItem]:
    """Unhandled alarms, most urgent first, then longest waiting first: every life-safety alarm
    and the first 200 others (``callcenter.console.QUEUE_OTHERS_SHOWN``); how many are left out
    is in the ``X-Queue-*`` headers. For supervisors, life-safety alarms nobody has claimed for
    more than ``HYT_LIFE_SAFETY_FLAG_S`` are flagged. The live stream's events carry the same."""
    now = utcnow()
    supervisor = RANK[user.role] >= RANK[Role.SUPERVISOR]
    flag_s = get_supervision_settings().life_safety_flag_s
    page = queue(session, now=now)
    counts = queue_counts(page)
    response.headers["X-Queue-Total"] = str(counts.total)
    response.headers["X-Queue-Not-Shown"] = str(counts.not_shown)
    response.headers["X-Queue-Not-Shown-By-Kind"] = ", ".join(
        f"{kind}={n}" for kind, n in counts.not_shown_by_kind.items()
    )
    return queue_items(page.rows, now=now, supervisor=supervisor, flag_s=flag_s)


def _case_brief(case: Case) -> CaseBrief:
    return CaseBrief(
        id=case.id,
        code=case.code,
        kind=case.kind.value,
        state=case.state.value,
        item_code=case.item_code,
        summary=case.summary,
        opened_at=case.opened_at,
    )


@router.get("/api/elders/{elder_id}", response_model=ScreenPop)
def elder_screen_pop(elder_id: RowId, session: SessionDep, _user: OperatorDep) -> ScreenPop:
    """The screen pop: who is calling, how to reach them, their health, terminal and cases."""
    today = dt.datetime.now(get_settings().tz).date()
    found = screen_pop(session, elder_id=elder_id, today=today)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such elder / 无此老人")
    e = found["elder"]
    return ScreenPop(
        id=e.id,
        code=e.code,
        name=e.name,
        sex=e.sex.value,
        age=found["age"],
        phone=e.phone,
        address=e.address,
        community=e.community,
        street=e.street,
        access_notes=e.access_notes,
        medical_notes=e.medical_notes,
        medications=list(e.medications or []),
        allergies=list(e.allergies or []),
        mobility=e.mobility.value,
        language=e.language,
        lives_alone=e.lives_alone,
        risk_level=e.risk_level.value,
        contacts=[
            ContactOut(name=c.name, relation=c.relation, phone=c.phone, call_order=c.call_order)
            for c in found["contacts"]
        ],
        terminals=[
            TerminalOut(
                id=t.id,
                serial=t.serial,
                model=t.model,
                status=t.status.value,
                battery_pct=t.battery_pct,
                last_seen_at=t.last_seen_at,
            )
            for t in found["terminals"]
        ],
        open_cases=[_case_brief(c) for c in found["open_cases"]],
        recent_cases=[_case_brief(c) for c in found["recent_cases"]],
    )


@router.get("/api/elders", response_model=list[ElderHit])
def find_elders(
    session: SessionDep, _user: OperatorDep, q: Annotated[str, Query(max_length=64)] = ""
) -> list[ElderHit]:
    """Search by name, pinyin initials or full pinyin prefix, phone, or terminal serial."""
    return [
        ElderHit(
            id=e.id,
            name=e.name,
            name_pinyin=e.name_pinyin,
            phone=e.phone,
            community=e.community,
            address=e.address,
        )
        for e in search_elders(session, q)
    ]


@router.get("/api/catalog")
def catalog(_user: OperatorDep) -> dict[str, Any]:
    """The service catalogue: categories and their items, for picking a case's item."""
    return get_catalog().as_json()


def _stream_user(request: Request) -> Operator:
    """Authenticate the event stream with a short session of its own: the shared session
    dependency would keep a database transaction open for the whole life of the stream."""
    token = request.cookies.get(SESSION_COOKIE) or ""
    with db.read_scope() as session:
        user = user_from_token(session, token) if token else None
        if user is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "login required / 请先登录")
        if RANK[user.role] < RANK[Role.OPERATOR]:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "not allowed for your role / 无权限")
        session.expunge(user)
        return user


# One Server-Sent Event (the schema of each event on the stream, as OpenAPI 3.2 reads it).
SSE_EVENT = {
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
}


@router.get(
    "/api/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}}},
)
async def events(request: Request) -> StreamingResponse:
    """Server-Sent Events: an ``alarms`` event whenever an alarm is added, claimed or handled,
    and, on a supervisor's stream, when a life-safety alarm passes the flag threshold unclaimed.
    Its data is ``{"marker": …, "queue": [the items of GET /api/queue], "total": n,
    "not_shown": n, "not_shown_by_kind": {kind: n}}`` (supervisors': also ``"flagged": [alarm
    ids]``), so the console renders the queue without fetching it. The first event of a stream
    is the process's current queue (at most one poll old), with ``"age_s"``: how long ago its
    items' ``wait_s`` were counted; while the database is down it has the marker only.
    A ``status`` event ``{"database": "down", "since": …}`` says the database cannot be read
    (the queue shown is no longer live); ``{"database": "up"}`` that it can again, followed by
    an ``alarms`` event with the queue.

    The streams of a web process share one poller of the database
    (:mod:`callcenter.web.live_events`), so that they see alarms stored by any web worker,
    call-handler process or SCAIP ingress, at the cost of one small query per interval."""
    user = await asyncio.to_thread(_stream_user, request)
    supervisor = RANK[user.role] >= RANK[Role.SUPERVISOR]
    feed = current_feed()

    async def stream() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        async with feed.listening():
            started = last_sent = loop.time()
            # Each stream a little longer or shorter: consoles that connected together (after a
            # restart) would otherwise all reconnect at the same moment, every time, and an alarm
            # arriving then would wait for all of them.
            length = EVENTS_STREAM_S * random.uniform(0.8, 1.2)
            seen = feed.version
            snapshot = feed.snapshot
            key = snapshot.key(supervisor) if snapshot else None
            # The database status is sent only when it is down or changes (issue #7).
            down = feed.database_down
            # The first event is the feed's current snapshot (at most one poll old; the queue in
            # it is read when something changes, hence its age): a console that (re)connects
            # costs no queue read. A storm's consoles reconnecting every 25 s and each fetching
            # the queue were two thirds of the web process's CPU (bench/storm_console.py).
            if snapshot is not None and not down:
                first = snapshot.first_data(supervisor, utcnow())
            else:
                first = json.dumps({"marker": snapshot.marker if snapshot else None})
            status_event = _sse("status", feed.status_data()) if down else ""
            yield "retry: 500\n\n" + _sse("alarms", first) + status_event
            while (elapsed := loop.time() - started) < length:
                quiet = loop.time() - last_sent
                timeout = min(EVENTS_KEEPALIVE_S - quiet, length - elapsed)
                changed = await feed.wait(seen, timeout=max(0.0, timeout))
                if await request.is_disconnected():
                    return
                snapshot = feed.snapshot
                if changed:
                    seen = feed.version
                    if feed.database_down != down:
                        down = feed.database_down
                        last_sent = loop.time()
                        yield _sse("status", feed.status_data())
                        key = None  # back up: send the queue (read afresh) whatever its marker
                    if snapshot is not None and not down and snapshot.key(supervisor) != key:
                        key = snapshot.key(supervisor)
                        last_sent = loop.time()
                        yield _sse("alarms", snapshot.data(supervisor))
                elif loop.time() - last_sent >= EVENTS_KEEPALIVE_S:
                    last_sent = loop.time()
                    yield ": keep-alive\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(event: str, data: str) -> str:
    """One event; ``data`` is JSON on one line (json.dumps writes no newline)."""
    return f"event: {event}\ndata: {data}\n\n"
