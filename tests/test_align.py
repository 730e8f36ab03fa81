"""Face detection, FFHQ alignment, paste-back, photo I/O and the ``hfgi align`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
from PIL import Image, ImageOps, JpegImagePlugin

from hfgi_cli import align as A
from hfgi_cli.detect import detect_faces
from hfgi_cli.images import open_photo, save_photo

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PHOTOS = SHARED / "data" / "photos"
ASTRONAUT = PHOTOS / "astronaut.png"
COLLAGE = PHOTOS / "collage_real_edits.jpg"

pytestmark = pytest.mark.skipif(not ASTRONAUT.is_file(), reason=f"shared test data missing: {SHARED}")


# --------------------------------------------------------------------------- reference


def ffhq_reference(img: Image.Image, lm: np.ndarray, output_size: int) -> Image.Image:
    """Straight transcription of NVlabs ffhq-dataset ``recreate_aligned_images`` for one face.

    Default options (rotate_level, enable_padding, no random shift), transform_size = 4 * output.
    Written independently of hfgi_cli.align so that a slip in either shows up as a pixel mismatch.
    """
    transform_size = 4 * output_size
    eye_l = np.mean(lm[36:42], axis=0)
    eye_r = np.mean(lm[42:48], axis=0)
    eye_c = 0.5 * (eye_l + eye_r)
    e2e = eye_r - eye_l
    m_c = 0.5 * (lm[48] + lm[54])
    e2m = m_c - eye_c
    vx = e2e - np.array([-e2m[1], e2m[0]])
    vx = vx / np.hypot(vx[0], vx[1])
    vx = vx * max(2.0 * np.hypot(e2e[0], e2e[1]), 1.8 * np.hypot(e2m[0], e2m[1]))
    vy = np.array([-vx[1], vx[0]])
    c = eye_c + 0.1 * e2m
    quad = np.array([c - vx - vy, c - vx + vy, c + vx + vy, c + vx - vy])
    qsize = 2.0 * np.hypot(vx[0], vx[1])

    shrink = int(np.floor(0.5 * qsize / output_size))
    if shrink > 1:
        new = (int(np.rint(img.size[0] / float(shrink))), int(np.rint(img.size[1] / float(shrink))))
        img = img.resize(new, Image.LANCZOS)
        quad = quad / shrink
        qsize = qsize / shrink

    border = max(int(np.rint(0.1 * qsize)), 3)
    x0, y0 = int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min()))
    x1, y1 = int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max()))
    w, h = img.size
    box = (max(x0 - border, 0), max(y0 - border, 0), min(x1 + border, w), min(y1 + border, h))
    if box[2] - box[0] < img.size[0] or box[3] - box[1] < img.size[1]:
        img = img.crop(box)
        quad = quad - np.array(box[:2])

    x0, y0 = int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min()))
    x1, y1 = int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max()))
    left, top = max(border - x0, 0), max(border - y0, 0)
    right, bottom = max(x1 - img.size[0] + border, 0), max(y1 - img.size[1] + border, 0)
    if max(left, top, right, bottom) > border - 4:
        p = int(np.rint(0.3 * qsize))
        left, top, right, bottom = max(left, p), max(top, p), max(right, p), max(bottom, p)
        a = np.pad(np.asarray(img, dtype=np.float32), ((top, bottom), (left, right), (0, 0)), mode="reflect")
        h, w = a.shape[:2]
        xs = np.arange(w, dtype=np.float32)[None, :, None]
        ys = np.arange(h, dtype=np.float32)[:, None, None]
        wx = 1.0 - np.minimum(xs / left, (w - 1 - xs) / right)
        wy = 1.0 - np.minimum(ys / top, (h - 1 - ys) / bottom)
        m = np.maximum(wx, wy)
        sigma = 0.02 * qsize
        a = a + (scipy.ndimage.gaussian_filter(a, [sigma, sigma, 0]) - a) * np.clip(3.0 * m + 1.0, 0.0, 1.0)
        a = a + (np.median(a, axis=(0, 1)) - a) * np.clip(m, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(a), 0, 255)), "RGB")
        quad = quad + np.array([left, top])

    img = img.transform((transform_size,) * 2, Image.QUAD, (quad + 0.5).flatten(), Image.BILINEAR)
    return img.resize((output_size, output_size), Image.LANCZOS)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.open(ASTRONAUT).convert("RGB")


@pytest.fixture(scope="module")
def astronaut_lm(astronaut: Image.Image) -> np.ndarray:
    faces = detect_faces(astronaut)
    assert len(faces) == 1
    return faces[0]


@pytest.fixture(scope="module")
def collage() -> Image.Image:
    return Image.open(COLLAGE).convert("RGB")


@pytest.fixture(scope="module")
def collage_lms(collage: Image.Image) -> list[np.ndarray]:
    return detect_faces(collage)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def changed_only_under_mask(before: Image.Image, after: Image.Image, faces: list[A.AlignedFace]) -> None:
    """Every pixel outside all faces' blend weights must be byte-identical."""
    touched = np.zeros((before.height, before.width), bool)
    for face in faces:
        box, w = A.photo_mask(face)
        touched[box[1] : box[3], box[0] : box[2]] |= w > 0
    a, b = np.asarray(before), np.asarray(after)
    assert a.shape == b.shape
    assert np.array_equal(a[~touched], b[~touched])


