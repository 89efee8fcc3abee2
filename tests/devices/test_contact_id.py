"""Tests for the SIA DC-05 Contact ID decoder/encoder.

Checksum values used in the hand computations below (SIA DC-05, DTMF form):
1-9 are themselves, 0 = 10, * = 11, # = 12, A = 13, B = 14, C = 15; the 16 values must sum to a
multiple of 15. Each example is split as ACCT MT Q EEE GG CCC | S.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.contact_id import (
    ContactIdError,
    ContactIdMessage,
    checksum_ok,
    compute_checksum,
    encode,
    event_kind,
    parse,
)

# 1234 18 1 101 01 015: (1+2+3+4) + (1+8) + 1 + (1+10+1) + (10+1) + (10+1+5)
#                     = 10 + 9 + 1 + 12 + 11 + 16 = 59 -> 60 needs 1
PENDANT_ALARM = "1234181101010151"
# Same with qualifier 3: 59 - 1 + 3 = 61 -> 75 needs 14 = 'B'
PENDANT_RESTORE = "123418310101015B"
# 1234 18 1 120 01 001: 10 + 9 + 1 + (1+2+10) + 11 + (10+10+1) = 65 -> 75 needs 10 = '0'
PANIC = "1234181120010010"
# 1234 18 1 101 01 001: 10 + 9 + 1 + 12 + 11 + 21 = 64 -> 75 needs 11 = '*'
CHECKSUM_STAR = "123418110101001*"
# 1239 18 1 602 00 000: 15 + 9 + 1 + (6+10+2) + 20 + 30 = 93 -> 105 needs 12 = '#'
TEST_REPORT_HASH = "123918160200000#"
# 1234 18 1 130 01 016: 10 + 9 + 1 + (1+3+10) + 11 + (10+1+6) = 62 -> 75 needs 13 = 'A'
BURGLARY_A = "123418113001016A"
# 1236 18 1 602 00 000: 12 + 9 + 1 + 18 + 20 + 30 = 90, already a multiple: needs 15 = 'C'
TEST_REPORT_C = "123618160200000C"
# 1234 98 1 101 01 015: 10 + (9+8) + 1 + 12 + 11 + 16 = 67 -> 75 needs 8
TYPE_98 = "1234981101010158"
# 1234 18 6 101 01 015: 59 - 1 + 6 = 64 -> 75 needs 11 = '*'
STILL_PRESENT = "123418610101015*"

VALID = [
    PENDANT_ALARM,
    PENDANT_RESTORE,
    PANIC,
    CHECKSUM_STAR,
    TEST_REPORT_HASH,
    BURGLARY_A,
    TEST_REPORT_C,
    TYPE_98,
    STILL_PRESENT,
]


@pytest.mark.parametrize("digits", VALID)
def test_hand_computed_examples_are_valid(digits: str) -> None:
    assert checksum_ok(digits)
    assert compute_checksum(digits[:15]) == digits[15]
    assert parse(digits).raw == digits


def test_parse_splits_fields() -> None:
    message = parse(PENDANT_ALARM)
    assert message == ContactIdMessage(
        account="1234",
        message_type="18",
        qualifier=1,
        event_code="101",
        group="01",
        zone="015",
        checksum="1",
        raw=PENDANT_ALARM,
    )
    assert message.event_name == "personal emergency"
    assert message.kind == "life_safety"
    assert not message.is_restore


def test_parse_strips_surrounding_whitespace() -> None:
    assert parse(f"  {PENDANT_ALARM}\r\n").raw == PENDANT_ALARM


def test_restore_qualifier() -> None:
    message = parse(PENDANT_RESTORE)
    assert message.qualifier == 3
    assert message.is_restore
    assert message.kind == "life_safety"  # the restore of an alarm: the elder's cancel


def test_still_present_and_type_98() -> None:
    assert parse(STILL_PRESENT).qualifier == 6
    assert not parse(STILL_PRESENT).is_restore
    assert parse(TYPE_98).message_type == "98"


def test_hex_aliases_are_normalised_to_dtmf_form() -> None:
    # DC-05 tables write checksum 15 as hex 'F'; we store the DTMF key 'C'.
    message = parse("123618160200000F")
    assert message.checksum == "C"
    assert message.raw == "123618160200000F"
    assert parse("123418310101015b").checksum == "B"


def test_hex_spelled_star_fails_checksum_instead_of_being_misread() -> None:
    # CHECKSUM_STAR with its '*' (11) written in hex as 'B': read as DTMF 'B' (14), off by 3.
    with pytest.raises(ContactIdError) as info:
        parse("123418110101001B")
    assert info.value.reason == "checksum"


def test_account_may_hold_dtmf_symbols() -> None:
    digits = encode("B2*4", "101")
    assert parse(digits).account == "B2*4"
    # hex 'E' is the same value (14) as DTMF 'B'
    assert parse(encode("E2*4", "101")).account == "B2*4"


@pytest.mark.parametrize(
    ("digits", "reason"),
    [
        ("", "length"),
        (PENDANT_ALARM[:15], "length"),
        (PENDANT_ALARM + "1", "length"),
        ("1234 18 1 101 01 015 1", "length"),
        ("123418110101015X", "characters"),
        ("1234-81101010151", "characters"),
        ("123418110101015\u0661", "characters"),  # ARABIC-INDIC DIGIT ONE is not DTMF
        ("1234181101010152", "checksum"),
        ("1243181101010152", "checksum"),
        # 1234 17 1 101 01 015: 10 + 8 + 1 + 12 + 11 + 16 = 58 -> 60 needs 2
        ("1234171101010152", "message_type"),
        # 1234 18 2 101 01 015: 10 + 9 + 2 + 12 + 11 + 16 = 60 -> needs 15 = 'C'
        ("123418210101015C", "qualifier"),
        # 1234 18 1 1*1 01 015: 10 + 9 + 1 + (1+11+1) + 11 + 16 = 60 -> needs 'C'
        ("12341811*101015C", "characters"),
    ],
)
def test_parse_rejects_with_reason(digits: str, reason: str) -> None:
    with pytest.raises(ContactIdError) as info:
        parse(digits)
    assert info.value.reason == reason
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError)


def test_checksum_ok_never_raises() -> None:
    assert not checksum_ok("")
    assert not checksum_ok("123418110101015X")
    assert not checksum_ok("1234181101010152")
    assert checksum_ok(f" {PENDANT_ALARM} ")


@pytest.mark.parametrize(
    ("first15", "reason"), [("1234", "length"), ("1234181101010X5", "characters")]
)
def test_compute_checksum_rejects(first15: str, reason: str) -> None:
    with pytest.raises(ContactIdError) as info:
        compute_checksum(first15)
    assert info.value.reason == reason


def test_encode_matches_hand_computed_examples() -> None:
    assert encode("1234", "101", group="01", zone="015") == PENDANT_ALARM
    assert encode("1234", "101", qualifier=3, group="01", zone="015") == PENDANT_RESTORE
    assert encode("1236", "602") == TEST_REPORT_C
    assert encode("1234", "101", group="01", zone="015", message_type="98") == TYPE_98


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: encode("123", "101"), "length"),
        (lambda: encode("12X4", "101"), "characters"),
        (lambda: encode("1234", "1*1"), "characters"),
        (lambda: encode("1234", "1010"), "length"),
        (lambda: encode("1234", "101", group="1"), "length"),
        (lambda: encode("1234", "101", zone="00A"), "characters"),
        (lambda: encode("1234", "101", qualifier=2), "qualifier"),
        (lambda: encode("1234", "101", message_type="17"), "message_type"),
    ],
)
def test_encode_rejects(build: Callable[[], str], reason: str) -> None:
    with pytest.raises(ContactIdError) as info:
        build()
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("code", "kind", "name"),
    [
        ("100", "life_safety", "medical"),
        ("101", "life_safety", "personal emergency"),
        ("120", "life_safety", "panic"),
        ("111", "life_safety", "smoke"),
        ("162", "life_safety", "carbon monoxide detected"),
        ("102", "technical", "fail to report in"),
        ("301", "technical", "AC loss"),
        ("302", "technical", "low system battery"),
        ("602", "test", "periodic test report"),
        ("603", "test", "periodic RF transmission"),
        ("608", "technical", "periodic test report, system trouble present"),
        ("606", "other", "listen-in to follow"),
        ("401", "other", "unknown"),
        ("999", "other", "unknown"),
    ],
)
def test_kinds_and_names(code: str, kind: str, name: str) -> None:
    message = parse(encode("1234", code))
    assert message.kind == kind
    assert message.event_name == name


def test_heartbeat_and_listen_in_flags() -> None:
    assert parse(encode("1234", "602")).is_heartbeat
    assert parse(encode("1234", "608")).is_heartbeat
    assert not parse(encode("1234", "101")).is_heartbeat
    assert parse(encode("1234", "606")).listen_in_follows


def test_event_kind_of_malformed_code_is_other() -> None:
    assert event_kind("1x1") == "other"
    assert event_kind("10") == "other"


DTMF_SYMBOLS = "0123456789*#ABC"
ACCEPTED_SYMBOLS = DTMF_SYMBOLS + "DEFabcdef"


@given(
    account=st.text(alphabet=DTMF_SYMBOLS, min_size=4, max_size=4),
    event_code=st.text(alphabet="0123456789", min_size=3, max_size=3),
    qualifier=st.sampled_from([1, 3, 6]),
    group=st.text(alphabet="0123456789", min_size=2, max_size=2),
    zone=st.text(alphabet="0123456789", min_size=3, max_size=3),
    message_type=st.sampled_from(["18", "98"]),
)
def test_encode_parse_round_trip(
    account: str, event_code: str, qualifier: int, group: str, zone: str, message_type: str
) -> None:
    digits = encode(account, event_code, qualifier, group, zone, message_type)
    assert len(digits) == 16
    assert checksum_ok(digits)
    message = parse(digits)
    assert (message.account, message.event_code, message.qualifier) == (
        account,
        event_code,
        qualifier,
    )
    assert (message.group, message.zone, message.message_type) == (group, zone, message_type)
    assert message.is_restore == (qualifier == 3)


@given(
    account=st.text(alphabet=DTMF_SYMBOLS, min_size=4, max_size=4),
    event_code=st.text(alphabet="0123456789", min_size=3, max_size=3),
    position=st.integers(min_value=0, max_value=15),
    replacement=st.sampled_from(DTMF_SYMBOLS),
)
def test_any_single_symbol_error_is_detected(
    account: str, event_code: str, position: int, replacement: str
) -> None:
    digits = encode(account, event_code)
    corrupted = digits[:position] + replacement + digits[position + 1 :]
    # Symbol values are 1..15, so one substitution shifts the sum by 1..14: never a multiple of 15.
    assert checksum_ok(corrupted) == (corrupted == digits)


@given(st.text())
def test_fuzz_arbitrary_text_raises_only_contact_id_error(text: str) -> None:
    try:
        message = parse(text)
    except ContactIdError:
        return
    assert len(message.raw) == 16


@given(st.text(alphabet=ACCEPTED_SYMBOLS + " -", min_size=14, max_size=18))
def test_fuzz_near_miss_symbols_raise_only_contact_id_error(text: str) -> None:
    try:
        message = parse(text)
    except ContactIdError as error:
        assert error.reason in {"length", "characters", "message_type", "checksum", "qualifier"}
        return
    assert checksum_ok(message.raw)
