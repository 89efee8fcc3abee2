"""``kill -9`` of the call handler, and of the SCAIP ingress, in the middle of a SCAIP storm

A terminal that gets no 200 sends its MESSAGE again (as SCAIP devices do, and as RFC 3261's
non-INVITE client transaction does every 500 ms); the handler is killed without warning while
messages are in flight and started again on the same port. Afterwards every message that was
acknowledged is stored exactly once, every message is stored in the end (the retries reached
the new process), none twice, and the service was back within 10 s.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from callcenter import db
from callcenter.models import Alarm, AlarmSource
from devices.models import TerminalProtocol
from tests.sip.handler_process import seed_terminals, start_handler
from tests.sip.sipp import free_udp_port

MESSAGES = 300
RATE = 100.0  # messages/s: the storm is sent in 3 s, the kill comes 1 s in
RETRY_S = 0.5
JSON_LOG = {"HYT_LOG_JSON": "1"}


@dataclass
class Terminal:
    """SCAIP terminals on one socket: send, re-send until a 200 comes, answer the <mrs>."""

    user: str
    account: str
    port: int
    sock: socket.socket = field(init=False)
    sent_at: dict[str, float] = field(default_factory=dict)  # Call-ID → first send
    acked_at: dict[str, float] = field(default_factory=dict)
    wire: dict[str, bytes] = field(default_factory=dict)
    ref_of: dict[str, str] = field(default_factory=dict)
    last_try: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)

    def message(self, ref: int) -> None:
        lport = self.sock.getsockname()[1]
        call_id = f"{uuid.uuid4().hex}@crash"
        body = (f"<mrq><ref>{ref}</ref><cid>{self.account}</cid><dty>0003</dty><mty>ME</mty>"
                "<stc>0085</stc></mrq>").encode()  # fmt: skip
        head = (
            f"MESSAGE sip:centre@127.0.0.1:{self.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK-{uuid.uuid4().hex[:12]};rport\r\n"
            f"From: <sip:{self.user}@127.0.0.1:{lport}>;tag={ref}\r\n"
            f"To: <sip:centre@127.0.0.1:{self.port}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/scaip+xml\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        wire = head.encode() + body
        with self.lock:
            now = time.monotonic()
            self.wire[call_id], self.sent_at[call_id], self.last_try[call_id] = wire, now, now
            self.ref_of[call_id] = str(ref)
        self.sock.sendto(wire, ("127.0.0.1", self.port))

    def resend_unanswered(self) -> None:
        now = time.monotonic()
        with self.lock:
            due = [
                c for c, t in self.last_try.items() if c not in self.acked_at and now - t > RETRY_S
            ]
            for call_id in due:
                self.last_try[call_id] = now
        for call_id in due:
            self.sock.sendto(self.wire[call_id], ("127.0.0.1", self.port))

    def receive(self) -> None:
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                self.resend_unanswered()
                continue
            head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
            lines = head.split("\r\n")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers.setdefault(name.strip().lower(), value.strip())
            if lines[0].startswith("SIP/2.0 200"):
                with self.lock:
                    self.acked_at.setdefault(headers.get("call-id", ""), time.monotonic())
            elif lines[0].startswith("MESSAGE "):  # the centre's <mrs>: say we have it
                names = ("via", "from", "to", "call-id", "cseq")
                echo = "".join(f"{n}: {headers[n]}\r\n" for n in names if n in headers)
                ok = f"SIP/2.0 200 OK\r\n{echo}Content-Length: 0\r\n\r\n"
                self.sock.sendto(ok.encode(), addr)
            self.resend_unanswered()


@pytest.mark.parametrize("command", ["sip", "scaip"])  # the call handler; the SCAIP ingress
def test_kill_9_mid_storm_loses_nothing_acknowledged_and_stores_each_once(
    fresh_postgres_url: str, tmp_path: Path, command: str
) -> None:
    engine = db.make_engine(fresh_postgres_url)
    user, _elder_id, terminal_id, account = seed_terminals(engine)[TerminalProtocol.SCAIP]
    port = free_udp_port()
    log = tmp_path / "handler.log"
    terminal = Terminal(user, account or user, port)
    receiver = threading.Thread(target=terminal.receive, daemon=True)
    acked_before_kill: set[str] = set()
    try:
        with start_handler(
            fresh_postgres_url, log, command=command, port=port, env=JSON_LOG
        ) as first:
            receiver.start()
            start = time.monotonic()
            for ref in range(1, MESSAGES + 1):
                terminal.message(ref)
                if ref == int(RATE):  # a second into the storm, without warning
                    first.kill()
                    killed_at = time.monotonic()
                    with terminal.lock:
                        acked_before_kill = set(terminal.acked_at)
                    break
                time.sleep(max(0.0, start + ref / RATE - time.monotonic()))
        # The same port and log: the terminal's retries go to the new process.
        with start_handler(fresh_postgres_url, log, command=command, port=port, env=JSON_LOG):
            back_after = time.monotonic() - killed_at
            for ref in range(int(RATE) + 1, MESSAGES + 1):  # the storm goes on
                terminal.message(ref)
                time.sleep(1 / RATE)
            deadline = time.monotonic() + 60
            while len(terminal.acked_at) < MESSAGES and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        terminal.stop.set()
        receiver.join(5)
    with Session(engine) as session:
        alarms = session.scalars(
            select(Alarm).where(Alarm.source == AlarmSource.SCAIP, Alarm.terminal_id == terminal_id)
        ).all()
        refs = [str(a.raw.get("ref")) for a in alarms]
        stored = session.scalar(select(func.count(Alarm.id)))
    engine.dispose()
    print(f"acked before the kill: {len(acked_before_kill)}; back after {back_after:.1f} s")
    assert acked_before_kill, "the kill came before any acknowledgement: the test proves nothing"
    assert len(terminal.acked_at) == MESSAGES, log.read_text()[-3000:]
    assert len(refs) == len(set(refs)) == MESSAGES == stored  # every one, each once
    # What the first process acknowledged was committed before it died.
    assert {terminal.ref_of[c] for c in acked_before_kill} <= set(refs)
    assert back_after < 10.0
