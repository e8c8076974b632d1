"""Continuum (CacheTTL): a paused request's KV is pinned for a time-to-live chosen per tool; program-level FCFS.

Follows Li et al., "Continuum: Efficient and Robust Multi-Turn LLM Agent Scheduling with KV Cache Time-to-Live"
(arXiv 2511.02230; v4 renames it CacheTTL), a fork of vLLM v1 (github.com/Hanchenli/vllm-continuum, which the
search tools here could not reach: this follows the paper's text, not its code). What the paper states: a request
that makes a tool call has its KV pinned on the device for a TTL chosen from the reload cost, the queueing delay an
eviction adds, and the tool's duration distribution; when the TTL runs out before the call returns the KV is
evicted; waiting requests are served first-come-first-served by program.

Here: at a call of context C, with the tool's observed durations d_1..d_n (``ApiTimePredictor.observed``), the TTL
is tau* = argmax over tau in {0, d_1..d_n} of U(tau) = F(tau)·(W_D + C·Q) - C·E[min(D, tau)], F the empirical CDF:
the call returns within tau with probability F(tau) and then saves the reload area W_D (``discard_waste``: the
chunked recompute, the other running requests' memory included) and C tokens' worth of queueing delay Q; pinning
costs C tokens for min(D, tau) seconds. tau* = 0 discards at the call; otherwise the call Preserves for tau* plus
one full iteration f(B) (the engine sees a result at its next step, so a call back within tau* is not lost to the
step running when it returned), and a pin whose time has passed is released at the next iteration, or at the
call's return if no iteration came between (the pages go back to the pool; with prefix caching their full pages
stay cached). A program is a session (``session_id``)
or else the request with all its calls; waiting requests go by their program's first arrival, then their own.

Guesses (the paper's formula was not at hand):
- the form and unit of U (tokens x seconds, this package's waste unit, as INFERCEPT's and LAMPS's equations),
  and the one-iteration grace on top of tau*;
- Q = the time to compute the tokens of the waiting requests ahead in program order, ceil(tokens / B)·f(B);
- cold start: with no observed duration of the tool, its predicted mean (``ApiTimePredictor.default``, 1 s) as the
  only point; with ``api_time_source="oracle"`` the call's true duration is the only point;
- a pinned request is never a preemption victim (vLLM v1 preempts running requests: the latest program's first);
  a preempted request goes back to the front of the queue (vLLM v1's ``prepend_request``);
- prefix caching on, as vLLM v1 runs by default (``config.PREFIX_CACHING_POLICIES``): a released pin's full pages
  stay cached until evicted.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence

from lamps_jax.config import SchedulerConfig
from lamps_jax.request import ApiCall, KVStrategy, Request
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.policies.base import Policy
from lamps_jax.scheduler.waste import discard_waste


class ProgramArrivals:
    """A program's first arrival: its session's first turn, or the request's own arrival."""

    def __init__(self) -> None:
        self._sessions: dict[str, float] = {}  # session id -> arrival of its first turn seen

    def __call__(self, request: Request) -> float:
        if request.session_id is None:
            return request.arrival_time
        return self._sessions.setdefault(request.session_id, request.arrival_time)


def choose_ttl(durations: Sequence[float], context: int, benefit: float) -> float:
    """tau* = argmax over tau in {0} ∪ durations of F(tau)·benefit - context·E[min(D, tau)] (0 when nothing beats 0)."""
    ordered = sorted(durations)
    n = len(ordered)
    best_utility, best_ttl, below = 0.0, 0.0, 0.0
    for k, duration in enumerate(ordered, start=1):
        below += duration
        utility = k / n * benefit - context * (below + (n - k) * duration) / n
        if utility > best_utility:
            best_utility, best_ttl = utility, duration
    return best_ttl


class ContinuumPolicy(Policy):
    name = "continuum"

    def __init__(self, config: SchedulerConfig, cost: CostModel) -> None:
        super().__init__(config, cost)
        self.program_arrival = ProgramArrivals()
        self.expiry: dict[str, float] = {}  # req_id of a pinned paused request -> when its TTL runs out
        self._expiries: list[tuple[float, int, str]] = []  # heap of (expiry, seq, req_id); stale entries skipped
        self._seq = itertools.count()

    def waiting_key(self, request: Request) -> tuple:
        return (self.program_arrival(request), request.arrival_time)

    def ttl(self, request: Request, call: ApiCall, scheduler) -> float:
        """Seconds to pin the KV of ``request`` for ``call`` (0: not worth pinning)."""
        if self.config.api_time_source == "oracle" and call.duration is not None:
            durations: Sequence[float] = (call.duration,)
        else:
            durations = self.api_times.observed(call.name) or (self.api_times.predict(call.name),)
        context = request.num_tokens
        other_context = sum(r.num_tokens for r in scheduler.running if r is not request)
        reload = discard_waste(context, other_context, self.cost, running_tokens=len(scheduler.running))
        return choose_ttl(durations, context, reload + context * self.queue_delay(request, scheduler))

    def queue_delay(self, request: Request, scheduler) -> float:
        """Seconds a returned, evicted request would wait behind the programs that arrived before its own."""
        key = self.waiting_key(request)
        ahead = sum(r.num_tokens - r.num_computed_tokens for r in scheduler.waiting if self.waiting_key(r) < key)
        budget = self.config.max_num_batched_tokens
        return math.ceil(ahead / budget) * self.cost.iteration_time(budget)

    def strategy_for_call(self, request: Request, call: ApiCall, scheduler) -> KVStrategy:
        self.expiry.pop(request.req_id, None)  # a pin serves one call
        ttl = self.ttl(request, call, scheduler)
        if ttl <= 0:
            return KVStrategy.DISCARD
        grace = self.cost.iteration_time(self.config.max_num_batched_tokens)  # a return is seen a step late at most
        expiry = self.expiry[request.req_id] = scheduler.clock.now() + ttl + grace
        heapq.heappush(self._expiries, (expiry, next(self._seq), request.req_id))
        return KVStrategy.PRESERVE

    def on_iteration(self, scheduler) -> None:
        now = scheduler.clock.now()
        while self._expiries and self._expiries[0][0] <= now:
            expiry, _, req_id = heapq.heappop(self._expiries)
            if self.expiry.get(req_id) != expiry:
                continue  # the call returned, or a later call pinned again
            del self.expiry[req_id]
            request = scheduler.paused.get(req_id)
            if request is not None:
                self._release(scheduler, request)

    def on_resume(self, scheduler, request: Request) -> None:
        expiry = self.expiry.pop(request.req_id, None)
        if expiry is not None and scheduler.clock.now() >= expiry:
            self._release(scheduler, request)  # no iteration ran between the TTL's end and the return

    def _release(self, scheduler, request: Request) -> None:
        """The TTL ran out: the pinned KV is dropped (full pages stay in the prefix cache when it is on)."""
        if request.strategy is not KVStrategy.PRESERVE or not request.page_ids:
            return  # already given up under memory pressure
        if request.session_id is not None and scheduler.parked.get(request.session_id) is request:
            scheduler.release_session(request.session_id)
        else:
            scheduler.discard_paused(request)
        scheduler.strategy_counts["ttl_expired"] += 1

    def choose_victim(self, scheduler, running: Sequence[Request]) -> Request | None:
        return max(running, key=self.waiting_key, default=None)  # the latest program's request
