"""LLMEngine (the serving loop) and LLM (the offline ``generate`` API).

One ``step()`` is: schedule -> runner.execute -> scheduler.update, then stop strings (which need
the tokenizer) are checked here. Requests are validated on entry so a bad one fails alone with a
clear error and never reaches the scheduler.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from tqdm.auto import tqdm

from lamps_jax.clock import Clock, WallClock
from lamps_jax.config import EngineConfig
from lamps_jax.model.registry import LoadedModel, load_model
from lamps_jax.paged_kv.page_pool import PagePool
from lamps_jax.request import Request, RequestOutput, RequestStatus, SamplingParams
from lamps_jax.runner import JaxRunner
from lamps_jax.scheduler.scheduler import Scheduler

_FINISH_REASONS = {
    RequestStatus.FINISHED_STOPPED: "stop",
    RequestStatus.FINISHED_LENGTH: "length",
    RequestStatus.FINISHED_ABORTED: "abort",
    RequestStatus.FINISHED_ERROR: "error",
}


class InvalidRequestError(ValueError):
    """A request the engine can never serve (empty, too long, larger than the KV memory)."""


class LLMEngine:
    def __init__(self, model: LoadedModel, config: EngineConfig | None = None, clock: Clock | None = None):
        self.config = config or EngineConfig()
        self.model_config = model.config
        self.tokenizer = model.tokenizer
        self.clock = clock or WallClock()
        self.max_model_len = self.config.resolve_max_model_len(model.config)
        num_pages = self.config.cache.pages_for(model.config)
        self.page_pool = PagePool(num_pages)
        self.scheduler = Scheduler(
            self.config.scheduler, self.page_pool, self.config.cache.page_size, self.max_model_len, self.clock
        )
        self.runner = JaxRunner(model.config, model.params, self.config, num_pages, self.max_model_len)
        self.runner.warmup()
        self._seeds = random.Random(self.config.seed)
        self._next_id = itertools.count()

    @classmethod
    def from_model(cls, model: str, config: EngineConfig | None = None, dtype: str = "float32", seed: int = 0):
        return cls(load_model(model, dtype=dtype, seed=seed), config)

    # ---- requests ---------------------------------------------------------------------------
    def add_request(
        self, prompt: str | Sequence[int], sampling_params: SamplingParams | None = None, req_id: str | None = None
    ) -> str:
        params = sampling_params or SamplingParams()
        text = prompt if isinstance(prompt, str) else None
        token_ids = self._tokenize(prompt)
        self._validate(token_ids, params)
        request = Request(
            req_id=req_id if req_id is not None else str(next(self._next_id)),
            prompt_token_ids=token_ids,
            sampling_params=params,
            arrival_time=self.clock.now(),
            seed=params.seed if params.seed is not None else self._seeds.getrandbits(31),
            eos_token_ids=self.model_config.eos_token_ids,
            prompt=text,
        )
        self.scheduler.add_request(request)
        return request.req_id

    def abort_request(self, req_id: str) -> RequestOutput | None:
        request = self.scheduler.finish_request(req_id, RequestStatus.FINISHED_ABORTED)
        return None if request is None else self._output(request)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    # ---- the loop ---------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Runs one iteration; returns the requests that finished in it."""
        sched_out = self.scheduler.schedule()
        if sched_out.is_empty:
            return []
        runner_out = self.runner.execute(sched_out)
        finished = self.scheduler.update(sched_out, runner_out)
        for req_id in runner_out.req_ids:
            request = self.scheduler.requests.get(req_id)
            if request is not None and self._hit_stop_string(request):
                finished.append(self.scheduler.finish_request(req_id, RequestStatus.FINISHED_STOPPED))
        return [self._output(r) for r in finished]

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
        vocab = self.model_config.vocab_size
        if min(token_ids) < 0 or max(token_ids) >= vocab:
            raise InvalidRequestError(f"prompt token ids must be in [0, {vocab})")
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

    def _decode(self, token_ids: list[int]) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def _hit_stop_string(self, request: Request) -> bool:
        stops = request.sampling_params.stop
        if not stops:
            return False
        text = self._decode(request.output_token_ids)
        for stop in stops:
            if stop in text:
                request.stop_reason = stop
                return True
        return False

    def _output(self, request: Request) -> RequestOutput:
        text = self._decode(request.output_token_ids)
        if isinstance(request.stop_reason, str):
            text = text[: text.find(request.stop_reason)]
        end = request.events[-1][1] if request.is_finished else None
        return RequestOutput(
            req_id=request.req_id,
            prompt=request.prompt,
            prompt_token_ids=request.prompt_token_ids,
            text=text,
            token_ids=list(request.output_token_ids),
            finished=request.is_finished,
            finish_reason=_FINISH_REASONS.get(request.status),
            stop_reason=request.stop_reason,
            error=request.error,
            time_to_first_token=None
            if request.first_token_time is None
            else request.first_token_time - request.arrival_time,
            latency=None if end is None else end - request.arrival_time,
        )


class LLM:
    """Offline batch generation: ``LLM(model="smollm2-135m").generate(prompts, params)``."""

    def __init__(self, model: str = "tiny", config: EngineConfig | None = None, dtype: str = "float32", seed: int = 0):
        self.engine = LLMEngine.from_model(model, config, dtype=dtype, seed=seed)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

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
