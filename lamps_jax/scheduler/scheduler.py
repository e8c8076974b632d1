"""The budget loop shared by every policy (pure Python, no JAX).

One rule covers prefill, chunked prefill, recompute and decode: each scheduled request gets tokens
until its computed count catches up with its token count, within a per-iteration token budget and
the free pages. Running requests go first (in admission order); waiting requests follow in the
policy's order. When a running request needs a page and none is free, the policy picks a victim
among the running requests not yet scheduled this step and not swapped in this step; the victim's
pages are freed and it goes back to the front of the waiting queue to be recomputed.

Paused requests (API calls) leave the running set with a KV strategy: Preserve keeps the pages,
Discard frees them (the context is recomputed from the waiting queue on return), Swap copies them
to host memory within a per-iteration swap budget (falling back to Discard when the host pool is
full) and copies them back into fresh device pages before the request runs again.

Contract: ``schedule()`` returns what runs; after the runner executes it, ``update()`` must be
called with the runner's output exactly once. The scheduler owns the device and host page pools.
"""

from __future__ import annotations

from collections import Counter, deque

from lamps_jax.clock import Clock
from lamps_jax.config import SchedulerConfig
from lamps_jax.paged_kv.page_pool import PagePool
from lamps_jax.request import ApiCall, KVStrategy, Request, RequestStatus
from lamps_jax.scheduler.cost_model import load_cost_model
from lamps_jax.scheduler.output import RunnerOutput, ScheduledChunk, SchedulerOutput, SwapCopy
from lamps_jax.scheduler.policies import make_policy
from lamps_jax.scheduler.prefix import register_full_pages, take_cached_prefix


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        page_pool: PagePool,
        page_size: int,
        max_model_len: int,
        clock: Clock,
        cache_salt: int = 0,
    ) -> None:
        self.config = config
        self.cache_salt = cache_salt  # names the model in prefix-cache hashes
        self.page_pool = page_pool
        self.host_pool = PagePool(config.num_host_pages + 1) if config.num_host_pages else None
        self.page_size = page_size
        self.max_model_len = max_model_len
        self.clock = clock
        self.policy = make_policy(config, load_cost_model(config.cost_profile))
        self.waiting: list[Request] = []  # in the policy's admission order
        self.running: list[Request] = []
        self.paused: dict[str, Request] = {}  # API call in flight
        self.swap_out_queue: deque[Request] = deque()  # paused with Swap, copy not issued yet
        self.swap_in_queue: deque[Request] = deque()  # call returned, pages on the host
        self.requests: dict[str, Request] = {}
        self.strategy_counts: Counter[str] = Counter()  # per API call: the strategy used (and later swaps)
        self.prefix_cache_pages: Counter[str] = Counter()  # full pages looked up in the prefix cache, and hit

    # ---- queue management -------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        if request.req_id in self.requests:
            raise ValueError(f"request id {request.req_id!r} is already in use")
        self.requests[request.req_id] = request
        self.policy.enqueue(self, request, "arrival")

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def finish_request(self, req_id: str, status: RequestStatus) -> Request | None:
        """Ends a request (abort, stop string, error) and frees its pages; None if unknown."""
        request = self.requests.pop(req_id, None)
        if request is None:
            return None
        for queue in (self.running, self.waiting, self.swap_out_queue, self.swap_in_queue):
            if request in queue:
                queue.remove(request)
        self.paused.pop(req_id, None)
        self._free_pages(request)
        request.set_status(status, self.clock.now())
        return request

    # ---- API calls --------------------------------------------------------------------------
    def pause(self, request: Request, call: ApiCall) -> KVStrategy:
        """Takes a running request out for an API call, with the policy's strategy; returns the one used."""
        strategy = self.policy.strategy_for_call(request, call, self)
        self.running.remove(request)
        if strategy is KVStrategy.SWAP and not self._reserve_host_pages(request):
            strategy = KVStrategy.DISCARD
        if strategy is KVStrategy.DISCARD:
            self._discard(request)
        elif strategy is KVStrategy.SWAP:
            self.swap_out_queue.append(request)
        request.strategy, request.api_call = strategy, call  # both cleared on resume
        self.strategy_counts[strategy.value] += 1
        request.num_api_calls += 1
        self.paused[request.req_id] = request
        request.set_status(RequestStatus.PAUSED_API, self.clock.now())
        return strategy

    def resume(self, req_id: str, token_ids: list[int]) -> None:
        """Appends an API result to a paused request and queues it to run again."""
        request = self.paused.pop(req_id)
        now = self.clock.now()
        self.policy.on_api_return(request, request.api_call, now - request.events[-1][1])
        request.output_token_ids.extend(token_ids)
        request.result_end = len(request.output_token_ids)
        request.api_call = None
        self.policy.on_resume(self, request)
        if request in self.swap_out_queue:  # returned before its copy was issued: still on the device
            self.swap_out_queue.remove(request)
            self._free_host_pages(request)
            request.strategy = KVStrategy.PRESERVE
        if request.strategy is KVStrategy.PRESERVE and len(self.running) < self.config.max_num_seqs:
            self.running.append(request)
            request.set_status(RequestStatus.RUNNING, now)
        elif request.strategy is KVStrategy.PRESERVE:  # no room: first in line, keeping its pages
            self.waiting.insert(0, request)
            request.set_status(RequestStatus.WAITING, now)
        elif request.strategy is KVStrategy.SWAP:
            self.swap_in_queue.append(request)
            request.set_status(RequestStatus.SWAPPED, now)
        else:
            request.set_status(RequestStatus.WAITING, now)
            self.policy.enqueue(self, request, "resume")
        request.strategy = None

    # ---- one iteration ----------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        self.policy.on_iteration(self)
        swap_out, swap_in = self._schedule_swaps()
        budget = self.config.max_num_batched_tokens
        scheduled: list[ScheduledChunk] = []
        preempted: list[str] = []

        # A request swapped in this step is never a victim: its swap-in still scatters into its pages.
        swapped_in = {copy.req_id for copy in swap_in}
        short_of_pages = False
        idx = 0
        while idx < len(self.running) and budget > 0:
            request = self.running[idx]
            num_new = min(request.num_tokens - request.num_computed_tokens, budget)
            fits = self._grow_pages(request, request.num_computed_tokens + num_new)
            while not fits:
                candidates = [r for r in self.running[idx:] if r.req_id not in swapped_in]
                if not candidates:  # only this step's swap-ins could make room: wait a step
                    short_of_pages = True
                    break
                victim = self.policy.choose_victim(candidates)
                self._preempt(victim)
                preempted.append(victim.req_id)
                if victim is request:
                    break
                fits = self._grow_pages(request, request.num_computed_tokens + num_new)
            if fits:
                scheduled.append(ScheduledChunk.of(request, num_new))
                budget -= num_new
            if idx < len(self.running) and self.running[idx] is request:
                idx += 1

        while (
            self.waiting
            and budget > 0
            and not preempted
            and not short_of_pages
            and len(self.running) < self.config.max_num_seqs
        ):
            request = self.policy.next_waiting(self.waiting)
            looked_up = 0
            if self.config.enable_prefix_caching and not request.page_ids:
                looked_up = take_cached_prefix(self.page_pool, request, self.page_size, self.cache_salt)
            num_new = min(request.num_tokens - request.num_computed_tokens, budget)
            if not self._grow_pages(request, request.num_computed_tokens + num_new):
                if looked_up:
                    self._discard(request)  # the cached pages go back to the cache until it fits
                break
            self.prefix_cache_pages["queried"] += looked_up
            self.prefix_cache_pages["hit"] += request.num_computed_tokens // self.page_size if looked_up else 0
            self.waiting.remove(request)
            request.iterations_waited = 0
            self.running.append(request)
            request.set_status(RequestStatus.RUNNING, self.clock.now())
            scheduled.append(ScheduledChunk.of(request, num_new))
            budget -= num_new
        self.policy.after_admission(self)
        return SchedulerOutput(scheduled, preempted, swap_out, swap_in)

    def _schedule_swaps(self) -> tuple[list[SwapCopy], list[SwapCopy]]:
        """Issues queued swap-outs, then swap-ins that fit, within the per-iteration page budget."""
        budget = self.config.max_swap_pages_per_step
        swap_out, swap_in = [], []
        queued = sum(len(r.page_ids) for r in self.swap_out_queue)
        for request in self.policy.swap_candidates(self):  # preserved requests the policy moves out now
            if queued and queued + len(request.page_ids) > budget:
                break
            if self._reserve_host_pages(request):
                request.strategy = KVStrategy.SWAP
                self.swap_out_queue.append(request)
                self.strategy_counts["preserve->swap"] += 1
                queued += len(request.page_ids)
        while self.swap_out_queue and self._fits_swap_budget(len(self.swap_out_queue[0].page_ids), budget):
            request = self.swap_out_queue.popleft()
            budget -= len(request.page_ids)
            swap_out.append(SwapCopy(request.req_id, request.page_ids, list(request.host_page_ids)))
            # The copy is dispatched before the step that may reuse these pages, so they free now.
            self.page_pool.free(request.page_ids)
            request.page_ids, request.num_registered_pages = [], 0
        while self.swap_in_queue and len(self.running) < self.config.max_num_seqs:
            request = self.swap_in_queue[0]
            num_pages = len(request.host_page_ids)
            if not self._fits_swap_budget(num_pages, budget) or not self.page_pool.can_allocate(num_pages):
                break
            self.swap_in_queue.popleft()
            budget -= num_pages
            request.page_ids = self.page_pool.allocate(num_pages)
            swap_in.append(SwapCopy(request.req_id, list(request.page_ids), request.host_page_ids))
            self._free_host_pages(request)
            self.running.append(request)
            request.set_status(RequestStatus.RUNNING, self.clock.now())
        return swap_out, swap_in

    def update(self, sched_out: SchedulerOutput, runner_out: RunnerOutput) -> list[Request]:
        """Advances computed counts, appends sampled tokens; returns the requests that finished."""
        for chunk in sched_out.scheduled:
            chunk.request.num_computed_tokens += chunk.num_new_tokens
            if self.config.enable_prefix_caching:
                register_full_pages(self.page_pool, chunk.request, self.page_size, self.cache_salt)
        now = self.clock.now()
        finished = []
        for req_id, sampled in zip(runner_out.req_ids, runner_out.sampled_token_ids, strict=True):
            request = self.requests[req_id]
            token = request.choose_token(sampled)
            request.append_generated(token)
            if request.first_token_time is None:
                request.first_token_time = now
            status = self._stop_status(request, token)
            if status is not None:
                finished.append(self.finish_request(req_id, status))
        return finished

    # ---- helpers ----------------------------------------------------------------------------
    def _stop_status(self, request: Request, token: int) -> RequestStatus | None:
        params = request.sampling_params
        if (not params.ignore_eos and token in request.eos_token_ids) or token in params.stop_token_ids:
            request.stop_reason = token
            return RequestStatus.FINISHED_STOPPED
        # A scripted request decodes exactly its segments (the engine ends it there), not max_tokens.
        out_of_tokens = not request.segments and request.num_generated_tokens >= params.max_tokens
        if out_of_tokens or request.num_tokens >= self.max_model_len:
            return RequestStatus.FINISHED_LENGTH
        return None

    def pages_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.page_size)

    def _grow_pages(self, request: Request, num_tokens: int) -> bool:
        """Gives the request pages for its first ``num_tokens`` tokens; False if too few are free."""
        missing = self.pages_for(num_tokens) - len(request.page_ids)
        if missing <= 0:
            return True
        if not self.page_pool.can_allocate(missing):
            return False
        request.page_ids.extend(self.page_pool.allocate(missing))
        return True

    def _fits_swap_budget(self, num_pages: int, budget_left: int) -> bool:
        """A copy fits what is left of the budget; one larger than the whole budget goes alone."""
        return num_pages <= budget_left or budget_left == self.config.max_swap_pages_per_step

    def _reserve_host_pages(self, request: Request) -> bool:
        if self.host_pool is None or not self.host_pool.can_allocate(len(request.page_ids)):
            return False
        request.host_page_ids = self.host_pool.allocate(len(request.page_ids))
        return True

    def _free_host_pages(self, request: Request) -> None:
        if request.host_page_ids:
            self.host_pool.free(request.host_page_ids)
            request.host_page_ids = []

    def _free_pages(self, request: Request) -> None:
        self.page_pool.free(request.page_ids)  # with prefix caching, full pages stay cached until evicted
        request.page_ids, request.num_registered_pages = [], 0
        self._free_host_pages(request)

    def _discard(self, request: Request) -> None:
        """Drops the request's KV: everything it holds is recomputed when it runs again."""
        self._free_pages(request)
        request.num_computed_tokens = 0

    def _preempt(self, request: Request) -> None:
        self.running.remove(request)
        self._discard(request)
        request.set_status(RequestStatus.WAITING, self.clock.now())
        self.policy.enqueue(self, request, "preempted")
