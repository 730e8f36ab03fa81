"""The `hfgi` command line: parsing and reporting only; the work is the library's.

``invert``/``edit`` stream inputs through ``pipeline.Pipeline`` (the engine's stages), ``video``
calls ``video.edit_video``, ``align`` calls ``crops.align_items``, ``weights`` calls ``weights``.
Heavy modules (torch, the model, dlib) are imported inside the commands that need them, so
``hfgi --help`` and ``hfgi weights list`` start at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from . import __version__
from . import weights as w
from .interrupt import stop_on_sigint

if TYPE_CHECKING:
    from .edits import EditSpec
    from .engine import Model
    from .pipeline import Job, RunOptions, RunSummary

# Typer reads the annotations at run time, so they stay typing.Optional for Python 3.9.
# ruff: noqa: UP045

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

EXIT_USAGE = 2
console = Console(stderr=True)
"""The one console: progress, notes, errors and summaries go to stderr; stdout is for data."""


# ----------------------------------------------------------------------------- reporting
def error(message: str) -> None:
    """One plain line on stderr (a file named '[x].jpg' is not markup; no wrapping)."""
    console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def note(message: str) -> None:
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    error(message)
    raise typer.Exit(code)


def progress(quiet: bool, *columns: ProgressColumn) -> Progress:
    """The one progress bar factory (shown only on a terminal, and not with --quiet)."""
    return Progress(*columns, console=console, disable=quiet or not console.is_terminal)


def write_stdout(line: str) -> None:
    """Write one line of --json output; if the reader went away (`| head -1`), drop the rest quietly."""
    try:
        sys.stdout.write(line)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the run goes on; its reports (and the exit flush) go nowhere
        os.close(devnull)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"hfgi {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_version_callback, help="Print the version and exit."
    ),
) -> None:
    """Edit faces in photos and videos with HFGI (High-Fidelity GAN Inversion, CVPR 2022)."""


# ----------------------------------------------------------------------------- shared options
InputsArg = typer.Argument(
    ...,
    help="Image files, folders (images inside, sorted), .pt latents, or - for paths on stdin (one a line). "
    "Outputs mirror the inputs under OUT: a file given by path keeps its name (x.jpg -> OUT/x.png); "
    "files in a folder keep their path inside it (faces/sub/x.jpg -> OUT/sub/x.png), under the folder's "
    "name when several folders are given (a/x.jpg b/x.jpg -> OUT/a/x.png OUT/b/x.png); "
    "names still clashing get -1, -2 (x.jpg x.png -> OUT/x.png OUT/x-1.png). With --ray also "
    "URIs (s3://, gs://, file://).",
)
OutOpt = typer.Option(..., "-o", "--out", help="Output folder (created if missing); with --ray also a URI.")
CheckpointOpt = typer.Option(
    None, "--checkpoint", "-c", help="HFGI checkpoint (.pt). Default: the one in the weights folder."
)
WeightsDirOpt = typer.Option(
    None, "--weights-dir", help="Folder holding the model files (default: $HFGI_HOME, ./weights, or the user cache)."
)
DirectionsOpt = typer.Option(
    None, "--directions", help="Directions folder (interfacegan/, ganspace/). Default: the weights folder."
)
DirectionOpt = typer.Option(
    [], "--direction", help="Custom direction file (.pt/.npy; 512, 1x512 or n_latent x 512)."
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
FacesOpt = typer.Option(
    None, "--faces", metavar="K,K,...",
    help="Edit only these faces of each photo (indices in reading order, as `hfgi align` numbers them); "
    "the others stay untouched.",
)
MinFaceOpt = typer.Option(
    None, "--min-face", min=80,
    help="Smallest face searched for, as its FFHQ crop side in photo pixels (default: 128 px and 4 % of "
    "the photo's long side; faces under 80 px are never used). Smaller finds smaller faces in big photos, "
    "at more detection time. Face numbers (--faces) count the faces found with the same --min-face and "
    "--max-faces.",
)
LatentsOpt = typer.Option(
    "full", "--latents",
    help="Latent files beside the outputs: full (W+ codes and the float16 distortion map: any later edit "
    "from the file, no encoder), codes (the W+ codes only, ~75 KB for the published model), none.",
)
PreviewOpt = typer.Option(
    False, "--preview", help="Also write OUT/<name>_preview.jpg: original (faces boxed), inversion, each edit."
)
QualityOpt = typer.Option(
    False, "--quality",
    help="Measure how faithful each face's inversion is: identity distance (dlib face recognition; above 0.6 "
    "it may not pass for the same person, and a warning names the face), PSNR and SSIM on the aligned 256 px "
    "crop; in the .pt files, the --json lines and the summary. Costs ~0.2 s a face on a CPU (~5 % of an "
    "inversion); an edit also decodes the inversion for it (one more generator pass a face).",
)
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bar.")
JsonOpt = typer.Option(False, "--json", help="One JSON object per input on stdout (and nothing else there).")
RayOpt = typer.Option(
    False, "--ray",
    help="Run on a Ray cluster: --ray-address, else $RAY_ADDRESS, else one started with `ray start` on this "
    "machine, else a local one for the run. Detection on CPU tasks, the model on one actor per GPU (CPU actors "
    "without GPUs); the same outputs, --json lines and exit status. INPUT and OUT may be URIs (s3://, gs://, "
    "file://). Needs `pip install 'hfgi-cli[ray]'`.",
)
RayAddressOpt = typer.Option(None, "--ray-address", metavar="ADDR", help="With --ray: the cluster to join.")
WorkersOpt = typer.Option(
    None, "--workers", min=1,
    help="With --ray: model actors (default: one per GPU of the cluster; without GPUs, one per 8 of half its CPUs).",
)


# ----------------------------------------------------------------------------- model and edits
def _load(
    checkpoint: Optional[Path],
    weights_dir: Optional[Path],
    directions: Optional[Path],
    device: str,
    precision: str,
    batch_size: Optional[int],
    edits: list[EditSpec],
) -> Model:
    """Everything that can refuse a run, checked before any input is touched (exit 2 on failure):
    the precision, the attribute names, the checkpoint, the device, and every edit's direction file."""
    from .edits import EditError, check_names
    from .engine import load_model
    from .models.hfgi import CheckpointError

    try:
        check_names(edits)  # unknown names and duplicates fail before the checkpoint is read
        model = load_model(checkpoint, device=device, precision=precision, directions=directions,
                           weights_dir=weights_dir, batch_size=batch_size)
        model.edit_specs(edits)
    except (CheckpointError, EditError, w.WeightsError, ValueError) as exc:
        fail(str(exc))
    return model


