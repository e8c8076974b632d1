"""Two engine processes joined by jax.distributed on 127.0.0.1 (tp = 2, one CPU device each) serve the same
tokens as one process; process 0 schedules, process 1 follows its broadcast steps and stops when told."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from lamps_jax.engine import LLMEngine
from lamps_jax.model.registry import LoadedModel
from lamps_jax.model.weights import init_params
from tests.parallel.tp_worker import TIME_LIMIT_S, engine_config, model_config, serve

pytestmark = pytest.mark.slow  # two processes compile the step while a third serves the reference: ~1 min


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_serve_the_same_tokens_as_one(tmp_path) -> None:
    address = f"127.0.0.1:{_free_port()}"
    logs = [(tmp_path / f"out{i}.txt", tmp_path / f"err{i}.txt") for i in range(2)]
    processes = []
    try:
        for i, (out, err) in enumerate(logs):
            with out.open("w") as stdout, err.open("w") as stderr:
                command = [sys.executable, "-m", "tests.parallel.tp_worker", "process", "--address", address]
                processes.append(subprocess.Popen([*command, "--process-id", str(i)], stdout=stdout, stderr=stderr))
        cfg = model_config()
        expected = serve(LLMEngine(LoadedModel(cfg, init_params(cfg, seed=0), None), engine_config(1, "swap")))
        for process in processes:
            process.wait(timeout=TIME_LIMIT_S + 30)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (_, err) in zip(processes, logs):
        assert process.returncode == 0, err.read_text()[-3000:]
    leader = json.loads(logs[0][0].read_text().strip().splitlines()[-1])["result"]
    assert leader["swap_out_pages"] > 0 and leader["swap_in_pages"] == leader["swap_out_pages"]
    assert leader["tokens"] == expected["tokens"]
