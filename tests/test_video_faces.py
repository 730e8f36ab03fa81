"""`hfgi video` with several people: tracks with stable ids through a crossing, an absence and a
shot cut; every face edited, nothing else touched; re-runs of chosen faces from OUT.pt (small model).

The scenes are the shared aligned faces moved on a plain background (``video_clips.make_scene``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hfgi_cli import video as hv
from hfgi_cli.align import AlignedFace, photo_mask
from hfgi_cli.commands.video import VideoStatus
from hfgi_cli.edits import EditSpec
from hfgi_cli.engine import Model, load_model
from hfgi_cli.evaluate import evaluate_video
from hfgi_cli.video import ffmpeg, tracking
from hfgi_cli.video import store as hv_store

from .conftest import FACES, run_cli
from .video_clips import Person, Scene, make_scene, write_mp4

SIZE = (320, 240)


@pytest.fixture(scope="module")
def people() -> list[Image.Image]:
    return [Image.open(FACES / name).convert("RGB") for name in ("00044.jpg", "00051.jpg", "00085.jpg")]


def crossing(people: list[Image.Image], n: int) -> Scene:
    """Two people walking past each other; the nearer (larger) one hides the other for a few frames."""
    return make_scene([Person(people[0], lambda p: (60 + 200 * p, 120, 0.55, 0.0)),
                       Person(people[1], lambda p: (260 - 200 * p, 125, 0.6, 0.0))], n, SIZE)


def write_frames(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for k, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{k:04d}.png")
    return folder


def tracked(frames: list[np.ndarray], **kwargs: int) -> tuple[tracking.Tracker, list[list[tracking.TrackedFace]]]:
    tracker = tracking.Tracker(**kwargs)
    return tracker, [faces for _i, _p, faces in tracker.run(iter(frames))]


def person_of(face: tracking.TrackedFace, true_quads: np.ndarray) -> int:
    """The person whose true square is nearest to a face's detection on its frame."""
    centres = true_quads.mean(axis=1)
    distance = np.hypot(*(centres - face.raw[0:2]).T)  # type: ignore[index]
    return int(np.nanargmin(distance))


def identities(per_frame: list[list[tracking.TrackedFace]], scene: Scene) -> dict[int, set[int]]:
    """Track id -> the people its detections were on (one each when the ids are stable)."""
    seen: dict[int, set[int]] = {}
    for t, faces in enumerate(per_frame):
        for face in faces:
            if face.raw is not None:
                seen.setdefault(face.track, set()).add(person_of(face, scene.true_quads[t]))
    return seen


# ------------------------------------------------------------------------------------ tracking only
def test_two_faces_crossing_keep_their_ids(people) -> None:
    scene = crossing(people, 14)
    tracker, per_frame = tracked(scene.frames)
    assert identities(per_frame, scene) == {0: {0}, 1: {1}}
    # the hidden one is filled in behind the other, so both are there on every frame
    assert all(sorted(f.track for f in faces) == [0, 1] for faces in per_frame)
    assert 0 < tracker.tracks[0].detected < 14 and tracker.tracks[1].detected == 14
    assert tracker.associator.descriptors_computed < 14 * 2  # only where position alone is not enough


def test_a_face_that_leaves_and_comes_back_keeps_its_id(people) -> None:
    away = range(5, 17)  # longer than max_gap: not bridged
    scene = make_scene([Person(people[0], lambda p: (90, 120, 0.55, 0.0)),
                        Person(people[1], lambda p: (230 - 10 * p, 125, 0.55, 0.0), lambda t: t not in away)],
                       22, SIZE)
    tracker, per_frame = tracked(scene.frames)
    assert identities(per_frame, scene) == {0: {0}, 1: {1}}
    frames_of_1 = [t for t, faces in enumerate(per_frame) if any(f.track == 1 for f in faces)]
    hold = tracking.MAX_HOLD
    assert frames_of_1 == [*range(0, 5 + hold), *range(17 - hold, 22)]  # held a few frames, then left alone
    assert {f.segment for faces in per_frame for f in faces if f.track == 1} == {0, 1}
    assert {f.segment for faces in per_frame for f in faces if f.track == 0} == {0}


