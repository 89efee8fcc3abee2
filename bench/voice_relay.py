"""How much delay the voice bridge adds: elder → centre → operator's phone, on loopback.

    .venv/bin/python bench/voice_relay.py [--onsets 30] [--silence-ms 300] [--tone-ms 200]
        [--tone-hz 440] [--rtp-ports 27000-27998]

An SOS call from a raw-socket terminal, an operator desk phone (tests/sip/sip_phone.py), the
request made through the voice_calls table; then ``--onsets`` tone onsets (``--silence-ms`` of
silence, ``--tone-ms`` of a ``--tone-hz`` sine) sent as RTP by the terminal, and the time until
each onset is heard at the phone. `hyt sip` runs as its own process on a fresh SQLite database
in a temporary directory; ``--rtp-ports`` is the range it takes its media ports from.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.* is not installed
os.environ.setdefault("HYT_ENV", "test")
os.environ.setdefault("HYT_SECRET_KEY", "test-secret-key-0123456789-abcdefghijklmnop")

from aiortp.codecs.g711 import PcmuCodec
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from callcenter import db, migrate, voice_calls
from callcenter.console import claim_alarm
from callcenter.models import Alarm, Operator, Role
from callcenter.settings import Settings
from callcenter.voice_models import VoiceCall, VoiceCallState
from callcenter.web.auth import add_user
from devices.models import TerminalProtocol
from tests.factories import make_elder, make_terminal
from tests.sip.conftest import options_status
from tests.sip.raw import RawSip, sdp_offer
from tests.sip.sip_phone import FakePhone
from tests.sip.sipp import free_udp_port

ROOT = Path(__file__).resolve().parents[1]
LOUD = 3000  # peak sample (of 32767) above which a frame counts as tone; silence is exact zero
AMPLITUDE = 9000  # of the terminal's tone
FRAME_S = 0.02  # 20 ms of PCMU at 8 kHz per RTP packet (RFC 3551 §4.5.14)
FRAME_SAMPLES = 160
SSRC = 0xE1DE
STATE_TIMEOUT_S = 30.0


class TimedPhone(FakePhone):
    """The desk phone, noting the moment each silence → tone edge arrives."""

    def __post_init__(self) -> None:
        self.onsets: list[float] = []  # before the listening thread starts
        super().__post_init__()

    def _listen(self) -> None:
        codec = PcmuCodec()
        self.rtp.settimeout(0.1)
        loud = False
        while not self._stop.is_set():
            try:
                data = self.rtp.recv(2048)
            except (TimeoutError, OSError):
                continue
            if len(data) > 12 and data[1] & 0x7F == 0:
                pcm = codec.decode(data[12:])
                peak = max(
                    abs(int.from_bytes(pcm[i : i + 2], "little", signed=True))
                    for i in range(0, len(pcm), 2)
                )
                if peak > LOUD and not loud:
                    self.onsets.append(time.monotonic())
                loud = peak > LOUD


def seed(engine: Engine, phone_uri: str) -> tuple[str, int]:
    """One elder with an extension terminal, one operator whose desk phone is ``phone_uri``;
    returns (the terminal's SIP user, the operator's id)."""
    with Session(engine) as s:
        terminal = make_terminal(s, make_elder(s), TerminalProtocol.EXTENSION)
        op = add_user(s, username="op", password="correct horse battery", role=Role.OPERATOR)
        op.sip_uri = phone_uri
        s.commit()
        if terminal.sip_user is None:
            raise RuntimeError("the factory's extension terminal has no SIP user")
        return terminal.sip_user, op.id


def start_handler(
    url: str, workdir: Path, rtp_ports: tuple[int, int]
) -> tuple[subprocess.Popen[bytes], int]:
    """`hyt sip` on ``url``, answering OPTIONS; returns (the process, its SIP port)."""
    port = free_udp_port()
    env = {
        **os.environ,
        "HYT_DATABASE_URL": url,
        "HYT_SIP_PORT": str(port),
        "HYT_SCAIP_PORT": str(free_udp_port()),
        "HYT_VOICE_HOLD_REMINDER_S": "0",
        "HYT_RECORDINGS_DIR": str(workdir / "rec"),
        "HYT_RTP_PORT_LOW": str(rtp_ports[0]),
        "HYT_RTP_PORT_HIGH": str(rtp_ports[1]),
    }
    log = workdir / "log"
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "callcenter", "sip"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while options_status("127.0.0.1", port, 0.5) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError(f"handler did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    return proc, port


def place_sos_call(sip: RawSip, user: str, rtp_port: int) -> int:
    """INVITE to 110 from the terminal, ACK the answer; returns the centre's media port."""
    sip.request(
        "INVITE",
        user=user,
        dialled="110",
        body=sdp_offer(rtp_port),
        content_type="application/sdp",
    )
    responses = sip.responses(timeout=10)
    if not responses or responses[-1].status != 200:
        got = responses[-1].text if responses else "nothing"
        raise RuntimeError(f"the SOS INVITE was not answered with 200: {got}")
    final = responses[-1]
    to_tag = re.search(r";tag=([^;\s]+)", final.header("To"))
    media = re.search(r"^m=audio (\d+)", final.text.split("\r\n\r\n", 1)[1], re.M)
    if to_tag is None or media is None:
        raise RuntimeError(f"the centre's 200 has no To tag or no audio line: {final.text}")
    sip.request("ACK", user=user, dialled="110", to_tag=to_tag.group(1))
    return int(media.group(1))


