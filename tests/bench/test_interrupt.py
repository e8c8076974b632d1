"""Ctrl-C during a simulated sweep: the grid stops at once and the rows of the finished runs are written."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lamps_jax.bench import sim_grid
from lamps_jax.bench.comparison import simulate_comparison
from lamps_jax.bench.sim_grid import GridInterrupted
from lamps_jax.workload.traces import DEFAULT_TRACES
from tests.bench.test_sim_grid import write_small_trace

REPO = Path(__file__).resolve().parents[2]
# A shell runs background jobs with SIGINT ignored, and Python then installs no Ctrl-C handler: the CLI
# is started with Python's handler in place, as in a terminal, whatever ran the tests.
CLI_WITH_CTRL_C = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from lamps_jax.cli import main; sys.exit(main(sys.argv[1:]))"
)


def interrupt_after(calls: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes the ``calls + 1``-th run of a serial grid raise KeyboardInterrupt, as Ctrl-C would."""
    run_point, count = sim_grid.run_point, [0]

    def run_or_interrupt(point):
        count[0] += 1
        if count[0] > calls:
            raise KeyboardInterrupt
        return run_point(point)

    monkeypatch.setattr(sim_grid, "run_point", run_or_interrupt)


def test_ctrl_c_in_a_serial_grid_writes_the_finished_rows_and_reraises(tmp_path: Path, monkeypatch, capsys) -> None:
    trace, out = str(write_small_trace(tmp_path)), tmp_path / "out"
    interrupt_after(2, monkeypatch)
    with pytest.raises(GridInterrupted) as raised:
        simulate_comparison(["vllm", "lamps"], jobs=1, output_dir=out, trace=[trace], rate=[2.0, 4.0], window=[10.0])
    assert isinstance(raised.value, KeyboardInterrupt) and raised.value.total == 4
    assert [r.point.policy for r in raised.value.finished] == ["vllm", "lamps"]
    assert len(json.loads((out / "comparison.json").read_text())) == 2
    assert (out / "comparison.md").is_file() and (out / "comparison.csv").is_file()
    captured = capsys.readouterr()
    assert f"interrupted: 2 of 4 simulated runs finished; their rows are in {out}/comparison." in captured.err
    assert f"wrote {out / 'comparison.json'}" in captured.out


def test_ctrl_c_before_any_run_finished_writes_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    trace, out = str(write_small_trace(tmp_path)), tmp_path / "out"
    interrupt_after(0, monkeypatch)
    with pytest.raises(GridInterrupted):
        simulate_comparison(["vllm"], jobs=1, output_dir=out, trace=[trace], rate=[2.0], window=[10.0])
    assert not out.exists()
    assert "interrupted: 0 of 1 simulated run finished\n" in capsys.readouterr().err


def wait_for_a_finished_run(stderr: Path, process: subprocess.Popen, timeout: float) -> None:
    """Waits until the progress bar on ``stderr`` counts at least one finished run."""
    deadline = time.monotonic() + timeout
    while not re.search(r" [1-9]\d*/\d+ ", stderr.read_text()):
        assert process.poll() is None, f"bench exited early: {stderr.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "no simulated run finished in time"
        time.sleep(0.2)


@pytest.mark.skipif(not DEFAULT_TRACES["multi"].is_file(), reason="the INFERCEPT traces are not present")
def test_ctrl_c_stops_a_parallel_bench_within_seconds(tmp_path: Path) -> None:
    out, stdout, stderr = tmp_path / "out", tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    argv = ["bench", "--trace", "multi", "--rates", "1,2,3,4,5,6,7,8", "--window", "60", "--seeds", "0,1"]
    argv += ["--jobs", "2", "--policies", "vllm,lamps", "--output", str(out)]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    with stdout.open("w") as out_file, stderr.open("w") as err_file:
        process = subprocess.Popen(
            [sys.executable, "-c", CLI_WITH_CTRL_C, *argv], cwd=REPO, env=env, stdout=out_file, stderr=err_file
        )
        try:
            wait_for_a_finished_run(stderr, process, timeout=60)
            process.send_signal(signal.SIGINT)
            returncode = process.wait(timeout=10)
        finally:
            process.kill()
    assert returncode != 0
    rows = json.loads((out / "comparison.json").read_text())
    assert 1 <= len(rows) < 32
    assert f"interrupted: {len(rows)} of 32 simulated runs finished" in stderr.read_text()
    assert f"wrote {out / 'comparison.json'}" in stdout.read_text()
