"""A server process for a benchmark: started, waited for until its /health answers, read over HTTP on this
machine (its /metrics, its model), and stopped with SIGINT (its graceful shutdown) or killed after a timeout."""

from __future__ import annotations

import ipaddress
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from prometheus_client.parser import text_string_to_metric_families

LOOPBACK = "127.0.0.1"
STOP_TIMEOUT_S = 60.0  # after SIGINT, how long a server gets to exit before it is killed


class BenchServeError(ValueError):
    """A server that cannot be reached or started: reported as bad input is, without a traceback."""


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def _get(url: str, timeout: float = 10.0) -> bytes:
    with _OPENER.open(url, timeout=timeout) as response:
        return response.read()


def scrape_metrics(url: str) -> dict[str, float]:
    """Every sample of ``url``/metrics, keyed as Prometheus writes it: ``name{label="value",...}``."""
    samples = {}
    for family in text_string_to_metric_families(_get(f"{url}/metrics").decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def served_model(url: str) -> str:
    """The model name the server answers to (the first of /v1/models)."""
    return json.loads(_get(f"{url}/v1/models"))["data"][0]["id"]


def check_url(url: str) -> None:
    """Raises ``BenchServeError`` unless ``url`` is an http:// loopback address whose /health answers."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parsed.scheme != "http" or not loopback:
        raise BenchServeError(f"--url must be an http:// address on this machine (loopback), got {url!r}")
    try:
        _get(f"{url}/health", timeout=5.0)
    except (urllib.error.URLError, OSError) as err:
        raise BenchServeError(f"cannot reach the server at --url {url}: {getattr(err, 'reason', err)}") from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _tail(log: IO[bytes], chars: int = 3000) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-chars:].rstrip()


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float, log: IO[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            raise BenchServeError(f"the server exited with code {code} before answering /health:\n{_tail(log)}")
        try:
            _get(f"{url}/health", timeout=2.0)
            return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise BenchServeError(f"the server at {url} did not answer /health within {timeout:g} s:\n{_tail(log)}")
        time.sleep(0.25)


def _stop(process: subprocess.Popen) -> None:
    """SIGINT (the server's graceful shutdown), then a kill if it has not exited within ``STOP_TIMEOUT_S``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"the server did not stop within {STOP_TIMEOUT_S:g} s of SIGINT: killed", file=sys.stderr)
        process.kill()
        process.wait()


@contextmanager
def spawned_server(command: list[str], url: str, health_timeout: float) -> Iterator[None]:
    """Runs ``command`` (a server that will listen at ``url``) until the block ends; raises ``BenchServeError``
    when it exits or does not answer /health within ``health_timeout`` seconds, naming its last output."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(url, process, health_timeout, log)
            yield
        finally:
            _stop(process)
