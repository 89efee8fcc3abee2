"""``hyt import volunteers FILE``: volunteers with their skills, home and weekly availability."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from callcenter.importing import (
    RowCollector,
    RowError,
    RowProblem,
    UniqueValues,
    read_bool,
    read_coordinates,
    read_int,
    read_phone,
    read_required,
)
from callcenter.settings import get_settings
from callcenter.tabular import Row
from volunteers.availability import AvailabilityError, parse_availability
from volunteers.catalog import Catalog, get_catalog
from volunteers.models import AvailabilityWindow, Volunteer, VolunteerSkill

VOLUNTEER_ALIASES: dict[str, str] = {
    "编号": "code", "姓名": "name", "电话": "phone", "手机": "phone", "社区": "community",
    "技能": "skills", "纬度": "latitude", "经度": "longitude", "服务半径(米)": "radius_m",
    "服务半径": "radius_m", "可服务时间": "availability", "服务时间": "availability",
    "最多同时任务": "max_tasks", "在岗": "on_duty", "评分": "rating",
}  # fmt: skip


def parse_skills(row: Row, key: str, catalog: Catalog) -> list[tuple[str, int]]:
    """``repairs:2; 家电更换`` → [("repairs", 2), ("appliances", 1)]: codes or names, level 1–3."""
    text = row.get(key)
    if not text:
        raise RowProblem(key, "a volunteer needs at least one skill")
    skills: dict[str, int] = {}
    for part in re.split(r"[;；,，、]", text):
        part = part.strip()
        if not part:
            continue
        name, _, level_text = part.replace("：", ":").partition(":")
        category = catalog.category_by_name(name)
        if category is None:
            raise RowProblem(key, f"unknown service category {name.strip()!r}")
        level = 1
        if level_text.strip():
            if level_text.strip() not in ("1", "2", "3"):
                raise RowProblem(key, f"skill level {level_text.strip()!r} must be 1, 2 or 3")
            level = int(level_text)
        skills[category.code] = level
    return sorted(skills.items())


def _availability(row: Row, key: str) -> list[Any]:
    text = row.get(key)
    if not text:
        raise RowProblem(key, "missing availability (e.g. 'mon-fri 08:00-18:00')")
    try:
        return parse_availability(text)
    except AvailabilityError as exc:
        raise RowProblem(key, str(exc)) from None


def _rating(row: Row, key: str) -> float:
    text = row.get(key)
    try:
        value = float(text) if text else 4.5
    except ValueError:
        raise RowProblem(key, f"{text!r} is not a number") from None
    if not 0 <= value <= 5:
        raise RowProblem(key, "rating must be between 0 and 5")
    return value


class VolunteerImporter:
    kind = "volunteers"
    aliases = VOLUNTEER_ALIASES

    def build(self, rows: Sequence[Row], session: Session) -> tuple[list[Any], list[RowError]]:
        region = get_settings().phone_region
        catalog = get_catalog()
        codes = UniqueValues(
            "code",
            session.scalars(select(Volunteer.code)),
            label="code",
            in_database="volunteer {value} is already in the database",
        )
        phones = UniqueValues(
            "phone",
            session.scalars(select(Volunteer.phone)),
            label="phone",
            in_database="another volunteer in the database has this phone",
        )
        objects: list[Any] = []
        errors: list[RowError] = []
        for row in rows:
            c = RowCollector(row)
            code = c.read(read_required, "code")
            codes.check(c, code)
            phone = c.read(read_phone, "phone", region)
            phones.check(c, phone)
            name = c.read(read_required, "name")
            skills = c.read(parse_skills, "skills", catalog)
            coords = c.read(read_coordinates, "latitude", "longitude")
            windows = c.read(_availability, "availability")
            radius = c.read(read_int, "radius_m", default=3000, lo=100, hi=50_000)
            max_tasks = c.read(read_int, "max_tasks", default=2, lo=1, hi=20)
            on_duty = c.read(read_bool, "on_duty", default=True)
            rating = c.read(_rating, "rating")
            if c.errors:
                errors.extend(c.errors)
                continue
            objects.append(
                Volunteer(
                    code=code,
                    name=name,
                    phone=phone,
                    community=row.get("community") or None,
                    home_latitude=coords[0],
                    home_longitude=coords[1],
                    service_radius_m=radius,
                    max_concurrent_tasks=max_tasks,
                    on_duty=on_duty,
                    rating=rating,
                    skills=[VolunteerSkill(category_code=k, level=lv) for k, lv in skills],
                    availability=[
                        AvailabilityWindow(
                            weekday=w.weekday, start_minute=w.start_minute, end_minute=w.end_minute
                        )
                        for w in windows
                    ],
                )
            )
        return objects, errors
