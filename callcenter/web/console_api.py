"""The operator console's API: claim an alarm, record its outcome, the live queue (with a
Server-Sent Events stream of changes), the screen pop, elder search and the service catalogue."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse

from callcenter import db
from callcenter.console import (
    ConsoleError,
    claim_alarm,
    is_life_safety,
    queue,
    queue_marker,
    record_outcome,
    screen_pop,
    search_elders,
)
from callcenter.models import Case, Operator, Role
from callcenter.settings import get_settings
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
from callcenter.web.deps import SessionDep
from volunteers.catalog import get_catalog

router = APIRouter(tags=["console"])
OperatorDep = Annotated[Operator, require(Role.OPERATOR)]

# How often each open event stream looks at the database for changes.
EVENTS_POLL_S = 0.3
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
def claim(alarm_id: int, session: SessionDep, user: OperatorDep) -> ClaimOut:
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
def outcome(alarm_id: int, body: OutcomeIn, session: SessionDep, user: OperatorDep) -> OutcomeOut:
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


@router.get("/api/queue", response_model=list[QueueItem])
def live_queue(session: SessionDep, _user: OperatorDep) -> list[QueueItem]:
    """Unhandled alarms, most urgent first, then longest waiting first."""
    return [
        QueueItem(
            id=r.alarm.id,
            kind=r.alarm.kind.value,
            priority=r.alarm.priority,
            life_safety=is_life_safety(r.alarm),
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
        )
        for r in queue(session)
    ]


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
def elder_screen_pop(elder_id: int, session: SessionDep, _user: OperatorDep) -> ScreenPop:
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
    with db.session_scope() as session:
        user = user_from_token(session, token) if token else None
        if user is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "login required / 请先登录")
        if RANK[user.role] < RANK[Role.OPERATOR]:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "not allowed for your role / 无权限")
        session.expunge(user)
        return user


def _read_marker() -> str:
    with db.session_factory()() as session:
        return queue_marker(session)


@router.get("/api/events")
async def events(request: Request) -> StreamingResponse:
    """Server-Sent Events: an ``alarms`` event whenever an alarm is added, claimed or handled.

    Each stream polls the database (a marker of max id, counts and last claim/handle times)
    every 300 ms instead of listening to an in-memory publisher, so that it sees alarms stored
    by any web worker, call-handler process or SCAIP ingress. PostgreSQL LISTEN/NOTIFY is the
    later optimisation."""
    await asyncio.to_thread(_stream_user, request)

    async def stream() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        started = last_sent = loop.time()
        marker = await asyncio.to_thread(_read_marker)
        yield "retry: 500\n\n" + _sse("alarms", {"marker": marker})
        while loop.time() - started < EVENTS_STREAM_S:
            await asyncio.sleep(EVENTS_POLL_S)
            if await request.is_disconnected():
                return
            now_marker = await asyncio.to_thread(_read_marker)
            if now_marker != marker:
                marker = now_marker
                last_sent = loop.time()
                yield _sse("alarms", {"marker": marker})
            elif loop.time() - last_sent > EVENTS_KEEPALIVE_S:
                last_sent = loop.time()
                yield ": keep-alive\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"
