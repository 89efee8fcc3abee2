"""The call-handler and SCAIP-ingress processes (`hyt sip`, `hyt scaip`, within `hyt serve`)."""

from __future__ import annotations

import asyncio
import gc
import importlib
import signal
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import structlog

from callcenter import db, migrate
from callcenter.intake_service import IntakeService
from callcenter.scaip_ingress import ScaipIngress
from callcenter.settings import Settings
from callcenter.sip import listener_registry
from callcenter.sip.aiosipua_backend import AiosipuaBackend
from callcenter.sip.call_flow import CallFlow
from callcenter.sip.interface import CallBackend, CallHandle
from callcenter.sip.live_calls import LiveCalls
from callcenter.sip.voice_desk import VoiceDesk

log = structlog.get_logger(__name__)


@dataclass
class SipServices:
    """What a running SIP process holds; the demo and the tests look inside."""

    intake: IntakeService
    live_calls: LiveCalls
    backends: list[CallBackend]
    voice: VoiceDesk | None = None  # connects operators to elders (default backend only)


async def _refuse_calls(call: CallHandle) -> None:
    # The SCAIP port takes alarm data only; voice goes to the call handler's port.
    await call.reject(403, "Calls go to the call handler")


def build_backend(settings: Settings, on_message: ScaipIngress | None) -> CallBackend:
    if settings.sip_backend == "pyvoip":
        # Imported by name: pyVoIP's threads and patches load only when this backend is chosen.
        pyvoip = importlib.import_module("callcenter.sip.pyvoip_backend")
        backend: CallBackend = pyvoip.PyVoipBackend(
            settings.sip_host,
            settings.sip_port,
            rtp_port_low=settings.rtp_port_low,
            rtp_port_high=settings.rtp_port_high,
            advertised_host=settings.sip_advertised_host,
            edge=settings.sip_registrar,
        )
        return backend
    return AiosipuaBackend(
        settings.sip_host,
        settings.sip_port,
        rtp_port_low=settings.rtp_port_low,
        rtp_port_high=settings.rtp_port_high,
        advertised_host=settings.sip_advertised_host,
        on_message=on_message,
        edge=settings.sip_registrar,
    )


async def start_sip(
    settings: Settings, stack: AsyncExitStack, *, calls: bool = True, scaip: bool = True
) -> SipServices:
    """Start the call handler and/or the SCAIP ingress; ``stack`` stops them."""
    migrate.require_head(db.get_engine())
    intake = IntakeService(db.session_factory(), settings)
    await intake.start()
    stack.push_async_callback(intake.aclose)
    live_calls = LiveCalls()
    ingress = ScaipIngress(intake)
    backends: list[CallBackend] = []
    voice: VoiceDesk | None = None
    if calls:
        backend = build_backend(settings, ingress)
        flow = CallFlow(
            intake,
            live_calls,
            hold_s=settings.life_safety_hold_s,
            ring_s=settings.sip_ring_ms / 1000,
            reminder_s=settings.voice_hold_reminder_s,
        )
        await backend.start(flow)
        stack.push_async_callback(backend.stop)
        listener_registry.register(backend, "calls")  # for /readyz of this process
        stack.callback(listener_registry.unregister, backend)
        backends.append(backend)
        if isinstance(backend, AiosipuaBackend):  # pyVoIP cannot place calls (PYVOIP.md)
            voice = VoiceDesk(intake, live_calls, backend, settings,
                              name=f"{socket.gethostname()}:{settings.sip_port}")  # fmt: skip
            await voice.start()
            stack.push_async_callback(voice.stop)
    # The default backend answers MESSAGE on its own socket; pyVoIP cannot, so SCAIP then
    # gets a listener of its own (and `hyt scaip` runs only that).
    if scaip and (not calls or settings.sip_backend == "pyvoip"):
        listener = AiosipuaBackend(
            settings.sip_host,
            settings.scaip_port,
            advertised_host=settings.sip_advertised_host,
            on_message=ingress,
            edge=settings.sip_registrar,
        )
        await listener.start(_refuse_calls)
        stack.push_async_callback(listener.stop)
        listener_registry.register(listener, "scaip")
        stack.callback(listener_registry.unregister, listener)
        backends.append(listener)
    # Start-up objects never become garbage: keep them out of the collector's way, and collect
    # less often, so that a collection pause does not stall the loop during a storm (SIPSTACK.md).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    return SipServices(intake, live_calls, backends, voice)


async def serve_until_signalled(
    settings: Settings, *, calls: bool, scaip: bool, ready: Callable[[], None] | None = None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        await start_sip(settings, stack, calls=calls, scaip=scaip)
        log.info(
            "sip.ready",
            backend=settings.sip_backend,
            port=settings.sip_port,
            scaip_port=settings.scaip_port,
        )
        if ready is not None:
            ready()
        await stop.wait()
    log.info("sip.stopped")
