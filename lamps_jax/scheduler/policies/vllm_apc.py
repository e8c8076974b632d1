"""vLLM v1 as most people run it: every API call discards, automatic prefix caching on, FCFS, chunked prefill.

Follows vLLM v1's scheduler (``vllm/v1/core/sched/scheduler.py``: ``schedule``) and KV cache manager
(``vllm/v1/core/kv_cache_manager.py``: ``get_computed_blocks``, ``allocate_slots``, ``free``). A tool call ends
the request: its pages are freed to the prefix cache, and the call's return is a new request (the context plus
the result) at the back of the FCFS queue, which takes back the full pages of its context still cached
(``SchedulerConfig.enable_prefix_caching``, which ``SchedulerConfig`` turns on for this policy: see
``PREFIX_CACHING_POLICIES``). Admission gives a waiting request the pages of its first chunk, running requests
are scheduled before waiting ones and no waiting request is admitted in a step that preempted; a running request
short of pages preempts the last request of the running list (``self.running.pop()``, the latest admitted), its
KV dropped (recomputed, through the prefix cache) and the request put back at the front of the queue
(``prepend_request``).

Left out: offloading evicted pages to CPU memory (vLLM's KV connectors / ``--kv-offloading-size``); the budget
loop's ``decodes_first`` (vLLM v1 walks the running list in order) is left to the config.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamps_jax.request import ApiCall, KVStrategy, Request
from lamps_jax.scheduler.policies.base import Policy


class VllmApcPolicy(Policy):
    name = "vllm_apc"

    def waiting_key(self, request: Request) -> tuple:
        return ()  # queue order: a returned call is a new request, at the back

    def strategy_for_call(self, request: Request, call: ApiCall, scheduler) -> KVStrategy:
        return KVStrategy.DISCARD

    def choose_victim(self, scheduler, running: Sequence[Request]) -> Request | None:
        position = {r.req_id: i for i, r in enumerate(scheduler.running)}
        return max(running, key=lambda r: position[r.req_id], default=None)