# --------------------------------------------------------------------------- detection


def test_detect_one_face_on_astronaut(astronaut_lm: np.ndarray) -> None:
    assert astronaut_lm.shape == (68, 2)
    # the face of the 512 px portrait is around (225, 125); eyes above the mouth
    cx, cy = astronaut_lm.mean(axis=0)
    assert 180 < cx < 270 and 80 < cy < 170
    assert astronaut_lm[36:48, 1].mean() < astronaut_lm[48:60, 1].mean()


def test_detect_many_faces_in_reading_order(collage_lms: list[np.ndarray]) -> None:
    assert len(collage_lms) >= 20
    centres = np.array([lm.mean(axis=0) for lm in collage_lms])
    heights = np.array([np.ptp(lm[:, 1]) for lm in collage_lms])
    for (x0, y0), (x1, y1), h in zip(centres, centres[1:], heights):
        # the next face is further right in the same row, or starts a lower row
        assert (abs(y1 - y0) <= 0.5 * h and x1 > x0) or y1 > y0 + 0.5 * h


def test_detection_on_big_photo_uses_full_resolution_landmarks(
    astronaut: Image.Image, astronaut_lm: np.ndarray
) -> None:
    big = astronaut.resize((2048, 2048), Image.Resampling.BICUBIC)  # detector scans a resized copy
    faces = detect_faces(big)
    assert len(faces) == 1
    # landmarks from full-res pixels: close to 4x the small-image landmarks, not quantised to 2 px
    assert np.abs(faces[0] - 4 * astronaut_lm).mean() < 6.0
    assert np.any(faces[0] % 2 == 1)


def _rotate_points(points: np.ndarray, degrees: float, size: tuple[int, int]) -> np.ndarray:
    """Where pixel-index points go when the image is turned by ``Image.rotate(degrees)``."""
    a = np.radians(degrees)
    centre = np.array(size, dtype=np.float64) / 2
    d = np.asarray(points, dtype=np.float64) + 0.5 - centre
    turned = np.stack([d[:, 0] * np.cos(a) + d[:, 1] * np.sin(a), -d[:, 0] * np.sin(a) + d[:, 1] * np.cos(a)], 1)
    return turned + centre - 0.5


