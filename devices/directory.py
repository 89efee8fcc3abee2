"""The terminal directory held in memory by a call-handler process.

Identifying the caller is the first thing every call needs, and during a storm a database round
trip per INVITE delays every answer. Terminals change rarely: the whole registry (13,833 in the
seed district) is a few MB, loaded at start and reloaded every ``refresh_s`` seconds. A caller
the snapshot does not know is looked up in the database before being called unidentified, so a
terminal added a minute ago is still recognised.
"""

from __future__ import annotations

import contextlib
import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from callcenter.phones import PhoneError, normalise_phone
from devices.models import Terminal, TerminalStatus
from devices.registry import KnownTerminal, identify, known_terminal


class TerminalDirectory:
    def __init__(
        self, sessions: sessionmaker[Session], *, region: str = "CN", refresh_s: float = 60.0
    ) -> None:
        self._sessions = sessions
        self._region = region
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._by_sip_user: dict[str, KnownTerminal] = {}
        self._by_caller_id: dict[str, KnownTerminal] = {}
        self._by_account: dict[str, KnownTerminal] = {}
        self._loaded_at = 0.0

    def reload(self) -> int:
        """Load every terminal that is not retired; returns how many."""
        by_sip: dict[str, KnownTerminal] = {}
        by_caller: dict[str, KnownTerminal] = {}
        by_account: dict[str, KnownTerminal] = {}
        with self._sessions() as session:
            rows = session.scalars(
                select(Terminal)
                .where(Terminal.status != TerminalStatus.RETIRED)
                .order_by(Terminal.id)
            )
            for terminal in rows:
                known = known_terminal(terminal)
                if terminal.sip_user:
                    by_sip[terminal.sip_user] = known
                if terminal.caller_id:
                    by_caller.setdefault(terminal.caller_id, known)
                if terminal.account:
                    by_account.setdefault(terminal.account, known)
        with self._lock:
            self._by_sip_user, self._by_caller_id, self._by_account = by_sip, by_caller, by_account
            self._loaded_at = time.monotonic()
        return len(by_sip) + len(by_caller)

    def lookup(
        self, *, sip_user: str = "", caller_number: str = "", account: str = ""
    ) -> KnownTerminal | None:
        """Same order as :func:`devices.registry.identify`, from memory only."""
        with self._lock:
            if sip_user and sip_user in self._by_sip_user:
                return self._by_sip_user[sip_user]
            for raw in (sip_user, caller_number):
                if not raw:
                    continue
                with contextlib.suppress(PhoneError):
                    found = self._by_caller_id.get(normalise_phone(raw, self._region))
                    if found is not None:
                        return found
            if account:
                return self._by_account.get(account.replace(" ", ""))
        return None

    def identify(
        self, session: Session, *, sip_user: str = "", caller_number: str = "", account: str = ""
    ) -> KnownTerminal | None:
        """From memory, else from the database (and remember it)."""
        found = self.lookup(sip_user=sip_user, caller_number=caller_number, account=account)
        if found is not None:
            return found
        found = identify(session, sip_user=sip_user, caller_number=caller_number, account=account,
                         region=self._region)  # fmt: skip
        if found is not None and sip_user:
            with self._lock:
                self._by_sip_user[sip_user] = found
        return found
