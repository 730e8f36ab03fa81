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
from typing import TYPE_CHECKING, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, ProgressColumn
from typer.core import TyperCommand, TyperGroup

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


def runtime_line(model: Model) -> str:
    """Where the model runs and in what precision, and why (auto's choice is the CPU's or GPU's)."""
    runtime = model.runtime
    why = runtime.reason if runtime.reason.startswith("auto:") else f"{runtime.precision}, {runtime.reason}"
    exact = "" if runtime.precision == "fp32" else "; --precision fp32 is the exact published computation"
    return f"running on {runtime.device}; precision {why}{exact}"


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


# ----------------------------------------------------------------------------- help texts
def _plain_metavars(params: list[Any]) -> list[Any]:
    """Flags show no value; arguments show their metavar alone (see ``Command``)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # a flag takes no value
        if param.param_type_name == "argument" and hasattr(param, "display_type_rich"):
            param.display_type_rich = _no_type  # the metavar says it
    return params


class Command(TyperCommand):
    """Every hfgi command: its help names values by their metavars (OUT, FILE, N) and shows none
    for flags. Recent Typer labels each parameter with its Python type instead (``<str>``,
    ``<list[str]>``, ``<bool>``) and writes a required argument as ``{inputs}...``; older Typer
    shows the metavars already, so this changes nothing there."""

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _plain_metavars(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                pieces += param.get_usage_pieces(ctx)
                continue
            name = (param.metavar or param.name or "").upper() + ("..." if param.nargs != 1 else "")
            pieces.append(name if param.required else f"[{name}]")
        return pieces


def _no_type(ctx: typer.Context) -> None:
    return None


class Group(TyperGroup):
    """``hfgi`` and ``hfgi weights``: their own options (--help, --version) as ``Command`` shows them."""

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _plain_metavars(super().get_params(ctx))


def inputs_arg(example: str) -> Any:
    """The INPUT... argument of invert/edit; its help shows where a photo's image output goes, by
    ``example``, the command's output name (``{stem}_smile+2.{ext}``)."""
    def out(stem: str, ext: str = "jpg") -> str:
        return "OUT/" + example.format(stem=stem, ext=ext)

    return typer.Argument(
        ..., metavar="INPUT",
        help="Image files, folders (their images and .pt latents, sorted, recursively), .pt latents, or - for "
        "paths on stdin (one a line). Outputs are named after each input under OUT: a photo given by path "
        f"x.jpg -> {out('x')}; a file in a folder keeps its path inside it (faces/sub/x.jpg -> "
        f"{out('sub/x')}), under the folder's name when several folders are given (a/x.jpg b/x.jpg -> "
        f"{out('a/x')} {out('b/x')}); names still clashing get -1, -2 (x.jpg x.png -> {out('x')} "
        f"{out('x-1', 'png')}). With --ray also URIs (s3://, gs://, file://).",
    )


# ----------------------------------------------------------------------------- shared options
OutOpt = typer.Option(
    ..., "-o", "--out", metavar="OUT", help="Output folder (created if missing); with --ray also a URI."
)
CheckpointOpt = typer.Option(
    None, "--checkpoint", "-c", metavar="FILE", help="HFGI checkpoint (.pt). Default: the one in the weights folder."
)
WEIGHTS_DIR_HELP = "Folder holding the model files (default: $HFGI_HOME, ./weights, or the user cache)."
WeightsDirOpt = typer.Option(None, "--weights-dir", metavar="DIR", help=WEIGHTS_DIR_HELP)
DIRECTIONS_HELP = ("Folder of edit files laid out as the weights folder (interfacegan/, ganspace/, stit/, gradctrl/, "
                   "styleclip/). Default: the weights folder.")
