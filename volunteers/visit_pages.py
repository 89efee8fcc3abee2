"""The volunteer's visit page, reached from the signed link in a visit reminder (no login).

``/v/visit/<token>`` shows one visit to the volunteer it was sent to: the date, the kind, the
community and the elder as 翁奶奶 (surname and a respectful form). Once the volunteer has
confirmed, it also shows what the visit itself needs (full name, address, access notes, the
elder's phone to call ahead), as the offer page shows the address only to the volunteer who
accepted; never medical notes, medications or contacts, and none of it after the visit. From
the page the volunteer confirms, hands the visit back (:mod:`schedules.visit_actions`), or
records it (:func:`schedules.visit_record.record_visit`).

A link names its visit and its volunteer (:mod:`volunteers.visit_links`): it cannot act on
another visit, and stops working once the visit is someone else's. Refusals are pages, not JSON:
403 for a forged or altered link (or one made for another purpose), 410 for an expired one or a
visit given to another volunteer, 409 for an action the visit's state does not allow (recorded
twice: nothing is written the second time), 422 for a form that cannot be read.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import structlog
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from callcenter.db import utcnow
from callcenter.models import Elder, Sex
from callcenter.web.deps import SessionDep
from schedules.models import Visit, VisitKind, VisitStatus
from schedules.settings import get_schedule_settings
from schedules.visit_actions import (
    CONFIRMABLE,
    HANDBACKABLE,
    HandBackOutcome,
    VisitActionError,
    confirm_visit,
    hand_back_visit,
    lock_visit,
)
from schedules.visit_record import CHECKLIST_ITEMS, RECORDABLE, VisitRecordError, record_visit
from volunteers.links import LinkError
from volunteers.visit_links import VisitClaim, read_visit_token, visit_code

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v/visit", tags=["volunteer pages"])
templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))

STATUS_TEXT = {
    VisitStatus.PLANNED: ("待您确认", "waiting for your confirmation"),
    VisitStatus.CONFIRMED: ("您已确认", "confirmed by you"),
    VisitStatus.OVERDUE: ("已超期，请尽快探访", "overdue: please visit soon"),
    VisitStatus.HANDED_BACK: ("您已交回，中心将另行安排", "handed back: the centre rearranges it"),
    VisitStatus.DONE: ("已记录，谢谢！", "recorded, thank you!"),
    VisitStatus.ESCALATED: (
        "已转交班长跟进，仍可记录",
        "passed to the supervisor; you may still record it",
    ),
    VisitStatus.CANCELLED: ("已取消，无需前往", "cancelled: no need to go"),
}
KIND_TEXT = {
    VisitKind.MONTHLY: ("月度探访", "monthly visit"),
    VisitKind.WEEKLY: ("每周探访", "weekly visit"),
    VisitKind.QUARTERLY: ("季度探访", "quarterly visit"),
    VisitKind.EXTRA: ("额外探访（24小时内）", "extra visit (within 24 h)"),
}
CHECKLIST_TEXT = {
    "health": ("身体状况", "health"),
    "mood": ("情绪", "mood"),
    "food": ("饮食", "food"),
    "utilities_safe": ("水、电、燃气安全", "water, power and gas safety"),
    "terminal_tested": ("终端按键测试接通中心", "terminal tested: a press reached the centre"),
    "terminal_worn": ("终端/吊坠随身佩戴", "terminal or pendant worn"),
}
MESSAGES = {
    "confirmed": "已确认，谢谢！地址见下方。Confirmed, thank you: the address is below.",
    "recorded": "探访已记录，谢谢！Visit recorded, thank you!",
    "recorded_case": "探访已记录；您发现的需求已生成工单，接警员会跟进。"
    "Recorded; what you found is now a case for an operator.",
    "late": "已交回。探访已超期，中心将另行安排。Handed back; the centre rearranges it.",
}
WEEKDAYS = "一二三四五六日"
MAX_NEEDS, MAX_NOTES = 500, 2000
# Refusals (zh, en).
INVALID = ("链接无效", "this link is not valid")
EXPIRED = ("链接已过期，请联系服务中心", "this link has expired; please call the centre")
HANDED_BACK = ("您已交回此探访，谢谢告知！", "you handed this visit back; thank you for telling us")
GONE = (
    "此探访已改由其他志愿者负责，无需前往",
    "this visit is now another volunteer's: no need to go",
)
NOT_RECORDABLE = ("此探访已记录或已结束，不能重复记录", "this visit is recorded or closed already")
TOO_LONG = (
    f"需求最多{MAX_NEEDS}字、备注最多{MAX_NOTES}字",
    f"needs at most {MAX_NEEDS}, notes at most {MAX_NOTES} characters",
)


class Refusal(Exception):
    """Why the page says no: an HTTP status and a sentence in each language."""

    def __init__(self, status: int, zh: str, en: str) -> None:
        super().__init__(en)
        self.status, self.zh, self.en = status, zh, en


def _refuse(request: Request, refusal: Refusal) -> Response:
    return templates.TemplateResponse(
        request,
        "visit_refused.html",
        {"zh": refusal.zh, "en": refusal.en},
        status_code=refusal.status,
    )


def _claim(token: str) -> VisitClaim:
    max_age_s = get_schedule_settings().visit_link_max_age_days * 86_400
    try:
        return read_visit_token(token, max_age_s=max_age_s)
    except LinkError as exc:
        log.warning("visit_page.link_refused", reason=exc.reason)
        if exc.reason == "expired":
            raise Refusal(410, *EXPIRED) from None
        raise Refusal(403, *INVALID) from None


def _visit(session: SessionDep, claim: VisitClaim) -> Visit:
    visit = session.get(Visit, claim.visit_id)
    if visit is None:
        log.warning("visit_page.no_such_visit", visit_id=claim.visit_id)
        raise Refusal(403, *INVALID)
    if visit.volunteer_id != claim.volunteer_id:
        raise Refusal(410, *(HANDED_BACK if claim.volunteer_id in visit.handed_back_by else GONE))
    return visit


def _respectful(elder: Elder) -> str:
    """翁奶奶 / 翁爷爷: how a volunteer greets an elder, and no more of the name."""
    return elder.name[:1] + ("奶奶" if elder.sex is Sex.FEMALE else "爷爷")


def _day(day: dt.date) -> str:
    return f"{day.year}年{day.month}月{day.day}日（周{WEEKDAYS[day.weekday()]}）"


def _back(token: str, msg: str) -> RedirectResponse:
    return RedirectResponse(f"/v/visit/{token}?msg={msg}", status_code=303)


@router.get("/{token}", response_class=HTMLResponse)
def show(request: Request, token: str, session: SessionDep, msg: str = "") -> Response:
    try:
        visit = _visit(session, _claim(token))
    except Refusal as refusal:
        return _refuse(request, refusal)
    elder = session.get_one(Elder, visit.elder_id)
    # What the visit needs, once the volunteer has said they are going.
    details = visit.status is VisitStatus.CONFIRMED
    status_zh, status_en = STATUS_TEXT[visit.status]
    kind_zh, kind_en = KIND_TEXT[visit.kind]
    return templates.TemplateResponse(
        request,
        "visit.html",
        {
            "code": visit_code(visit.id),
            "kind_zh": kind_zh,
            "kind_en": kind_en,
            "planned": _day(visit.planned_date),
            "window_end": _day(visit.window_end),
            "status_zh": status_zh,
            "status_en": status_en,
            "community": elder.community,
            "elder_short": _respectful(elder),
            "details": details,
            "elder_name": elder.name if details else "",
            "elder_phone": (elder.phone or "") if details else "",
            "address": f"{elder.street}{elder.community}{elder.address}" if details else "",
            "access_notes": elder.access_notes if details else "",
            "can_confirm": visit.status in CONFIRMABLE,
            "can_hand_back": visit.status in HANDBACKABLE,
            "can_record": visit.status in RECORDABLE,
            "checklist": [(item, *CHECKLIST_TEXT[item]) for item in CHECKLIST_ITEMS],
            "max_needs": MAX_NEEDS,
            "max_notes": MAX_NOTES,
            "base": f"/v/visit/{token}",
            "message": MESSAGES.get(msg, ""),
        },
    )


@router.post("/{token}/confirm")
def confirm(request: Request, token: str, session: SessionDep) -> Response:
    try:
        claim = _claim(token)
        _visit(session, claim)
        confirm_visit(session, claim.visit_id, claim.volunteer_id)
    except Refusal as refusal:
        return _refuse(request, refusal)
    except VisitActionError as exc:
        return _refuse(request, _action_refusal(exc))
    return _back(token, "confirmed")


@router.post("/{token}/handback")
def hand_back(request: Request, token: str, session: SessionDep) -> Response:
    try:
        claim = _claim(token)
        _visit(session, claim)
        result = hand_back_visit(session, claim.visit_id, claim.volunteer_id, now=utcnow())
    except Refusal as refusal:
        return _refuse(request, refusal)
    except VisitActionError as exc:
        return _refuse(request, _action_refusal(exc))
    if result.outcome is HandBackOutcome.LATE:
        return _back(token, "late")
    # Reassigned or escalated: the visit is no longer this volunteer's, so the page says so.
    return _back(token, "handed_back")


class RecordForm(BaseModel):
    """The record form as posted; read and checked by :func:`_checked`, never trusted."""

    seen_in_person: str = ""
    health: str = ""
    mood: str = ""
    food: str = ""
    utilities_safe: str = ""
    terminal_tested: str = ""
    terminal_worn: str = ""
    needs: str = ""
    notes: str = ""


def _checked(form: RecordForm) -> tuple[bool, dict[str, bool]]:
    """(seen in person, checklist) from the form; :class:`Refusal` 422 on anything unreadable."""
    if form.seen_in_person not in ("yes", "no"):
        raise Refusal(422, "请选择是否见到老人本人", "say whether you saw the elder in person")
    checklist: dict[str, bool] = {}
    for item in CHECKLIST_ITEMS:
        value = getattr(form, item)
        if value == "":
            continue  # not checked: left out, not guessed
        if value not in ("ok", "problem"):
            zh, en = CHECKLIST_TEXT[item]
            raise Refusal(422, f"检查项“{zh}”无法识别", f"checklist item “{en}”: unreadable answer")
        checklist[item] = value == "ok"
    if len(form.needs) > MAX_NEEDS or len(form.notes) > MAX_NOTES:
        raise Refusal(422, *TOO_LONG)
    return form.seen_in_person == "yes", checklist


@router.post("/{token}/record")
def record(
    request: Request, token: str, session: SessionDep, form: Annotated[RecordForm, Form()]
) -> Response:
    try:
        claim = _claim(token)
        _visit(session, claim)
        seen, checklist = _checked(form)
        # Locked first, so that two records racing each other are decided here: one is written.
        visit = lock_visit(session, claim.visit_id)
        if visit is None or visit.volunteer_id != claim.volunteer_id:
            raise Refusal(410, *GONE)
        if visit.status not in RECORDABLE:
            raise Refusal(409, *NOT_RECORDABLE)
        finding = record_visit(
            session,
            visit.id,
            seen_in_person=seen,
            checklist=checklist,
            needs=form.needs,
            notes=form.notes,
        )
    except Refusal as refusal:
        log.warning("visit_page.record_refused", status=refusal.status, reason=refusal.en)
        return _refuse(request, refusal)
    except VisitRecordError as exc:  # a state record_visit refuses that the page did not foresee
        log.warning("visit_page.record_refused", status=409, reason=str(exc))
        return _refuse(request, Refusal(409, "此探访不能记录", str(exc)))
    case_id = finding.case.id if finding.case else None
    log.info("visit_page.recorded", visit_id=finding.visit_id, case_id=case_id)
    return _back(token, "recorded_case" if finding.case else "recorded")


def _action_refusal(exc: VisitActionError) -> Refusal:
    log.warning("visit_page.action_refused", reason=exc.reason, detail=str(exc))
    if exc.reason == "not_yours":
        return Refusal(410, *GONE)
    return Refusal(409, "此探访当前状态不能这样操作", f"not possible now: {exc}")
