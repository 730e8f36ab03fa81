"""The `hfgi` command line: argument parsing and reporting only; the work lives in the library."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from . import io as hio
from . import weights as w
from .api import load_model
from .edits import EditError, Editor, EditSpec, check_attribute, list_attributes
from .models.hfgi import HFGI, CheckpointError
from .pipeline import Job, Pipeline, RunOptions, RunSummary, autocast_context

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Edit faces in photos and videos with HFGI (High-Fidelity GAN Inversion, CVPR 2022).",
)
weights_app = typer.Typer(
    no_args_is_help=True,
    help=(
        "Get, find and check the model files. They live in --weights-dir, else $HFGI_HOME, else "
        "./weights when it holds the checkpoint, else $XDG_CACHE_HOME/hfgi (~/.cache/hfgi). "
        "Set HFGI_WEIGHTS_MIRROR=URL to fetch <URL>/<relative path> instead of the official sources. "
        "Exit status: 0 ok, 2 a file is missing, failed to download or failed its checks."
    ),
)
app.add_typer(weights_app, name="weights")

err_console = Console(stderr=True)

# ----------------------------------------------------------------------------- shared options
InputsArg = typer.Argument(
    ...,
    help="Image files, folders (images inside, sorted), .pt latents, or - for paths on stdin (one a line). "
    "Outputs mirror the inputs under OUT: a file given by path keeps its name (x.jpg -> OUT/x.png); "
    "files in a folder keep their path inside it (faces/sub/x.jpg -> OUT/sub/x.png), under the folder's "
    "name when several folders are given (a/x.jpg b/x.jpg -> OUT/a/x.png OUT/b/x.png); "
    "names still clashing get -1, -2 (x.jpg x.png -> OUT/x.png OUT/x-1.png).",
)
OutOpt = typer.Option(..., "-o", "--out", help="Output folder (created if missing).")
CheckpointOpt = typer.Option(
    None, "--checkpoint", "-c", help="HFGI checkpoint (.pt). Default: the one in the weights folder."
)
WeightsDirOpt = typer.Option(
    None, "--weights-dir", help="Folder holding the model files (default: $HFGI_HOME, ./weights, or the user cache)."
)
BatchOpt = typer.Option(
    None, "--batch-size", "-b", min=1,
    help="Faces per model batch (default: 8 on a GPU; 1 on a CPU, where batching brings nothing).",
)
DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda | mps")
PrecisionOpt = typer.Option("fp32", "--precision", help="fp32 (exact) | fp16 | bf16 (autocast; fp16 needs a GPU).")
AlignedOpt = typer.Option(
    False, "--aligned/--detect",
    help="--aligned: inputs are FFHQ-aligned face crops, used as they are (crop in, crop out). "
    "Default: find every face, align it, edit it and paste it back into the photo.",
)
SaveCropsOpt = typer.Option(False, "--save-crops", help="Also write each face's edited aligned crop (PNG).")
MaxFacesOpt = typer.Option(None, "--max-faces", min=1, help="At most N faces per photo (the largest).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Redo inputs whose outputs already exist.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bar.")
JsonOpt = typer.Option(False, "--json", help="One JSON object per input on stdout (and nothing else there).")


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _print_error(message: str) -> None:
    """One line on stderr; the message is plain text (a file named '[x].jpg' is not markup)."""
    err_console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _write_stdout(line: str) -> None:
    """Write one line of --json output; if the reader went away (`| head -1`), drop the rest quietly."""
    try:
        sys.stdout.write(line)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the run goes on; its reports (and the exit flush) go nowhere
        os.close(devnull)


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet or not err_console.is_terminal,
        transient=False,
    )


def _load_model_and_editor(
    checkpoint: Optional[Path],
    weights_dir: Optional[Path],
    directions: Optional[Path],
    device: str,
    precision: str,
    edits: list[EditSpec],
) -> tuple[HFGI, Optional[Editor]]:
    """Everything that can refuse a run, checked before any input is touched (exit 2 on failure):
    the precision, the attribute names, the checkpoint, the device, and every edit's direction file."""
    if precision not in ("fp32", "fp16", "bf16"):
        fail(f"--precision must be fp32, fp16 or bf16, not {precision!r}")
    try:
        for spec in edits:
            if not spec.direction_file:
                check_attribute(spec.attr)
        model = load_model(checkpoint, weights_dir, device=device)
        autocast_context(model.device, precision)  # refuses fp16 on a CPU before any work
        editor = None
        if edits:
            from_folder = [spec.attr for spec in edits if not spec.direction_file]
            folder = w.resolve_directions_dir(directions, weights_dir, from_folder) if from_folder else None
            editor = Editor(folder, model.n_latent, model.config.style_dim, model.config.domain)
            for spec in edits:
                editor.check(spec)
    except (CheckpointError, EditError, w.WeightsError, ValueError) as exc:
        fail(str(exc))
    return model, editor


