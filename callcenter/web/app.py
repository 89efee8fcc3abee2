"""The FastAPI application: REST API (and, as the console grows, its pages)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

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
from volunteers import sms_webhook, twilio_webhooks, visit_pages, volunteer_pages


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
    openapi_doc.document_plain_error_details(app)

    return app
