"""``hyt import elders FILE``: the street office's list of elders and their emergency contacts."""

from __future__ import annotations

import datetime as dt
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
    read_date,
    read_phone,
    read_required,
)
from callcenter.models import Elder, EmergencyContact, Mobility, RiskLevel, Sex, SupportStatus
from callcenter.pinyin import name_pinyin
from callcenter.settings import get_settings
from callcenter.tabular import Row

MAX_CONTACTS = 3

ELDER_ALIASES: dict[str, str] = {
    "编号": "code",
    "档案号": "code",
    "姓名": "name",
    "性别": "sex",
    "出生日期": "birth_date",
    "电话": "phone",
    "联系电话": "phone",
    "区": "district",
    "所属区": "district",
    "街道": "street",
    "街道(镇)": "street",
    "社区": "community",
    "社区(村)": "community",
    "网格": "grid",
    "地址": "address",
    "详细地址": "address",
    "纬度": "latitude",
    "经度": "longitude",
    "独居": "lives_alone",
    "低保": "low_income",
    "保障类型": "support_status",
    "风险等级": "risk_level",
    "病史": "medical_notes",
    "健康状况": "medical_notes",
    "用药": "medications",
    "过敏": "allergies",
    "行动能力": "mobility",
    "语言": "language",
    "方言": "language",
    "入户说明": "access_notes",
    "门禁": "access_notes",
    "知情同意": "consent",
    **{f"联系人{i}姓名": f"contact{i}_name" for i in range(1, MAX_CONTACTS + 1)},
    **{f"联系人{i}关系": f"contact{i}_relation" for i in range(1, MAX_CONTACTS + 1)},
    **{f"联系人{i}电话": f"contact{i}_phone" for i in range(1, MAX_CONTACTS + 1)},
}

SEX_WORDS = {
    "男": Sex.MALE,
    "m": Sex.MALE,
    "male": Sex.MALE,
    "女": Sex.FEMALE,
    "f": Sex.FEMALE,
    "female": Sex.FEMALE,
}
RISK_WORDS = {
    "高": RiskLevel.HIGH,
    "中": RiskLevel.MEDIUM,
    "低": RiskLevel.LOW,
    "": RiskLevel.MEDIUM,
} | {r.value: r for r in RiskLevel}
MOBILITY_WORDS = {
    "自理": Mobility.INDEPENDENT,
    "独立": Mobility.INDEPENDENT,
    "拐杖": Mobility.WALKING_AID,
    "助行": Mobility.WALKING_AID,
    "轮椅": Mobility.WHEELCHAIR,
    "卧床": Mobility.BEDRIDDEN,
    "": Mobility.INDEPENDENT,
} | {m.value: m for m in Mobility}
SUPPORT_WORDS = {
    "无": SupportStatus.NONE,
    "": SupportStatus.NONE,
    "低保": SupportStatus.DIBAO,
    "特困": SupportStatus.TEKUN,
    "低收入": SupportStatus.LOW_INCOME,
    "五保": SupportStatus.WUBAO,
} | {s.value: s for s in SupportStatus}


def _choice(row: Row, key: str, words: dict[str, Any]) -> Any:
    text = row.get(key).lower()
    if text not in words:
        allowed = "/".join(w for w in words if w)
        raise RowProblem(key, f"{row.get(key)!r} is not one of {allowed}")
    return words[text]


def _list(text: str) -> list[str]:
    for sep in "；;，,、":
        text = text.replace(sep, ";")
    return [part.strip() for part in text.split(";") if part.strip()]


def _birth_date(row: Row, key: str) -> dt.date:
    born = read_date(row, key)
    if not dt.date(1900, 1, 1) <= born <= dt.date.today():
        raise RowProblem(key, f"birth date {born} is not plausible")
    return born


class ElderImporter:
    kind = "elders"
    aliases = ELDER_ALIASES

    def build(self, rows: Sequence[Row], session: Session) -> tuple[list[Any], list[RowError]]:
        region = get_settings().phone_region
        codes = UniqueValues(
            "code",
            session.scalars(select(Elder.code)),
            label="code",
            in_database="elder {value} is already in the database",
        )
        objects: list[Any] = []
        errors: list[RowError] = []
        for row in rows:
            c = RowCollector(row)
            codes.check(c, c.read(read_required, "code"))
            code = c.row.get("code")
            name = c.read(read_required, "name")
            sex = c.read(_choice, "sex", SEX_WORDS)
            born = c.read(_birth_date, "birth_date")
            phone = c.read(read_phone, "phone", region, required=False)
            coords = c.read(read_coordinates, "latitude", "longitude")
            street = c.read(read_required, "street")
            community = c.read(read_required, "community")
            address = c.read(read_required, "address")
            contacts = self._contacts(c, region)
            elder_fields = {
                "lives_alone": c.read(read_bool, "lives_alone"),
                "low_income": c.read(read_bool, "low_income"),
                "consent": c.read(read_bool, "consent"),
                "risk_level": c.read(_choice, "risk_level", RISK_WORDS),
                "mobility": c.read(_choice, "mobility", MOBILITY_WORDS),
                "support_status": c.read(_choice, "support_status", SUPPORT_WORDS),
            }
            if c.errors:
                errors.extend(c.errors)
                continue
            pinyin, initials = name_pinyin(name)
            objects.append(
                Elder(
                    code=code,
                    name=name,
                    name_pinyin=pinyin,
                    name_initials=initials,
                    sex=sex,
                    birth_date=born,
                    phone=phone,
                    district=row.get("district") or "龙湖区",
                    street=street,
                    community=community,
                    grid=row.get("grid") or None,
                    address=address,
                    latitude=coords[0],
                    longitude=coords[1],
                    medical_notes=row.get("medical_notes"),
                    medications=_list(row.get("medications")),
                    allergies=_list(row.get("allergies")),
                    language=row.get("language") or "普通话",
                    access_notes=row.get("access_notes"),
                    consent_at=dt.datetime.now(dt.UTC) if elder_fields["consent"] else None,
                    contacts=contacts,
                    **elder_fields,
                )
            )
        return objects, errors

    @staticmethod
    def _contacts(c: RowCollector, region: str) -> list[EmergencyContact]:
        contacts = []
        for i in range(1, MAX_CONTACTS + 1):
            name, relation = c.row.get(f"contact{i}_name"), c.row.get(f"contact{i}_relation")
            raw_phone = c.row.get(f"contact{i}_phone")
            if not (name or relation or raw_phone):
                continue
            phone = c.read(read_phone, f"contact{i}_phone", region)
            if not name:
                c.problem(f"contact{i}_name", "emergency contact without a name")
            if phone and name:
                contacts.append(
                    EmergencyContact(
                        name=name, relation=relation or "亲属", phone=phone, call_order=i
                    )
                )
        return contacts