def wait_for_state(engine: Engine, vid: int, done: Callable[[VoiceCallState], bool]) -> None:
    """Poll the voice_calls row (as the handler does: it is another process) until ``done``."""
    deadline = time.monotonic() + STATE_TIMEOUT_S
    while True:
        with Session(engine) as s:
            row = s.get(VoiceCall, vid)
            if row is None:
                raise RuntimeError(f"voice call {vid} disappeared")
            state = row.state
        if done(state):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"voice call {vid} still {state} after {STATE_TIMEOUT_S:.0f} s")
        time.sleep(0.01)


def connect_operator(
    engine: Engine, url: str, phone: TimedPhone, op_id: int
) -> tuple[float, float]:
    """Claim the alarm and ask for the voice call; returns the seconds until a handler took the
    request and until the call was connected (the phone answers at once)."""
    db.use_engine(engine)
    settings = Settings(database_url=url)
    with Session(engine) as s:
        alarm_id = s.query(Alarm.id).one()[0]
        claim_alarm(s, alarm_id=alarm_id, operator_id=op_id)
        s.commit()
        operator = s.get(Operator, op_id)
        if operator is None:
            raise RuntimeError(f"operator {op_id} disappeared")
        asked = time.monotonic()
        row = voice_calls.request_voice_call(
            s, alarm_id=alarm_id, operator=operator, settings=settings
        )
        s.commit()
        vid = row.id
    wait_for_state(engine, vid, lambda state: state is not VoiceCallState.REQUESTED)
    taken = time.monotonic() - asked
    phone.answered.wait(5)
    wait_for_state(engine, vid, lambda state: state is VoiceCallState.CONNECTED)
    connected = time.monotonic() - asked
    return taken, connected


def tone_frame(codec: PcmuCodec, loud: bool, n: int, hz: float) -> bytes:
    """The ``n``-th 20 ms frame of the sine (all zero when not ``loud``), μ-law encoded."""
    amplitude = AMPLITUDE if loud else 0
    return codec.encode(
        b"".join(
            struct.pack(
                "<h",
                int(amplitude * math.sin(2 * math.pi * hz * (n * FRAME_SAMPLES + i) / 8000)),
            )
            for i in range(FRAME_SAMPLES)
        )
    )


def send_onsets(
    rtp: socket.socket,
    media: tuple[str, int],
    *,
    onsets: int,
    silent_frames: int,
    loud_frames: int,
    hz: float,
) -> list[float]:
    """Send ``onsets`` bursts of silence then tone, paced in real time; returns the moment
    each tone began to be sent."""
    codec = PcmuCodec()
    seq = ts = n = 0
    sent: list[float] = []
    next_at = time.monotonic()
    for _ in range(onsets):
        for k in range(silent_frames + loud_frames):
            loud = k >= silent_frames
            if loud and k == silent_frames:
                sent.append(time.monotonic())
            header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts, SSRC)
            rtp.sendto(header + tone_frame(codec, loud, n, hz), media)
            seq += 1
            ts += FRAME_SAMPLES
            n += 1
            next_at += FRAME_S
            time.sleep(max(0, next_at - time.monotonic()))
    return sent


def one_way_delays(sent: list[float], heard: list[float]) -> list[float]:
    """Milliseconds from each sent onset to the first onset heard after it."""
    delays = [min((o - s) * 1000 for o in heard if o > s) for s in sent if heard and heard[-1] > s]
    if not delays:
        raise RuntimeError(f"no onset was heard at the phone ({len(sent)} sent)")
    return delays


def port_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        return int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH, got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--onsets", type=int, default=30, help="tone onsets to time")
    parser.add_argument("--silence-ms", type=int, default=300, help="silence before each tone")
    parser.add_argument("--tone-ms", type=int, default=200, help="length of each tone")
    parser.add_argument("--tone-hz", type=float, default=440.0, help="the terminal's tone")
    parser.add_argument(
        "--rtp-ports", type=port_range, default=(27000, 27998), help="the handler's RTP range"
    )
    args = parser.parse_args()
    frame_ms = round(FRAME_S * 1000)
    silent_frames, loud_frames = args.silence_ms // frame_ms, args.tone_ms // frame_ms
    if args.onsets < 1 or silent_frames < 1 or loud_frames < 1:
        parser.error(f"need at least one onset and {frame_ms} ms of silence and of tone")

    with tempfile.TemporaryDirectory(prefix="hyt-voice-relay-") as tmp:
        workdir = Path(tmp)
        url = f"sqlite:///{workdir / 'm.db'}"
        engine = db.make_engine(url)
        migrate.upgrade(engine)
        phone = TimedPhone(tone_hz=1000)
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        proc: subprocess.Popen[bytes] | None = None
        sip: RawSip | None = None
        try:
            user, op_id = seed(engine, phone.uri)
            proc, port = start_handler(url, workdir, args.rtp_ports)
            sip = RawSip(("127.0.0.1", port))
            media = place_sos_call(sip, user, rtp.getsockname()[1])
            taken, connected = connect_operator(engine, url, phone, op_id)
            sent = send_onsets(
                rtp,
                ("127.0.0.1", media),
                onsets=args.onsets,
                silent_frames=silent_frames,
                loud_frames=loud_frames,
                hz=args.tone_hz,
            )
            time.sleep(0.5)
            delays = one_way_delays(sent, phone.onsets)
            print(
                f"request taken by the handler (separate process, polling): "
                f"{taken * 1000:.0f} ms; connected (phone answered at once): "
                f"{connected * 1000:.0f} ms"
            )
            print(
                f"onsets sent {len(sent)}, heard {len(phone.onsets)}; one-way delay "
                f"elder→operator ms: median {statistics.median(delays):.0f}, "
                f"p90 {sorted(delays)[int(0.9 * len(delays))]:.0f}, "
                f"min {min(delays):.0f}, max {max(delays):.0f}"
            )
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
            if sip is not None:
                sip.close()
            rtp.close()
            phone.close()
            engine.dispose()


if __name__ == "__main__":
    main()
