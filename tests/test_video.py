"""`hfgi video` on clips made here: the astronaut photo moved along a known path (small model)."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hfgi_cli import video as hv
from hfgi_cli.align import face_quad
from hfgi_cli.detect import detect_faces
from hfgi_cli.edits import EditSpec
from hfgi_cli.engine import Model, load_model
from hfgi_cli.video import edit as vedit
from hfgi_cli.video import ffmpeg, tracking

from .conftest import PHOTOS, REPO, run_cli
from .video_clips import Clip, jitter, make_clip, read_mp4, write_mp4

FPS = 25.0
N_MOVING = 24


@pytest.fixture(scope="module")
def photo() -> tuple[Image.Image, np.ndarray, np.ndarray]:
    img = Image.open(PHOTOS / "astronaut.png").convert("RGB")
    quad, _ = face_quad(detect_faces(img)[0])
    return img, quad, quad.mean(axis=0)


def moving(p: float) -> tuple[float, float, float, float]:
    """Shift, small rotation and zoom along smooth curves."""
    return (160 + 40 * math.sin(2 * math.pi * p), 125 + 10 * math.sin(4 * math.pi * p),
            0.7 * (1 + 0.08 * math.sin(2 * math.pi * p)), 5 * math.sin(2 * math.pi * p))


@pytest.fixture(scope="module")
def moving_clip(photo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Clip]:
    img, quad, anchor = photo
    clip = make_clip(img, quad, anchor, moving, N_MOVING, fps=FPS)
    path = tmp_path_factory.mktemp("clip") / "moving.mp4"
    write_mp4(path, clip.frames, FPS, audio=True)
    return path, clip


@pytest.fixture(scope="module")
def edited(moving_clip, small_ckpt: Path, small_directions: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("edited") / "out.mp4"
    result = run_cli("video", str(moving_clip[0]), "-o", str(out), "--attr", "smile", "--strength", "2",
                     "--checkpoint", str(small_ckpt), "--directions", str(small_directions), "-b", "8",
                     "--precision", "fp32")  # the exact path: the re-run from its codes must match it
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}, {out.with_suffix('.pt')} and {out.with_suffix('.distortion.npy')}: 24 frames" in result.stderr
    assert "1 face(s) tracked, faces 0 edited on 24 face-frames" in result.stderr
    return out


@pytest.fixture(scope="module")
def model(small_ckpt: Path, small_directions: Path) -> Model:
    return load_model(small_ckpt, device="cpu", directions=small_directions)


def ffmpeg_info(path: Path) -> str:
    return ffmpeg.ffmpeg_streams(path)


def track(frames: list[np.ndarray], window: int = tracking.DEFAULT_SMOOTH_WINDOW
          ) -> tuple[np.ndarray, np.ndarray, list]:
    """(smoothed quads, raw quads, shot numbers) from the tracker alone (no model)."""
    tracker = tracking.Tracker(smooth_window=window)
    smooth, raw, shots = [], [], []
    for _i, _pixels, faces in tracker.run(iter(frames)):
        (face,) = faces
        smooth.append(tracking.vector_quad(face.vec))
        raw.append(tracking.vector_quad(face.raw))
        shots.append(face.segment)
    return np.array(smooth), np.array(raw), shots


# ------------------------------------------------------------------------------------ end to end
def test_output_keeps_frames_rate_size_and_audio(edited: Path, moving_clip) -> None:
    frames, meta = read_mp4(edited)
    assert len(frames) == N_MOVING
    assert meta["fps"] == FPS and tuple(meta["size"]) == (320, 240)
    info = ffmpeg_info(edited)
    assert re.search(r"Video: h264 .*yuv420p", info) and re.search(r"Audio: aac", info), info
    assert sorted(p.name for p in edited.parent.iterdir()) == ["out.distortion.npy", "out.mp4", "out.pt"]


def test_only_the_face_changes(edited: Path, moving_clip, tmp_path: Path) -> None:
    source, _ = read_mp4(moving_clip[0])
    frames, _ = read_mp4(edited)
    # the codec's own error: the same frames re-encoded with the same settings, no edit
    writer = ffmpeg.H264Writer(tmp_path / "plain.mp4", (320, 240), FPS)
    for f in source:
        writer.write(f)
    writer.close()
    plain, _ = read_mp4(tmp_path / "plain.mp4")
    quads = torch.load(edited.with_suffix(".pt"))["tracks"][0]["quad"].numpy()
    far, far_codec, face = [], [], []
    for src, out, ref, quad in zip(source, frames, plain, quads):
        diff = np.abs(src.astype(np.int16) - out).max(axis=-1)
        codec = np.abs(src.astype(np.int16) - ref).max(axis=-1)
        near = np.zeros(diff.shape, bool)
        (x0, y0), (x1, y1) = np.floor(quad.min(0)).astype(int) - 6, np.ceil(quad.max(0)).astype(int) + 6
        near[max(y0, 0) : y1, max(x0, 0) : x1] = True
        far.append(diff[~near])
        far_codec.append(codec[~near])
        c = quad.mean(0).astype(int)
        face.append(diff[c[1] - 10 : c[1] + 10, c[0] - 10 : c[0] + 10].mean())
    far_all, codec_all = np.concatenate(far), np.concatenate(far_codec)
    print(f"\naway from the face: mean |diff| {far_all.mean():.2f} (codec alone {codec_all.mean():.2f}), "
          f"p99 {np.percentile(far_all, 99):.0f} (codec alone {np.percentile(codec_all, 99):.0f})")
    assert far_all.mean() < 1.15 * codec_all.mean() + 0.3
    assert np.percentile(far_all, 99) <= np.percentile(codec_all, 99) + 3
    assert min(face) > 5  # the (random, small) model really replaced the face


def test_smoothed_crops_follow_the_motion_with_less_jitter(edited: Path, moving_clip) -> None:
    (record,) = torch.load(edited.with_suffix(".pt"))["tracks"]
    true = moving_clip[1].true_quads
    smooth, raw = record["quad"].numpy(), record["raw_quad"].numpy()
    assert record["frame"].tolist() == list(range(N_MOVING))
    assert record["detected"].all() and (record["segment"] == 0).all()
    rms = {k: float(np.sqrt(np.mean(np.sum((q - true) ** 2, -1)))) for k, q in (("raw", raw), ("smooth", smooth))}
    noise = {k: jitter(q - true) for k, q in (("raw", raw), ("smooth", smooth))}
    print(f"\njitter raw {jitter(raw):.2f} smooth {jitter(smooth):.2f} true {jitter(true):.2f}; "
          f"noise jitter raw {noise['raw']:.2f} smooth {noise['smooth']:.2f}; error {rms}")
    assert jitter(smooth) < jitter(raw)
    assert noise["smooth"] < 0.5 * noise["raw"]
    side = np.hypot(*(true[0, 3] - true[0, 0]))
    assert rms["smooth"] < 0.02 * side  # follows the known path (no lag, no overshoot)


def test_rerun_from_latents_skips_the_encoder(edited: Path, small_ckpt: Path, small_directions: Path,
                                              tmp_path: Path) -> None:
    record = torch.load(edited.with_suffix(".pt"))
    assert record["tracks"][0]["latent"].shape == (N_MOVING, 10, 64) and record["fps"] == FPS
    assert record["size"] == [320, 240] and record["checkpoint"] == small_ckpt.name
    assert np.load(edited.with_suffix(".distortion.npy"), mmap_mode="r").shape == (N_MOVING, 3, 256, 256)
    # an encoder that cannot run proves the re-run does not use it
    model = load_model(small_ckpt, device="cpu", directions=small_directions, precision="fp32")  # as the CLI

    def no_encoder(*args: object) -> None:
        raise AssertionError("the encoder ran")

    model.net.encoder.forward = no_encoder  # type: ignore[method-assign]
    opts = hv.VideoOptions(EditSpec("smile", 2.0), batch_size=8)
    again = hv.edit_video_from_latents(model, edited.with_suffix(".pt"), tmp_path / "again.mp4", opts)
    assert again.from_latents and again.frames == N_MOVING and again.audio
    a, _ = read_mp4(edited)
    b, _ = read_mp4(tmp_path / "again.mp4")
    # the same edit from the stored codes, squares, landmarks and maps gives the same frames
    diffs = [float(np.abs(x.astype(np.int16) - y).mean()) for x, y in zip(a, b)]
    assert max(diffs) == 0.0, diffs


# ------------------------------------------------------------------------------------ tracking only
def test_still_clip_gives_a_still_crop(photo) -> None:
    img, quad, anchor = photo
    clip = make_clip(img, quad, anchor, lambda p: (160, 125, 0.7, 0.0), 16, noise=6.0, seed=3)
    smooth, raw, shots = track(clip.frames)
    assert set(shots) == {0}
    spread = lambda q: float(np.abs(q - q.mean(0)).max())  # noqa: E731
    print(f"\nstill: raw spread {spread(raw):.2f} px jitter {jitter(raw):.2f}; "
          f"smoothed spread {spread(smooth):.2f} px jitter {jitter(smooth):.2f}")
    assert jitter(smooth) < 0.5 * jitter(raw)
    assert spread(smooth[2:-2]) < 1.5


def test_a_cut_resets_the_smoothing(photo) -> None:
    img, quad, anchor = photo
    a = make_clip(img, quad, anchor, lambda p: (110 + 20 * p, 120, 0.6, 0.0), 12)
    b = make_clip(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), quad, anchor,
                  lambda p: (210 - 20 * p, 130, 0.8, 3.0), 12)
    smooth, raw, shots = track(a.frames + b.frames)
    assert shots == [0] * 12 + [1] * 12
    # each side of the cut keeps its own crop: no glide from one shot's face to the other's
    err = np.abs(smooth - raw).max(axis=(1, 2))
    assert err[10:14].max() < 2.0, err
    assert np.hypot(*(smooth[12].mean(0) - smooth[11].mean(0))) > 40


def test_gaps_are_filled_from_neighbours() -> None:
    filler = tracking.GapFiller(max_gap=3)
    v = lambda x: np.array([x, 0.0, 50.0, 0.0])  # noqa: E731
    pushed = [(0, v(0)), (1, None), (2, None), (3, v(30)), *[(i, None) for i in range(4, 10)], (10, v(30))]
    out = [t for i, vec in pushed for t in filler.push(i, vec)] + filler.finish()
    assert [t[0] for t in out] == list(range(11))
    assert np.allclose(out[1][1], v(10)) and np.allclose(out[2][1], v(20))  # interpolated
    assert np.allclose(out[4][1], v(30)) and out[5][1] is not None  # held after the last detection
    assert out[6][1] is not None and out[7][1] is not None  # held before the next one
    assert [t[2] for t in out] == [0] * 7 + [1] * 4


def test_latent_ema_and_strength_ramp() -> None:
    ema = vedit.LatentEMA(0.5)
    smoothed = [float(ema(i, shot, torch.full((2, 3), value))[0, 0])
                for i, shot, value in ((0, 0, 0.0), (1, 0, 2.0), (2, 0, 2.0), (3, 1, 8.0), (5, 1, 4.0))]
    assert smoothed == [0.0, 1.0, 1.5, 8.0, 4.0]  # restarts at a new shot and after a frame without a face
    opts = hv.VideoOptions(EditSpec("smile", 0.0), ramp=(-2.0, 2.0))
    assert [vedit.strength_at(opts, i, 5) for i in range(5)] == [-2.0, -1.0, 0.0, 1.0, 2.0]


# ------------------------------------------------------------------------------------ other inputs
def test_gif_and_folder_of_frames(photo, model: Model, tmp_path: Path) -> None:
    img, quad, anchor = photo
    clip = make_clip(img, quad, anchor, moving, 5, size=(240, 180))
    gif = tmp_path / "clip.gif"
    pil = [Image.fromarray(f) for f in clip.frames]
    pil[0].save(gif, save_all=True, append_images=pil[1:], duration=100, loop=0)
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, f in enumerate(pil[:4]):
        f.save(folder / f"{k:04d}.png")
    for src, fps, n in ((gif, 10.0, 5), (folder, 12.0, 4)):
        opts = hv.VideoOptions(EditSpec("age", 0.0), ramp=(-2.0, 2.0), batch_size=8,
                               fps=None if src == gif else fps, latent_smooth=0.5)
        out = tmp_path / f"{src.stem}.mp4"
        result = hv.edit_video(model, src, out, opts)
        frames, meta = read_mp4(out)
        assert (len(frames), meta["fps"], tuple(meta["size"])) == (n, fps, (240, 180))
        assert result.faces == n and not result.audio


def test_direction_file_edits_like_the_named_attribute(photo, small_ckpt: Path, small_directions: Path,
                                                       tmp_path: Path) -> None:
    img, quad, anchor = photo
    clip = make_clip(img, quad, anchor, moving, 4, size=(240, 180))
    gif = tmp_path / "clip.gif"
    pil = [Image.fromarray(f) for f in clip.frames]
    pil[0].save(gif, save_all=True, append_images=pil[1:], duration=100, loop=0)
    common = ["--checkpoint", str(small_ckpt), "--directions", str(small_directions), "-s", "2", "-q"]
    named = run_cli("video", str(gif), "-o", str(tmp_path / "named.mp4"), "--attr", "age", *common)
    custom = run_cli("video", str(gif), "-o", str(tmp_path / "custom.mp4"), "--direction",
                     str(small_directions / "interfacegan" / "age.pt"), *common)
    assert named.returncode == 0 and custom.returncode == 0, named.stderr + custom.stderr
    a, _ = read_mp4(tmp_path / "named.mp4")
    b, _ = read_mp4(tmp_path / "custom.mp4")
    assert len(a) == 4 and all(np.array_equal(x, y) for x, y in zip(a, b))
    both = run_cli("video", str(gif), "-o", str(tmp_path / "both.mp4"), "--attr", "age", "--direction",
                   str(small_directions / "interfacegan" / "age.pt"), *common)
    assert both.returncode == 0, both.stderr  # two edits are combined into one video
    assert len(read_mp4(tmp_path / "both.mp4")[0]) == 4


def test_frames_without_a_face_stream_through(model: Model, tmp_path: Path) -> None:
    gif = tmp_path / "empty.gif"
    frames = [Image.new("RGB", (48, 32), (5 * k, 80, 120)) for k in range(40)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=40)
    done: list[int] = []
    result = hv.edit_video(model, gif, tmp_path / "empty.mp4", hv.VideoOptions(EditSpec("smile", 1.0)),
                           on_progress=lambda p: done.append(p.frames))
    assert (result.frames, result.faces) == (40, 0)
    assert max(np.diff([0, *done])) <= 16  # written as they come, not held until a face shows up
    assert len(read_mp4(tmp_path / "empty.mp4")[0]) == 40


def test_odd_size_is_padded_to_even(tmp_path: Path) -> None:
    writer = ffmpeg.H264Writer(tmp_path / "odd.mp4", (33, 21), 10.0)
    for k in range(3):
        writer.write(np.full((21, 33, 3), 40 * k, np.uint8))
    writer.close()
    frames, meta = read_mp4(tmp_path / "odd.mp4")
    assert len(frames) == 3 and tuple(meta["size"]) == (34, 22)


# ------------------------------------------------------------------------------------ CLI behaviour
def test_usage_errors(tmp_path: Path, small_ckpt: Path) -> None:
    r = run_cli("video", str(PHOTOS / "astronaut.png"), "-o", str(tmp_path / "x.avi"), "--attr", "smile",
                "--strength", "1", "--checkpoint", str(small_ckpt))
    assert r.returncode == 2 and ".mp4" in r.stderr
    r = run_cli("video", str(PHOTOS / "astronaut.png"), "-o", str(tmp_path / "x.mp4"), "--attr", "smile",
                "--checkpoint", str(small_ckpt))
    assert r.returncode == 2 and "--strength" in r.stderr
    assert not list(tmp_path.iterdir())


def test_interrupted_run_leaves_no_output(moving_clip, model: Model, tmp_path: Path) -> None:
    """Whatever stops a run part-way (here Ctrl-C after the first batch is written) removes every
    temporary file: no partial video, codes or distortion maps."""
    def interrupt(done: hv.Progress) -> None:
        assert list(tmp_path.glob(".out.*")), "the temporaries exist while the run goes on"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hv.edit_video(model, moving_clip[0], tmp_path / "out.mp4", hv.VideoOptions(EditSpec("smile", 1.0)),
                      on_progress=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_exits_130_and_leaves_no_output(moving_clip, small_ckpt: Path, small_directions: Path,
                                                tmp_path: Path) -> None:
    """The whole process: SIGINT while it is stopped (so it cannot finish first) -> exit 130."""
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hfgi_cli", "video", str(moving_clip[0]), "-o", str(out), "--attr", "smile",
         "--strength", "1", "--checkpoint", str(small_ckpt), "--directions", str(small_directions), "-q",
         "--batch-size", "1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.mp4.*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGSTOP)  # the run cannot end between the check below and the SIGINT
    try:
        running = proc.poll() is None
        written = list(tmp_path.glob(".out.mp4.*"))
        proc.send_signal(signal.SIGINT)
    finally:
        proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    if not running or not written:
        pytest.fail(f"the run was not caught while writing (running={running}): {err[-500:]}")
    assert proc.returncode == 130, err
    assert list(tmp_path.iterdir()) == []
