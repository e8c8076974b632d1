"""Prometheus metrics of a served engine, for ``/metrics``; one registry per server.

Three sources:

- the engine's state, read at each scrape: requests running, waiting (for admission), paused for API calls,
  swapped out; sessions parked; KV pages in use on the device and on the host; and the scheduler's own counters
  (steps, prefix-cache pages looked up and hit, KV strategy events);
- every step the runner executes, counted on the engine thread by a wrapper around the engine's runner:
  tokens computed, at prompt positions (prefill) or after them (decodes, API results, recomputed outputs); and,
  at a request's first step, the prompt tokens it found computed already (a resumed session's parked KV or the
  prefix cache), which tells session turns that resumed from cold ones;
- each finished request: time to first token, end-to-end latency, prompt and generated tokens, finish reason
  (``abort`` also for requests whose client went away).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lamps_jax.async_llm import AsyncLLM
from lamps_jax.request import RequestOutput
from lamps_jax.scheduler.output import RunnerOutput, ScheduledChunk, SchedulerOutput

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ITL_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class _EngineState(Collector):
    """Gauges and scheduler counters read from the engine at scrape time (sizes only: safe from another thread)."""

    def __init__(self, llm: AsyncLLM) -> None:
        self._llm = llm

    def collect(self) -> Iterator[Metric]:
        engine = self._llm.engine
        scheduler = engine.scheduler
        requests = GaugeMetricFamily("lamps_jax_requests", "Requests in the engine, by state", labels=["state"])
        requests.add_metric(["running"], len(scheduler.running))
        requests.add_metric(["waiting"], self._llm.num_waiting)
        requests.add_metric(["paused_api"], len(scheduler.paused) - len(scheduler.parked))
        requests.add_metric(["swapped"], len(scheduler.swap_in_queue))
        yield requests
        yield GaugeMetricFamily(
            "lamps_jax_sessions_parked",
            "Sessions whose last turn's KV waits for their next turn",
            len(scheduler.parked),
        )
        in_use = GaugeMetricFamily("lamps_jax_kv_pages_in_use", "KV pages held by requests", labels=["pool"])
        total = GaugeMetricFamily("lamps_jax_kv_pages", "KV pages requests can hold", labels=["pool"])
        for name, pool in (("device", engine.page_pool), ("host", scheduler.host_pool)):
            if pool is not None:
                in_use.add_metric([name], pool.num_usable - pool.num_free)
                total.add_metric([name], pool.num_usable)
        yield in_use
        yield total
        yield GaugeMetricFamily(
            "lamps_jax_kv_pages_cached", "Device pages registered in the prefix cache", engine.page_pool.num_cached
        )
        yield CounterMetricFamily("lamps_jax_engine_steps", "Scheduler iterations", scheduler.iteration)
        buckets_ready = getattr(engine.runner, "buckets_ready", None)  # a simulated runner compiles nothing
        if buckets_ready is not None:
            buckets = GaugeMetricFamily(
                "lamps_jax_step_buckets",
                "Serving-step row buckets: all, and ready with their final executable (a background warm-up fills "
                "them while the server answers)",
                labels=["state"],
            )
            buckets.add_metric(["ready"], buckets_ready[0])
            buckets.add_metric(["all"], buckets_ready[1])
            yield buckets
        prefix = CounterMetricFamily(
            "lamps_jax_prefix_cache_pages", "Full prompt pages looked up in the prefix cache", labels=["result"]
        )
        for result, count in sorted(dict(scheduler.prefix_cache_pages).items()):
            prefix.add_metric([result], count)
        yield prefix
        strategies = CounterMetricFamily(
            "lamps_jax_kv_strategy_events",
            "The scheduler's KV strategy counts: per API call the strategy used (preserve, discard, swap), later "
            "changes (swap->discard), session parkings (session_<strategy>), pages of running tails swapped out "
            "(tail_swap_pages)",
            labels=["event"],
        )
        for event, count in sorted(dict(scheduler.strategy_counts).items()):
            strategies.add_metric([event], count)
        yield strategies


class _CountingRunner:
    """The engine's runner, counting what each step computes before running it (on the engine thread)."""

    def __init__(self, runner, metrics: ServerMetrics) -> None:
        self.wrapped = runner
        self._metrics = metrics
        self._started = weakref.WeakSet()  # requests whose first step was counted (dropped when they are)

    def execute(self, sched_out: SchedulerOutput) -> RunnerOutput:
        for chunk in sched_out.scheduled:
            first_step = chunk.request not in self._started
            if first_step:
                self._started.add(chunk.request)
            self._metrics.count_chunk(chunk, first_step)
        return self.wrapped.execute(sched_out)

    def __getattr__(self, name: str):
        return getattr(self.wrapped, name)


