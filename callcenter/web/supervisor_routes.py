"""The supervisor's view (班长看板): a page and its JSON API, for supervisors and admins only
(an operator gets 403, nobody logged in 401 or the login page)."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from callcenter.db import utcnow
from callcenter.models import CaseState, Operator, Role
from callcenter.settings import get_settings
from callcenter.supervision import SupervisorReport, supervisor_report
from callcenter.supervision_settings import get_supervision_settings
from callcenter.web.auth import RANK, SESSION_COOKIE, SESSION_MAX_AGE_S, require, user_from_token
from callcenter.web.deps import ReadSessionDep
from callcenter.web.i18n import LANG_COOKIE, pick_lang, strings
from callcenter.web.pages import templates
from schedules.settings import get_schedule_settings

log = structlog.get_logger(__name__)
router = APIRouter(tags=["supervisor"])
SupervisorDep = Annotated[Operator, require(Role.SUPERVISOR)]


# The report's own dataclasses are the response model: pydantic serialises and documents them.
@router.get("/api/supervisor", response_model=SupervisorReport)
def supervisor_view(session: ReadSessionDep, _user: SupervisorDep) -> SupervisorReport:
    """Today (the centre's local day) at a glance: alarms and cases by kind and state, answer-time
    compliance, open cases past their target, silent terminals, escalated visits, volunteers on
    duty now, and life-safety alarms nobody has claimed past the flag threshold."""
    settings = get_supervision_settings()
    return supervisor_report(
        session,
        now=utcnow(),
        tz=get_settings().tz,
        within=(settings.answer_within_s, settings.answer_within_long_s),
        flag_after_s=settings.life_safety_flag_s,
        watchdog_grace_s=get_schedule_settings().watchdog_grace_s,
    )


@router.get("/supervisor", response_class=HTMLResponse, include_in_schema=False)
def supervisor_page(request: Request, session: ReadSessionDep) -> Response:
    token = request.cookies.get(SESSION_COOKIE) or ""
    user = user_from_token(session, token) if token else None
    if user is None:
        return RedirectResponse("/login?next=/supervisor", status_code=303)
    lang = pick_lang(request)
    allowed = RANK[user.role] >= RANK[Role.SUPERVISOR]
    if not allowed:
        log.warning("supervisor.forbidden", user_id=user.id, role=user.role.value)
    settings = get_supervision_settings()
    response = templates.TemplateResponse(
        request,
        "supervisor.html",
        {
            "lang": lang,
            "t": strings(lang),
            "user": user,
            "forbidden": not allowed,
            "within": (settings.answer_within_s, settings.answer_within_long_s),
            "flag_s": settings.life_safety_flag_s,
            "case_states": [s.value for s in CaseState],
        },
        status_code=status.HTTP_200_OK if allowed else status.HTTP_403_FORBIDDEN,
    )
    if request.query_params.get("lang") == lang:
        response.set_cookie(LANG_COOKIE, lang, max_age=SESSION_MAX_AGE_S * 60, samesite="lax")
    return response
