"""The length predictor's commands: collect-lengths, train-predictor, bench-length-predictor.

``add_commands`` adds their parsers to the ``lamps-jax`` command line, ``check`` validates their arguments
before JAX or a model loads, ``run`` runs one. Each says where it writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMANDS = ("collect-lengths", "train-predictor", "bench-length-predictor")
DEFAULT_DATASET = Path("bench_results/length_predictor/smollm2-135m")
DEFAULT_HEAD = Path("bench_results/length_predictor/head")


def add_commands(command) -> None:
    """``command(name, help)`` returns a subparser (cli.py's helper)."""
    collect = command("collect-lengths", "record the serving model's hidden states and answer lengths on prompts")
    collect.add_argument("--model", default="smollm2-135m", help="the serving model (preset, smollm2-135m, a path)")
    collect.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights and activations")
    collect.add_argument("--prompt-sets", default="traces,builtin", help="traces and/or builtin (comma-separated)")
    collect.add_argument(
        "--prompts-per-set", type=int, default=0, help="prompts drawn at random from each set (0: all of them)"
    )
    collect.add_argument(
        "--temperature", type=float, default=0.7, help="the serving temperature answers are sampled at"
    )
    collect.add_argument("--max-tokens", type=int, default=500, help="token cap of an answer (50 bins of 10 tokens)")
    collect.add_argument("--max-prompt-chars", type=int, default=2000, help="trace prompts are cut to their last chars")
    collect.add_argument("--max-num-seqs", type=int, default=32, help="answers generated at once")
    collect.add_argument("--kv-memory-mib", type=int, default=1024, help="device memory for KV pages")
    collect.add_argument("--seed", type=int, default=0, help="prompt draw and sampling seeds")
    collect.add_argument(
        "--output", type=Path, default=DEFAULT_DATASET, help="dataset stem: writes <stem>.npz and <stem>.json"
    )

    train = command("train-predictor", "train length heads on a collected dataset and score them on held-out prompts")
    train.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="dataset stem (collect-lengths --output)")
    train.add_argument("--kinds", default="bins,log", help="heads to train: bins (50 x 10 tokens) and/or log")
    train.add_argument("--hidden-sizes", default="0,256", help="0: linear head; N: a 2-layer MLP of width N")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="AdamW peak rate, after warm-up")
    train.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay")
    train.add_argument("--warmup-steps", type=int, default=50, help="linear warm-up steps, then cosine decay")
    train.add_argument("--max-epochs", type=int, default=300, help="epochs at most")
    train.add_argument("--patience", type=int, default=25, help="epochs without a better validation loss to stop")
    train.add_argument("--batch-size", type=int, default=64, help="minibatch size")
    train.add_argument("--folds", type=int, default=5, help="cross-validation folds of whole groups (scored held out)")
    train.add_argument("--validation", type=float, default=0.2, help="share of the training groups for early stopping")
    train.add_argument("--seed", type=int, default=0, help="split, init and shuffling seed")
    train.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_HEAD,
        help="the head shape with the lowest validation MAE, trained on every group: an orbax checkpoint folder; "
        "the report goes beside it "
        "as <output>.md and <output>.json",
    )

    bench = command(
        "bench-length-predictor", "LAMPS with learned vs oracle vs noisy vs mean lengths (simulated); head cost"
    )
    bench.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="dataset stem (collect-lengths --output)")
    bench.add_argument("--head", type=Path, default=DEFAULT_HEAD, help="train-predictor's head (orbax folder)")
    bench.add_argument("--rates", default="6,8", help="request rates (req/s): around saturation on these requests")
    bench.add_argument("--seeds", default="0,1,2", help="arrival seeds (the table shows their mean)")
    bench.add_argument("--window", type=float, default=300.0, help="arrival window in seconds")
    bench.add_argument("--profile", default="gptj-6b-a100", help="cost profile of the simulator")
    bench.add_argument(
        "--output",
        type=Path,
        default=Path("bench_results/length_predictor"),
        help="folder: writes simulation.md and simulation.json there",
    )


