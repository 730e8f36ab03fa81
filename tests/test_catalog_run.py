"""The new edits end to end on the shipped example photos (small seeded model, stand-in files shaped
for it): CLI, Python API, latent files, combined edits, --detail, and what is refused up front."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hfgi_cli
from hfgi_cli.edits import Combined, EditSpec, as_edit_specs, text_spec
from hfgi_cli.engine import Model

from .conftest import FACES, REPO, run_cli

PHOTO = REPO / "examples" / "photos" / "grace_hopper.jpg"
TEXT = "face with curly hair"
EDITS = ["--attr", "gender", "--attr", "bald", "--attr", "eyeglasses", "--attr", "mouth_open", "--text", TEXT,
         "--neutral", "face with hair", "--beta", "0.1", "-s", "2", "-s", "1", "-s", "1", "-s", "2", "-s", "4"]
LABELS = ["gender+2", "bald+1", "eyeglasses+1", "mouth_open+2", "face-with-curly-hair+4"]


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def model(small_ckpt: Path, small_directions: Path) -> Model:
    return hfgi_cli.load_model(small_ckpt, device="cpu", precision="fp32", directions=small_directions)


@pytest.fixture(scope="module")
def edited(small_ckpt: Path, small_directions: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("catalog")
    photos = [str(PHOTO), str(REPO / "examples" / "photos" / "astronaut.jpg")]
    res = run_cli("edit", *photos, "-o", str(out), "--checkpoint", str(small_ckpt),
                  "--directions", str(small_directions), "--precision", "fp32", "--json", "--quiet", *EDITS)
    assert res.returncode == 0, res.stderr
    (out / "report.jsonl").write_text(res.stdout)
    return out


def test_every_family_edits_the_example_photos(edited: Path) -> None:
    lines = [json.loads(line) for line in (edited / "report.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(line["status"] == "ok" for line in lines)
    families = [e["edits"][0]["family"] for e in lines[0]["edits"]]
    assert families == ["stit", "ganspace", "gradctrl", "stit", "styleclip"]
    assert lines[0]["edits"][4]["edits"][0] == {"strength": 4.0, "family": "styleclip", "text": TEXT,
                                                "neutral": "face with hair", "beta": 0.1}
    source = pixels(Image.open(PHOTO))
    images = {label: pixels(Image.open(edited / f"grace_hopper_{label}.jpg")) for label in LABELS}
    for label, image in images.items():
        assert image.shape == source.shape
        assert np.abs(image - source).max() > 20, label  # the face changed
    for a in LABELS:  # and every edit differently
        for b in LABELS:
            if a < b:
                assert np.abs(images[a] - images[b]).mean() > 0.05, (a, b)
    record = torch.load(edited / "grace_hopper_face-with-curly-hair+4_0.pt", weights_only=True)
    assert record["edit"] == "face-with-curly-hair+4" and record["edit_spec"]["edits"][0]["text"] == TEXT
    assert torch.equal(record["latent"], record["inversion_latent"])  # a text edit leaves W+ as it is
    gradctrl = torch.load(edited / "grace_hopper_eyeglasses+1_0.pt", weights_only=True)
    moved = (gradctrl["latent"] - gradctrl["inversion_latent"]).abs().sum(dim=1)
    assert (moved[1:4] > 0).all() and (moved[4:] == 0).all() and moved[0] == 0  # GradCtrl's rows 1:4


def test_api_and_latent_file_give_the_cli_pixels(model: Model, edited: Path, small_ckpt: Path) -> None:
    mapping = as_edit_specs({"eyeglasses": 1, f"text:{TEXT}": 4})  # the default neutral text and beta
    assert [o.label for o in mapping] == ["eyeglasses+1", "face-with-curly-hair+4"]
    assert (mapping[1].neutral, mapping[1].beta) == ("face", 0.15)
    specs = [EditSpec("eyeglasses", 1.0), text_spec(TEXT, 4.0, neutral="face with hair", beta=0.1)]
    res = model.edit(PHOTO, specs)
    assert list(res.images) == ["eyeglasses+1", "face-with-curly-hair+4"]
    cli = pixels(Image.open(edited / "grace_hopper_eyeglasses+1.jpg"))
    assert np.abs(pixels(res.images["eyeglasses+1"]) - cli).mean() < 1.5  # the CLI's output is a JPEG
    record = torch.load(edited / "grace_hopper_eyeglasses+1_0.pt", weights_only=True)
    assert torch.allclose(res.faces[0].codes["eyeglasses+1"], record["latent"], atol=1e-6)
    inverted = run_cli("invert", str(PHOTO), "-o", str(edited / "inverted"), "--checkpoint", str(small_ckpt),
                       "--precision", "fp32", "--quiet")
    assert inverted.returncode == 0, inverted.stderr
    from_file = model.edit_latents(edited / "inverted" / "grace_hopper_0.pt", specs)
    crop = pixels(from_file.images["face-with-curly-hair+4"])
    same = pixels(res.faces[0].crops["face-with-curly-hair+4"])
    assert (np.abs(crop - same) <= 1).all(axis=-1).mean() >= 0.999  # the stored distortion map is float16


def test_combined_edit_and_detail(model: Model, small_ckpt: Path, small_directions: Path, tmp_path: Path) -> None:
    face = FACES / "00044.jpg"
    res = run_cli("edit", str(face), "-o", str(tmp_path), "--checkpoint", str(small_ckpt), "--directions",
                  str(small_directions), "--aligned", "--precision", "fp32", "--quiet", "--combine",
                  "--attr", "stit_age", "--attr", "eyeglasses", "--text", TEXT, "--beta", "0.1",
                  "-s", "2", "-s", "1", "-s", "3")
    assert res.returncode == 0, res.stderr
    label = "stit_age+2_eyeglasses+1_face-with-curly-hair+3"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"00044_{label}.png", f"00044_{label}.pt"]
    parts = [EditSpec("stit_age", 2.0), EditSpec("eyeglasses", 1.0), text_spec(TEXT, 3.0, beta=0.1)]
    combined = model.edit(face, [Combined(tuple(parts))], aligned=True)
    assert np.array_equal(pixels(combined.image), pixels(Image.open(tmp_path / f"00044_{label}.png")))
    one = model.edit(face, {"stit_age": 2}, aligned=True)
    both = model.edit(face, {"stit_age": 2, "eyeglasses": 1}, aligned=True, combine=True)
    assert np.abs(pixels(both.image) - pixels(one.image)).max() > 0
    e4e = model.edit(face, {"stit_age": 2}, aligned=True, detail=0.0)
    assert list(e4e.images) == ["stit_age+2_detail0"]
    with torch.inference_mode():
        plain = model.net.synthesize(e4e.faces[0].codes["stit_age+2_detail0"][None].float())
    assert np.array_equal(pixels(e4e.image), pixels(hfgi_cli.engine.tensor_to_image(plain[0])))


def test_refused_before_the_model_is_loaded(small_ckpt: Path, small_directions: Path, tmp_path: Path) -> None:
    absent = ["--checkpoint", str(tmp_path / "absent.pt"), "--directions", str(small_directions)]
    cases = [
        (["--text", "  "], "--text is empty"),
        (["--text", TEXT, "--beta", "1.5"], "--beta must be within (0, 1)"),
        (["--attr", "smile", "--beta", "0.2"], "--neutral and --beta go with --text"),
        (["--text", TEXT, "--directions", str(tmp_path)], "hfgi weights download styleclip"),
        (["--attr", "glases"], "did you mean: eyeglasses"),
    ]
    for args, message in cases:
        res = run_cli("edit", str(FACES / "00044.jpg"), "-o", str(tmp_path / "o"), "--aligned", *absent, *args)
        assert res.returncode == 2 and message in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and "checkpoint" not in res.stderr
    wrong = tmp_path / "wrong"
    (wrong / "stit").mkdir(parents=True)
    np.save(wrong / "stit" / "gender.npy", np.zeros((3, 7)))
    res = run_cli("edit", str(FACES / "00044.jpg"), "-o", str(tmp_path / "o"), "--aligned", "--checkpoint",
                  str(small_ckpt), "--directions", str(wrong), "--attr", "gender")  # the shape needs the model
    assert res.returncode == 2 and "gender.npy: direction of shape (3, 7)" in res.stderr
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ video
@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import math

    from hfgi_cli.align import face_quad
    from hfgi_cli.detect import detect_faces

    from .conftest import PHOTOS
    from .video_clips import make_clip, write_mp4

    img = Image.open(PHOTOS / "astronaut.png").convert("RGB")
    quad, _ = face_quad(detect_faces(img)[0])
    clip = make_clip(img, quad, quad.mean(axis=0),
                     lambda p: (160 + 20 * math.sin(2 * math.pi * p), 125.0, 0.7, 2 * math.sin(2 * math.pi * p)), 6)
    path = tmp_path_factory.mktemp("clip") / "short.mp4"
    write_mp4(path, clip.frames, 25.0)
    return path


def test_video_takes_every_kind_of_edit(short_clip: Path, small_ckpt: Path, small_directions: Path,
                                        tmp_path: Path) -> None:
    from .video_clips import read_mp4

    common = ["--checkpoint", str(small_ckpt), "--directions", str(small_directions), "--precision", "fp32"]
    out = tmp_path / "both.mp4"
    res = run_cli("video", str(short_clip), "-o", str(out), "--attr", "eyeglasses", "-s", "1", "--text", TEXT,
                  "--beta", "0.1", "-s", "4", *common)
    assert res.returncode == 0, res.stderr
    source, edited = read_mp4(short_clip)[0], read_mp4(out)[0]
    assert len(edited) == 6 and all(np.abs(a.astype(int) - b).max() > 20 for a, b in zip(source, edited))
    stored = torch.load(out.with_suffix(".pt"), weights_only=False)
    assert stored["edit"]["label"] == "eyeglasses+1_face-with-curly-hair+4"
    again = run_cli("video", str(out.with_suffix(".pt")), "-o", str(tmp_path / "gender.mp4"), "--attr", "gender",
                    "-s", "2", *common)
    assert again.returncode == 0 and "from stored codes" in again.stderr, again.stderr


def test_video_averages_a_per_image_move_over_frames(model: Model) -> None:
    """GradCtrl's move depends on each frame's codes; in a video it is averaged over frames, so codes
    that jitter from frame to frame get a move that jitters less."""
    from hfgi_cli.engine import FaceWork
    from hfgi_cli.video.edit import Frame, FrameEditor, FrameFace, VideoOptions

    g = torch.Generator().manual_seed(8)
    base = torch.randn(model.n_latent, model.style_dim, generator=g)
    spec = EditSpec("eyeglasses", 1.0)
    editor = FrameEditor(model, VideoOptions(spec), 12, "clip")
    assert editor.move_emas is not None
    moves, raw = [], []
    for index in range(12):
        latent = base + 0.3 * torch.randn(model.n_latent, model.style_dim, generator=g)
        face = FaceWork(0, latent=latent, distortion=torch.zeros(3, 256, 256))
        with torch.inference_mode():
            raw.append(model.apply_edit(latent[None], spec).codes[0] - latent)
        tracked = FrameFace(0, 0, face, True)
        editor._decode_smoothed_move([(Frame(index, np.zeros((4, 4, 3), np.uint8), [tracked]), tracked)], spec)
        moves.append(face.outputs[-1][1] - latent)
    step = lambda xs: float(torch.stack([(b - a).norm() for a, b in zip(xs, xs[1:])]).mean())  # noqa: E731
    assert step(moves) < 0.6 * step(raw)
