"""Decode and encode Ademco Contact ID messages (SIA DC-05) as received over DTMF.

A message is 16 DTMF symbols ``ACCT MT Q EEE GG CCC S``: account (4), message type (2, ``18`` or
``98``), event qualifier (1), event code (3), group/partition (2), zone/user (3), checksum (1).

Checksum convention (decided here, see ``_SYMBOL_VALUE``):

* Each symbol has a value: ``1``-``9`` are themselves, ``0`` is 10, ``*`` 11, ``#`` 12, ``A`` 13,
  ``B`` 14, ``C`` 15. The sum of all 16 values must be a multiple of 15. This is the DTMF-key form
  used on the wire, by DOMAIN.md and by Asterisk's receiver (``apps/app_alarmreceiver.c``).
* DC-05's own tables write the values 11-15 as hex digits ``B``-``F`` (the code a DTMF decoder
  chip reports). ``B`` and ``C`` therefore mean 14/15 as DTMF keys but 11/12 in hex notation. We
  read ``A``/``B``/``C`` as DTMF keys, because that is what a DTMF receiver hands us, and accept
  only the unambiguous hex spellings ``D``/``E``/``F`` (13/14/15) as aliases. A misread symbol
  changes the sum by 1-14, never by a multiple of 15, so a hex-spelled ``B``/``C`` that we read
  the other way fails the checksum instead of being accepted with a wrong meaning.
* Anything we store or send uses the DTMF-key form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ContactIdErrorReason = Literal["length", "characters", "message_type", "checksum", "qualifier"]
ContactIdKind = Literal["life_safety", "technical", "test", "other"]

MESSAGE_LENGTH = 16
MESSAGE_TYPES = frozenset({"18", "98"})

QUALIFIER_NEW = 1  # new event / opening
QUALIFIER_RESTORE = 3  # restore / closing
QUALIFIER_STILL_PRESENT = 6  # previously reported condition still present
QUALIFIERS = frozenset({QUALIFIER_NEW, QUALIFIER_RESTORE, QUALIFIER_STILL_PRESENT})

# SIA DC-05: '0' counts as 10 in the checksum; '*', '#', 'A', 'B', 'C' carry 11-15.
_SYMBOL_VALUE: dict[str, int] = {
    **{str(d): d for d in range(1, 10)},
    "0": 10,
    "*": 11,
    "#": 12,
    "A": 13,
    "B": 14,
    "C": 15,
}
_VALUE_SYMBOL: dict[int, str] = {value: symbol for symbol, value in _SYMBOL_VALUE.items()}

# Accepted input spellings -> canonical DTMF symbol. Hex D/E/F are DC-05's notation for 13/14/15
# (see the module docstring for why hex B/C are not accepted as 11/12).
_CANONICAL: dict[str, str] = {
    **{symbol: symbol for symbol in _SYMBOL_VALUE},
    "a": "A",
    "b": "B",
    "c": "C",
    "D": "A",
    "E": "B",
    "F": "C",
    "d": "A",
    "e": "B",
    "f": "C",
}

_ALPHABET = frozenset(_CANONICAL)

# Explicit set: str.isdigit() would also accept non-ASCII digits such as '٣'.
_DECIMAL = frozenset("0123456789")

EVENT_NAMES: dict[str, str] = {
    "100": "medical",
    "101": "personal emergency",
    "102": "fail to report in",
    "110": "fire",
    "111": "smoke",
    "120": "panic",
    "121": "duress",
    "122": "silent panic",
    "123": "audible panic",
    "130": "burglary",
    "151": "gas detected",
    "154": "water leakage",
    "158": "high temperature",
    "162": "carbon monoxide detected",
    "300": "system trouble",
    "301": "AC loss",
    "302": "low system battery",
    "305": "system reset",
    "309": "battery test failure",
    "311": "battery missing/dead",
    "350": "communication trouble",
    "601": "manual trigger test report",
    "602": "periodic test report",
    "603": "periodic RF transmission",
    "606": "listen-in to follow",
    "607": "walk test mode",
    "608": "periodic test report, system trouble present",
}

# A terminal that sends one of these is alive; missing them is a fault (DOMAIN.md, heartbeat).
_HEARTBEAT_EVENTS = frozenset({"602", "603", "608"})
# Test reports that carry no fault. 608 reports "trouble present", so it is technical instead.
_TEST_EVENTS = frozenset({"601", "602", "603", "604", "607"})
_FAIL_TO_REPORT = "102"
_LISTEN_IN = "606"


class ContactIdError(ValueError):
    """A DTMF string that is not a valid Contact ID message; ``reason`` says which rule failed."""

    def __init__(self, reason: ContactIdErrorReason, detail: str) -> None:
        super().__init__(f"invalid Contact ID message ({reason}): {detail}")
        self.reason: ContactIdErrorReason = reason
        self.detail = detail


@dataclass(frozen=True)
class ContactIdMessage:
    """One decoded Contact ID message; symbol fields are in canonical DTMF form."""

    account: str
    message_type: str
    qualifier: int
    event_code: str
    group: str
    zone: str
    checksum: str
    raw: str

    @property
    def is_restore(self) -> bool:
        """True for a restore/closing (qualifier 3): for a pendant alarm, the elder's cancel."""
        return self.qualifier == QUALIFIER_RESTORE

    @property
    def is_heartbeat(self) -> bool:
        """True when the event is a periodic report proving the terminal is alive."""
        return self.event_code in _HEARTBEAT_EVENTS

    @property
    def listen_in_follows(self) -> bool:
        """True for event 606: the panel keeps the line open for a voice (listen-in) session."""
        return self.event_code == _LISTEN_IN

    @property
    def event_name(self) -> str:
        """English name of the event code, or ``"unknown"``."""
        return EVENT_NAMES.get(self.event_code, "unknown")

    @property
    def kind(self) -> ContactIdKind:
        """Triage class of the event code (qualifier aside: see ``is_restore``)."""
        return event_kind(self.event_code)