def _run(
    description: str,
    inputs: list[str],
    options: RunOptions,
    checkpoint: Optional[Path],
    weights_dir: Optional[Path],
    directions: Optional[Path],
    device: str,
    quiet: bool,
    as_json: bool,
) -> NoReturn:
    """Load the model, check every edit up front, then stream the inputs through the pipeline."""
    labels = [spec.label for spec in options.edits]
    if len(set(labels)) != len(labels):
        fail(f"the same edit is asked for twice ({', '.join(sorted({x for x in labels if labels.count(x) > 1}))})")
    items, problems = hio.collect_inputs(inputs, sys.stdin, exclude=options.out_dir)
    model, editor = _load_model_and_editor(checkpoint, weights_dir, directions, device, options.precision,
                                           options.edits)
    if not options.batch_size:
        options.batch_size = 1 if model.device.type == "cpu" else 8
    for problem in problems:
        _print_error(problem)
        if as_json:
            report = {"input": getattr(problem, "path", problem), "outputs": [], "faces": 0, "status": "error",
                      "error": str(problem), "seconds": 0.0}
            _write_stdout(json.dumps(report) + "\n")
    if not items:
        fail("no inputs to process", code=2 if not problems else 1)

    pipeline = Pipeline(model, editor, options)
    jobs = [Job(item) for item in items]
    lock = threading.Lock()
    with _progress(quiet) as progress:
        task = progress.add_task(description, total=len(jobs), rate="")

        def on_done(job: Job) -> None:
            with lock:
                for note in job.notes:
                    progress.console.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)
                if job.status == "error":
                    _print_error(str(job.error))
                if as_json:
                    _write_stdout(json.dumps(job.report()) + "\n")
                progress.advance(task)
                elapsed = progress.tasks[task].elapsed or 0.0
                done = progress.tasks[task].completed
                if elapsed > 0:
                    progress.update(task, rate=f"{done / elapsed:.2f} img/s")

        summary = pipeline.run(jobs, on_done)
    _print_summary(summary, quiet, extra_failures=len(problems))
    code = summary.exit_code
    if code == 0 and problems:
        code = 1
    raise typer.Exit(code)


def _print_summary(summary: RunSummary, quiet: bool, extra_failures: int = 0) -> None:
    counts: dict[str, int] = {}
    for job in summary.jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    failed = counts.get("error", 0) + extra_failures
    parts = [f"{counts.get('ok', 0)} done"]
    if counts.get("skipped"):
        parts.append(f"{counts['skipped']} already done (skipped; --overwrite redoes them)")
    if failed:
        parts.append(f"{failed} failed")
    if summary.interrupted:
        parts.append(f"{counts.get('pending', 0)} not started (interrupted)")
    if not quiet or failed or summary.interrupted:
        err_console.print(", ".join(parts), highlight=False)


