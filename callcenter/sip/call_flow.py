"""What the centre does with a call, written once for both SIP backends.

1. Identify the terminal (SIP From user, caller id) and so the elder.
2. Learn which button was pressed, by the terminal model's button map: the dialled extension,
   an RFC 2833 digit after answer, or Contact ID (SIA DC-05) messages.
3. Record the alarm, committed before any acknowledgement (prompt, kiss-off).
4. Acknowledge: the "help is coming" prompt, or the DC-05 kiss-off tone.
5. Life-safety calls stay up for an operator (who can be connected to it from the console,
   :mod:`callcenter.sip.voice_desk`); others are cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time

import structlog

from callcenter.intake import Press, Recorded
from callcenter.intake_service import IntakeService
from callcenter.models import AlarmKind, AlarmSource
from callcenter.prompts import Prompt, prompt_audio
from callcenter.sip.interface import CallEnded, CallHandle
from callcenter.sip.live_calls import HeldCall, LiveCalls
from devices import contact_id, tones
from devices.models import TerminalProtocol
from devices.registry import KnownTerminal

log = structlog.get_logger(__name__)

KIND_OF_BUTTON = {
    "sos": AlarmKind.LIFE_SAFETY,
    "service": AlarmKind.SERVICE,
    "consult": AlarmKind.CONSULT,
    "cancel": AlarmKind.CANCEL,
}
PROMPT_OF_KIND = {
    AlarmKind.LIFE_SAFETY: Prompt.HELP_COMING,
    AlarmKind.UNIDENTIFIED: Prompt.UNIDENTIFIED,
    AlarmKind.SERVICE: Prompt.SERVICE_RECEIVED,
    AlarmKind.CONSULT: Prompt.CONSULT_RECEIVED,
    AlarmKind.CANCEL: Prompt.CANCEL_RECEIVED,
}
# Operator talks to these callers: the call is held open for them.
HOLD_KINDS = frozenset({AlarmKind.LIFE_SAFETY, AlarmKind.UNIDENTIFIED})

DIGIT_FIRST_TIMEOUT = 6.0  # a terminal sends its button digit right after the answer
CID_FIRST_TIMEOUT = 5.0  # DC-05: the panel starts within a few seconds of the handshake
CID_INTER_DIGIT = 1.5  # digits arrive ~50-100 ms apart; a long gap means the message ended
CID_MAX_ATTEMPTS = 4  # DC-05 panels try a message up to four times
# After an operator's phone did not answer, the call stays held at least this long more, so
# that the operator (or another) can try again.
RETRY_GRACE_S = 60.0


class CallFlow:
    """The handler every backend calls with each new inbound call."""

    def __init__(
        self,
        intake: IntakeService,
        live_calls: LiveCalls,
        *,
        hold_s: float,
        ring_s: float = 0.0,
        reminder_s: float = 0.0,
    ) -> None:
        self._intake = intake
        self._live = live_calls
        self._hold_s = hold_s
        self._ring_s = ring_s
        self._reminder_s = reminder_s
        # When each call in progress was answered: kept with its alarm (INVITE→200 figures).
        self._answered_at: dict[str, float] = {}

    async def _answer(self, call: CallHandle) -> None:
        if self._ring_s:
            await asyncio.sleep(self._ring_s)  # a CANCEL meanwhile makes answer() raise
        await call.answer()
        self._answered_at[call.info.call_id] = time.time()

    async def __call__(self, call: CallHandle) -> None:
        info = call.info
        bound = log.bind(call_id=info.call_id, caller=info.caller_user, dialled=info.dialled_user)
        try:
            terminal = await self._intake.identify(
                sip_user=info.caller_user, caller_number=info.caller_display or info.caller_user
            )
            if terminal is None:
                await self._unidentified(call)
            elif terminal.protocol is TerminalProtocol.CONTACT_ID:
                await self._contact_id(call, terminal)
            elif terminal.protocol is TerminalProtocol.EXTENSION:
                await self._extension(call, terminal)
            else:  # DTMF terminals, and SCAIP terminals' voice call that follows their MESSAGE
                await self._dtmf(call, terminal)
        except CallEnded:
            bound.info("call.ended_by_caller")
        except Exception:
            # The database is down or a bug: nothing was acknowledged, so the terminal retries.
            bound.exception("call.failed")
            if not call.ended:
                await call.reject(480, "Temporarily Unavailable")
                await call.hangup()
        finally:
            self._answered_at.pop(info.call_id, None)

    # -- the ways a button press arrives ---------------------------------------------------

    async def _extension(self, call: CallHandle, terminal: KnownTerminal) -> None:
        button = terminal.button_for(call.info.dialled_user)
        if button is None:
            # An unknown extension: ask, as for a DTMF terminal.
            await self._dtmf(call, terminal)
            return
        # Commit before the 200 OK: even the answer cannot come before the alarm is stored.
        recorded = await self._record(
            call,
            terminal,
            AlarmSource.EXTENSION,
            KIND_OF_BUTTON[button],
            event_code=call.info.dialled_user,
        )
        await self._answer(call)
        await self._acknowledge(call, recorded)

    async def _dtmf(self, call: CallHandle, terminal: KnownTerminal) -> None:
        await self._answer(call)
        digits = await call.collect_digits(
            1, first_timeout=DIGIT_FIRST_TIMEOUT, inter_digit_timeout=1.0
        )
        if not digits:
            await call.play(prompt_audio(Prompt.PRESS_BUTTON))
            call.clear_digits()
            digits = await call.collect_digits(
                1, first_timeout=DIGIT_FIRST_TIMEOUT, inter_digit_timeout=1.0
            )
        button = terminal.button_for(digits) if digits else None
        # No digit at all, or one the map does not know: treat it as a call for help
        # (an elder who cannot press again must still reach a person).
        kind = KIND_OF_BUTTON[button] if button else AlarmKind.LIFE_SAFETY
        recorded = await self._record(
            call, terminal, AlarmSource.DTMF, kind, event_code=digits or None
        )
        await self._acknowledge(call, recorded)

    async def _unidentified(self, call: CallHandle) -> None:
        recorded = await self._record(call, None, AlarmSource.DTMF, AlarmKind.UNIDENTIFIED)
        await self._answer(call)
        await self._acknowledge(call, recorded)

    async def _contact_id(self, call: CallHandle, terminal: KnownTerminal) -> None:
        """SIA DC-05: handshake, 16 digits, checksum, kiss-off only after the commit."""
        await self._answer(call)
        hold_for: Recorded | None = None
        hold = False
        attempts = 0
        await call.play(tones.handshake())
        while attempts < CID_MAX_ATTEMPTS:
            digits = await call.collect_digits(
                16, first_timeout=CID_FIRST_TIMEOUT, inter_digit_timeout=CID_INTER_DIGIT
            )
            if not digits:
                break  # the panel has finished (or gave up)
            try:
                message = contact_id.parse(digits)
            except contact_id.ContactIdError as exc:
                attempts += 1
                # No kiss-off: the panel sends the message again.
                log.warning(
                    "contact_id.rejected",
                    call_id=call.info.call_id,
                    reason=exc.reason,
                    digits_len=len(digits),
                )
                continue
            attempts = 0
            recorded = await self._record_contact_id(call, terminal, message)
            await self._play_then_acknowledge(call, tones.kiss_off(), recorded)
            if message.listen_in_follows or (
                message.kind == "life_safety" and not message.is_restore
            ):
                hold, hold_for = True, hold_for or recorded
        if hold and not call.ended:
            with self._live.holding(call, hold_for) as held:
                await self._hold_for_operator(call, held)
        await call.hangup()

    # -- recording and acknowledging ---------------------------------------------------------

    async def _record(
        self,
        call: CallHandle,
        terminal: KnownTerminal | None,
        source: AlarmSource,
        kind: AlarmKind,
        *,
        event_code: str | None = None,
    ) -> Recorded:
        info = call.info
        # The same button from the same terminal is the same alarm if it was never acknowledged.
        fingerprint = f"{source.value}:{kind.value}:{event_code or ''}"
        return await self._intake.record(
            Press(
                source=source,
                kind=kind,
                dedup_key=f"sip:{info.call_id}:{info.request_key}",
                caller=info.caller_user or info.caller_display,
                terminal_id=terminal.id if terminal else None,
                elder_id=terminal.elder_id if terminal else None,
                event_code=event_code,
                fingerprint=fingerprint if terminal else "",
                raw={
                    "invite_at": info.received_at,
                    "answered_at": self._answered_at.get(info.call_id),
                    "dialled": info.dialled_user,
                    "display": info.caller_display,
                    "source": f"{info.source[0]}:{info.source[1]}",
                    "contact": info.contact,
                },
            )
        )

    async def _record_contact_id(
        self, call: CallHandle, terminal: KnownTerminal, message: contact_id.ContactIdMessage
    ) -> Recorded:
        if message.kind == "test":
            kind = AlarmKind.TEST
        elif message.is_restore:
            kind = AlarmKind.CANCEL if message.kind == "life_safety" else AlarmKind.TECHNICAL
        else:
            kind = {"life_safety": AlarmKind.LIFE_SAFETY, "technical": AlarmKind.TECHNICAL}.get(
                message.kind, AlarmKind.TECHNICAL
            )
        digest = hashlib.sha1(message.raw.encode(), usedforsecurity=False).hexdigest()[:16]
        return await self._intake.record(
            Press(
                source=AlarmSource.CONTACT_ID,
                kind=kind,
                # Several messages in one call: the digits tell them apart.
                dedup_key=f"cid:{call.info.call_id}:{digest}",
                caller=call.info.caller_user,
                terminal_id=terminal.id,
                elder_id=terminal.elder_id,
                event_code=f"{message.qualifier}{message.event_code}",
                fingerprint=f"cid:{message.raw}",
                raw={
                    "digits": message.raw,
                    "account": message.account,
                    "event": message.event_name,
                    "zone": message.zone,
                },
            )
        )

    async def _play_then_acknowledge(
        self,
        call: CallHandle,
        pcm: bytes,
        recorded: Recorded,
        *,
        unless: asyncio.Event | None = None,
    ) -> None:
        """Play the acknowledgement; once it has started, the alarm counts as acknowledged.

        A panel goes on-hook as soon as it recognises the kiss-off, and an elder may hang up
        during the prompt: either way the terminal was told, and a later identical press is a
        new alarm, not a retry of this one. ``unless``: stop playing when it is set (an
        operator is on the line: their voice beats the rest of the prompt).
        """
        if call.ended:
            # Gone before anything was said: unacknowledged, so its retry is this alarm.
            raise CallEnded(call.info.call_id)
        try:
            if unless is None:
                await call.play(pcm)
            else:
                await _play_unless(call, pcm, unless)
        finally:
            await asyncio.shield(self._intake.acknowledge(recorded.alarm_id))

    async def _acknowledge(self, call: CallHandle, recorded: Recorded) -> None:
        prompt = prompt_audio(PROMPT_OF_KIND.get(recorded.kind, Prompt.HELP_COMING))
        if recorded.kind not in HOLD_KINDS:
            await self._play_then_acknowledge(call, prompt, recorded)
        else:
            # Held from before the prompt: an operator's phone may already ring while it plays.
            with self._live.holding(call, recorded) as held:
                await self._play_then_acknowledge(
                    call, prompt, recorded, unless=held.operator_on_line
                )
                await self._hold_for_operator(call, held)
        await call.hangup()

    async def _hold_for_operator(self, call: CallHandle, held: HeldCall) -> None:
        """Keep a life-safety call up until the caller hangs up, an operator's call with the
        elder ends, or the hold times out (never while an operator is being connected)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._hold_s
        next_reminder = loop.time() + self._reminder_s if self._reminder_s else math.inf
        held.quiet.set()
        while not call.ended:
            if held.taken.is_set():
                await _first_of(held.released, call, timeout=None)
                deadline = max(deadline, loop.time() + RETRY_GRACE_S)
                continue
            now = loop.time()
            if now >= deadline:
                return
            await _first_of(held.taken, call, timeout=min(deadline, next_reminder) - now)
            if not held.taken.is_set() and not call.ended and loop.time() >= next_reminder:
                await self._remind(call, held)
                next_reminder = loop.time() + self._reminder_s

    async def _remind(self, call: CallHandle, held: HeldCall) -> None:
        """Say again that an operator is coming; stop at once if one is being connected."""
        kind = held.recorded.kind if held.recorded else AlarmKind.LIFE_SAFETY
        held.quiet.clear()
        try:
            pcm = prompt_audio(PROMPT_OF_KIND.get(kind, Prompt.HELP_COMING))
            await _play_unless(call, pcm, held.taken)
        finally:
            held.quiet.set()


async def _play_unless(call: CallHandle, pcm: bytes, event: asyncio.Event) -> None:
    """Play ``pcm``, cut short if ``event`` is set meanwhile."""
    playing = asyncio.ensure_future(call.play(pcm))
    setting = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({playing, setting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        setting.cancel()
        if not playing.done():
            playing.cancel()
            with contextlib.suppress(asyncio.CancelledError, CallEnded):
                await playing
    if not playing.cancelled():
        playing.result()  # CallEnded if the caller hung up during it


async def _first_of(event: asyncio.Event, call: CallHandle, *, timeout: float | None) -> None:
    """Wait until ``event`` is set, the call ends, or ``timeout`` passes."""
    setting = asyncio.ensure_future(event.wait())
    ending = asyncio.ensure_future(call.wait_ended(timeout))
    try:
        await asyncio.wait({setting, ending}, timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    finally:
        setting.cancel()
        ending.cancel()
