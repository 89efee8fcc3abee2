"""Calls held open for an operator, in this handler process.

In-memory on purpose and per process: a held call lives in the process whose sockets carry it.
The console asks for an operator to be connected through the ``voice_calls`` table; the voice
desk of the process holding the alarm's call (:mod:`callcenter.sip.voice_desk`) finds it here
by alarm id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from callcenter.intake import Recorded
from callcenter.sip.interface import CallHandle


@dataclass(eq=False)
class HeldCall:
    call: CallHandle
    recorded: Recorded | None
    # An operator is being connected, or talking: the hold does not time out meanwhile and
    # plays no reminders.
    taken: asyncio.Event = field(default_factory=asyncio.Event)
    # The operator has answered: the rest of the acknowledgement prompt is cut short.
    operator_on_line: asyncio.Event = field(default_factory=asyncio.Event)
    # Nothing of ours is being played into the call: the operator's voice may go in.
    quiet: asyncio.Event = field(default_factory=asyncio.Event)
    # The operator's attempt is over (talked, or their phone did not answer).
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self) -> bool:
        """Reserve the call for one operator; False if someone has it already."""
        if self.taken.is_set() or self.call.ended:
            return False
        self.released.clear()
        self.taken.set()
        return True

    def release(self) -> None:
        self.taken.clear()
        self.operator_on_line.clear()
        self.released.set()


class LiveCalls:
    def __init__(self) -> None:
        self._held: dict[str, HeldCall] = {}
        self._by_alarm: dict[int, HeldCall] = {}

    @contextmanager
    def holding(self, call: CallHandle, recorded: Recorded | None) -> Iterator[HeldCall]:
        held = HeldCall(call, recorded)
        self._held[call.info.call_id] = held
        if recorded is not None:
            self._by_alarm[recorded.alarm_id] = held
        try:
            yield held
        finally:
            self._held.pop(call.info.call_id, None)
            if recorded is not None and self._by_alarm.get(recorded.alarm_id) is held:
                del self._by_alarm[recorded.alarm_id]

    def __len__(self) -> int:
        return len(self._held)

    def get(self, call_id: str) -> HeldCall | None:
        return self._held.get(call_id)

    def by_alarm(self, alarm_id: int) -> HeldCall | None:
        return self._by_alarm.get(alarm_id)