@pytest.mark.parametrize("tilt", [-30, -20, -10, 10, 20, 30])
@pytest.mark.parametrize("stem", ["00044", "00418"])
def test_tilted_face_is_found_and_aligned_as_the_upright_one_turned(stem: str, tilt: int) -> None:
    """A face turned in the photo's plane is found, and its FFHQ square is the upright face's square
    turned with it (landmarks are predicted on the face turned upright)."""
    face = Image.open(SHARED / "data" / "faces" / f"{stem}.jpg").convert("RGB").resize((300, 300))
    canvas = Image.new("RGB", (760, 640), (118, 128, 140))
    canvas.paste(face, (230, 170))
    (upright,) = detect_faces(canvas)
    quad_upright, side = A.face_quad(upright)
    found = detect_faces(canvas.rotate(tilt, Image.Resampling.BICUBIC))
    assert len(found) == 1, f"{len(found)} faces at {tilt} degrees"
    quad, _ = A.face_quad(found[0])
    expected = _rotate_points(quad_upright, tilt, canvas.size)
    error = np.linalg.norm(quad - expected, axis=1).mean() / side
    assert error < 0.03, f"corner error {error:.3f} of the side at {tilt} degrees"


# --------------------------------------------------------------------------- alignment


@pytest.mark.parametrize("size", [256, 1024])
def test_alignment_matches_ffhq_reference(
    astronaut: Image.Image, astronaut_lm: np.ndarray, size: int
) -> None:
    face = A.align_face(astronaut, astronaut_lm, size)
    ref = ffhq_reference(astronaut, astronaut_lm, size)
    assert face.image.size == (size, size) and face.image.mode == "RGB"
    assert np.array_equal(np.asarray(face.image), np.asarray(ref))
    quad, _ = A.face_quad(astronaut_lm)
    assert np.allclose(face.quad, quad)
    assert face.source_size == astronaut.size


def test_alignment_matches_reference_with_padding(astronaut: Image.Image, astronaut_lm: np.ndarray) -> None:
    # cut the photo right through the face so the square leaves it: the reflect/blur padding runs
    part = astronaut.crop((150, 60, 512, 512))
    lm = astronaut_lm - [150, 60]
    face = A.align_face(part, lm, 256)
    assert np.array_equal(np.asarray(face.image), np.asarray(ffhq_reference(part, lm, 256)))


def test_alignment_matches_reference_with_shrink(astronaut: Image.Image, astronaut_lm: np.ndarray) -> None:
    # a face > 4x the output size makes FFHQ shrink the photo by an integer factor first
    big = astronaut.resize((777, 777), Image.Resampling.BICUBIC)
    lm = astronaut_lm * (777 / 512)
    assert A.face_quad(lm)[1] > 4 * 64
    face = A.align_face(big, lm, 64)
    assert np.array_equal(np.asarray(face.image), np.asarray(ffhq_reference(big, lm, 64)))
    # quad is the exact crop->photo map: FFHQ's nominal quad moved by the half-pixel centring of
    # the integer shrink ((shrink - 1) / 2) and the rounding of the shrunk size
    shrink = int(A.face_quad(lm)[1] / 64 * 0.5)
    assert shrink > 1
    assert np.abs(face.quad - A.face_quad(lm)[0]).max() < shrink


def test_json_round_trip(tmp_path: Path, astronaut: Image.Image, astronaut_lm: np.ndarray) -> None:
    face = A.align_face(astronaut, astronaut_lm, 256)
    face.source = str(ASTRONAUT)
    A.save_aligned(face, tmp_path / "a_0.png")
    back = A.load_aligned(tmp_path / "a_0.png")
    assert np.array_equal(np.asarray(back.image), np.asarray(face.image))
    assert np.array_equal(back.quad, face.quad) and np.array_equal(back.landmarks, face.landmarks)
    assert back.source_size == face.source_size and back.source == face.source
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_0.json", "a_0.png"]


# --------------------------------------------------------------------------- paste-back


@pytest.mark.parametrize("size", [256, 1024])
def test_round_trip_unmodified_crop(astronaut: Image.Image, astronaut_lm: np.ndarray, size: int) -> None:
    face = A.align_face(astronaut, astronaut_lm, size)
    out = A.paste_back(astronaut, [(face.image, face)])
    assert out.size == astronaut.size and out.mode == "RGB"
    box, w = A.photo_mask(face)
    inside = w >= 0.5
    assert inside.sum() > 0.3 * face.qsize**2  # the mask covers the face, not a sliver
    a = np.asarray(astronaut)[box[1] : box[3], box[0] : box[2]]
    b = np.asarray(out)[box[1] : box[3], box[0] : box[2]]
    assert psnr(a[inside], b[inside]) >= 40.0
    changed_only_under_mask(astronaut, out, [face])


