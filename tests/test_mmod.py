"""dlib's CNN face detector run by PyTorch (``hfgi_cli/models/mmod.py``) finds what dlib's own
``cnn_face_detection_model_v1`` finds, on the same pixels: the same rectangles, the same scores
up to float rounding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hfgi_cli.detect import _model_path
from hfgi_cli.models.mmod import Affine, Conv, MMODDetector, read_mmod

from . import face_photos
from .conftest import PHOTOS

MODEL = _model_path("mmod_human_face_detector.dat")


@pytest.fixture(scope="module")
def ours() -> MMODDetector:
    return MMODDetector.from_file(MODEL)


@pytest.fixture(scope="module")
def dlib_cnn() -> object:
    import dlib

    return dlib.cnn_face_detection_model_v1(str(MODEL))


def _images() -> list[np.ndarray]:
    """Crops like those the detector confirms (a face, a turned face, a texture), and whole photos
    whose faces are found at several pyramid levels."""
    rng = np.random.default_rng(3)
    faces = face_photos.shared_faces()
    crops = [np.asarray(faces[i].resize((192, 192))) for i in (0, 5)]
    crops.append(np.asarray(faces[2].rotate(25, Image.Resampling.BILINEAR).resize((192, 192))))
    crops.append(rng.integers(0, 256, (192, 192, 3), dtype=np.uint8))
    photos = []
    for name, side in (("grace_hopper.jpg", 500), ("collage_real_edits.jpg", 700), ("astronaut.png", 333)):
        photo = Image.open(PHOTOS / name).convert("RGB")
        photo.thumbnail((side, side))
        photos.append(np.asarray(photo))
    return crops + photos


def test_the_file_reads_as_dlibs_network() -> None:
    model = read_mmod(MODEL)
    convs = [layer for layer in model.layers if isinstance(layer, Conv)]
    assert [tuple(c.weight.shape) for c in convs] == [
        (16, 3, 5, 5), (32, 16, 5, 5), (32, 32, 5, 5), (45, 32, 5, 5), (45, 45, 5, 5), (45, 45, 5, 5), (1, 45, 9, 9)]
    assert [c.stride for c in convs] == [2, 2, 2, 1, 1, 1, 1]
    assert sum(isinstance(layer, Affine) for layer in model.layers) == 6
    assert model.window == (80, 80) and model.pyramid_padding == 10 and model.pyramid_outer_padding == 11


def test_detections_equal_dlibs(ours: MMODDetector, dlib_cnn: object) -> None:
    found_any = 0
    for image in _images():
        theirs = dlib_cnn(image, 0)  # type: ignore[operator]
        mine = ours(image)[0]
        assert [(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()) for d in theirs] == [
            (d.left, d.top, d.right, d.bottom) for d in mine], image.shape
        assert np.allclose([d.confidence for d in theirs], [d.confidence for d in mine], atol=1e-4)
        found_any += len(mine)
    assert found_any >= 6  # faces at several sizes, so several pyramid levels are decoded


def test_a_batch_gives_each_images_own_detections(ours: MMODDetector) -> None:
    crops = _images()[:4]
    batched = ours(crops)
    assert batched == [ours(c)[0] for c in crops]


def test_a_file_that_is_not_the_model_is_refused_naming_it(tmp_path: Path) -> None:
    cut = tmp_path / "cut.dat"
    cut.write_bytes(MODEL.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cut\.dat: not a dlib MMOD model file \(the file ends early"):
        read_mmod(cut)
    other = tmp_path / "other.dat"
    other.write_bytes(b"\x01\x01\x01\x05hello")
    with pytest.raises(ValueError, match=r"other\.dat: not a dlib MMOD model file \('hello' where loss_mmod_"):
        read_mmod(other)
