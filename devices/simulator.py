"""The terminal simulator: a real SIP user agent that presses a button on an elder's terminal.

Engineers, the demo and the tests use it to place real calls to the centre over UDP/RTP, the
way the field terminals do (docs/DOMAIN.md, "How button presses arrive"):

* :func:`press` places a call (INVITE, PCMU + RFC 4733 telephone-event) and then, by protocol,
  sends one button digit after the answer (DTMF terminals), or nothing because the dialled
  number told the button (extension terminals), or SIA DC-05 Contact ID messages after the
  receiver's handshake, waiting for each kiss-off. It listens to the centre's acknowledgement,
  holds the line if asked, and hangs up unless the centre did first.
* :func:`send_scaip` sends an SS 91100 ``<mrq>`` as a SIP MESSAGE and waits for the 200 and the
  centre's ``<mrs>`` reply MESSAGE.
* :func:`ping` asks the centre for OPTIONS (is it up?).

It is built on the same stack as the centre (aiosipua + aiortp) and reuses the centre's
:class:`~callcenter.sip.aiosipua_uas.CentreUAS` for what the library lacks: retransmitted
out-of-dialog requests (BYE, MESSAGE, OPTIONS) and answering the ``<mrs>`` MESSAGE. One call of
:func:`press` or :func:`send_scaip` is one user agent on its own UDP port, closed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import sys
import time
from array import array
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from aiortp import RTPSession
from aiortp.dtmf import DTMF_EVENTS, DtmfEvent
from aiosipua import (
    DialogState,
    IncomingCall,
    OutgoingCall,
    SipRequest,
    SipResponse,
    SipUAC,
    generate_branch,
    generate_call_id,
    generate_tag,
)
from aiosipua.sdp import SdpMessage
from aiosipua.sdp_negotiate import build_sdp
from aiosipua.transport import UdpSipTransport
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from callcenter.sip.aiosipua_uas import T1, CentreUAS, SipReply
from devices import contact_id as cid_codec
from devices.models import TerminalProtocol
from devices.scaip import STC_CANCEL, STC_MANUAL_ALARM, build_mrq
from devices.terminal_models import BUTTONS, known_models

USER_AGENT = "HuYuanTong-terminal-simulator"
SCAIP_CONTENT_TYPE = "application/scaip+xml"

PCMU = 0
TELEPHONE_EVENT_PT = 101  # what we offer; we send with whatever number the answer carries
SAMPLE_RATE = 8000
PACKET_S = 0.020  # one RTP packet per 20 ms (ptime 20)
SAMPLES_PER_PACKET = 160
# Our own RTP range, away from the centre's default 20000-29999 (same host in tests/demo).
RTP_PORT_LOW = 40000
RTP_PORT_HIGH = 49998

# Key pacing as a terminal presses a key: ~100 ms of tone, 50-100 ms between keys.
DIGIT_S = 0.100
DIGIT_GAP_S = (0.050, 0.100)
END_PACKETS = 3  # RFC 4733 §2.5.1.4: the final packet of an event is sent three times
DTMF_VOLUME = 10  # RFC 4733 §2.3.4: power level in -dBm0 (10 = -10 dBm0, a typical key)
AFTER_ANSWER_S = 0.3  # a DTMF terminal sends its digit shortly after the answer

# SIA DC-05 (Contact ID) timing, as a panel keeps it.
HANDSHAKE_WAIT_S = 3.0  # how long we listen for the receiver's handshake before sending anyway
AFTER_HANDSHAKE_S = 0.25  # a panel pauses a moment after the handshake before its first digit
BETWEEN_MESSAGES_S = 0.25  # and after each kiss-off before its next message
KISS_OFF_HZ = 1400.0
HANDSHAKE_HIGH_HZ = 2300.0
KISS_OFF_MIN_FRAMES = 20  # 400 ms of 1400 Hz: longer than the handshake's 100 ms 1400 Hz burst
HANDSHAKE_MIN_FRAMES = 2  # 40 ms of 2300 Hz
KISS_OFF_START_WAIT_S = 4.0  # after the last digit, for the centre to store and start the tone
KISS_OFF_RUN_WAIT_S = 1.5  # once the tone has begun, for it to reach 400 ms
TONE_GAP_S = 0.5  # arrival pause that separates two tones (messages are seconds apart)
TONE_SHARE = 0.6  # Goertzel power / frame energy above this: the frame is that tone
TONE_FLOOR_MS = 34_000.0  # mean square of a -45 dBFS frame: quieter frames are silence

# Listening to the centre's acknowledgement (prompt) after the press.
QUIET_S = 0.8  # no RTP for this long after audio: the prompt has ended
NO_AUDIO_S = 8.0  # no audio at all after the press for this long: stop listening
BYE_TIMEOUT = 8.0
INVITE_TIMEOUT_STATUS = 408  # our own "no final answer": RFC 3261 Timer B's outcome


# -- results ---------------------------------------------------------------------------------


@dataclass
class PressResult:
    """What happened on one simulated button press (one call)."""

    call_id: str = ""
    answered: bool = False
    status: int = 0  # final SIP status of the INVITE; 408 if none came in time
    digits_sent: str = ""  # every DTMF symbol sent, Contact ID messages included
    kiss_offs: int = 0  # DC-05 kiss-off tones heard (one per stored Contact ID message)
    centre_hung_up: bool = False
    duration_s: float = 0.0
    dialled: str = ""
    handshake_heard: bool = False  # DC-05 receiver handshake (Contact ID calls only)
    audio_s: float = 0.0  # seconds of audio the centre played to us
    messages: int = 0  # Contact ID messages sent (first attempts)


@dataclass
class ScaipResult:
    """The centre's answers to one SCAIP ``<mrq>``."""

    ref: str
    status: int = 0  # SIP status of the MESSAGE; 408 if none came in time
    snu: int | None = None  # from the <mrs>; None if no reply MESSAGE arrived
    mre: int | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.snu == 0


