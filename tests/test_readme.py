"""README.md as a new user meets it, in an environment with only the run dependencies: ``--help`` says
nothing on stderr, ``generate --chat`` works, every Python block runs as written and does what its
comments say, and every command line in it parses and passes the CLI's argument checks."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lamps_jax.cli import _check_args
from lamps_jax.cli_parser import build_parser
from tests.run_deps_only import REPO, make_run_site, run

README = (REPO / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


@pytest.fixture(scope="module")
def run_site(tmp_path_factory) -> Path:
    return make_run_site(tmp_path_factory.mktemp("run-site"))


def test_the_run_dependencies_leave_out_the_test_extra(run_site: Path) -> None:
    assert (run_site / "jinja2").exists() and not (run_site / "torch").exists()
    assert "No module named 'torch'" in run(run_site, "-c", "import torch").stderr


def test_help_runs_on_the_run_dependencies_and_prints_nothing_on_stderr(run_site: Path) -> None:
    result = run(run_site, "-m", "lamps_jax.cli", "--help")
    assert result.returncode == 0 and "generate" in result.stdout
    assert result.stderr == ""


def test_every_command_prints_its_help() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # the subcommands, by name
    for name, command in commands.items():
        assert command.format_help(), name  # a stray % in a help text fails here


def test_generate_chat_on_tiny_runs_on_the_run_dependencies(run_site: Path) -> None:
    args = ["generate", "--model", "tiny", "--chat", "--prompt", "hello", "--max-tokens", "4"]
    small = ["--max-num-seqs", "2", "--max-num-batched-tokens", "32", "--kv-memory-mib", "8"]
    result = run(run_site, "-m", "lamps_jax.cli", *args, *small)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 request served concurrently" in result.stdout and "generated 4 tokens" in result.stdout


def test_every_command_line_in_the_readme_parses_and_passes_the_argument_checks() -> None:
    lines = [line for block in code_blocks("bash") for line in block.splitlines() if line.startswith("lamps-jax")]
    assert len(lines) >= 10
    parser = build_parser()
    for line in lines:
        args = parser.parse_args(shlex.split(line.split("#")[0])[1:])
        if args.command != "report" and "path/to" not in line:  # placeholders name no real file
            _check_args(args)


@pytest.mark.slow
def test_every_python_block_runs_as_written_on_the_run_dependencies(run_site: Path) -> None:
    blocks = code_blocks("python")
    assert len(blocks) == 3
    result = run(run_site, "-c", "\n".join(blocks), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "It is 42." in result.stdout  # the scripted call's result was appended ...
    assert "ApiCallRecord(name='qa', status='ok', error=None" in result.stdout  # ... after the call was made