def test_round_trip_every_collage_face(collage: Image.Image, collage_lms: list[np.ndarray]) -> None:
    faces, skipped = A.align_faces(collage, collage_lms, 256)
    assert len(faces) >= 10
    assert all("too small" in s.reason for s in skipped)
    out = A.paste_back(collage, [(f.image, f) for f in faces])
    a, b = np.asarray(collage), np.asarray(out)
    for face in faces:
        box, w = A.photo_mask(face)
        inside = w >= 0.5
        sl = (slice(box[1], box[3]), slice(box[0], box[2]))
        assert psnr(a[sl][inside], b[sl][inside]) >= 40.0  # neighbours' overlapping pastes included
    changed_only_under_mask(collage, out, faces)


def test_paste_back_after_shrink_is_aligned(astronaut: Image.Image, astronaut_lm: np.ndarray) -> None:
    big = astronaut.resize((1536, 1536), Image.Resampling.BICUBIC)
    lm = astronaut_lm * 3.0
    face = A.align_face(big, lm, 128)  # qsize ~520 px -> shrink by 2
    out = A.paste_back(big, [(face.image, face)])
    box, w = A.photo_mask(face)
    sl = (slice(box[1], box[3]), slice(box[0], box[2]))
    # the crop holds 4x fewer pixels than the face: compare against the same low-pass of the photo
    soft = big.resize((384, 384), Image.Resampling.LANCZOS).resize(big.size, Image.Resampling.BICUBIC)
    # (38 dB; FFHQ's nominal quad, without the shrink correction, gives 37)
    assert psnr(np.asarray(soft)[sl][w >= 0.5], np.asarray(out)[sl][w >= 0.5]) >= 38.0


def test_edited_crop_changes_the_face_only(astronaut: Image.Image, astronaut_lm: np.ndarray) -> None:
    face = A.align_face(astronaut, astronaut_lm, 256)
    edited = ImageOps.invert(face.image)
    out = A.paste_back(astronaut, [(edited, face)])
    changed_only_under_mask(astronaut, out, [face])
    # the inverted face shows: the centre of the face (between eyes and mouth) is now the negative
    cx, cy = np.rint(face.crop_to_photo() @ [128, 150, 1]).astype(int)
    assert np.abs(np.asarray(out)[cy, cx].astype(int) - (255 - np.asarray(astronaut)[cy, cx])).max() < 40
    # the weights fall off softly: there are pixels with partial weight around the face
    _, w = A.photo_mask(face)
    assert ((w > 0.05) & (w < 0.95)).sum() > 0.1 * (w > 0).sum()


def test_tiny_faces_are_skipped(astronaut: Image.Image, astronaut_lm: np.ndarray) -> None:
    small = astronaut.resize((128, 128), Image.Resampling.LANCZOS)
    lm = astronaut_lm / 4.0
    faces, skipped = A.align_faces(small, [lm], 256)
    assert faces == [] and len(skipped) == 1 and "too small" in skipped[0].reason
    faces, skipped = A.align_faces(astronaut, [astronaut_lm], 256)
    assert len(faces) == 1 and skipped == []


def test_max_faces_keeps_the_largest(collage: Image.Image, collage_lms: list[np.ndarray]) -> None:
    faces, skipped = A.align_faces(collage, collage_lms, 64, max_faces=3)
    assert len(faces) == 3
    sizes = sorted((A.face_quad(lm)[1] for lm in collage_lms), reverse=True)
    assert sorted(f.qsize for f in faces) == pytest.approx(sorted(sizes[:3]))
    order = [next(i for i, lm in enumerate(collage_lms) if np.array_equal(lm, f.landmarks)) for f in faces]
    assert order == sorted(order)  # the kept faces keep the detector's (reading) order
    assert any("max-faces" in s.reason for s in skipped)


# --------------------------------------------------------------------------- photo files


