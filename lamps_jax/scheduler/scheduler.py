"""The budget loop shared by every policy (pure Python, no JAX).

One rule covers prefill, chunked prefill, recompute and decode: each scheduled request gets tokens
until its computed count catches up with its token count, within a per-iteration token budget and
the free pages. Running requests go first (decodes before prefill chunks when ``decodes_first``,
otherwise in admission order); waiting requests follow in the policy's order.

Admission (``SchedulerConfig.admission``): ``chunk`` gives a waiting request pages for its first chunk
(vLLM v1, INFERCEPT's and LAMPS's chunk-fill schedulers); ``whole`` is vLLM 0.2's block manager: a
request is admitted only when pages for its whole current length are free, and an iteration that
admits runs prompts only (up to ``max_prompt_batch_tokens``), without decodes.

When a running request needs a page and none is free, the policy names a victim: a paused request it
marks (INFERCEPT, LAMPS), else the latest-arrived running request not yet scheduled this step, else
the request itself. A victim is recomputed (pages freed, back to waiting) or, for a policy that
preempts by swap (INFERCEPT), loses just enough pages from the tail of its context to the host; its
tail comes back before it runs again.

Idle KV (a parked session's, or that of a waiting request: a turn's adopted session KV, a resumed
Preserve that found no slot) gives way as a last resort: before a running request with no victim
preempts itself, and when a step could move nothing at all while requests wait. Parked sessions go
first, longest parked first; then waiting requests, latest in admission order first.

Paused requests (API calls) leave the running set with a KV strategy: Preserve keeps the pages,
Discard frees them (the context is recomputed from the waiting queue on return), Swap copies them
to host memory within the swap budget (falling back to Discard when the host pool is full) and
copies them back into fresh device pages before the request runs again.

Sessions (a turn's KV kept for the conversation's next turn) live in ``sessions.py``, the swap budgets and copies
in ``swaps.py``.

Contract: ``schedule()`` returns what runs; after the runner executes it, ``update()`` must be
called with the runner's output exactly once. The scheduler owns the device and host page pools.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from lamps_jax.clock import Clock
from lamps_jax.config import SchedulerConfig
from lamps_jax.paged_kv.page_pool import PagePool
from lamps_jax.request import ApiCall, KVStrategy, Request, RequestStatus
from lamps_jax.scheduler.cost_model import load_cost_model
from lamps_jax.scheduler.output import RunnerOutput, ScheduledChunk, SchedulerOutput, SwapCopy
from lamps_jax.scheduler.policies import make_policy
from lamps_jax.scheduler.prefix import register_full_pages, take_cached_prefix
from lamps_jax.scheduler.sessions import SessionsMixin
from lamps_jax.scheduler.swaps import SwapsMixin
from lamps_jax.scheduler.waiting_queue import WaitingQueue

SESSION_TURN_ENDS = (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH)


@dataclass
class _Step:
    """What one ``schedule()`` call has decided so far, and the budgets it has left."""

    tokens_left: int
    swap_out_left: int
    swap_in_left: int
    swap_out_budget: int
    swap_in_budget: int
    scheduled: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    swap_out: list[SwapCopy] = field(default_factory=list)
    swap_in: list[SwapCopy] = field(default_factory=list)
    pinned: set[str] = field(default_factory=set)  # scheduled or swapped in: never a victim this step
    host_pages_read: list[int] = field(default_factory=list)  # freed once the step's copies are issued
    tail_waits: set[str] = field(default_factory=set)  # running, but their host tail cannot come back this step
    short_of_pages: bool = False

    def output(self) -> SchedulerOutput:
        return SchedulerOutput(self.scheduled, self.preempted, self.swap_out, self.swap_in)

    @property
    def moved_anything(self) -> bool:
        return bool(self.scheduled or self.preempted or self.swap_out or self.swap_in)

    def schedule(self, request: Request, num_new: int) -> None:
        self.scheduled.append(ScheduledChunk.of(request, num_new))
        self.tokens_left -= num_new
        self.pinned.add(request.req_id)


class Scheduler(SessionsMixin, SwapsMixin):
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
        self.waiting = WaitingQueue(self.policy.waiting_key, self.policy.starvation_threshold)
        self.running: list[Request] = []
        self.paused: dict[str, Request] = {}  # API call in flight
        self.swap_out_queue: deque[Request] = deque()  # paused with Swap, copy not issued yet
        self.swap_in_queue: deque[Request] = deque()  # all its pages on the host, to come back whole
        self.parked: dict[str, Request] = {}  # session id -> the last turn's KV, paused until the next turn
        self.requests: dict[str, Request] = {}
        self.iteration = 0  # schedule() calls so far
        self.strategy_counts: Counter[str] = Counter()  # per API call: the strategy used (and later changes)
        self.prefix_cache_pages: Counter[str] = Counter()  # full pages looked up in the prefix cache, and hit

    # ---- queue management -------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        if request.req_id in self.requests:
            raise ValueError(f"request id {request.req_id!r} is already in use")
        self.requests[request.req_id] = request
        parked = self.parked.pop(request.session_id, None) if request.session_id is not None else None
        if parked is not None and self._adopt(request, parked):
            return  # all of its KV was on the host: it comes back through the swap-in queue
        self.policy.enqueue(self, request, "arrival")

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def finish_request(self, req_id: str, status: RequestStatus) -> Request | None:
        """Ends a request (abort, stop string, error) and frees its pages, or parks them when a session's turn
        ends normally; None if unknown."""
        request = self.requests.pop(req_id, None)
        if request is None:
            return None
        if request.session_id is not None and status in SESSION_TURN_ENDS and request.page_ids:
            self._park(request)
        for queue in (self.running, self.swap_out_queue, self.swap_in_queue):
            if request in queue:
                queue.remove(request)
        if request in self.waiting:
            self.waiting.remove(request)
        self.paused.pop(req_id, None)
        self._free_pages(request)
        request.set_status(status, self.clock.now())
        return request

    # ---- API calls --------------------------------------------------------------------------
    def pause(self, request: Request, call: ApiCall) -> KVStrategy:
        """Takes a running request out for an API call, with the policy's strategy; returns the one used."""
        request.api_call = call  # policies read the call in flight
        chosen = self.policy.strategy_for_call(request, call, self)  # sees the batch with the request in it
        self.running.remove(request)
        strategy = self._hold_kv(request, chosen)
        self.strategy_counts[strategy.value] += 1
        request.num_api_calls += 1
        self.paused[request.req_id] = request
        request.set_status(RequestStatus.PAUSED_API, self.clock.now())
        return strategy

    def _hold_kv(self, request: Request, strategy: KVStrategy) -> KVStrategy:
        """Applies a paused request's strategy to its KV; Swap falls back to Discard when the host has no room
        (or already holds part of the context). Returns the strategy used, also set on the request."""
        if strategy is KVStrategy.SWAP and (request.host_page_ids or not self._reserve_host_pages(request)):
            strategy = KVStrategy.DISCARD
        if strategy is KVStrategy.DISCARD:
            self._discard(request)  # with prefix caching, its full pages stay cached
        elif strategy is KVStrategy.SWAP:
            self.swap_out_queue.append(request)
        request.strategy = strategy  # cleared on resume
        return strategy

    def discard_paused(self, request: Request) -> None:
        """A policy's late decision: a paused request's KV (on the device or the host) is dropped."""
        if request in self.swap_out_queue:
            self.swap_out_queue.remove(request)
        self._discard(request)
        self.strategy_counts[f"{request.strategy.value}->discard"] += 1
        request.strategy = KVStrategy.DISCARD

    def swap_paused(self, request: Request) -> KVStrategy:
        """A policy's late decision: a preserved paused request's KV goes to the host (or is dropped when the host
        has no room); returns the strategy used."""
        strategy = self._hold_kv(request, KVStrategy.SWAP)
        self.strategy_counts[f"{KVStrategy.PRESERVE.value}->{strategy.value}"] += 1
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
            self.running.append(request)  # a tail on the host comes back before it runs
            request.set_status(RequestStatus.RUNNING, now)
        elif request.strategy is KVStrategy.PRESERVE:  # no room: first in line, keeping its pages
            self.waiting.push_front(request)
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
        self.iteration += 1
        self.policy.on_iteration(self)
        step = self._plan_step()
        while not step.moved_anything and (self.waiting or self.swap_in_queue) and self._drop_idle_kv(spare_next=True):
            step = self._plan_step()  # nothing could move, and idle KV was in the way
        return self._finish_step(step)

    def _plan_step(self) -> _Step:
        swap_out, swap_in = self._swap_budgets()
        step = _Step(self.policy.token_budget(self), swap_out, swap_in, swap_out, swap_in)
        self._issue_swap_outs(step)
        self._issue_swap_ins(step)
        if self.config.admission == "whole" and not self.swap_in_queue and self._admit_whole_prompts(step):
            return step  # vLLM 0.2: an iteration that admits prompts runs only them
        self._schedule_running(step)
        if self.config.admission == "chunk" and not step.preempted and not step.short_of_pages:
            self._admit_chunks(step)
        return step

    def _finish_step(self, step: _Step) -> SchedulerOutput:
        if step.host_pages_read:  # host pages read by this step's swap-ins are reused only from the next step
            self.host_pool.free(step.host_pages_read)
        return step.output()

    def _running_order(self) -> list[Request]:
        if not self.config.decodes_first:
            return list(self.running)
        decodes = [r for r in self.running if r.num_tokens - r.num_computed_tokens == 1]
        return decodes + [r for r in self.running if r.num_tokens - r.num_computed_tokens != 1]

    def _schedule_running(self, step: _Step) -> None:
        order = self._running_order()
        for pos, request in enumerate(order):
            if step.tokens_left <= 0:
                return
            if request.status is not RequestStatus.RUNNING:
                continue  # preempted earlier in this step
            if request.host_page_ids and not self._swap_in_tail(request, step):
                step.tail_waits.add(request.req_id)
                continue
            num_new = min(request.num_tokens - request.num_computed_tokens, step.tokens_left)
            if self._make_room(request, request.num_computed_tokens + num_new, order, pos, step):
                step.schedule(request, num_new)

    def _make_room(self, request: Request, num_tokens: int, order: list[Request], pos: int, step: _Step) -> bool:
        """Grows ``order[pos]`` to ``num_tokens`` tokens, preempting victims while pages are short: paused ones
        the policy marks, then running ones after it in ``order`` that this step has not scheduled, and only then
        ones before it that wait for their host tail: a request that cannot run must not hold the pages of one
        that can (two requests that each lack a page would otherwise take turns evicting each other for ever)."""
        while not self._grow_pages(request, num_tokens):
            candidates = [
                r
                for r in order[pos + 1 :]
                if r.status is RequestStatus.RUNNING and r.page_ids and r.req_id not in step.pinned
            ] or [r for r in order[:pos] if r.req_id in step.tail_waits and r.page_ids]
            victim = self.policy.choose_victim(self, candidates)
            if victim is None and self._drop_idle_kv(spare_next=False):
                continue
            if victim is None and request.req_id in step.pinned:  # its swap-in this step still needs its pages
                step.short_of_pages = True
                return False
            victim = victim or request
            if self.policy.preempts_by_swap:
                missing = self.pages_for(num_tokens) - len(request.page_ids) - self.page_pool.num_free
                if missing > step.swap_out_left:  # INFERCEPT delays the request rather than exceed the budget
                    step.short_of_pages = True
                    return False
                self._swap_out_tail(victim, missing, step)
            else:
                self._preempt(victim, step)
            if victim is request:
                step.short_of_pages = True
                return False
        return True

    def _drop_idle_kv(self, spare_next: bool) -> bool:
        """Last resort when pages are short and nothing running can give them back: drops the KV of the session
        parked longest that holds device pages, else of the waiting request latest in admission order that holds
        some (adopted session KV, a resumed Preserve that found no slot), which is recomputed when admitted;
        ``spare_next``: not the next to be admitted (it is the one that needs the pages). False if no one holds
        any."""
        session_id = next((s for s, parked in self.parked.items() if parked.page_ids), None)
        if session_id is not None:
            self.release_session(session_id)
            self.strategy_counts["session_kv_dropped"] += 1
            return True
        holders = [r for r in list(self.waiting)[int(spare_next) :] if r.page_ids]
        if not holders:
            return False
        self._discard(holders[-1])
        self.strategy_counts["waiting_kv_dropped"] += 1
        return True

    def _admit_chunks(self, step: _Step) -> None:
        """Chunk admission: a waiting request starts with pages for the chunk it runs now."""
        while self.waiting and step.tokens_left > 0 and len(self.running) < self.config.max_num_seqs:
            request = self.waiting.peek()
            looked_up = self._take_cached_prefix(request)
            num_new = min(request.num_tokens - request.num_computed_tokens, step.tokens_left)
            if not self.policy.admits(self, request, num_new) or not self._grow_pages(
                request, request.num_computed_tokens + num_new
            ):
                self._return_cached_prefix(request, looked_up)
                return
            self._admit(request, looked_up)
            step.schedule(request, num_new)

    def _admit_whole_prompts(self, step: _Step) -> bool:
        """vLLM 0.2 admission: whole prompts whose pages are all free (leaving the watermark's share of the pages
        free), up to the prompt batch's tokens."""
        tokens = 0
        watermark = self.config.admission_watermark * self.page_pool.num_usable
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            request = self.waiting.peek()
            looked_up = self._take_cached_prefix(request)
            num_new = request.num_tokens - request.num_computed_tokens
            missing = self.pages_for(request.num_tokens) - len(request.page_ids)
            too_many_tokens = step.scheduled and tokens + num_new > self.config.max_prompt_batch_tokens
            if too_many_tokens or self.page_pool.num_free - missing < watermark:
                self._return_cached_prefix(request, looked_up)
                break
            self._grow_pages(request, request.num_tokens)
            self._admit(request, looked_up)
            step.schedule(request, num_new)
            tokens += num_new
        return bool(step.scheduled)

    def _take_cached_prefix(self, request: Request) -> int:
        """With prefix caching, a request holding no pages takes its cached leading pages; returns the number of
        full pages looked up."""
        if not self.config.enable_prefix_caching or request.page_ids:
            return 0
        return take_cached_prefix(self.page_pool, request, self.page_size, self.cache_salt)

    def _return_cached_prefix(self, request: Request, looked_up: int) -> None:
        if looked_up:
            self._discard(request)  # the cached pages go back to the cache until it fits

    def _admit(self, request: Request, looked_up: int = 0) -> None:
        self.prefix_cache_pages["queried"] += looked_up
        self.prefix_cache_pages["hit"] += request.num_computed_tokens // self.page_size if looked_up else 0
        self.waiting.remove(request)
        self.running.append(request)
        request.set_status(RequestStatus.RUNNING, self.clock.now())

    # ---- after the step ---------------------------------------------------------------------
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

    def _preempt(self, request: Request, step: _Step) -> None:
        """Recompute preemption: a running request loses its KV and goes back to waiting; a paused one is
        discarded and recomputed when its call returns."""
        if request.status is RequestStatus.PAUSED_API:
            self.discard_paused(request)
            return
        self.running.remove(request)
        self._discard(request)
        step.preempted.append(request.req_id)
        request.set_status(RequestStatus.WAITING, self.clock.now())
        self.policy.enqueue(self, request, "preempted")
