"""LAMPS+: LAMPS's memory-over-time ranking and call strategies, with switches for what LAMPS loses on.

Each switch is one idea, on in ``lamps_plus`` and off in ``lamps_plus-no_<switch>`` (the ablation):

- ``aging``: the waiting order is the LAMPS score less ``AGING_TOKENS_PER_S`` x the seconds waited, instead
  of LAMPS's promotion of requests passed over 100 iterations (which, past saturation, admits old requests in
  bursts and preempts running ones). A linear term keeps a static heap key: score - a x (now - t_enqueue)
  orders requests as score + a x t_enqueue does, whatever ``now`` is.
- ``reserve``: chunk admission starts a request only when the free pages also cover what the running
  requests are predicted to grow to before their next call (their predicted decode length), so it does not
  admit requests it must preempt a few iterations later. With nothing running it admits anyway.
- ``reconsider``: every iteration, while requests wait, a preserved paused request whose call is predicted to
  run on (its remaining time given the time elapsed) is moved to the cheaper of Swap and Discard when that
  is cheaper than keeping its pages for the rest of the call.
"""

from __future__ import annotations

import math
import weakref

from lamps_jax.config import SchedulerConfig
from lamps_jax.request import KVStrategy, Request
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.policies.forecast import forecast
from lamps_jax.scheduler.policies.lamps import LampsPolicy
from lamps_jax.scheduler.waste import cheapest_strategy

SWITCHES = ("aging", "reserve", "reconsider")
AGING_TOKENS_PER_S = 2000.0  # score (token-seconds of KV) a waiting request makes up per second it waits
AGING_KIND = "linear"
AGING_TAU_S = 10.0
RESERVE_HORIZON = 0


def parse_switches(policy_name: str) -> frozenset[str]:
    """The switches of ``lamps_plus`` or ``lamps_plus-no_<switch>[-no_<switch>...]``."""
    base, *off = policy_name.split("-")
    if base != LampsPlusPolicy.name:
        raise ValueError(f"not a LAMPS+ policy name: {policy_name!r}")
    unknown = [o for o in off if o.removeprefix("no_") not in SWITCHES or not o.startswith("no_")]
    if unknown:
        raise ValueError(
            f"unknown LAMPS+ switch in {policy_name!r}: {', '.join(unknown)}; "
            f"known: {', '.join('no_' + s for s in SWITCHES)}"
        )
    return frozenset(SWITCHES) - {o.removeprefix("no_") for o in off}


class LampsPlusPolicy(LampsPolicy):
    name = "lamps_plus"

    def __init__(self, config: SchedulerConfig, cost: CostModel) -> None:
        super().__init__(config, cost)
        self.switches = parse_switches(config.policy)
        if "aging" in self.switches:
            self.starvation_threshold = None
        self._predicted_end: weakref.WeakKeyDictionary[Request, int] = weakref.WeakKeyDictionary()  # at its next call
        self._reserved_pages: int | None = None  # the running requests' predicted growth, this iteration

    # ---- ranking ----------------------------------------------------------------------------
    def waiting_key(self, request: Request) -> tuple:
        if "aging" not in self.switches:
            return super().waiting_key(request)
        if AGING_KIND == "log":
            return (math.log(max(request.priority, 1.0)) + request.events[-1][1] / AGING_TAU_S,)
        return (request.priority + AGING_TOKENS_PER_S * request.events[-1][1],)

    def plan(self, request: Request, scheduler) -> None:
        super().plan(request, scheduler)
        f = forecast(request, self.lengths, self.api_time)
        self._predicted_end[request] = f.context + f.pre_api_tokens

    # ---- admission --------------------------------------------------------------------------
    def on_iteration(self, scheduler) -> None:
        super().on_iteration(scheduler)
        self._reserved_pages = None
        if "reconsider" in self.switches and scheduler.waiting:
            self._reconsider_paused(scheduler)

    def admits(self, scheduler, request: Request, num_new: int) -> bool:
        if "reserve" not in self.switches or not scheduler.running:
            return True
        if self._reserved_pages is None:
            self._reserved_pages = sum(self._growth(scheduler, r) for r in scheduler.running)
        need = self._growth(scheduler, request)
        if scheduler.page_pool.num_free - self._reserved_pages < need:
            return False
        self._reserved_pages += need
        return True

    def _growth(self, scheduler, request: Request) -> int:
        """Pages the request still needs to reach its predicted length at its next call."""
        end = max(self._predicted_end.get(request, request.num_tokens), request.num_tokens)
        if RESERVE_HORIZON:
            end = min(end, request.num_tokens + RESERVE_HORIZON)
        return max(0, scheduler.pages_for(end) - len(request.page_ids))

    # ---- paused requests --------------------------------------------------------------------
    def _reconsider_paused(self, scheduler) -> None:
        now = scheduler.clock.now()
        running = sum(r.num_tokens for r in scheduler.running)
        for request in list(scheduler.paused.values()):
            if request.strategy is not KVStrategy.PRESERVE or not request.page_ids or request.api_call is None:
                continue
            remaining = self.remaining_api_time(request.api_call, now - request.events[-1][1])
            if remaining <= 0:  # returning now (an oracle duration already passed)
                continue
            tokens = len(request.page_ids) * scheduler.page_size
            best = cheapest_strategy(
                context=tokens,
                api_time=remaining,
                other_context=running,
                batch_context=running + tokens,
                cost=self.cost,
                allow_swap=scheduler.host_pool is not None,
                running_tokens=len(scheduler.running),
            )
            if best is KVStrategy.DISCARD:
                scheduler.discard_paused(request)
            elif best is KVStrategy.SWAP:
                scheduler.swap_paused(request)
