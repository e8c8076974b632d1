"""The waiting queue: requests ordered by a policy's key, with O(log n) insert, pop and removal.

A binary heap of (key, sequence number, request) with lazy deletion: removing a request forgets its
entry, and stale entries are dropped when they reach the top. ``push_front`` puts a request ahead of
every key (a preempted request in FCFS order), later fronts ahead of earlier ones.

Starvation prevention (LAMPS) is a second heap of the requests waiting since a given iteration: once the
oldest has waited ``starvation_threshold`` iterations it is promoted to a starved heap, which is served
first, in the policy's key order among the starved. Promotion looks at the head of the aging heap only,
oldest first and at most ``MAX_PROMOTIONS`` per iteration, so an iteration costs O(log n) per promoted
request and never a pass over every waiting request (when thousands starve at once they are promoted
over several iterations, oldest first).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator

from lamps_jax.request import Request

Key = tuple
MAX_PROMOTIONS = 64  # requests moved to the starved heap in one iteration at most (~0.3 ms)


class WaitingQueue:
    def __init__(self, key: Callable[[Request], Key], starvation_threshold: int | None = None) -> None:
        self.key = key
        self.starvation_threshold = starvation_threshold
        self._order = itertools.count()
        self._fronts = itertools.count(-1, -1)
        self._entry: dict[str, int] = {}  # req_id -> sequence number of its live entry
        self._heap: list[tuple[Key, int, Request]] = []
        self._starved: list[tuple[Key, int, Request]] = []
        self._aging: list[tuple[int, int, Request]] = []  # (iteration it started waiting, seq, request)
        self._since: dict[str, int] = {}  # req_id -> iteration it started waiting, for the requests that age

    def __len__(self) -> int:
        return len(self._entry)

    def __bool__(self) -> bool:
        return bool(self._entry)

    def __contains__(self, request: Request) -> bool:
        return request.req_id in self._entry

    def __iter__(self) -> Iterator[Request]:
        """The waiting requests in admission order (a sorted copy: for tests and reports, not the hot path)."""
        starved = self._live(self._starved)
        starved_seqs = {e[1] for e in starved}
        rest = [e for e in self._live(self._heap) if e[1] not in starved_seqs]
        return iter([e[2] for e in (*starved, *rest)])

    def _live(self, heap: list[tuple[Key, int, Request]]) -> list[tuple[Key, int, Request]]:
        return sorted(e for e in heap if self._entry.get(e[2].req_id) == e[1])

    def push(self, request: Request, iteration: int = 0, ages: bool = False) -> None:
        """Queues ``request`` by its key; ``ages``: it counts iterations waited from ``iteration`` on."""
        self._push(request, self.key(request), iteration, ages)

    def push_front(self, request: Request, iteration: int = 0, ages: bool = False) -> None:
        self._push(request, (float("-inf"), next(self._fronts)), iteration, ages)

    def _push(self, request: Request, key: Key, iteration: int, ages: bool) -> None:
        if request.req_id in self._entry:
            raise ValueError(f"request {request.req_id!r} is already waiting")
        seq = next(self._order)
        self._entry[request.req_id] = seq
        heapq.heappush(self._heap, (key, seq, request))
        if ages and self.starvation_threshold is not None:
            self._since[request.req_id] = iteration
            heapq.heappush(self._aging, (iteration, seq, request))

    def remove(self, request: Request) -> None:
        self._entry.pop(request.req_id)
        self._since.pop(request.req_id, None)

    def promote_starved(self, iteration: int) -> None:
        """Moves the requests passed over ``starvation_threshold`` times to the starved heap, oldest first, up to
        ``MAX_PROMOTIONS`` (call it at the start of iteration ``iteration``: a request queued after iteration k
        has been passed over ``iteration - k - 1`` times)."""
        for _ in range(MAX_PROMOTIONS):
            if not self._aging:
                return
            since, seq, request = self._aging[0]
            if self._entry.get(request.req_id) != seq:
                heapq.heappop(self._aging)
                continue
            if iteration - since <= self.starvation_threshold:
                return
            heapq.heappop(self._aging)
            heapq.heappush(self._starved, (self.key(request), seq, request))

    def peek(self) -> Request:
        """The next request to admit: the first starved one, else the one of smallest key."""
        for heap in (self._starved, self._heap):
            while heap and self._entry.get(heap[0][2].req_id) != heap[0][1]:
                heapq.heappop(heap)
        if self._starved:
            return self._starved[0][2]
        if self._heap:
            return self._heap[0][2]
        raise IndexError("peek from an empty waiting queue")
