"""``hyt import terminals FILE``: terminals and the elder each one is bound to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from callcenter.importing import (
    RowCollector,
    RowError,
    UniqueValues,
    read_int,
    read_phone,
    read_required,
)
from callcenter.models import Elder
from callcenter.settings import get_settings
from callcenter.tabular import Row
from devices.models import Terminal, TerminalProtocol
from devices.terminal_models import known_models

TERMINAL_ALIASES: dict[str, str] = {
    "序列号": "serial",
    "终端序列号": "serial",
    "型号": "model",
    "SIP账号": "sip_user",
    "sip账号": "sip_user",
    "来电号码": "caller_id",
    "终端号码": "caller_id",
    "老人编号": "elder_code",
    "协议": "protocol",
    "上报间隔(分钟)": "report_interval_min",
    "账号": "account",
}


class TerminalImporter:
    kind = "terminals"
    aliases = TERMINAL_ALIASES

    def build(self, rows: Sequence[Row], session: Session) -> tuple[list[Any], list[RowError]]:
        region = get_settings().phone_region
        models = known_models()
        elders = {code: id_ for code, id_ in session.execute(select(Elder.code, Elder.id))}
        serials = UniqueValues(
            "serial",
            session.scalars(select(Terminal.serial)),
            label="serial",
            in_database="terminal {value} is already in the database",
        )
        sip_users = UniqueValues(
            "sip_user",
            session.scalars(select(Terminal.sip_user)),
            label="SIP user",
            in_database="SIP user {value} belongs to another terminal",
        )
        objects: list[Any] = []
        errors: list[RowError] = []
        for row in rows:
            c = RowCollector(row)
            serial = c.read(read_required, "serial")
            serials.check(c, serial)
            model_name = c.read(read_required, "model")
            model = models.get(model_name) if model_name else None
            if model_name and model is None:
                c.problem("model", f"unknown terminal model {model_name!r} ({', '.join(models)})")
            protocol = model.protocol if model else None
            if row.get("protocol"):
                try:
                    protocol = TerminalProtocol(row.get("protocol").lower())
                except ValueError:
                    c.problem("protocol", f"unknown protocol {row.get('protocol')!r}")
            sip_user = row.get("sip_user") or None
            sip_users.check(c, sip_user)
            caller_id = c.read(read_phone, "caller_id", region, required=False)
            if not sip_user and not caller_id:
                c.problem("sip_user", "a terminal needs a SIP user or a caller id to be identified")
            elder_code = row.get("elder_code")
            elder_id = elders.get(elder_code) if elder_code else None
            if elder_code and elder_id is None:
                c.problem("elder_code", f"terminal bound to a missing elder {elder_code!r}")
            default_minutes = model.report_interval_s // 60 if model else 1440
            interval = c.read(
                read_int, "report_interval_min", default=default_minutes, lo=1, hi=60 * 24 * 31
            )
            account = row.get("account") or None
            if protocol is TerminalProtocol.CONTACT_ID and (not account or len(account) != 4):
                c.problem("account", "a Contact ID terminal needs its 4-character account")
            if c.errors:
                errors.extend(c.errors)
                continue
            objects.append(
                Terminal(
                    serial=serial,
                    model=model_name,
                    protocol=protocol,
                    sip_user=sip_user,
                    caller_id=caller_id,
                    account=account,
                    elder_id=elder_id,
                    report_interval_s=interval * 60,
                )
            )
        return objects, errors
