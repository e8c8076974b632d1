"""Autellix's PLAS: waiting requests go by the service their program has attained, least first; calls discard.

Follows Luo et al., "Autellix: An Efficient Serving Engine for LLM Agents as General Programs" (arXiv 2502.13965),
its program-level attained service scheduler (PLAS) for single-threaded programs: an LLM call is prioritised by
the service its program's earlier calls attained, with no knowledge of lengths, so short programs are not stuck
behind long ones (head-of-line blocking at the program level). The authors' code was not found here; a third-party
re-implementation on vLLM v1 (kungfu-team/autellix, ``vllm/v1/core/sched/autellix/plas_scheduler.py``) was read
for the mechanics (program id per call, sum of the calls' service, FCFS within a level).

Here: a program is a session (``session_id``) or else the request with all its API calls. Its attained service is
the tokens the engine computed for it (prefill chunks, recomputes and decodes, over all its calls and turns),
counted at every iteration from the growth of each running request's computed tokens. A request entering the
waiting queue (arrival, return from a call, preemption) is keyed by (its program's service then, its program's
first arrival). A request that waits ``starvation_threshold`` iterations is served first (LAMPS's aging).
Every call discards its KV, as each LLM call of an Autellix program is a new request to the engine (prefix caching,
when on, keeps the full pages); the victim under memory pressure is the running request whose program attained
the most service.

Guesses:
- service is counted in tokens, not seconds: iteration time is linear in tokens in the cost model, and the
  re-implementation counts decode steps; a prefix-cache hit counts as service, and the last step of a request that
  ends is counted only if it was running at the start of that iteration;
- PLAS's levels (a multi-level feedback queue with per-level quanta) are not modelled: the key is the continuous
  service; its anti-starvation rule (wait over service ratio beta) is replaced by ``starvation_threshold`` aging,
  with ``starvation_scope`` choosing who ages as for LAMPS;
- a running request is not preempted for a waiting one of less service (the budget loop has no such hook), and
  victims are recomputed, not swapped;
- a request admitted and ended within one step is not counted (nothing saw it run; for a session, its next turn
  misses that step), and session service and first arrivals are kept for the scheduler's lifetime (sessions have
  no end event).
"""

from __future__ import annotations

from collections.abc import Sequence

from lamps_jax.config import SchedulerConfig
from lamps_jax.request import ApiCall, KVStrategy, Request
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.policies.base import Policy
from lamps_jax.scheduler.policies.continuum import ProgramArrivals

FORGET_SLACK = 64  # counts of ended requests kept before a sweep drops them


class AutellixPolicy(Policy):
    name = "autellix"

    def __init__(self, config: SchedulerConfig, cost: CostModel) -> None:
        super().__init__(config, cost)
        self.starvation_threshold = config.starvation_threshold
        self.program_arrival = ProgramArrivals()
        self.service: dict[str, int] = {}  # req_id of a request outside sessions -> tokens computed for it so far
        self.session_service: dict[str, int] = {}  # session id -> tokens computed for its turns so far
        self._counted: dict[str, int] = {}  # req_id -> its computed tokens already added to its program's service
        self._watched: list[Request] = []  # running at the start of the last iteration

    def _services(self, request: Request) -> tuple[dict[str, int], str]:
        if request.session_id is not None:
            return self.session_service, request.session_id
        return self.service, request.req_id

    def attained(self, request: Request) -> int:
        services, program = self._services(request)
        return services.get(program, 0)

    def waiting_key(self, request: Request) -> tuple:
        return (request.priority, self.program_arrival(request))

    def enqueue(self, scheduler, request: Request, reason: str) -> None:
        if reason == "preempted":
            self._counted[request.req_id] = 0  # recomputed from scratch: the rebuild is service again
        request.priority = self.attained(request)
        ages = self.config.starvation_scope == "all" or reason != "arrival"
        scheduler.waiting.push(request, scheduler.iteration, ages=ages)

    def on_iteration(self, scheduler) -> None:
        running = list(scheduler.running)
        for request in {r.req_id: r for r in self._watched + running}.values():
            self._count(request)
        self._watched = running
        if len(self._counted) > 2 * len(scheduler.requests) + FORGET_SLACK:  # amortised: O(1) per ended request
            self._forget_ended(scheduler)
        scheduler.waiting.promote_starved(scheduler.iteration)

    def _forget_ended(self, scheduler) -> None:
        """Drops the counts of requests that ended (a session keeps its service for its next turn)."""
        for req_id in [r for r in self._counted if r not in scheduler.requests]:
            del self._counted[req_id]
            self.service.pop(req_id, None)

    def _count(self, request: Request) -> None:
        """Adds the tokens ``request`` computed since it was last counted to its program's service."""
        computed = request.num_computed_tokens
        before = self._counted.get(request.req_id, 0)
        new = computed - before if computed >= before else computed  # dropped meanwhile: all of it is new
        if new:
            services, program = self._services(request)
            services[program] = services.get(program, 0) + new
        self._counted[request.req_id] = computed

    def strategy_for_call(self, request: Request, call: ApiCall, scheduler) -> KVStrategy:
        if request.req_id in scheduler.requests:  # not a session's parked stand-in
            self._count(request)  # its last step, before the discard zeroes its computed tokens
            self._counted[request.req_id] = 0
        return KVStrategy.DISCARD

    def choose_victim(self, scheduler, running: Sequence[Request]) -> Request | None:
        return max(running, key=lambda r: (self.attained(r), self.program_arrival(r)), default=None)