def event_kind(event_code: str) -> ContactIdKind:
    """Classify a 3-digit event code for triage.

    SIA DC-05 groups codes by their first digit: 1xx alarms, 2xx supervisory, 3xx troubles,
    6xx tests and miscellaneous. Every 1xx alarm (medical, fire, panic, burglary, gas, CO ...) is
    life-safety for an elder alone at home, except 102 "fail to report in", which is the
    terminal going silent: a fault, handled as technical (DOMAIN.md, heartbeat).
    """
    if len(event_code) != 3 or not set(event_code) <= _DECIMAL:
        return "other"
    if event_code == _FAIL_TO_REPORT:
        return "technical"
    if event_code in _TEST_EVENTS:
        return "test"
    number = int(event_code)
    if 100 <= number <= 199:
        return "life_safety"
    if 200 <= number <= 399 or event_code == "608":
        return "technical"
    return "other"


def _values(symbols: str) -> list[int] | None:
    """Checksum values of ``symbols``, or None if any symbol is outside the alphabet."""
    values: list[int] = []
    for ch in symbols:
        canonical = _CANONICAL.get(ch)
        if canonical is None:
            return None
        values.append(_SYMBOL_VALUE[canonical])
    return values


def _canonical(symbols: str) -> str:
    """Rewrite accepted spellings into DTMF form; the caller has checked the alphabet."""
    return "".join(_CANONICAL[ch] for ch in symbols)


def _check_alphabet(symbols: str) -> None:
    for index, ch in enumerate(symbols):
        if ch not in _CANONICAL:
            raise ContactIdError(
                "characters", f"{ch!r} at position {index + 1} is not a Contact ID DTMF symbol"
            )


