"""JaxRunner: turns a SchedulerOutput into padded device batches, runs the jitted step, samples.

Scheduled chunks become query rows: decodes (1 new token) go into Q = 1 rows, prefill and
recompute chunks are cut into rows of ``query_block`` tokens. Each group is padded to a
power-of-two row bucket; every (Q, rows) bucket is compiled once, ahead of time, in ``warmup()``
(or, with a background warm-up, while the engine already serves with the smallest; ``step_executables.py``)
and called as that executable with the KV pages donated, so a steady run never traces or compiles
(``num_compilations()`` counts traces). The jitted step is module-level with the model config
static, so engines over the same model in one process share traces and compiled code.
Only the sampled token ids come back to the host: one ``device_get`` per step. Every step also yields
the final-norm hidden state of each row's last token; it joins that same ``device_get`` only for groups
with a sampling row of a request that asks (``Request.return_hidden_states``, length prediction).

On one CPU device, weight-only int8 params are repacked for the int8 kernel (``model/packed_int8.py``).
With ``EngineConfig.tensor_parallel`` > 1 the params and KV pages are split over a ``("tp",)`` mesh
(``model/sharding.py``) and the same step runs as one SPMD program over it; tensor_parallel = 1 keeps
everything on one device, unsharded. In a multi-process run (``distributed.py``) every step is first
planned (``StepPlan``: swaps, then each call's padded arrays), broadcast by process 0 and run by all.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import jax
import numpy as np

from lamps_jax import cpu_kernels, distributed
from lamps_jax.config import EngineConfig, ModelConfig
from lamps_jax.distributed import StepPlan
from lamps_jax.executable_store import default_store
from lamps_jax.model import packed_int8, sharding
from lamps_jax.model.llama import Params, forward_paged
from lamps_jax.model.sampling import sample
from lamps_jax.model.step_inputs import SamplingInputs, StepInputs
from lamps_jax.paged_kv.kv_cache import KVPages
from lamps_jax.paged_kv.swap import HostSwapper
from lamps_jax.pallas_kernels.ops import paged_attention_fn, resolve_attention_impl
from lamps_jax.scheduler.output import RunnerOutput, ScheduledChunk, SchedulerOutput
from lamps_jax.step_executables import StepExecutables

_num_traces = 0


def num_compilations() -> int:
    """How many times the serving step has been traced (= compiled) in this process."""
    return _num_traces


_STATIC_ARGS = ("cfg", "pages_per_block", "attention_impl", "platform", "mesh")


@functools.partial(jax.jit, static_argnames=_STATIC_ARGS, donate_argnums=(1, 2))
def _step(
    params,
    k,
    v,
    inputs: StepInputs,
    sampling: SamplingInputs,
    *,
    cfg: ModelConfig,
    pages_per_block: int,
    attention_impl: str,
    platform: str,
    mesh: jax.sharding.Mesh | None,
):
    """``mesh``: None for one device; else the ``("tp",)`` mesh the params and pages are split over."""
    global _num_traces
    _num_traces += 1  # runs only while tracing, i.e. once per compiled shape
    attention = paged_attention_fn(attention_impl, platform)  # the kernel for the runner's device
    if mesh is None:
        logits, hidden, k, v = forward_paged(params, k, v, inputs, cfg, pages_per_block, attention, return_hidden=True)
        return sample(logits, sampling), hidden, k, v
    attention = sharding.attention_over_heads(attention, mesh)
    num_shards = mesh.shape[sharding.TP]
    logits, hidden, k, v = forward_paged(
        params, k, v, inputs, cfg, pages_per_block, attention, return_hidden=True, num_shards=num_shards
    )
    logits = sharding.gathered_logits(logits, mesh)  # one all-gather of the logits before sampling
    return (
        sample(logits, sampling),
        hidden,
        sharding.split_over_kv_heads(k, mesh),
        sharding.split_over_kv_heads(v, mesh),
    )


def _pow2_buckets(limit: int) -> list[int]:
    buckets = [1]
    while buckets[-1] < limit:
        buckets.append(buckets[-1] * 2)
    return buckets


@dataclass(frozen=True)
class _Row:
    chunk: ScheduledChunk
    start: int  # position of the row's first token
    num_valid: int
    samples: bool  # this row's last token yields the request's next token


def _wants_hidden(rows: list[_Row]) -> bool:
    """A row of the group samples for a request that asks for its hidden states."""
    return any(row.samples and row.chunk.request.return_hidden_states for row in rows)


class JaxRunner:
    def __init__(
        self,
        model_cfg: ModelConfig,
        params: Params,
        engine_cfg: EngineConfig,
        num_pages: int,
        max_model_len: int,
        device: jax.Device | None = None,
    ) -> None:
        # compiled steps on disk: a warm start neither traces nor compiles
        self.executable_store = default_store() if engine_cfg.compilation_cache else None
        self.mesh = None
        if engine_cfg.tensor_parallel == 1:
            self.device = device or jax.devices()[0]
            if jax.process_count() > 1:
                raise ValueError(f"a run over {jax.process_count()} processes needs tensor_parallel > 1")
            if self.device.platform == "cpu":
                cpu_kernels.ensure_built()
                params = packed_int8.for_cpu_kernel(params, model_cfg)
                if cpu_kernels.in_use() and jax.local_device_count() > 1:
                    # a step calling a CPU kernel, read back from the store, fails to run in a process of several
                    # CPU devices (jax 0.10.2: "Expected args ... to have N shards")
                    self.executable_store = None
            self.params = jax.device_put(params, jax.sharding.SingleDeviceSharding(self.device))
            kv_sharding = jax.sharding.SingleDeviceSharding(self.device)
        else:
            if device is not None:
                raise ValueError("a tensor-parallel runner takes its devices from the mesh, not a device")
            self.mesh, model_cfg, self.params = sharding.shard_model(model_cfg, params, engine_cfg.tensor_parallel)
            self.device = self.mesh.devices.flat[0]
            kv_sharding = jax.sharding.NamedSharding(self.mesh, sharding.KV_PAGES)
            # a multi-device step read back from the store aborts in XLA's deserialization (jax 0.10.2, CPU)
            self.executable_store = None
        self.model_cfg = model_cfg  # under tensor parallelism: with kv heads repeated up to the mesh size
        self._broadcasts = jax.process_count() > 1 and distributed.is_leader()  # plans go to the followers
        page_size = engine_cfg.cache.page_size
        self.pages_per_block = engine_cfg.kv_block_tokens // page_size
        self.attention_impl = resolve_attention_impl(engine_cfg.attention_impl, self.device.platform)
        self.block_tokens = engine_cfg.kv_block_tokens
        num_blocks = -(-max_model_len // engine_cfg.kv_block_tokens)
        self.page_table_width = num_blocks * self.pages_per_block
        self.query_block = engine_cfg.query_block
        sched = engine_cfg.scheduler
        self.row_buckets = {
            1: _pow2_buckets(sched.max_num_seqs),
            self.query_block: _pow2_buckets(-(-sched.max_step_tokens // self.query_block)),
        }
        self.kv = KVPages.allocate(model_cfg, num_pages, page_size, kv_sharding)
        # params and pages as a bucket is lowered with: a background lowering must not touch arrays a step donates
        self._abstract_state = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), (self.params, self.kv.k, self.kv.v)
        )
        self._executables: StepExecutables | None = None  # (rows, q_len) -> step, from warmup
        self.swapper = None
        if sched.num_host_pages:  # the host pool's pages, page 0 included
            self.swapper = HostSwapper(self.kv, sched.num_host_pages + 1, -(-max_model_len // page_size))

    @property
    def _static_args(self) -> dict:
        return {
            "cfg": self.model_cfg,
            "pages_per_block": self.pages_per_block,
            "attention_impl": self.attention_impl,
            "platform": self.device.platform,
            "mesh": self.mesh,
        }

    def _lowering_arrays(self, q_len: int, num_rows: int) -> tuple:
        """A bucket's inputs to lower with: numpy on one device; replicated over the mesh otherwise (so that
        every process may pass its own numpy copy of the same values)."""
        arrays = self._pad_arrays([], q_len, num_rows)
        if self.mesh is None:
            return arrays
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=replicated), arrays)

    # ---- warm-up ----------------------------------------------------------------------------
    def warmup(self, progress: bool = True, background: bool = False) -> None:
        """Prepares every bucket's executable (``step_executables.py``): loaded from the store, else compiled.

        Without ``background`` it returns once all are ready, after running each once with an all-padding batch;
        the steps then call these executables directly: nothing is traced or compiled again. With
        ``background`` it returns once the one-row prefill bucket is ready (it also runs decode rows, as rows of
        one valid token, until the decode buckets come), and the rest follow on a thread of their own while the
        engine serves (``wait_until_warm``); a multi-process run cannot (every process must run the same
        buckets), so it asks for the full warm-up.
        """
        if self._executables is not None:
            return  # warmed already (a runner shared by several engines)
        if background and jax.process_count() > 1:
            raise ValueError("a multi-process run warms up in full: every process must hold every bucket")
        shapes = [(n, q_len) for q_len, buckets in self.row_buckets.items() for n in buckets]
        first = list(dict.fromkeys([(1, self.query_block), (1, 1)]))  # one shape when query_block is 1
        shapes = first + [shape for shape in shapes if shape not in first]
        self._executables = StepExecutables(self._lower, self._store_key, self.executable_store)
        self._executables.prepare(shapes, background, progress, quick=len(first))
        if not background:
            jax.block_until_ready([self._call(self._pad_arrays([], q_len, n)) for n, q_len in shapes])
        if self.swapper is not None:
            self.swapper.warmup(self.kv)

    @property
    def warm(self) -> bool:
        """Every bucket has its final executable (always, once a full warm-up has returned)."""
        return self._executables is not None and self._executables.complete

    @property
    def buckets_ready(self) -> tuple[int, int]:
        """(buckets with their final executable, all buckets): a background warm-up's progress."""
        return self._executables.num_done if self._executables is not None else (0, 0)

    def wait_until_warm(self) -> None:
        """Blocks until every bucket is ready (at once after a full warm-up)."""
        self._executables.wait()

    def close(self) -> None:
        """Stops a background warm-up (the buckets compiling finish and are stored)."""
        if self._executables is not None:
            self._executables.close()

    def _bucket_args(self, shape: tuple[int, int]) -> tuple:
        num_rows, q_len = shape
        return (*self._abstract_state, *self._lowering_arrays(q_len, num_rows))

    def _store_key(self, shape: tuple[int, int]) -> str:
        return self.executable_store.key("serving_step", self._bucket_args(shape), self._static_args)

    def _lower(self, shape: tuple[int, int]) -> jax.stages.Lowered:
        return _step.lower(*self._bucket_args(shape), **self._static_args)

    # ---- one step ---------------------------------------------------------------------------
    def run_plan(self, plan: StepPlan) -> list[tuple[jax.Array, jax.Array]]:
        """Dispatches a step's swaps, then its calls (the pages freed by a swap-out may be reused by them);
        returns each call's (tokens, hidden). Process 0 plans; in a multi-process run every process runs it."""
        if self.swapper is not None:
            self.swapper.flush()  # earlier steps' swap-outs, done by now, land in the host store
            for page_ids, host_page_ids in plan.swap_out:
                self.swapper.swap_out(self.kv, page_ids, host_page_ids)
            for host_page_ids, page_ids in plan.swap_in:
                self.swapper.swap_in(self.kv, host_page_ids, page_ids)
        return [self._call(arrays) for arrays in plan.calls]

    def empty_arrays(self, q_len: int, num_rows: int) -> tuple[StepInputs, SamplingInputs]:
        """An all-padding call of a bucket (the shapes and dtypes a broadcast plan is decoded into)."""
        return self._pad_arrays([], q_len, num_rows)

    def execute(self, sched_out: SchedulerOutput) -> RunnerOutput:
        start = time.perf_counter()
        decode = [c for c in sched_out.scheduled if c.num_new_tokens == 1]
        prefill = [c for c in sched_out.scheduled if c.num_new_tokens > 1]
        if (1, 1) not in self._executables.ready:  # a background warm-up has not made the decode buckets yet
            decode, prefill = [], decode + prefill
        groups: list[tuple[list[_Row], tuple[StepInputs, SamplingInputs]]] = []  # (rows, their padded arrays)
        for q_len, chunks in ((1, decode), (self.query_block, prefill)):
            rows = [row for chunk in chunks for row in self._rows(chunk, q_len)]
            groups += [(group, self._pad_arrays(group, q_len, bucket)) for group, bucket in self._split(rows, q_len)]
        plan = StepPlan(
            [(copy.page_ids, copy.host_page_ids) for copy in sched_out.swap_out],
            [(copy.host_page_ids, copy.page_ids) for copy in sched_out.swap_in],
            [arrays for _, arrays in groups],
        )
        if self._broadcasts:
            distributed.send(plan)
        # (rows, tokens [R], hidden [R, D])
        pending = [(group, *outputs) for (group, _), outputs in zip(groups, self.run_plan(plan))]
        host = jax.device_get([(tokens, hidden if _wants_hidden(group) else None) for group, tokens, hidden in pending])
        req_ids, sampled, hidden_states = [], [], {}
        for (group, _, _), (tokens, hidden) in zip(pending, host):
            for i, row in enumerate(group):
                if row.samples:
                    req_ids.append(row.chunk.req_id)
                    sampled.append(int(tokens[i]))
                    if hidden is not None and row.chunk.request.return_hidden_states:
                        hidden_states[row.chunk.req_id] = np.asarray(hidden[i], np.float32)
        return RunnerOutput(req_ids, sampled, time.perf_counter() - start, hidden_states)

    def _split(self, rows: list[_Row], q_len: int) -> list[tuple[list[_Row], int]]:
        """Rows in groups, each with the bucket it is padded to: groups of the bucket the rows need (the largest
        when they need more), or of the largest smaller bucket ready while a background warm-up runs."""
        if not rows:
            return []
        ready = [n for n in self.row_buckets[q_len] if (n, q_len) in self._executables.ready]
        needed = next((n for n in self.row_buckets[q_len] if n >= len(rows)), self.row_buckets[q_len][-1])
        size = max(n for n in ready if n <= needed)
        groups = [rows[first : first + size] for first in range(0, len(rows), size)]
        return [(group, next(n for n in ready if n >= len(group))) for group in groups]

    def _rows(self, chunk: ScheduledChunk, q_len: int) -> list[_Row]:
        n = chunk.num_new_tokens
        return [
            _Row(chunk, chunk.num_computed_tokens + off, min(q_len, n - off), chunk.samples and off + q_len >= n)
            for off in range(0, n, q_len)
        ]

    def _pad_arrays(self, rows: list[_Row], q_len: int, num_rows: int) -> tuple[StepInputs, SamplingInputs]:
        token_ids = np.zeros((num_rows, q_len), np.int32)
        q_start = np.zeros(num_rows, np.int32)
        num_valid = np.zeros(num_rows, np.int32)
        page_table = np.zeros((num_rows, self.page_table_width), np.int32)
        temperature = np.zeros(num_rows, np.float32)
        top_k = np.zeros(num_rows, np.int32)
        top_p = np.ones(num_rows, np.float32)
        seeds = np.zeros(num_rows, np.uint32)
        steps = np.zeros(num_rows, np.int32)
        for i, row in enumerate(rows):
            request = row.chunk.request
            token_ids[i, : row.num_valid] = request.tokens(row.start, row.start + row.num_valid)
            q_start[i] = row.start
            num_valid[i] = row.num_valid
            page_table[i, : len(request.page_ids)] = request.page_ids
            params = request.sampling_params
            temperature[i], top_k[i], top_p[i] = params.temperature, params.top_k, params.top_p
            seeds[i] = request.seed
            steps[i] = request.num_generated_tokens
        max_context = int((q_start + num_valid).max(initial=1))
        num_kv_blocks = np.int32(max(1, -(-max_context // self.block_tokens)))
        return (
            StepInputs(token_ids, q_start, num_valid, page_table, num_kv_blocks),
            SamplingInputs(temperature, top_k, top_p, seeds, steps),
        )

    def _call(self, arrays: tuple[StepInputs, SamplingInputs]) -> tuple[jax.Array, jax.Array]:
        executable = self._executables.ready[arrays[0].token_ids.shape]  # (rows, q_len): a prepared bucket
        tokens, hidden, self.kv.k, self.kv.v = executable(self.params, self.kv.k, self.kv.v, *arrays)
        return tokens, hidden