@dataclass(frozen=True)
class PressPlan:
    """What a button press sends, by protocol: the number dialled and what follows."""

    dialled: str = "centre"
    digits: str = ""
    contact_id: tuple[str, ...] = ()


# -- buttons ---------------------------------------------------------------------------------


def button_key(buttons: Mapping[str, str], button: str) -> str:
    """The key (digit or dialled number) of ``button`` in a button map; the first if several."""
    for key, name in buttons.items():
        if name == button:
            return key
    raise ValueError(f"the button map has no {button!r} button (it has {sorted(buttons)})")


def plan_press(
    protocol: TerminalProtocol,
    buttons: Mapping[str, str],
    button: str,
    *,
    account: str | None = None,
) -> PressPlan:
    """What a terminal of ``protocol`` sends when ``button`` is pressed.

    DTMF: the button's digit after the answer. Extension: the button's number is dialled.
    Contact ID (a pendant): SOS is event 101 "personal emergency", cancel its restore
    (qualifier 3); DC-05 has no service or consult event. SCAIP sends a MESSAGE instead:
    see :func:`scaip_for_button`.
    """
    if button not in BUTTONS:
        raise ValueError(f"unknown button {button!r}; expected one of {', '.join(BUTTONS)}")
    if protocol is TerminalProtocol.DTMF:
        return PressPlan(digits=button_key(buttons, button))
    if protocol is TerminalProtocol.EXTENSION:
        return PressPlan(dialled=button_key(buttons, button))
    if protocol is TerminalProtocol.CONTACT_ID:
        if not account:
            raise ValueError("a Contact ID terminal needs its account to build a message")
        if button not in ("sos", "cancel"):
            raise ValueError(f"a Contact ID pendant has no {button!r} button (only sos, cancel)")
        qualifier = cid_codec.QUALIFIER_RESTORE if button == "cancel" else cid_codec.QUALIFIER_NEW
        return PressPlan(contact_id=(cid_codec.encode(account, "101", qualifier=qualifier),))
    raise ValueError("a SCAIP terminal sends a SIP MESSAGE, not a call: use send_scaip")


def scaip_for_button(button: str) -> tuple[str, str]:
    """SS 91100 ``(mty, stc)`` for a SCAIP terminal's button: SOS is a manual alarm (ME 0010),
    cancel a reset (RE 0019)."""
    if button == "sos":
        return "ME", STC_MANUAL_ALARM
    if button == "cancel":
        return "RE", STC_CANCEL
    raise ValueError(f"a SCAIP terminal has no {button!r} button (only sos, cancel)")


# -- tone detection on the received audio ---------------------------------------------------