def checksum_ok(digits: str) -> bool:
    """True if ``digits`` (surrounding whitespace ignored) is 16 symbols summing to 0 mod 15."""
    symbols = digits.strip()
    if len(symbols) != MESSAGE_LENGTH:
        return False
    values = _values(symbols)
    # SIA DC-05: the weighted sum of all 16 symbols, checksum included, is a multiple of 15.
    return values is not None and sum(values) % 15 == 0


def compute_checksum(first15: str) -> str:
    """The checksum symbol (DTMF form) that completes the 15 symbols ``first15``."""
    if len(first15) != MESSAGE_LENGTH - 1:
        raise ContactIdError(
            "length", f"expected 15 symbols before the checksum, got {len(first15)}"
        )
    _check_alphabet(first15)
    remainder = -sum(_SYMBOL_VALUE[ch] for ch in _canonical(first15)) % 15
    # SIA DC-05: no symbol has value 0, so a sum that is already a multiple of 15 needs 15 ('C').
    return _VALUE_SYMBOL[remainder or 15]


def parse(digits: str) -> ContactIdMessage:
    """Decode a 16-symbol Contact ID message or raise ``ContactIdError``.

    The checksum is verified before the field rules: a message that fails it is line noise, and
    its message type or qualifier would be meaningless to report.
    """
    raw = digits.strip()
    if len(raw) != MESSAGE_LENGTH:
        raise ContactIdError("length", f"expected {MESSAGE_LENGTH} symbols, got {len(raw)}")
    _check_alphabet(raw)
    if not checksum_ok(raw):
        raise ContactIdError("checksum", f"symbol values of {raw!r} do not sum to a multiple of 15")
    symbols = _canonical(raw)
    account, message_type = symbols[0:4], symbols[4:6]
    qualifier, event_code = symbols[6], symbols[7:10]
    group, zone, checksum = symbols[10:12], symbols[12:15], symbols[15]
    if message_type not in MESSAGE_TYPES:
        raise ContactIdError("message_type", f"message type {message_type!r} is not 18 or 98")
    if qualifier not in {str(q) for q in QUALIFIERS}:
        raise ContactIdError("qualifier", f"qualifier {qualifier!r} is not 1, 3 or 6")
    for name, value in (("event code", event_code), ("group", group), ("zone", zone)):
        if not set(value) <= _DECIMAL:
            raise ContactIdError("characters", f"{name} {value!r} must be decimal digits")
    return ContactIdMessage(
        account=account,
        message_type=message_type,
        qualifier=int(qualifier),
        event_code=event_code,
        group=group,
        zone=zone,
        checksum=checksum,
        raw=raw,
    )


def _check_field(name: str, value: str, width: int, *, decimal: bool) -> None:
    if len(value) != width:
        raise ContactIdError("length", f"{name} {value!r} must be {width} symbols")
    allowed = _DECIMAL if decimal else _ALPHABET
    if not set(value) <= allowed:
        raise ContactIdError("characters", f"{name} {value!r} has symbols outside its alphabet")


def encode(
    account: str,
    event_code: str,
    qualifier: int = QUALIFIER_NEW,
    group: str = "00",
    zone: str = "000",
    message_type: str = "18",
) -> str:
    """Build a valid 16-symbol message in DTMF form (for the terminal simulator and tests)."""
    _check_field("account", account, 4, decimal=False)
    _check_field("event code", event_code, 3, decimal=True)
    _check_field("group", group, 2, decimal=True)
    _check_field("zone", zone, 3, decimal=True)
    if message_type not in MESSAGE_TYPES:
        raise ContactIdError("message_type", f"message type {message_type!r} is not 18 or 98")
    if qualifier not in QUALIFIERS:
        raise ContactIdError("qualifier", f"qualifier {qualifier!r} is not 1, 3 or 6")
    first15 = f"{_canonical(account)}{message_type}{qualifier}{event_code}{group}{zone}"
    return first15 + compute_checksum(first15)
