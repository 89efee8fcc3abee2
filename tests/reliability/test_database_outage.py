"""PostgreSQL stops under load and comes back (issue #7): the call handler acknowledges nothing
it has not stored, the terminals retry, the handler reconnects by itself, and every alarm is
stored exactly once in the end.

The server is the test's own (``private_postgres``): the shared one serves the other tests.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from callcenter import db, migrate
from callcenter.models import Alarm, AlarmSource
from devices.models import TerminalProtocol
from tests.reliability.private_postgres import private_postgres
from tests.reliability.test_crash import JSON_LOG, Terminal
from tests.sip.handler_process import seed_terminals, start_handler
from tests.sip.sipp import free_udp_port

BEFORE, DURING = 40, 40
OUTAGE_S = 30.0  # as the issue asks: PostgreSQL stopped for 30 s


def test_a_database_outage_acknowledges_nothing_unstored_and_loses_nothing(
    tmp_path: Path,
) -> None:
    with private_postgres() as server:
        engine = db.make_engine(server.url)
        migrate.upgrade(engine)
        user, _elder, terminal_id, account = seed_terminals(engine)[TerminalProtocol.SCAIP]
        engine.dispose()
        port = free_udp_port()
        log = tmp_path / "handler.log"
        terminal = Terminal(user, account or user, port)
        receiver = threading.Thread(target=terminal.receive, daemon=True)
        try:
            with start_handler(server.url, log, port=port, env=JSON_LOG) as handler:
                receiver.start()
                for ref in range(1, BEFORE + 1):
                    terminal.message(ref)
                    time.sleep(0.02)
                deadline = time.monotonic() + 30
                while len(terminal.acked_at) < BEFORE and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert len(terminal.acked_at) == BEFORE, log.read_text()[-3000:]

                server.stop()
                stopped_at = time.monotonic()
                for ref in range(BEFORE + 1, BEFORE + DURING + 1):
                    terminal.message(ref)
                    time.sleep(0.02)
                time.sleep(max(0.0, stopped_at + OUTAGE_S - time.monotonic()))
                with terminal.lock:
                    acked_while_down = {c for c, at in terminal.acked_at.items() if at > stopped_at}
                server.start()

                deadline = time.monotonic() + 90  # cached 500s expire (RFC 3261 Timer J)
                while len(terminal.acked_at) < BEFORE + DURING and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert handler.running(), "the handler died instead of reconnecting"
        finally:
            terminal.stop.set()
            receiver.join(5)
        engine = db.make_engine(server.url)
        with Session(engine) as session:
            refs = [
                str(a.raw.get("ref"))
                for a in session.scalars(
                    select(Alarm).where(
                        Alarm.source == AlarmSource.SCAIP, Alarm.terminal_id == terminal_id
                    )
                )
            ]
        engine.dispose()
    assert not acked_while_down, "acknowledged while the database was down"
    assert len(terminal.acked_at) == BEFORE + DURING, log.read_text()[-3000:]
    assert sorted(refs, key=int) == [str(n) for n in range(1, BEFORE + DURING + 1)]