def tone_share(samples: array[int], freq: float, rate: int = SAMPLE_RATE) -> float:
    """Share of the frame's energy at ``freq`` (Goertzel): ~1 for a pure tone, ~0 otherwise.

    For a sine of amplitude A over N samples, the Goertzel power is (A·N/2)² and the frame
    energy N·A²/2, so power / (energy·N/2) is 1. 1400 and 2300 Hz fall on exact bins of a
    160-sample frame (50 Hz apart), so a 20 ms frame separates them cleanly.
    """
    n = len(samples)
    energy = float(sum(x * x for x in samples))
    if n == 0 or energy / n < TONE_FLOOR_MS:
        return 0.0
    coeff = 2.0 * math.cos(2.0 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return power / (energy * n / 2.0)


def pcm_samples(pcm: bytes) -> array[int]:
    """16-bit signed little-endian PCM (what aiortp's on_audio hands us) as samples."""
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


class ToneListener:
    """Watches the centre's audio, one 20 ms frame at a time: the DC-05 handshake (2300 Hz
    part), kiss-offs (1400 Hz for at least 400 ms), and when audio last arrived."""

    def __init__(self) -> None:
        self.frames = 0
        self.last_audio_at: float | None = None
        self.handshake_heard = False
        self.kiss_offs = 0
        self.last_kiss_tone_at: float | None = None
        self._kiss_run = 0
        self._high_run = 0

    def feed(self, pcm: bytes, now: float) -> None:
        self.frames += 1
        self.last_audio_at = now
        samples = pcm_samples(pcm)
        if tone_share(samples, KISS_OFF_HZ) >= TONE_SHARE:
            last = self.last_kiss_tone_at
            # A pause in arrival ends a tone: the centre sends no RTP between tones, and its RTP
            # timestamps run on without a gap, so only our clock tells two kiss-offs apart.
            if last is None or now - last > TONE_GAP_S:
                self._kiss_run = 0
            self._kiss_run += 1
            self.last_kiss_tone_at = now
            if self._kiss_run == KISS_OFF_MIN_FRAMES:  # count each tone once
                self.kiss_offs += 1
        else:
            self._kiss_run = 0
        if tone_share(samples, HANDSHAKE_HIGH_HZ) >= TONE_SHARE:
            self._high_run += 1
            if self._high_run >= HANDSHAKE_MIN_FRAMES:
                self.handshake_heard = True
        else:
            self._high_run = 0


# -- the user agent --------------------------------------------------------------------------


class _TerminalUA(CentreUAS):
    """The centre's UAS class, used from the other side: it retransmits our BYE/MESSAGE and
    answers the centre's MESSAGE. Also notes which INVITEs got any response (Timer A)."""

    def __init__(self, transport: UdpSipTransport, uac: SipUAC) -> None:
        super().__init__(transport, uac=uac, user_agent=USER_AGENT)
        self.client = uac  # the same object as ``uac``, typed without Optional
        self.invite_responded: set[str] = set()

    def _on_message(self, msg: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
        if isinstance(msg, SipResponse):
            cseq = msg.cseq
            if cseq is not None and cseq.method.upper() == "INVITE":
                self.invite_responded.add(msg.call_id or "")
        super()._on_message(msg, addr)


@contextlib.asynccontextmanager
async def _user_agent(local_host: str) -> AsyncIterator[_TerminalUA]:
    transport = UdpSipTransport(local_addr=(local_host, 0))
    uac = SipUAC(transport)
    ua = _TerminalUA(transport, uac)
    await ua.start()
    try:
        udp = transport._udp_transport  # private in aiosipua 0.7.1 (pinned): the bound port
        assert udp is not None
        bound = (local_host, int(udp.get_extra_info("sockname")[1]))
        # Via and Contact must carry the port the OS chose, not the 0 we asked for.
        ua.advertised_addr = uac.advertised_addr = bound
        yield ua
    finally:
        await ua.stop()


def _ports_free(host: str, port: int) -> bool:
    for p in (port, port + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, p))
            except OSError:
                return False
    return True


async def _open_rtp(host: str, remote: tuple[str, int]) -> tuple[RTPSession, int]:
    """An RTP session on a free even port (RTCP on the odd one above, RFC 3550 §11)."""
    for _ in range(50):
        port = random.randrange(RTP_PORT_LOW, RTP_PORT_HIGH, 2)
        # Probe both first: aiortp would leave the RTP socket open if only RTCP's bind failed.
        if not _ports_free(host, port):
            continue
        with contextlib.suppress(OSError):
            session = await RTPSession.create(
                local_addr=(host, port),
                remote_addr=remote,
                payload_type=PCMU,
                dtmf_payload_type=TELEPHONE_EVENT_PT,
                jitter_prefetch=0,  # hand us each frame at once: tones are timed by frames
            )
            return session, port
    raise OSError(f"no free RTP port pair in {RTP_PORT_LOW}-{RTP_PORT_HIGH + 1}")


def _telephone_event_pt(answer: SdpMessage | None) -> int:
    audio = answer.audio if answer else None
    for codec in audio.codecs if audio else []:
        if codec.encoding_name.lower() == "telephone-event":
            return codec.payload_type
    return TELEPHONE_EVENT_PT


async def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` every 20 ms (one audio frame) for up to ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + max(0.0, timeout)
    while not predicate():
        if loop.time() >= end:
            return False
        await asyncio.sleep(PACKET_S)
    return True


class _Call:
    """One simulated call: SIP dialog, RTP session and what we heard."""

    def __init__(self, ua: _TerminalUA, rtp: RTPSession, centre: tuple[str, int]) -> None:
        self.ua = ua
        self.rtp = rtp
        self.centre = centre
        self.loop = asyncio.get_running_loop()
        self.listener = ToneListener()
        self.hung_up = asyncio.Event()
        self.call: OutgoingCall | None = None
        self.reject_status = 0
        self.te_pt = TELEPHONE_EVENT_PT
        self.remote_rtp = centre
        # RTP clock for event timestamps: random start (RFC 3550 §5.1), advancing in real time.
        self._ts_base = random.getrandbits(32)
        self._ts_start = self.loop.time()
        rtp.on_audio = lambda pcm, _ts: self.listener.feed(pcm, self.loop.time())

    def on_bye(self, call: IncomingCall, _req: SipRequest) -> None:
        if self.call is not None and call.call_id == self.call.call_id:
            self.hung_up.set()

    def on_rejected(self, _call: OutgoingCall, status: int, _reason: str) -> None:
        self.reject_status = status

    def up(self) -> bool:
        return not self.hung_up.is_set()

    async def dial(self, from_uri: str, to_uri: str, offer: SdpMessage, deadline: float) -> int:
        """Send the INVITE, resending it until the centre responds at all (RFC 3261 Timer A),
        and wait for the final answer. Returns the final status (408: none in time)."""
        call = self.ua.client.send_invite(
            from_uri, to_uri, self.centre, sdp_offer=offer, user_agent=USER_AGENT
        )
        self.call = call
        call.on_rejected = self.on_rejected
        waiter = asyncio.ensure_future(call.wait_answered(timeout=max(0.0, deadline - self.now())))
        interval = T1
        try:
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=interval)
                if done:
                    break
                if call.call_id not in self.ua.invite_responded:
                    self.ua.transport.send(call.invite, self.centre)
                interval *= 2  # Timer A doubles without the T2 cap for INVITE (§17.1.1.2)
            waiter.result()
        except RuntimeError:  # 3xx-6xx: on_rejected has the status
            return self.reject_status or 500
        except TimeoutError:
            call.cancel(self.ua.client)  # still ringing: CANCEL (RFC 3261 §9.1)
            return INVITE_TIMEOUT_STATUS
        finally:
            waiter.cancel()
        self.te_pt = _telephone_event_pt(call.sdp_answer)
        address = call.sdp_answer.rtp_address if call.sdp_answer else None
        if address is not None:
            self.remote_rtp = address
            self.rtp.update_remote(address)
        return 200

    def now(self) -> float:
        return self.loop.time()

    def _rtp_timestamp(self) -> int:
        elapsed = int((self.now() - self._ts_start) * SAMPLE_RATE)
        return (self._ts_base + elapsed) & 0xFFFFFFFF

    async def send_digits(self, digits: str) -> str:
        """Send ``digits`` as RFC 4733 events paced like key presses (~100 ms of tone, then
        50-100 ms before the next key); returns what was sent."""
        sent = ""
        for index, digit in enumerate(digits):
            if not self.up():
                break
            last = index == len(digits) - 1
            await self._send_event(digit, 0.0 if last else random.uniform(*DIGIT_GAP_S))
            sent += digit
        return sent

    async def _send_event(self, digit: str, gap_s: float) -> None:
        """One key: the event for DIGIT_S, then return ``gap_s`` after the key was released."""
        event = DTMF_EVENTS.get(digit.upper())
        if event is None:
            raise ValueError(f"not a DTMF symbol: {digit!r}")
        sender = self.rtp._sender  # aiortp 0.8.0 (pinned); its send_dtmf bursts every packet
        assert sender is not None
        # RFC 4733 §2.5.1.2: one timestamp for the whole event, the time it began; a new one for
        # each key, else the receiver takes the next key as the same event (sipstack-api §6).
        timestamp = self._rtp_timestamp()
        packets = round(DIGIT_S / PACKET_S)
        start = self.now()

        async def at(offset: float) -> None:  # absolute schedule: a late wake-up does not drift
            await asyncio.sleep(max(0.0, start + offset - self.now()))

        def send(duration: int, *, end: bool, marker: bool) -> None:
            payload = DtmfEvent(event=event, end=end, volume=DTMF_VOLUME, duration=duration)
            sender.send_raw(
                self.te_pt, payload.serialize(), timestamp, marker=int(marker), addr=self.remote_rtp
            )

        # §2.5.1.2: marker on the first packet; an update every packet interval carries the
        # duration so far, in samples.
        for i in range(packets):
            send((i + 1) * SAMPLES_PER_PACKET, end=False, marker=i == 0)
            await at((i + 1) * PACKET_S)
        # §2.5.1.4: the end packet three times, one packet interval apart (inside the gap).
        for i in range(END_PACKETS):
            send(packets * SAMPLES_PER_PACKET, end=True, marker=False)
            if i < END_PACKETS - 1:
                await at(DIGIT_S + (i + 1) * PACKET_S)
        await at(DIGIT_S + max(gap_s, (END_PACKETS - 1) * PACKET_S))

    async def contact_id(self, messages: list[str], attempts: int, deadline: float) -> str:
        """SIA DC-05: wait for the handshake, send each message, wait for its kiss-off (retry
        up to ``attempts`` times without one), pause, send the next."""
        await _wait_until(
            lambda: self.listener.handshake_heard or not self.up(),
            min(HANDSHAKE_WAIT_S, deadline - self.now()),
        )
        await asyncio.sleep(AFTER_HANDSHAKE_S)
        sent = ""
        for message in messages:
            for _ in range(max(1, attempts)):
                if not self.up() or self.now() >= deadline:
                    return sent
                before = self.listener.kiss_offs
                sent += await self.send_digits(message)
                if await self._kiss_off_after(before, deadline):
                    break
            # The kiss-off must end before the next message (the receiver cannot hear us while
            # it sends); then the DC-05 inter-message pause.
            await _wait_until(self._kiss_tone_ended, KISS_OFF_RUN_WAIT_S)
            await asyncio.sleep(BETWEEN_MESSAGES_S)
        return sent

    def _kiss_tone_ended(self) -> bool:
        last = self.listener.last_kiss_tone_at
        return last is None or self.now() - last >= 5 * PACKET_S

    async def _kiss_off_after(self, before: int, deadline: float) -> bool:
        """Wait for a new kiss-off: up to 4 s for the tone to start (the centre stores the
        message first), then 1.5 s more for it to last 400 ms."""
        sent_at = self.now()
        while self.listener.kiss_offs <= before:
            last = self.listener.last_kiss_tone_at
            started = last is not None and last >= sent_at
            limit = sent_at + KISS_OFF_START_WAIT_S + (KISS_OFF_RUN_WAIT_S if started else 0.0)
            if not self.up() or self.now() >= min(limit, deadline):
                return False
            await asyncio.sleep(PACKET_S)
        return True

    async def listen(self, deadline: float) -> None:
        """Hear the centre's acknowledgement out: until its audio stops, or it hangs up."""
        start = self.now()
        heard_before = self.listener.frames

        def done() -> bool:
            if not self.up():
                return True
            last = self.listener.last_audio_at
            if self.listener.frames > heard_before and last is not None:
                return self.now() - last >= QUIET_S
            return self.now() - start >= NO_AUDIO_S

        await _wait_until(done, deadline - self.now())

    def abandon(self) -> None:
        """BYE (or CANCEL while ringing) once, without waiting, if the call is still on: the
        error and cancellation path."""
        call = self.call
        if call is None or not self.up():
            return
        if call.dialog.state == DialogState.CONFIRMED:
            call.hangup(self.ua.client)
        elif call.dialog.state == DialogState.EARLY:
            call.cancel(self.ua.client)

    async def hang_up(self) -> None:
        """BYE if the call is still up, retransmitted until answered (RFC 3261 §17.1.2)."""
        call = self.call
        if call is None or call.dialog.state != DialogState.CONFIRMED or not self.up():
            return
        bye = call.hangup(self.ua.client)
        if bye is not None:
            with contextlib.suppress(TimeoutError):
                await self.ua.request(bye, self.centre, timeout=BYE_TIMEOUT, already_sent=True)


# -- public API ------------------------------------------------------------------------------


async def press(
    centre: tuple[str, int],
    *,
    sip_user: str,
    button: str | None = None,
    model: str | None = None,
    account: str | None = None,
    digits: str | None = None,
    dialled: str = "centre",
    contact_id: list[str] | None = None,
    hold_s: float = 0.0,
    local_host: str = "127.0.0.1",
    timeout: float = 30.0,
    cid_attempts: int = 1,
) -> PressResult:
    """Press a button: call the centre from ``sip:<sip_user>@local_host`` and send the press.

    What is sent: ``digits`` (RFC 4733, after the answer), the number ``dialled``, and/or the
    Contact ID messages ``contact_id`` (after the DC-05 handshake). ``button`` with ``model``
    (a name in devices/terminal_models.toml) derives them from the model's button map
    (:func:`plan_press`; ``account`` for Contact ID).

    After the press the simulator listens until the centre's prompt ends (not after Contact ID:
    a DC-05 panel hangs up after its last kiss-off), then stays ``hold_s`` seconds more; a BYE
    from the centre ends the call at any point, else we send BYE. ``timeout`` bounds the call
    up to the end of listening; ``hold_s`` comes on top. ``cid_attempts``: DC-05 panels send a
    message up to 4 times until they hear a kiss-off.
    """
    messages = list(contact_id or [])
    if button is not None:
        if digits or messages:
            raise ValueError("button goes alone: the model's map says what it sends")
        terminal_model = known_models().get(model or "")
        if terminal_model is None:
            raise ValueError(f"button {button!r} needs a known terminal model, got {model!r}")
        plan = plan_press(terminal_model.protocol, terminal_model.buttons, button, account=account)
        digits, messages = plan.digits, list(plan.contact_id)
        dialled = plan.dialled if plan.dialled != "centre" else dialled
    for symbol in digits or "":
        if symbol.upper() not in DTMF_EVENTS:
            raise ValueError(f"not a DTMF symbol: {symbol!r}")

    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    result = PressResult(dialled=dialled)
    async with _user_agent(local_host) as ua:
        rtp, rtp_port = await _open_rtp(local_host, centre)
        sim = _Call(ua, rtp, centre)
        ua.on_bye = sim.on_bye
        try:
            offer = build_sdp(
                local_ip=local_host,
                rtp_port=rtp_port,
                payload_type=PCMU,
                codec_name="PCMU",
                dtmf_payload_type=TELEPHONE_EVENT_PT,
            )
            host, port = ua.advertised_addr or (local_host, 0)
            from_uri = f"sip:{sip_user}@{host}:{port}"
            to_uri = f"sip:{dialled}@{centre[0]}:{centre[1]}"
            result.status = await sim.dial(from_uri, to_uri, offer, deadline)
            result.call_id = sim.call.call_id if sim.call else ""
            result.answered = result.status == 200
            if result.answered:
                if messages:
                    result.messages = len(messages)
                    result.digits_sent = await sim.contact_id(messages, cid_attempts, deadline)
                else:
                    await asyncio.sleep(AFTER_ANSWER_S)
                    if digits:
                        result.digits_sent = await sim.send_digits(digits)
                    await sim.listen(deadline)
                if hold_s > 0 and sim.up():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(sim.hung_up.wait(), hold_s)
                result.centre_hung_up = not sim.up()
                await sim.hang_up()
        finally:
            sim.abandon()  # cancelled or failed half-way: do not leave the centre holding a call
            await rtp.close()
        result.kiss_offs = sim.listener.kiss_offs
        result.handshake_heard = sim.listener.handshake_heard
        result.audio_s = round(sim.listener.frames * PACKET_S, 2)
    result.duration_s = round(loop.time() - started, 2)
    return result


def _mrs_fields(body: bytes) -> dict[str, str]:
    """Tag → text of an ``<mrs>`` body; empty if it is not one."""
    try:
        root = fromstring(body, forbid_dtd=True)
    except (DefusedXmlException, ValueError, SyntaxError):  # ParseError is a SyntaxError
        return {}
    if not isinstance(root.tag, str) or root.tag.rsplit("}", 1)[-1].lower() != "mrs":
        return {}
    return {
        child.tag.rsplit("}", 1)[-1].lower(): (child.text or "").strip()
        for child in root
        if isinstance(child.tag, str)
    }


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.isascii() and text.isdigit() else None


async def send_scaip(
    centre: tuple[str, int],
    *,
    cid: str,
    ref: str,
    mty: str = "ME",
    stc: str | None = "0010",
    dty: str | None = "0003",
    sip_user: str | None = None,
    crd: str | None = None,
    local_host: str = "127.0.0.1",
    timeout: float = 10.0,
) -> ScaipResult:
    """Send one SS 91100 alarm message (``<mrq>`` in a SIP MESSAGE) and wait for the centre's
    200 and its ``<mrs>`` reply MESSAGE (which we answer 200, as a terminal must)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = ScaipResult(ref=ref)
    replied: asyncio.Future[dict[str, str]] = loop.create_future()

    async def on_message(req: SipRequest, _addr: tuple[str, int]) -> SipReply:
        fields = _mrs_fields(req.body or b"")
        if fields.get("ref") == ref and not replied.done():
            replied.set_result(fields)
        return SipReply(200, "OK")  # RFC 3428 §7: the MESSAGE arrived; no body

    body = build_mrq(ref=ref, cid=cid, dty=dty, mty=mty, stc=stc, crd=crd)
    async with _user_agent(local_host) as ua:
        ua.on_sip_message = on_message
        host, port = ua.advertised_addr or (local_host, 0)
        from_uri = f"sip:{sip_user or cid.replace(' ', '')}@{host}:{port}"
        to_uri = f"sip:centre@{centre[0]}:{centre[1]}"
        try:
            async with asyncio.timeout(timeout):
                response = await ua.send_message(to_uri, centre, from_uri, body, SCAIP_CONTENT_TYPE)
                result.status = response.status_code
                if 200 <= result.status < 300:
                    fields = await replied
                    result.snu = _int_or_none(fields.get("snu"))
                    result.mre = _int_or_none(fields.get("mre"))
        except TimeoutError:
            result.status = result.status or INVITE_TIMEOUT_STATUS
    result.duration_s = round(loop.time() - started, 2)
    return result


async def ping(
    centre: tuple[str, int], *, local_host: str = "127.0.0.1", timeout: float = 2.0
) -> int | None:
    """OPTIONS to the centre (retransmitted per RFC 3261 §17.1.2): its status, None if silent."""
    async with _user_agent(local_host) as ua:
        host, port = ua.advertised_addr or (local_host, 0)
        uri = f"sip:centre@{centre[0]}:{centre[1]}"
        req = SipRequest(method="OPTIONS", uri=uri)
        req.headers.append("Via", f"SIP/2.0/UDP {host}:{port};branch={generate_branch()};rport")
        for name, value in (
            ("Max-Forwards", "70"),
            ("From", f"<sip:simulator@{host}:{port}>;tag={generate_tag()}"),
            ("To", f"<{uri}>"),
            ("Call-ID", generate_call_id(host)),
            ("CSeq", "1 OPTIONS"),
        ):
            req.headers.set_single(name, value)
        try:
            response = await ua.request(req, centre, timeout=timeout)
        except TimeoutError:
            return None
        return response.status_code


def new_ref() -> str:
    """A fresh SCAIP message reference: the device numbers its messages (milliseconds, mod 1e9)."""
    return str(time.time_ns() // 1_000_000 % 1_000_000_000)


__all__ = [
    "PressPlan",
    "PressResult",
    "ScaipResult",
    "ToneListener",
    "button_key",
    "new_ref",
    "ping",
    "plan_press",
    "press",
    "scaip_for_button",
    "send_scaip",
    "tone_share",
]