def _edit_specs(attrs: list[str], strengths: list[float], directions: list[Path]) -> list[EditSpec]:
    from .edits import EditSpec

    wanted: list[tuple[str, Optional[str]]] = [(a, None) for a in attrs] + [(p.stem, str(p)) for p in directions]
    if not wanted:
        fail("give at least one --attr NAME (see --list-attrs) or --direction FILE")
    if len(strengths) == 1 and len(wanted) > 1:
        strengths = strengths * len(wanted)
    if not strengths:
        strengths = [1.0] * len(wanted)
    if len(strengths) != len(wanted):
        fail(f"{len(wanted)} edits but {len(strengths)} --strength values; give one per edit (or one for all)")
    return [EditSpec(name, s, file) for (name, file), s in zip(wanted, strengths)]


def _face_indices(text: Optional[str], aligned: bool) -> Optional[list[int]]:
    """--faces K,K (for photos; an aligned crop or a latent file is one face)."""
    if text is None:
        return None
    if aligned:
        fail("--faces picks faces of photos; with --aligned each input is one face")
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"--faces takes face indices separated by commas (e.g. 0,2), not {text!r}")
    if not indices or min(indices) < 0:
        fail(f"--faces takes face indices from 0 (e.g. 0,2), not {text!r}")
    return indices


def _sweep(text: str) -> Any:
    """``attr=from:to:count`` -> pipeline.Sweep."""
    from .edits import EditError, check_attribute
    from .pipeline import Sweep

    attr, _, span = text.partition("=")
    try:
        start, stop, count = span.split(":")
        a, b, n = float(start), float(stop), int(count)
    except ValueError:
        fail(f"--sweep takes ATTR=FROM:TO:COUNT (e.g. smile=-3:3:7), not {text!r}")
    if not 2 <= n <= 25:
        fail(f"--sweep: COUNT must be 2..25, not {n}")
    if a == b:
        fail(f"--sweep: FROM and TO must differ, not both {a:g}")
    try:
        check_attribute(attr)
    except EditError as exc:
        fail(f"--sweep: {exc}")
    return Sweep(attr, tuple(round(a + (b - a) * k / (n - 1), 6) for k in range(n)))


# ----------------------------------------------------------------------------- invert / edit
def _latents(mode: str) -> str:
    from .pipeline import LATENT_MODES

    if mode not in LATENT_MODES:
        fail(f"--latents must be one of {', '.join(LATENT_MODES)}, not {mode!r}")
    return mode


