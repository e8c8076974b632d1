"""LLMEngine (the serving loop) and LLM (the offline ``generate`` API).

One ``step()`` is: API results in (resume their requests) -> schedule -> runner.execute ->
scheduler.update -> per sampled token: stop strings, then interception (pause the request with the
engine's KV strategy and submit its call). Requests are validated on entry so a bad one fails alone
with a clear error and never reaches the scheduler.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable, Sequence

from tqdm.auto import tqdm

from lamps_jax.api.executor import ApiExecutor, ApiResult
from lamps_jax.api.tool_use import ToolUse, tool_use_trigger
from lamps_jax.api.triggers import ToolCallTrigger, Trigger, scripted_trigger
from lamps_jax.clock import Clock, WallClock
from lamps_jax.config import EngineConfig
from lamps_jax.model.registry import LoadedModel, load_model
from lamps_jax.output_processor import OutputProcessor, RequestDelta
from lamps_jax.paged_kv.page_pool import PagePool
from lamps_jax.predictors.serving import segment_lengths_for
from lamps_jax.request import (
    ApiCall,
    ApiCallRecord,
    KVStrategy,
    Request,
    RequestOutput,
    RequestStatus,
    SamplingParams,
    Segment,
)
from lamps_jax.runner import JaxRunner
from lamps_jax.scheduler.scheduler import Scheduler

IDLE_WAIT_SECONDS = 0.005


class InvalidRequestError(ValueError):
    """A request the engine can never serve (empty, too long, larger than the KV memory)."""


class LLMEngine:
    """The serving loop. ``runner`` defaults to a ``JaxRunner`` over the model's params; the simulator
    passes a ``SimRunner`` (and a virtual clock) instead, with a model that has no params."""

    def __init__(
        self,
        model: LoadedModel,
        config: EngineConfig | None = None,
        clock: Clock | None = None,
        runner=None,
        model_name: str = "the serving model",
    ):
        self.config = config or EngineConfig()
        self.model_config = model.config
        self.clock = clock or WallClock()
        self.max_model_len = self.config.resolve_max_model_len(model.config)
        num_pages = self.config.cache.pages_for(model.config, self.config.tensor_parallel)  # per device
        self.page_pool = PagePool(num_pages)
        self.scheduler = Scheduler(
            self.config.scheduler,
            self.page_pool,
            self.config.cache.page_size,
            self.max_model_len,
            self.clock,
            cache_salt=hash(model.config),  # cached pages of one model never serve another
        )
        # length prediction (segment hidden states, a learned head, observed lengths); a bad head fails before compiling
        self.segment_lengths = segment_lengths_for(
            self.config.scheduler.length_predictor, self.scheduler, model, model_name
        )
        self.runner = runner or JaxRunner(model.config, model.params, self.config, num_pages, self.max_model_len)
        self.runner.warmup(background=self.config.warmup == "background")
        try:
            self.tokenizer = model.tokenizer  # after the runner: a converted model's tokenizer loads meanwhile
        except BaseException:
            if runner is None:
                self.runner.close()  # no background warm-up left running for an engine that never was
            raise
        self.api = ApiExecutor(self.clock, timeout=self.config.api_timeout)
        self.triggers: list[Trigger] = [scripted_trigger, tool_use_trigger]
        if self.config.tool_call_tags:
            self.triggers.append(ToolCallTrigger(*self.config.tool_call_tags))
        self._seeds = random.Random(self.config.seed)
        self._next_id = itertools.count()
        self.outputs = OutputProcessor(self._decode if self.tokenizer is not None else None)
        self._finished: list[Request] = []  # ended outside a step's update (API errors), reported by step()
        self._idle = False  # the last step had nothing to run

    @classmethod
    def from_model(cls, model: str, config: EngineConfig | None = None, dtype: str = "float32", seed: int = 0):
        return cls(load_model(model, dtype=dtype, seed=seed), config, model_name=model)

    # ---- requests ---------------------------------------------------------------------------
    def add_request(
        self,
        prompt: str | Sequence[int],
        sampling_params: SamplingParams | None = None,
        req_id: str | None = None,
        segments: Sequence[Segment] = (),
        arrival_time: float | None = None,
        session_id: str | None = None,
        tool_use: ToolUse | None = None,
        return_hidden_states: bool = False,
    ) -> str:
        """Queues a request; ``segments`` script its API calls and replace ``max_tokens`` (see ``Segment``).

        A ``session_id`` makes it a turn of a conversation: when it ends, its KV stays parked for
        ``EngineConfig.session_ttl`` seconds, and the session's next request reuses as much of it as its
        prompt matches (all of it when the prompt extends ``session_tokens(session_id)``). A ``tool_use`` makes
        the request call tools itself (``api/tool_use.py``): the tools must be registered (``register_tool``).
        ``return_hidden_states`` keeps the hidden state each segment starts from (``Request.segment_hidden_states``);
        a learned length predictor asks for them for every request."""
        params = sampling_params or SamplingParams()
        text = prompt if isinstance(prompt, str) else None
        token_ids = self._tokenize(prompt)
        if segments:
            self._check_token_ids(
                [t for s in segments for t in (*(s.token_ids or ()), *s.result_token_ids)], "scripted token ids"
            )
            scripted_tokens = sum(s.num_tokens + len(s.result_token_ids) for s in segments)
            params = dataclasses.replace(params, max_tokens=scripted_tokens)
        self._validate(token_ids, params)
        request = Request(
            req_id=req_id if req_id is not None else str(next(self._next_id)),
            prompt_token_ids=token_ids,
            sampling_params=params,
            arrival_time=self.clock.now() if arrival_time is None else arrival_time,
            seed=params.seed if params.seed is not None else self._seeds.getrandbits(31),
            eos_token_ids=self.model_config.eos_token_ids,
            prompt=text,
            segments=tuple(segments),
            session_id=session_id,
            tool_use=tool_use,
            return_hidden_states=return_hidden_states or self.segment_lengths.wants_hidden_states,
        )
        self.scheduler.add_request(request)
        self.outputs.add(request)
        return request.req_id

    def session_tokens(self, session_id: str) -> list[int] | None:
        """The tokens of a session's parked turn (prompt and output): a next prompt that starts with them
        recomputes nothing of them. None when nothing is parked under ``session_id``."""
        parked = self.scheduler.parked.get(session_id)
        return None if parked is None else list(parked.prompt_token_ids)

    def release_session(self, session_id: str) -> bool:
        """Frees a session's parked KV now (its full pages stay in the prefix cache); False if none is parked."""
        return self.scheduler.release_session(session_id)

    def abort_request(self, req_id: str) -> RequestOutput | None:
        """Ends a request wherever it is (running, waiting, mid-call, swapped out)."""
        request = self._finish(req_id, RequestStatus.FINISHED_ABORTED)
        if request is None:
            return None
        self.segment_lengths.on_finish(request)
        return self.outputs.delta(request).output

    @property
    def is_idle(self) -> bool:
        """The last step could run nothing (its requests wait for API calls or a caller's resume)."""
        return self._idle

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished() or bool(self._finished)

    def register_tool(self, name: str, fn: Callable) -> None:
        """A Python function (sync or async) that detected tool calls named ``name`` run."""
        self.api.register_tool(name, fn)

    def pause_request(self, req_id: str, name: str = "external") -> KVStrategy:
        """Pauses a running request for a call the caller makes itself; ``resume_request`` ends it."""
        request = self.scheduler.requests.get(req_id)
        if request is None or request.status is not RequestStatus.RUNNING:
            raise InvalidRequestError(f"request {req_id!r} is not running")
        return self.scheduler.pause(request, ApiCall(name=name))

    def resume_request(self, req_id: str, result: str | Sequence[int]) -> None:
        """Resumes a request paused by ``pause_request`` with the call's result (text or token ids)."""
        request = self.scheduler.paused.get(req_id)
        if request is None:
            raise InvalidRequestError(f"request {req_id!r} is not paused")
        tokens = self._tokenize(result) if isinstance(result, str) else [int(t) for t in result]
        self._record_call(request, "ok", None, result if isinstance(result, str) else None)
        self._resume(request, tokens)

    def _record_call(self, request: Request, status: str, error: str | None, result: str | None) -> None:
        """Keeps the outcome of the request's call in flight for its output (``RequestOutput.api_calls``)."""
        duration = self.clock.now() - request.events[-1][1]  # since the pause: the status is unchanged meanwhile
        call = request.api_call
        record = ApiCallRecord(call.name, status, error, duration, request.strategy.value, call.arguments, result)
        request.api_call_records.append(record)

    # ---- the loop ---------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Runs one iteration; returns the requests that finished in it (``step_deltas`` has every advance)."""
        return [self.outputs.delta(request).output for request in self._advance().values() if request.is_finished]

    def step_deltas(self) -> list[RequestDelta]:
        """Runs one iteration; returns a delta for every request that advanced in it (new tokens and
        text) or ended (then with its ``RequestOutput``)."""
        return [self.outputs.delta(request) for request in self._advance().values()]

    def _advance(self) -> dict[str, Request]:
        """Runs one iteration; the requests that advanced in it or ended, by id."""
        if self.scheduler.parked:
            self.scheduler.expire_sessions(self.config.session_ttl)
        for result in self.api.poll():
            self._on_api_result(result)
        sched_out = self.scheduler.schedule()
        self._idle = sched_out.is_empty
        advanced: dict[str, Request] = {}
        if not sched_out.is_empty:
            runner_out = self.runner.execute(sched_out)
            ended = {r.req_id: r for r in self.scheduler.update(sched_out, runner_out)}
            self._finished += ended.values()
            for req_id in runner_out.req_ids:
                request = advanced[req_id] = ended.get(req_id) or self.scheduler.requests[req_id]
                self.segment_lengths.on_sampled(request, runner_out.hidden_states.get(req_id))
                new_text = self.outputs.advance(request)
                if not request.is_finished:
                    self._after_token(request, new_text)
        finished, self._finished = self._finished, []
        for request in finished:
            self.segment_lengths.on_finish(request)
        return advanced | {r.req_id: r for r in finished}

    def _after_token(self, request: Request, new_text: str) -> None:
        text = self.outputs.text(request.req_id)
        if text.stop_at is not None:
            self._finish_in_step(request.req_id, RequestStatus.FINISHED_STOPPED)
            return
        for trigger in self.triggers:
            call = trigger(request, text, new_text)
            if call is not None:
                self.scheduler.pause(request, call)
                self.segment_lengths.on_pause(request)
                self.api.submit(request.req_id, call)
                return
        if request.script_done:
            self._finish_in_step(request.req_id, RequestStatus.FINISHED_STOPPED)

    def _on_api_result(self, result: ApiResult) -> None:
        request = self.scheduler.paused.get(result.req_id)
        if request is None:  # aborted meanwhile
            return
        text = result.text if result.error is None else f"error: {result.error}"
        self._record_call(request, result.status, result.error, text)
        if result.error is not None and self.config.api_error_policy == "abort":
            request.error = result.error
        elif text is not None and self.tokenizer is None:
            request.error = f"API call {result.call.name!r} answered text, but this model has no tokenizer"
        else:
            try:
                if text is not None and request.tool_use is not None:
                    text = request.tool_use.result_text(result.call, text)
            except Exception as err:  # the request's formatting failed: it alone ends, with the reason
                request.error = f"the result of {result.call.name!r} could not be written back: {err}"
            else:
                self._resume(request, list(result.token_ids) if text is None else self._tokenize(text))
                return
        self._finish_in_step(request.req_id, RequestStatus.FINISHED_ERROR)

    def _resume(self, request: Request, tokens: list[int]) -> None:
        context = request.num_tokens + len(tokens) + 1  # room for at least one more generated token
        if context > self.max_model_len or self.scheduler.pages_for(context) > self.page_pool.num_usable:
            request.error = f"the API result makes the context {context} tokens, more than the model or KV memory holds"
            self._finish_in_step(request.req_id, RequestStatus.FINISHED_ERROR)
            return
        self.scheduler.resume(request.req_id, tokens)

    def wait_for_work(self, until: float | None = None) -> None:
        """After a step that could run nothing, lets the clock pass to the next API return (or ``until``).

        With no deadline at all (a caller's pause awaiting ``resume_request``, a tool without a timeout)
        it waits ``IDLE_WAIT_SECONDS``, so that a serving loop polls instead of spinning on a core.
        """
        if not self._idle or self._finished:
            return
        deadlines = [t for t in (self.api.next_deadline(), until) if t is not None]
        self.clock.wait_until(min(deadlines) if deadlines else self.clock.now() + IDLE_WAIT_SECONDS)

    def close(self) -> None:
        """Stops a background warm-up of the runner (``EngineConfig.warmup``); the engine holds nothing else."""
        self.runner.close()

    def _finish(self, req_id: str, status: RequestStatus) -> Request | None:
        """Ends a request everywhere: scheduler (device and host pages) and API executor (its call)."""
        request = self.scheduler.finish_request(req_id, status)
        if request is not None:
            self.api.cancel(req_id)
        return request

    def _finish_in_step(self, req_id: str, status: RequestStatus) -> None:
        request = self._finish(req_id, status)
        if request is not None:
            self._finished.append(request)

    # ---- helpers ----------------------------------------------------------------------------
    def _tokenize(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise InvalidRequestError("this model has no tokenizer: pass prompt token ids")
            return list(self.tokenizer.encode(prompt, add_special_tokens=False))
        return [int(t) for t in prompt]

    def _validate(self, token_ids: list[int], params: SamplingParams) -> None:
        if not token_ids:
            raise InvalidRequestError("the prompt is empty")
        self._check_token_ids(token_ids, "prompt token ids")
        if len(token_ids) >= self.max_model_len:
            raise InvalidRequestError(
                f"the prompt has {len(token_ids)} tokens; the model's context is {self.max_model_len} "
                "(the prompt must leave room for at least one generated token)"
            )
        peak_tokens = min(len(token_ids) + params.max_tokens, self.max_model_len)
        peak_pages = self.scheduler.pages_for(peak_tokens)
        if peak_pages > self.page_pool.num_usable:
            raise InvalidRequestError(
                f"the request can need {peak_tokens} tokens of KV ({peak_pages} pages) but the KV memory "
                f"holds {self.page_pool.num_usable} pages of {self.config.cache.page_size} tokens; "
                "lower max_tokens or raise the KV memory budget"
            )

    def _check_token_ids(self, token_ids: list[int], what: str) -> None:
        vocab = self.model_config.vocab_size
        if token_ids and (min(token_ids) < 0 or max(token_ids) >= vocab):
            raise InvalidRequestError(f"{what} must be in [0, {vocab})")

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)


