"""Pinyin search keys, phone numbers and availability windows as people write them."""

import pytest

from callcenter.phones import PhoneError, mask_phone, normalise_phone
from callcenter.pinyin import name_pinyin
from volunteers.availability import AvailabilityError, Window, parse_availability


@pytest.mark.parametrize(
    ("name", "full", "initials"),
    [
        ("王秀英", "wang xiu ying", "wxy"),
        ("曾亚妹", "zeng ya mei", "zym"),
        ("陈来顺", "chen lai shun", "cls"),
    ],
)
def test_pinyin_of_names(name: str, full: str, initials: str) -> None:
    assert name_pinyin(name) == (full, initials)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("13800138000", "+8613800138000"),
        ("+86 138 0013 8000", "+8613800138000"),
        ("0754-88881234", "+8675488881234"),
    ],
)
def test_phone_numbers_normalised(raw: str, e164: str) -> None:
    assert normalise_phone(raw) == e164


@pytest.mark.parametrize("raw", ["", "12345", "abc", "999"])
def test_bad_phone_numbers(raw: str) -> None:
    with pytest.raises(PhoneError):
        normalise_phone(raw)


def test_masked_phone_keeps_last_four() -> None:
    assert mask_phone("+8613800138000") == "**********8000"


def test_availability_in_chinese_and_english() -> None:
    chinese = parse_availability("周一至周五 8:00-18:00；周六 9:00-12:00")
    english = parse_availability("mon-fri 08:00-18:00; sat 09:00-12:00")
    assert chinese == english
    assert chinese[-1] == Window(5, 540, 720)
    assert len(parse_availability("每天 07:00-21:00")) == 7


@pytest.mark.parametrize(
    "text",
    ["someday 08:00-10:00", "mon 18:00-08:00", "mon 25:00-26:00", "fri-mon 08:00-10:00", "mon"],
)
def test_bad_availability(text: str) -> None:
    with pytest.raises(AvailabilityError):
        parse_availability(text)
