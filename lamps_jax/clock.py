"""Clocks: the engine, scheduler and metrics read time only through one of these."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since an arbitrary origin."""
        ...


class WallClock:
    """Real time (monotonic), for serving."""

    def now(self) -> float:
        return time.monotonic()
