"""Failed console logins, counted in a sliding window, so that passwords cannot be guessed fast.

Two limits (OWASP Authentication Cheat Sheet, "login throttling"): failures for one username
from one client address, which stops guessing one operator's password, and failures from one
address whatever the username, which stops trying many names. Once either is reached, the
login answers 429 with ``Retry-After`` *before* the password is checked, so a blocked client
learns nothing more and costs us no argon2 work. A success clears its username's count.

Per process, in memory, on purpose: with several web workers each keeps its own counts, so a
client spread over N workers gets at most N times the limit — still far too few guesses, and
nothing to clean up in the database. The client address is the one uvicorn sees: behind a
reverse proxy run uvicorn with ``--proxy-headers --forwarded-allow-ips`` set to the proxy, or
every operator shares the proxy's address.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

# A bound on remembered keys: beyond it, keys whose failures all left the window are dropped.
MAX_KEYS = 10_000


class LoginRateLimiter:
    def __init__(
        self,
        *,
        max_failures: int,
        max_failures_per_address: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.max_failures_per_address = max_failures_per_address
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()  # FastAPI runs sync endpoints on a thread pool
        self._failures: dict[tuple[str, str], deque[float]] = {}

    @staticmethod
    def _user_key(username: str, address: str) -> tuple[str, str]:
        return (username.strip().casefold(), address)

    @staticmethod
    def _address_key(address: str) -> tuple[str, str]:
        return ("", address)  # usernames are never empty (LoginIn), so this cannot clash

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, username: str, address: str) -> int | None:
        """Whole seconds to wait if this login must be refused now, else None."""
        now = self._clock()
        waits = []
        with self._lock:
            for key, limit in (
                (self._user_key(username, address), self.max_failures),
                (self._address_key(address), self.max_failures_per_address),
            ):
                times = self._recent(key, now)
                if len(times) >= limit:
                    # The attempt that frees a slot: the limit-th newest failure leaves the window.
                    waits.append(times[-limit] + self.window_s - now)
        if not waits:
            return None
        return max(1, math.ceil(max(waits)))

    def failed(self, username: str, address: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) >= MAX_KEYS:
                self._prune(now)
            for key in (self._user_key(username, address), self._address_key(address)):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str, address: str) -> None:
        """The right password: this username's failures from this address are forgiven (the
        address's total stays, so one known account cannot launder guesses at others)."""
        with self._lock:
            self._failures.pop(self._user_key(username, address), None)

    def _prune(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)

    def __len__(self) -> int:
        return len(self._failures)
