"""Quality numbers: the metrics themselves, per-face quality in runs (invert, edit, video, the API),
and `hfgi eval` on images and videos."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hfgi_cli import quality as q
from hfgi_cli.engine import load_model
from hfgi_cli.evaluate import evaluate_video, match_pairs
from hfgi_cli.inputs import InputItem
from hfgi_cli.pipeline import Job

from .conftest import FACES, PHOTOS, REPO, run_cli
from .video_clips import make_clip, write_mp4

GROUP = REPO / "examples" / "photos" / "group.jpg"
FACE_FILES = sorted(FACES.glob("*.jpg"))


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def jpeg(pixels: np.ndarray, quality: int = 40) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def numpy_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0**2 / mse)


def common(ckpt: Path, directions: Path) -> list[str]:
    return ["--checkpoint", str(ckpt), "--directions", str(directions), "--device", "cpu"]


# ----------------------------------------------------------------------------- the metrics
def test_identical_images_are_perfect() -> None:
    a = rgb(FACE_FILES[0])
    measured = q.face_quality(Image.fromarray(a), Image.fromarray(a))
    assert measured.psnr == math.inf and measured.identity_distance == 0.0
    assert measured.ssim == pytest.approx(1.0, abs=1e-6) and q.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    assert measured.to_json()["psnr"] is None  # JSON has no infinity


def test_jpeg_copy_psnr_matches_numpy_and_keeps_identity() -> None:
    degraded: dict[str, float] = {}
    for path in FACE_FILES[:4]:
        a = rgb(path)
        b = jpeg(a)
        assert q.psnr(a, b) == pytest.approx(numpy_psnr(a, b), abs=0.01)
        assert q.ssim(a, b) < 1.0
        degraded[path.name] = q.identity_distance(a, b, q.crop_landmarks(a))
    assert max(degraded.values()) < 0.25, degraded


def test_different_people_are_further_apart_than_a_degraded_copy() -> None:
    faces = [rgb(p) for p in FACE_FILES[:6]]
    degraded = max(q.identity_distance(a, jpeg(a), q.crop_landmarks(a)) for a in faces)
    # each face against the others, cut at its own landmarks
    others = [q.identity_distance(a, b, q.crop_landmarks(a)) for i, a in enumerate(faces)
              for j, b in enumerate(faces) if i != j]
    assert min(others) > degraded
    assert np.median(others) > q.IDENTITY_THRESHOLD


def test_warning_names_the_photo_and_the_face() -> None:
    job = Job(InputItem(Path("trip/beach.jpg"), Path("beach")))
    job.quality = [(0, q.FaceQuality(0.31, 24.0, 0.8)), (3, q.FaceQuality(0.74, 18.0, 0.6))]
    (line,) = job.warnings()
    assert line.startswith("trip/beach.jpg face 3: identity distance 0.74 is above 0.6")
    assert job.report()["quality"][1] == {"face": 3, "identity_distance": 0.74, "psnr": 18.0, "ssim": 0.6}


# ----------------------------------------------------------------------------- in runs
def test_invert_reports_quality_per_face_in_json_latents_and_summary(small_ckpt: Path, tmp_path: Path) -> None:
    result = run_cli("invert", str(GROUP), "-o", str(tmp_path), "--json", "--quality", "--checkpoint", str(small_ckpt))
    assert result.returncode == 0, result.stderr
    (report,) = map(json.loads, result.stdout.splitlines())
    assert [f["face"] for f in report["quality"]] == [0, 1, 2, 3]
    for face in report["quality"]:
        assert 0 <= face["identity_distance"] < 2 and 0 < face["psnr"] < 60 and -1 < face["ssim"] < 1
        record = torch.load(tmp_path / f"group_{face['face']}.pt", weights_only=True)
        assert record["quality"] == {k: face[k] for k in ("identity_distance", "psnr", "ssim")}
        # one warning line per face above the threshold, none for the others
        warned = f"group.jpg face {face['face']}: identity distance" in result.stderr
        assert warned == (face["identity_distance"] > q.IDENTITY_THRESHOLD)
    assert "quality of 4 inverted faces: identity distance median" in result.stderr


def test_edit_measures_only_when_asked_and_outputs_do_not_change(small_ckpt: Path, small_directions: Path,
                                                                 tmp_path: Path) -> None:
    face = str(FACES / "00044.jpg")
    plain = run_cli("edit", face, "-a", "smile", "-s", "2", "-o", str(tmp_path / "plain"), "--json",
                    *common(small_ckpt, small_directions))
    measured = run_cli("edit", face, "-a", "smile", "-s", "2", "-o", str(tmp_path / "measured"), "--json",
                       "--quality", *common(small_ckpt, small_directions))
    assert plain.returncode == measured.returncode == 0, measured.stderr
    assert json.loads(plain.stdout)["quality"] is None
    assert len(json.loads(measured.stdout)["quality"]) == 1
    # the extra inversion is measured, not written; the edit's pixels are the same
    assert sorted(p.name for p in (tmp_path / "measured").iterdir()) == ["00044_smile+2.jpg", "00044_smile+2_0.pt"]
    a = np.asarray(Image.open(tmp_path / "plain" / "00044_smile+2.jpg"))
    b = np.asarray(Image.open(tmp_path / "measured" / "00044_smile+2.jpg"))
    assert np.array_equal(a, b)
    assert "quality" in torch.load(tmp_path / "measured" / "00044_smile+2_0.pt", weights_only=True)


def test_api_quality(small_ckpt: Path, small_directions: Path) -> None:
    model = load_model(small_ckpt, device="cpu", directions=small_directions)
    crop = FACES / "00044.jpg"
    assert model.invert(crop, aligned=True).faces[0].quality is None  # opt-in: ~5 % of a face's CPU time
    inverted = model.invert(crop, aligned=True, quality=True)
    assert inverted.faces[0].quality is not None
    edited = model.edit(crop, {"smile": 1}, aligned=True)
    assert edited.faces[0].quality is None and list(edited.images) == ["smile+1"]
    measured = model.edit(crop, {"smile": 1}, aligned=True, quality=True)
    assert measured.faces[0].quality == inverted.faces[0].quality
    assert np.array_equal(np.asarray(measured.images["smile+1"]), np.asarray(edited.images["smile+1"]))


def test_sweep_refuses_quality(small_ckpt: Path, small_directions: Path, tmp_path: Path) -> None:
    result = run_cli("edit", str(GROUP), "--sweep", "smile=-2:2:3", "--quality", "-o", str(tmp_path),
                     *common(small_ckpt, small_directions))
    assert result.returncode == 2 and "--quality" in result.stderr


# ----------------------------------------------------------------------------- hfgi eval: images
@pytest.fixture(scope="module")
def eval_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Originals a, b, c (aligned faces); results: a identical, b a JPEG copy named as an edit,
    a face crop and a preview of b (left out), and a result without an original."""
    root = tmp_path_factory.mktemp("eval")
    orig, res = root / "orig", root / "res"
    orig.mkdir()
    res.mkdir()
    for name, src in zip("abc", FACE_FILES[:3]):
        shutil.copy(src, orig / f"{name}.jpg")
    shutil.copy(orig / "a.jpg", res / "a.jpg")
    Image.fromarray(jpeg(rgb(orig / "b.jpg"), 30)).save(res / "b_smile+2.jpg", quality=95)
    Image.fromarray(rgb(orig / "b.jpg")).save(res / "b_smile+2_0.png")
    Image.fromarray(rgb(orig / "b.jpg")).save(res / "b_preview.jpg")
    Image.fromarray(rgb(orig / "c.jpg")).save(res / "zed_age-1.jpg")
    return orig, res


