"""SimRunner: the runner contract without a model, timed by the calibrated cost model.

Each ``execute`` advances a ``VirtualClock`` by the iteration time f(new tokens, context tokens) of
what was scheduled; swaps issued in the iteration take g(tokens) each way and overlap the compute, layer
by layer, as the reference systems' swaps do (InferCept ``model_executor/models/gpt_j.py:186-198``), so the
step lasts max(f, swap time). Sampled tokens are a filler id: scripted requests replace them with the tokens
their trace prescribes. Everything else (engine loop, scheduler, page pool, API executor) is the
real code, so a policy behaves in simulation exactly as it does on a device.
"""

from __future__ import annotations

from lamps_jax.clock import VirtualClock
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.output import RunnerOutput, SchedulerOutput


class SimRunner:
    def __init__(self, cost: CostModel, clock: VirtualClock, page_size: int, filler_token_id: int = 1) -> None:
        self.cost = cost
        self.clock = clock
        self.page_size = page_size
        self.filler_token_id = filler_token_id
        self.num_iterations = 0

    def warmup(self, progress: bool = True, background: bool = False) -> None:
        """Nothing to compile."""

    def close(self) -> None:
        """Nothing runs in the background."""

    def execute(self, sched_out: SchedulerOutput) -> RunnerOutput:
        compute = 0.0
        if sched_out.scheduled:
            context = sum(c.num_computed_tokens for c in sched_out.scheduled)
            compute = self.cost.iteration_time(sched_out.total_tokens, context)
        copies = sched_out.swap_out + sched_out.swap_in
        swap = sum(self.cost.swap_time(copy.num_pages * self.page_size) for copy in copies)
        elapsed = max(compute, swap)
        self.clock.advance(elapsed)
        self.num_iterations += 1
        req_ids = [c.req_id for c in sched_out.scheduled if c.samples]
        return RunnerOutput(req_ids, [self.filler_token_id] * len(req_ids), elapsed)
