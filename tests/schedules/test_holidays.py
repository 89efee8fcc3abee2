"""Working days: the official schedule where chinese-calendar has it, the fallback beyond."""

import datetime as dt

import chinese_calendar
import pytest

from schedules.holidays import (
    WorkingDay,
    day_info,
    holidays_between,
    is_working_day,
    official_schedule_known,
    statutory_holidays,
)


def test_official_schedule_inside_the_package_range() -> None:
    assert is_working_day(dt.date(2026, 10, 1)) == WorkingDay(working=False, official=True)
    # 2026-10-10 is a Saturday made a working day (调休) by the State Council's notice.
    assert is_working_day(dt.date(2026, 10, 10)) == WorkingDay(working=True, official=True)
    assert is_working_day(dt.date(2026, 12, 5)) == WorkingDay(working=False, official=True)
    assert day_info(dt.date(2026, 10, 10)).holiday is None  # a swapped working day is no holiday
    assert day_info(dt.date(2026, 12, 5)).holiday is None  # a plain weekend is no holiday either


def test_2027_new_year_falls_back_without_crashing() -> None:
    with pytest.raises(NotImplementedError):  # the reason for the fallback, as documented
        chinese_calendar.is_holiday(dt.date(2027, 1, 1))
    assert is_working_day(dt.date(2027, 1, 1)) == WorkingDay(working=False, official=False)
    assert day_info(dt.date(2027, 1, 1)).holiday == "New Year's Day"
    assert is_working_day(dt.date(2027, 1, 4)) == WorkingDay(working=True, official=False)
    assert is_working_day(dt.date(2027, 1, 2)).working is False  # a Saturday
    assert not official_schedule_known(2027)
    assert official_schedule_known(2026)


@pytest.mark.parametrize(
    ("day", "name"),
    [
        (dt.date(2027, 2, 5), "Spring Festival"),  # 除夕, the eve
        (dt.date(2027, 2, 6), "Spring Festival"),  # 正月初一
        (dt.date(2027, 2, 8), "Spring Festival"),  # 初三
        (dt.date(2027, 4, 5), "Tomb-sweeping Day"),  # the Qingming solar term
        (dt.date(2027, 5, 2), "Labour Day"),
        (dt.date(2027, 6, 9), "Dragon Boat Festival"),  # 五月初五
        (dt.date(2027, 9, 15), "Mid-autumn Festival"),  # 八月十五
        (dt.date(2027, 10, 3), "National Day"),
    ],
)
def test_2027_lunar_and_fixed_holidays(day: dt.date, name: str) -> None:
    info = day_info(day)
    assert (info.working, info.official, info.holiday) == (False, False, name)


def test_fallback_beyond_statutory_days_is_a_working_day() -> None:
    # 2027-02-09 (初四) and 2027-10-04 are weekdays: only the yearly notice could add them.
    assert is_working_day(dt.date(2027, 2, 9)) == WorkingDay(working=True, official=False)
    assert is_working_day(dt.date(2027, 10, 4)) == WorkingDay(working=True, official=False)
    names = {info.holiday for info in holidays_between(dt.date(2027, 1, 1), dt.date(2027, 12, 31))}
    assert len(names) == 7


@pytest.mark.parametrize("year", [2025, 2026])
def test_fallback_rules_agree_with_the_official_years(year: int) -> None:
    """Every day the fallback calls a holiday was a day off in the official schedule."""
    for day, name in statutory_holidays(year).items():
        assert not chinese_calendar.is_workday(day), (day, name)
        assert chinese_calendar.get_holiday_detail(day)[1] == name, day
