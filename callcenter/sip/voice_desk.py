"""The call handler's side of "接通通话 Connect call": it takes the console's requests from the
``voice_calls`` table (:mod:`callcenter.voice_calls` says why a table) and connects the
operator's SIP phone to the elder.

1. Ring the operator's phone (an outgoing call, :class:`callcenter.sip.interface.Dialler`).
2. Once they answer, join them to the elder's call, held since the press; if the elder has hung
   up meanwhile, call the elder's terminal back.
3. Relay the audio both ways and record both directions; when either side hangs up, hang up
   the other, and attach the recording to the case.

Only the default backend can place calls; with pyVoIP no desk runs (the console says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import structlog
from aiosipua import parse_uri
from sqlalchemy.orm import Session

from callcenter import voice_calls
from callcenter.intake_service import IntakeService
from callcenter.recordings import CallRecorder, mix_to_wav, recording_stem
from callcenter.settings import Settings
from callcenter.sip.interface import DialFailed, Dialler, MediaLeg
from callcenter.sip.live_calls import HeldCall, LiveCalls
from callcenter.voice_calls import CallBackTarget, PendingVoiceCall
from callcenter.voice_models import VoiceCallMode, VoiceCallState

log = structlog.get_logger(__name__)
T = TypeVar("T")

POLL_S = 0.25  # how often the table is read; a request in this process wakes the desk at once
CENTRE_CALLER = "huyuantong"  # the user part the elder's terminal sees on a call-back
SIP_PORT = 5060


class VoiceFailure(Exception):
    """The operator could not be connected; the message is shown in the console."""


class VoiceDesk:
    def __init__(
        self,
        intake: IntakeService,
        live_calls: LiveCalls,
        dialler: Dialler,
        settings: Settings,
        *,
        name: str,
    ) -> None:
        self._intake = intake
        self._live = live_calls
        self._dialler = dialler
        self._edge = settings.sip_registrar
        self._ring_s = float(settings.voice_ring_s)
        self._recordings = Path(settings.recordings_dir)
        self.name = name  # stable across restarts of this handler: host and SIP port
        self._wake = asyncio.Event()
        self._busy: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._remove_waker: Callable[[], None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._remove_waker = voice_calls.add_local_waker(
            lambda: loop.call_soon_threadsafe(self._wake.set)
        )
        for voice_call_id in await self._db(
            lambda s: voice_calls.fail_abandoned(s, handler=self.name)
        ):
            await self._finish(voice_call_id, "centre", reason=voice_calls.HANDLER_RESTARTED)
        self._poller = loop.create_task(self._poll_forever())

    async def stop(self) -> None:
        if self._remove_waker is not None:
            self._remove_waker()
        if self._poller is not None:
            self._poller.cancel()
        for task in list(self._tasks):
            task.cancel()  # each hangs up both legs and keeps its recording on the way out
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _db(self, fn: Callable[[Session], T]) -> T:
        return await self._intake.run(fn)

    # -- taking requests -------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self._poll_once()
            except Exception:
                log.exception("voice.poll_failed")  # the database is down: try again later
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            self._wake.clear()

    async def _poll_once(self) -> None:
        for request in await self._db(voice_calls.pending_voice_calls):
            if request.id in self._busy:
                continue
            held = self._live.by_alarm(request.alarm_id)
            if held is not None and held.take():
                if await self._claim(request, VoiceCallMode.BRIDGE):
                    self._spawn(self._connect(request, held))
                else:
                    held.release()
            elif held is None and request.age_s >= voice_calls.CALL_BACK_GRACE_S:
                # Nobody holds the elder's call (the holder would have claimed it by now).
                await self._call_back(request)

    async def _call_back(self, request: PendingVoiceCall) -> None:
        target = await self._db(
            lambda s: voice_calls.call_back_target(s, alarm_id=request.alarm_id, edge=self._edge)
        )
        if target is None:
            await self._db(
                lambda s: voice_calls.fail_voice_call(
                    s,
                    voice_call_id=request.id,
                    reason=NO_CALL_BACK,
                    only_if=(VoiceCallState.REQUESTED,),
                )
            )
            return
        if await self._claim(request, VoiceCallMode.CALL_BACK):
            self._spawn(self._connect(request, None, target))

    async def _claim(self, request: PendingVoiceCall, mode: VoiceCallMode) -> bool:
        return await self._db(
            lambda s: voice_calls.claim_voice_call(
                s, voice_call_id=request.id, handler=self.name, mode=mode
            )
        )

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one call --------------------------------------------------------------------------

    async def _connect(
        self,
        request: PendingVoiceCall,
        held: HeldCall | None,
        target: CallBackTarget | None = None,
    ) -> None:
        self._busy.add(request.id)
        bound = log.bind(voice_call_id=request.id, alarm_id=request.alarm_id)
        legs: list[MediaLeg] = []
        recorder: CallRecorder | None = None
        ended_by, reason = "centre", ""
        try:
            operator = await self._ring_operator(request, held)
            legs.append(operator)
            elder, mode = await self._reach_elder(request, held, target, operator)
            legs.append(elder)
            await self._db(
                lambda s: voice_calls.mark_connected(s, voice_call_id=request.id, mode=mode)
            )
            recorder = CallRecorder(self._recordings, recording_stem(request.id))
            try:
                await asyncio.to_thread(recorder.open)
            except OSError:
                # Talking matters more than the recording: go on without it, loudly.
                bound.exception("voice.recording_unavailable", directory=str(self._recordings))
            bound.info("voice.connected", mode=mode.value)
            ended_by = await _relay(elder, operator, recorder)
        except VoiceFailure as exc:
            reason = str(exc)
        except asyncio.CancelledError:
            reason = "呼叫处理进程停止 / the call handler stopped"
        except Exception:
            bound.exception("voice.failed")
            reason = "内部错误 / internal error"
        finally:
            # Shielded: even when the handler is stopping, both legs hear BYE and the audio
            # so far is kept.
            await asyncio.shield(self._wind_up(request, held, legs, recorder, ended_by, reason))

    async def _wind_up(
        self,
        request: PendingVoiceCall,
        held: HeldCall | None,
        legs: list[MediaLeg],
        recorder: CallRecorder | None,
        ended_by: str,
        reason: str,
    ) -> None:
        try:
            for leg in legs:
                leg.listen(None)
                await leg.hangup()
            if held is not None:
                held.release()
            if recorder is not None:
                recorder.close()
                await self._finish(request.id, ended_by, reason=reason)
            else:
                await self._db(
                    lambda s: voice_calls.fail_voice_call(
                        s, voice_call_id=request.id, reason=reason or DIAL_FAILED
                    )
                )
        except Exception:
            log.exception("voice.wind_up_failed", voice_call_id=request.id)
        finally:
            self._busy.discard(request.id)

    async def _finish(self, voice_call_id: int, ended_by: str, *, reason: str = "") -> None:
        stem = recording_stem(voice_call_id)
        try:
            mixed = await asyncio.to_thread(mix_to_wav, self._recordings, stem)
        except Exception:  # the raw audio stays on disk; the call is still recorded as ended
            log.exception("voice.mix_failed", voice_call_id=voice_call_id)
            mixed = None
        name, seconds = mixed if mixed is not None else (None, None)
        await self._db(
            lambda s: voice_calls.finish_voice_call(
                s,
                voice_call_id=voice_call_id,
                ended_by=ended_by,
                recording_file=name,
                recording_s=seconds,
                reason=reason,
            )
        )

    async def _ring_operator(self, request: PendingVoiceCall, held: HeldCall | None) -> MediaLeg:
        """Ring the operator's phone. If the elder hangs up meanwhile and cannot be called
        back, stop ringing at once: there is nobody to connect to."""
        destination = await self._destination(request.operator_uri)
        dialling = asyncio.ensure_future(
            self._dialler.dial(
                request.operator_uri,
                destination,
                caller=f"hyt-alarm-{request.alarm_id}",
                ring_s=self._ring_s,
            )
        )
        try:
            if held is not None:
                elder_gone = asyncio.ensure_future(held.call.wait_ended())
                try:
                    await asyncio.wait({dialling, elder_gone}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    elder_gone.cancel()
                if not dialling.done() and await self._call_back_target(request) is None:
                    raise VoiceFailure(NO_CALL_BACK)
            return await dialling
        except DialFailed as exc:
            raise VoiceFailure(f"{DIAL_FAILED} ({exc})") from None
        finally:
            await _stop_dialling(dialling)

    async def _reach_elder(
        self,
        request: PendingVoiceCall,
        held: HeldCall | None,
        target: CallBackTarget | None,
        operator: MediaLeg,
    ) -> tuple[MediaLeg, VoiceCallMode]:
        if held is not None and not held.call.ended and isinstance(held.call, MediaLeg):
            elder: MediaLeg = held.call
            # The acknowledgement prompt may still be playing: it stops now that the operator
            # is on the line, and their voice goes in once it has.
            held.operator_on_line.set()
            quiet = asyncio.ensure_future(held.quiet.wait())
            gone = asyncio.ensure_future(elder.wait_ended())
            try:
                await asyncio.wait({quiet, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                quiet.cancel()
                gone.cancel()
            if not elder.ended:
                return elder, VoiceCallMode.BRIDGE
        target = target or await self._call_back_target(request)
        if target is None:
            raise VoiceFailure(NO_CALL_BACK)
        destination = await self._destination(target.destination)
        dialling = asyncio.ensure_future(
            self._dialler.dial(target.uri, destination, caller=CENTRE_CALLER, ring_s=self._ring_s)
        )
        operator_gone = asyncio.ensure_future(operator.wait_ended())
        try:
            await asyncio.wait({dialling, operator_gone}, return_when=asyncio.FIRST_COMPLETED)
            if not dialling.done():
                raise VoiceFailure("接警员已挂机 / the operator hung up before the elder answered")
            return await dialling, VoiceCallMode.CALL_BACK
        except DialFailed as exc:
            raise VoiceFailure(f"{CALL_BACK_FAILED} ({exc})") from None
        finally:
            operator_gone.cancel()
            await _stop_dialling(dialling)

    async def _call_back_target(self, request: PendingVoiceCall) -> CallBackTarget | None:
        return await self._db(
            lambda s: voice_calls.call_back_target(s, alarm_id=request.alarm_id, edge=self._edge)
        )

    async def _destination(self, uri_or_address: str) -> tuple[str, int]:
        """Where to send the INVITE: the SIP edge when there is one (it knows registrations),
        else the host and port of the URI (or of a ``host:port``)."""
        text = self._edge or uri_or_address
        try:
            if text.startswith(("sip:", "sips:")):
                uri = parse_uri(text)
                host, port = uri.host, uri.port or SIP_PORT
            elif text.count(":") == 1:
                host, port_text = text.split(":")
                port = int(port_text)
            else:
                host, port = text, SIP_PORT
            infos = await asyncio.get_running_loop().getaddrinfo(
                host.strip("[]"), port, type=socket.SOCK_DGRAM
            )
        except (ValueError, OSError) as exc:
            raise VoiceFailure(f"无法解析地址 / cannot resolve {text!r}: {exc}") from exc
        address = infos[0][4]
        return str(address[0]), int(address[1])


async def _stop_dialling(dialling: asyncio.Future[MediaLeg]) -> None:
    """An unanswered call we no longer want is CANCELled (cancelling the dial does that)."""
    if not dialling.done():
        dialling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dialling


async def _relay(elder: MediaLeg, operator: MediaLeg, recorder: CallRecorder) -> str:
    """Audio both ways until one side hangs up; returns who did ("elder" or "operator")."""

    def from_elder(pcm: bytes) -> None:
        recorder.write("elder", pcm)
        operator.send_audio(pcm)

    def from_operator(pcm: bytes) -> None:
        recorder.write("operator", pcm)
        elder.send_audio(pcm)

    elder.listen(from_elder)
    operator.listen(from_operator)
    elder_gone = asyncio.ensure_future(elder.wait_ended())
    operator_gone = asyncio.ensure_future(operator.wait_ended())
    try:
        await asyncio.wait({elder_gone, operator_gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        elder_gone.cancel()
        operator_gone.cancel()
    return "elder" if elder.ended else "operator"


DIAL_FAILED = "接警员话机未接通 / the operator's phone did not answer"
CALL_BACK_FAILED = "回拨老人终端未接通 / calling the elder's terminal back failed"
NO_CALL_BACK = (
    "老人已挂机，且无法回拨其终端 / the elder's call has ended and the terminal cannot be "
    "called back (no SIP address known)"
)
