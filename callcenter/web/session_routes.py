"""Logging in and out of the console."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status

from callcenter.models import Operator
from callcenter.settings import get_settings
from callcenter.web.auth import (
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    authenticate,
    current_user,
    session_token,
)
from callcenter.web.deps import SessionDep
from callcenter.web.schemas import LoginIn, UserOut

router = APIRouter(prefix="/api/session", tags=["session"])


def _out(user: Operator) -> UserOut:
    return UserOut(id=user.id, username=user.username, display_name=user.display_name,
                   role=user.role.value)  # fmt: skip


@router.post("", response_model=UserOut)
def login(body: LoginIn, response: Response, session: SessionDep) -> UserOut:
    """Log in; the session cookie is HttpOnly, SameSite=Strict, and expires after a shift."""
    user = authenticate(session, body.username, body.password)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "wrong username or password / 用户名或密码错误"
        )
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
