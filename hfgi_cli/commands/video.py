"""`hfgi video`: a clip (or the OUTPUT.pt of an earlier run) in, an edited clip out (``video.edit_video``)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..interrupt import exit_status, stop_on_signals
from .common import (
    BetaOpt,
    CheckpointOpt,
    DetailOpt,
    DeviceOpt,
    DirectionOpt,
    DirectionsOpt,
    NeutralOpt,
    PrecisionOpt,
    QuietOpt,
    TextOpt,
    WeightsDirOpt,
    edit_specs_from_options,
    fail,
    load_for_run,
    note,
    progress,
)

# Typer reads the annotations at run time, so they stay typing.Optional for Python 3.9.
# ruff: noqa: UP045

app = typer.Typer()

@app.command(
    "video",
    help=(
        "Edit the face in a clip with temporally smoothed alignment; writes OUTPUT.mp4 (H.264, the input's "
        "frame rate, size and audio), OUTPUT.pt (per frame W+ before editing, smoothed crop square, face "
        "found) and OUTPUT.distortion.npy (per frame distortion maps, float16, 384 KB a frame).\n\n"
        "INPUT is a video file (anything ffmpeg reads), an animated GIF, a folder of frames (sorted by "
        "name, --fps sets the rate), or an OUTPUT.pt of an earlier run: then the new edit is decoded from "
        "the stored codes on the original frames, without detection or the encoder (the source must still "
        "exist; no new .pt is written).\n\n"
        "One face per video is edited: the largest one at the start, then on every frame the face nearest "
        "to the previous one. Its FFHQ crop square is smoothed over --smooth-window frames (a centred local "
        "quadratic fit; never across a shot cut, detected as a jump of the square beyond 40 % of its side or "
        "1.3x its size); "
        "frames where detection fails take the square from their neighbours (up to 10 frames), others stay "
        "unedited. Memory does not grow with the clip's length. Exit status: 0 ok, 1 the input could not "
        "be read or has no face, 2 usage error, 130 Ctrl-C, 143 SIGTERM (no output is left behind)."
    ),
    epilog=(
        "Examples:  hfgi video clip.mp4 --attr smile --strength 2 -o smile.mp4\n\n"
        "hfgi video clip.mp4 --attr eyeglasses -s 1 --text \"face with curly hair\" -s 4 -o both.mp4\n\n"
        "hfgi video smile.pt --attr age --strength-ramp 0:-3 -o younger.mp4   (no re-inversion)"
    ),
)
def video_command(
    input: Path = typer.Argument(..., help="Video file, GIF, folder of frames, or OUTPUT.pt of an earlier run."),
    out: Path = typer.Option(..., "-o", "--out", help="Output video (.mp4); OUTPUT.pt is written beside it."),
    attr: list[str] = typer.Option(
        [], "--attr", "-a", help="Edit to make (see `hfgi edit --list-attrs`); several are combined into one video."),
    direction: list[Path] = DirectionOpt,
    text: list[str] = TextOpt,
    neutral: Optional[str] = NeutralOpt,
    beta: Optional[float] = BetaOpt,
    detail: float = DetailOpt,
    strength: list[float] = typer.Option(
        [], "--strength", "-s",
        help="Edit strength, the same on every frame: one per --attr, then --direction, then --text (one: for all).",
    ),
    strength_ramp: Optional[str] = typer.Option(
        None, "--strength-ramp", metavar="A:B", help="Strength changing linearly from A (first frame) to B (last)."
    ),
    checkpoint: Optional[Path] = CheckpointOpt,
    weights_dir: Optional[Path] = WeightsDirOpt,
    directions: Optional[Path] = DirectionsOpt,
    batch_size: int = typer.Option(4, "--batch-size", "-b", min=1, help="Frames per model batch."),
    device: str = DeviceOpt,
    precision: str = PrecisionOpt,
    smooth_window: int = typer.Option(
        9, "--smooth-window", min=1, help="Frames (centred) the crop square is smoothed over; 1: no smoothing."
    ),
    latent_smooth: float = typer.Option(
        0.0, "--latent-smooth", min=0.0, max=0.95,
        help="Exponential moving average of W+ over frames: weight of the previous frame (0: off).",
    ),
    fps: Optional[float] = typer.Option(None, "--fps", min=0.1, help="Frame rate of a folder of frames (default 25)."),
    quality: bool = typer.Option(
        False, "--quality",
        help="Also decode each frame's inversion and measure it against the tracked crop (identity distance, "
        "PSNR, SSIM; per frame in OUTPUT.pt, a summary and a warning for frames above 0.6): one more generator "
        "pass a frame. Not for a re-run from OUTPUT.pt.",
    ),
    quiet: bool = QuietOpt,
) -> None:
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
    if out.suffix.lower() != ".mp4":
        fail(f"-o {out}: the output must be an .mp4 file")
    if not input.exists():
        fail(f"{input}: no such file or folder", code=1)
    (spec,) = edit_specs_from_options(attr, strength or [0.0], direction, text, neutral, beta, detail, combine=True)
    model = load_for_run(checkpoint, weights_dir, directions, device, precision, None, [spec])

    from .. import video as hv
    from ..inputs import InputError

    from_latents = input.is_file() and input.suffix.lower() == ".pt"
    if quality and from_latents:
        fail("--quality measures the inversion against the frames' crops: a re-run from OUTPUT.pt has none")
    options = hv.VideoOptions(spec, ramp, batch_size=batch_size, smooth_window=smooth_window,
                              latent_smooth=latent_smooth, fps=fps, quality=quality)
    run = hv.edit_video_from_latents if from_latents else hv.edit_video
    stop = threading.Event()
    signals: list[int] = []
    try:
        with stop_on_signals(stop, signals), progress(
            quiet, TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("frames {task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        ) as bar:
            task = bar.add_task("video", total=None, rate="")

            def report(done: int, total: Optional[int]) -> None:
                elapsed = bar.tasks[task].elapsed or 0.0
                rate = f"{done / elapsed:.1f}/s" if elapsed > 0 else ""
                bar.update(task, completed=done, total=max(total, done) if total else None, rate=rate)

            result = run(model, input, out, options, on_progress=report, stop=stop)
    except KeyboardInterrupt:
        note("interrupted: no output written")
        raise typer.Exit(exit_status(signals[0]) if signals else 130) from None
    except (hv.VideoError, InputError) as exc:
        fail(str(exc), code=1)
    except ValueError as exc:
        fail(str(exc))
    if not quiet:
        written = f"{result.output}" + (f" and {result.latents}" if result.latents else "")
        how = "from stored codes, encoder not run" if result.from_latents else f"{result.shots} shot(s)"
        note(f"wrote {written}: {result.frames} frames, face edited in {result.faces} "
             f"(detected in {result.detected}; {how}), audio {'copied' if result.audio else 'none'}, "
             f"{result.frames / max(result.seconds, 1e-9):.1f} frames/s")
    if result.quality:
        from ..quality import IDENTITY_THRESHOLD, summary_line

        suspect = [(k, q) for k, q in result.quality if q.suspect]
        if suspect:
            k, worst = max(suspect, key=lambda kq: kq[1].identity_distance)
            note(f"warning: {input}: identity distance above {IDENTITY_THRESHOLD} on {len(suspect)} of "
                 f"{len(result.quality)} frames (worst {worst.identity_distance:.2f} at frame {k}): the "
                 f"reconstruction may not look like this person there")
        if not quiet:
            note(str(summary_line([(f"frame {k}", q) for k, q in result.quality], what="frame")))
    if result.faces == 0:
        fail(f"no face found in {input}; the video was written unedited", code=1)
