"""The SIP edge (deploy/kamailio/kamailio.cfg) in front of two real call handlers.

One Kamailio, started in the foreground with the project's configuration, two ``hyt sip``
processes behind it (same fresh PostgreSQL database, seeded terminals), and SIPp as the
terminals: digest REGISTER, calls with RFC 2833 digits, a SCAIP MESSAGE, OPTIONS, and the loss
of one handler. Every alarm is checked in the database: stored once, with the right elder and
kind.

Kamailio listens on 127.0.0.2 (loopback): the handlers run with ``HYT_SIP_REGISTRAR`` set to
that address, so a terminal (127.0.0.1) cannot reach them past the edge.

The fixture is module-scoped per backend and the failover test kills a handler: it comes last.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from callcenter import db
from callcenter.models import Alarm, AlarmKind
from devices.models import TerminalProtocol
from tests.conftest import _fresh_postgres
from tests.factories import make_elder, make_terminal
from tests.sip.handler_process import Handler, options_status, start_handler, stop
from tests.sip.raw import RawSip
from tests.sip.sipp import SippResult, call_scenario, free_port_pair, run_sipp

BACKENDS = ["aiosipua", "pyvoip"]
ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "deploy" / "kamailio" / "kamailio.cfg"
EDGE_IP = "127.0.0.2"  # loopback, but not the terminals' address: HYT_SIP_REGISTRAR can tell
REALM = "huyuantong-test"
SEEDED = {TerminalProtocol.DTMF: 16, TerminalProtocol.SCAIP: 4}  # one per use, see Edge.terminal
START_TIMEOUT_S = 30.0

pytestmark = pytest.mark.slow


# -- the processes -------------------------------------------------------------------------------
# The handlers are tests/sip/handler_process.py's (bench/storm_edge.py takes Handler and stop
# from here).


@dataclass
class Terminal:
    user: str
    password: str
    elder_id: int
    terminal_id: int


@dataclass
class Edge:
    backend: str
    port: int
    engine: Engine
    handlers: list[Handler]
    kamailio: subprocess.Popen[bytes]
    log: Path
    folder: Path
    terminals: dict[TerminalProtocol, list[Terminal]]
    # A socket listed as a handler (set 9, disabled: never dispatched to nor probed): it
    # sends what a broken handler sends, to check the edge's defences against it.
    fake_handler: socket.socket
    _used: set[str] = field(default_factory=set)

    @property
    def address(self) -> tuple[str, int]:
        return (EDGE_IP, self.port)

    def terminal(self, protocol: TerminalProtocol) -> Terminal:
        """A terminal no earlier test has used: its alarms are this test's alone."""
        for terminal in self.terminals[protocol]:
            if terminal.user not in self._used:
                self._used.add(terminal.user)
                return terminal
        raise RuntimeError(f"seed more {protocol} terminals")

    def logs(self) -> str:
        """Kamailio's log and the handlers' tails, for a failing assertion's message."""
        parts = [f"--- kamailio ---\n{self.log.read_text(errors='replace')[-6000:]}"]
        for h in self.handlers:
            parts.append(f"--- handler {h.port} ---\n{h.log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


def kamailio_binary() -> str:
    path = shutil.which("kamailio") or next(
        (p for p in ("/usr/sbin/kamailio", "/sbin/kamailio") if Path(p).exists()), None
    )
    if path is None:
        pytest.fail(
            "kamailio is not installed: the SIP edge tests need it. Install it with "
            "scripts/system-deps.sh (Debian package `kamailio`, 5.6).",
            pytrace=False,
        )
    return path


def free_edge_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((EDGE_IP, 0))
        port: int = s.getsockname()[1]
        return port


def ha1(user: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{user}:{realm}:{password}".encode(), usedforsecurity=False).hexdigest()


def subscriber_row(row_id: int, user: str, password: str) -> str:
    """One terminal in the DBText `subscriber` table (every column but `password` is needed:
    one bad row and the edge cannot read the table at all)."""
    by_domain = ha1(f"{user}@{REALM}", REALM, password)
    return f"{row_id}:{user}:{REALM}::{ha1(user, REALM, password)}:{by_domain}\n"


def write_credentials(folder: Path, terminals: list[Terminal]) -> None:
    """The DBText tables of deploy/kamailio/README.md: HA1 hashes, no passwords."""
    folder.mkdir()
    (folder / "version").write_text(
        "id(int,auto) table_name(string) table_version(int) \n1:subscriber:7\n"
    )
    (folder / "subscriber").write_text(
        "id(int,auto) username(string) domain(string) password(string,null) ha1(string) "
        "ha1b(string) \n"
        + "".join(subscriber_row(i, t.user, t.password) for i, t in enumerate(terminals, 1))
    )


def seed(engine: Engine) -> dict[TerminalProtocol, list[Terminal]]:
    seeded: dict[TerminalProtocol, list[Terminal]] = {}
    with Session(engine) as s:
        for protocol, count in SEEDED.items():
            for _ in range(count):
                elder = make_elder(s)
                terminal = make_terminal(s, elder, protocol)
                user = terminal.sip_user or ""
                password = hashlib.sha256(user.encode()).hexdigest()[:12]
                seeded.setdefault(protocol, []).append(
                    Terminal(user, password, elder.id, terminal.id)
                )
        s.commit()
    return seeded


def start_kamailio(
    folder: Path,
    handlers: list[Handler],
    fake_handler: int,
    port: int,
    overrides: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``overrides``: kamailio.cfg defines (README.md) in place of these tests' own."""
    binary = kamailio_binary()
    dispatcher = folder / "dispatcher.list"
    dispatcher.write_text(
        "# setid destination flags priority attributes\n"
        # As deploy/kamailio/dispatcher.list.example: sets 1 and 2 probed (flag 8), their
        # last-resort copies 11 and 12 not.
        + "".join(f"1 {h.uri} 8 0\n" for h in handlers)
        + "".join(f"2 sip:127.0.0.1:{h.scaip_port} 8 0\n" for h in handlers)
        + "".join(f"11 {h.uri} 0 0\n" for h in handlers)
        + "".join(f"12 sip:127.0.0.1:{h.scaip_port} 0 0\n" for h in handlers)
        + f"9 sip:127.0.0.1:{fake_handler} 4 0\n"  # 4: disabled, never probed
    )
    run_dir = folder / "run"
    run_dir.mkdir()
    defines = {
        "LISTEN_IP": EDGE_IP,
        "SIP_PORT": str(port),
        "DISPATCHER_LIST": f'"{dispatcher}"',
        "AUTH_DB_URL": f'"text://{folder / "credentials"}"',
        "AUTH_REALM": f'"{REALM}"',
        "DS_PING_INTERVAL": "1",
        "CHILDREN": "2",
        **(overrides or {}),
    }
    cmd = [binary, "-f", str(CONFIG), "-DD", "-E", "-Y", str(run_dir),
           "-P", str(run_dir / "kamailio.pid"), "-m", "64", "-M", "8"]  # fmt: skip
    for name, value in defines.items():
        cmd += ["-A", f"{name}={value}"]
    log = folder / "kamailio.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while options_status(EDGE_IP, port, 0.5) != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"kamailio did not start:\n{log.read_text()[-4000:]}")
    return proc


@pytest.fixture(scope="module", params=BACKENDS)
def edge(
    request: pytest.FixtureRequest,
    postgres_template: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Edge]:
    folder = tmp_path_factory.mktemp(f"edge-{request.param}")
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(contextlib.contextmanager(_fresh_postgres)(postgres_template))
        engine = db.make_engine(url)
        stack.callback(engine.dispose)
        terminals = seed(engine)
        write_credentials(folder / "credentials", [t for ts in terminals.values() for t in ts])
        rtp = free_port_pair()
        rtp_low = max(21000, rtp - rtp % 1000)
        handlers: list[Handler] = []
        for i in range(2):
            low = rtp_low + 200 * i
            handlers.append(stack.enter_context(start_handler(
                url, folder / f"handler-{i}.log", backend=request.param, rtp=(low, low + 198),
                registrar=EDGE_IP, env={"HYT_LIFE_SAFETY_HOLD_S": "15"},
            )))  # fmt: skip
        fake = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        fake.bind(("127.0.0.1", 0))
        port = free_edge_port()
        kamailio = start_kamailio(folder, handlers, fake.getsockname()[1], port)
        stack.callback(stop, kamailio)
        yield Edge(request.param, port, engine, handlers, kamailio, folder / "kamailio.log",
                   folder, terminals, fake)  # fmt: skip


# -- SIPp terminals that register first ----------------------------------------------------------

REGISTER = """
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@[remote_ip]:[remote_port]>;tag=[pid]R[call_number]
      To: <sip:{user}@[remote_ip]:[remote_port]>
      Call-ID: reg///[call_id]
      CSeq: {cseq} REGISTER
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Expires: 300
      Max-Forwards: 70
{auth}      Content-Length: 0
"""


def _send(text: str) -> str:
    return f'<send retrans="500"><![CDATA[\n{text}\n    ]]></send>'


def register_steps(user: str, password: str, *, expect: int = 200) -> str:
    """REGISTER, the 401 challenge, REGISTER with digest credentials, then ``expect``."""
    auth = f"      [authentication username={user} password={password}]\n"
    return "\n  ".join([
        _send(REGISTER.format(user=user, cseq=1, auth="")),
        '<recv response="401" auth="true"/>',
        _send(REGISTER.format(user=user, cseq=2, auth=auth)),
        f'<recv response="{expect}"/>',
    ])  # fmt: skip


def registered_first(scenario: str, terminal: Terminal) -> str:
    """``scenario`` (from tests/sip/sipp.py) preceded by the terminal's registration."""
    head = '<scenario name="hyt-terminal">\n'
    assert head in scenario
    steps = register_steps(terminal.user, terminal.password)
    return scenario.replace(head, f"{head}  {steps}\n  ", 1)


def alone(steps: str) -> str:
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
        f'<scenario name="hyt-edge">\n  {steps}\n</scenario>\n'
    )


SCAIP = """
      MESSAGE sip:centre@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@[local_ip]:[local_port]>;tag=[pid]S[call_number]
      To: <sip:centre@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: {cseq} MESSAGE
      Max-Forwards: 70
{auth}      Content-Type: application/scaip+xml
      Content-Length: [len]

      {mrq}"""
# An alarm (mty ME) with status code 0010: a life-safety press, as in test_conformance.py.
MRQ = (
    '<?xml version="1.0" encoding="UTF-8"?><mrq><ref>{ref}</ref><cid>{user}</cid>'
    "<dty>0003</dty><mty>ME</mty><stc>010</stc></mrq>"
)
OK_TO_MESSAGE = """
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
"""


def scaip_with_proxy_auth(terminal: Terminal, ref: str) -> str:
    """A SCAIP terminal that does not register: 407, the MESSAGE again with credentials, 200,
    then the centre's <mrs> (snu 0: stored), which it answers 200."""
    auth = f"      [authentication username={terminal.user} password={terminal.password}]\n"
    mrq = MRQ.format(ref=ref, user=terminal.user)
    mrs = (
        '<action><ereg regexp="&lt;mrs&gt;.*&lt;snu&gt;0&lt;/snu&gt;" search_in="body" '
        'check_it="true" assign_to="mrs"/></action>'
    )
    steps = [
        _send(SCAIP.format(user=terminal.user, mrq=mrq, cseq=1, auth="")),
        '<recv response="407" auth="true"/>',
        _send(SCAIP.format(user=terminal.user, mrq=mrq, cseq=2, auth=auth)),
        '<recv response="200" rtd="true"/>',
        f'<recv request="MESSAGE">{mrs}</recv>',
        f"<send><![CDATA[\n{OK_TO_MESSAGE}\n    ]]></send>",
        '<Reference variables="mrs"/>',
    ]
    return alone("\n  ".join(steps))


# -- what the database says ----------------------------------------------------------------------


def alarms_of(edge: Edge, terminal: Terminal, *, count: int = 1, wait_s: float = 10) -> list[Alarm]:
    deadline = time.monotonic() + wait_s
    while True:
        with Session(edge.engine) as s:
            alarms = list(
                s.scalars(
                    select(Alarm)
                    .where(Alarm.terminal_id == terminal.terminal_id)
                    .order_by(Alarm.id)
                )
            )
        if len(alarms) >= count or time.monotonic() > deadline:
            return alarms
        time.sleep(0.1)


def acknowledged(edge: Edge, alarm_id: int, wait_s: float = 5) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        with Session(edge.engine) as s:
            alarm = s.get(Alarm, alarm_id)
            if alarm is not None and alarm.acknowledged_at is not None:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def handler_of_call(edge: Edge, user: str) -> list[str]:
    """The handlers the edge sent this terminal's INVITEs to, in order (from its log)."""
    text = edge.log.read_text(errors="replace")
    return re.findall(rf"(?:dispatch|last resort|failover) INVITE from {user} to (sip:\S+)", text)


def sipp(edge: Edge, scenario: str, timeout_s: float = 40) -> SippResult:
    """Run a terminal against the edge. A stray message does not abort the call (a missing one
    still fails it): over UDP, a proxy with several workers may pass on a duplicate 180 after
    the 200 (its answer to a re-sent INVITE racing the 200), which a terminal ignores (RFC 3261
    §17.1.1.2); SIPp would abort on it. Seen once here, with the machine under load."""
    return run_sipp(
        scenario,
        edge.address,
        timeout_s=timeout_s,
        extra_args=["-default_behaviors", "all,-abortunexp"],
    )


# -- the tests -----------------------------------------------------------------------------------


def test_options_are_answered_by_the_edge_itself(edge: Edge) -> None:
    raw = RawSip(edge.address)
    try:
        raw.request("OPTIONS")
        (response,) = raw.responses()
    finally:
        raw.close()
    assert response.status == 200
    assert response.header("Server") == "HuYuanTong SIP edge", response.text
    assert "MESSAGE" in response.header("Allow")
    # Anything but a call or an alarm message is refused at the edge, not passed on.
    raw = RawSip(edge.address)
    try:
        raw.request("SUBSCRIBE", extra="Event: presence")
        final = raw.responses()[-1]
    finally:
        raw.close()
    assert final.status == 405 and "INVITE" in final.header("Allow"), final.text


def test_handlers_take_requests_only_from_the_edge(edge: Edge) -> None:
    # HYT_SIP_REGISTRAR: the edge's probes are answered, a terminal going round it is not.
    for handler in edge.handlers:
        assert options_status("127.0.0.1", handler.port, source=EDGE_IP) == 200
        assert options_status("127.0.0.1", handler.port, source="127.0.0.1") == 403


def test_register_needs_the_right_password(edge: Edge) -> None:
    terminal = edge.terminal(TerminalProtocol.DTMF)
    wrong = alone(register_steps(terminal.user, terminal.password + "x", expect=401))
    result = sipp(edge, wrong)
    assert result.ok, result.output + edge.logs()
    right = alone(register_steps(terminal.user, terminal.password))
    result = sipp(edge, right)
    assert result.ok, result.output + edge.logs()
    # Someone else's credentials do not register this terminal.
    other = edge.terminal(TerminalProtocol.DTMF)
    borrowed = alone(register_steps(terminal.user, other.password, expect=401))
    assert sipp(edge, borrowed).ok


def test_a_terminal_provisioned_while_the_edge_runs_can_register(edge: Edge) -> None:
    # deploy/kamailio/README.md: a line added to the credentials file, no restart.
    table = edge.folder / "credentials" / "subscriber"
    user, password = "ft-new-0001", "fresh-secret"
    staged = table.with_suffix(".new")
    staged.write_text(table.read_text() + subscriber_row(999, user, password))
    staged.replace(table)
    later = table.stat().st_mtime + 1  # a different mtime even within the edge's last second
    os.utime(table, (later, later))
    result = sipp(edge, alone(register_steps(user, password)))
    assert result.ok, result.output + edge.logs()


def test_a_call_from_elsewhere_in_a_terminals_name_is_challenged(edge: Edge) -> None:
    # The terminal registers (from SIPp's address); a call in its name from another address
    # without credentials gets a 407 and never reaches a handler.
    terminal = edge.terminal(TerminalProtocol.DTMF)
    assert sipp(edge, alone(register_steps(terminal.user, terminal.password))).ok
    raw = RawSip(edge.address)
    try:
        raw.request("INVITE", user=terminal.user, body="v=0\n", content_type="application/sdp")
        final = raw.responses()[-1]
    finally:
        raw.close()
    assert final.status == 407, final.text
    assert f'realm="{REALM}"' in final.header("Proxy-Authenticate")
    assert handler_of_call(edge, terminal.user) == []
    assert alarms_of(edge, terminal, wait_s=0.5) == []


def test_service_press_through_the_edge_centre_hangs_up(edge: Edge) -> None:
    # The centre's BYE goes through the edge to the terminal (Route set from Record-Route).
    terminal = edge.terminal(TerminalProtocol.DTMF)
    scenario = registered_first(call_scenario(user=terminal.user, digits="2"), terminal)
    result = sipp(edge, scenario)
    assert result.ok, result.output + edge.logs()
    (alarm,) = alarms_of(edge, terminal)
    assert (alarm.kind, alarm.elder_id) == (AlarmKind.SERVICE, terminal.elder_id)
    assert alarm.event_code == "2"
    assert acknowledged(edge, alarm.id), edge.logs()  # the prompt was played before the BYE
    assert alarm.raw["source"].startswith(f"{EDGE_IP}:")  # it came through the edge


def test_sos_press_through_the_edge_caller_hangs_up(edge: Edge) -> None:
    # ACK and BYE from the terminal carry the Route learnt from the 200's Record-Route.
    terminal = edge.terminal(TerminalProtocol.DTMF)
    call = call_scenario(user=terminal.user, digits="1#", hangup="caller", hold_ms=2000)
    result = sipp(edge, registered_first(call, terminal))
    assert result.ok, result.output + edge.logs()
    (alarm,) = alarms_of(edge, terminal)
    assert (alarm.kind, alarm.elder_id) == (AlarmKind.LIFE_SAFETY, terminal.elder_id)
    # The terminal's ACK and BYE had a Route: the 180/200 carried a Record-Route (copied by
    # the handler, or added by the edge: measure 2), not the edge's Route-less fallback.
    assert "relayed to handler" not in edge.log.read_text(), edge.logs()


def test_calls_are_spread_over_both_handlers(edge: Edge) -> None:
    terminals = [edge.terminal(TerminalProtocol.DTMF) for _ in range(2)]
    results = parallel(edge, [
        registered_first(call_scenario(user=t.user, digits="2"), t) for t in terminals
    ])  # fmt: skip
    assert all(r.ok for r in results), "\n".join(r.output for r in results) + edge.logs()
    used = {handler_of_call(edge, t.user)[-1] for t in terminals}
    assert used == {h.uri for h in edge.handlers}, edge.logs()
    for t in terminals:
        (alarm,) = alarms_of(edge, t)
        assert (alarm.kind, alarm.elder_id) == (AlarmKind.SERVICE, t.elder_id)


def test_empty_supported_header_is_removed_at_the_edge(edge: Edge) -> None:
    terminal = edge.terminal(TerminalProtocol.DTMF)
    call = call_scenario(user=terminal.user, digits="2", extra_headers="Supported: \nRequire: ")
    result = sipp(edge, registered_first(call, terminal))
    assert result.ok, result.output + edge.logs()
    assert "empty Supported header removed" in edge.log.read_text()
    assert len(alarms_of(edge, terminal)) == 1


def test_scaip_message_through_the_edge_gets_200_then_mrs(edge: Edge) -> None:
    terminal = edge.terminal(TerminalProtocol.SCAIP)
    result = sipp(edge, scaip_with_proxy_auth(terminal, "41"))
    assert result.ok, result.output + edge.logs()
    (alarm,) = alarms_of(edge, terminal)
    assert (alarm.kind, alarm.elder_id, alarm.event_code) == (
        AlarmKind.LIFE_SAFETY,
        terminal.elder_id,
        "0010",
    )


def receive_sip(sock: socket.socket, first_line: str, timeout: float = 5) -> tuple[str, Any]:
    """The next datagram on ``sock`` starting with ``first_line`` (the edge's OPTIONS probes
    to the fake handler are skipped)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, source = sock.recvfrom(65535)
        except TimeoutError:
            break
        text = data.decode(errors="replace")
        if text.startswith(first_line):
            return text, source
    raise AssertionError(f"nothing starting {first_line!r} within {timeout} s")


def test_a_handlers_routeless_bye_reaches_the_terminal(edge: Edge) -> None:
    """Edge measure 1 (PYVOIP.md): pyVoIP's BYE had no Route and a copy of the INVITE's Via
    stack (the edge's Via on top). The edge relays it to the Request-URI and sends the answer
    back to where the BYE came from."""
    tag = uuid.uuid4().hex[:8]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as terminal:
        terminal.bind(("127.0.0.1", 0))
        tport = terminal.getsockname()[1]
        bye = (
            f"BYE sip:ft@127.0.0.1:{tport} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {EDGE_IP}:{edge.port};branch=z9hG4bK-copied-{tag}\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{tport};branch=z9hG4bK-invite-{tag}\r\n"
            f"From: <sip:centre@{EDGE_IP}>;tag=h{tag}\r\nTo: <sip:ft@127.0.0.1>;tag=t{tag}\r\n"
            f"Call-ID: {tag}@fake\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        # The edge's unanswered probes have been filling its receive buffer: empty it, or the
        # 200 would find no room.
        edge.fake_handler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                edge.fake_handler.recv(65535)
        edge.fake_handler.setblocking(True)
        edge.fake_handler.sendto(bye.encode(), edge.address)
        relayed, hop = receive_sip(terminal, "BYE sip:ft@127.0.0.1:")
        copied = [
            line
            for line in relayed.split("\r\n")
            if line.split(":", 1)[0] in {"Via", "From", "To", "Call-ID", "CSeq"}
        ]
        ok = "\r\n".join(["SIP/2.0 200 OK", *copied, "Content-Length: 0", "", ""])
        terminal.sendto(ok.encode(), hop)
    answer, _ = receive_sip(edge.fake_handler, "SIP/2.0 200")
    assert f"Call-ID: {tag}@fake" in answer
    assert "Route-less BYE from handler" in edge.log.read_text()


def parallel(edge: Edge, scenarios: list[str]) -> list[SippResult]:
    results: list[SippResult | None] = [None] * len(scenarios)

    def run(i: int) -> None:
        results[i] = sipp(edge, scenarios[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(scenarios))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r if r is not None else SippResult(-1, "thread failed") for r in results]


def dispatcher_flags(edge: Edge, set_id: int = 1) -> dict[str, str]:
    """URI → the dispatcher's state flags in a set ("AP": up, "IP": down, probed), via kamcmd
    on the edge's control socket."""
    kamcmd = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
    out = subprocess.run(
        [kamcmd, "-s", f"unix:{edge.folder / 'run' / 'kamailio_ctl'}", "dispatcher.list"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    for block in out.split("SET: {")[1:]:
        found = re.search(r"\bID: (\d+)", block)
        if found and int(found.group(1)) == set_id:
            return dict(re.findall(r"URI: (\S+)\s+FLAGS: (\S+)", block))
    return {}


def test_when_the_probes_say_all_are_down_a_call_is_still_tried(edge: Edge) -> None:
    """Both handlers stop answering (SIGSTOP: as an overloaded one looks to the probes) and are
    marked down. A call then goes to a last-resort handler (kamailio.cfg route[DISPATCH]) instead
    of getting 503; the handler, going again a second later, answers it well within
    FR_INVITE_FIRST. Before the last resort, the call got 503 at once."""
    all_in_state(edge, "A")  # both up first (a fresh edge starts them down until probed)
    for h in edge.handlers:
        h.proc.send_signal(signal.SIGSTOP)
    try:
        all_in_state(edge, "I")
        terminal = edge.terminal(TerminalProtocol.DTMF)
        result: list[SippResult] = []
        call = threading.Thread(target=lambda: result.append(sipp(edge, registered_first(
            call_scenario(user=terminal.user, digits="2"), terminal))))  # fmt: skip
        call.start()
        # Until the edge has routed the INVITE (or refused it): then it waits at a stopped
        # handler, both marked down.
        deadline = time.monotonic() + 20
        while f"INVITE from {terminal.user}" not in edge.log.read_text(errors="replace"):
            assert time.monotonic() < deadline, edge.logs()
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        for h in edge.handlers:
            h.proc.send_signal(signal.SIGCONT)
    call.join()
    assert result and result[0].ok, (result[0].output if result else "") + edge.logs()
    assert re.search(rf"last resort INVITE from {terminal.user} to sip:", edge.log.read_text())
    (alarm,) = alarms_of(edge, terminal)
    assert (alarm.kind, alarm.elder_id) == (AlarmKind.SERVICE, terminal.elder_id)
    all_in_state(edge, "A")  # the probes bring both back; the next test needs them


def all_in_state(edge: Edge, state: str, wait_s: float = 30) -> None:
    """Wait until the dispatcher has every handler of set 1 in ``state`` ("A" up, "I" down)."""
    deadline = time.monotonic() + wait_s
    while any(dispatcher_flags(edge).get(h.uri, "")[:1] != state for h in edge.handlers):
        assert time.monotonic() < deadline, (dispatcher_flags(edge), edge.logs())
        time.sleep(0.2)


def test_a_dead_handler_is_routed_around(edge: Edge) -> None:
    """Last in the module: one handler is killed for good."""
    dead, alive = edge.handlers
    dead.kill()
    killed_at = time.monotonic()

    # Two calls at once, straight away: round robin sends one of them to the dead handler
    # before any probe has noticed; the edge gives up on it after FR_INVITE_FIRST and fails
    # over to the live one.
    first = [edge.terminal(TerminalProtocol.DTMF) for _ in range(2)]
    results = parallel(edge, [
        registered_first(call_scenario(user=t.user, digits="2"), t) for t in first
    ])  # fmt: skip
    assert all(r.ok for r in results), "\n".join(r.output for r in results) + edge.logs()
    routes = [handler_of_call(edge, t.user) for t in first]
    assert [dead.uri, alive.uri] in routes, (routes, edge.logs())
    for t in first:
        (alarm,) = alarms_of(edge, t)
        assert (alarm.kind, alarm.elder_id) == (AlarmKind.SERVICE, t.elder_id)

    # Probing (OPTIONS every second) has the dead handler marked down: no more tries on it.
    deadline = killed_at + 15
    while dispatcher_flags(edge).get(dead.uri, "")[:1] != "I":
        assert time.monotonic() < deadline, (dispatcher_flags(edge), edge.logs())
        time.sleep(0.2)
    assert dispatcher_flags(edge)[alive.uri].startswith("A")

    later = [edge.terminal(TerminalProtocol.DTMF) for _ in range(3)]
    results = parallel(edge, [
        registered_first(call_scenario(user=t.user, digits="1#", hangup="caller",
                                       hold_ms=500), t)
        for t in later
    ])  # fmt: skip
    assert all(r.ok for r in results), "\n".join(r.output for r in results) + edge.logs()
    for t in later:
        assert handler_of_call(edge, t.user) == [alive.uri]
        (alarm,) = alarms_of(edge, t)
        assert (alarm.kind, alarm.elder_id) == (AlarmKind.LIFE_SAFETY, t.elder_id)

    # SCAIP alarms too reach the ingress that is left.
    scaip = edge.terminal(TerminalProtocol.SCAIP)
    result = sipp(edge, scaip_with_proxy_auth(scaip, "77"))
    assert result.ok, result.output + edge.logs()
    (alarm,) = alarms_of(edge, scaip)
    assert alarm.kind is AlarmKind.LIFE_SAFETY and alarm.elder_id == scaip.elder_id

    # The one left stops answering too: both look down. Two calls then go to the last-resort
    # copy, round robin, so one of them tries the dead handler first; after FR_INVITE_FIRST it
    # must go on to the live one (kamailio.cfg: the failure route walks the copy too), not 503.
    alive.proc.send_signal(signal.SIGSTOP)
    try:
        all_in_state(edge, "I")
        last = [edge.terminal(TerminalProtocol.DTMF) for _ in range(2)]
        outcome: list[list[SippResult]] = []
        calls = threading.Thread(target=lambda: outcome.append(parallel(edge, [
            registered_first(call_scenario(user=t.user, digits="2"), t) for t in last
        ])))  # fmt: skip
        calls.start()
        deadline = time.monotonic() + 20
        while not all(f"INVITE from {t.user}" in edge.log.read_text() for t in last):
            assert time.monotonic() < deadline, edge.logs()
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        alive.proc.send_signal(signal.SIGCONT)
    calls.join()
    assert outcome and all(r.ok for r in outcome[0]), (
        "\n".join(r.output for r in outcome[0]) if outcome else ""
    ) + edge.logs()
    assert sorted(len(handler_of_call(edge, t.user)) for t in last) == [1, 2]  # one failed over
    for t in last:
        assert handler_of_call(edge, t.user)[-1] == alive.uri
        (alarm,) = alarms_of(edge, t)
        assert (alarm.kind, alarm.elder_id) == (AlarmKind.SERVICE, t.elder_id)
