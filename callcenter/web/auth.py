"""Console accounts: argon2 password hashes, signed expiring session cookies, role checks."""

from __future__ import annotations

from typing import Annotated, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request, status
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from callcenter.db import utcnow
from callcenter.models import Operator, Role
from callcenter.settings import get_settings
from callcenter.web.deps import SessionDep

SESSION_COOKIE = "hyt_session"
SESSION_MAX_AGE_S = 12 * 3600  # one shift
# Supervisors and admins can do everything an operator can.
RANK = {Role.OPERATOR: 1, Role.SUPERVISOR: 2, Role.ADMIN: 3}

_hasher = PasswordHasher()


class UserError(ValueError):
    pass


def hash_password(password: str) -> str:
    if len(password) < 10:
        raise UserError("password must be at least 10 characters")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def add_user(
    session: Session, *, username: str, password: str, role: Role, display_name: str = ""
) -> Operator:
    if session.scalar(select(Operator.id).where(Operator.username == username)) is not None:
        raise UserError(f"user {username!r} exists")
    user = Operator(
        username=username,
        display_name=display_name or username,
        role=role,
        password_hash=hash_password(password),
    )
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, username: str, password: str) -> Operator | None:
    user = session.scalars(
        select(Operator).where(Operator.username == username, Operator.active.is_(True))
    ).first()
    if user is None:
        _hasher.hash(password)  # same work for an unknown name: no user enumeration by timing
        return None
    if not verify_password(user.password_hash, password):
        return None
    user.last_login_at = utcnow()
    return user


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(get_settings().secret_key, salt="hyt.console.session")


def session_token(user: Operator) -> str:
    return _serializer().dumps({"uid": user.id, "role": user.role.value})


def user_from_token(session: Session, token: str) -> Operator | None:
    try:
        data = _serializer().loads(token, max_age=SESSION_MAX_AGE_S)
    except (BadSignature, SignatureExpired):
        return None
    user = session.get(Operator, data.get("uid"))
    if user is None or not user.active:
        return None
    return user


def current_user(request: Request, session: SessionDep) -> Operator:
    token = request.cookies.get(SESSION_COOKIE) or ""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        token = auth[7:].strip()
    user = user_from_token(session, token) if token else None
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "login required / 请先登录")
    return user


def require(role: Role) -> Any:
    """A dependency that lets through ``role`` and the roles above it."""

    def check(user: Annotated[Operator, Depends(current_user)]) -> Operator:
        if RANK[user.role] < RANK[role]:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "not allowed for your role / 无权限")
        return user

    return Depends(check)