def check(args: argparse.Namespace) -> None:
    if args.command == "collect-lengths":
        from lamps_jax.predictors.prompts import PROMPT_SETS

        sets = [s for s in args.prompt_sets.split(",") if s]
        if not sets or any(s not in PROMPT_SETS for s in sets):
            raise ValueError(f"--prompt-sets takes {', '.join(PROMPT_SETS)}, got {args.prompt_sets!r}")
        if args.prompts_per_set < 0 or args.max_tokens < 1 or args.temperature < 0 or args.max_prompt_chars < 1:
            raise ValueError(
                "--prompts-per-set must be >= 0, --max-tokens and --max-prompt-chars >= 1, --temperature >= 0"
            )

    if args.command == "train-predictor":
        from lamps_jax.predictors.head import HeadSpec

        for kind in _words(args.kinds):
            for hidden_size in _ints(args.hidden_sizes):
                HeadSpec(kind, hidden_size)
        _train_config(args)
        if not 0 < args.validation < 1 or args.folds < 2:
            raise ValueError("--validation must be in (0, 1) and --folds >= 2")

    if args.command == "bench-length-predictor" and (
        not _floats(args.rates) or not _ints(args.seeds) or not args.window > 0
    ):
        raise ValueError("bench-length-predictor needs rates, seeds and a window > 0 seconds")


def _floats(text: str) -> list[float]:
    try:
        return [float(w) for w in _words(text)]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from None


def _words(text: str) -> list[str]:
    words = [w.strip() for w in text.split(",") if w.strip()]
    if not words:
        raise ValueError(f"expected a comma-separated list, got {text!r}")
    return words


def _ints(text: str) -> list[int]:
    try:
        return [int(w) for w in _words(text)]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


def _train_config(args: argparse.Namespace):
    from lamps_jax.predictors.train import TrainConfig

    return TrainConfig(
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        seed=args.seed,
    )


def models(args: argparse.Namespace) -> list[str]:
    return [args.model] if args.command == "collect-lengths" else []


def run(args: argparse.Namespace) -> None:
    if args.command == "collect-lengths":
        _collect(args)
    elif args.command == "train-predictor":
        from lamps_jax.predictors.report import train_and_report

        specs = [(kind, hidden_size) for kind in _words(args.kinds) for hidden_size in _ints(args.hidden_sizes)]
        train_and_report(args.dataset, specs, _train_config(args), args.folds, args.validation, args.output)
    elif args.command == "bench-length-predictor":
        from lamps_jax.predictors.bench import run_benchmark

        rates, seeds = _floats(args.rates), _ints(args.seeds)
        run_benchmark(args.dataset, args.head, rates, seeds, args.window, args.profile, args.output)


def _collect(args: argparse.Namespace) -> None:
    import numpy as np

    from lamps_jax.config import CacheConfig, EngineConfig, SchedulerConfig
    from lamps_jax.engine import LLMEngine
    from lamps_jax.model.registry import load_model
    from lamps_jax.predictors.collect import collect_lengths
    from lamps_jax.predictors.prompts import load_prompt_sets

    rng = np.random.default_rng(args.seed)
    prompts = []
    for name in args.prompt_sets.split(","):
        pool = load_prompt_sets([name], args.max_prompt_chars)
        if args.prompts_per_set and args.prompts_per_set < len(pool):
            pool = [pool[i] for i in sorted(rng.choice(len(pool), args.prompts_per_set, replace=False))]
        prompts += pool
    model = load_model(args.model, dtype=args.dtype, seed=args.seed)
    config = EngineConfig(
        cache=CacheConfig(kv_memory_bytes=args.kv_memory_mib * 2**20),
        scheduler=SchedulerConfig(max_num_seqs=args.max_num_seqs),
        seed=args.seed,
    )
    engine = LLMEngine(model, config, model_name=args.model)
    dataset = collect_lengths(engine, prompts, args.model, model.params, args.temperature, args.max_tokens, args.seed)
    dataset.meta |= {"prompt_sets": args.prompt_sets, "prompts_per_set": args.prompts_per_set}
    arrays, meta = dataset.save(args.output)
    capped = int(dataset.capped.sum())
    print(
        f"{len(dataset)} prompts ({dataset.meta['num_skipped_too_long']} skipped: longer than the context), "
        f"mean length {dataset.lengths.mean():.1f} tokens, {capped} capped at {args.max_tokens}; "
        f"wrote {arrays} and {meta}"
    )
