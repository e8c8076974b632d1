"""The load of ``lamps-jax bench-serve``: a trace's requests as HTTP conversations against ``lamps-jax serve``.

Each trace request becomes a conversation (``Conversation``) with the same arrival time, prompt token ids, decode
lengths and API calls as in-process: turn k streams ``/v1/completions`` with the conversation's token ids so far,
``max_tokens`` the segment's decode length, greedy, ``ignore_eos``, ``return_token_ids`` and the conversation's
``session_id``; then the client makes the segment's API call (sleeps its scaled time) and appends the call's result
tokens for the next turn. ``EngineSettings`` are the engine flags a spawned server and the in-process engine share.
A run stops at a fixed number of requests or at a wall-clock limit, after which its clients stop and the run counts
as cut short. The command around it is ``bench_serve.py``.

Importing this module loads neither JAX nor httpx (the CLI builds its parser from it): what needs them is imported
where it is used.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from lamps_jax.bench.server_process import (
    scrape_metrics,
    served_model,
)
from lamps_jax.config import CacheConfig, EngineConfig, SchedulerConfig
from lamps_jax.workload.spec import WorkloadRequest
from lamps_jax.workload.traces import DEFAULT_TRACES, load_trace

# lamps-jax bench --mode real's trace scaling (comparison.real_comparison's defaults)
REAL_TIME_SCALE = 0.02
REAL_MAX_PROMPT = 96
REAL_MAX_SEGMENT = 24
REUSED_TURNS = 'lamps_jax_session_turns_total{prompt_kv="reused"}'
NO_TOKEN_IDS = "the stream carries no token ids: the server does not support return_token_ids on /v1/completions"


@dataclass(frozen=True)
class EngineSettings:
    """The engine flags a spawned server gets and the in-process engine is configured from."""

    dtype: str = "float32"
    engine_seed: int = 0  # lamps-jax serve's --seed
    page_size: int = 16
    kv_memory_mib: int = 24
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 128
    max_model_len: int = 1024
    host_kv_pages: int = 256
    enable_prefix_caching: bool = False  # off as in-process (lamps-jax serve turns it on by default)
    session_ttl: float = 5.0  # longer than any scaled API call: a session's KV waits out the call

    def config(self, policy: str) -> EngineConfig:
        """The ``EngineConfig`` that ``lamps-jax serve --policy <policy>`` builds from ``serve_flags``."""
        return EngineConfig(
            cache=CacheConfig(page_size=self.page_size, kv_memory_bytes=self.kv_memory_mib * 2**20),
            scheduler=SchedulerConfig(
                policy=policy,
                max_num_seqs=self.max_num_seqs,
                max_num_batched_tokens=self.max_num_batched_tokens,
                num_host_pages=self.host_kv_pages,
                enable_prefix_caching=self.enable_prefix_caching,
            ),
            max_model_len=self.max_model_len,
            seed=self.engine_seed,
            session_ttl=self.session_ttl,
        )

    def serve_flags(self) -> list[str]:
        flags = []
        for flag, name, kind, _ in ENGINE_FLAGS:
            value = getattr(self, name)
            if kind is bool:  # every switch is given, so that the server's own defaults play no part
                flags.append(flag if value else f"--no-{flag.removeprefix('--')}")
            else:
                flags += [flag, str(value)]
        return flags


ENGINE_FLAGS = (  # flag, EngineSettings field, type, help: the same flags as lamps-jax serve's
    ("--dtype", "dtype", str, "weights, activations and KV: float32 or bfloat16"),
    ("--seed", "engine_seed", int, "seed of the random-init presets and of unseeded sampling"),
    ("--page-size", "page_size", int, "tokens per KV page"),
    ("--kv-memory-mib", "kv_memory_mib", int, "device memory for KV pages"),
    ("--max-num-seqs", "max_num_seqs", int, "requests running at once"),
    ("--max-num-batched-tokens", "max_num_batched_tokens", int, "token budget per iteration"),
    ("--max-model-len", "max_model_len", int, "context limit"),
    ("--host-kv-pages", "host_kv_pages", int, "host pages for swapped KV"),
    ("--enable-prefix-caching", "enable_prefix_caching", bool, "reuse the KV pages of prompts that start alike"),
    ("--session-ttl", "session_ttl", float, "seconds a session's KV waits for its next turn (server only)"),
)


@dataclass(frozen=True)
class TraceSlice:
    """The requests of ``lamps-jax bench --mode real``: the trace scaled down, ``num_requests`` Poisson arrivals."""

    trace: str
    num_requests: int
    time_scale: float = REAL_TIME_SCALE
    max_prompt: int = REAL_MAX_PROMPT
    max_segment: int = REAL_MAX_SEGMENT

    def arrivals(self, rate: float, seed: int) -> list[WorkloadRequest]:
        from lamps_jax.bench.comparison import exact_poisson_arrivals, scaled_request  # late: imports the engine (JAX)

        trace = load_trace(DEFAULT_TRACES.get(self.trace, self.trace))
        requests = [scaled_request(r, self.max_prompt, self.max_segment, self.time_scale) for r in trace]
        return exact_poisson_arrivals(requests, rate, self.num_requests, seed)


@dataclass(frozen=True)
class Turn:
    max_tokens: int  # the segment's decode length
    api_seconds: float | None  # the call the client makes after the turn (None: the conversation ends)
    result_token_ids: tuple[int, ...]  # what the call returns, appended before the next turn


@dataclass(frozen=True)
class Conversation:
    request_id: str
    arrival_time: float  # seconds from the start of the run
    prompt_token_ids: tuple[int, ...]
    turns: tuple[Turn, ...]


def conversations(workload: Sequence[WorkloadRequest], vocab_size: int) -> list[Conversation]:
    """The workload as ``bench.harness.run_workload`` serves it: in arrival order, the i-th arrival (from 1)
    prompted with ``distinct_prompt``, one turn per segment."""
    from lamps_jax.bench.harness import distinct_prompt  # late: imports the engine (JAX)

    ordered = sorted(workload, key=lambda r: r.arrival_time)
    return [
        Conversation(
            r.request_id,
            r.arrival_time,
            tuple(distinct_prompt(r.prompt_tokens, index, vocab_size)),
            tuple(
                Turn(s.num_tokens, None if s.api_call is None else s.api_call.duration, s.result_token_ids)
                for s in r.segments
            ),
        )
        for index, r in enumerate(ordered, start=1)
    ]


@dataclass(frozen=True)
class Timing:
    """One request as the metrics see it, over HTTP or in-process; seconds from its arrival (None: not reached)."""

    finished: bool  # served to completion
    ttft: float | None
    e2e: float | None
    api_seconds: float  # time spent in API calls
    generated: int  # tokens the model sampled (API results excluded)


# ---- the clients --------------------------------------------------------------------------------------------------
class TurnError(RuntimeError):
    """A turn the server refused or ended without its tokens."""


@dataclass
class ConversationLog:
    """What one client saw; times are the event loop's clock."""

    conversation: Conversation
    arrival: float = math.nan
    first_token: float | None = None
    last_token: float | None = None
    api_seconds: float = 0.0  # time spent in the calls
    generated: int = 0
    turns_sent: int = 0
    turns_done: int = 0
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.error is None and self.turns_done == len(self.conversation.turns)

    def timing(self) -> Timing:
        def since_arrival(t: float | None) -> float | None:
            return None if t is None else t - self.arrival

        first, last = since_arrival(self.first_token), since_arrival(self.last_token)
        return Timing(self.finished, first, last, self.api_seconds, self.generated)


