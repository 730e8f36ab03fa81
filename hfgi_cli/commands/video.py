"""`hfgi video`: a clip (or the OUTPUT.pt of an earlier run) in, an edited clip out (``video.edit_video``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..interrupt import exit_status, stop_on_signals
from .common import (
    BetaOpt,
    CheckpointOpt,
    Command,
    DetailOpt,
    DeviceOpt,
    DirectionOpt,
    DirectionsOpt,
    NeutralOpt,
    PrecisionOpt,
    QuietOpt,
    RunStatus,
    TextOpt,
    WeightsDirOpt,
    _duration,
    check_out_file,
    console,
    edit_specs_from_options,
    fail,
    load_for_run,
    note,
    progress,
    runtime_line,
    write_stdout,
)

if TYPE_CHECKING:
    from ..video import Progress, TrackInfo, VideoResult

# Typer reads the annotations at run time, so they stay typing.Optional for Python 3.9.
# ruff: noqa: UP045

app = typer.Typer()


class VideoStatus(RunStatus):
    """The status line of ``invert``/``edit`` for a clip: frames done, faces edited, people, time left."""

    def __init__(self, every: float = 30.0) -> None:
        super().__init__("video", 0, every)
        self.latest: Optional[Progress] = None

    def update(self, done: Progress) -> None:
        with self.lock:
            self.latest = done

    def text(self, short: bool = False) -> str:
        done, elapsed = self.latest, time.monotonic() - self.started
        if done is None:
            return "video: starting (reading the first frames)"
        total = f"/{done.total}" if done.total else ""
        parts = [f"video: {done.frames}{total} frames", f"{done.faces} face{'s' * (done.faces != 1)} edited",
                 f"{done.people} {'person' if done.people == 1 else 'people'}"]
        if done.frames and elapsed > 0:
            parts.append(f"{done.frames / elapsed:.2f} frames/s")
            if done.total and done.total > done.frames:
                parts.append(f"~{_duration((done.total - done.frames) * elapsed / done.frames)} left")
        return ", ".join(parts)


def _track_lines(tracks: list[TrackInfo]) -> list[str]:
    return [f"face {t.id}: frames {t.first}-{t.last}, detected on {t.detected}" for t in tracks]


def _list_faces(input: Path, sheet: Optional[Path], fps: Optional[float], smooth_window: int, quiet: bool) -> None:
    """--list-faces: track the clip without the model, one line per track on stdout (+ the sheet)."""
    from .. import video as hv
    from ..video.sheet import write_contact_sheet

    if sheet is not None and sheet.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        fail(f"-o {sheet}: with --list-faces, -o names the contact sheet (.jpg or .png)")
    status = VideoStatus()
    stop = threading.Event()
    signals: list[int] = []
    try:
        with stop_on_signals(stop, signals), status.ticking(quiet or console.is_terminal):
            src, tracks, frames = hv.track_clip(input, fps, smooth_window, on_progress=status.update, stop=stop)
    except KeyboardInterrupt:
        note("interrupted")
        raise typer.Exit(exit_status(signals[0]) if signals else 130) from None
    except hv.VideoError as exc:
        fail(str(exc), code=1)
    if not tracks:
        fail(f"{input}: no face found in any of its {frames} frames", code=1)
    for line in _track_lines(tracks):
        write_stdout(line + "\n")
    if sheet is not None and write_contact_sheet(tracks, sheet) and not quiet:
        note(f"wrote {sheet}: {len(tracks)} face(s) of {src.path}")


def _list_stored_faces(latents: Path, sheet: Optional[Path]) -> None:
    """--list-faces of an OUTPUT.pt: its tracks, and which of them can be edited again."""
    from .. import video as hv
    from ..video.store import read_video_file

    if sheet is not None:
        fail("--list-faces of an OUTPUT.pt lists its tracks only (it keeps no pixels for a contact sheet)")
    try:
        data = read_video_file(latents)
    except hv.VideoError as exc:
        fail(str(exc), code=1)
    if not data["tracks"]:
        fail(f"{latents}: holds no face (no face was found in {data['source']})", code=1)
    for line, track in zip(_track_lines(hv.stored_tracks(data)), data["tracks"]):
        write_stdout(line + ("" if track["inverted"] else " (not inverted: a re-run cannot edit it)") + "\n")


def _summary(result: VideoResult) -> str:
    if result.from_latents:
        written, how = f"{result.output}", "from stored codes, encoder not run"
    else:
        written = f"{result.output}, {result.latents} and {result.distortion}"
        how = f"{result.segments} segment(s)"
    people = ", ".join(map(str, result.edited)) or "none"
    return (f"wrote {written}: {result.frames} frames, {len(result.tracks)} face(s) tracked, faces {people} "
            f"edited on {result.faces} face-frames (detected on {result.detected}; {how}), audio "
            f"{'copied' if result.audio else 'none'}, {result.frames / max(result.seconds, 1e-9):.1f} frames/s")


@app.command(
    "video",
    cls=Command,
    help=(
        "Edit every face in a clip with temporally smoothed alignment; writes OUTPUT.mp4 (H.264, the input's "
        "frame rate, size and audio), OUTPUT.pt (per face track: frames, W+ before editing, smoothed crop "
        "squares) and OUTPUT.distortion.npy (distortion maps, float16, 384 KB a face a frame).\n\n"
        "INPUT is a video file (anything ffmpeg reads), an animated GIF, a folder of frames (sorted by "
        "name, --fps sets the rate), or an OUTPUT.pt of an earlier run: then the new edit is decoded from "
        "the stored codes on the original frames, without detection or the encoder, for any of its faces "
        "(--faces; the source must still exist; no new .pt is written).\n\n"
        "Each face is tracked with a stable id (0, 1, ... in order of appearance), by position and by "
        "identity (dlib's face descriptor), through crossings, a few hidden frames, leaving and coming back, "
        "and shot cuts; --list-faces shows the tracks. Each track's FFHQ crop square is smoothed over "
        "--smooth-window frames (a centred local quadratic fit; never across a shot cut, detected as a jump "
        "of the square beyond 40 % of its side a frame or 1.3x its size); frames where detection fails take "
        "the square from their neighbours (up to 10 frames between detections, 3 past the last), others stay "
        "unedited. Faces overlapping on a frame are pasted nearer (larger) on top. Memory does not grow with "
        "the clip's length. Exit status: 0 ok, 1 the input could not be read, has no face, or has no face "
        "of --faces, 2 usage error, 130 Ctrl-C, 143 SIGTERM (no output is left behind)."
    ),
    epilog=(
        "Examples:  hfgi video clip.mp4 --attr smile --strength 2 -o smile.mp4\n\n"
        "hfgi video clip.mp4 --attr eyeglasses -s 1 --text \"face with curly hair\" -s 4 -o both.mp4\n\n"
        "hfgi video clip.mp4 --list-faces -o faces.jpg   (which faces, no model)\n\n"
        "hfgi video smile.pt --faces 1 --attr age --strength-ramp 0:-3 -o younger.mp4   (no re-inversion)"
    ),
)
def video_command(
    input: Path = typer.Argument(
        ..., metavar="INPUT", help="Video file, GIF, folder of frames, or OUTPUT.pt of an earlier run."
    ),
    out: Optional[Path] = typer.Option(
        None, "-o", "--out", metavar="OUTPUT.mp4", help="Output video (.mp4); OUTPUT.pt is written beside it. "
        "With --list-faces: the contact sheet (.jpg/.png), optional."),
    attr: list[str] = typer.Option(
        [], "--attr", "-a", metavar="NAME",
        help="Edit to make (see `hfgi edit --list-attrs`); several are combined into one video."),
    direction: list[Path] = DirectionOpt,
    text: list[str] = TextOpt,
    neutral: Optional[str] = NeutralOpt,
    beta: Optional[float] = BetaOpt,
    detail: float = DetailOpt,
    strength: list[float] = typer.Option(
        [], "--strength", "-s", metavar="S",
        help="Edit strength, the same on every frame: one per --attr, then --direction, then --text (one: for all).",
    ),
    strength_ramp: Optional[str] = typer.Option(
        None, "--strength-ramp", metavar="A:B", help="Strength changing linearly from A (first frame) to B (last)."
    ),
    faces: Optional[str] = typer.Option(
        None, "--faces", metavar="IDS", help="Track ids to edit, e.g. 0,2 (see --list-faces); default: every face."
    ),
    list_faces: bool = typer.Option(
        False, "--list-faces", help="Only track the faces (no model): one line per track on stdout (id, frame "
        "span, frames detected); -o SHEET.jpg also writes a contact sheet. Of an OUTPUT.pt: its stored tracks."
    ),
    preview: bool = typer.Option(
        False, "--preview", help="Also write OUTPUT_faces.jpg: each track's id, largest crop and frame span."
    ),
    checkpoint: Optional[Path] = CheckpointOpt,
    weights_dir: Optional[Path] = WeightsDirOpt,
    directions: Optional[Path] = DirectionsOpt,
    batch_size: int = typer.Option(4, "--batch-size", "-b", min=1, metavar="N", help="Faces per model batch."),
    device: str = DeviceOpt,
    precision: str = PrecisionOpt,
    smooth_window: int = typer.Option(
        9, "--smooth-window", min=1, metavar="N",
        help="Frames (centred) the crop square is smoothed over; 1: no smoothing.",
    ),
    latent_smooth: float = typer.Option(
        0.0, "--latent-smooth", min=0.0, max=0.95, metavar="W",
        help="Exponential moving average of W+ over frames: weight of the previous frame (0: off).",
    ),
    fps: Optional[float] = typer.Option(
        None, "--fps", min=0.1, metavar="FPS", help="Frame rate of a folder of frames (default 25)."
    ),
    quality: bool = typer.Option(
        False, "--quality",
        help="Also decode each face's inversion and measure it against the tracked crop (identity distance, "
        "PSNR, SSIM; per face and frame in OUTPUT.pt, a summary and a warning for faces above 0.6): one more "
        "generator pass a face. Not for a re-run from OUTPUT.pt.",
    ),
    quiet: bool = QuietOpt,
) -> None:
    from .. import video as hv

    from_latents = input.is_file() and input.suffix.lower() == ".pt"
    try:
        chosen = hv.parse_faces(faces) if faces is not None else None
    except ValueError as exc:
        fail(str(exc))
    if list_faces:
        if out is not None:
            check_out_file(out)
        if not input.exists():
            fail(f"{input}: no such file or folder", code=1)
        if from_latents:
            _list_stored_faces(input, out)
        else:
            _list_faces(input, out, fps, smooth_window, quiet)
        return
    ramp = None
    if strength_ramp is not None:
        try:
            a, b = (float(v) for v in strength_ramp.split(":"))
        except ValueError:
            fail(f"--strength-ramp takes A:B (two numbers), not {strength_ramp!r}")
        if strength:
            fail("give --strength or --strength-ramp, not both")
        if len(attr) + len(direction) + len(text) > 1:
            fail("--strength-ramp ramps one edit; give one --attr, --direction or --text")
        ramp = (a, b)
    elif not strength:
        fail("give --strength S (or --strength-ramp A:B)")
    if out is None:
        fail("give the output video: -o OUT.mp4")
    if out.suffix.lower() != ".mp4":
        fail(f"-o {out}: the output must be an .mp4 file")
    check_out_file(out)
    if not input.exists():
        fail(f"{input}: no such file or folder", code=1)
    if quality and from_latents:
        fail("--quality measures the inversion against the frames' crops: a re-run from OUTPUT.pt has none")
    if preview and from_latents:
        fail("--preview shows the tracks' crops: a re-run from OUTPUT.pt has none (use --list-faces on the clip)")
    (spec,) = edit_specs_from_options(attr, strength or [0.0], direction, text, neutral, beta, detail, combine=True)
    model = load_for_run(checkpoint, weights_dir, directions, device, precision, None, [spec])
    if not quiet:
        note(runtime_line(model))

    from ..inputs import InputError

    options = hv.VideoOptions(spec, ramp, faces=chosen, batch_size=batch_size, smooth_window=smooth_window,
                              latent_smooth=latent_smooth, fps=fps, quality=quality)
    run = hv.edit_video_from_latents if from_latents else hv.edit_video
    stop = threading.Event()
    signals: list[int] = []
    status = VideoStatus()
    try:
        with stop_on_signals(stop, signals), status.ticking(quiet or console.is_terminal), progress(
            quiet, TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("frames {task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        ) as bar:
            task = bar.add_task("video", total=None, rate="")

            def report(done: Progress) -> None:
                status.update(done)
                elapsed = bar.tasks[task].elapsed or 0.0
                rate = f"{done.frames / elapsed:.1f}/s" if elapsed > 0 else ""
                bar.update(task, completed=done.frames, total=max(done.total, done.frames) if done.total else None,
                           rate=rate)

            result = run(model, input, out, options, on_progress=report, stop=stop)
    except KeyboardInterrupt:
        note("interrupted: no output written")
        raise typer.Exit(exit_status(signals[0]) if signals else 130) from None
    except (hv.VideoError, InputError) as exc:
        fail(str(exc), code=1)
    except ValueError as exc:
        fail(str(exc))
    if not quiet:
        note(_summary(result))
    if preview:
        from ..video.sheet import write_contact_sheet

        sheet = out.with_name(f"{out.stem}_faces.jpg")
        if write_contact_sheet(result.tracks, sheet) and not quiet:
            note(f"wrote {sheet}")
    if result.quality:
        from ..quality import IDENTITY_THRESHOLD, summary_line

        suspect = [(k, t, q) for k, t, q in result.quality if q.suspect]
        if suspect:
            k, t, worst = max(suspect, key=lambda ktq: ktq[2].identity_distance)
            note(f"warning: {input}: identity distance above {IDENTITY_THRESHOLD} on {len(suspect)} of "
                 f"{len(result.quality)} faces (worst {worst.identity_distance:.2f}, face {t} at frame {k}): the "
                 f"reconstruction may not look like this person there")
        if not quiet:
            note(str(summary_line([(f"face {t} frame {k}", q) for k, t, q in result.quality], what="face")))
    if not result.tracks:
        fail(f"{input}: no face found in any frame; the video was written unedited", code=1)
    if result.missing:
        fail(f"{input}: no face {', '.join(map(str, result.missing))} (its faces: "
             f"{', '.join(str(t.id) for t in result.tracks)}); the others were edited", code=1)
