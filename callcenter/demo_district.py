"""A synthetic Longhu district (龙湖区, Shantou) for the demo, tests and benchmarks.

Deterministic for a given seed. Names, streets and coordinates are plausible, not real people:
the elders are 75+ (the seed article's 13,500), one terminal each, one volunteer per ~27 elders.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from callcenter.models import Elder, EmergencyContact, Mobility, RiskLevel, Sex, SupportStatus
from callcenter.pinyin import name_pinyin
from devices.models import Terminal, TerminalProtocol
from devices.terminal_models import known_models
from volunteers.catalog import get_catalog
from volunteers.models import AvailabilityWindow, Volunteer, VolunteerSkill

DISTRICT = "龙湖区"
# (street, centre latitude, centre longitude, communities): inside the district's extent.
STREETS: tuple[tuple[str, float, float, tuple[str, ...]], ...] = (
    ("金霞街道", 23.3650, 116.7050, ("金湖社区", "金泰社区", "金叶社区", "金涛社区", "华侨社区")),
    ("珠池街道", 23.3550, 116.7250, ("珠池社区", "东厦社区", "新乡社区", "岐山社区")),
    ("龙祥街道", 23.3720, 116.7350, ("龙祥社区", "嘉泰社区", "龙腾社区", "黄厝围社区")),
    ("新津街道", 23.3820, 116.7120, ("新津社区", "丹霞社区", "嵩山社区", "泰山社区")),
    ("鸥汀街道", 23.3950, 116.7300, ("鸥汀社区", "东围社区", "西溪社区", "北社社区")),
    ("外砂街道", 23.4250, 116.7750, ("外砂社区", "蓬中社区", "华新社区", "大衙社区")),
    ("新溪街道", 23.4050, 116.7900, ("新溪社区", "西埔社区", "南溪社区", "湖西社区")),
)
SURNAMES = "陈林黄李王张蔡吴郑许谢杨刘洪周庄翁詹郭马卢方姚魏苏沈余纪曾佘"
FEMALE_GIVEN = (
    "秀英",
    "桂英",
    "玉兰",
    "淑珍",
    "亚妹",
    "秀珍",
    "丽娟",
    "惜娥",
    "美玉",
    "雪梅",
    "素珍",
    "月娥",
    "瑞英",
    "宝珠",
    "爱华",
    "凤娇",
)
MALE_GIVEN = (
    "来顺",
    "德明",
    "振华",
    "国强",
    "建国",
    "木松",
    "锦坤",
    "炳南",
    "汉光",
    "泽雄",
    "永福",
    "文彬",
    "伟民",
    "少雄",
    "家荣",
    "树林",
)
VOLUNTEER_GIVEN = ("晓燕", "志伟", "丽华", "俊杰", "思敏", "嘉欣", "海涛", "佳琪", "浩然", "雅婷")
RELATIONS = ("儿子", "女儿", "儿媳", "女婿", "孙子", "侄女", "邻居")
ROADS = (
    "金砂东路",
    "黄山路",
    "泰山路",
    "嵩山路",
    "长平路",
    "华山路",
    "衡山路",
    "天山路",
    "珠池路",
    "龙眼路",
    "中山东路",
    "韩江路",
)
CONDITIONS = (
    ("高血压", "氨氯地平"),
    ("糖尿病", "二甲双胍"),
    ("冠心病", "阿司匹林"),
    ("慢阻肺", "沙美特罗"),
    ("骨质疏松", "钙片"),
    ("脑梗后遗症", "氯吡格雷"),
)
ALLERGIES = ("青霉素", "磺胺类", "海鲜", "花粉")
LANGUAGES = ("潮汕话",) * 6 + ("普通话",) * 3 + ("客家话",)
MODEL_SHARE = (("HYT-T200", 40), ("HYT-T100", 25), ("CID-P300", 25), ("SCAIP-S400", 10))
MOBILE_PREFIXES = ("135", "136", "137", "138", "139", "150", "151", "158", "159", "186", "189")
# Base-15 digits of a Contact ID account: 'A' is not a DTMF value in DC-05 accounts.
CID_ALPHABET = "0123456789BCDEF"


@dataclass(frozen=True)
class SeedSummary:
    elders: int
    contacts: int
    terminals: int
    volunteers: int


class DistrictNotEmpty(RuntimeError):
    pass


def _mobile(rng: random.Random, serial: int) -> str:
    # The serial fills the last digits so that numbers never repeat within one seed.
    return f"+86{rng.choice(MOBILE_PREFIXES)}{(serial * 7919 + rng.randrange(100)) % 10**8:08d}"


def _cid_account(index: int) -> str:
    digits = []
    for _ in range(4):
        index, rest = divmod(index, 15)
        digits.append(CID_ALPHABET[rest])
    return "".join(reversed(digits))


def _place(rng: random.Random) -> tuple[str, str, float, float]:
    street, lat, lon, communities = rng.choice(STREETS)
    # About ±1 km around the street's centre.
    return street, rng.choice(communities), lat + rng.gauss(0, 0.006), lon + rng.gauss(0, 0.006)


def _elder_rows(rng: random.Random, count: int, today: dt.date) -> Iterator[dict[str, object]]:
    for i in range(1, count + 1):
        sex = Sex.FEMALE if rng.random() < 0.58 else Sex.MALE
        given = FEMALE_GIVEN if sex is Sex.FEMALE else MALE_GIVEN
        name = rng.choice(SURNAMES) + rng.choice(given)
        pinyin, initials = name_pinyin(name)
        age = 75 + min(int(rng.expovariate(1 / 7)), 30)
        born = today.replace(year=today.year - age, month=1, day=1) - dt.timedelta(
            days=rng.randrange(365)
        )
        street, community, lat, lon = _place(rng)
        conditions = rng.sample(CONDITIONS, k=rng.choice((0, 1, 1, 2, 2, 3)))
        lives_alone = rng.random() < 0.35
        low_income = rng.random() < 0.12
        yield {
            "code": f"LH{i:06d}",
            "name": name,
            "name_pinyin": pinyin,
            "name_initials": initials,
            "sex": sex,
            "birth_date": born,
            "phone": _mobile(rng, i) if rng.random() < 0.6 else None,
            "district": DISTRICT,
            "street": street,
            "community": community,
            "grid": f"{community[:2]}{rng.randint(1, 12):02d}网格",
            "address": f"{rng.choice(ROADS)}{rng.randint(1, 300)}号{rng.randint(1, 8)}"
            f"{rng.randint(1, 4):02d}室",
            "latitude": round(lat, 6),
            "longitude": round(lon, 6),
            "lives_alone": lives_alone,
            "low_income": low_income,
            "support_status": SupportStatus.DIBAO if low_income else SupportStatus.NONE,
            "risk_level": rng.choices(list(RiskLevel), weights=(25, 55, 20))[0],
            "medical_notes": "、".join(c[0] for c in conditions),
            "medications": [c[1] for c in conditions],
            "allergies": rng.sample(ALLERGIES, k=1) if rng.random() < 0.15 else [],
            "mobility": rng.choices(list(Mobility), weights=(60, 25, 10, 5))[0],
            "language": rng.choice(LANGUAGES),
            "access_notes": rng.choice(("", "", "钥匙在邻居处", "门禁密码见档案", "楼下铁门常锁")),
            "consent": True,
            "consent_at": dt.datetime(today.year, 1, 2, tzinfo=dt.UTC),
        }


def seed_district(
    session: Session, *, seed: int = 2026, elders: int = 13_500, today: dt.date | None = None
) -> SeedSummary:
    """Fill an empty database with the demo district; refuse a database that has elders."""
    existing = session.scalar(select(func.count()).select_from(Elder))
    if existing:
        raise DistrictNotEmpty(f"the database already has {existing} elders")
    rng = random.Random(seed)
    today = today or dt.date(2026, 11, 1)
    rows = list(_elder_rows(rng, elders, today))
    elder_ids = list(
        session.scalars(insert(Elder).returning(Elder.id, sort_by_parameter_order=True), rows)
    )
    contacts = [
        {
            "elder_id": elder_id,
            "name": rng.choice(SURNAMES) + rng.choice(VOLUNTEER_GIVEN),
            "relation": rng.choice(RELATIONS),
            "phone": _mobile(rng, 10**6 + elder_id * 3 + order),
            "call_order": order,
        }
        for elder_id in elder_ids
        for order in range(1, rng.choice((1, 2, 2, 3)) + 1)
    ]
    session.execute(insert(EmergencyContact), contacts)
    session.execute(insert(Terminal), list(_terminal_rows(rng, elder_ids)))
    volunteer_count = _seed_volunteers(session, rng, max(20, elders // 27))
    return SeedSummary(len(elder_ids), len(contacts), len(elder_ids), volunteer_count)


def _terminal_rows(rng: random.Random, elder_ids: list[int]) -> Iterator[dict[str, object]]:
    models = known_models()
    names = [m for m, _ in MODEL_SHARE]
    weights = [w for _, w in MODEL_SHARE]
    now = dt.datetime.now(dt.UTC)
    for index, elder_id in enumerate(elder_ids, start=1):
        model = models[rng.choices(names, weights)[0]]
        yield {
            "serial": f"LHT{index:06d}",
            "model": model.name,
            "protocol": model.protocol,
            "sip_user": f"lht{index:06d}",
            "caller_id": f"+867548{index:07d}",
            "account": _cid_account(index)
            if model.protocol is TerminalProtocol.CONTACT_ID
            else (f"LHT{index:06d}" if model.protocol is TerminalProtocol.SCAIP else None),
            "elder_id": elder_id,
            "button_map": {},
            "report_interval_s": model.report_interval_s,
            "last_seen_at": now - dt.timedelta(seconds=rng.randrange(model.report_interval_s)),
            "battery_pct": rng.randint(35, 100),
        }


def _seed_volunteers(session: Session, rng: random.Random, count: int) -> int:
    catalog = get_catalog()
    # Volunteers do not take life-safety calls alone (the operator does), so no emergency skill.
    skill_codes = [c.code for c in catalog.categories if not c.operator_first]
    rows = []
    for i in range(1, count + 1):
        _, community, lat, lon = _place(rng)
        rows.append(
            {
                "code": f"V{i:05d}",
                "name": rng.choice(SURNAMES) + rng.choice(VOLUNTEER_GIVEN),
                "phone": _mobile(rng, 5 * 10**6 + i),
                "community": community,
                "home_latitude": round(lat, 6),
                "home_longitude": round(lon, 6),
                "service_radius_m": rng.choice((2000, 3000, 3000, 5000)),
                "on_duty": rng.random() < 0.85,
                "max_concurrent_tasks": rng.choice((1, 2, 2, 3)),
                "rating": round(rng.uniform(3.8, 5.0), 1),
                "hours_served": round(rng.uniform(0, 400), 1),
            }
        )
    ids = list(
        session.scalars(
            insert(Volunteer).returning(Volunteer.id, sort_by_parameter_order=True), rows
        )
    )
    skills, windows = [], []
    for volunteer_id in ids:
        chosen = set(rng.sample(skill_codes, k=rng.randint(2, 5)))
        if rng.random() < 0.6:
            chosen.add("visits")  # most volunteers also make the monthly home visits
        skills += [
            {"volunteer_id": volunteer_id, "category_code": code, "level": rng.choice((1, 1, 2, 3))}
            for code in sorted(chosen)
        ]
        pattern = rng.random()
        if pattern < 0.5:  # weekdays, daytime
            days, start, end = range(5), 8 * 60, 18 * 60
        elif pattern < 0.8:  # every day, long hours (retired volunteers)
            days, start, end = range(7), 7 * 60, 21 * 60
        else:  # evenings and weekends (working volunteers)
            days, start, end = range(7), 18 * 60, 22 * 60
        windows += [
            {"volunteer_id": volunteer_id, "weekday": d, "start_minute": start, "end_minute": end}
            for d in days
        ]
    session.execute(insert(VolunteerSkill), skills)
    session.execute(insert(AvailabilityWindow), windows)
    return len(ids)
