"""Signed, expiring, single-purpose links for volunteers' phones.

A link names one purpose (an offer, a visit) and one object, and it expires. It is signed with
HYT_SECRET_KEY, so it cannot be altered to point at another case; it carries no personal data.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from callcenter.settings import get_settings

PURPOSES = ("offer", "visit")
DEFAULT_MAX_AGE_S = 3 * 24 * 3600


class LinkError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "expired", "invalid", "wrong_purpose"


@dataclass(frozen=True, slots=True)
class LinkClaim:
    purpose: str
    object_id: int
    case_id: int | None


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    # A salt per purpose: an offer link can never be replayed as a visit link.
    return URLSafeTimedSerializer(get_settings().secret_key, salt=f"hyt.link.{purpose}")


def make_token(purpose: str, object_id: int, case_id: int | None = None) -> str:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown link purpose {purpose!r}")
    return _serializer(purpose).dumps([object_id, case_id])


def link_url(purpose: str, object_id: int, case_id: int | None = None) -> str:
    base = get_settings().public_base_url.rstrip("/")
    return f"{base}/v/{purpose}/{make_token(purpose, object_id, case_id)}"


def read_token(purpose: str, token: str, *, max_age_s: int = DEFAULT_MAX_AGE_S) -> LinkClaim:
    try:
        object_id, case_id = _serializer(purpose).loads(token, max_age=max_age_s)
    except SignatureExpired:
        raise LinkError("expired") from None
    except (BadSignature, ValueError, TypeError):
        raise LinkError("invalid") from None
    return LinkClaim(purpose, int(object_id), int(case_id) if case_id is not None else None)
