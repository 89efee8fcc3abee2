"""SCAIP ingress: alarm data as SIP MESSAGE (``application/scaip+xml``, SS 91100 / CLC/TS 50134-9).

For every MESSAGE: parse the ``<mrq>`` (defusedxml), store the alarm, and only then answer
200 OK, followed by an ``<mrs>`` MESSAGE (``snu`` 0 when stored; non-zero naming what is wrong).
Heartbeats (``PI``, test transmissions) update the terminal's last seen and open no case. If the
database cannot store the alarm, there is no 200: the terminal sends it again. A body from which
no ``<ref>`` can be read (not XML, a DTD, an entity bomb, too large) gets 400: an ``<mrs>`` could
not name the message it answers.
"""

from __future__ import annotations

import structlog
from aiosipua import SipRequest

from callcenter.intake import Press
from callcenter.intake_service import IntakeService
from callcenter.models import AlarmKind, AlarmSource
from callcenter.sip.aiosipua_uas import SipReply
from devices import scaip

log = structlog.get_logger(__name__)

CONTENT_TYPE = "application/scaip+xml"
KIND_OF = {
    "life_safety": AlarmKind.LIFE_SAFETY,
    "technical": AlarmKind.TECHNICAL,
    "test": AlarmKind.TEST,
    "cancel": AlarmKind.CANCEL,
    "info": AlarmKind.TECHNICAL,
}


class ScaipIngress:
    def __init__(self, intake: IntakeService) -> None:
        self._intake = intake

    async def __call__(self, req: SipRequest, addr: tuple[str, int]) -> SipReply:
        content_type = (req.content_type or "").split(";")[0].strip().lower()
        if content_type != CONTENT_TYPE:
            log.warning(
                "scaip.unsupported_type", content_type=content_type[:60], source=_source(addr)
            )
            return SipReply(415, "Unsupported Media Type")
        try:
            message = scaip.parse_mrq(req.body or b"")
        except scaip.ScaipError as exc:
            log.warning("scaip.rejected", reason=exc.reason, snu=exc.snu, source=_source(addr))
            if not exc.ref:
                # No <ref> could be read (not XML, a DTD or entity bomb, too large, no <ref>):
                # an <mrs> must echo one, so say it in SIP. A bare 200 would tell the terminal
                # that its message was taken.
                return SipReply(400, f"Bad Request - SCAIP {exc.reason}")
            # The MESSAGE itself arrived: 200, and the <mrs> says what is wrong with it.
            return SipReply(200, "OK", followup_body=scaip.build_mrs(ref=exc.ref, snu=exc.snu))
        from_user = req.from_addr.uri.user or "" if req.from_addr else ""
        terminal = await self._intake.identify(
            sip_user=from_user, caller_number=_crd_number(message.crd), account=message.cid or ""
        )
        sender = message.cid or from_user or addr[0]
        kind = KIND_OF[message.kind]
        if terminal is None and kind is not AlarmKind.TEST:
            kind = AlarmKind.UNIDENTIFIED  # an operator sees it; a stray heartbeat pages no one
        press = Press(
            source=AlarmSource.SCAIP,
            kind=kind,
            # The device numbers its messages: a re-sent message carries the same ref.
            dedup_key=f"scaip:{sender}:{message.ref}",
            caller=sender,
            terminal_id=terminal.id if terminal else None,
            elder_id=terminal.elder_id if terminal else None,
            event_code=message.stc or message.mty,
            raw={k: v for k, v in _fields(message).items() if v is not None},
        )
        if message.kind == "test" and terminal is None:
            log.warning("scaip.heartbeat_unknown", sender=sender)
        recorded = await self._intake.record(press)
        await self._intake.acknowledge(recorded.alarm_id)
        mre = scaip.MediaReply.DUPLEX if recorded.kind is AlarmKind.LIFE_SAFETY else None
        return SipReply(200, "OK", followup_body=scaip.build_mrs(ref=message.ref, snu=0, mre=mre))


def _source(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


def _crd_number(crd: str | None) -> str:
    """``gsm:+86…`` / ``tel:…`` / ``sip:user@host`` → the number or user part."""
    if not crd:
        return ""
    value = crd.split(":", 1)[-1]
    return value.split("@", 1)[0]


def _fields(message: scaip.ScaipRequest) -> dict[str, str | int | None]:
    return {
        "ref": message.ref,
        "cid": message.cid,
        "dty": message.dty,
        "did": message.did,
        "mty": message.mty,
        "stc": message.stc,
        "stt": message.stt,
        "pri": message.pri,
        "lco": message.lco,
        "lva": message.lva,
        "lte": message.lte,
        "lge": message.lge,
        "crd": message.crd,
        "ver": message.ver,
    }
