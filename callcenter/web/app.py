"""The FastAPI application: REST API (and, as the console grows, its pages)."""

from __future__ import annotations

import time

import structlog
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import exc as sa_exc

from callcenter import db
from callcenter.web import (
    alarm_routes,
    case_routes,
    console_api,
    health_routes,
    openapi_doc,
    pages,
    session_routes,
    supervisor_routes,
    voice_routes,
)
from callcenter.web.i18n import pick_lang, strings
from callcenter.web.live_events import database_unreachable
from volunteers import sms_webhook, twilio_webhooks, visit_pages, volunteer_pages

log = structlog.get_logger(__name__)

# What a request answers while the database cannot be reached: 503, the reason in words, and
# how soon to try again (RFC 9110 §15.6.4 and §10.2.3), instead of a 500 and a traceback.
DATABASE_DOWN_DETAIL = "数据库不可用 / database unavailable"
RETRY_AFTER_S = 5
# The console pages answer a page that says so and reloads itself (a JSON body in the browser
# of an operator who pressed F5 would tell nothing, and stay there when the database is back).
DATABASE_DOWN_PAGES = ("/console", "/supervisor")
# One log line per interval at most: every open console retries every few seconds meanwhile.
LOG_EVERY_S = 10.0
_log_state = {"at": -LOG_EVERY_S, "suppressed": 0}


async def database_down(request: Request, exc: Exception) -> Response:
    if not database_unreachable(exc):
        raise exc  # a failed query, not an outage: a 500 as before, with its traceback
    now = time.monotonic()
    if now - _log_state["at"] >= LOG_EVERY_S:
        log.error("web.database_unavailable", path=request.url.path,
                  error=f"{type(exc).__name__}: {exc}"[:300],
                  suppressed=_log_state["suppressed"])  # fmt: skip
        _log_state.update(at=now, suppressed=0)
    else:
        _log_state["suppressed"] += 1
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    if request.method == "GET" and request.url.path in DATABASE_DOWN_PAGES:
        lang = pick_lang(request)
        return pages.templates.TemplateResponse(
            request,
            "database_down.html",
            {"lang": lang, "t": strings(lang), "database_down": True, "retry_s": RETRY_AFTER_S},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers=headers,
        )
    return JSONResponse(
        {"detail": DATABASE_DOWN_DETAIL, "database": "down"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers=headers,
    )


def create_app() -> FastAPI:
    db.load_models()
    app = FastAPI(
        title="呼援通 HuYuanTong",
        description="Elderly emergency-call and volunteer-dispatch centre",
        version="0.1.0",
    )
    app.include_router(session_routes.router)
    app.include_router(alarm_routes.router)
    app.include_router(case_routes.router)
    app.include_router(console_api.router)
    app.include_router(supervisor_routes.router)
    app.include_router(voice_routes.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    app.include_router(volunteer_pages.router)
    app.include_router(visit_pages.router)
    app.include_router(sms_webhook.router)
    app.include_router(twilio_webhooks.router)
    app.include_router(health_routes.router)
    app.add_exception_handler(sa_exc.DBAPIError, database_down)
    app.add_exception_handler(sa_exc.TimeoutError, database_down)
    openapi_doc.document_plain_error_details(app)

    return app
