"""SMS settings (``HYT_SMS_*``, ``HYT_TWILIO_*``), read beside the main :class:`Settings`.

They live here rather than in ``callcenter/settings.py`` so that the SMS part of the volunteers
package owns its own configuration; the prefix is the same ``HYT_`` and the checks run the same
way, at start-up.

Webhook signatures (``X-Twilio-Signature``) are checked with Twilio's auth token. With the console
backend there may be no Twilio account at all, yet the SMS-reply and status webhooks must still
refuse forged requests (the demo signs its fake replies). Then the token is
:func:`development_auth_token`: an HMAC of a fixed label under ``HYT_SECRET_KEY``. It is as secret
as the secret key itself, and it is never used when ``HYT_TWILIO_AUTH_TOKEN`` is set.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from callcenter.settings import get_settings

_DEV_TOKEN_LABEL = b"huyuantong/twilio-development-auth-token/v1"


class SmsSettings(BaseSettings):
    """Which SMS backend to use and the Twilio account it sends through."""

    model_config = SettingsConfigDict(env_prefix="HYT_", env_file=None, extra="ignore")

    sms_backend: Literal["console", "twilio"] = "console"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None
    # Give up on a message after this many definite failures (about 15 minutes of back-off with
    # the default base; an offer is worthless long before that).
    sms_max_attempts: int = Field(default=6, ge=1, le=20)
    sms_backoff_base_s: float = Field(default=30.0, gt=0)
    # The HTTP time-out for one call to Twilio; the sender's claim lease is sized from it.
    twilio_timeout_s: float = Field(default=10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _twilio_needs_its_account(self) -> SmsSettings:
        if self.sms_backend == "twilio":
            missing = [
                f"HYT_{name.upper()}"
                for name in ("twilio_account_sid", "twilio_auth_token", "twilio_from")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(
                    "HYT_SMS_BACKEND=twilio needs " + ", ".join(missing) + " (or use 'console')"
                )
        return self


def development_auth_token(secret_key: str) -> str:
    """The webhook-signing token used when no Twilio auth token is configured."""
    return hmac.new(secret_key.encode("utf-8"), _DEV_TOKEN_LABEL, hashlib.sha256).hexdigest()


def webhook_auth_token(sms: SmsSettings | None = None) -> str:
    """The token that signs Twilio webhooks: the real auth token, else the development one."""
    sms = sms or get_sms_settings()
    return sms.twilio_auth_token or development_auth_token(get_settings().secret_key)


@functools.lru_cache(maxsize=1)
def get_sms_settings() -> SmsSettings:
    """The process-wide SMS settings, read once."""
    return SmsSettings()
