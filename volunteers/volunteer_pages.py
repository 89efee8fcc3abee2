"""The volunteer's mobile page, reached from the signed link in the offer SMS (no login)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from callcenter.models import Case, Elder
from callcenter.web.deps import SessionDep
from callcenter.web.input_text import InputText
from volunteers.catalog import get_catalog
from volunteers.links import LinkError, read_token
from volunteers.models import Offer, OfferStatus
from volunteers.offers import accept_offer, decline_offer, drop_out
from volunteers.task_flow import TaskError, mark_arrived, submit_feedback

router = APIRouter(prefix="/v/offer", tags=["volunteer pages"], include_in_schema=True)
templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))

STATUS_TEXT = {
    OfferStatus.PENDING: ("等待您的答复", "waiting for your answer"),
    OfferStatus.ACCEPTED: ("您已接单", "accepted by you"),
    OfferStatus.DECLINED: ("您已拒绝", "declined"),
    OfferStatus.EXPIRED: ("已过期", "expired"),
    OfferStatus.STOOD_DOWN: ("已有其他志愿者接单，无需前往", "taken by someone else: not needed"),
    OfferStatus.DROPPED: ("您已退出", "you dropped out"),
    OfferStatus.COMPLETED: ("已完成，谢谢！", "done, thank you!"),
}
MESSAGES = {
    "accepted": "接单成功，请尽快前往。Accepted: please go.",
    "taken": "已有其他志愿者接单，谢谢！Someone else took it, thank you!",
    "declined": "已记录，谢谢。Noted, thank you.",
    "arrived": "已记录到达。Arrival noted.",
    "feedback": "反馈已提交，谢谢！Feedback sent, thank you!",
    "dropped": "已退出，我们会另找志愿者。You are off this task.",
}


def _offer(session: SessionDep, token: str) -> tuple[Offer, Case]:
    try:
        claim = read_token("offer", token)
    except LinkError as exc:
        raise HTTPException(403 if exc.reason != "expired" else 410,
                            "链接无效或已过期 / link invalid or expired") from None  # fmt: skip
    offer = session.get(Offer, claim.object_id)
    # The token names its case too: a link cannot be reused for another case.
    if offer is None or offer.case_id != claim.case_id:
        raise HTTPException(403, "链接无效 / invalid link")
    case = session.get(Case, offer.case_id)
    assert case is not None
    return offer, case


@router.get("/{token}", response_class=HTMLResponse)
def show(request: Request, token: str, session: SessionDep, msg: str = "") -> HTMLResponse:
    offer, case = _offer(session, token)
    elder = session.get(Elder, case.elder_id) if case.elder_id else None
    item = get_catalog().item(case.item_code) if case.item_code else None
    accepted = offer.status is OfferStatus.ACCEPTED
    zh, en = STATUS_TEXT[offer.status]
    return templates.TemplateResponse(
        request,
        "offer.html",
        {
            "case_code": case.code,
            "item_zh": item.name_zh if item else "",
            "item_en": item.name_en if item else "",
            "status_zh": zh,
            "status_en": en,
            # Minimum personal data: the address only to the volunteer who took the task.
            "show_address": accepted,
            "elder_name": elder.name if elder and accepted else "",
            "elder_phone": elder.phone if elder and accepted else "",
            "address": f"{elder.street}{elder.community}{elder.address}"
            if elder and accepted
            else "",
            "access_notes": elder.access_notes if elder and accepted else "",
            "community": elder.community if elder else "",
            "summary": case.summary if accepted else "",
            "can_answer": offer.status is OfferStatus.PENDING,
            "can_work": accepted,
            "base": f"/v/offer/{token}",
            "message": MESSAGES.get(msg, ""),
        },
    )


def _back(token: str, msg: str) -> RedirectResponse:
    return RedirectResponse(f"/v/offer/{token}?msg={msg}", status_code=303)


@router.post("/{token}/accept")
def accept(token: str, session: SessionDep) -> RedirectResponse:
    offer, _ = _offer(session, token)
    outcome = accept_offer(session, offer.id)
    return _back(token, "accepted" if outcome == "accepted" else "taken")


@router.post("/{token}/decline")
def decline(token: str, session: SessionDep) -> RedirectResponse:
    offer, _ = _offer(session, token)
    decline_offer(session, offer.id)
    return _back(token, "declined")


@router.post("/{token}/arrived")
def arrived(token: str, session: SessionDep) -> RedirectResponse:
    offer, _ = _offer(session, token)
    try:
        mark_arrived(session, offer.id)
    except TaskError as exc:
        raise HTTPException(409, str(exc)) from None
    return _back(token, "arrived")


@router.post("/{token}/feedback")
def feedback(
    token: str,
    session: SessionDep,
    what_was_done: Annotated[InputText, Form(max_length=1000)],
    minutes: Annotated[int, Form(ge=1, le=720)],
    worrying: Annotated[InputText, Form(max_length=1000)] = "",
) -> RedirectResponse:
    offer, _ = _offer(session, token)
    try:
        submit_feedback(
            session, offer.id, what_was_done=what_was_done, minutes=minutes, worrying=worrying
        )
    except TaskError as exc:
        raise HTTPException(409, str(exc)) from None
    return _back(token, "feedback")


@router.post("/{token}/drop")
def drop(token: str, session: SessionDep) -> RedirectResponse:
    offer, _ = _offer(session, token)
    drop_out(session, offer.id)
    return _back(token, "dropped")