def _run(description: str, inputs: list[str], options: RunOptions, model_args: dict[str, Any], quiet: bool,
         as_json: bool, edits: Optional[list[EditSpec]] = None, ray: Optional[dict[str, Any]] = None,
         out: Optional[str] = None) -> NoReturn:
    """Load the model, check every edit up front, then stream the inputs through the pipeline (or,
    with ``ray`` (``run_on_ray``'s address and workers), run it on a Ray cluster). ``out``: -o as
    given (a URI, with --ray)."""
    from .inputs import collect_inputs
    from .pipeline import Pipeline
    from .remote import is_uri

    uris = [text for text in [*inputs, out or ""] if is_uri(text)]
    if ray is None and uris:
        fail(f"{uris[0]}: URIs (s3://, gs://, file://...) can be used with --ray only")
    out_uri = _out_uri(out) if ray is not None and out is not None and is_uri(out) else None
    items, problems = collect_inputs(inputs, sys.stdin, exclude=out_uri or options.out_dir, uris=ray is not None)
    # with --ray the actors load the model for their device; this copy checks it, on the CPU
    local_args = model_args if ray is None else {**model_args, "device": "cpu", "precision": "fp32"}
    model = _load(**local_args, edits=edits or options.edits)
    for problem in problems:
        error(problem)
        if as_json:
            write_stdout(json.dumps({"input": problem.path, "outputs": [], "faces": 0, "status": "error",
                                     "error": str(problem), "seconds": 0.0, "quality": None}) + "\n")
    if not items:
        fail("no inputs to process", code=2 if not problems else 1)

    status = RunStatus(description, len(items))
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    with progress(quiet, *columns) as bar, status.ticking(quiet or console.is_terminal):
        task = bar.add_task(description, total=len(items), status="")

        def on_done(job: Job) -> None:
            with status.lock:
                for line in job.notes:
                    note(f"note: {line}")
                for line in job.warnings():
                    note(f"warning: {line}")
                if job.status == "error":
                    error(str(job.error))
                if as_json:
                    write_stdout(json.dumps(job.report()) + "\n")
                status.count(job)
                bar.update(task, completed=status.done, status=status.text(short=True))

        if ray is None:
            summary = Pipeline(model, options).run(items, on_done)
        else:
            from .ray import ClusterError, run_on_ray

            try:
                summary = run_on_ray(model, options, items, on_done, model_args=model_args, out_uri=out_uri, **ray)
            except ClusterError as exc:  # cannot be joined, or cannot run the model as asked
                fail(str(exc))
    _print_summary(summary, quiet, extra_failures=len(problems))
    raise typer.Exit(summary.exit_code if summary.exit_code or not problems else 1)


def _ray_options(use_ray: bool, address: Optional[str], workers: Optional[int]) -> Optional[dict[str, Any]]:
    """--ray's arguments for ``run_on_ray``; without Ray installed, the install hint (exit 2)."""
    if not use_ray:
        if address is not None or workers is not None:
            fail("--ray-address and --workers go with --ray")
        return None
    from importlib.util import find_spec

    if find_spec("ray") is None:
        fail("--ray needs Ray: pip install 'hfgi-cli[ray]'")
    return {"address": address, "workers": workers}


def _out_uri(out: str) -> str:
    """-o as a URI (``remote``), checked: pyarrow can use it, and it is no file."""
    from . import remote

    try:
        remote.Folder(out)
        taken = remote.exists(out)
    except OSError as exc:
        fail(f"-o {exc}")
    if taken:
        fail(f"-o {out}: is a file, not a folder")
    return out


class RunStatus:
    """Counts of a run for the progress bar and, when stderr is no terminal, a status line at least
    every ``every`` seconds (a long run must not look stuck in a log).

    The time left is estimated from the inputs that were processed (skipped ones take no time)."""

    def __init__(self, what: str, total: int, every: float = 30.0) -> None:
        self.what, self.total, self.every = what, total, every
        self.lock = threading.Lock()
        self.done = self.processed = self.faces = 0
        self.started = time.monotonic()
        self._stop = threading.Event()

    def count(self, job: Job) -> None:
        self.done += 1
        self.faces += job.n_faces
        self.processed += job.status in ("ok", "error")

    def text(self, short: bool = False) -> str:
        elapsed = time.monotonic() - self.started
        parts = [f"{self.faces} face{'s' * (self.faces != 1)}"]
        if self.processed and elapsed > 0:
            parts.append(f"{self.processed / elapsed:.2f} img/s")
            left = (self.total - self.done) * elapsed / self.processed
            parts.append(f"~{_duration(left)} left" if self.done < self.total else "")
        line = ", ".join(p for p in parts if p)
        return line if short else f"{self.what}: {self.done}/{self.total} inputs, {line}"

    @contextlib.contextmanager
    def ticking(self, silent: bool) -> Iterator[None]:
        if silent:
            yield
            return

        def tick() -> None:
            while not self._stop.wait(self.every):
                with self.lock:
                    note(self.text())

        thread = threading.Thread(target=tick, daemon=True, name="hfgi-status")
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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
        note(", ".join(parts))
    from .quality import summary_line

    measured = summary_line([(f"{job.item.source} face {k}", q) for job in summary.jobs for k, q in job.quality or []])
    if measured and not quiet:
        note(measured)


