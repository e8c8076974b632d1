"""scripts/device_check.sh: its summary over a run's folder, its argument check, and a whole --quick run here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lamps_jax.bench.device_summary import summarize
from lamps_jax.scheduler.cost_model import PROFILES, load_cost_model

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "device_check.sh"


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=1500)


def test_the_script_rejects_an_unknown_argument() -> None:
    done = run_script("--fast")
    assert done.returncode == 2 and "unknown argument --fast" in done.stderr


def test_the_summary_reads_every_steps_results(tmp_path: Path) -> None:
    (tmp_path / "steps.tsv").write_text("step\tstatus\tseconds\tcommand\nparity\tok\t12\tx\nswap\tfailed (1)\t3\ty\n")
    (tmp_path / "setting.json").write_text(json.dumps({"device": "cpu", "model": "tiny"}))
    (tmp_path / "parity").mkdir()
    checks = [{"check": "kernel", "passed": True}, {"check": "engine", "passed": False}]
    (tmp_path / "parity" / "device_parity.json").write_text(
        json.dumps({"device_kind": "cpu", "backend": "cpu", "checks": checks})
    )
    (tmp_path / "attention").mkdir()
    rows = [
        {"device": "H100", "impl": "pallas", "batch": 8, "context": 2048, "gbps": 2010.0, "peak_fraction": 0.6},
        {"device": "H100", "impl": "reference", "batch": 8, "context": 2048, "gbps": 900.0, "peak_fraction": 0.27},
    ]
    (tmp_path / "attention" / "attention.json").write_text(json.dumps(rows))
    (tmp_path / "profiles").mkdir()
    report = {"model": "tiny", "dtype": "float32", "cost_model": PROFILES["gptj-6b-a100"].to_dict()}
    report["roofline"] = {"fractions": {"decode": {"mean": 0.25, "best": 0.5}}}
    (tmp_path / "profiles" / "cpu-tiny.report.json").write_text(json.dumps(report))
    summary = summarize(tmp_path)
    assert not summary["passed"]  # the swap step failed
    text = (tmp_path / "summary.md").read_text()
    assert "| swap | failed (1) | 3 |" in text
    assert "parity on cpu (cpu): 2 checks, 1 FAILED" in text
    assert "best 2010 GB/s with pallas at batch 8, context 2048, 60% of the device's peak" in text
    assert "- bench-engine: no results" in text and "- bench-swap: no results" in text
    assert "f = 46.3 us/token + 0 us/context token + 10 ms" in text and "decode 25% of roofline" in text
    with pytest.raises(FileNotFoundError, match=r"not the folder of a device_check\.sh run"):
        summarize(tmp_path / "parity")


@pytest.mark.slow
def test_a_quick_run_completes_on_this_cpu(tmp_path: Path) -> None:
    """Every step of ``--quick`` on the CPU (2-4 minutes, most of it compiling the tiny model's steps)."""
    out = tmp_path / "check"
    done = run_script("--quick", "--no-install", "--output", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    steps = (out / "steps.tsv").read_text().splitlines()[1:]
    assert [line.split("\t")[:2] for line in steps] == [
        [name, "ok"] for name in ("parity", "attention", "engine", "swap", "calibrate")
    ]
    parity = json.loads((out / "parity" / "device_parity.json").read_text())
    assert parity["passed"] and parity["backend"] == "cpu"
    assert load_cost_model(str(out / "profiles" / "cpu-tiny.json")).kv_capacity_tokens == 64 * 2**20 // 4096
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# Device check: cpu") and "all passed" in summary and "batch 8:" in summary
