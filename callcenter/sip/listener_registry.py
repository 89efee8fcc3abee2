"""The SIP listeners this process runs, for ``/readyz`` and ``/metrics`` of the same process.

Per process on purpose: a listener lives in the process whose socket it is. ``hyt serve`` runs
the web app and the call handler together, so its ``/readyz`` can tell whether calls can arrive;
``hyt web`` alone runs none and its readiness does not depend on SIP.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from callcenter.sip.interface import CallBackend


@dataclass(frozen=True, slots=True)
class ListenerState:
    backend: str  # aiosipua / pyvoip
    role: str  # calls / scaip
    port: int
    listening: bool


_lock = threading.Lock()
_backends: dict[int, tuple[CallBackend, str]] = {}


def register(backend: CallBackend, role: str) -> None:
    with _lock:
        _backends[id(backend)] = (backend, role)


def unregister(backend: CallBackend) -> None:
    with _lock:
        _backends.pop(id(backend), None)


def _listening(backend: Any) -> bool:
    """Is the backend's socket open? Read from each library's own state (versions pinned)."""
    uas = getattr(backend, "uas", None)
    if uas is not None:  # aiosipua: the UDP transport is dropped on stop
        udp = getattr(uas.transport, "_udp_transport", None)
        return udp is not None and not udp.is_closing()
    phone = getattr(backend, "_phone", None)  # pyVoIP: the phone is dropped on stop
    sip = getattr(phone, "sip", None)
    return bool(getattr(sip, "NSD", False))


def listeners() -> list[ListenerState]:
    """Every registered listener with its state now (empty: this process runs no SIP)."""
    with _lock:
        registered = list(_backends.values())
    return [
        ListenerState(
            backend=str(getattr(backend, "name", type(backend).__name__)),
            role=role,
            port=int(getattr(backend, "port", 0)),
            listening=_listening(backend),
        )
        for backend, role in registered
    ]
