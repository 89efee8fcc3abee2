"""Phone numbers, normalised to E.164 (+86…) so that an SMS reply finds its volunteer."""

from __future__ import annotations

import phonenumbers


class PhoneError(ValueError):
    pass


def normalise_phone(raw: str, region: str = "CN") -> str:
    """Return ``raw`` as E.164, or raise :class:`PhoneError` saying why it is not a number."""
    text = raw.strip()
    if not text:
        raise PhoneError("phone number is empty")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise PhoneError(f"{text!r} is not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise PhoneError(f"{text!r} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(e164: str) -> str:
    """For logs: keep the last four digits only (minimum personal data)."""
    return "*" * max(len(e164) - 4, 0) + e164[-4:]
