"""Working days in mainland China: the official schedule where it is known, a safe guess beyond.

``chinese-calendar`` knows each year's public holidays and swapped working days (调休) from the
State Council's yearly notice, 2004–2026 in version 1.11. The notice for next year comes out in
November or December and the package follows later, so a planner running in late November for
January must not depend on it. Beyond its range we fall back to what is certain by law
(全国年节及纪念日放假办法, as revised by State Council Decree 795, in force from 2025): weekends,
the fixed-date holidays and the lunar festivals computed with ``lunardate``. Swapped working
days cannot be guessed; callers are told the official schedule was not known.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from typing import NamedTuple

import chinese_calendar
from lunardate import LunarDate  # type: ignore[import-untyped]

ONE_DAY = dt.timedelta(days=1)

# chinese-calendar's English holiday names → 中文 for the summaries shown to people.
ZH_NAMES: dict[str, str] = {
    "New Year's Day": "元旦",
    "Spring Festival": "春节",
    "Tomb-sweeping Day": "清明节",
    "Labour Day": "劳动节",
    "Dragon Boat Festival": "端午节",
    "National Day": "国庆节",
    "Mid-autumn Festival": "中秋节",
    "Anti-Fascist 70th Day": "抗战胜利70周年纪念日",
}


class WorkingDay(NamedTuple):
    working: bool
    # True when the State Council's schedule for the year was known (chinese-calendar had it);
    # False when the answer is the fallback and a swapped working day may be missed.
    official: bool


class DayInfo(NamedTuple):
    day: dt.date
    working: bool
    official: bool
    holiday: str | None  # English name of the public holiday on that day, None for a plain day


def official_schedule_known(year: int) -> bool:
    """Whether chinese-calendar has the State Council's schedule for ``year``."""
    try:
        chinese_calendar.is_workday(dt.date(year, 6, 1))
    except NotImplementedError:
        return False
    return True


@functools.lru_cache(maxsize=64)
def statutory_holidays(year: int) -> dict[dt.date, str]:
    """The public holidays that are certain without the yearly notice (Decree 795 rules)."""
    days: dict[dt.date, str] = {dt.date(year, 1, 1): "New Year's Day"}
    new_year = LunarDate(year, 1, 1).to_solar_date()
    # 除夕 (the eve, the last day of the 12th lunar month) and 初一 to 初三.
    for offset in range(-1, 3):
        days[new_year + dt.timedelta(days=offset)] = "Spring Festival"
    for day, name in chinese_calendar.get_solar_terms(dt.date(year, 4, 1), dt.date(year, 4, 30)):
        if name == "清明":  # the Qingming solar term is the holiday itself
            days[day] = "Tomb-sweeping Day"
    days[dt.date(year, 5, 1)] = "Labour Day"
    days[dt.date(year, 5, 2)] = "Labour Day"
    days[LunarDate(year, 5, 5).to_solar_date()] = "Dragon Boat Festival"
    days[LunarDate(year, 8, 15).to_solar_date()] = "Mid-autumn Festival"
    for day_of_month in (1, 2, 3):
        days[dt.date(year, 10, day_of_month)] = "National Day"
    return days


@functools.lru_cache(maxsize=8192)
def day_info(day: dt.date) -> DayInfo:
    """Whether ``day`` is a working day, which holiday it is, and whether that is official."""
    try:
        working = bool(chinese_calendar.is_workday(day))
        _, name = chinese_calendar.get_holiday_detail(day)
    except NotImplementedError:
        name = statutory_holidays(day.year).get(day)
        return DayInfo(day, name is None and day.weekday() < 5, False, name)
    # chinese-calendar names the holiday on swapped working days too; only days off count.
    return DayInfo(day, working, True, None if working else name)


def is_working_day(day: dt.date) -> WorkingDay:
    """Whether ``day`` is a working day, and whether the official schedule was known."""
    info = day_info(day)
    return WorkingDay(info.working, info.official)


def days_between(first: dt.date, last: dt.date) -> Iterator[dt.date]:
    day = first
    while day <= last:
        yield day
        day += ONE_DAY


def holidays_between(first: dt.date, last: dt.date) -> list[DayInfo]:
    """The public holidays (not plain weekends) from ``first`` to ``last`` inclusive."""
    infos = (day_info(day) for day in days_between(first, last))
    return [info for info in infos if info.holiday is not None]


def zh_name(holiday: str) -> str:
    return ZH_NAMES.get(holiday, holiday)
