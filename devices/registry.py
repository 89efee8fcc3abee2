"""Who is calling: a terminal found from what its SIP request carries, and what its button meant."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass

from sqlalchemy import case, or_, select, update
from sqlalchemy.orm import Session

from callcenter.phones import PhoneError, normalise_phone
from devices.models import Terminal, TerminalProtocol, TerminalStatus
from devices.terminal_models import known_models


@dataclass(frozen=True, slots=True)
class KnownTerminal:
    """The facts the call flow needs, detached from any session (it runs on another thread)."""

    id: int
    serial: str
    model: str
    protocol: TerminalProtocol
    elder_id: int | None
    account: str | None
    buttons: dict[str, str]  # dialled number or DTMF digit → sos | service | consult | cancel

    def button_for(self, key: str) -> str | None:
        return self.buttons.get(key)


def known_terminal(terminal: Terminal) -> KnownTerminal:
    model = known_models().get(terminal.model)
    buttons = dict(terminal.button_map or (model.buttons if model else {}))
    return KnownTerminal(
        id=terminal.id,
        serial=terminal.serial,
        model=terminal.model,
        protocol=terminal.protocol,
        elder_id=terminal.elder_id,
        account=terminal.account,
        buttons=buttons,
    )


def identify(
    session: Session,
    *,
    sip_user: str = "",
    caller_number: str = "",
    account: str = "",
    region: str = "CN",
) -> KnownTerminal | None:
    """Find the terminal by SIP user, caller id (E.164) or account (Contact ID, SCAIP).

    Retired terminals are not matched: a number re-used by another household must not pop up
    the previous elder's file.
    """
    conditions = []
    if sip_user:
        conditions.append(Terminal.sip_user == sip_user)
    for raw in {sip_user, caller_number} - {""}:
        with contextlib.suppress(PhoneError):
            conditions.append(Terminal.caller_id == normalise_phone(raw, region))
    if account:
        conditions.append(Terminal.account == account.replace(" ", ""))
    if not conditions:
        return None
    found = session.scalars(
        select(Terminal)
        .where(or_(*conditions), Terminal.status != TerminalStatus.RETIRED)
        .order_by(Terminal.id)
        .limit(2)
    ).all()
    if not found:
        return None
    # Prefer an exact SIP-user match when a caller id is shared (e.g. a PBX trunk number).
    exact = [t for t in found if sip_user and t.sip_user == sip_user]
    return known_terminal(exact[0] if exact else found[0])


def touch(
    session: Session, terminal_id: int, at: dt.datetime, battery_pct: int | None = None
) -> None:
    """Record that the terminal reported in; a silent terminal that speaks again is active."""
    # One statement: this runs for every alarm and heartbeat.
    values: dict[str, object] = {
        "last_seen_at": at,
        "status": case(
            (Terminal.status == TerminalStatus.SILENT, TerminalStatus.ACTIVE.value),
            else_=Terminal.status,
        ),
    }
    if battery_pct is not None:
        values["battery_pct"] = battery_pct
    session.execute(update(Terminal).where(Terminal.id == terminal_id).values(**values))
