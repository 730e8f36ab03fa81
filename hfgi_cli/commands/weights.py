"""`hfgi weights path|list|download|verify`: where the model files are, getting them, checking them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from .. import weights as w
from .common import EXIT_USAGE, Command, Group, QuietOpt, error, fail, note, progress

# Typer reads the annotations at run time, so they stay typing.Optional for Python 3.9.
# ruff: noqa: UP045

app = typer.Typer(
    cls=Group,
    no_args_is_help=True,
    help=(
        "Get, find and check the model files. They live in --weights-dir, else $HFGI_HOME, else "
        "./weights when it holds the checkpoint, else $XDG_CACHE_HOME/hfgi (~/.cache/hfgi). "
        "Set HFGI_WEIGHTS_MIRROR=URL to fetch <URL>/<relative path> instead of the official sources. "
        "Exit status: 0 ok, 2 a file is missing, failed to download or failed its checks."
    ),
)

WeightsDirOption = typer.Option(
    None, "--weights-dir", metavar="DIR",
    help="Folder of the model files (default: $HFGI_HOME, ./weights, or the user cache).",
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


@app.command("path", cls=Command, epilog="Example: hfgi weights path --weights-dir ~/models/hfgi")
def weights_path(weights_dir: Optional[Path] = WeightsDirOption) -> None:
    """Print the weights folder in use (it may not exist yet)."""
    typer.echo(str(w.resolve_weights_dir(weights_dir)))


@app.command("list", cls=Command, epilog="Example: hfgi weights list --weights-dir ./weights")
def weights_list(weights_dir: Optional[Path] = WeightsDirOption) -> None:
    """Show every model file: present or missing, size, and whether its size and SHA-256 check out
    (`hfgi weights verify` also checks the contents)."""
    folder, why = w.locate_weights_dir(weights_dir)
    manifest = w.load_manifest()
    groups = " | ".join(g for g in manifest.groups if g != w.DEFAULT_GROUP)
    table = Table(title=f"model files in {folder}", caption=(
        f"folder chosen by: {why}; opt-in files are fetched only when named: hfgi weights download {groups}"
    ))
    # names and paths stay whole (no_wrap); the state column, words, wraps between them
    table.add_column("name", no_wrap=True)
    table.add_column("file", no_wrap=True)
    table.add_column("size", no_wrap=True, justify="right")
    table.add_column("state", min_width=12)
    packages = {p.name: p.package for p in manifest.packaged}
    for row in w.list_files(weights_dir):
        if row.name in packages:
            shown = f"pip: {packages[row.name]}"
        else:
            shown = str(row.path.relative_to(folder)) if row.path else "-"
        if not row.present:
            state = f"opt-in, group {row.group}" if row.group != w.DEFAULT_GROUP else "[red]missing[/]"
        elif row.verified.startswith("BAD"):
            state = f"[red]present, {escape(row.verified)}[/]"
        else:
            state = f"[green]present[/], {escape(row.verified)}"
        table.add_row(row.name, shown, _human(row.size), state)
    Console().print(table)


@app.command(
    "download",
    cls=Command,
    epilog="Example: hfgi weights download hfgi_ffhq interfacegan_smile --weights-dir ~/models/hfgi   |   "
           "hfgi weights download styleclip",
)
def weights_download(
    names: Optional[list[str]] = typer.Argument(
        None, metavar="NAME", help="Files or groups to fetch (see `hfgi weights list`; groups: default, cars, "
                   "styleclip for text edits); default: every missing file of the default group."
    ),
    weights_dir: Optional[Path] = WeightsDirOption,
    force: bool = typer.Option(False, "--force", help="Fetch again even if the file is present."),
    quiet: bool = QuietOpt,
) -> None:
    """Fetch model files, resuming an interrupted download; only checked files are kept. With no
    names, what a face model needs; the cars and styleclip groups only when named."""
    folder = w.resolve_weights_dir(weights_dir)
    manifest = w.load_manifest()
    try:
        entries = manifest.select(names or w.missing_names(weights_dir))
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


@app.command(
    "verify",
    cls=Command,
    epilog="Example: hfgi weights verify hfgi_ffhq   |   hfgi weights verify ~/Downloads/my_ckpt.pt",
)
def weights_verify(
    file: Optional[str] = typer.Argument(
        None, metavar="NAME|FILE",
        help="A manifest name, a group or a file path; default: every present file in the weights folder.",
    ),
    weights_dir: Optional[Path] = WeightsDirOption,
) -> None:
    """Check files: SHA-256 or git blob id where known, and structure (checkpoint keys and shapes,
    direction and array shapes, pickles read safely)."""
    folder = w.resolve_weights_dir(weights_dir)
    manifest = w.load_manifest()
    by_path = {(folder / e.path).absolute(): e for e in manifest.files}
    if file is None:
        targets = [(folder / e.path, e) for e in manifest.files if (folder / e.path).is_file()]
        if not targets:
            fail(f"no model files in {folder}; fetch them with `{w.fetch_command([], weights_dir)}`")
    elif file in manifest.names or file in manifest.groups:
        targets = [(folder / e.path, e) for e in manifest.select([file])]
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
