"""Collectives of one tensor-parallel decode step, read from the compiled HLO, against the Megatron-style minimum.

For each tp the runner's decode step (``--rows`` rows of one token) is compiled over tp fake CPU devices
(``--xla_force_host_platform_device_count``) and every all-reduce / all-gather / reduce-scatter / all-to-all /
collective-permute in the optimized HLO is counted with its payload (its result's bytes). Step times on fake
devices say nothing, so only the communication is reported. The minimum: a vocabulary-split embedding lookup
(one all-reduce of [R, D]), one all-reduce of [R, D] after ``wo`` and one after ``w_down`` per layer, and one
all-gather of the [R, V] logits for sampling. "wire MB/device" is what a ring moves per device:
2 (tp - 1) / tp of an all-reduce's payload, (tp - 1) / tp of an all-gather's.
Results: a console table and ``collectives.{json,md}`` in ``--output``.

python scripts/tp_collectives.py --model tiny --tp 1,2,4 --rows 8
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import Counter
from pathlib import Path

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_INSTRUCTION = re.compile(r"=\s+(\w+)\[([\d,]*)\][^ ]*\s+(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
_ITEMSIZE = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s8": 1, "pred": 1}


def collectives(hlo_text: str) -> list[tuple[str, int]]:
    """(kind, payload bytes) of every collective instruction in an optimized HLO module's text."""
    found = []
    for match in _INSTRUCTION.finditer(hlo_text):
        dtype, dims, kind = match.groups()
        size = 1
        for dim in filter(None, dims.split(",")):
            size *= int(dim)
        found.append((kind, size * _ITEMSIZE[dtype]))
    return found


def wire_bytes(kind: str, payload: int, tp: int) -> float:
    """Bytes a ring sends per device for one collective of ``payload`` bytes over ``tp`` devices."""
    return payload * (2 if kind == "all-reduce" else 1) * (tp - 1) / tp


def megatron_minimum(cfg, tp: int, rows: int) -> list[tuple[str, int]]:
    """The collectives a Megatron-style split of one decode step needs (none on one device)."""
    if tp == 1:
        return []
    itemsize = 4 if cfg.dtype == "float32" else 2
    hidden = rows * cfg.hidden_size * itemsize
    logits = rows * cfg.vocab_size * 4  # float32 logits
    return [("all-reduce", hidden)] * (1 + 2 * cfg.num_layers) + [("all-gather", logits)]


def decode_step_hlo(cfg, tp: int, rows: int) -> str:
    from lamps_jax.config import CacheConfig, EngineConfig, SchedulerConfig
    from lamps_jax.model.weights import init_params
    from lamps_jax.runner import JaxRunner, _step

    engine_cfg = EngineConfig(
        cache=CacheConfig(page_size=16, num_pages=64),
        scheduler=SchedulerConfig(max_num_seqs=rows),
        tensor_parallel=tp,
        compilation_cache=False,
    )
    runner = JaxRunner(cfg, init_params(cfg), engine_cfg, num_pages=64, max_model_len=512)
    arrays = runner._lowering_arrays(1, rows)
    lowered = _step.lower(runner.params, runner.kv.k, runner.kv.v, *arrays, **runner._static_args)
    return lowered.compile().as_text()


def _summary(found: list[tuple[str, int]], tp: int) -> dict:
    counts = Counter(kind for kind, _ in found)
    return {
        "collectives": ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "none",
        "count": len(found),
        "payload_kb": sum(b for _, b in found) / 1e3,
        "wire_kb_per_device": sum(wire_bytes(kind, b, tp) for kind, b in found) / 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="a preset or a Hugging Face config.json (random weights)")
    parser.add_argument("--tp", default="1,2,4", help="tensor-parallel degrees")
    parser.add_argument("--rows", type=int, default=8, help="decode rows of the step (one token each)")
    parser.add_argument("--output", type=Path, default=Path("docs/results/tensor_parallel"), help="results folder")
    args = parser.parse_args()
    degrees = [int(tp) for tp in args.tp.split(",")]
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={max(degrees)}"
    import jax
    from rich.console import Console
    from rich.table import Table

    from lamps_jax.sim.capacity import load_model_config

    jax.config.update("jax_platforms", "cpu")
    cfg = load_model_config(args.model, dtype="float32")
    rows = []
    for tp in degrees:
        measured = _summary(collectives(decode_step_hlo(cfg, tp, args.rows)), tp)
        minimum = _summary(megatron_minimum(cfg, tp, args.rows), tp)
        rows.append({"tp": tp} | measured | {f"minimum_{k}": v for k, v in minimum.items() if k != "collectives"})
    caption = (
        f"Collectives per decode step from the compiled HLO: {args.model} ({cfg.num_layers} layers, hidden "
        f"{cfg.hidden_size}, {cfg.num_heads} heads / {cfg.num_kv_heads} kv heads, vocab {cfg.vocab_size}, float32), "
        f"{args.rows} rows of one token, jax {jax.__version__} on fake CPU devices"
    )
    columns = list(rows[0])
    table = Table(title=caption)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    Console().print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "collectives.json").write_text(json.dumps({"caption": caption, "rows": rows}, indent=2))
    lines = [f"Table: {caption}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in columns) + " |" for r in rows
    ]
    (args.output / "collectives.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output / 'collectives.json'} and {args.output / 'collectives.md'}")


if __name__ == "__main__":
    main()