@app.command(
    epilog="Example: hfgi invert photos/ -o out   |   hfgi invert crops/ -o out --aligned --batch-size 8",
)
def invert(
    inputs: list[str] = InputsArg,
    out: str = OutOpt,
    checkpoint: Optional[Path] = CheckpointOpt,
    weights_dir: Optional[Path] = WeightsDirOpt,
    batch_size: Optional[int] = BatchOpt,
    device: str = DeviceOpt,
    precision: str = PrecisionOpt,
    aligned: bool = AlignedOpt,
    save_crops: bool = SaveCropsOpt,
    max_faces: Optional[int] = MaxFacesOpt,
    faces: Optional[str] = FacesOpt,
    min_face: Optional[float] = MinFaceOpt,
    latents: str = LatentsOpt,
    preview: bool = PreviewOpt,
    quality: bool = QualityOpt,
    overwrite: bool = OverwriteOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
    use_ray: bool = RayOpt,
    ray_address: Optional[str] = RayAddressOpt,
    workers: Optional[int] = WorkersOpt,
) -> None:
    """Reconstruct faces with HFGI.

    Photos: OUT/<name>.<ext> with every face replaced by its reconstruction, and OUT/<name>_<k>.pt
    (latent, distortion map, alignment) per face k. With --aligned: OUT/<name>.png (the full
    resolution reconstruction of the crop) and OUT/<name>.pt.
    """
    from .pipeline import RunOptions

    options = RunOptions(Path(out), [], aligned=aligned, overwrite=overwrite, save_crops=save_crops,
                         max_faces=max_faces, faces=_face_indices(faces, aligned), min_face=min_face,
                         latents=_latents(latents), preview=preview, quality=quality)
    model_args = dict(checkpoint=checkpoint, weights_dir=weights_dir, directions=None, device=device,
                      precision=precision, batch_size=batch_size)
    _run("invert", inputs, options, model_args, quiet, as_json, ray=_ray_options(use_ray, ray_address, workers),
         out=out)


def _list_attrs_callback(value: bool) -> None:
    if not value:
        return
    from .edits import list_attributes

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
    out: str = OutOpt,
    attr: list[str] = typer.Option([], "--attr", "-a", help="Attribute to edit (repeatable; see --list-attrs)."),
    strength: list[float] = typer.Option(
        [], "--strength", "-s", help="Strength for each --attr/--direction, in order (one value: for all)."
    ),
    direction: list[Path] = DirectionOpt,
    directions: Optional[Path] = DirectionsOpt,
    checkpoint: Optional[Path] = CheckpointOpt,
    weights_dir: Optional[Path] = WeightsDirOpt,
    batch_size: Optional[int] = BatchOpt,
    device: str = DeviceOpt,
    precision: str = PrecisionOpt,
    aligned: bool = AlignedOpt,
    save_crops: bool = SaveCropsOpt,
    max_faces: Optional[int] = MaxFacesOpt,
    faces: Optional[str] = FacesOpt,
    min_face: Optional[float] = MinFaceOpt,
    latents: str = LatentsOpt,
    preview: bool = PreviewOpt,
    sweep: Optional[str] = typer.Option(
        None, "--sweep", metavar="ATTR=FROM:TO:COUNT",
        help="Instead of edited photos: one encoding, then per face a labelled grid OUT/<name>_sweep-ATTR_<k>.jpg "
        "of the edit at COUNT strengths from FROM to TO, to pick a strength by eye (e.g. smile=-3:3:7).",
    ),
    quality: bool = QualityOpt,
    overwrite: bool = OverwriteOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
    use_ray: bool = RayOpt,
    ray_address: Optional[str] = RayAddressOpt,
    workers: Optional[int] = WorkersOpt,
    list_attrs: bool = typer.Option(
        False, "--list-attrs", is_eager=True, callback=_list_attrs_callback, help="List the attributes and exit."
    ),
) -> None:
    """Edit faces: one output per --attr/--strength pair, all sharing one encoding of each image.

    Outputs are named after the input and the edit: OUT/<name>_smile+2.<ext> (photos, faces
    pasted back, one OUT/<name>_smile+2_<k>.pt per face) or OUT/<name>_smile+2.png/.pt (--aligned).
    """
    from .pipeline import RunOptions

    if sweep is not None:
        if attr or direction or strength:
            fail("give --sweep alone, or --attr/--direction with --strength, not both")
        if preview or save_crops or latents != "full" or quality:
            fail("--sweep writes only its grids: drop --preview, --save-crops, --latents and --quality")
        sweep_spec = _sweep(sweep)
        specs = sweep_spec.specs
    else:
        sweep_spec, specs = None, _edit_specs(attr, strength, direction)
    options = RunOptions(Path(out), [] if sweep_spec else specs, aligned=aligned, overwrite=overwrite,
                         save_crops=save_crops, max_faces=max_faces, faces=_face_indices(faces, aligned),
                         min_face=min_face, latents=_latents(latents), preview=preview, sweep=sweep_spec,
                         quality=quality)
    model_args = dict(checkpoint=checkpoint, weights_dir=weights_dir, directions=directions, device=device,
                      precision=precision, batch_size=batch_size)
    _run("edit", inputs, options, model_args, quiet, as_json, specs, ray=_ray_options(use_ray, ray_address, workers),
         out=out)


