"""The `hfgi` command line: argument parsing and reporting only; the work lives in the library."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from . import weights as w

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


def main() -> None:
    app()
