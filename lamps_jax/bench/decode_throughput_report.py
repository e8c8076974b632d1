"""bench-engine's results: the per-cell record, the console table, the ratios to the best peer, and the
Markdown, CSV and chart files."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

ENGINE = "lamps_jax"


@dataclass(frozen=True)
class ThroughputCell:
    """One engine at one batch size."""

    model: str
    engine: str
    weights: str  # what its weights are stored as
    batch: int
    tok_s: float  # median over the repeats
    roofline_tok_s: float
    startup_s: float

    @property
    def fraction_of_roofline(self) -> float:
        return self.tok_s / self.roofline_tok_s

    def row(self) -> dict[str, Any]:
        return asdict(self) | {"fraction_of_roofline": self.fraction_of_roofline}


def throughput_table(cells: list[ThroughputCell], caption: str) -> Table:
    table = Table(title=caption)
    for column in ("model", "engine", "weights", "batch", "tok/s", "roofline tok/s", "of roofline", "start-up s"):
        table.add_column(column, justify="left" if column in ("model", "engine", "weights") else "right")
    for c in cells:
        table.add_row(
            c.model,
            c.engine,
            c.weights,
            str(c.batch),
            f"{c.tok_s:.1f}",
            f"{c.roofline_tok_s:.0f}",
            f"{c.fraction_of_roofline:.0%}",
            f"{c.startup_s:.1f}",
        )
    return table


def ratios_to_best_peer(cells: list[ThroughputCell]) -> list[str]:
    """Per model and batch: the engine's tokens/s over the best peer's."""
    lines = []
    for model in dict.fromkeys(c.model for c in cells):
        for batch in dict.fromkeys(c.batch for c in cells if c.model == model):
            here = [c for c in cells if (c.model, c.batch) == (model, batch)]
            peers = [c for c in here if not c.engine.startswith(ENGINE)]
            for ours in (c for c in here if c.engine.startswith(ENGINE) and peers):
                best = max(peers, key=lambda c: c.tok_s)
                lines.append(
                    f"{model}, batch {batch}: {ours.engine} at {ours.tok_s / best.tok_s:.2f}x the best peer "
                    f"({best.engine})"
                )
    return lines


def write_markdown(cells: list[ThroughputCell], caption: str, notes: list[str], path: Path) -> None:
    lines = [caption, "", "| model | engine | weights | batch | tok/s | roofline tok/s | of roofline | start-up s |"]
    lines.append("|---|---|---|---:|---:|---:|---:|---:|")
    lines += [
        f"| {c.model} | {c.engine} | {c.weights} | {c.batch} | {c.tok_s:.1f} | {c.roofline_tok_s:.0f} | "
        f"{c.fraction_of_roofline:.0%} | {c.startup_s:.1f} |"
        for c in cells
    ]
    path.write_text("\n".join([*lines, "", *(f"- {note}" for note in notes)]) + "\n")


def write_csv(cells: list[ThroughputCell], path: Path) -> None:
    rows = [c.row() for c in cells]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_chart(cells: list[ThroughputCell], caption: str, path: Path) -> None:
    """Bars per engine at each batch size, one panel per model, roofline fractions on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(c.model for c in cells))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [c for c in cells if c.model == model]
        engines = list(dict.fromkeys(c.engine for c in mine))
        batches = list(dict.fromkeys(c.batch for c in mine))
        width = 0.8 / len(engines)
        for offset, engine in enumerate(engines):
            bars = [next((c for c in mine if (c.engine, c.batch) == (engine, b)), None) for b in batches]
            xs = [i + (offset - (len(engines) - 1) / 2) * width for i in range(len(batches))]
            drawn = ax.bar(xs, [c.tok_s if c else 0 for c in bars], width, label=engine)
            labels = [f"{c.fraction_of_roofline:.0%}" if c else "" for c in bars]
            ax.bar_label(drawn, labels=labels, padding=2, fontsize=7)
        ax.set_xticks(range(len(batches)), [str(b) for b in batches])
        ax.set_xlabel("batch size (waves of prompts)")
        ax.set_ylabel("generated tokens / s")
        ax.set_title(model)
        ax.margins(y=0.12)
        ax.legend()
    fig.suptitle(caption + " (bar labels: fraction of roofline)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