@dataclass
class LoadResult:
    logs: list[ConversationLog]
    wall_seconds: float
    cut_short: bool  # the time limit stopped clients that had not finished
    metrics: dict[str, float] = field(default_factory=dict)  # /metrics deltas over the run


async def _stream_turn(client, body: dict, log: ConversationLog) -> list[int]:
    """Streams one turn; returns its token ids and stamps the log's first and last token times."""
    loop = asyncio.get_running_loop()
    ids: list[int] = []
    async with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            text = (await response.aread()).decode(errors="replace")
            raise TurnError(f"HTTP {response.status_code}: {text[:500]}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if "error" in chunk:
                raise TurnError(f"error event: {chunk['error'].get('message')}")
            for choice in chunk["choices"]:
                if "token_ids" not in choice:
                    raise TurnError(NO_TOKEN_IDS)
                if choice["token_ids"]:
                    now = loop.time()
                    log.first_token = now if log.first_token is None else log.first_token
                    log.last_token = now
                    ids += choice["token_ids"]
    return ids


async def _converse(client, model: str, session_id: str, log: ConversationLog, start: float, bar: tqdm) -> None:
    """One conversation from its arrival: a turn, its API call, the next turn with the call's result appended.

    A conversation that fails for any reason keeps the error in its log; the others go on."""
    loop = asyncio.get_running_loop()
    conversation = log.conversation
    log.arrival = start + conversation.arrival_time
    await asyncio.sleep(log.arrival - loop.time())
    tokens = list(conversation.prompt_token_ids)
    try:
        for number, turn in enumerate(conversation.turns, start=1):
            body = {
                "model": model,
                "prompt": tokens,
                "max_tokens": turn.max_tokens,
                "temperature": 0.0,
                "ignore_eos": True,
                "stream": True,
                "stream_options": {"include_usage": True},
                "return_token_ids": True,
                "session_id": session_id,
            }
            log.turns_sent += 1
            ids = await _stream_turn(client, body, log)
            if len(ids) != turn.max_tokens:
                raise TurnError(f"turn {number} returned {len(ids)} of {turn.max_tokens} tokens")
            log.generated += len(ids)
            log.turns_done += 1
            if turn.api_seconds is not None:
                called = loop.time()
                await asyncio.sleep(turn.api_seconds)
                log.api_seconds += loop.time() - called
                tokens += ids + list(turn.result_token_ids)
    except Exception as err:  # recorded per conversation and reported with the run
        log.error = f"{type(err).__name__}: {err}"
    bar.update(1)


async def _load(url: str, model: str, convs: Sequence[Conversation], time_limit: float, label: str) -> LoadResult:
    import httpx  # late: the CLI's parser imports this module

    loop = asyncio.get_running_loop()
    logs = [ConversationLog(c) for c in convs]
    prefix = f"bench-{uuid.uuid4().hex[:8]}/"  # session ids of this run only (a --url server may hold older ones)
    limits = httpx.Limits(max_connections=len(convs), max_keepalive_connections=len(convs))
    timeout = httpx.Timeout(30.0, read=None)  # a turn may wait long for admission: the time limit bounds it
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout, trust_env=False) as client:
        with tqdm(total=len(logs), desc=label, leave=False) as bar:
            start = loop.time()
            tasks = [
                asyncio.create_task(_converse(client, model, prefix + log.conversation.request_id, log, start, bar))
                for log in logs
            ]
            _, pending = await asyncio.wait(tasks, timeout=time_limit)
            for task in pending:  # closing a stream aborts its request on the server
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            wall = loop.time() - start
    return LoadResult(logs, wall, cut_short=bool(pending))


def run_load(url: str, convs: Sequence[Conversation], time_limit: float, label: str = "HTTP") -> LoadResult:
    """Replays ``convs`` against the server at ``url`` (from their arrival times on); stops at ``time_limit``
    seconds. ``metrics`` holds what /metrics counted meanwhile."""
    model = served_model(url)
    before = scrape_metrics(url)
    result = asyncio.run(_load(url, model, convs, time_limit, label))
    after = scrape_metrics(url)
    result.metrics = {key: value - before.get(key, 0.0) for key, value in after.items()}
    return result
