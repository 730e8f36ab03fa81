"""`hfgi invert` / `hfgi edit` end to end on the shared aligned faces (small model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import FACES, run_cli


@pytest.fixture(scope="module")
def inverted(small_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("inverted")
    result = run_cli("invert", str(FACES), "-o", str(out), "--checkpoint", str(small_ckpt), "--aligned", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    return out


def test_invert_writes_an_image_and_a_latent_per_face(inverted: Path, small_ckpt: Path) -> None:
    faces = sorted(FACES.glob("*.jpg"))
    assert len(faces) == 12
    for face in faces:
        img = Image.open(inverted / f"{face.stem}.png")
        assert img.size == (64, 64) and img.mode == "RGB"  # the small model's full resolution
        record = torch.load(inverted / f"{face.stem}.pt", map_location="cpu")
        assert record["latent"].shape == (10, 64) and record["latent"].dtype == torch.float32
        assert record["distortion"].shape == (3, 256, 256) and record["distortion"].dtype == torch.float16
        assert record["source"] == str(face)
        assert record["checkpoint"] == small_ckpt.name
    assert not list(inverted.glob(".*"))


def test_edit_from_latent_matches_edit_from_image(inverted: Path, small_ckpt: Path, small_directions: Path,
                                                  tmp_path: Path) -> None:
    """The latent file keeps the distortion map in float16: an edit from it matches the edit from the
    image up to that rounding (within one level on >= 99.9 % of pixels)."""
    common = ["--checkpoint", str(small_ckpt), "--directions", str(small_directions), "--aligned", "--quiet",
              "--attr", "smile", "--strength", "2", "--attr", "beard", "--strength", "1"]
    a = run_cli("edit", str(FACES / "00044.jpg"), str(FACES / "00051.jpg"), "-o", str(tmp_path / "img"), *common)
    b = run_cli("edit", str(inverted / "00044.pt"), str(inverted / "00051.pt"), "-o", str(tmp_path / "pt"), *common)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    for stem in ("00044", "00051"):
        for label in ("smile+2", "beard+1"):
            x = np.asarray(Image.open(tmp_path / "img" / f"{stem}_{label}.png"), dtype=np.int16)
            y = np.asarray(Image.open(tmp_path / "pt" / f"{stem}_{label}.png"), dtype=np.int16)
            assert (np.abs(x - y) <= 1).all(axis=-1).mean() >= 0.999 and np.abs(x - y).max() <= 3
            la = torch.load(tmp_path / "img" / f"{stem}_{label}.pt")["latent"]
            lb = torch.load(tmp_path / "pt" / f"{stem}_{label}.pt")["latent"]
            assert torch.allclose(la, lb, atol=1e-6)


def test_edits_share_one_encoding_and_differ(small_ckpt: Path, small_directions: Path, tmp_path: Path) -> None:
    result = run_cli("edit", str(FACES / "00085.jpg"), "-o", str(tmp_path), "--checkpoint", str(small_ckpt),
                     "--directions", str(small_directions), "--aligned", "--json",
                     "-a", "age", "-s", "-3", "-a", "age", "-s", "3", "-a", "pose", "-s", "1")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "ok" and len(report["outputs"]) == 6
    young = torch.load(tmp_path / "00085_age-3.pt")
    old = torch.load(tmp_path / "00085_age+3.pt")
    assert torch.equal(young["inversion_latent"], old["inversion_latent"])
    assert torch.equal(young["distortion"], old["distortion"])
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "00085_age-3.png")),
                              np.asarray(Image.open(tmp_path / "00085_age+3.png")))


def test_stdin_inputs_and_list_attrs(small_ckpt: Path, tmp_path: Path) -> None:
    paths = "\n".join(str(p) for p in sorted(FACES.glob("*.jpg"))[:2]) + "\n"
    result = run_cli("invert", "-", "-o", str(tmp_path), "--checkpoint", str(small_ckpt), "--aligned", "--quiet",
                     stdin=paths)
    assert result.returncode == 0, result.stderr
    assert len(list(tmp_path.glob("*.png"))) == 2
    listing = run_cli("edit", "--list-attrs")
    assert listing.returncode == 0
    for name in ("age", "smile", "pose", "eyes", "beard", "lip", "white_hair", "trimmed_beard"):
        assert name in listing.stdout


def test_usage_errors_exit_2(small_ckpt: Path, small_directions: Path, tmp_path: Path) -> None:
    bad_attr = run_cli("edit", str(FACES), "-o", str(tmp_path), "--checkpoint", str(small_ckpt),
                       "--directions", str(small_directions), "-a", "grin", "-s", "1")
    assert bad_attr.returncode == 2 and "unknown attribute 'grin'" in bad_attr.stderr
    counts = run_cli("edit", str(FACES), "-o", str(tmp_path), "--checkpoint", str(small_ckpt),
                     "-a", "age", "-a", "smile", "-s", "1", "-s", "2", "-s", "3")
    assert counts.returncode == 2 and "--strength" in counts.stderr
    for command, edit in (("edit", ["-a", "smile"]), ("edit", ["--sweep", "smile:-1:1:3"]), ("video", ["-a", "smile"])):
        detail = run_cli(command, str(FACES), "-o", str(tmp_path / "out"), *edit, "--detail", "1.5")
        assert detail.returncode == 2 and "'--detail': takes a value from 0 to 1, not 1.5" in detail.stderr
    assert not any(tmp_path.iterdir())


def test_latent_files_of_a_batch_hold_one_face_each(small_ckpt: Path, tmp_path: Path) -> None:
    """A face's codes are rows of its batch's tensors; each file must hold its own face only (a
    saved row would otherwise carry the storage of the whole batch, other inputs' faces included)."""
    faces = [str(p) for p in sorted(FACES.glob("*.jpg"))[:4]]
    result = run_cli("invert", *faces, "-o", str(tmp_path), "--checkpoint", str(small_ckpt), "--aligned", "-b", "4",
                     "--quiet")
    assert result.returncode == 0, result.stderr
    one_face = 3 * 256 * 256 * 2 + 2 * 10 * 64 * 4  # float16 distortion map and two W+ codes
    for pt in tmp_path.glob("*.pt"):
        assert pt.stat().st_size < 1.2 * one_face + 4096, (pt.name, pt.stat().st_size)

