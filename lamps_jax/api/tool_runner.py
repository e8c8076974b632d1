"""ToolRunner: runs tool calls on their own daemon threads, at most ``max_concurrent`` live at once.

A call holds a slot from its start until it is released: when its result is collected, when it
times out, or when its request is aborted. A timed-out or cancelled call gives its slot back at once
and its thread is abandoned: Python cannot stop a thread, so the tool runs on unobserved until it
returns (its result is dropped) and, as a daemon thread, never keeps the process alive. A hung tool
therefore costs a thread, never a slot that later calls need. Calls beyond the limit wait for a slot
in submission order. Every method is called from the engine thread; workers only complete futures.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future


def _run_tool(fn: Callable, arguments: dict | str):
    result = fn(**arguments) if isinstance(arguments, dict) else fn(arguments)
    return asyncio.run(result) if inspect.isawaitable(result) else result


def _work(future: Future, fn: Callable, arguments: dict | str) -> None:
    try:
        result = _run_tool(fn, arguments)
    except BaseException as err:  # the tool's failure is the call's result
        future.set_exception(err)
    else:
        future.set_result(result)


class ToolRunner:
    def __init__(self, max_concurrent: int = 8) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.max_concurrent = max_concurrent
        self._queued: deque[tuple[Future, Callable, dict | str]] = deque()
        self._live: dict[Future, threading.Thread] = {}  # started and holding a slot
        self._abandoned: list[threading.Thread] = []  # released while still running

    def submit(self, fn: Callable, arguments: dict | str) -> Future:
        future: Future = Future()
        self._queued.append((future, fn, arguments))
        self._fill_slots()
        return future

    def release(self, future: Future) -> None:
        """Frees the call's slot (or drops it from the queue); a call still running is abandoned."""
        thread = self._live.pop(future, None)
        if thread is None:
            future.cancel()  # still queued: it never starts
        elif not future.done():
            self._abandoned.append(thread)
        self._fill_slots()

    @property
    def num_abandoned(self) -> int:
        """Threads of timed-out or cancelled calls that are still running."""
        self._abandoned = [t for t in self._abandoned if t.is_alive()]
        return len(self._abandoned)

    def _fill_slots(self) -> None:
        while self._queued and len(self._live) < self.max_concurrent:
            future, fn, arguments = self._queued.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            thread = threading.Thread(target=_work, args=(future, fn, arguments), daemon=True, name="api-tool")
            self._live[future] = thread
            thread.start()

    def shutdown(self) -> None:
        """Drops queued calls; running ones are abandoned."""
        for future in [f for f, _, _ in self._queued] + list(self._live):
            self.release(future)
