"""Logging in and out of the console."""

from __future__ import annotations

import threading
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from callcenter import metrics
from callcenter.models import Operator
from callcenter.ops_settings import get_ops_settings
from callcenter.settings import get_settings
from callcenter.web.auth import (
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    authenticate,
    current_user,
    session_token,
)
from callcenter.web.deps import SessionDep
from callcenter.web.rate_limit import LoginRateLimiter
from callcenter.web.schemas import LoginIn, UserOut

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api/session", tags=["session"])
_limiter_lock = threading.Lock()


def login_limiter(request: Request) -> LoginRateLimiter:
    """The app's limiter (one per app, so each test's app starts with clean counts)."""
    with _limiter_lock:
        limiter: LoginRateLimiter | None = getattr(request.app.state, "login_limiter", None)
        if limiter is None:
            ops = get_ops_settings()
            limiter = LoginRateLimiter(
                max_failures=ops.login_max_failures,
                max_failures_per_address=ops.login_max_failures_per_address,
                window_s=ops.login_window_s,
            )
            request.app.state.login_limiter = limiter
        return limiter


def _out(user: Operator) -> UserOut:
    return UserOut(id=user.id, username=user.username, display_name=user.display_name,
                   role=user.role.value)  # fmt: skip


@router.post(
    "",
    response_model=UserOut,
    responses={429: {"description": "too many failed logins; see Retry-After"}},
)
def login(body: LoginIn, request: Request, response: Response, session: SessionDep) -> UserOut:
    """Log in; the session cookie is HttpOnly, SameSite=Strict, and expires after a shift.

    Failed attempts are limited per username and client address (429 with ``Retry-After``)."""
    limiter = login_limiter(request)
    address = request.client.host if request.client else "unknown"
    wait_s = limiter.retry_after(body.username, address)
    if wait_s is not None:
        metrics.LOGINS.labels(outcome="rate_limited").inc()
        log.warning(
            "auth.login_rate_limited",
            username=body.username[:64],
            address=address,
            retry_after_s=wait_s,
        )
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"登录失败次数过多，请 {wait_s} 秒后再试 / too many failed logins, "
            f"try again in {wait_s} s",
            headers={"Retry-After": str(wait_s)},
        )
    user = authenticate(session, body.username, body.password)
    if user is None:
        limiter.failed(body.username, address)
        metrics.LOGINS.labels(outcome="failed").inc()
        log.info("auth.login_failed", username=body.username[:64], address=address)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "wrong username or password / 用户名或密码错误"
        )
    limiter.succeeded(body.username, address)
    metrics.LOGINS.labels(outcome="ok").inc()
    log.info("auth.login", operator_id=user.id)
    response.set_cookie(
        SESSION_COOKIE,
        session_token(user),
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=get_settings().public_base_url.startswith("https://"),
    )
    return _out(user)


@router.get("", response_model=UserOut)
def whoami(user: Annotated[Operator, Depends(current_user)]) -> UserOut:
    return _out(user)


@router.delete("", status_code=204)
def logout(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE)
