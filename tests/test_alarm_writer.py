"""Group commit of alarms: batches, life-safety first, a bad alarm never takes the others along,
and a caller learns of its alarm only once it is committed."""

from __future__ import annotations

import time
from concurrent.futures import Future

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from callcenter.alarm_writer import AlarmWriter
from callcenter.intake import Press, Recorded
from callcenter.models import Alarm, AlarmKind, AlarmSource, Case
from tests.factories import make_elder, make_terminal


def district(engine: Engine, count: int) -> list[tuple[int, int]]:
    """``count`` elders each with a terminal: (terminal_id, elder_id)."""
    with Session(engine) as session:
        pairs = []
        for i in range(count):
            elder = make_elder(session, name=f"测试{i}")
            terminal = make_terminal(session, elder)
            pairs.append((terminal.id, elder.id))
        session.commit()
    return pairs


def mains_loss(terminal_id: int, elder_id: int, ref: int) -> Press:
    return Press(source=AlarmSource.SCAIP, kind=AlarmKind.TECHNICAL, event_code="0085",
                 dedup_key=f"scaip:t{terminal_id}:{ref}", terminal_id=terminal_id,
                 elder_id=elder_id)  # fmt: skip


def sos(terminal_id: int, elder_id: int) -> Press:
    return Press(source=AlarmSource.DTMF, kind=AlarmKind.LIFE_SAFETY,
                 dedup_key=f"call:sos:{terminal_id}", terminal_id=terminal_id,
                 elder_id=elder_id)  # fmt: skip


def test_a_storm_is_written_in_batches_with_the_sos_in_the_first(fresh_engine: Engine) -> None:
    pairs = district(fresh_engine, 151)
    writer = AlarmWriter(sessionmaker(fresh_engine), batch_max=50, autostart=False)
    futures = [writer.submit(mains_loss(t, e, 1)) for t, e in pairs[:150]]
    late_sos = writer.submit(sos(*pairs[150]))  # queued last, behind 150 technical alarms
    writer.start()
    results = [f.result(30) for f in futures]
    writer.close()
    sos_alarm = late_sos.result(0)
    assert writer.batches == 4  # 151 alarms, at most 50 a transaction
    assert len({r.alarm_id for r in results}) == 150 and not any(r.duplicate for r in results)
    with Session(fresh_engine) as session:
        ids = sorted(session.scalars(select(Alarm.id)))
        assert len(ids) == 151
        # Stored in the first transaction, although it arrived last: ids are handed out in
        # commit order, so it is among the first fifty.
        assert ids.index(sos_alarm.alarm_id) < 50
        assert session.scalar(select(func.count(Case.id))) == 151


def test_one_bad_alarm_does_not_take_its_batch_along(fresh_engine: Engine) -> None:
    pairs = district(fresh_engine, 10)
    writer = AlarmWriter(sessionmaker(fresh_engine), batch_max=64, autostart=False)
    good = [writer.submit(mains_loss(t, e, 7)) for t, e in pairs]
    # An elder that does not exist: the insert violates a foreign key.
    bad = writer.submit(mains_loss(pairs[0][0], 999_999, 8))
    again = writer.submit(mains_loss(*pairs[3], 7))  # a retransmission of one of the good ones
    writer.start()
    stored = [f.result(30) for f in good]
    with pytest.raises(Exception):  # noqa: B017 - the database's own error, whichever it is
        bad.result(30)
    writer.close()
    assert again.result(0).duplicate and again.result(0).alarm_id == stored[3].alarm_id
    with Session(fresh_engine) as session:
        assert session.scalar(select(func.count(Alarm.id))) == 10


def test_a_caller_hears_of_its_alarm_only_after_the_commit(fresh_engine: Engine) -> None:
    (terminal_id, elder_id), *_ = district(fresh_engine, 1)
    writer = AlarmWriter(sessionmaker(fresh_engine), threads=2)
    seen_by_another_connection: list[bool] = []

    def check(future: Future[Recorded]) -> None:
        # Runs the moment the result is set, on the writer's thread: the ack could go now.
        with Session(fresh_engine) as other:
            alarm = other.get(Alarm, future.result().alarm_id)
            seen_by_another_connection.append(alarm is not None)

    future = writer.submit(sos(terminal_id, elder_id))
    future.add_done_callback(check)
    future.result(30)
    writer.close()
    assert seen_by_another_connection == [True]


def test_a_writer_lingers_for_more_alarms_but_not_with_a_life_safety_one(
    fresh_engine: Engine,
) -> None:
    """Presses trickling in one by one (a call storm hands them over as calls come) go into one
    transaction while the writer lingers; a life-safety press ends the wait at once."""
    pairs = district(fresh_engine, 6)
    writer = AlarmWriter(sessionmaker(fresh_engine), threads=1, linger_s=1.0)
    trickle: list[Future[Recorded]] = []
    for t, e in pairs[:4]:
        trickle.append(writer.submit(mains_loss(t, e, 1)))
        time.sleep(0.05)  # pacing the submissions, not a timing assertion
    for future in trickle:
        future.result(10)
    assert writer.batches == 1  # without the linger: one transaction each

    # A technical alarm starts a linger of 10 s; the SOS behind it must not wait for its end.
    writer_slow = AlarmWriter(sessionmaker(fresh_engine), threads=1, linger_s=10.0)
    technical = writer_slow.submit(mains_loss(*pairs[4], 2))
    time.sleep(0.1)
    started = time.monotonic()
    urgent = writer_slow.submit(sos(*pairs[5]))
    urgent.result(5)
    assert time.monotonic() - started < 5  # the 10 s linger was cut short
    assert technical.done() and writer_slow.batches == 1  # in the same transaction
    writer.close()
    writer_slow.close()
