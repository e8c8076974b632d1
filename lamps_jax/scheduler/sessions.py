"""Sessions: a conversation's turn keeps its KV for the next turn (a mixin of the ``Scheduler``).

A request with a ``session_id`` that ends normally leaves its KV parked under that id, as a paused
request whose "call" is the client's next turn: the policy picks Preserve, Discard (which releases the
pages to the prefix cache) or Swap, and may still reclaim it under memory pressure like any paused
request. The session's next request adopts the pages that its prompt matches: all of them when it
extends the parked tokens exactly, else the full pages of the common prefix. A parked session is
released when ``expire_sessions`` finds it older than its time to live, or when the scheduler needs its
pages and nothing else can free them.
"""

from __future__ import annotations

from lamps_jax.request import ApiCall, Request, RequestStatus


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


class SessionsMixin:
    """Parks, adopts, releases and expires session KV; the ``Scheduler`` provides the pools and queues."""

    parked: dict[str, Request]  # session id -> the last turn's KV, paused until the next turn

    def _park(self, request: Request) -> None:
        """Moves an ending turn's KV to a paused stand-in for its session, with the policy's strategy."""
        session_id = request.session_id
        if session_id in self.parked:
            self.release_session(session_id)
        now = self.clock.now()
        parked = Request(
            req_id=f"session:{session_id}",
            prompt_token_ids=request.prompt_token_ids + request.output_token_ids,
            sampling_params=request.sampling_params,
            arrival_time=now,
            seed=request.seed,
            session_id=session_id,
        )
        parked.page_ids, parked.host_page_ids = request.page_ids, request.host_page_ids
        parked.page_hashes, parked.num_registered_pages = request.page_hashes, request.num_registered_pages
        parked.num_computed_tokens = request.num_computed_tokens
        request.page_ids, request.host_page_ids, request.num_registered_pages = [], [], 0
        parked.api_call = ApiCall(name="session")
        strategy = self._hold_kv(parked, self.policy.strategy_for_call(parked, parked.api_call, self))
        self.strategy_counts[f"session_{strategy.value}"] += 1
        parked.set_status(RequestStatus.PAUSED_API, now)
        self.paused[parked.req_id] = parked
        self.parked[session_id] = parked

    def release_session(self, session_id: str) -> bool:
        """Frees a parked session's KV (full pages stay in the prefix cache); False if none is parked."""
        parked = self.parked.pop(session_id, None)
        if parked is None:
            return False
        self.paused.pop(parked.req_id, None)
        if parked in self.swap_out_queue:
            self.swap_out_queue.remove(parked)
        self._free_pages(parked)
        return True

    def expire_sessions(self, ttl: float) -> None:
        """Releases every session parked for ``ttl`` seconds or more."""
        now = self.clock.now()
        for session_id in [s for s, parked in self.parked.items() if now - parked.arrival_time >= ttl]:
            self.release_session(session_id)

    def _adopt(self, request: Request, parked: Request) -> bool:
        """Gives a session's next request the parked KV its prompt matches; True if it went to the swap-in queue."""
        self.paused.pop(parked.req_id)
        self.policy.on_api_return(parked, parked.api_call, self.clock.now() - parked.arrival_time)
        if parked in self.swap_out_queue:  # its copy was not issued: the pages are still on the device
            self.swap_out_queue.remove(parked)
            self._free_host_pages(parked)
        computed = parked.num_computed_tokens
        matched = _common_prefix(parked.prompt_token_ids[:computed], request.prompt_token_ids[:-1])
        if matched == computed and parked.host_page_ids and not parked.page_ids:  # swapped out whole
            request.host_page_ids, parked.host_page_ids = parked.host_page_ids, []
            request.num_computed_tokens = computed
            request.page_hashes = parked.page_hashes
            self.swap_in_queue.append(request)
            request.set_status(RequestStatus.SWAPPED, self.clock.now())
            return True
        self._free_host_pages(parked)
        on_device = min(matched, len(parked.page_ids) * self.page_size)
        keep = len(parked.page_ids) if on_device == computed else on_device // self.page_size
        request.page_ids, parked.page_ids = parked.page_ids[:keep], parked.page_ids[keep:]
        request.num_computed_tokens = on_device if on_device == computed else keep * self.page_size
        request.num_registered_pages = min(parked.num_registered_pages, keep)
        request.page_hashes = parked.page_hashes[: request.num_registered_pages]
        self._free_pages(parked)
        return False