def test_pairs_are_matched_by_output_name(eval_folders: tuple[Path, Path]) -> None:
    orig, res = eval_folders
    matched = match_pairs([str(orig)], [str(res)])
    assert sorted((a.name, b.name) for a, b in matched.pairs) == [("a.jpg", "a.jpg"), ("b.jpg", "b_smile+2.jpg")]
    assert len(matched.problems) == 1 and "zed_age-1.jpg: no original" in matched.problems[0]


def test_eval_json_csv_and_exit_status(eval_folders: tuple[Path, Path], tmp_path: Path) -> None:
    orig, res = eval_folders
    table = tmp_path / "scores.csv"
    result = run_cli("eval", str(orig), str(res), "--json", "--csv", str(table), "--aligned")
    assert result.returncode == 1  # the result without an original
    assert "zed_age-1.jpg: no original" in result.stderr
    records = {Path(r["result"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert set(records) == {"a.jpg", "b_smile+2.jpg"}
    for record in records.values():
        assert {"original", "result", "psnr", "ssim", "ms_ssim", "identity_distance", "lpips"} <= set(record)
    same, degraded = records["a.jpg"], records["b_smile+2.jpg"]
    assert same["psnr"] is None and same["ssim"] == pytest.approx(1, abs=1e-4) and same["identity_distance"] == 0
    assert 20 < degraded["psnr"] < 45 and 0 < degraded["identity_distance"] < 0.3
    a, b = rgb(orig / "b.jpg"), rgb(res / "b_smile+2.jpg")
    assert degraded["psnr"] == pytest.approx(numpy_psnr(a, b), abs=0.01)
    if not q.lpips_weights().is_file():
        assert same["lpips"] is None and "LPIPS not computed" in result.stderr
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 4 and {r["face"] for r in rows} == {"", "0"}  # each pair and its one face


def test_eval_finds_the_faces_of_a_photo(small_ckpt: Path, small_directions: Path, tmp_path: Path) -> None:
    """A group photo against hfgi's own edit of it: one face entry per face, and a table."""
    run = run_cli("edit", str(GROUP), "-a", "smile", "-s", "2", "-o", str(tmp_path), "--faces", "1",
                  *common(small_ckpt, small_directions))
    assert run.returncode == 0, run.stderr
    result = run_cli("eval", str(GROUP), str(tmp_path / "group_smile+2.jpg"), "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    distances = [f["identity_distance"] for f in record["faces"]]
    assert len(distances) == 4
    # only face 1 was edited; the others differ from the original by JPEG re-encoding alone
    assert distances[1] == max(distances) == record["identity_distance"] and distances[0] < 0.25
    shown = run_cli("eval", str(GROUP), str(tmp_path / "group_smile+2.jpg"))
    assert "worst 5 by identity distance: group_smile+2.jpg" in shown.stdout


def test_eval_unreadable_result_fails_alone(tmp_path: Path) -> None:
    (tmp_path / "o").mkdir()
    (tmp_path / "r").mkdir()
    shutil.copy(FACE_FILES[0], tmp_path / "o" / "x.jpg")
    shutil.copy(FACE_FILES[1], tmp_path / "o" / "y.jpg")
    (tmp_path / "r" / "x.jpg").write_bytes(b"not a jpeg")
    shutil.copy(FACE_FILES[1], tmp_path / "r" / "y.jpg")
    result = run_cli("eval", str(tmp_path / "o"), str(tmp_path / "r"), "--json", "--aligned")
    assert result.returncode == 1
    records = {Path(r["result"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["x.jpg"]["psnr"] is None and records["x.jpg"]["error"].startswith(str(tmp_path / "r" / "x.jpg"))
    assert records["y.jpg"]["identity_distance"] == 0
    assert len([line for line in result.stderr.splitlines() if "x.jpg" in line]) == 1


# ----------------------------------------------------------------------------- hfgi eval: videos
@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A still-ish clip of one face, its byte copy, and the same clip with frame 4 of another person."""
    from hfgi_cli.align import face_quad
    from hfgi_cli.detect import detect_faces

    root = tmp_path_factory.mktemp("clips")
    frames = []
    for path in (PHOTOS / "astronaut.png", PHOTOS / "grace_hopper.jpg"):
        img = Image.open(path).convert("RGB")
        quad, _ = face_quad(detect_faces(img)[0])
        scale = 220 / np.hypot(*(quad[3] - quad[0]))  # a 220 px face square in a 320x240 frame
        clip = make_clip(img, quad, quad.mean(axis=0), lambda p, s=scale: (150 + 20 * p, 120, s, 0.0), 8)
        frames.append(clip.frames)
    write_mp4(root / "clip.mp4", frames[0], 25.0, audio=False)
    shutil.copy(root / "clip.mp4", root / "copy.mp4")
    swapped = list(frames[0])
    swapped[4] = frames[1][4]
    write_mp4(root / "swapped.mp4", swapped, 25.0, audio=False)
    return {"clip": root / "clip.mp4", "copy": root / "copy.mp4", "swapped": root / "swapped.mp4"}


def test_video_metrics_of_a_copy_are_perfect(clips: dict[str, Path]) -> None:
    scores = evaluate_video(clips["clip"], clips["copy"])
    assert scores["frames"] == 8
    assert [f["identity_distance"] for f in scores["per_frame"]] == [0.0] * 8
    assert scores["tl_id"] == 1.0 and scores["tg_id"] == 1.0
    assert scores["flicker"] == scores["source_flicker"] > 0


def test_video_metrics_see_a_swapped_frame(clips: dict[str, Path]) -> None:
    scores = evaluate_video(clips["clip"], clips["swapped"])
    distances = [f["identity_distance"] for f in scores["per_frame"]]
    assert distances[4] > q.IDENTITY_THRESHOLD and max(distances[:4] + distances[5:]) < 0.2
    assert scores["tl_id"] < 0.95 and scores["tg_id"] < 1.0
    assert scores["flicker"] > scores["source_flicker"]
    result = run_cli("eval", str(clips["clip"]), str(clips["swapped"]), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tl_id"] == pytest.approx(scores["tl_id"], abs=1e-4)


def test_video_quality_per_frame(clips: dict[str, Path], small_ckpt: Path, small_directions: Path,
                                 tmp_path: Path) -> None:
    out = tmp_path / "smile.mp4"
    result = run_cli("video", str(clips["clip"]), "-o", str(out), "-a", "smile", "-s", "1", "--quality",
                     *common(small_ckpt, small_directions))
    assert result.returncode == 0, result.stderr
    (track,) = torch.load(out.with_suffix(".pt"), weights_only=True)["tracks"]
    distances = track["quality_identity_distance"]
    assert track["frame"].tolist() == list(range(8))
    assert distances.shape == (8,) and bool(torch.isfinite(distances).all())
    assert "quality of 8 faces: identity distance median" in result.stderr
    again = run_cli("video", str(out.with_suffix(".pt")), "-o", str(tmp_path / "again.mp4"), "-a", "age", "-s", "1",
                    "--quality", *common(small_ckpt, small_directions))
    assert again.returncode == 2 and "--quality" in again.stderr


def test_lpips_when_its_weights_are_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LPIPS runs once AlexNet's weights are in torchvision's cache (here a seeded random AlexNet,
    as the real file cannot be downloaded here): 0 for identical images, and in `hfgi eval`'s JSON."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    q.lpips_weights().parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), q.lpips_weights())
    lpips = q.Lpips()
    a, b = rgb(FACE_FILES[0]), rgb(FACE_FILES[1])
    assert lpips(a, a) == pytest.approx(0.0, abs=1e-6)
    assert lpips(a, b) > lpips(a, jpeg(a)) > 0
    result = run_cli("eval", str(FACE_FILES[0]), str(FACE_FILES[1]), "--json", "--aligned")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["lpips"] == pytest.approx(lpips(a, b), abs=1e-4) and "LPIPS not computed" not in result.stderr
