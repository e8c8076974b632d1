"""Plots: readable axis labels for every swept key, plain log tick labels, titles and captions, and a
``lamps`` line that stays visible over ``lamps_no_rank``."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg

from lamps_jax.bench.harness import RunCurves
from lamps_jax.bench.metrics import MemoryTrace
from lamps_jax.bench.plots import AXIS_LABELS, PlainLogFormatter, plain_number, run_details_figure, sweep_figure
from lamps_jax.bench.report import POINT_KEYS
from tests.bench.test_report import row


def tick_labels(fig, axis: str) -> list[str]:
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    labels = ax.get_xticklabels(which="both") if axis == "x" else ax.get_yticklabels(which="both")
    return [t.get_text() for t in labels if t.get_text()]


def test_every_swept_key_has_a_readable_axis_label() -> None:
    assert set(POINT_KEYS) <= set(AXIS_LABELS)
    rows = [
        row(policy, 3.0, 0, e2e * threshold, 0.5, starvation_threshold=threshold)
        for threshold in (10, 100, 1000)
        for policy, e2e in (("vllm", 0.2), ("lamps", 0.1))
    ]
    fig = sweep_figure(rows)
    assert {ax.get_xlabel() for ax in fig.axes} == {"starvation threshold (iterations)"}
    assert fig.get_suptitle() == "Mean latency per policy against the starvation threshold (iterations)"
    assert any("error bars: 95% CI (Student t) over 1 seed." in t.get_text() for t in fig.texts)
    rate_sweep = sweep_figure([row("lamps", rate, 0, 10.0 * rate, 0.5) for rate in (1.0, 2.0)])
    assert rate_sweep.axes[0].get_xlabel() == "request rate (requests/s)"


def test_log_axes_read_as_plain_numbers() -> None:
    assert [plain_number(v) for v in (78.0, 0.05, 20000.0, 1.0, 0.30000000000000004, 1e-7)] == [
        "78",
        "0.05",
        "20000",
        "1",
        "0.3",
        "0.0000001",
    ]
    rows = [row("lamps", 3.0, 0, e2e, 0.5, starvation_threshold=t) for t, e2e in ((10, 60.0), (100, 95.0))]
    fig = sweep_figure(rows)
    assert isinstance(fig.axes[0].yaxis.get_major_formatter(), PlainLogFormatter)
    labels = tick_labels(fig, "y") + tick_labels(fig, "x")
    assert labels and not any("10^" in label or "times" in label or "e+" in label for label in labels)
    assert {"60", "70", "80", "90"} <= set(tick_labels(fig, "y"))  # minor ticks within one decade


def test_lamps_is_drawn_last_thicker_and_in_its_own_style() -> None:
    memory = MemoryTrace([0.0, 1.0], [3, 0], [0, 0])
    runs = [RunCurves(p, [1.0, 2.0, 80.0], memory) for p in ("lamps", "lamps_no_rank", "vllm")]
    fig = run_details_figure(runs, "multi, rate/s 3.0")
    cdf, mem = fig.axes
    for ax in (cdf, mem):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert [line.get_label() for line in ax.get_lines()][-1] == "lamps"
        lamps, no_rank = lines["lamps"], lines["lamps_no_rank"]
        assert lamps.get_linewidth() > no_rank.get_linewidth() and lamps.get_zorder() > no_rank.get_zorder()
        assert (lamps.get_linestyle(), lamps.get_color()) != (no_rank.get_linestyle(), no_rank.get_color())
    assert (cdf.get_title(), mem.get_title()) == ("CDF of end-to-end latency", "KV memory over time")
    assert fig.get_suptitle() == "multi, rate/s 3.0" and fig.texts
    assert not any("10^" in label for label in tick_labels(fig, "x"))
