"""The call flow against a scripted call and a real database (SQLite and PostgreSQL).

The fake call checks, at the moment an acknowledgement is played, that the alarm is already
committed (read through a separate connection): the centre's first rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from callcenter.intake_service import IntakeService
from callcenter.models import Alarm, AlarmKind, AlarmSource, Case, CaseEvent
from callcenter.prompts import Prompt, prompt_audio
from callcenter.settings import Settings
from callcenter.sip.call_flow import CallFlow
from callcenter.sip.interface import CallEnded, CallInfo
from callcenter.sip.live_calls import LiveCalls
from devices import contact_id, tones
from devices.models import Terminal, TerminalProtocol
from tests.factories import make_elder, make_terminal

ACKS = {tones.kiss_off(): "kiss_off"} | {prompt_audio(p): p.name for p in Prompt}


class FakeCall:
    """A scripted caller: sends ``digits`` in bursts, records what the centre does."""

    def __init__(self, engine: Engine, *, caller: str, dialled: str = "200",
                 bursts: list[str] | None = None, hang_up_after_play: int | None = None,
                 call_id: str = "call-1") -> None:  # fmt: skip
        self.engine = engine
        self._info = CallInfo(call_id, caller, "", dialled, ("127.0.0.1", 5099), "z9hG4bK-1")
        self.bursts = list(bursts or [])
        self.events: list[str] = []
        self.alarms_at_ack: list[int] = []
        self._ended = False
        self._plays = 0
        self._hang_up_after_play = hang_up_after_play
        self.hang_up_after_digits = False

    @property
    def info(self) -> CallInfo:
        return self._info

    @property
    def ended(self) -> bool:
        return self._ended

    async def answer(self) -> None:
        self.events.append("answer")

    async def reject(self, status: int, reason: str = "") -> None:
        self.events.append(f"reject:{status}")
        self._ended = True

    async def collect_digits(self, count: int, *, first_timeout: float,
                             inter_digit_timeout: float) -> str:  # fmt: skip
        if self._ended:
            raise CallEnded()
        burst = self.bursts.pop(0) if self.bursts else ""
        self.events.append(f"digits:{burst}")
        self._ended = self.hang_up_after_digits
        return burst[:count]

    def clear_digits(self) -> None:
        pass

    async def play(self, pcm: bytes) -> None:
        if self._ended:
            raise CallEnded()
        name = ACKS.get(pcm, "tone")
        self.events.append(f"play:{name}")
        if name != "tone" and name != "PRESS_BUTTON":
            with Session(self.engine) as s:  # another connection: only committed rows show
                self.alarms_at_ack.append(len(s.scalars(select(Alarm.id)).all()))
        self._plays += 1
        if self._hang_up_after_play is not None and self._plays >= self._hang_up_after_play:
            self._ended = True  # the far end hung up while this sound was playing
            raise CallEnded()

    async def hangup(self) -> None:
        if not self._ended:
            self.events.append("hangup")
        self._ended = True

    async def wait_ended(self, timeout: float | None = None) -> bool:
        self.events.append("hold")
        self._ended = True
        return True


@pytest.fixture
def intake(fresh_engine: Engine) -> Iterator[IntakeService]:
    settings = Settings(env="test", secret_key="t" * 40)
    service = IntakeService(sessionmaker(fresh_engine, expire_on_commit=False), settings)
    yield service
    service.close()


def run(flow: CallFlow, call: FakeCall) -> None:
    async def go() -> None:
        await flow(call)
        await flow._intake.flush()

    asyncio.run(go())


def add_terminal(engine: Engine, protocol: TerminalProtocol, **fields: object) -> Terminal:
    with Session(engine, expire_on_commit=False) as s:
        elder = make_elder(s)
        terminal = make_terminal(s, elder, protocol, **fields)
        s.commit()
        return terminal


def alarms(engine: Engine) -> list[Alarm]:
    with Session(engine) as s:
        return list(s.scalars(select(Alarm).order_by(Alarm.id)))


def flow_for(intake: IntakeService) -> CallFlow:
    return CallFlow(intake, LiveCalls(), hold_s=1)


def test_dtmf_service_press(fresh_engine: Engine, intake: IntakeService) -> None:
    terminal = add_terminal(fresh_engine, TerminalProtocol.DTMF)
    call = FakeCall(fresh_engine, caller=terminal.sip_user or "", bursts=["2"])
    run(flow_for(intake), call)
    assert call.events == ["answer", "digits:2", "play:SERVICE_RECEIVED", "hangup"]
    assert call.alarms_at_ack == [1]  # committed before the prompt
    (alarm,) = alarms(fresh_engine)
    assert (alarm.kind, alarm.source, alarm.elder_id) == (
        AlarmKind.SERVICE,
        AlarmSource.DTMF,
        terminal.elder_id,
    )
    assert alarm.acknowledged_at is not None and alarm.case_id is not None


def test_dtmf_sos_is_held_for_the_operator(fresh_engine: Engine, intake: IntakeService) -> None:
    terminal = add_terminal(fresh_engine, TerminalProtocol.DTMF)
    call = FakeCall(fresh_engine, caller=terminal.sip_user or "", bursts=["1"])
    run(flow_for(intake), call)
    assert call.events == ["answer", "digits:1", "play:HELP_COMING", "hold"]
    assert alarms(fresh_engine)[0].kind is AlarmKind.LIFE_SAFETY


def test_no_digit_asks_then_treats_silence_as_a_call_for_help(
    fresh_engine: Engine, intake: IntakeService
) -> None:
    terminal = add_terminal(fresh_engine, TerminalProtocol.DTMF)
    call = FakeCall(fresh_engine, caller=terminal.sip_user or "", bursts=["", ""])
    run(flow_for(intake), call)
    assert call.events[:4] == ["answer", "digits:", "play:PRESS_BUTTON", "digits:"]
    assert alarms(fresh_engine)[0].kind is AlarmKind.LIFE_SAFETY


def test_extension_alarm_is_stored_before_the_answer(
    fresh_engine: Engine, intake: IntakeService
) -> None:
    terminal = add_terminal(fresh_engine, TerminalProtocol.EXTENSION)
    call = FakeCall(fresh_engine, caller=terminal.sip_user or "", dialled="300")
    run(flow_for(intake), call)
    assert call.events == ["answer", "play:CONSULT_RECEIVED", "hangup"]
    (alarm,) = alarms(fresh_engine)
    assert (alarm.kind, alarm.source, alarm.event_code) == (
        AlarmKind.CONSULT,
        AlarmSource.EXTENSION,
        "300",
    )


def test_unknown_caller_still_becomes_an_alarm(fresh_engine: Engine, intake: IntakeService) -> None:
    call = FakeCall(fresh_engine, caller="nobody-we-know")
    run(flow_for(intake), call)
    assert call.events == ["answer", "play:UNIDENTIFIED", "hold"]
    (alarm,) = alarms(fresh_engine)
    assert alarm.kind is AlarmKind.UNIDENTIFIED and alarm.priority == 1
    assert alarm.elder_id is None and alarm.case_id is None


def test_terminal_found_by_caller_id(fresh_engine: Engine, intake: IntakeService) -> None:
    terminal = add_terminal(
        fresh_engine, TerminalProtocol.DTMF, sip_user=None, caller_id="+8675488000009"
    )
    call = FakeCall(fresh_engine, caller="075488000009", bursts=["2"])
    run(flow_for(intake), call)
    assert alarms(fresh_engine)[0].terminal_id == terminal.id


def test_contact_id_kiss_off_only_after_commit(fresh_engine: Engine, intake: IntakeService) -> None:
    terminal = add_terminal(fresh_engine, TerminalProtocol.CONTACT_ID, account="1234")
    sos = contact_id.encode("1234", "101", zone="001")
    bad = sos[:-1] + ("1" if sos[-1] != "1" else "2")  # checksum broken
    mains = contact_id.encode("1234", "301")
    test = contact_id.encode("1234", "602")
    call = FakeCall(fresh_engine, caller=terminal.sip_user or "", bursts=[bad, sos, mains, test])
    run(flow_for(intake), call)
    assert call.events == [
        "answer", "play:tone",  # handshake
        f"digits:{bad}",  # no kiss-off for a bad checksum: the panel repeats
        f"digits:{sos}", "play:kiss_off",
        f"digits:{mains}", "play:kiss_off",
        f"digits:{test}", "play:kiss_off",
        "digits:", "hold",  # a life-safety message: held for the operator
    ]  # fmt: skip
    assert call.alarms_at_ack == [1, 2, 3]
    kinds = [(a.kind, a.event_code) for a in alarms(fresh_engine)]
    assert kinds == [
        (AlarmKind.LIFE_SAFETY, "1101"), (AlarmKind.TECHNICAL, "1301"), (AlarmKind.TEST, "1602")
    ]  # fmt: skip
    with Session(fresh_engine) as s:
        periodic = s.scalars(select(Alarm).where(Alarm.kind == AlarmKind.TEST)).one()
        assert periodic.case_id is None  # a periodic test opens no case
        seen = s.scalars(select(Terminal.last_seen_at).where(Terminal.id == terminal.id)).one()
        assert seen is not None


def test_contact_id_restore_is_a_cancel(fresh_engine: Engine, intake: IntakeService) -> None:
    terminal = add_terminal(fresh_engine, TerminalProtocol.CONTACT_ID, account="4321")
    sos = contact_id.encode("4321", "101")
    restore = contact_id.encode("4321", "101", qualifier=3)
    for n, digits in enumerate((sos, restore)):
        call = FakeCall(
            fresh_engine, caller=terminal.sip_user or "", bursts=[digits], call_id=f"c{n}"
        )
        run(flow_for(intake), call)
    first, second = alarms(fresh_engine)
    assert second.kind is AlarmKind.CANCEL and second.case_id == first.case_id
    with Session(fresh_engine) as s:
        events = s.scalars(select(CaseEvent.event).where(CaseEvent.case_id == first.case_id))
        assert "cancel_requested" in list(events)


def test_repeat_presses_attach_to_one_case(fresh_engine: Engine, intake: IntakeService) -> None:
    terminal = add_terminal(fresh_engine, TerminalProtocol.DTMF)
    for n in range(5):  # an anxious elder presses five times
        call = FakeCall(
            fresh_engine, caller=terminal.sip_user or "", bursts=["1"], call_id=f"press-{n}"
        )
        run(flow_for(intake), call)
    stored = alarms(fresh_engine)
    assert len(stored) == 5
    assert len({a.case_id for a in stored}) == 1
    with Session(fresh_engine) as s:
        assert len(s.scalars(select(Case)).all()) == 1


def test_unacknowledged_alarm_retried_is_stored_once(
    fresh_engine: Engine, intake: IntakeService
) -> None:
    terminal = add_terminal(fresh_engine, TerminalProtocol.DTMF)
    # The caller hangs up right after pressing: stored, never acknowledged.
    first = FakeCall(fresh_engine, caller=terminal.sip_user or "", bursts=["2"], call_id="try-1")
    first.hang_up_after_digits = True
    run(flow_for(intake), first)
    retry = FakeCall(fresh_engine, caller=terminal.sip_user or "", bursts=["2"], call_id="try-2")
    run(flow_for(intake), retry)
    stored = alarms(fresh_engine)
    assert len(stored) == 1  # the retry is the same alarm …
    assert stored[0].acknowledged_at is not None  # … and now it has been acknowledged
    # Once acknowledged, the same press again is a new press (attached to the open case).
    again = FakeCall(fresh_engine, caller=terminal.sip_user or "", bursts=["2"], call_id="try-3")
    run(flow_for(intake), again)
    assert len(alarms(fresh_engine)) == 2


def test_database_failure_rejects_without_acknowledging(
    fresh_engine: Engine, intake: IntakeService
) -> None:
    terminal = add_terminal(fresh_engine, TerminalProtocol.EXTENSION)

    async def broken(press: object) -> object:
        raise ConnectionError("database is down")

    intake.record = broken  # type: ignore[method-assign,assignment]
    call = FakeCall(fresh_engine, caller=terminal.sip_user or "", dialled="110")
    run(flow_for(intake), call)
    assert call.events == ["reject:480"]  # no answer, no prompt: the terminal retries


def test_kiss_off_cut_short_by_the_panel_still_acknowledges(
    fresh_engine: Engine, intake: IntakeService
) -> None:
    terminal = add_terminal(fresh_engine, TerminalProtocol.CONTACT_ID, account="5678")
    sos = contact_id.encode("5678", "101")
    # The panel goes on-hook as soon as it recognises the kiss-off (the 2nd sound played).
    call = FakeCall(fresh_engine, caller=terminal.sip_user or "", bursts=[sos],
                    hang_up_after_play=2)  # fmt: skip
    run(flow_for(intake), call)
    (alarm,) = alarms(fresh_engine)
    assert alarm.acknowledged_at is not None
