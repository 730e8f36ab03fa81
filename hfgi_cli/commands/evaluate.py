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

from ..reasons import short_reason
from .common import Command, QuietOpt, error, fail, note, progress, write_stdout

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
        note(f"note: LPIPS not computed (null): {short_reason(exc, 160)}")
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
    for col in ("", "PSNR", "SSIM", "MS-SSIM", "ID dist", "LPIPS"):
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
    cls=Command,
    help=(
        "How far results are from their originals: per pair and per face PSNR, SSIM, MS-SSIM (whole image; "
        "faces: the original's FFHQ square cut from both at 256 px), dlib identity distance (below 0.6: the "
        "same person) and LPIPS (AlexNet; when its weights are on disk); a table and a summary (mean, median, "
        "worst 5 by identity distance).\n\n"
        "ORIGINALS and RESULTS are files or folders; results are matched to originals by name as hfgi names "
        "its outputs (photo_smile+2.jpg -> photo.jpg, in the same sub-folder); face crops (_<k>), previews and "
        "sweep grids are left out. Two videos (clip.mp4 edited.mp4): per face (tracked as `hfgi video` tracks "
        "them, same ids) and for the clip, identity distance to the source, STIT's TL-ID and TG-ID (1: the "
        "identity is as steady as in the source) and the face region's flicker (mean absolute change between "
        "frames, 0-255) of both clips.\n\n"
        "Exit status: 0 ok, 1 a pair could not be evaluated or a result has no original, 2 usage error."
    ),
    epilog="Example: hfgi eval photos/ out/ --json > scores.jsonl   |   hfgi eval clip.mp4 smile.mp4",
)
def eval_command(
    originals: Path = typer.Argument(..., metavar="ORIGINALS", help="The original image, video or folder."),
    results: Path = typer.Argument(
        ..., metavar="RESULTS", help="The result image, video or folder (hfgi's output folder)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="JSON Lines on stdout: one object per pair (null where a value cannot be computed "
        "or is infinite, e.g. the PSNR of identical images); the table is left out."
    ),
    csv_path: Optional[Path] = typer.Option(
        None, "--csv", metavar="FILE", help="Also write a CSV: one row per pair and per face."
    ),
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
        videos = [r for r in records if r["kind"] == "video"]
        out = Console()
        out.print(_eval_table(records, originals, results, out.width))
        out.print(_eval_summary(records))
        ranked = sorted((r for r in records if r.get("identity_distance") is not None),
                        key=lambda r: -r["identity_distance"])[:5]
        if ranked:
            worst = [f"{Path(r['result']).name} {r['identity_distance']:.3f}" for r in ranked]
            line = "worst 5 by identity distance: " + ", ".join(worst)
            # a name and its value never split across lines: one a line when the list does not fit
            lines = [line] if len(line) <= out.width else ["worst 5 by identity distance:", *(f"  {w}" for w in worst)]
            for text in lines:
                out.print(escape(text), highlight=False)
        for v in videos:
            out.print(f"{escape(v['result'])}: {v['frames']} frames, {_video_scores(v)}", highlight=False)
            for f in v["faces"]:
                out.print(f"  face {f['face']}: {f['frames']} frames ({f['first']}-{f['last']}), {_video_scores(f)}",
                          highlight=False)
    if failed or matched.problems:
        raise typer.Exit(1)


def _video_scores(scores: dict[str, Any]) -> str:
    """A video's (or one of its faces') identity and flicker figures, as one line shows them."""
    return (f"TL-ID {_cell(scores['tl_id'])}, TG-ID {_cell(scores['tg_id'])}, identity distance mean "
            f"{_cell(scores['identity_distance'])} (max {_cell(scores['identity_distance_max'])}), flicker "
            f"{_cell(scores['flicker'], 2)} (source {_cell(scores['source_flicker'], 2)})")


def _eval_table(records: list[dict[str, Any]], originals: Path, results: Path, width: int) -> Table:
    """One row per pair and per face. File names are never broken across lines: when both name
    columns do not fit in ``width``, the originals' column is left out (each result is matched to the
    original of its own name, as the caption says), and a result name still too long loses its middle
    (``grace_hopp…_smile+2.jpg``), so that the edit it names stays visible."""
    numbers = ("face", "PSNR", "SSIM", "MS-SSIM", "ID dist", "LPIPS")
    rows = []  # (original, result, numbers...) with the names on a pair's first row only
    for record in records:
        for row in _eval_rows(record):
            names = (_shown(row["original"], originals), _shown(row["result"], results)) if row["face"] == "" \
                else ("", "")
            rows.append((*names, _cell(row["face"]), _cell(row["psnr"], 2),
                         *(_cell(row[k]) for k in ("ssim", "ms_ssim", "identity_distance", "lpips"))))
    widths = [max(len(h), *(len(r[i + 2]) for r in rows)) for i, h in enumerate(numbers)]
    fixed = sum(widths) + 3 * len(widths) + 1  # each column: its text, a space either side and a rule
    longest = [max(len("original"), *(len(r[0]) for r in rows)), max(len("result"), *(len(r[1]) for r in rows))]
    with_originals = fixed + longest[0] + longest[1] + 6 <= width
    room = max(12, width - fixed - 3)
    caption = None if with_originals else f"each result against the original of its name in {escape(str(originals))}"
    table = Table(title=f"hfgi eval: {escape(str(results))} against {escape(str(originals))} (PSNR in dB)",
                  caption=caption)
    if with_originals:
        table.add_column("original", no_wrap=True)
    table.add_column("result", no_wrap=True)
    for col in numbers:
        table.add_column(col, justify="right", no_wrap=True)
    for original, result, *values in rows:
        names = [original, result] if with_originals else [_middle_cut(result, room)]
        table.add_row(*(escape(n) for n in names), *values)
    return table


def _middle_cut(name: str, room: int) -> str:
    """``name`` in ``room`` characters: its start and its end (the edit and the extension) kept."""
    if len(name) <= room:
        return name
    head = max(4, room // 3)
    tail = room - head - 1
    return name[:head] + "…" + name[len(name) - tail:]


def _shown(path: str, root: Path) -> str:
    """A path as the table shows it (not yet escaped for markup): inside the folder given, else its name."""
    return str(Path(path).relative_to(root)) if root.is_dir() else Path(path).name
