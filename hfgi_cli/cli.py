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
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from . import io as hio
from .api import load_model
from .edits import EditError, Editor, EditSpec, list_attributes
from .models.hfgi import CheckpointError
from .pipeline import Job, Pipeline, RunOptions, RunSummary

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Edit faces in photos and videos with HFGI (High-Fidelity GAN Inversion, CVPR 2022).",
)
weights_app = typer.Typer(no_args_is_help=True, help="Get, find and check the model files.")
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
BatchOpt = typer.Option(4, "--batch-size", "-b", min=1, help="Faces per model batch.")
DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda | mps")
PrecisionOpt = typer.Option("fp32", "--precision", help="fp32 (exact) | fp16 | bf16 (autocast; fp16 needs a GPU).")
AlignedOpt = typer.Option(True, "--aligned/--detect", help="Inputs are FFHQ-aligned face crops, used as they are.")
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


def _run(
    description: str,
    inputs: list[str],
    out: Path,
    checkpoint: Optional[Path],
    weights_dir: Optional[Path],
    directions: Optional[Path],
    edits: list[EditSpec],
    batch_size: int,
    device: str,
    precision: str,
    aligned: bool,
    overwrite: bool,
    quiet: bool,
    as_json: bool,
) -> NoReturn:
    if precision not in ("fp32", "fp16", "bf16"):
        fail(f"--precision must be fp32, fp16 or bf16, not {precision!r}")
    items, problems = hio.collect_inputs(inputs, sys.stdin)
    try:
        model = load_model(checkpoint, weights_dir=weights_dir, device=device)
        editor = None
        if edits:
            editor = Editor(directions, model.n_latent, model.config.style_dim)
            for spec in edits:
                editor.check(spec)
    except (CheckpointError, EditError, ValueError) as exc:
        fail(str(exc))
    for problem in problems:
        _print_error(problem)
        if as_json:
            report = {"input": getattr(problem, "path", problem), "outputs": [], "faces": 0, "status": "error",
                      "error": str(problem), "seconds": 0.0}
            _write_stdout(json.dumps(report) + "\n")
    if not items:
        fail("no inputs to process", code=2 if not problems else 1)

    options = RunOptions(out, edits, batch_size=batch_size, aligned=aligned, overwrite=overwrite, precision=precision)
    pipeline = Pipeline(model, editor, options)
    jobs = [Job(item) for item in items]
    lock = threading.Lock()
    with _progress(quiet) as progress:
        task = progress.add_task(description, total=len(jobs), rate="")

        def on_done(job: Job) -> None:
            with lock:
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
    epilog="Example: hfgi invert ./faces -o out --checkpoint weights/hfgi_ffhq.pt --aligned",
)
def invert(
    inputs: list[str] = InputsArg,
    out: Path = OutOpt,
    checkpoint: Optional[Path] = CheckpointOpt,
    weights_dir: Optional[Path] = WeightsDirOpt,
    batch_size: int = BatchOpt,
    device: str = DeviceOpt,
    precision: str = PrecisionOpt,
    aligned: bool = AlignedOpt,
    overwrite: bool = OverwriteOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Reconstruct faces with HFGI; writes OUT/<name>.png and its latent OUT/<name>.pt."""
    _run("invert", inputs, out, checkpoint, weights_dir, None, [], batch_size, device, precision, aligned,
         overwrite, quiet, as_json)


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
    epilog="Example: hfgi edit ./faces --attr smile --strength 2 --attr age --strength -3 -o out --aligned",
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
    batch_size: int = BatchOpt,
    device: str = DeviceOpt,
    precision: str = PrecisionOpt,
    aligned: bool = AlignedOpt,
    overwrite: bool = OverwriteOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
    list_attrs: bool = typer.Option(
        False, "--list-attrs", is_eager=True, callback=_list_attrs_callback, help="List the attributes and exit."
    ),
) -> None:
    """Edit faces: one output per --attr/--strength pair, all sharing one encoding of each image."""
    specs = _edit_specs(attr, strength, direction)
    _run("edit", inputs, out, checkpoint, weights_dir, directions, specs, batch_size, device, precision, aligned,
         overwrite, quiet, as_json)


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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)

