"""The Python API (load_model -> Model.invert / edit / edit_latents) and its sameness with the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hfgi_cli
from hfgi_cli.align import photo_mask
from hfgi_cli.edits import EditError, EditSpec
from hfgi_cli.engine import INVERSION, Model
from hfgi_cli.inputs import InputError

from .conftest import FACES, PHOTOS, REPO, run_cli

ASTRONAUT = PHOTOS / "astronaut.png"
FACE = FACES / "00044.jpg"


@pytest.fixture(scope="module")
def model(small_ckpt: Path, small_directions: Path) -> Model:
    return hfgi_cli.load_model(small_ckpt, device="cpu", directions=small_directions)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


# ------------------------------------------------------------------------------ photo, crop, latent file
def test_photo_in_photo_out(model: Model) -> None:
    res = model.edit(ASTRONAUT, {"smile": 2, "age": -1})
    assert list(res.images) == ["smile+2", "age-1"]
    src = pixels(Image.open(ASTRONAUT))
    assert len(res.faces) == 1
    face = res.faces[0]
    assert face.quad.shape == (4, 2) and face.landmarks.shape == (68, 2)
    assert face.latent.shape == (10, 64) and face.distortion.shape == (3, 256, 256)
    assert set(face.crops) == set(face.codes) == {"smile+2", "age-1"}
    assert face.crops["smile+2"].size == (64, 64)  # the small model's full resolution
    assert not torch.equal(face.codes["smile+2"], face.latent)
    (x0, y0, x1, y1), weight = photo_mask(face.alignment)
    outside = np.ones(src.shape[:2], bool)
    outside[y0:y1, x0:x1] = weight == 0
    for label, img in res.images.items():
        out = pixels(img)
        assert out.shape == src.shape, label
        assert np.array_equal(out[outside], src[outside]) and not np.array_equal(out, src), label


def test_invert_is_the_same_result_type(model: Model) -> None:
    inv = model.invert(ASTRONAUT)
    assert list(inv.images) == [INVERSION] and inv.image.size == Image.open(ASTRONAUT).size
    assert torch.equal(inv.faces[0].codes[INVERSION], inv.faces[0].latent)


def test_path_pil_and_array_inputs_agree(model: Model) -> None:
    by_path = model.edit(ASTRONAUT, {"smile": 2})
    by_pil = model.edit(Image.open(ASTRONAUT), {"smile": 2})
    by_array = model.edit(np.asarray(Image.open(ASTRONAUT).convert("RGB")), {"smile": 2})
    for other in (by_pil, by_array):
        assert np.array_equal(pixels(other.image), pixels(by_path.image))
        assert torch.equal(other.faces[0].latent, by_path.faces[0].latent)


def test_crop_in_crop_out(model: Model) -> None:
    res = model.edit(FACE, [EditSpec("smile", 2.0)], aligned=True)
    assert res.image.size == (64, 64) and res.faces[0].alignment is None and res.faces[0].quad is None
    inv = model.invert(FACE, aligned=True)
    assert torch.equal(inv.faces[0].latent, res.faces[0].latent)  # one encoding, whatever the edit


def test_ganspace_tuple_equals_the_named_edit(model: Model) -> None:
    named = model.edit(FACE, {"beard": 1}, aligned=True)  # rows 7:9 (lip's 10:11 are beyond the small model)
    tuple_ = model.edit(FACE, {(58, 7, 9, -20): 1}, aligned=True)
    assert np.array_equal(pixels(named.image), pixels(tuple_.image))


def test_bad_inputs_raise_clear_errors(model: Model, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such|not found|No such"):
        model.edit(tmp_path / "missing.jpg", {"smile": 1})
    (tmp_path / "text.jpg").write_text("not a picture")
    with pytest.raises(InputError, match=f"{tmp_path / 'text.jpg'}: not an image"):
        model.invert(tmp_path / "text.jpg")
    with pytest.raises(EditError, match="unknown attribute 'grin'"):
        model.edit(FACE, {"grin": 1}, aligned=True)
    blank = Image.new("RGB", (320, 240), (90, 140, 200))
    with pytest.raises(InputError, match="no face found"):
        model.invert(blank)


# ------------------------------------------------------------------------------ the same pixels as the CLI
def test_api_and_cli_give_the_same_photo(model: Model, small_ckpt: Path, small_directions: Path,
                                         tmp_path: Path) -> None:
    result = run_cli("edit", str(ASTRONAUT), "-o", str(tmp_path), "--checkpoint", str(small_ckpt),
                     "--directions", str(small_directions), "-a", "smile", "-s", "2", "-a", "age", "-s", "-1",
                     "--device", "cpu", "--quiet")
    assert result.returncode == 0, result.stderr
    api = model.edit(ASTRONAUT, {"smile": 2, "age": -1})
    for label in ("smile+2", "age-1"):
        assert np.array_equal(pixels(Image.open(tmp_path / f"astronaut_{label}.png")), pixels(api.images[label]))
        record = torch.load(tmp_path / f"astronaut_{label}_0.pt", weights_only=True)
        assert torch.equal(record["latent"], api.faces[0].codes[label])
        assert torch.equal(record["inversion_latent"], api.faces[0].latent)
        assert np.allclose(record["alignment"]["quad"], api.faces[0].quad)


def test_api_and_cli_give_the_same_crop_and_latent_edit(model: Model, small_ckpt: Path, small_directions: Path,
                                                       tmp_path: Path) -> None:
    common = ["--checkpoint", str(small_ckpt), "--quiet", "--device", "cpu"]
    assert run_cli("invert", str(FACE), "-o", str(tmp_path / "inv"), "--aligned", *common).returncode == 0
    api_inv = model.invert(FACE, aligned=True)
    assert np.array_equal(pixels(Image.open(tmp_path / "inv" / "00044.png")), pixels(api_inv.image))
    saved = tmp_path / "inv" / "00044.pt"
    edit = run_cli("edit", str(saved), "-o", str(tmp_path / "pt"), "-a", "age", "-s", "2", "--directions",
                   str(small_directions), *common)
    assert edit.returncode == 0, edit.stderr
    api_pt = model.edit_latents(saved, {"age": 2})
    assert np.array_equal(pixels(Image.open(tmp_path / "pt" / "00044_age+2.png")), pixels(api_pt.image))
    assert api_pt.meta == {"source": str(FACE), "from_latent": str(saved)}
    # and an edit from the stored codes matches the edit from the image (float16 distortion map)
    diff = np.abs(pixels(api_pt.image) - pixels(model.edit(FACE, {"age": 2}, aligned=True).image))
    assert (diff <= 1).all(axis=-1).mean() >= 0.999


# ------------------------------------------------------------------------------ no side effects, fast start
def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_importing_changes_nothing_in_the_process() -> None:
    code = """
