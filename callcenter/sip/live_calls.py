"""Calls held open for an operator, in this handler process.

In-memory on purpose and per process: a held call lives in the process whose sockets carry it.
The console learns of held calls through the alarm rows, and asks the owning process to bridge.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from callcenter.intake import Recorded
from callcenter.sip.interface import CallHandle


@dataclass
class HeldCall:
    call: CallHandle
    recorded: Recorded | None


class LiveCalls:
    def __init__(self) -> None:
        self._held: dict[str, HeldCall] = {}

    @contextmanager
    def holding(self, call: CallHandle, recorded: Recorded | None) -> Iterator[None]:
        self._held[call.info.call_id] = HeldCall(call, recorded)
        try:
            yield
        finally:
            self._held.pop(call.info.call_id, None)

    def __len__(self) -> int:
        return len(self._held)

    def get(self, call_id: str) -> HeldCall | None:
        return self._held.get(call_id)