# ----------------------------------------------------------------------------- commands
@app.command(
    epilog="Example: hfgi invert photos/ -o out   |   hfgi invert crops/ -o out --aligned --batch-size 8",
)
def invert(
    inputs: list[str] = InputsArg,
    out: Path = OutOpt,
    checkpoint: Optional[Path] = CheckpointOpt,
    weights_dir: Optional[Path] = WeightsDirOpt,
    batch_size: Optional[int] = BatchOpt,
    device: str = DeviceOpt,
    precision: str = PrecisionOpt,
    aligned: bool = AlignedOpt,
    save_crops: bool = SaveCropsOpt,
    max_faces: Optional[int] = MaxFacesOpt,
    overwrite: bool = OverwriteOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Reconstruct faces with HFGI.

    Photos: OUT/<name>.<ext> with every face replaced by its reconstruction, and OUT/<name>_<k>.pt
    (latent, distortion map, alignment) per face k. With --aligned: OUT/<name>.png (the full
    resolution reconstruction of the crop) and OUT/<name>.pt.
    """
    options = RunOptions(out, [], batch_size=batch_size or 0, aligned=aligned, overwrite=overwrite,
                         precision=precision, save_crops=save_crops, max_faces=max_faces)
    _run("invert", inputs, options, checkpoint, weights_dir, None, device, quiet, as_json)


def _list_attrs_callback(value: bool) -> None:
    if not value:
        return
    table = Table(title="Edit attributes")
    for col in ("attribute", "kind", "default range"):
        table.add_column(col)
    for row in list_attributes():
        table.add_row(*row)
    Console().print(table)
    raise typer.Exit(0)


@app.command(
    epilog="Example: hfgi edit photos/ --attr smile --strength 2 --attr age --strength -3 -o out",
)
def edit(
    inputs: list[str] = InputsArg,
    out: Path = OutOpt,
    attr: list[str] = typer.Option([], "--attr", "-a", help="Attribute to edit (repeatable; see --list-attrs)."),
    strength: list[float] = typer.Option(
        [], "--strength", "-s", help="Strength for each --attr/--direction, in order (one value: for all)."
    ),
    direction: list[Path] = typer.Option(
        [], "--direction", help="Custom direction file (.pt/.npy; 512, 1x512 or n_latent x 512)."
    ),
    directions: Optional[Path] = typer.Option(
        None, "--directions", help="Directions folder (interfacegan/, ganspace/). Default: the weights folder."
    ),
    checkpoint: Optional[Path] = CheckpointOpt,
    weights_dir: Optional[Path] = WeightsDirOpt,
    batch_size: Optional[int] = BatchOpt,
    device: str = DeviceOpt,
    precision: str = PrecisionOpt,
    aligned: bool = AlignedOpt,
    save_crops: bool = SaveCropsOpt,
    max_faces: Optional[int] = MaxFacesOpt,
    overwrite: bool = OverwriteOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
    list_attrs: bool = typer.Option(
        False, "--list-attrs", is_eager=True, callback=_list_attrs_callback, help="List the attributes and exit."
    ),
) -> None:
    """Edit faces: one output per --attr/--strength pair, all sharing one encoding of each image.

    Outputs are named after the input and the edit: OUT/<name>_smile+2.<ext> (photos, faces
    pasted back, one OUT/<name>_smile+2_<k>.pt per face) or OUT/<name>_smile+2.png/.pt (--aligned).
    """
    specs = _edit_specs(attr, strength, direction)
    options = RunOptions(out, specs, batch_size=batch_size or 0, aligned=aligned, overwrite=overwrite,
                         precision=precision, save_crops=save_crops, max_faces=max_faces)
    _run("edit", inputs, options, checkpoint, weights_dir, directions, device, quiet, as_json)


def _edit_specs(attrs: list[str], strengths: list[float], directions: list[Path]) -> list[EditSpec]:
    wanted: list[tuple[str, str | None]] = [(a, None) for a in attrs] + [(p.stem, str(p)) for p in directions]
    if not wanted:
        fail("give at least one --attr NAME (see --list-attrs) or --direction FILE")
    if len(strengths) == 1 and len(wanted) > 1:
        strengths = strengths * len(wanted)
    if not strengths:
        strengths = [1.0] * len(wanted)
    if len(strengths) != len(wanted):
        fail(f"{len(wanted)} edits but {len(strengths)} --strength values; give one per edit (or one for all)")
    return [EditSpec(name, s, file) for (name, file), s in zip(wanted, strengths)]


WEIGHTS_DIR_HELP = "Folder of the model files (default: $HFGI_HOME, ./weights, or the user cache)."
EXIT_WEIGHTS = 2

# Typer reads these annotations at run time, so they stay typing.Optional/List for Python 3.9.
WeightsDirOption = typer.Option(None, "--weights-dir", help=WEIGHTS_DIR_HELP, file_okay=False)


def _weights_fail(exc: Exception) -> typer.Exit:
    """One plain line on stderr (no rich wrapping, no traceback) and the weights exit status."""
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(EXIT_WEIGHTS)


def _human(size: Optional[int]) -> str:  # noqa: UP045
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


@weights_app.command("path", epilog="Example: hfgi weights path --weights-dir ~/models/hfgi")
def weights_path(weights_dir: Optional[Path] = WeightsDirOption) -> None:  # noqa: UP045
    """Print the weights folder in use (it may not exist yet)."""
    typer.echo(str(w.resolve_weights_dir(weights_dir)))


@weights_app.command("list", epilog="Example: hfgi weights list --weights-dir ./weights")
def weights_list(weights_dir: Optional[Path] = WeightsDirOption) -> None:  # noqa: UP045
    """Show every model file: present or missing, size, and whether it checks out."""
    folder, why = w.locate_weights_dir(weights_dir)
    table = Table(title=f"model files in {folder}", caption=f"folder chosen by: {why}")
    table.add_column("name", no_wrap=True)
    table.add_column("file", overflow="fold")
    table.add_column("present", no_wrap=True)
    table.add_column("size", no_wrap=True, justify="right")
    table.add_column("verified", overflow="fold", min_width=12)
    packages = {p.name: p.package for p in w.load_manifest().packaged}
    for row in w.list_files(weights_dir):
        if row.name in packages:
            shown = f"packaged: {packages[row.name]}"
        else:
            shown = str(row.path.relative_to(folder)) if row.path else "-"
        present = "[green]present[/]" if row.present else "[red]missing[/]"
        verified = f"[red]{row.verified}[/]" if row.verified.startswith("BAD") else row.verified
        table.add_row(row.name, shown, present, _human(row.size), verified)
    Console().print(table)


def _download_progress(quiet: bool) -> Progress:
    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
    )


@weights_app.command(
    "download",
    epilog="Example: hfgi weights download hfgi_ffhq interfacegan_smile --weights-dir ~/models/hfgi",
)
def weights_download(
    names: Optional[list[str]] = typer.Argument(  # noqa: UP045
        None, help="Files to fetch (see `hfgi weights list`); default: every missing one."
    ),
    weights_dir: Optional[Path] = WeightsDirOption,  # noqa: UP045
    force: bool = typer.Option(False, "--force", help="Fetch again even if the file is present."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Fetch model files, resuming an interrupted download; only checked files are kept."""
    folder = w.resolve_weights_dir(weights_dir)
    manifest = w.load_manifest()
    try:
        entries = [manifest.get(n) for n in names] if names else [
            manifest.get(n) for n in w.missing_names(weights_dir)
        ]
    except w.WeightsError as exc:
        raise _weights_fail(exc) from None
    if not entries:
        typer.echo(f"all model files are present in {folder}")
        return
    failed = 0
    with _download_progress(quiet) as progress:
        for entry in entries:
            dest = folder / entry.path
            if dest.is_file() and not force:
                typer.echo(f"{entry.name}: already present at {dest} (use --force to fetch it again)")
                continue
            task = progress.add_task(entry.name, total=entry.size)

            def report(done: int, total: Optional[int], task: int = task) -> None:  # noqa: UP045
                progress.update(task, completed=done, total=total)

            try:
                path = w.download(entry, folder, force=force, on_progress=report)
                result = w.verify_file(path, entry)
            except w.NetworkError as exc:
                progress.stop()
                raise _weights_fail(exc) from None
            except w.WeightsError as exc:
                typer.echo(f"error: {exc}", err=True)
                failed += 1
                continue
            typer.echo(f"{entry.name}: saved {path} ({result.status})")
    if failed:
        raise typer.Exit(EXIT_WEIGHTS)


@weights_app.command(
    "verify",
    epilog="Example: hfgi weights verify hfgi_ffhq   |   hfgi weights verify ~/Downloads/my_ckpt.pt",
)
def weights_verify(
    file: Optional[str] = typer.Argument(  # noqa: UP045
        None, help="A manifest name or a file path; default: every present file in the weights folder."
    ),
    weights_dir: Optional[Path] = WeightsDirOption,  # noqa: UP045
) -> None:
    """Check files: SHA-256 where known, and structure (checkpoint keys and shapes, direction shapes)."""
    folder = w.resolve_weights_dir(weights_dir)
    manifest = w.load_manifest()
    by_path = {(folder / e.path).absolute(): e for e in manifest.files}
    if file is None:
        targets = [(folder / e.path, e) for e in manifest.files if (folder / e.path).is_file()]
        if not targets:
            raise _weights_fail(w.WeightsMissingError(
                f"no model files in {folder}; fetch them with `{w.fetch_command([], weights_dir)}`"
            ))
    elif file in manifest.names:
        entry = manifest.get(file)
        targets = [(folder / entry.path, entry)]
    else:
        path = Path(file).expanduser()
        targets = [(path, by_path.get(path.absolute()))]
    failed = 0
    for path, entry in targets:
        label = entry.name if entry else str(path)
        try:
            result = w.verify_file(path, entry)
        except w.WeightsError as exc:
            typer.echo(f"error: {entry.name + ': ' if entry else ''}{exc}", err=True)
            failed += 1
            continue
        typer.echo(f"{label}: {result.status} ({result.kind}, {result.detail})")
    if failed:
        raise typer.Exit(EXIT_WEIGHTS)


@app.command(
    "align",
    help=(
        "Find every face and write FFHQ-aligned crops as OUT/<stem>_<k>.png, each with a "
        "<stem>_<k>.json sidecar.\n\n"
        "k counts the faces of one photo from 0, left to right, even when there is only one face. "
        "Faces smaller than an 80 px square (eyes to mouth under ~22 px) are skipped with a note. "
        "A photo without a usable face is reported on stderr (\"no face found in X\"); "
        "the run goes on and exits with status 1."
    ),
    epilog=(
        "Example:  hfgi align photos/ group.jpg -o aligned/ --size 256\n\n"
        "writes aligned/group_0.png, aligned/group_1.png, ... (left to right) and a "
        "group_0.json sidecar beside each crop with the source path and size, the crop quad and "
        "the 68 landmarks."
    ),
)
def align_command(
    inputs: list[Path] = typer.Argument(
        ..., exists=True, help="Photos, or folders of photos (sorted, not recursive)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the crops (created if missing)."),
    size: int = typer.Option(1024, "--size", min=16, help="Side of the aligned crops in pixels."),
    max_faces: Optional[int] = typer.Option(  # noqa: UP045 (typer evaluates it on py3.9)
        None, "--max-faces", min=1, help="Keep at most N faces per photo (the largest ones)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Thin wrapper: the work is ``hfgi_cli.align.align_paths``."""
    from .align import align_paths, collect_images

    paths = collect_images(inputs)
    show = not quiet and err_console.is_terminal
    with Progress(console=err_console, disable=not show, transient=True) as progress:
        task = progress.add_task("aligning", total=len(paths))

        def note(msg: str) -> None:
            if show:
                progress.console.print(msg, markup=False, highlight=False)
            else:
                print(msg, file=sys.stderr, flush=True)

        report = align_paths(
            paths,
            out,
            size,
            max_faces=max_faces,
            on_note=note,
            on_photo_done=lambda _path: progress.advance(task),
        )
    if not quiet:
        print(f"wrote {len(report.written)} face(s) from {len(paths)} photo(s) to {out}", file=sys.stderr)
    if report.failed:
        raise typer.Exit(1)

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
        "be read or has no face, 2 usage error, 130 Ctrl-C (no output is left behind)."
    ),
    epilog=(
        "Examples:  hfgi video clip.mp4 --attr smile --strength 2 -o smile.mp4\n\n"
        "hfgi video smile.pt --attr age --strength-ramp 0:-3 -o younger.mp4   (no re-inversion)"
    ),
)
def video_command(
    input: Path = typer.Argument(..., help="Video file, GIF, folder of frames, or OUTPUT.pt of an earlier run."),
    out: Path = typer.Option(..., "-o", "--out", help="Output video (.mp4); OUTPUT.pt is written beside it."),
    attr: str = typer.Option(..., "--attr", "-a", help="Attribute to edit (see `hfgi edit --list-attrs`)."),
    strength: Optional[float] = typer.Option(None, "--strength", "-s", help="Edit strength, the same on every frame."),
    strength_ramp: Optional[str] = typer.Option(
        None, "--strength-ramp", metavar="A:B", help="Strength changing linearly from A (first frame) to B (last)."
    ),
    checkpoint: Optional[Path] = CheckpointOpt,
    weights_dir: Optional[Path] = WeightsDirOpt,
    directions: Optional[Path] = typer.Option(
        None, "--directions", help="Directions folder (interfacegan/, ganspace/). Default: the weights folder."
    ),
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
    quiet: bool = QuietOpt,
) -> None:
    """Thin wrapper: the work is ``hfgi_cli.video.edit_video``."""
    from . import video as hv

    ramp = None
    if strength_ramp is not None:
        try:
            a, b = (float(v) for v in strength_ramp.split(":"))
        except ValueError:
            fail(f"--strength-ramp takes A:B (two numbers), not {strength_ramp!r}")
        if strength is not None:
            fail("give --strength or --strength-ramp, not both")
        ramp = (a, b)
    elif strength is None:
        fail("give --strength S (or --strength-ramp A:B)")
    if out.suffix.lower() != ".mp4":
        fail(f"-o {out}: the output must be an .mp4 file")
    if not input.exists():
        fail(f"{input}: no such file or folder", code=1)
    options = hv.VideoOptions(attr, strength or 0.0, ramp, batch_size=batch_size, precision=precision,
                              smooth_window=smooth_window, latent_smooth=latent_smooth, fps=fps)
    model, editor = _load_model_and_editor(checkpoint, weights_dir, directions, device, precision,
                                           [EditSpec(attr, 0.0)])
    assert editor is not None
    from_latents = input.is_file() and input.suffix.lower() == ".pt"
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err_console, disable=quiet or not err_console.is_terminal,
    )
    try:
        with progress:
            task = progress.add_task("video", total=None, rate="")

            def report(done: int, total: Optional[int]) -> None:
                elapsed = progress.tasks[task].elapsed or 0.0
                rate = f"{done / elapsed:.1f} frames/s" if elapsed > 0 else ""
                progress.update(task, completed=done, total=max(total, done) if total else None, rate=rate)

            run = hv.edit_video_from_latents if from_latents else hv.edit_video
            result = run(model, editor, input, out, options, on_progress=report)
    except KeyboardInterrupt:
        err_console.print("interrupted: no output written")
        raise typer.Exit(130) from None
    except hv.VideoError as exc:
        fail(str(exc), code=1)
    except hio.InputError as exc:
        fail(str(exc), code=1)
    except (EditError, ValueError) as exc:
        fail(str(exc))
    if not quiet:
        written = f"{result.output}" + (f" and {result.latents}" if result.latents else "")
        how = "from stored codes, encoder not run" if result.from_latents else f"{result.shots} shot(s)"
        err_console.print(
            f"wrote {written}: {result.frames} frames, face edited in {result.faces} "
            f"(detected in {result.detected}; {how}), audio {'copied' if result.audio else 'none'}, "
            f"{result.frames / max(result.seconds, 1e-9):.1f} frames/s",
            highlight=False, soft_wrap=True,
        )
    if result.faces == 0:
        err_console.print(f"[red]error:[/] no face found in {input}; the video was written unedited",
                          highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
