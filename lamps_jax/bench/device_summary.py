"""The summary of a ``scripts/device_check.sh`` run: one JSON and one short Markdown file over its folder.

Reads what each step wrote (``steps.tsv``: step, status, seconds, command; ``parity/device_parity.json``;
``attention/attention.json``; ``engine/decode_throughput.json``; ``swap/swap_throughput.json``;
``profiles/*.report.json``) and writes ``summary.json`` and ``summary.md``, a step that wrote nothing shown as such.

python -m lamps_jax.bench.device_summary DIR
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def _json(path: Path) -> object | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _steps(folder: Path) -> list[dict]:
    path = folder / "steps.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {folder} is not the folder of a device_check.sh run")
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _attention_lines(rows: list[dict] | None) -> list[str]:
    if not rows:
        return ["- attention: no results"]
    best = max(rows, key=lambda r: r["gbps"])
    peak = f", {best['peak_fraction']:.0%} of the device's peak" if best.get("peak_fraction") else ", peak unknown"
    return [
        f"- attention ({best['device']}): best {best['gbps']:.4g} GB/s with {best['impl']} at batch {best['batch']}, "
        f"context {best['context']}{peak}; {len(rows)} points"
    ]


def _engine_lines(result: dict | None) -> list[str]:
    if not result:
        return ["- bench-engine: no results"]
    model = result["results"][0]["model"] if result["results"] else "?"
    lines = []
    for weights in dict.fromkeys(r["weights"] for r in result["results"] if r["engine"].startswith("lamps_jax")):
        cells = ", ".join(
            f"batch {r['batch']}: {r['tok_s']:.0f} tok/s ({r['fraction_of_roofline']:.0%} of roofline)"
            for r in result["results"]
            if r["engine"].startswith("lamps_jax") and r["weights"] == weights
        )
        lines.append(f"- bench-engine ({model}, {weights}, {result['setting']['max_tokens']} tokens a prompt): {cells}")
    return lines or ["- bench-engine: no results"]


def _swap_lines(result: dict | None) -> list[str]:
    if not result:
        return ["- bench-swap: no results"]
    rows = result["throughput_gbps"]
    cells = ", ".join(f"{r['pages']} pages: out {r['swap_out']:.2f} / in {r['swap_in']:.2f} GB/s" for r in rows)
    overlap = result["step_overhead"]["overlap_fraction"]
    return [f"- bench-swap ({result['model']}): {cells}; swaps hidden behind a decode step: {overlap:.0%}"]


def _profile_lines(folder: Path) -> list[str]:
    lines = []
    for path in sorted((folder / "profiles").glob("*.report.json")):
        report = json.loads(path.read_text())
        cost, fractions = report["cost_model"], report["roofline"]["fractions"]
        roofline = ", ".join(f"{kind} {f['mean']:.0%} of roofline (mean)" for kind, f in fractions.items())
        lines.append(
            f"- calibrate ({report['model']}, {report['dtype']}): f = {cost['iter_per_token'] * 1e6:.3g} us/token + "
            f"{cost['iter_per_context_token'] * 1e6:.3g} us/context token + {cost['iter_base'] * 1e3:.3g} ms; "
            f"g = {cost['swap_per_token'] * 1e6:.3g} us/token + {cost['swap_base'] * 1e3:.3g} ms; {roofline}; "
            f"profile {path.name.removesuffix('.report.json')}.json"
        )
    return lines or ["- calibrate: no profile"]


def summarize(folder: Path) -> dict:
    """Writes ``summary.json`` and ``summary.md`` into ``folder`` and returns the summary."""
    steps = _steps(folder)
    parity = _json(folder / "parity" / "device_parity.json")
    attention = _json(folder / "attention" / "attention.json")
    engine = _json(folder / "engine" / "decode_throughput.json")
    swap = _json(folder / "swap" / "swap_throughput.json")
    setting = _json(folder / "setting.json") or {}
    summary = {"setting": setting, "steps": steps, "parity": parity, "attention": attention, "engine": engine}
    summary |= {"swap": swap, "passed": all(s["status"] == "ok" for s in steps)}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# Device check: {setting.get('device', '?')}",
        "",
        "Setting: " + ", ".join(f"{k} {v}" for k, v in setting.items()) + ".",
        "",
        "| step | status | seconds |",
        "|---|---|---:|",
        *(f"| {s['step']} | {s['status']} | {float(s['seconds']):.0f} |" for s in steps),
        "",
    ]
    if parity:
        failed = [c for c in parity["checks"] if not c["passed"]]
        lines.append(
            f"- parity on {parity['device_kind']} ({parity['backend']}): {len(parity['checks'])} checks, "
            + ("all passed" if not failed else f"{len(failed)} FAILED")
        )
    else:
        lines.append("- parity: no results")
    lines += _attention_lines(attention) + _engine_lines(engine) + _swap_lines(swap) + _profile_lines(folder)
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {folder / 'summary.json'}\nwrote {folder / 'summary.md'}")
    return summary


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m lamps_jax.bench.device_summary DIR")
    sys.exit(0 if summarize(Path(sys.argv[1]))["passed"] else 1)
