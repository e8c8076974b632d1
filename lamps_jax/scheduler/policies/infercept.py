"""INFERCEPT as its code runs (WukLab/InferCept ``vllm/core/scheduler_v2.py``, policy V), and its strongest variant.

``infercept``: every call Preserves (``pause_seq_group``, lines 143-149). Every iteration each preserved,
paused request is weighed again (lines 591-655): Preserve wastes its device tokens x the call's remaining
time, Discard the chunked re-prefill; those for which Discard is cheaper become candidates, every
candidate but the one(s) of largest discard waste is discarded now, and the largest become the first
victims when pages run out. Victims lose just enough pages from the tail of their context to the host
(``passive_discard_by_order``, lines 274-340), within the per-iteration swap budget of
``_set_max_ragged_batch`` (lines 732-746: ``swap_budget="infercept"``); a request whose growth would need
more than that budget waits. FCFS order, latest arrival preempted first among the running.

``infercept_swap``: the strongest reasonable variant. Each call takes the least of Preserve, Discard and
Swap at the call (Swap charged as overlapped with compute), with a swap budget of what hides behind one
full iteration (``swap_budget="overlap"``), and the per-iteration re-weighing above.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamps_jax.config import SchedulerConfig
from lamps_jax.request import ApiCall, KVStrategy, Request, RequestStatus
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.policies.base import Policy, cheapest_strategy_now
from lamps_jax.scheduler.waste import discard_waste


class InferceptPolicy(Policy):
    name = "infercept"
    anchor_swap_budget = "infercept"
    preempts_by_swap = True

    def __init__(self, config: SchedulerConfig, cost: CostModel) -> None:
        super().__init__(config, cost)
        self.victims: list[Request] = []  # paused requests to preempt first, chosen this iteration

    def strategy_for_call(self, request: Request, call: ApiCall, scheduler) -> KVStrategy:
        return KVStrategy.PRESERVE

    def on_iteration(self, scheduler) -> None:
        self.victims = []
        preserved = [r for r in scheduler.paused.values() if r.strategy is KVStrategy.PRESERVE and r.page_ids]
        if not preserved:
            return
        now = scheduler.clock.now()
        running = scheduler.running
        other_context = sum(r.num_tokens for r in running)
        candidates = []
        for request in preserved:
            tokens = len(request.page_ids) * scheduler.page_size
            elapsed = now - request.events[-1][1]
            preserve = self.remaining_api_time(request.api_call, elapsed) * tokens
            discard = discard_waste(tokens, other_context, self.cost, running_tokens=len(running))
            if discard < preserve:
                candidates.append((discard, request))
        largest = max((waste for waste, _ in candidates), default=None)
        for waste, request in candidates:
            if waste < largest:
                scheduler.discard_paused(request)
            else:
                self.victims.append(request)

    def choose_victim(self, scheduler, running: Sequence[Request]) -> Request | None:
        for request in self.victims:
            if request.status is RequestStatus.PAUSED_API and request.page_ids:
                return request
        return super().choose_victim(scheduler, running)


class InferceptSwapPolicy(InferceptPolicy):
    name = "infercept_swap"
    anchor_swap_budget = "overlap"

    def strategy_for_call(self, request: Request, call: ApiCall, scheduler) -> KVStrategy:
        allow_swap = scheduler.host_pool is not None
        return cheapest_strategy_now(request, self.api_time(call), scheduler, self.cost, allow_swap, overlapped=True)
