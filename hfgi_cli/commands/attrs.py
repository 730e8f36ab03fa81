"""`hfgi edit --list-attrs [--json]`: the catalogue of edits, with whether each one's files are here.

``--list-attrs`` answers before the inputs and -o are asked for, so it is an eager option; it must
still see ``--json``, ``--directions`` and ``--weights-dir``. Click calls every eager option's
callback (given or not), so each of these records its value, and the last of them to run prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

LISTING_PARAMS = ("list_attrs", "as_json", "directions", "weights_dir")


def listing_callback(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    seen = ctx.meta.setdefault("hfgi_listing", {})
    seen[param.name] = value
    if len(seen) == len(LISTING_PARAMS) and seen["list_attrs"]:
        print_catalogue(seen["directions"], seen["weights_dir"], bool(seen["as_json"]))
        raise typer.Exit(0)
    return value


def _folder(directions: Optional[Path], weights_dir: Optional[Path]) -> Path:
    from .. import weights as w

    return Path(directions).expanduser() if directions else w.resolve_weights_dir(weights_dir)


def catalogue_rows(folder: Path) -> list[dict[str, Any]]:
    """One record per edit (and one for text prompts): what --list-attrs shows."""
    from ..edits import list_attributes
    from ..edits import styleclip as sc

    rows = []
    for entry in list_attributes():
        rows.append({
            "name": entry.name, "family": entry.family, "domain": entry.domain, "description": entry.description,
            "strength_range": list(entry.strength_range), "source": entry.source, "licence": entry.licence,
            "files": list(entry.files), "present": all((folder / f).is_file() for f in entry.files),
        })
    rows.append({
        "name": "--text PROMPT", "family": "styleclip", "domain": "ffhq",
        "description": "any change described in words (--neutral, --beta)", "strength_range": list(sc.TEXT_RANGE),
        "source": "StyleCLIP global directions (orpatashnik/StyleCLIP), CLIP ViT-B/32 (OpenAI)", "licence": "MIT",
        "files": list(sc.needed_files()), "present": all((folder / f).is_file() for f in sc.needed_files()),
    })
    return rows


def print_catalogue(directions: Optional[Path], weights_dir: Optional[Path], as_json: bool) -> None:
    folder = _folder(directions, weights_dir)
    rows = catalogue_rows(folder)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    table = Table(title=f"{len(rows) - 1} named edits, and text prompts (files looked for in {folder})")
    for col in ("name", "family", "what it does", "range", "licence", "here"):
        table.add_column(col, no_wrap=col != "what it does", style="bold" if col == "name" else "")
    for row in rows:
        lo, hi = row["strength_range"]
        domain = "" if row["domain"] == "ffhq" else f" [{row['domain']}]"
        table.add_row(row["name"], row["family"] + domain, row["description"], f"{lo:g}..{hi:g}", row["licence"],
                      "[green]yes[/]" if row["present"] else "[red]no[/]")
    console = Console()
    console.print(table)
    console.print("Sources: " + "; ".join(f"{family}: {source}" for family, (source, _) in _sources().items()),
                  highlight=False, markup=False)


def _sources() -> dict[str, tuple[str, str]]:
    from ..edits.catalog import SOURCES

    return SOURCES
