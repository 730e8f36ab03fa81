"""`hfgi eval`: how far results are from their originals (``evaluate``), as a table, JSON Lines or CSV."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .common import QuietOpt, error, fail, note, progress, write_stdout

# Typer reads the annotations at run time, so they stay typing.Optional for Python 3.9.
# ruff: noqa: UP045

app = typer.Typer()

EVAL_COLUMNS = ("psnr", "ssim", "ms_ssim", "identity_distance", "lpips", "tl_id", "tg_id", "flicker",
                "source_flicker")


def _lpips(download: bool) -> Any:
    """LPIPS, or None (with one note) when its weights are not on disk and not to be fetched."""
    from ..quality import LPIPS_WEIGHTS_URL, Lpips, lpips_weights

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

    from ..atomic import write_bytes

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
    from ..evaluate import evaluate, failed_record, is_video_pair, json_record, match_pairs
    from ..inputs import InputError
    from ..video.ffmpeg import VideoError

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