# ----------------------------------------------------------------------------- align
@app.command(
    "align",
    help=(
        "Find every face and write FFHQ-aligned crops as OUT/<stem>_<k>.png, each with a "
        "<stem>_<k>.json sidecar.\n\n"
        "k counts the faces of one photo from 0 in reading order (rows top to bottom, each left to right), "
        "even when there is only one face; with more than ten faces it is zero-padded (_00, _01, ...) so "
        "names sort. "
        "Faces are searched down to an FFHQ square of 128 px and 4 % of the photo's long side (--min-face "
        "searches smaller ones); found faces under 80 px (eyes to mouth under ~22 px) are skipped with a note. "
        "Folders are searched recursively and laid out under OUT as for `hfgi invert`. "
        "A photo without a usable face is reported on stderr (\"no face found in X\"); "
        "the run goes on and exits with status 1."
    ),
    epilog=(
        "Example:  hfgi align photos/ group.jpg -o aligned/ --size 256\n\n"
        "writes aligned/group_0.png, aligned/group_1.png, ... (in reading order) and a "
        "group_0.json sidecar beside each crop with the source path and size, the crop quad and "
        "the 68 landmarks."
    ),
)
def align_command(
    inputs: list[str] = typer.Argument(..., help="Photos, or folders of photos, or - for paths on stdin."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the crops (created if missing)."),
    size: int = typer.Option(1024, "--size", min=16, help="Side of the aligned crops in pixels."),
    max_faces: Optional[int] = typer.Option(
        None, "--max-faces", min=1, help="Keep at most N faces per photo (the largest ones)."
    ),
    min_face: Optional[float] = MinFaceOpt,
    quiet: bool = QuietOpt,
) -> None:
    from .crops import align_items
    from .inputs import collect_inputs

    items, problems = collect_inputs(inputs, sys.stdin, exclude=out, latents=False)
    for problem in problems:
        error(problem)
    with progress(quiet, TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()) as bar:
        task = bar.add_task("aligning", total=len(items))
        report = align_items(items, out, size, max_faces=max_faces, min_face=min_face, on_note=note,
                             on_photo_done=lambda _path: bar.advance(task))
    if not quiet:
        note(f"wrote {len(report.written)} face(s) from {len(items)} photo(s) to {out}")
    if report.failed or problems:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- video
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
    attr: Optional[str] = typer.Option(None, "--attr", "-a", help="Attribute to edit (see `hfgi edit --list-attrs`)."),
    direction: Optional[Path] = typer.Option(
        None, "--direction", help="Custom direction file instead of --attr (.pt/.npy; 512, 1x512 or n_latent x 512)."
    ),
    strength: Optional[float] = typer.Option(None, "--strength", "-s", help="Edit strength, the same on every frame."),
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
        if strength is not None:
            fail("give --strength or --strength-ramp, not both")
        ramp = (a, b)
    elif strength is None:
        fail("give --strength S (or --strength-ramp A:B)")
    if (attr is None) == (direction is None):
        fail("give one edit: --attr NAME or --direction FILE")
    if out.suffix.lower() != ".mp4":
        fail(f"-o {out}: the output must be an .mp4 file")
    if not input.exists():
        fail(f"{input}: no such file or folder", code=1)
    (spec,) = _edit_specs([attr] if attr else [], [strength or 0.0], [direction] if direction else [])
    model = _load(checkpoint, weights_dir, directions, device, precision, None, [spec])

    from . import video as hv
    from .inputs import InputError

    from_latents = input.is_file() and input.suffix.lower() == ".pt"
    if quality and from_latents:
        fail("--quality measures the inversion against the frames' crops: a re-run from OUTPUT.pt has none")
    options = hv.VideoOptions(spec, ramp, batch_size=batch_size, smooth_window=smooth_window,
                              latent_smooth=latent_smooth, fps=fps, quality=quality)
    run = hv.edit_video_from_latents if from_latents else hv.edit_video
    stop = threading.Event()
    try:
        with stop_on_sigint(stop), progress(
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
        raise typer.Exit(130) from None
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
        from .quality import IDENTITY_THRESHOLD, summary_line

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


# ----------------------------------------------------------------------------- eval
EVAL_COLUMNS = ("psnr", "ssim", "ms_ssim", "identity_distance", "lpips", "tl_id", "tg_id", "flicker",
                "source_flicker")


def _lpips(download: bool) -> Any:
    """LPIPS, or None (with one note) when its weights are not on disk and not to be fetched."""
    from .quality import LPIPS_WEIGHTS_URL, Lpips, lpips_weights

    try:
        return Lpips(download=download)
    except FileNotFoundError:
        note(f"note: LPIPS not computed (null): its AlexNet weights are not in {lpips_weights()}; "
             f"--download-lpips fetches them (233 MB) from {LPIPS_WEIGHTS_URL}")
    except Exception as exc:  # a failed download: the other numbers are still worth having
        note(f"note: LPIPS not computed (null): {str(exc).splitlines()[0][:160] if str(exc) else exc}")
    return None


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "inf" if value == float("inf") else f"{value:.{digits}f}"
    return str(value)


def _eval_rows(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A pair, then its faces (for the table and the CSV)."""
    yield {"original": record["original"], "result": record["result"], "face": "",
           **{k: record.get(k) for k in EVAL_COLUMNS}}
    for face in record.get("faces", []):
        yield {"original": record["original"], "result": record["result"], "face": face["face"],
               **{k: face.get(k) for k in EVAL_COLUMNS}}


def _eval_summary(records: list[dict[str, Any]]) -> Table:
    import numpy as np

    table = Table(title=f"summary over {len(records)} pair{'s' * (len(records) != 1)}")
    for col in ("", "PSNR dB", "SSIM", "MS-SSIM", "ID dist", "LPIPS"):
        table.add_column(col, justify="right")
    finite = {k: [r[k] for r in records if isinstance(r.get(k), float) and np.isfinite(r[k])] for k in EVAL_COLUMNS}
    for name, fn in (("mean", np.mean), ("median", np.median)):
        table.add_row(name, *(_cell(float(fn(finite[k])), 2 if k == "psnr" else 3) if finite[k] else "-"
                              for k in EVAL_COLUMNS[:5]))
    return table


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    import csv
    import io

    from .atomic import write_bytes

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["original", "result", "face", *EVAL_COLUMNS])
    writer.writeheader()
    for record in records:
        for row in _eval_rows(record):
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    write_bytes(path, buf.getvalue().encode())


@app.command(
    "eval",
    help=(
        "How far results are from their originals: per pair and per face PSNR, SSIM, MS-SSIM (whole image; "
        "faces: the original's FFHQ square cut from both at 256 px), dlib identity distance (below 0.6: the "
        "same person) and LPIPS (AlexNet; when its weights are on disk); a table and a summary (mean, median, "
        "worst 5 by identity distance).\n\n"
        "ORIGINALS and RESULTS are files or folders; results are matched to originals by name as hfgi names "
        "its outputs (photo_smile+2.jpg -> photo.jpg, in the same sub-folder); face crops (_<k>), previews and "
        "sweep grids are left out. Two videos (clip.mp4 edited.mp4): per-frame identity distance to the "
        "source, STIT's TL-ID and TG-ID (1: the identity is as steady as in the source) and the face region's "
        "flicker (mean absolute change between frames, 0-255) of both clips.\n\n"
        "Exit status: 0 ok, 1 a pair could not be evaluated or a result has no original, 2 usage error."
    ),
    epilog="Example: hfgi eval photos/ out/ --json > scores.jsonl   |   hfgi eval clip.mp4 smile.mp4",
)
def eval_command(
    originals: Path = typer.Argument(..., help="The original image, video or folder."),
    results: Path = typer.Argument(..., help="The result image, video or folder (hfgi's output folder)."),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object per pair on stdout (null where a value cannot be computed or is "
        "infinite, e.g. the PSNR of identical images); the table is left out."
    ),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write a CSV: one row per pair and per face."),
    aligned: bool = typer.Option(False, "--aligned", help="The images are aligned face crops (no detection)."),
    download_lpips: bool = typer.Option(
        False, "--download-lpips", help="Fetch LPIPS's AlexNet weights (233 MB, torchvision's cache) if missing."
    ),
    quiet: bool = QuietOpt,
) -> None:
    from .evaluate import evaluate, failed_record, is_video_pair, json_record, match_pairs
    from .inputs import InputError
    from .video.ffmpeg import VideoError

    for path in (originals, results):
        if not path.exists():
            fail(f"{path}: no such file or folder")
    matched = match_pairs([str(originals)], [str(results)])
    for problem in matched.problems:
        error(problem)
    if not matched.pairs:
        fail(f"no result in {results} matches an original in {originals}", code=1)
    lpips = _lpips(download_lpips) if any(not is_video_pair(a, b) for a, b in matched.pairs) else None
    records, failed = [], 0
    with progress(quiet, TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("eval", total=len(matched.pairs))
        for original, result in matched.pairs:
            try:
                record = evaluate(original, result, lpips, aligned=aligned)
            except (InputError, VideoError) as exc:
                error(str(exc))
                failed += 1
                if as_json:
                    write_stdout(json.dumps(failed_record(original, result, str(exc))) + "\n")
                bar.advance(task)
                continue
            for line in record["notes"]:
                note(f"note: {line}")
            records.append(record)
            if as_json:
                write_stdout(json.dumps(json_record(record)) + "\n")
            bar.advance(task)
    if csv_path is not None:
        _write_csv(csv_path, records)
    if records and not as_json:
        table = Table(title=f"hfgi eval: {escape(str(results))} against {escape(str(originals))}")
        for col in ("original", "result", "face", "PSNR dB", "SSIM", "MS-SSIM", "ID dist", "LPIPS"):
            table.add_column(col, overflow="fold", justify="left" if col in ("original", "result") else "right")
        videos = [r for r in records if r["kind"] == "video"]
        for record in records:
            for row in _eval_rows(record):
                shown = ("", "") if row["face"] != "" else (_shown(row["original"], originals),
                                                             _shown(row["result"], results))
                table.add_row(*shown, _cell(row["face"]), _cell(row["psnr"], 2),
                              *(_cell(row[k]) for k in ("ssim", "ms_ssim", "identity_distance", "lpips")))
        out = Console()
        out.print(table)
        out.print(_eval_summary(records))
        ranked = sorted((r for r in records if r.get("identity_distance") is not None),
                        key=lambda r: -r["identity_distance"])[:5]
        if ranked:
            out.print("worst 5 by identity distance: " + ", ".join(
                f"{escape(Path(r['result']).name)} {r['identity_distance']:.3f}" for r in ranked), highlight=False)
        for v in videos:
            out.print(f"{escape(v['result'])}: {v['frames']} frames, TL-ID {_cell(v['tl_id'])}, "
                      f"TG-ID {_cell(v['tg_id'])}, identity distance mean {_cell(v['identity_distance'])} "
                      f"(max {_cell(v['identity_distance_max'])}), flicker {_cell(v['flicker'], 2)} "
                      f"(source {_cell(v['source_flicker'], 2)})", highlight=False)
    if failed or matched.problems:
        raise typer.Exit(1)


def _shown(path: str, root: Path) -> str:
    """A path as the table shows it: inside the folder given, else its name."""
    return escape(str(Path(path).relative_to(root)) if root.is_dir() else Path(path).name)


# ----------------------------------------------------------------------------- weights
WeightsDirOption = typer.Option(
    None, "--weights-dir", help="Folder of the model files (default: $HFGI_HOME, ./weights, or the user cache).",
    file_okay=False,
)


def _human(size: Optional[int]) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


@weights_app.command("path", epilog="Example: hfgi weights path --weights-dir ~/models/hfgi")
def weights_path(weights_dir: Optional[Path] = WeightsDirOption) -> None:
    """Print the weights folder in use (it may not exist yet)."""
    typer.echo(str(w.resolve_weights_dir(weights_dir)))


@weights_app.command("list", epilog="Example: hfgi weights list --weights-dir ./weights")
def weights_list(weights_dir: Optional[Path] = WeightsDirOption) -> None:
    """Show every model file: present or missing, size, and whether its size and SHA-256 check out
    (`hfgi weights verify` also checks the contents)."""
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
        verified = f"[red]{escape(row.verified)}[/]" if row.verified.startswith("BAD") else escape(row.verified)
        table.add_row(row.name, shown, present, _human(row.size), verified)
    Console().print(table)


@weights_app.command(
    "download",
    epilog="Example: hfgi weights download hfgi_ffhq interfacegan_smile --weights-dir ~/models/hfgi",
)
def weights_download(
    names: Optional[list[str]] = typer.Argument(
        None, help="Files to fetch (see `hfgi weights list`); default: every missing one."
    ),
    weights_dir: Optional[Path] = WeightsDirOption,
    force: bool = typer.Option(False, "--force", help="Fetch again even if the file is present."),
    quiet: bool = QuietOpt,
) -> None:
    """Fetch model files, resuming an interrupted download; only checked files are kept."""
    folder = w.resolve_weights_dir(weights_dir)
    manifest = w.load_manifest()
    try:
        entries = [manifest.get(n) for n in (names or w.missing_names(weights_dir))]
    except w.WeightsError as exc:
        fail(str(exc))
    if not entries:
        typer.echo(f"all model files are present in {folder}")
        return
    failed = 0
    unreachable: list[tuple[w.WeightFile, Path, str]] = []  # (entry, destination, why)
    with progress(quiet, TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn()) as bar:
        for entry in entries:
            dest = folder / entry.path
            if dest.is_file() and not force:
                typer.echo(f"{entry.name}: already present at {dest} (use --force to fetch it again)")
                continue
            task = bar.add_task(entry.name, total=entry.size)

            def report(done: int, total: Optional[int], task: Any = task) -> None:
                bar.update(task, completed=done, total=total)

            try:
                result = w.download(entry, folder, force=force, on_progress=report, on_note=note)
            except w.NetworkError as exc:
                unreachable.append((entry, dest, str(exc.reason)))
                bar.remove_task(task)
                continue
            except w.WeightsError as exc:
                error(str(exc))
                failed += 1
                continue
            typer.echo(f"{entry.name}: saved {result.path} ({result.status}; from {result.source})")
    if unreachable:
        # one summary, so that an offline user learns every missing file at once
        why = unreachable[0][2]
        error(f"no network: could not fetch {len(unreachable)} file(s) ({why}); download each by hand and save "
              f"it where shown, then run `hfgi weights verify`:")
        for entry, dest, _ in unreachable:
            note(f"  {entry.name}: {' or '.join(entry.manual_urls)} -> {dest}")
    if failed or unreachable:
        raise typer.Exit(EXIT_USAGE)


@weights_app.command(
    "verify",
    epilog="Example: hfgi weights verify hfgi_ffhq   |   hfgi weights verify ~/Downloads/my_ckpt.pt",
)
def weights_verify(
    file: Optional[str] = typer.Argument(
        None, help="A manifest name or a file path; default: every present file in the weights folder."
    ),
    weights_dir: Optional[Path] = WeightsDirOption,
) -> None:
    """Check files: SHA-256 where known, and structure (checkpoint keys and shapes, direction shapes)."""
    folder = w.resolve_weights_dir(weights_dir)
    manifest = w.load_manifest()
    by_path = {(folder / e.path).absolute(): e for e in manifest.files}
    if file is None:
        targets = [(folder / e.path, e) for e in manifest.files if (folder / e.path).is_file()]
        if not targets:
            fail(f"no model files in {folder}; fetch them with `{w.fetch_command([], weights_dir)}`")
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
            error(f"{entry.name + ': ' if entry else ''}{exc}")
            failed += 1
            continue
        typer.echo(f"{label}: {result.status} ({result.kind}, {result.detail})")
    if failed:
        raise typer.Exit(EXIT_USAGE)


# ----------------------------------------------------------------------------- the program
def main() -> None:
    """The `hfgi` program. As the process's owner (not as a library) it sets, unless the user did:

    - ``THP_MEM_ALLOC_ENABLE=1``: PyTorch's CPU allocator backs large tensors with transparent huge
      pages; a 1024 px generator pass allocates and frees hundreds of MB per layer, and with 4 KB
      pages the page faults cost as much as the arithmetic. Read at torch's first allocation, so
      it is set before torch is imported.
    - PIL's decompression-bomb limit raised to ``images.MAX_IMAGE_PIXELS`` (~16k x 16k), which
      ``images.open_image`` enforces itself with a clear message.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    from PIL import Image

    from .images import MAX_IMAGE_PIXELS

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        app()
    except KeyboardInterrupt:
        note("interrupted")
        sys.exit(130)
