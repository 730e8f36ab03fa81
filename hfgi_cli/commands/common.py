"""What every command shares: the stderr console and its one-line reports, the options that several
commands take (declared once here), loading the model with every refusal up front, and the status
line a long run prints into a log."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, ProgressColumn

from .. import weights as w

if TYPE_CHECKING:
    from ..edits import Output
    from ..engine import Model
    from ..pipeline import Job

# Typer reads the annotations at run time, so they stay typing.Optional for Python 3.9.
# ruff: noqa: UP045

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
WEIGHTS_DIR_HELP = "Folder holding the model files (default: $HFGI_HOME, ./weights, or the user cache)."
WeightsDirOpt = typer.Option(None, "--weights-dir", help=WEIGHTS_DIR_HELP)
DIRECTIONS_HELP = ("Folder of edit files laid out as the weights folder (interfacegan/, ganspace/, stit/, gradctrl/, "
                   "styleclip/). Default: the weights folder.")
DirectionsOpt = typer.Option(None, "--directions", help=DIRECTIONS_HELP)
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
def _detector_name(value: str) -> str:
    if value not in ("hog", "cnn"):
        raise typer.BadParameter(f"must be hog or cnn, not {value!r}")
    return value


DetectorOpt = typer.Option(
    "hog", "--detector", callback=_detector_name, metavar="hog|cnn",
    help="Face detector: hog (dlib's HOG detector; its weak hits, e.g. faces under caps or in side light, "
    "confirmed by dlib's CNN on a small crop, a fraction of a second each) or cnn (dlib's CNN over the whole "
    "photo, upright: ~10x slower, ~30 s for a 1600x1000 photo on a 2-core CPU).",
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
JSON_HELP = "One JSON object per input on stdout (and nothing else there)."
JsonOpt = typer.Option(False, "--json", help=JSON_HELP)
RayOpt = typer.Option(
    False, "--ray",
    help="Run on a Ray cluster: --ray-address, else $RAY_ADDRESS, else one started with `ray start` on this "
    "machine, else a local one for the run. Detection on CPU tasks, the model on one actor per GPU (CPU actors "
    "without GPUs); the same outputs, --json lines and exit status. INPUT and OUT may be URIs (s3://, gs://, "
    "file://). Needs `pip install 'hfgi-cli\\[ray]'`.",
)
TextOpt = typer.Option(
    [], "--text", "-t", metavar="PROMPT",
    help="A text edit (StyleCLIP global direction), e.g. --text \"face with curly hair\"; repeatable. Needs "
    "`pip install 'hfgi-cli\\[text]'` and `hfgi weights download styleclip`. Strength: -10..10 (3-5 is typical).",
)
NeutralOpt = typer.Option(
    None, "--neutral", metavar="PROMPT",
    help="With --text: the same description without the change (e.g. \"face with hair\"); default \"face\".",
)
BetaOpt = typer.Option(
    None, "--beta",
    help="With --text: how relevant a style channel must be to move, 0..1 exclusive (default 0.15; higher: "
    "fewer channels, a more focused edit).",
)
DetailOpt = typer.Option(
    1.0, "--detail", min=0.0, max=1.0,
    help="How much of the input's own detail HFGI brings back: 1 the published model, 0 the plain e4e edit "
    "(lower it when an edit that removes something, hair or glasses, brings it back).",
)
CombineOpt = typer.Option(
    False, "--combine",
    help="All the edits together in one output (e.g. older and smiling, named <name>_age+2_smile+1.5) instead "
    "of one output each.",
)
RayAddressOpt = typer.Option(None, "--ray-address", metavar="ADDR", help="With --ray: the cluster to join.")
WorkersOpt = typer.Option(
    None, "--workers", min=1,
    help="With --ray: model actors (default: one per GPU of the cluster; without GPUs, one per 8 of half its CPUs).",
)


# ----------------------------------------------------------------------------- model and edits
def load_for_run(
    checkpoint: Optional[Path],
    weights_dir: Optional[Path],
    directions: Optional[Path],
    device: str,
    precision: str,
    batch_size: Optional[int],
    edits: list[Output],
) -> Model:
    """Everything that can refuse a run, checked before any input is touched (exit 2 on failure):
    the edit names and options, the files a text edit needs, the precision, the checkpoint, the
    device, and every edit's file."""
    from ..edits import EditError, check_names
    from ..engine import load_model
    from ..models.hfgi import CheckpointError

    try:
        check_names(edits)  # unknown names, duplicates, a missing extra fail before the checkpoint is read
        if any(part.text is not None for output in edits for part in output.parts):
            from ..edits.styleclip import check_files

            check_files(Path(directions).expanduser() if directions else w.resolve_weights_dir(weights_dir))
        model = load_model(checkpoint, device=device, precision=precision, directions=directions,
                           weights_dir=weights_dir, batch_size=batch_size)
        model.edit_specs(edits)
    except (CheckpointError, EditError, w.WeightsError, ValueError) as exc:
        fail(str(exc))
    return model


def edit_specs_from_options(
    attrs: list[str],
    strengths: list[float],
    directions: list[Path],
    texts: Optional[list[str]] = None,
    neutral: Optional[str] = None,
    beta: Optional[float] = None,
    detail: float = 1.0,
    combine: bool = False,
) -> list[Output]:
    """The outputs that --attr, --direction and --text ask for (with their --strength values in
    that order), one each, or one with all of them (--combine); bad values exit 2 here."""
    from ..edits import EditError, EditSpec, as_edit_specs, text_spec

    texts = texts or []
    count = len(attrs) + len(directions) + len(texts)
    if not count:
        fail("give at least one --attr NAME (see --list-attrs), --direction FILE or --text PROMPT")
    if len(strengths) == 1 and count > 1:
        strengths = strengths * count
    if not strengths:
        strengths = [1.0] * count
    if len(strengths) != count:
        fail(f"{count} edits but {len(strengths)} --strength values; give one per edit (or one for all)")
    if (neutral is not None or beta is not None) and not texts:
        fail("--neutral and --beta go with --text")
    try:
        specs = [EditSpec(a, s, detail=detail) for a, s in zip(attrs, strengths)]
        specs += [EditSpec(p.stem, s, str(p), detail=detail) for p, s in zip(directions, strengths[len(attrs):])]
        specs += [text_spec(t, s, neutral=neutral, beta=beta, detail=detail)
                  for t, s in zip(texts, strengths[len(attrs) + len(directions):])]
        return as_edit_specs(specs, combine=combine, detail=detail)
    except EditError as exc:
        fail(str(exc))


def face_indices(text: Optional[str], aligned: bool) -> Optional[list[int]]:
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
