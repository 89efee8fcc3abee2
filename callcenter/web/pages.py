"""Server-rendered console pages (Jinja2, autoescaped); the data comes from the JSON API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from callcenter.models import Operator, Role
from callcenter.supervision_settings import get_supervision_settings
from callcenter.web.auth import RANK, SESSION_COOKIE, SESSION_MAX_AGE_S, user_from_token
from callcenter.web.deps import SessionDep
from callcenter.web.i18n import LANG_COOKIE, pick_lang, strings

WEB_DIR = Path(__file__).parent
STATIC_DIR = WEB_DIR / "static"
# Jinja2Templates autoescapes .html templates: data is never rendered as markup.
templates = Jinja2Templates(directory=WEB_DIR / "templates")
router = APIRouter(include_in_schema=False)


def _operator(request: Request, session: SessionDep) -> Operator | None:
    token = request.cookies.get(SESSION_COOKIE) or ""
    user = user_from_token(session, token) if token else None
    if user is None or RANK[user.role] < RANK[Role.OPERATOR]:
        return None
    return user


def _render(request: Request, name: str, **context: object) -> Response:
    lang = pick_lang(request)
    response = templates.TemplateResponse(
        request, name, {"lang": lang, "t": strings(lang), **context}
    )
    if request.query_params.get("lang") == lang:
        response.set_cookie(LANG_COOKIE, lang, max_age=SESSION_MAX_AGE_S * 60, samesite="lax")
    return response


@router.get("/", response_class=RedirectResponse)
def home() -> RedirectResponse:
    return RedirectResponse("/console", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    return _render(request, "login.html")


@router.get("/console", response_class=HTMLResponse)
def console_page(request: Request, session: SessionDep) -> Response:
    user = _operator(request, session)
    if user is None:
        return RedirectResponse("/login?next=/console", status_code=303)
    flag_s = get_supervision_settings().life_safety_flag_s
    return _render(request, "console.html", user=user, flag_s=flag_s)
