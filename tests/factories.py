"""Small factories for test rows: one elder, one terminal, one volunteer at a time."""

from __future__ import annotations

import datetime as dt
import itertools

from sqlalchemy.orm import Session

from callcenter.models import Elder, EmergencyContact, Sex
from devices.models import Terminal, TerminalProtocol

_numbers = itertools.count(1)

MODEL_FOR = {
    TerminalProtocol.EXTENSION: "HYT-T100",
    TerminalProtocol.DTMF: "HYT-T200",
    TerminalProtocol.CONTACT_ID: "CID-P300",
    TerminalProtocol.SCAIP: "SCAIP-S400",
}


def make_elder(session: Session, name: str = "王秀英", **fields: object) -> Elder:
    n = next(_numbers)
    values: dict[str, object] = {
        "code": f"F{n:06d}",
        "name": name,
        "name_pinyin": "wang xiu ying",
        "name_initials": "wxy",
        "sex": Sex.FEMALE,
        "birth_date": dt.date(1944, 3, 5),
        "district": "龙湖区",
        "street": "金霞街道",
        "community": "金湖社区",
        "address": f"金砂东路{n}号",
        "latitude": 23.365,
        "longitude": 116.705,
        "consent": True,
    }
    values.update(fields)
    elder = Elder(**values)
    elder.contacts = [EmergencyContact(name="李梅", relation="女儿", phone="+8613912345678")]
    session.add(elder)
    session.flush()
    return elder


def make_terminal(
    session: Session,
    elder: Elder | None,
    protocol: TerminalProtocol = TerminalProtocol.DTMF,
    **fields: object,
) -> Terminal:
    n = next(_numbers)
    values: dict[str, object] = {
        "serial": f"FT{n:06d}",
        "model": MODEL_FOR[protocol],
        "protocol": protocol,
        "sip_user": f"ft{n:06d}",
        "caller_id": f"+867548{n:07d}",
        "elder_id": elder.id if elder else None,
        "account": f"{n % 10000:04d}" if protocol is TerminalProtocol.CONTACT_ID else None,
    }
    values.update(fields)
    terminal = Terminal(**values)
    session.add(terminal)
    session.flush()
    return terminal
