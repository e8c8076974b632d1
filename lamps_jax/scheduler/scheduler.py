"""The budget loop shared by every policy (pure Python, no JAX).

One rule covers prefill, chunked prefill, recompute and decode: each scheduled request gets tokens
until its computed count catches up with its token count, within a per-iteration token budget and
the free pages. Running requests go first (in admission order); waiting requests follow in the
policy's order. When a running request needs a page and none is free, the policy picks a victim
among the running requests not yet scheduled this step; the victim's pages are freed and it goes
back to the front of the waiting queue to be recomputed.

Contract: ``schedule()`` returns what runs; after the runner executes it, ``update()`` must be
called with the runner's output exactly once. The scheduler owns the page pool.
"""

from __future__ import annotations

from collections import deque

from lamps_jax.clock import Clock
from lamps_jax.config import SchedulerConfig
from lamps_jax.paged_kv.page_pool import PagePool
from lamps_jax.request import Request, RequestStatus
from lamps_jax.scheduler.output import RunnerOutput, ScheduledChunk, SchedulerOutput
from lamps_jax.scheduler.policies import make_policy


class Scheduler:
    def __init__(
        self, config: SchedulerConfig, page_pool: PagePool, page_size: int, max_model_len: int, clock: Clock
    ) -> None:
        self.config = config
        self.page_pool = page_pool
        self.page_size = page_size
        self.max_model_len = max_model_len
        self.clock = clock
        self.policy = make_policy(config.policy)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}

    # ---- queue management -------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        if request.req_id in self.requests:
            raise ValueError(f"request id {request.req_id!r} is already in use")
        self.requests[request.req_id] = request
        self.waiting.append(request)

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def finish_request(self, req_id: str, status: RequestStatus) -> Request | None:
        """Ends a request (abort, stop string, error) and frees its pages; None if unknown."""
        request = self.requests.pop(req_id, None)
        if request is None:
            return None
        if request in self.running:
            self.running.remove(request)
        else:
            self.waiting.remove(request)
        self._free_pages(request)
        request.set_status(status, self.clock.now())
        return request

    # ---- one iteration ----------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        budget = self.config.max_num_batched_tokens
        scheduled: list[ScheduledChunk] = []
        preempted: list[str] = []

        idx = 0
        while idx < len(self.running) and budget > 0:
            request = self.running[idx]
            num_new = min(request.num_tokens - request.num_computed_tokens, budget)
            fits = self._grow_pages(request, request.num_computed_tokens + num_new)
            while not fits:
                victim = self.policy.choose_victim(self.running[idx:])
                self._preempt(victim)
                preempted.append(victim.req_id)
                if victim is request:
                    break
                fits = self._grow_pages(request, request.num_computed_tokens + num_new)
            if fits:
                scheduled.append(ScheduledChunk(request, num_new, request.num_computed_tokens))
                budget -= num_new
                idx += 1

        while self.waiting and budget > 0 and not preempted and len(self.running) < self.config.max_num_seqs:
            request = self.policy.next_waiting(self.waiting)
            num_new = min(request.num_tokens - request.num_computed_tokens, budget)
            if not self._grow_pages(request, request.num_computed_tokens + num_new):
                break
            self.waiting.remove(request)
            self.running.append(request)
            request.set_status(RequestStatus.RUNNING, self.clock.now())
            scheduled.append(ScheduledChunk(request, num_new, request.num_computed_tokens))
            budget -= num_new
        return SchedulerOutput(scheduled, preempted)

    def update(self, sched_out: SchedulerOutput, runner_out: RunnerOutput) -> list[Request]:
        """Advances computed counts, appends sampled tokens; returns the requests that finished."""
        for chunk in sched_out.scheduled:
            chunk.request.num_computed_tokens += chunk.num_new_tokens
        now = self.clock.now()
        finished = []
        for req_id, token in zip(runner_out.req_ids, runner_out.sampled_token_ids, strict=True):
            request = self.requests[req_id]
            request.output_token_ids.append(token)
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
        if request.num_output_tokens >= params.max_tokens or request.num_tokens >= self.max_model_len:
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

    def _free_pages(self, request: Request) -> None:
        self.page_pool.free(request.page_ids)
        request.page_ids = []

    def _preempt(self, request: Request) -> None:
        self.running.remove(request)
        self._free_pages(request)
        request.num_computed_tokens = 0
        request.set_status(RequestStatus.WAITING, self.clock.now())
        self.waiting.appendleft(request)
