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


# ------------------------------------------------------------------------------ the new catalogue
def _published_loop(ckpt: Path, image: Path, moves: list) -> list[np.ndarray]:
    """The published inference loop (HFGI's ``inference.py``: encoder + latent_avg, a first pass, the
    distortion map, the W+ edit, the edited low-res image, ADA + consultation, the second pass) in
    the published sequence of ops, once per W+ move (a function of the codes)."""
    from torch.nn import functional as F

    from hfgi_cli.models.hfgi import HFGI
    from hfgi_cli.models.stylegan2 import PUBLISHED_FORM

    net = HFGI.from_checkpoint(ckpt, form=PUBLISHED_FORM)
    arr = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32) / 255.0
    x = (torch.from_numpy(arr).permute(2, 0, 1)[None] - 0.5) / 0.5

    def gen(w: torch.Tensor, conditions=None) -> torch.Tensor:
        return net.decoder(w, conditions, randomize_noise=False, form=PUBLISHED_FORM)

    def low(img: torch.Tensor) -> torch.Tensor:
        return F.interpolate(torch.clamp(img, -1, 1), size=(256, 256), mode="bilinear")

    outputs = []
    with torch.no_grad():
        codes = net.encoder(x) + net.latent_avg
        res = x - low(gen(codes))
        for move in moves:
            w_edit = move(codes)
            conditions = net.residue(net.grid_align(torch.cat((res, low(gen(w_edit))), 1)))
            out = gen(w_edit, conditions)
            outputs.append(((out[0].clamp(-1, 1) + 1) / 2 * 255).round().byte().permute(1, 2, 0).numpy())
    return [o.astype(np.int16) for o in outputs]


def _e4e_ganspace(codes: torch.Tensor, component: int, start: int, end: int, value: float) -> torch.Tensor:
    """e4e's ``editings/ganspace.py``: the coordinate on row 0 moved to ``value`` on rows start:end."""
    pca = torch.load(DIRECTIONS / "ganspace" / "ffhq_pca.pt", map_location="cpu")
    comp, std, mean = pca["comp"][component].reshape(-1), pca["std"][component], pca["mean"].reshape(-1)
    coord = ((codes[:, 0] - mean) * comp).sum(-1) / std
    out = codes.clone()
    out[:, start:end] += ((value - coord)[:, None] * comp * std)[:, None, :]
    return out


def _stit(codes: torch.Tensor, name: str, factor: float) -> torch.Tensor:
    """STIT's latent_editor: w + factor / 2 * d, d its file's row 0 (our strength is STIT's factor / 2)."""
    d = torch.from_numpy(np.load(DIRECTIONS / "stit" / f"{name}.npy")[0]).float()
    return codes + factor / 2 * d


def test_named_ganspace_and_stit_edits_match_the_published_loop(seed0_ckpt: Path, tmp_path: Path) -> None:
    """A named GANSpace edit (bald) and a STIT direction (gender) through `hfgi edit --aligned`,
    against the published loop given the same W+ move, written here from e4e's and STIT's formulas."""
    image = PARITY / "inputs" / "00044.jpg"
    res = run_cli("edit", str(image), "-o", str(tmp_path), "--checkpoint", str(seed0_ckpt), "--aligned",
                  "--directions", str(DIRECTIONS), "--precision", "fp32", "--quiet",
                  "--attr", "bald", "--attr", "gender", "-s", "1", "-s", "1.5")
    assert res.returncode == 0, res.stderr
    expected = _published_loop(seed0_ckpt, image, [lambda w: _e4e_ganspace(w, 21, 2, 5, 20.0),
                                                   lambda w: _stit(w, "gender", 3.0)])
    for label, ref in zip(("bald+1", "gender+1.5"), expected):
        ours = np.asarray(Image.open(tmp_path / f"00044_{label}.png").convert("RGB"), dtype=np.int16)
        close = (np.abs(ours - ref) <= 1).all(axis=-1).mean()
        assert close >= 0.999, f"{label}: only {close:.5f} of pixels within one level"