import os, json
from PIL import Image
umask_calls = []
real_umask = os.umask
os.umask = lambda *a: (umask_calls.append(a), real_umask(*a))[1]
env, limit = dict(os.environ), Image.MAX_IMAGE_PIXELS
Image.init()
openers = set(Image.OPEN)
import hfgi_cli
from hfgi_cli import cli, engine, pipeline, video, crops, weights, latents, images, atomic
from hfgi_cli.models import hfgi, ops, stylegan2, encoders
Image.init()
print(json.dumps({"env": dict(os.environ) == env, "pil": Image.MAX_IMAGE_PIXELS == limit, "umask": umask_calls,
                  "openers": set(Image.OPEN) == openers}))
"""
    assert json.loads(_python(code)) == {"env": True, "pil": True, "umask": [], "openers": True}


@pytest.mark.parametrize("args", [["--help"], ["weights", "list"], ["weights", "path"], ["--version"]])
def test_help_and_listing_do_not_import_torch(args: list[str], tmp_path: Path) -> None:
    code = f"""
import sys
from typer.testing import CliRunner
from hfgi_cli.cli import app
result = CliRunner().invoke(app, {args!r} + (["--weights-dir", {str(tmp_path)!r}] if "weights" in {args!r} else []))
assert result.exit_code == 0, result.output
print(result.stdout)
print("torch" in sys.modules)
"""
    out = _python(code).strip().splitlines()
    assert out[-1] == "False", out
    if args == ["--version"]:
        assert out[0] == f"hfgi {hfgi_cli.__version__}"
