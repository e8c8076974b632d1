"""Swaps between the device and the host page pools (a mixin of the ``Scheduler``): the per-iteration swap budgets,
whole copies of paused and swapped requests out and in, and INFERCEPT's tail swaps of preemption victims."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamps_jax.request import KVStrategy, Request, RequestStatus
from lamps_jax.scheduler.output import SwapCopy

if TYPE_CHECKING:
    from lamps_jax.scheduler.scheduler import _Step

UNLIMITED_PAGES = 10**9


class SwapsMixin:
    """Issues the step's swap copies; the ``Scheduler`` provides the pools, queues and policy."""

    def _swap_budgets(self) -> tuple[int, int]:
        """Pages that may be copied out and in this iteration (``SchedulerConfig.swap_budget``)."""
        mode, cost = self.config.swap_budget, self.policy.cost
        if mode == "fixed":
            return self.config.max_swap_pages_per_step, self.config.max_swap_pages_per_step
        if mode == "unlimited":
            return UNLIMITED_PAGES, UNLIMITED_PAGES
        if mode == "overlap":  # the tokens whose one-way copy takes no longer than a full iteration
            full_iteration = cost.iteration_time(self.config.max_num_batched_tokens)
            tokens = (full_iteration - cost.swap_base) / cost.swap_per_token if cost.swap_per_token else UNLIMITED_PAGES
            pages = max(1, int(tokens // self.page_size))
            return pages, pages
        # INFERCEPT's _set_max_ragged_batch (vllm/core/scheduler_v2.py:732-746): a profiled constant a·B + b
        # (the cost profile's swap_budget_tokens) plus half the free KV memory in, minus it out
        constant = cost.swap_budget_tokens or 0
        free_tokens = self.page_pool.num_free * self.page_size
        swap_in = constant + free_tokens / 2
        swap_out = self.config.max_num_batched_tokens + constant - free_tokens / 2
        return max(0, int(swap_out // self.page_size)), max(0, int(swap_in // self.page_size))

    def _issue_swap_outs(self, step: _Step) -> None:
        """Copies out the requests paused with Swap, whole, within the swap-out budget."""
        while self.swap_out_queue and self._fits(len(self.swap_out_queue[0].page_ids), "out", step):
            request = self.swap_out_queue.popleft()
            step.swap_out_left -= len(request.page_ids)
            step.swap_out.append(SwapCopy(request.req_id, request.page_ids, list(request.host_page_ids)))
            # The copy is dispatched before the step that may reuse these pages, so they free now.
            self.page_pool.free(request.page_ids)
            request.page_ids, request.num_registered_pages = [], 0

    def _issue_swap_ins(self, step: _Step) -> None:
        """Brings back whole swapped requests, in order, while the budget, pages and sequence slots allow."""
        while self.swap_in_queue and len(self.running) < self.config.max_num_seqs:
            request = self.swap_in_queue[0]
            num_pages = len(request.host_page_ids)
            if not self._fits(num_pages, "in", step) or not self.page_pool.can_allocate(num_pages):
                return
            self.swap_in_queue.popleft()
            self._copy_in(request, step)
            self.running.append(request)
            request.set_status(RequestStatus.RUNNING, self.clock.now())

    def _swap_in_tail(self, request: Request, step: _Step) -> bool:
        """Brings back the part of a running request's context on the host; False if it must wait."""
        num_pages = len(request.host_page_ids)
        if not self._fits(num_pages, "in", step) or not self.page_pool.can_allocate(num_pages):
            return False
        self._copy_in(request, step)
        return True

    def _copy_in(self, request: Request, step: _Step) -> None:
        new_pages = self.page_pool.allocate(len(request.host_page_ids))
        step.swap_in_left -= len(new_pages)
        step.swap_in.append(SwapCopy(request.req_id, new_pages, request.host_page_ids))
        step.host_pages_read.extend(request.host_page_ids)
        step.pinned.add(request.req_id)
        request.page_ids.extend(new_pages)
        request.host_page_ids = []

    def _swap_out_tail(self, victim: Request, num_pages: int, step: _Step) -> None:
        """INFERCEPT's passive preemption (scheduler_v2.py:274-340): the last ``num_pages`` of the victim's
        device pages go to the host; with no host room, the victim is discarded whole instead."""
        num_pages = min(max(num_pages, 1), len(victim.page_ids))
        if not num_pages or self.host_pool is None or not self.host_pool.can_allocate(num_pages):
            if victim.status is RequestStatus.PAUSED_API:
                self.discard_paused(victim)
            else:
                self._preempt(victim, step)
            return
        tail = victim.page_ids[-num_pages:]
        host_pages = self.host_pool.allocate(num_pages)
        step.swap_out_left -= num_pages
        step.swap_out.append(SwapCopy(victim.req_id, tail, host_pages))
        self.page_pool.free(tail)
        del victim.page_ids[-num_pages:]
        victim.num_registered_pages = min(victim.num_registered_pages, len(victim.page_ids))
        victim.host_page_ids = host_pages + victim.host_page_ids
        self.strategy_counts["tail_swap_pages"] += num_pages
        if victim.page_ids:
            return
        if victim.status is RequestStatus.PAUSED_API:  # all of it on the host: back in whole on return
            victim.strategy = KVStrategy.SWAP
        else:
            self.running.remove(victim)
            self.swap_in_queue.append(victim)
            step.preempted.append(victim.req_id)
            victim.set_status(RequestStatus.SWAPPED, self.clock.now())

    def _fits(self, num_pages: int, direction: str, step: _Step) -> bool:
        """A copy fits what is left of the budget; one larger than the whole budget goes alone."""
        left, whole = (
            (step.swap_out_left, step.swap_out_budget)
            if direction == "out"
            else (step.swap_in_left, step.swap_in_budget)
        )
        return num_pages <= left or (left == whole and whole > 0)
