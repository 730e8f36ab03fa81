"""`hfgi invert/edit` on ordinary photos: detect, align, run, paste back (small model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hfgi_cli.align import photo_mask
from hfgi_cli.engine import FFHQ_SIZE

from .conftest import PHOTOS, run_cli


def test_edit_replaces_every_face_and_nothing_else(small_ckpt: Path, small_directions: Path, tmp_path: Path) -> None:
    photo = PHOTOS / "collage_real_edits.jpg"
    result = run_cli("edit", str(photo), "-o", str(tmp_path), "--checkpoint", str(small_ckpt),
                     "--directions", str(small_directions), "--attr", "smile", "--strength", "2", "--json",
                     "--save-crops")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    n = report["faces"]
    assert n >= 20  # the collage holds 26 faces; some may be too small to use
    out = tmp_path / "collage_real_edits_smile+2.jpg"
    src = Image.open(photo)
    edited = Image.open(out)
    assert edited.size == src.size and edited.mode == src.mode and edited.format == "JPEG"
    a = np.asarray(src, dtype=np.int16)
    b = np.asarray(edited, dtype=np.int16)
    inside = np.zeros(a.shape[:2], dtype=bool)
    for k in range(n):
        record = torch.load(tmp_path / f"collage_real_edits_smile+2_{k:02d}.pt", map_location="cpu")  # > 10 faces
        assert record["latent"].shape == (10, 64) and record["face"] == k
        assert record["alignment"]["source"] == str(photo)
        from hfgi_cli.align import AlignedFace

        face = AlignedFace.from_json(record["alignment"], Image.new("RGB", (FFHQ_SIZE, FFHQ_SIZE)))
        (x0, y0, x1, y1), weight = photo_mask(face)
        region = a[y0:y1, x0:x1]
        changed = np.abs(b[y0:y1, x0:x1] - region).max(axis=-1)
        # the random model's face differs strongly from the real one where the mask is solid
        assert (changed[weight > 0.99] > 8).mean() > 0.5, k
        inside[y0:y1, x0:x1] |= weight > 0
        assert (tmp_path / f"collage_real_edits_smile+2_{k:02d}.png").is_file()
    # outside every face the photo is unchanged, up to JPEG re-encoding (quality 95)
    outside = ~inside
    diff = np.abs(a - b).max(axis=-1)[outside]
    assert np.percentile(diff, 99) <= 6 and diff.mean() < 1.0


def test_png_photo_outside_faces_is_byte_identical(small_ckpt: Path, tmp_path: Path) -> None:
    photo = PHOTOS / "astronaut.png"
    result = run_cli("invert", str(photo), "-o", str(tmp_path), "--checkpoint", str(small_ckpt), "--quiet")
    assert result.returncode == 0, result.stderr
    a = np.asarray(Image.open(photo).convert("RGB"))
    b = np.asarray(Image.open(tmp_path / "astronaut.png").convert("RGB"))
    record = torch.load(tmp_path / "astronaut_0.pt", map_location="cpu")
    from hfgi_cli.align import AlignedFace

    face = AlignedFace.from_json(record["alignment"], Image.new("RGB", (FFHQ_SIZE, FFHQ_SIZE)))
    (x0, y0, x1, y1), weight = photo_mask(face)
    outside = np.ones(a.shape[:2], dtype=bool)
    outside[y0:y1, x0:x1] = weight == 0
    assert np.array_equal(a[outside], b[outside])
    assert not np.array_equal(a[~outside], b[~outside])


def test_photo_without_a_face_is_reported_and_the_run_goes_on(small_ckpt: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.new("RGB", (320, 240), (90, 140, 200)).save(inputs / "sky.jpg")
    Image.open(PHOTOS / "astronaut.png").save(inputs / "astronaut.png")
    result = run_cli("invert", str(inputs), "-o", str(tmp_path / "out"), "--checkpoint", str(small_ckpt), "--quiet")
    assert result.returncode == 1
    assert f"no face found in {inputs / 'sky.jpg'}" in result.stderr
    assert (tmp_path / "out" / "astronaut.png").is_file()
    assert not (tmp_path / "out" / "sky.jpg").exists()