def _edit_and_save(src: Path, dst: Path) -> tuple[Image.Image, Image.Image, list[A.AlignedFace]]:
    """Open, detect, paste back inverted faces, save: returns (upright before, upright after, faces)."""
    photo = open_photo(src)
    faces, _ = A.align_faces(photo.image, detect_faces(photo.image), 256)
    assert len(faces) == 1
    result = A.paste_back(photo.image, [(ImageOps.invert(f.image), f) for f in faces])
    save_photo(photo, result, dst)
    return photo.image, result, faces


def test_png_stays_png_and_untouched_outside(tmp_path: Path, astronaut: Image.Image) -> None:
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    astronaut.save(src)
    before, _, faces = _edit_and_save(src, dst)
    with Image.open(dst) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == astronaut.size
        changed_only_under_mask(before, im.convert("RGB"), faces)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files


def test_rgba_png_keeps_alpha(tmp_path: Path, astronaut: Image.Image) -> None:
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    rgba = astronaut.copy()
    alpha = Image.linear_gradient("L").resize(astronaut.size)
    rgba.putalpha(alpha)
    rgba.save(src)
    _edit_and_save(src, dst)
    with Image.open(dst) as im:
        assert im.format == "PNG" and im.mode == "RGBA" and im.size == astronaut.size
        assert np.array_equal(np.asarray(im.getchannel("A")), np.asarray(alpha))


def test_jpeg_keeps_format_and_subsampling(tmp_path: Path, astronaut: Image.Image) -> None:
    src, dst = tmp_path / "in.jpg", tmp_path / "out.jpg"
    astronaut.save(src, quality=90, subsampling=0)  # 4:4:4, not PIL's default 4:2:0
    _edit_and_save(src, dst)
    with Image.open(dst) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == astronaut.size
        assert JpegImagePlugin.get_sampling(im) == 0


def test_exif_rotated_jpeg(tmp_path: Path, astronaut: Image.Image) -> None:
    src, dst = tmp_path / "in.jpg", tmp_path / "out.jpg"
    stored = astronaut.crop((0, 0, 512, 400)).transpose(Image.Transpose.ROTATE_90)  # sideways, 400x512
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    stored.save(src, quality=95, exif=exif.tobytes())
    # the detector only finds the face because open_photo turns the picture upright
    before, result, _ = _edit_and_save(src, dst)
    assert before.size == (512, 400)
    with Image.open(dst) as im:
        assert im.format == "JPEG" and im.size == stored.size == (400, 512)
        assert im.getexif().get(0x0112) == 6
        upright = ImageOps.exif_transpose(im)
        assert upright.size == (512, 400)
        assert psnr(np.asarray(upright), np.asarray(result)) > 30.0  # only JPEG noise differs


# --------------------------------------------------------------------------- CLI


def test_cli_align_end_to_end(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hfgi_cli.cli import app

    folder = tmp_path / "in"
    folder.mkdir()
    blank = folder / "blank.png"
    Image.linear_gradient("L").convert("RGB").save(blank)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["align", str(ASTRONAUT), str(folder), "-o", str(out), "--size", "256"])
    assert result.exit_code == 1, result.output
    assert f"no face found in {blank}" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["astronaut_0.json", "astronaut_0.png"]
    with Image.open(out / "astronaut_0.png") as im:
        assert im.size == (256, 256) and im.format == "PNG"
    meta = json.loads((out / "astronaut_0.json").read_text())
    assert meta["source"] == str(ASTRONAUT) and meta["source_size"] == [512, 512] and meta["size"] == 256
    assert np.array(meta["quad"]).shape == (4, 2) and np.array(meta["landmarks"]).shape == (68, 2)

    ok = CliRunner().invoke(app, ["align", str(ASTRONAUT), "-o", str(out), "--size", "64", "--quiet"])
    assert ok.exit_code == 0, ok.output
    assert ok.stderr == ""


def test_cli_help_shows_example() -> None:
    from typer.testing import CliRunner

    from hfgi_cli.cli import app

    result = CliRunner().invoke(app, ["align", "--help"])
    assert result.exit_code == 0
    assert "hfgi align photos/ group.jpg -o aligned/" in result.output
