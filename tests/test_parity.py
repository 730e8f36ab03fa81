"""Parity with the published implementation: the CLI reproduces ../shared/reference/parity/.

Run in fp32, named explicitly: the exact reproduction (``--precision auto`` may pick bf16 or fp16,
whose drift tests/test_precision.py bounds).

The expected files were produced by the authors' code from `make_checkpoint.py --seed 0`.
Tolerance (README of the reference): latents within 1e-4, images within one uint8 level on at
least 99.9% of pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import DIRECTIONS, REFERENCE, run_cli

pytestmark = pytest.mark.slow
PARITY = REFERENCE / "parity"
STEMS = ("00044", "00418", "00418_1024")


def _compare(out_png: Path, out_pt: Path, mode: str, stem: str) -> None:
    expected = torch.load(PARITY / "expected" / mode / "latents.pt", map_location="cpu")[stem]
    record = torch.load(out_pt, map_location="cpu")
    assert (record["latent"] - expected["latent"]).abs().max() < 1e-4
    assert (record["inversion_latent"] - expected["inversion_latent"]).abs().max() < 1e-4
    ours = np.asarray(Image.open(out_png).convert("RGB"), dtype=np.int16)
    ref = np.asarray(Image.open(PARITY / "expected" / mode / f"{stem}.png").convert("RGB"), dtype=np.int16)
    assert ours.shape == ref.shape == (1024, 1024, 3)
    close = (np.abs(ours - ref) <= 1).all(axis=-1).mean()
    assert close >= 0.999, f"{mode}/{stem}: only {close:.5f} of pixels within one level"


@pytest.fixture(scope="module")
def parity_runs(seed0_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parity")
    inputs = str(PARITY / "inputs")
    inv = run_cli("invert", inputs, "-o", str(out / "inversion"), "--checkpoint", str(seed0_ckpt),
                  "--aligned", "--batch-size", "3", "--precision", "fp32", "--quiet")
    assert inv.returncode == 0, inv.stderr
    edit = run_cli("edit", inputs, "-o", str(out / "edits"), "--checkpoint", str(seed0_ckpt), "--aligned",
                   "--directions", str(DIRECTIONS), "--attr", "smile", "--strength", "2",
                   "--attr", "lip", "--strength", "1", "--batch-size", "2", "--precision", "fp32", "--quiet")
    assert edit.returncode == 0, edit.stderr
    return out


@pytest.mark.parametrize("stem", STEMS)
def test_inversion_matches_published(parity_runs: Path, stem: str) -> None:
    _compare(parity_runs / "inversion" / f"{stem}.png", parity_runs / "inversion" / f"{stem}.pt", "inversion", stem)


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize(("mode", "label"), [("smile", "smile+2"), ("lip", "lip+1")])
def test_edits_match_published(parity_runs: Path, stem: str, mode: str, label: str) -> None:
    base = parity_runs / "edits" / f"{stem}_{label}"
    _compare(base.with_suffix(".png"), base.with_suffix(".pt"), mode, stem)
