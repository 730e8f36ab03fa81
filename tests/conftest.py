"""Shared fixtures: project-generated checkpoints (small and full size) and the shared data.

``run_cli`` runs `hfgi` in this process (Typer's CliRunner); ``run_process`` starts it as a user
would, for the tests where the process itself matters (signals, pipes, file permissions).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hfgi_cli.cli import app
from hfgi_cli.models.hfgi import SMALL_CONFIG, make_random_checkpoint

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FACES = SHARED / "data" / "faces"
PHOTOS = SHARED / "data" / "photos"
DIRECTIONS = SHARED / "data" / "directions"
REFERENCE = SHARED / "reference"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> CliResult:
    """Run `hfgi` in this process; a bug (an exception the CLI does not turn into an exit status)
    fails the test with its traceback."""
    result = CliRunner().invoke(app, list(args), input=stdin, env=env, catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def run_process(*args: str, stdin: str | None = None, cwd: Path | None = None, timeout: float = 900,
                env: dict[str, str] | None = None, user: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run `hfgi` as a user would: a separate process, text in and out (as ``user``, a uid, when
    given: a test run by root needs another user to meet a permission)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hfgi_cli", *args],
        input=stdin, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=full_env, user=user,
    )


@pytest.fixture(scope="session")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    make_random_checkpoint(path, SMALL_CONFIG, seed=1)
    return path


@pytest.fixture(scope="session")
def small_directions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Direction files in the official layout, sized for the small model (style_dim 64)."""
    root = tmp_path_factory.mktemp("dirs64")
    g = torch.Generator().manual_seed(0)
    dim, n = SMALL_CONFIG.style_dim, SMALL_CONFIG.n_latent
    (root / "interfacegan").mkdir()
    (root / "ganspace").mkdir()
    for name in ("age", "smile"):
        torch.save(torch.randn(1, dim, generator=g), root / "interfacegan" / f"{name}.pt")
    torch.save(torch.randn(1, n, dim, generator=g), root / "interfacegan" / "pose.pt")
    pca = {"mean": torch.randn(1, dim, generator=g), "comp": torch.randn(80, 1, dim, generator=g),
           "std": torch.rand(80, generator=g) + 0.5}
    torch.save(pca, root / "ganspace" / "ffhq_pca.pt")
    return root


@pytest.fixture(scope="session")
def seed0_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The parity checkpoint, written by the reference's own make_checkpoint.py (1.2 GB); deleted
    at the end of the session, so pytest's kept temp folders do not hold gigabytes."""
    path = tmp_path_factory.mktemp("seed0") / "seed0.pt"
    subprocess.run(
        [sys.executable, str(REFERENCE / "make_checkpoint.py"), str(path), "--seed", "0"], check=True,
        capture_output=True,
    )
    yield path
    path.unlink(missing_ok=True)