class LLM:
    """Offline batch generation: ``LLM(model="smollm2-135m").generate(prompts, params)``."""

    def __init__(self, model: str = "tiny", config: EngineConfig | None = None, dtype: str = "float32", seed: int = 0):
        self.engine = LLMEngine.from_model(model, config, dtype=dtype, seed=seed)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def close(self) -> None:
        """Stops a background warm-up (``EngineConfig.warmup``), so that the process can end without waiting."""
        self.engine.close()

    def generate(
        self,
        prompts: str | Sequence[str] | Sequence[Sequence[int]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
    ) -> list[RequestOutput]:
        """Generates for every prompt concurrently; outputs come back in prompt order."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if sampling_params is None or isinstance(sampling_params, SamplingParams):
            sampling_params = [sampling_params or SamplingParams()] * len(prompts)
        if len(sampling_params) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(sampling_params)} sampling params")
        req_ids = [self.engine.add_request(p, sp) for p, sp in zip(prompts, sampling_params)]
        outputs: dict[str, RequestOutput] = {}
        with tqdm(total=len(req_ids), desc="generate", disable=not use_tqdm) as bar:
            while len(outputs) < len(req_ids):
                for out in self.engine.step():
                    outputs[out.req_id] = out
                    bar.update(1)
                self.engine.wait_for_work()
        return [outputs[r] for r in req_ids]

    def chat(
        self,
        conversations: Sequence[list[dict[str, str]]],
        sampling_params: SamplingParams | None = None,
        use_tqdm: bool = True,
    ) -> list[RequestOutput]:
        """Applies the tokenizer's chat template to each conversation, then generates."""
        if self.tokenizer is None or not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model's tokenizer has no chat template")
        prompts = [
            self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations
        ]
        return self.generate(prompts, sampling_params, use_tqdm)
