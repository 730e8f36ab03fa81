"""Shared fixtures: project-generated checkpoints (small and full size) and the shared data.

``run_cli`` runs `hfgi` in this process (Typer's CliRunner); ``run_process`` starts it as a user
would, for the tests where the process itself matters (signals, pipes, file permissions).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hfgi_cli.cli import app
from hfgi_cli.models.hfgi import HFGI, SMALL_CONFIG, ModelConfig, make_random_checkpoint

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
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `hfgi` as a user would: a separate process, text in and out."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hfgi_cli", *args],
        input=stdin, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=full_env,
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
    write_catalogue_standins(root, SMALL_CONFIG, seed=0)
    return root


STIT_NAMES = ("gender", "eyes_open", "mouth_open", "yaw", "age", "smile")
GRADCTRL_ATTRIBUTES = "gender,smile,eyeglasses,age,pose"


def write_catalogue_standins(root: Path, config: ModelConfig, seed: int = 0) -> None:
    """Seeded stand-ins, shaped for ``config``, of the files the other edit families read (the
    official ones are for the 512-D FFHQ model): STIT directions, GradCtrl's classifiers and their
    params pickle, StyleCLIP's S_mean_std, templates, fs3.npy and a small CLIP in OpenAI's format."""
    import pickle

    g = torch.Generator().manual_seed(seed)
    dim, n = config.style_dim, config.n_latent
    (root / "stit").mkdir(exist_ok=True)
    for name in STIT_NAMES:
        np.save(root / "stit" / f"{name}.npy", torch.randn(1, dim, generator=g).repeat(n, 1).double().numpy())
    (root / "gradctrl").mkdir(exist_ok=True)
    state = {}
    for i in range(5):
        state[f"classifiers.{i}.classifier.0.weight"] = torch.randn(16, dim, generator=g) / dim**0.5
        state[f"classifiers.{i}.classifier.0.bias"] = 0.1 * torch.randn(16, generator=g)
        state[f"classifiers.{i}.classifier.2.weight"] = torch.randn(1, 16, generator=g) / 4
        state[f"classifiers.{i}.classifier.2.bias"] = 0.1 * torch.randn(1, generator=g)
    torch.save(state, root / "gradctrl" / "model_ffhq.pth")
    params = {"attributes": GRADCTRL_ATTRIBUTES, "n_attributes": 5, "n_shared_layers": 0, "hidden_size": 16}
    (root / "gradctrl" / "model_ffhq_params.pkl").write_bytes(pickle.dumps(params, protocol=3))
    (root / "styleclip").mkdir(exist_ok=True)
    with torch.device("meta"):
        layout = HFGI(config).style_layout()
    means = [np.abs(torch.randn(c, generator=g).numpy()).astype(np.float32) for c, _ in layout]
    stds = [(0.5 + torch.rand(c, generator=g)).numpy().astype(np.float32) for c, _ in layout]
    (root / "styleclip" / "S_mean_std").write_bytes(pickle.dumps([means, stds], protocol=2))
    shutil.copy(DIRECTIONS / "styleclip" / "templates.txt", root / "styleclip" / "templates.txt")
    fs3 = torch.randn(sum(c for c, to_rgb in layout if not to_rgb), 512, generator=g)
    np.save(root / "styleclip" / "fs3.npy", (fs3 / fs3.norm(dim=1, keepdim=True)).numpy().astype(np.float32))
    torch.save(small_clip_state(seed), root / "styleclip" / "ViT-B-32.pt")


def small_clip_state(seed: int) -> dict[str, torch.Tensor]:
    """A seeded CLIP in OpenAI's state-dict layout (512-D embeddings, CLIP's 49408-token vocabulary
    and 77-token context), with a one-layer, 64-wide text tower and a tiny vision tower."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)  # open_clip initialises from the global generator; a test process owns it
    model = CLIP(512, CLIPVisionCfg(layers=1, width=64, patch_size=32, image_size=64, head_width=64),
                 CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1), quick_gelu=True)
    return {k: v.clone() for k, v in model.state_dict().items()}


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
