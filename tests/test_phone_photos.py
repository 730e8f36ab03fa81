"""Photos straight from a phone: HEIC and AVIF in and out (orientation, ICC profile and EXIF kept),
a folder of mixed formats, a truncated HEIC, and the JPEG written where a format cannot be."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from hfgi_cli import images

from .conftest import FACES, run_cli

ORIENTATION, MAKE = 0x0112, 0x010F


def _upright_photo() -> Image.Image:
    """A 320x400 portrait with one face (its FFHQ crop 200 px) on a plain background."""
    canvas = Image.new("RGB", (320, 400), (150, 162, 175))
    canvas.paste(Image.open(FACES / "00044.jpg").convert("RGB").resize((200, 200)), (60, 110))
    return canvas


def _write_phone_photo(path: Path, fmt: str, upright: Image.Image, icc: bytes) -> None:
    """As a phone stores it: pixels sideways with EXIF orientation 6, an ICC profile, a camera make."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif[MAKE] = "PhoneCam"
    images.register_formats()
    upright.transpose(Image.Transpose.ROTATE_90).save(path, fmt, quality=92, exif=exif.tobytes(), icc_profile=icc)


@pytest.fixture(scope="module")
def phone_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    root = tmp_path_factory.mktemp("phone") / "in"
    root.mkdir()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    upright = _upright_photo()
    _write_phone_photo(root / "iphone.heic", "HEIF", upright, icc)
    _write_phone_photo(root / "android.avif", "AVIF", upright, icc)
    upright.save(root / "camera.jpg", quality=92)
    whole = (root / "iphone.heic").read_bytes()
    (root / "cut.heic").write_bytes(whole[: len(whole) * 2 // 3])
    return root, icc


def _common(ckpt: Path) -> list[str]:
    return ["--checkpoint", str(ckpt), "--device", "cpu", "--quiet"]


def test_heic_and_avif_go_in_and_come_out_alike(phone_folder: tuple[Path, bytes], small_ckpt: Path,
                                                small_directions: Path, tmp_path: Path) -> None:
    root, icc = phone_folder
    out = tmp_path / "out"
    result = run_cli("edit", str(root), "-a", "smile", "-s", "2", "-o", str(out), "--json",
                     "--directions", str(small_directions), *_common(small_ckpt))
    assert result.returncode == 1, result.stderr  # the truncated file fails, alone
    records = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    for name in ("iphone.heic", "android.avif", "camera.jpg"):
        assert records[name]["status"] == "ok" and records[name]["faces"] == 1, records[name]
    upright = np.asarray(_upright_photo(), dtype=np.float64)
    for name, fmt in (("iphone_smile+2.heic", "HEIF"), ("android_smile+2.avif", "AVIF")):
        with Image.open(out / name) as written:
            assert written.format == fmt
            assert written.info.get("icc_profile") == icc
            assert written.getexif().get(MAKE) == "PhoneCam"
            shown = np.asarray(ImageOps.exif_transpose(written).convert("RGB"), dtype=np.float64)
        assert shown.shape == upright.shape  # displayed upright, as the input was
        # away from the face the photo is the input's (lossy coding aside); the face was replaced
        assert np.abs(shown[:90] - upright[:90]).mean() < 4.0, name
        assert np.abs(shown[150:270, 100:220] - upright[150:270, 100:220]).mean() > 10.0, name
    assert (out / "camera_smile+2.jpg").is_file()


def test_truncated_heic_is_one_error_line_naming_file_and_cause(phone_folder: tuple[Path, bytes],
                                                                small_ckpt: Path, tmp_path: Path) -> None:
    root, _ = phone_folder
    cut = root / "cut.heic"
    result = run_cli("invert", str(cut), str(root / "camera.jpg"), "-o", str(tmp_path),
                     *_common(small_ckpt))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if str(cut) in line]
    assert len(lines) == 1 and lines[0].startswith(f"error: {cut}: unreadable HEIF image"), result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "camera.jpg").is_file() and not list(tmp_path.glob("cut*"))


def test_a_format_that_cannot_be_written_comes_out_as_jpeg_with_a_note(
    phone_folder: tuple[Path, bytes], small_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, icc = phone_folder
    monkeypatch.setattr(images, "can_write", lambda fmt: fmt != "HEIF")  # a pillow-heif without its encoder
    result = run_cli("invert", str(root / "iphone.heic"), "-o", str(tmp_path), *_common(small_ckpt))
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "written as JPEG" in line]
    assert len(notes) == 1 and str(root / "iphone.heic") in notes[0], result.stderr
    with Image.open(tmp_path / "iphone.jpg") as written:
        assert written.format == "JPEG" and written.info.get("icc_profile") == icc
        assert ImageOps.exif_transpose(written).size == (320, 400)
    assert not (tmp_path / "iphone.heic").exists()
