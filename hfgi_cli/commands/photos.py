"""`hfgi align`, `hfgi invert` and `hfgi edit`: photos (and crops, and latent files) in, files out.

``invert``/``edit`` stream their inputs through ``pipeline.Pipeline`` (or, with --ray, the same
stages on a Ray cluster); ``align`` calls ``crops.align_items``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from .attrs import listing_callback
from .common import (
    DIRECTIONS_HELP,
    JSON_HELP,
    WEIGHTS_DIR_HELP,
    AlignedOpt,
    BatchOpt,
    BetaOpt,
    CheckpointOpt,
    CombineOpt,
    Command,
    DetailOpt,
    DetectorOpt,
    DeviceOpt,
    DirectionOpt,
    FacesOpt,
    JsonOpt,
    LatentsOpt,
    MaxFacesOpt,
    MinFaceOpt,
    NeutralOpt,
    OutOpt,
    OverwriteOpt,
    PrecisionOpt,
    PreviewOpt,
    QualityOpt,
    QuietOpt,
    RayAddressOpt,
    RayOpt,
    RunStatus,
    SaveCropsOpt,
    TextOpt,
    WeightsDirOpt,
    WorkersOpt,
    check_out_folder,
    console,
    edit_specs_from_options,
    error,
    face_indices,
    fail,
    inputs_arg,
    load_for_run,
    note,
    progress,
    runtime_line,
    write_stdout,
)

if TYPE_CHECKING:
    from ..edits import Output
    from ..pipeline import Job, RunOptions, RunSummary

# Typer reads the annotations at run time, so they stay typing.Optional for Python 3.9.
# ruff: noqa: UP045

app = typer.Typer()

def _sweep(text: str, detail: float = 1.0) -> Any:
    """``attr=from:to:count`` -> pipeline.Sweep."""
    from ..edits import EditError, check_attribute
    from ..pipeline import Sweep

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
    return Sweep(attr, tuple(round(a + (b - a) * k / (n - 1), 6) for k in range(n)), detail)


# ----------------------------------------------------------------------------- invert / edit
def _latents(mode: str) -> str:
    from ..pipeline import LATENT_MODES

    if mode not in LATENT_MODES:
        fail(f"--latents must be one of {', '.join(LATENT_MODES)}, not {mode!r}")
    return mode


def _run(description: str, inputs: list[str], options: RunOptions, model_args: dict[str, Any], quiet: bool,
         as_json: bool, edits: Optional[list[Output]] = None, ray: Optional[dict[str, Any]] = None,
         out: Optional[str] = None) -> NoReturn:
    """Load the model, check every edit up front, then stream the inputs through the pipeline (or,
    with ``ray`` (``run_on_ray``'s address and workers), run it on a Ray cluster). ``out``: -o as
    given (a URI, with --ray)."""
    from ..inputs import collect_inputs
    from ..pipeline import Pipeline
    from ..remote import is_uri

    uris = [text for text in [*inputs, out or ""] if is_uri(text)]
    if ray is None and uris:
        fail(f"{uris[0]}: URIs (s3://, gs://, file://...) can be used with --ray only")
    out_uri = _out_uri(out) if ray is not None and out is not None and is_uri(out) else None
    if out_uri is None:
        check_out_folder(options.out_dir)
    items, problems = collect_inputs(inputs, sys.stdin, exclude=out_uri or options.out_dir, uris=ray is not None)
    # with --ray the actors load the model for their device; this copy checks it, on the CPU
    local_args = model_args if ray is None else {**model_args, "device": "cpu", "precision": "fp32"}
    model = load_for_run(**local_args, edits=edits or options.edits)
    from ..edits import describe

    described = [describe(e) for e in edits or options.edits] or None  # what each --json line's outputs are
    for problem in problems:
        error(problem)
        if as_json:
            write_stdout(json.dumps({"input": problem.path, "outputs": [], "faces": 0, "status": "error",
                                     "error": str(problem), "seconds": 0.0, "quality": None,
                                     "precision": None, "edits": described}) + "\n")
    if not items:
        _no_inputs(problems)
    if ray is None and not quiet:
        note(runtime_line(model))

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
                    write_stdout(json.dumps({**job.report(), "edits": described}) + "\n")
                status.count(job)
                bar.update(task, completed=status.done, status=status.text(short=True))

        if ray is None:
            summary = Pipeline(model, options).run(items, on_done)
        else:
            from ..cluster import ClusterError
            from ..ray import run_on_ray

            try:
                summary = run_on_ray(model, options, items, on_done, model_args=model_args, out_uri=out_uri, **ray)
            except ClusterError as exc:  # cannot be joined, or cannot run the model as asked (exit 2)
                fail(str(exc))
    _print_summary(summary, quiet, out or str(options.out_dir), extra_failures=len(problems))
    raise typer.Exit(summary.exit_code if summary.exit_code or not problems else 1)


def _no_inputs(problems: list[Any]) -> NoReturn:
    """Nothing to process: exit 1 when inputs were given and each failed (named above, as any failed
    input is), 2 when none was given at all (stdin held no paths): a usage error."""
    if problems:
        fail(f"no inputs to process: {'the input' if len(problems) == 1 else 'every input'} above failed", code=1)
    fail("no inputs to process: no paths were given (stdin held none)")


def _ray_options(use_ray: bool, address: Optional[str], workers: Optional[int]) -> Optional[dict[str, Any]]:
    """--ray's arguments for ``run_on_ray``; without Ray installed, the install hint (exit 2)."""
    if not use_ray:
        if address is not None or workers is not None:
            fail("--ray-address and --workers go with --ray")
        return None
    from importlib.util import find_spec

    if find_spec("ray") is None:
        fail("--ray needs Ray: pip install 'hfgi-cli[ray]'")
    from ..cluster import unreachable

    where = address or os.environ.get("RAY_ADDRESS")
    reason = unreachable(where) if where else None  # before the model loads: Ray would retry for minutes
    if reason is not None:
        fail(f"--ray: cannot join {where}: {reason}")
    return {"address": address, "workers": workers}


def _out_uri(out: str) -> str:
    """-o as a URI (``remote``), checked: pyarrow can use it, and it is no file."""
    from .. import remote

    try:
        remote.Folder(out)
        taken = remote.exists(out)
    except OSError as exc:
        fail(f"-o {exc}")
    if taken:
        fail(f"-o {out}: is a file, not a folder")
    return out


def _print_summary(summary: RunSummary, quiet: bool, out: str, extra_failures: int = 0) -> None:
    counts: dict[str, int] = {}
    for job in summary.jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    failed = counts.get("error", 0) + extra_failures
    faces = sum(job.n_faces for job in summary.jobs if job.status == "ok")
    parts = [f"{counts.get('ok', 0)} done"]
    if counts.get("skipped"):
        parts.append(f"{counts['skipped']} already done (skipped; --overwrite redoes them)")
    if failed:
        parts.append(f"{failed} failed")
    if summary.interrupted:
        parts.append(f"{counts.get('pending', 0)} not started (interrupted)")
    where = f"; {faces} face{'s' * (faces != 1)} in {out}" if counts.get("ok") else ""
    if not quiet or failed or summary.interrupted:
        note(", ".join(parts) + where)
    from ..quality import summary_line

    measured = summary_line([(f"{job.item.source} face {k}", q) for job in summary.jobs for k, q in job.quality or []])
    if measured and not quiet:
        note(measured)


@app.command(
    cls=Command,
    help="Reconstruct faces with HFGI.\n\n"
    "Photos: OUT/<name>.<ext> with every face replaced by its reconstruction, and OUT/<name>_<k>.pt "
    "(latent, distortion map, alignment) per face k. With --aligned: OUT/<name>.png (the full resolution "
    "reconstruction of the crop) and OUT/<name>.pt.",
    epilog="Example: hfgi invert photos/ -o out   |   hfgi invert crops/ -o out --aligned --batch-size 8",
)
def invert(
    inputs: list[str] = inputs_arg("{stem}.{ext}"),
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
    detector: str = DetectorOpt,
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
    """Reconstruct faces with HFGI (the help text is the command's ``help``)."""
    from ..pipeline import RunOptions

    options = RunOptions(Path(out), [], aligned=aligned, overwrite=overwrite, save_crops=save_crops,
                         max_faces=max_faces, faces=face_indices(faces, aligned), min_face=min_face,
                         detector=detector, latents=_latents(latents), preview=preview, quality=quality)
    model_args = dict(checkpoint=checkpoint, weights_dir=weights_dir, directions=None, device=device,
                      precision=precision, batch_size=batch_size)
    _run("invert", inputs, options, model_args, quiet, as_json, ray=_ray_options(use_ray, ray_address, workers),
         out=out)


@app.command(
    cls=Command,
    help="Edit faces: one output per edit (or one for all with --combine), all sharing one encoding of each "
    "image.\n\nOutputs are named after the input and the edit: OUT/<name>_smile+2.<ext> (photos, faces pasted "
    "back, one OUT/<name>_smile+2_<k>.pt per face) or OUT/<name>_smile+2.png and .pt (--aligned); a text edit "
    "is named after its prompt (face-with-curly-hair+4).",
    epilog="Example: hfgi edit photos/ --attr smile --strength 2 --attr age --strength -3 -o out   |   "
    "hfgi edit photos/ --attr age --attr smile -s 2 -s 1.5 --combine -o out   |   "
    "hfgi edit photos/ --text \"face with curly hair\" --neutral \"face with hair\" -s 4 -o out",
)
def edit(
    inputs: list[str] = inputs_arg("{stem}_smile+2.{ext}"),
    out: str = OutOpt,
    attr: list[str] = typer.Option(
        [], "--attr", "-a", metavar="NAME", help="Edit to make (repeatable; see --list-attrs)."
    ),
    strength: list[float] = typer.Option(
        [], "--strength", "-s", metavar="S",
        help="Strength for each --attr, then each --direction, then each --text, in order (one value: for all).",
    ),
    direction: list[Path] = DirectionOpt,
    text: list[str] = TextOpt,
    neutral: Optional[str] = NeutralOpt,
    beta: Optional[float] = BetaOpt,
    combine: bool = CombineOpt,
    detail: float = DetailOpt,
    directions: Optional[Path] = typer.Option(
        None, "--directions", metavar="DIR", help=DIRECTIONS_HELP, is_eager=True, callback=listing_callback),
    checkpoint: Optional[Path] = CheckpointOpt,
    weights_dir: Optional[Path] = typer.Option(
        None, "--weights-dir", metavar="DIR", help=WEIGHTS_DIR_HELP, is_eager=True, callback=listing_callback),
    batch_size: Optional[int] = BatchOpt,
    device: str = DeviceOpt,
    precision: str = PrecisionOpt,
    aligned: bool = AlignedOpt,
    save_crops: bool = SaveCropsOpt,
    max_faces: Optional[int] = MaxFacesOpt,
    faces: Optional[str] = FacesOpt,
    min_face: Optional[float] = MinFaceOpt,
    detector: str = DetectorOpt,
    latents: str = LatentsOpt,
    preview: bool = PreviewOpt,
    sweep: Optional[str] = typer.Option(
        None, "--sweep", metavar="SPEC",
        help="ATTR=FROM:TO:COUNT (e.g. smile=-3:3:7). Instead of edited photos: one encoding, then per face a "
        "labelled grid OUT/<name>_sweep-ATTR_<k>.jpg of the edit at COUNT strengths from FROM to TO, to pick "
        "a strength by eye.",
    ),
    quality: bool = QualityOpt,
    overwrite: bool = OverwriteOpt,
    quiet: bool = QuietOpt,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP + " With --list-attrs: one line per edit.",
                                 is_eager=True, callback=listing_callback),
    use_ray: bool = RayOpt,
    ray_address: Optional[str] = RayAddressOpt,
    workers: Optional[int] = WorkersOpt,
    list_attrs: bool = typer.Option(
        False, "--list-attrs", is_eager=True, callback=listing_callback,
        help="List every edit (family, what it does, strength range, licence, whether its files are here) and exit.",
    ),
) -> None:
    """`hfgi edit`: the outputs the options ask for, through ``_run``."""
    from ..pipeline import RunOptions

    if sweep is not None:
        if attr or direction or strength or text:
            fail("give --sweep alone, or --attr/--direction/--text with --strength, not both")
        if preview or save_crops or latents != "full" or quality or combine:
            fail("--sweep writes only its grids: drop --preview, --save-crops, --latents, --quality and --combine")
        sweep_spec = _sweep(sweep, detail)
        specs: list[Any] = sweep_spec.specs
    else:
        sweep_spec = None
        specs = edit_specs_from_options(attr, strength, direction, text, neutral, beta, detail, combine)
    options = RunOptions(Path(out), [] if sweep_spec else specs, aligned=aligned, overwrite=overwrite,
                         save_crops=save_crops, max_faces=max_faces, faces=face_indices(faces, aligned),
                         min_face=min_face, detector=detector, latents=_latents(latents), preview=preview,
                         sweep=sweep_spec, quality=quality)
    model_args = dict(checkpoint=checkpoint, weights_dir=weights_dir, directions=directions, device=device,
                      precision=precision, batch_size=batch_size)
    _run("edit", inputs, options, model_args, quiet, as_json, specs, ray=_ray_options(use_ray, ray_address, workers),
         out=out)


# ----------------------------------------------------------------------------- align
@app.command(
    "align",
    cls=Command,
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
    inputs: list[str] = typer.Argument(
        ..., metavar="INPUT",
        help="Photos, or folders of photos (searched recursively), or - for paths on stdin (one a line). A photo "
        "x.jpg gives OUT/x_0.png, OUT/x_0.json, OUT/x_1.png, ...; a photo in a folder keeps its path inside it "
        "(photos/sub/x.jpg -> OUT/sub/x_0.png), under the folder's name when several folders are given.",
    ),
    out: Path = typer.Option(..., "--out", "-o", metavar="OUT", help="Folder for the crops (created if missing)."),
    size: int = typer.Option(1024, "--size", min=16, metavar="PX", help="Side of the aligned crops in pixels."),
    max_faces: Optional[int] = typer.Option(
        None, "--max-faces", min=1, metavar="N", help="Keep at most N faces per photo (the largest ones)."
    ),
    min_face: Optional[float] = MinFaceOpt,
    detector: str = DetectorOpt,
    quiet: bool = QuietOpt,
) -> None:
    from ..crops import align_items
    from ..inputs import collect_inputs

    check_out_folder(out)
    items, problems = collect_inputs(inputs, sys.stdin, exclude=out, latents=False)
    for problem in problems:
        error(problem)
    if not items:
        _no_inputs(problems)
    with progress(quiet, TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()) as bar:
        task = bar.add_task("aligning", total=len(items))
        report = align_items(items, out, size, max_faces=max_faces, min_face=min_face, detector=detector, on_note=note,
                             on_photo_done=lambda _path: bar.advance(task))
    if not quiet:
        note(f"wrote {len(report.written)} face(s) from {len(items)} photo(s) to {out}")
    if report.failed or problems:
        raise typer.Exit(1)

