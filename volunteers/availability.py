"""Weekly availability windows written the way people write them.

Accepted: ``mon-fri 08:00-18:00; sat 09:00-12:00`` or ``周一至周五 8:00-18:00；周六 9:00-12:00``,
``每天 07:00-21:00`` / ``daily 07:00-21:00``. Times are local (the centre's time zone).
"""

from __future__ import annotations

import re
from typing import NamedTuple

DAY_NAMES: dict[str, int] = {
    "mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6,
    "周一": 0, "周二": 1, "周三": 2, "周四": 3, "周五": 4, "周六": 5, "周日": 6, "周天": 6,
    "星期一": 0, "星期二": 1, "星期三": 2, "星期四": 3, "星期五": 4, "星期六": 5, "星期日": 6,
}  # fmt: skip
EVERY_DAY = {"daily", "everyday", "每天", "每日", "全周"}
_TIME = r"(\d{1,2}):(\d{2})"
_WINDOW = re.compile(rf"^(?P<days>.+?)\s*{_TIME}\s*[-~–至到]\s*{_TIME}$")


class AvailabilityError(ValueError):
    pass


class Window(NamedTuple):
    weekday: int
    start_minute: int
    end_minute: int


def _days(text: str) -> list[int]:
    text = text.strip().lower()
    if text in EVERY_DAY:
        return list(range(7))
    days: list[int] = []
    for part in re.split(r"[,，、/]", text):
        part = part.strip()
        span = re.split(r"\s*(?:-|~|–|至|到)\s*", part)
        if len(span) == 2 and span[0] in DAY_NAMES and span[1] in DAY_NAMES:
            first, last = DAY_NAMES[span[0]], DAY_NAMES[span[1]]
            if last < first:
                raise AvailabilityError(f"day range {part!r} runs backwards")
            days.extend(range(first, last + 1))
        elif part in DAY_NAMES:
            days.append(DAY_NAMES[part])
        else:
            raise AvailabilityError(f"unknown day {part!r}")
    return days


def _minute(hours: str, minutes: str) -> int:
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise AvailabilityError(f"bad time {hours}:{minutes}")
    return h * 60 + m


def parse_availability(text: str) -> list[Window]:
    """Parse ``text`` into windows; raise :class:`AvailabilityError` naming the bad part."""
    windows: list[Window] = []
    for chunk in re.split(r"[;；\n]", text):
        chunk = chunk.strip()
        if not chunk:
            continue
        match = _WINDOW.match(chunk)
        if not match:
            raise AvailabilityError(f"cannot read {chunk!r}; write e.g. 'mon-fri 08:00-18:00'")
        start = _minute(match.group(2), match.group(3))
        end = _minute(match.group(4), match.group(5))
        if start >= end:
            raise AvailabilityError(f"{chunk!r}: the end must be after the start")
        windows.extend(Window(day, start, end) for day in _days(match.group("days")))
    return windows
