"""The peers ``bench-engine`` runs beside the engine, each in a process of its own at its own defaults.

A peer gets the workload as JSON (prompt token ids; runs, each a list of waves of prompts; tokens per request) and
prints one JSON line: the seconds of each run and its start-up time. Its own process keeps JAX's thread pools out
of its way (and its out of ours), and leaves each library's threading at its defaults: the comparison is against
what a user of that library gets.

- ``hf``: transformers ``generate``, f32, eager attention, greedy, left-padded waves, from a Hugging Face directory
  written from the engine's own weights (so all three read the same model).
- ``llama_cpp``: llama-cpp-python's low-level batched API on the GGUF file as shipped (SmolLM2: Q4_1): each wave's
  prompts decode as parallel sequences of one context, greedy on the returned logits.

Run as ``python -m lamps_jax.bench.peer_engines <peer> <workload.json>``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class PeerWorkload:
    model_path: str  # a Hugging Face directory (hf) or a .gguf file (llama_cpp)
    prompts: list[list[int]]
    runs: list[list[list[int]]]  # each run: waves of indices into prompts, one wave after another
    max_tokens: int  # generated per request, end-of-text ignored
    pad_id: int


@dataclass(frozen=True)
class PeerResult:
    peer: str
    version: str
    startup_s: float  # from the worker's start to the model ready
    run_seconds: list[float]


def _time_runs(workload: PeerWorkload, run_wave) -> list[float]:
    seconds = []
    for run in workload.runs:
        start = time.perf_counter()
        for wave in run:
            run_wave(wave)
        seconds.append(time.perf_counter() - start)
    return seconds


def _hf(workload: PeerWorkload) -> PeerResult:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        workload.model_path, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    startup = time.perf_counter() - start

    def run_wave(wave: list[int]) -> None:
        prompts = [workload.prompts[i] for i in wave]
        width = max(map(len, prompts))
        input_ids = torch.tensor([[workload.pad_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=workload.max_tokens,
                min_new_tokens=workload.max_tokens,
                pad_token_id=workload.pad_id,
            )
        if out.shape[1] - width != workload.max_tokens:
            raise RuntimeError(f"generate wrote {out.shape[1] - width} tokens, not {workload.max_tokens}")

    version = f"transformers {transformers.__version__}, torch {torch.__version__}"
    return PeerResult("hf", version, startup, _time_runs(workload, run_wave))


def _llama_cpp(workload: PeerWorkload) -> PeerResult:
    import llama_cpp
    import numpy as np

    start = time.perf_counter()
    llama_cpp.llama_backend_init()
    model_params = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(workload.model_path.encode(), model_params)
    if not model:
        raise RuntimeError(f"llama.cpp cannot load {workload.model_path}")
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    widest = max(len(wave) for run in workload.runs for wave in run)
    longest = max(map(len, workload.prompts)) + workload.max_tokens
    context_params = llama_cpp.llama_context_default_params()
    context_params.n_ctx = widest * longest
    context_params.n_batch = max(context_params.n_batch, sum(sorted(map(len, workload.prompts))[-widest:]))
    context_params.n_seq_max = widest
    context = llama_cpp.llama_init_from_model(model, context_params)
    if not context:
        raise RuntimeError("llama.cpp cannot create a context for the workload")
    batch = llama_cpp.llama_batch_init(context_params.n_batch, 0, widest)
    startup = time.perf_counter() - start

    def decode(entries: list[tuple[int, int, int, bool]]) -> None:
        """entries: (token, position, sequence, wants logits)."""
        batch.n_tokens = len(entries)
        for i, (token, position, sequence, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
            batch.seq_id[i][0], batch.logits[i] = sequence, logits
        if llama_cpp.llama_decode(context, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def greedy(index: int) -> int:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(context, index), shape=(n_vocab,))
        return int(logits.argmax())

    memory = llama_cpp.llama_get_memory(context)

    def run_wave(wave: list[int]) -> None:
        llama_cpp.llama_memory_clear(memory, True)
        prompts = [workload.prompts[i] for i in wave]
        entries = [(t, pos, seq, pos == len(p) - 1) for seq, p in enumerate(prompts) for pos, t in enumerate(p)]
        decode(entries)
        tokens = [greedy(row) for row, entry in enumerate(entries) if entry[3]]
        for step in range(1, workload.max_tokens):
            decode([(token, len(prompts[seq]) + step - 1, seq, True) for seq, token in enumerate(tokens)])
            tokens = [greedy(seq) for seq in range(len(prompts))]

    run_seconds = _time_runs(workload, run_wave)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(context)
    llama_cpp.llama_model_free(model)
    return PeerResult("llama_cpp", f"llama-cpp-python {llama_cpp.__version__}", startup, run_seconds)


PEERS = {"hf": _hf, "llama_cpp": _llama_cpp}


def main(argv: list[str]) -> None:
    peer, path = argv
    workload = PeerWorkload(**json.loads(Path(path).read_text()))
    print(json.dumps(asdict(PEERS[peer](workload))))


if __name__ == "__main__":
    main(sys.argv[1:])
