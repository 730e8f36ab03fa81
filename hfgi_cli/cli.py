"""The `hfgi` command line: argument parsing and reporting only; the work lives in the library."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Edit faces in photos and videos with HFGI (High-Fidelity GAN Inversion, CVPR 2022).",
)
weights_app = typer.Typer(no_args_is_help=True, help="Get, find and check the model files.")
app.add_typer(weights_app, name="weights")


def main() -> None:
    app()


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
    import sys

    from rich.console import Console
    from rich.progress import Progress

    from .align import align_paths, collect_images

    paths = collect_images(inputs)
    console = Console(stderr=True)
    show = not quiet and sys.stderr.isatty()
    with Progress(console=console, disable=not show, transient=True) as progress:
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