class ServerMetrics:
    """The server's registry; counts the steps of ``llm``'s engine from now on (one ServerMetrics per engine)."""

    def __init__(self, llm: AsyncLLM) -> None:
        engine = llm.engine
        if isinstance(engine.runner, _CountingRunner):
            raise ValueError("this engine's steps are counted already: give each server its own engine")
        self.registry = CollectorRegistry()
        self.registry.register(_EngineState(llm))
        self.time_to_first_token = Histogram(
            "lamps_jax_time_to_first_token_seconds",
            "Seconds from arrival to the first output token",
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.inter_token_latency = Histogram(
            "lamps_jax_inter_token_latency_seconds",
            "Seconds between a request's consecutive output deltas, per token (API calls in between left out)",
            buckets=ITL_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "lamps_jax_e2e_request_latency_seconds",
            "Seconds from arrival to the end of the request",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.finished = Counter(
            "lamps_jax_requests_finished", "Finished requests", ["finish_reason"], registry=self.registry
        )
        self.prompt_tokens = Counter(
            "lamps_jax_prompt_tokens", "Prompt tokens of finished requests", registry=self.registry
        )
        self.generation_tokens = Counter(
            "lamps_jax_generation_tokens", "Tokens sampled for finished requests", registry=self.registry
        )
        self.computed_tokens = Counter(
            "lamps_jax_computed_tokens",
            "Tokens the runner computed: at prompt positions (prefill), or after the prompt (decodes, API results)",
            ["position"],
            registry=self.registry,
        )
        self.reused_prompt_tokens = Counter(
            "lamps_jax_reused_prompt_tokens",
            "Prompt tokens found computed at a request's first step (a session's parked KV or the prefix cache)",
            registry=self.registry,
        )
        self.session_turns = Counter(
            "lamps_jax_session_turns",
            "Requests with a session id, by whether their first step found KV of their prompt computed already",
            ["prompt_kv"],
            registry=self.registry,
        )
        engine.runner = _CountingRunner(engine.runner, self)

    def count_chunk(self, chunk: ScheduledChunk, first_step: bool) -> None:
        request = chunk.request
        start, end = chunk.num_computed_tokens, chunk.num_computed_tokens + chunk.num_new_tokens
        prompt = max(0, min(end, len(request.prompt_token_ids)) - start)
        if prompt:
            self.computed_tokens.labels("prompt").inc(prompt)
        if prompt < chunk.num_new_tokens:
            self.computed_tokens.labels("output").inc(chunk.num_new_tokens - prompt)
        if first_step:
            self.reused_prompt_tokens.inc(start)
            if request.session_id is not None:
                self.session_turns.labels("reused" if start else "cold").inc()

    def observe(self, output: RequestOutput) -> None:
        """Records a finished request."""
        self.finished.labels(output.finish_reason).inc()
        self.prompt_tokens.inc(len(output.prompt_token_ids))
        self.generation_tokens.inc(output.num_generated_tokens)
        if output.time_to_first_token is not None:
            self.time_to_first_token.observe(output.time_to_first_token)
        if output.latency is not None:
            self.latency.observe(output.latency)

    def observe_tokens(self, seconds: float, num_tokens: int) -> None:
        """``num_tokens`` output tokens came ``seconds`` after the request's previous ones."""
        for _ in range(num_tokens):
            self.inter_token_latency.observe(seconds / num_tokens)

    def count_abandoned(self) -> None:
        """A request aborted because its client went away (its output is nobody's)."""
        self.finished.labels("abort").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
