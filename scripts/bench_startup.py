"""Start-up of ``lamps-jax generate`` for SmolLM2: a cold and a warm executable store, background and full warm-up.

Each run is a fresh process (``lamps-jax generate --model M --prompt hello --max-tokens 8 --warmup W``) timed from
its launch: "ready" is when it prints that the engine can serve (all imports, the model load and the first step
buckets included), "answered" when its answer is printed, "exit" when the process has ended (a background warm-up
is stopped first; a compile already running finishes and is stored). A cold run empties the executable store and
the built CPU kernels first and keeps the converted model (a code or jax upgrade); ``--cold-model`` also drops the
converted model (a first install). Runs alternate between the modes, so a busy machine slows all of them alike; each
cell is a median.

python scripts/bench_startup.py --repeats 3 --output docs/results/engine_speed/startup
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

READY = re.compile(r"loaded \S+ and (ready to serve|compiled) in")
COMMAND = [sys.executable, "-m", "lamps_jax.cli", "generate", "--prompt", "hello", "--max-tokens", "8"]


def run_once(model: str, warmup: str, cache_dir: Path) -> dict[str, float]:
    """Seconds from launch to ready, to the answer and to the process's end."""
    env = {**os.environ, "LAMPS_JAX_CACHE_DIR": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    process = subprocess.Popen(
        [*COMMAND, "--model", model, "--warmup", warmup],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    times: dict[str, float] = {}
    for line in process.stdout:  # tqdm's bars end in \r: one line holds several updates
        now = time.perf_counter() - started
        if "ready" not in times and READY.search(line):
            times["ready"] = now
        if "answered" not in times and "generated" in line and "tokens/s" in line:
            times["answered"] = now
    if process.wait() != 0:
        raise RuntimeError(f"lamps-jax generate --warmup {warmup} failed (exit {process.returncode})")
    times["exit"] = time.perf_counter() - started
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell (the median is kept)")
    parser.add_argument("--cold-model", action="store_true", help="cold runs also convert the model again")
    parser.add_argument("--output", type=Path, default=Path("bench_results/startup"))
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="lamps_jax_startup_"))
    cells: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        run_once(args.model, "full", cache)  # converts the model and fills the store once
        for repeat in range(args.repeats):
            for store in ("cold", "warm"):
                for warmup in ("background", "full"):
                    if store == "cold":
                        shutil.rmtree(cache / "executables", ignore_errors=True)
                        shutil.rmtree(cache / "kernels", ignore_errors=True)
                        if args.cold_model:
                            shutil.rmtree(cache / "models", ignore_errors=True)
                    else:
                        run_once(args.model, "full", cache)  # the store complete again
                    times = run_once(args.model, warmup, cache)
                    cells.setdefault((store, warmup), []).append(times)
                    print(f"[{repeat + 1}/{args.repeats}] {store} store, {warmup} warm-up: {times}", flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    rows = [
        {
            "store": store,
            "warmup": warmup,
            **{k: statistics.median(t[k] for t in runs) for k in ("ready", "answered", "exit")},
            "runs": len(runs),
        }
        for (store, warmup), runs in cells.items()
    ]
    setting = (
        f"model {args.model}, `lamps-jax generate --prompt hello --max-tokens 8` with the CLI's engine defaults, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end, medians of {args.repeats}; cold: "
        f"executable store{', built CPU kernels and converted model' if args.cold_model else ' and built CPU kernels'} "
        "emptied first"
    )
    lines = [
        f"Seconds from launch ({setting}).",
        "",
        "| executable store | warm-up | ready s | answered s | exit s |",
        "|---|---|---:|---:|---:|",
        *(f"| {r['store']} | {r['warmup']} | {r['ready']:.1f} | {r['answered']:.1f} | {r['exit']:.1f} |" for r in rows),
    ]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "startup.md").write_text("\n".join(lines) + "\n")
    (args.output / "startup.json").write_text(json.dumps({"setting": setting, "rows": rows}, indent=2))
    print("\n".join(lines))
    print(f"wrote {args.output / 'startup.md'} and startup.json")


if __name__ == "__main__":
    main()