def test_people_keep_their_ids_across_a_cut(people) -> None:
    n, cut = 12, 6

    def shot(first: tuple[float, float, float], second: tuple[float, float, float]):  # noqa: ANN202
        return lambda p: (*(first if p * (n - 1) < cut else second), 0.0)

    scene = make_scene([
        Person(people[0], shot((80, 120, 0.55), (300, 110, 0.5))),
        Person(people[1], shot((240, 125, 0.55), (90, 130, 0.62))),
        Person(people[2], lambda p: (200, 120, 0.5, 0.0), lambda t: t >= cut),  # new after the cut
    ], n, (400, 240))
    tracker, per_frame = tracked(scene.frames)
    assert identities(per_frame, scene) == {0: {0}, 1: {1}, 2: {2}}
    assert [(t.first, t.last) for t in tracker.tracks] == [(0, n - 1), (0, n - 1), (cut, n - 1)]
    for track in (0, 1):  # a new segment at the cut: no smoothing from one shot into the other
        segments = [f.segment for faces in per_frame for f in faces if f.track == track]
        assert segments == [0] * cut + [1] * (n - cut)


# ------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def model(small_ckpt: Path, small_directions: Path) -> Model:
    return load_model(small_ckpt, device="cpu", directions=small_directions)


def capture(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """The frames a run hands to the H.264 encoder (before the codec's own loss)."""
    written: list[np.ndarray] = []
    original = ffmpeg.VideoOutput.write

    def write(self: ffmpeg.VideoOutput, frames: list[np.ndarray]) -> None:
        written.extend(f.copy() for f in frames)
        original(self, frames)

    monkeypatch.setattr(ffmpeg.VideoOutput, "write", write)
    return written


def masks(track: dict, frame: int, size: tuple[int, int]) -> np.ndarray | None:
    """The paste-back weights of a stored track on one frame, over the whole frame (None: not there)."""
    rows = (track["frame"] == frame).nonzero().flatten()
    if not len(rows):
        return None
    row = int(rows[0])
    face = AlignedFace(Image.new("RGB", (1, 1)), track["quad"][row].numpy(),
                       track["landmarks"][row].numpy().astype(np.float64), size)
    box, weight = photo_mask(face)
    full = np.zeros((size[1], size[0]), np.float32)
    full[box[1] : box[3], box[0] : box[2]] = weight
    return full


@pytest.fixture(scope="module")
def two_people(people, model: Model, tmp_path_factory: pytest.TempPathFactory):
    """A first run on a crossing (frames as PNG, so the input pixels are exact)."""
    scene = crossing(people, 8)
    folder = write_frames(tmp_path_factory.mktemp("crossing") / "frames", scene.frames)
    out = tmp_path_factory.mktemp("edited") / "two.mp4"
    with pytest.MonkeyPatch.context() as mp:
        written = capture(mp)
        result = hv.edit_video(model, folder, out, hv.VideoOptions(EditSpec("smile", 3.0), batch_size=4))
    return scene, folder, out, result, written


def test_every_face_is_edited_and_nothing_else(two_people) -> None:
    scene, _folder, out, result, written = two_people
    assert [t.id for t in result.tracks] == [0, 1] and result.edited == [0, 1] and not result.missing
    assert result.faces == 16 and len(written) == 8
    tracks = torch.load(out.with_suffix(".pt"))["tracks"]
    assert [t["frame"].tolist() for t in tracks] == [list(range(8))] * 2
    assert all(t["latent"].shape == (8, 10, 64) and t["inverted"] for t in tracks)
    assert np.load(out.with_suffix(".distortion.npy"), mmap_mode="r").shape == (16, 3, 256, 256)
    changed = []
    for t, (before, after) in enumerate(zip(scene.frames, written)):
        weights = [masks(track, t, SIZE) for track in tracks]
        untouched = np.all([w == 0 for w in weights if w is not None], axis=0)
        assert np.array_equal(before[untouched], after[untouched]), f"frame {t}: changed where no face is"
        diff = np.abs(before.astype(np.int16) - after).mean(axis=-1)
        changed.append([float(diff[w > 0.99].mean()) for w in weights if w is not None])
    print(f"\nmean change inside each face, per frame: {np.round(changed, 1).tolist()}")
    assert np.min(changed) > 3.0  # every face on every frame was replaced


def test_rerun_edits_a_chosen_face_and_the_nearer_is_on_top(two_people, model: Model, small_ckpt: Path,
                                                       small_directions: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    scene, _folder, out, _result, first = two_people
    rerun = load_model(small_ckpt, device="cpu", directions=small_directions)

    def no_encoder(*args: object) -> None:
        raise AssertionError("the encoder ran")

    rerun.net.encoder.forward = no_encoder  # type: ignore[method-assign]
    written = capture(monkeypatch)
    again = hv.edit_video_from_latents(rerun, out.with_suffix(".pt"), tmp_path / "one.mp4",
                                       hv.VideoOptions(EditSpec("smile", 3.0), faces=(1,)))
    assert again.from_latents and again.edited == [1] and again.faces == 8
    tracks = torch.load(out.with_suffix(".pt"))["tracks"]
    side = [float(np.hypot(*(t["quad"][0, 3] - t["quad"][0, 0]).numpy())) for t in tracks]
    assert side[1] > side[0]  # face 1 is the nearer one
    overlaps = 0
    for t, (before, after, both) in enumerate(zip(scene.frames, written, first)):
        w0, w1 = masks(tracks[0], t, SIZE), masks(tracks[1], t, SIZE)
        assert np.array_equal(before[w1 == 0], after[w1 == 0]), f"frame {t}: face 0 or the rest changed"
        full = w1 > 0.99
        assert np.abs(after[full].astype(np.int16) - before[full]).mean() > 3.0
        # face 1 as the first run made it, where face 0 was pasted underneath too: the nearer is on top
        assert np.abs(after[full].astype(np.int16) - both[full]).mean() < 1.0
        overlaps += int((full & (w0 > 0.99)).sum())
    assert overlaps > 100, "the scene should make the two faces overlap"


def test_two_people_edited_through_the_cli_and_again_from_its_pt(two_people, small_ckpt: Path,
                                                                small_directions: Path, tmp_path: Path) -> None:
    """The same crossing through `hfgi video`: both faces edited, the codes the API stored, and a
    re-run of the CLI's OUT.pt that edits one of them."""
    _scene, folder, api_out, _result, _written = two_people
    common = ["--attr", "smile", "-s", "3", "--checkpoint", str(small_ckpt), "--directions", str(small_directions),
              "--batch-size", "4"]
    out = tmp_path / "cli.mp4"
    r = run_cli("video", str(folder), "-o", str(out), *common)
    assert r.returncode == 0, r.stderr
    assert "2 face(s) tracked, faces 0, 1 edited on 16 face-frames" in r.stderr.splitlines()[-1]
    api, cli = (torch.load(p.with_suffix(".pt"))["tracks"] for p in (api_out, out))
    assert [t["frame"].tolist() for t in cli] == [t["frame"].tolist() for t in api]
    assert all(torch.equal(a["latent"], c["latent"]) for a, c in zip(api, cli))
    again = tmp_path / "again.mp4"
    r = run_cli("video", str(out.with_suffix(".pt")), "--faces", "0", "-o", str(again), *common)
    assert r.returncode == 0 and again.stat().st_size > 0, r.stderr
    assert "faces 0 edited on 8 face-frames" in r.stderr.splitlines()[-1] and "encoder not run" in r.stderr


def test_faces_naming_a_missing_track(two_people, small_ckpt: Path, small_directions: Path, tmp_path: Path) -> None:
    _scene, folder, out, _result, _written = two_people
    common = ["--attr", "smile", "-s", "2", "--checkpoint", str(small_ckpt), "--directions", str(small_directions),
              "-q"]
    pt = out.with_suffix(".pt")
    r = run_cli("video", str(pt), "--faces", "1,5", "-o", str(tmp_path / "x.mp4"), *common)
    assert r.returncode == 1 and not (tmp_path / "x.mp4").exists()
    (line,) = r.stderr.strip().splitlines()
    assert str(pt) in line and "no face 5" in line and "0, 1" in line
    # a first run learns the tracks at the end: the video is written, the named face was not there
    r = run_cli("video", str(folder), "--faces", "7", "-o", str(tmp_path / "y.mp4"), *common)
    assert r.returncode == 1 and (tmp_path / "y.mp4").exists()
    (line,) = r.stderr.strip().splitlines()
    assert str(folder) in line and "no face 7" in line
    r = run_cli("video", str(folder), "--faces", "one", "-o", str(tmp_path / "z.mp4"), *common)
    assert r.returncode == 2 and "--faces" in r.stderr
    r = run_cli("video", str(pt), "--list-faces")
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 2, r.stdout
    assert lines[0].startswith("face 0: frames 0-7, detected on ") and lines[1] == "face 1: frames 0-7, detected on 8"


def test_a_clip_without_any_face(small_ckpt: Path, small_directions: Path, tmp_path: Path) -> None:
    gif = tmp_path / "empty.gif"
    frames = [Image.new("RGB", (48, 32), (5 * k, 80, 120)) for k in range(4)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=40)
    r = run_cli("video", str(gif), "-o", str(tmp_path / "out.mp4"), "--attr", "smile", "-s", "1", "-q",
                "--checkpoint", str(small_ckpt), "--directions", str(small_directions))
    assert r.returncode == 1
    (line,) = r.stderr.strip().splitlines()
    assert str(gif) in line and "no face found in any frame" in line
    r = run_cli("video", str(gif), "--list-faces")
    assert r.returncode == 1 and str(gif) in r.stderr and "no face found" in r.stderr


def test_list_faces_and_contact_sheet(people, tmp_path: Path) -> None:
    scene = crossing(people, 6)
    clip = tmp_path / "two.mp4"
    write_mp4(clip, scene.frames, 25.0, audio=False)
    sheet = tmp_path / "faces.png"
    r = run_cli("video", str(clip), "--list-faces", "-o", str(sheet))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["face 0", "face 1"]
    assert "frames 0-5" in lines[1]
    with Image.open(sheet) as img:
        assert img.size == (2 * 256 + 2, 256)


# ------------------------------------------------------------------------------------ reports
def test_status_line_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    status = VideoStatus(every=0.05)
    with status.ticking(silent=False):
        time.sleep(0.12)
        status.update(hv.Progress(frames=10, total=40, faces=17, people=2))
        time.sleep(0.3)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("video:")]
    assert len(lines) >= 3 and "starting" in lines[0]
    assert "10/40 frames, 17 faces edited, 2 people" in lines[-1] and "frames/s" in lines[-1] and "left" in lines[-1]


def test_eval_scores_each_person(two_people) -> None:
    scene, _folder, out, _result, _written = two_people
    clip = out.with_name("source.mp4")
    write_mp4(clip, scene.frames, 25.0, audio=False)
    record = evaluate_video(clip, out)
    assert [f["face"] for f in record["faces"]] == [0, 1]
    for face in record["faces"]:
        assert face["frames"] >= 4 and face["tl_id"] is not None and face["flicker"] is not None
    assert record["tl_id"] == min(f["tl_id"] for f in record["faces"])
    assert record["identity_distance_max"] == max(f["identity_distance_max"] for f in record["faces"])
    r = run_cli("eval", str(clip), str(out))
    assert r.returncode == 0, r.stderr
    for face in record["faces"]:
        assert f"face {face['face']}: {face['frames']} frames" in r.stdout and "TL-ID" in r.stdout


def test_a_one_face_file_of_the_first_format_reads_as_one_track(tmp_path: Path) -> None:
    n = 3
    v1 = {"format": "hfgi-video/1", "source": "/x/clip.mp4", "source_kind": "video", "fps": 25.0, "size": [64, 48],
          "n_frames": n, "checkpoint": "c.pt", "n_latent": 10, "style_dim": 64, "latent": torch.randn(n, 10, 64),
          "found": torch.tensor([False, True, True]), "detected": torch.tensor([False, True, False]),
          "quad": torch.zeros(n, 4, 2, dtype=torch.float64), "raw_quad": torch.zeros(n, 4, 2, dtype=torch.float64),
          "landmarks": torch.zeros(n, 68, 2), "segment": torch.tensor([-1, 0, 0]),
          "distortion_file": "clip.distortion.npy", "distortion_row": torch.tensor([-1, 0, 1]), "smooth_window": 9,
          "edit": {}}
    torch.save(v1, tmp_path / "old.pt")
    (track,) = hv_store.read_video_latents(tmp_path / "old.pt", 10, 64)["tracks"]
    assert track["frame"].tolist() == [1, 2] and track["distortion_row"].tolist() == [0, 1] and track["inverted"]
    assert torch.equal(track["latent"], v1["latent"][1:])
    assert [(t.id, t.first, t.last, t.detected) for t in hv.stored_tracks({"tracks": [track]})] == [(0, 1, 2, 1)]
