"""Clocks: the engine, scheduler, API executor and metrics read time only through one of these."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since an arbitrary origin."""
        ...

    def wait_until(self, deadline: float) -> None:
        """Lets time pass up to ``deadline`` (or less: callers re-check their condition)."""
        ...


class WallClock:
    """Real time (monotonic), for serving. Waits are short sleeps, so tools finishing early are seen."""

    max_sleep = 0.01

    def now(self) -> float:
        return time.monotonic()

    def wait_until(self, deadline: float) -> None:
        time.sleep(max(0.0, min(self.max_sleep, deadline - self.now())))


class VirtualClock:
    """Simulated time: advanced by the simulator's cost model, jumping straight over idle gaps."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"time cannot go back ({seconds} s)")
        self._now += seconds

    def wait_until(self, deadline: float) -> None:
        self._now = max(self._now, deadline)