DirectionsOpt = typer.Option(None, "--directions", metavar="DIR", help=DIRECTIONS_HELP)
DirectionOpt = typer.Option(
    [], "--direction", metavar="FILE", help="Custom direction file (.pt/.npy; 512, 1x512 or n_latent x 512)."
)
BatchOpt = typer.Option(
    None, "--batch-size", "-b", min=1, metavar="N",
    help="Faces per model batch (default: 8 on a GPU; 1 on a CPU, where batching brings nothing).",
)
DeviceOpt = typer.Option("auto", "--device", metavar="DEVICE", help="auto | cpu | cuda | mps")
PrecisionOpt = typer.Option(
    "auto", "--precision", metavar="P",
    help="auto | fp32 | fp16 | bf16. fp32 is the exact published model; fp16 (GPU) and bf16 autocast the "
    "convolutions. auto: fp16 on a CUDA GPU, bf16 on a CPU that computes it natively (AMX-BF16 or "
    "AVX512-BF16: ~2x fp32, within a few uint8 levels), else fp32. The choice is in the .pt files and --json.",
)
AlignedOpt = typer.Option(
    False, "--aligned/--detect",
    help="--aligned: inputs are FFHQ-aligned face crops, used as they are (crop in, crop out). "
    "Default: find every face, align it, edit it and paste it back into the photo.",
)
SaveCropsOpt = typer.Option(False, "--save-crops", help="Also write each face's edited aligned crop (PNG).")
MaxFacesOpt = typer.Option(None, "--max-faces", min=1, metavar="N", help="At most N faces per photo (the largest).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Redo inputs whose outputs already exist.")
FacesOpt = typer.Option(
    None, "--faces", metavar="K,K,...",
    help="Edit only these faces of each photo (indices in reading order, as `hfgi align` numbers them); "
    "the others stay untouched.",
)
MinFaceOpt = typer.Option(
    None, "--min-face", min=80, metavar="PX",  # 80: align.MIN_QSIZE, which detect.find_faces enforces too
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
    "confirmed by dlib's CNN on a small crop, ~7 ms each) or cnn (dlib's CNN over the whole photo, upright: "
    "2-3.5x the time, ~6 s for a 12 MP photo on a 2-core CPU).",
)
LatentsOpt = typer.Option(
    "full", "--latents", metavar="MODE",
    help="Latent files beside the outputs: full (W+ codes and the float16 distortion map: any later edit "
    "from the file, no encoder), codes (the W+ codes only, ~75 KB for the published model), none.",
)
PreviewOpt = typer.Option(
    False, "--preview",
    help="Also write OUT/<name>_preview.jpg: the original with its faces boxed and numbered, the inversion, "
    "then each edit.",
)
QualityOpt = typer.Option(
    False, "--quality",
    help="Measure how faithful each face's inversion is: identity distance (dlib face recognition; above 0.6 "
    "it may not pass for the same person, and a warning names the face), PSNR and SSIM on the aligned 256 px "
    "crop; in the .pt files, the --json lines and the summary. Costs ~0.2 s a face on a CPU (~5 % of an "
    "inversion); an edit also decodes the inversion for it (one more generator pass a face).",
)
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bar.")
JSON_HELP = ("JSON Lines on stdout (one object per input, nothing else there; not one JSON document): input, "
             "outputs, faces, status, error, seconds (from the start of reading that input to its last output "
             "written; inputs overlap in the pipeline, so a run's seconds add up to more than its wall time), "
             "quality.")
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
    None, "--beta", metavar="B",
    help="With --text: how relevant a style channel must be to move, 0..1 exclusive (default 0.15; higher: "
    "fewer channels, a more focused edit).",
)


def _detail_fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise typer.BadParameter(f"takes a value from 0 to 1, not {value:g}")
    return value


DetailOpt = typer.Option(
    1.0, "--detail", metavar="D", callback=_detail_fraction,  # not min/max: typer's range label is wide
    help="0..1: how much of the input's own detail HFGI brings back: 1 the published model, 0 the plain e4e edit "
    "(lower it when an edit that removes something, hair or glasses, brings it back).",
)
CombineOpt = typer.Option(
    False, "--combine",
    help="All the edits together in one output (e.g. older and smiling, named <name>_age+2_smile+1.5) instead "
    "of one output each.",
)
RayAddressOpt = typer.Option(None, "--ray-address", metavar="ADDR", help="With --ray: the cluster to join.")
WorkersOpt = typer.Option(
    None, "--workers", min=1, metavar="N",
    help="With --ray: model actors (default: one per GPU of the cluster; without GPUs, one per 8 of half its CPUs).",
)


# ----------------------------------------------------------------------------- output places
def check_out_folder(out: Path) -> None:
    """-o OUT, a folder, must be one that outputs can be written into (exit 2 otherwise): checked
    before the model is loaded, so a bad -o costs no model time and is not blamed on an input."""
    from ..atomic import folder_problem

    problem = folder_problem(out)
    if problem:
        fail(f"-o {out}: {problem}")


def check_out_file(out: Path) -> None:
    """-o OUT.mp4, a file: not a folder, and its folder one that can be written into (exit 2)."""
    from ..atomic import folder_problem

    if out.is_dir():
        fail(f"-o {out}: is a folder, not a file")
    problem = folder_problem(out.parent)
    if problem:
        fail(f"-o {out}: its folder {out.parent}: {problem}")


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

    The time left is estimated from the inputs that were processed (skipped ones take no time): the
    time per input as of the last one finished, counted down from then, so that the estimate does not
    grow while a slow input is under way (past zero it says so, and what the inputs after that one
    take). Before the first input is finished there is none."""

    def __init__(self, what: str, total: int, every: float = 30.0) -> None:
        self.what, self.total, self.every = what, total, every
        self.lock = threading.Lock()
        self.done = self.processed = self.faces = 0
        self.started = self.last = time.monotonic()
        self._stop = threading.Event()

    def count(self, job: Job) -> None:
        self.done += 1
        self.faces += job.n_faces
        if job.status in ("ok", "error"):
            self.processed += 1
            self.last = time.monotonic()

    def text(self, short: bool = False) -> str:
        now = time.monotonic()
        parts = [f"{self.faces} face{'s' * (self.faces != 1)}"]
        if self.processed and self.last > self.started:
            per_input = (self.last - self.started) / self.processed
            parts.append(f"{1 / per_input:.2f} img/s" if per_input < 1 else f"{_duration(per_input)} an input")
            if self.done < self.total:
                left = (self.total - self.done) * per_input - (now - self.last)
                after = (self.total - self.done - 1) * per_input  # once the input under way is done
                if left > 0:
                    parts.append(f"~{_duration(left)} left")
                elif after > 0:
                    parts.append(f"over the estimate: ~{_duration(after)} left after the input under way")
                else:
                    parts.append("over the estimate, on the last input")
        elif self.done < self.total:
            parts.append(f"{_duration(now - self.started)} so far (time left: after the first input)")
        line = ", ".join(parts)
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
