"""The streaming pipeline: the engine's three stages over many inputs (``hfgi invert|edit``).

    reader threads   Model.prepare / prepare_latent     decode, detect, align      (I/O, dlib)
    main thread      Model.forward                      batches mixing faces of many inputs
    writer threads   Model.finish, then the files       paste-back, encode, rename into place

The queues between them are bounded, so memory does not grow with the number of inputs; decoding
and PNG/JPEG encoding release the GIL, so a few reader and writer threads keep a GPU fed, and on
a 2-core CPU one of each overlaps I/O with the model without competing for it.

Outputs of one input (``item.rel`` is its place under OUT, see ``inputs.collect_inputs``), per
edit label (none for an inversion):

- a photo: ``OUT/<rel>[_<label>].<its suffix>`` with every face pasted back (``.jpg`` with a note
  when its format can be read here but not written, ``images.output_suffix``), and one latent file
  ``OUT/<rel>[_<label>]_<k>.pt`` per face k (``--save-crops``: also ``..._<k>.png``; ``<k>`` is
  zero-padded beyond ten faces, ``inputs.face_name``);
- an aligned crop or a latent file: ``OUT/<rel>[_<label>].png`` and ``.pt``;
- ``--preview``: ``OUT/<rel>_preview.jpg``; ``--latents codes|none``: smaller or no ``.pt`` files;
- ``--sweep``: only ``OUT/<rel>_sweep-<attr>_<k>.jpg`` per face, then ``OUT/<rel>_sweep-<attr>.json``.

With ``--quality`` each face's inversion is measured (identity distance, PSNR, SSIM; an edit
decodes it for this); the numbers go into its latent files and the input's JSON report, and faces
above the identity threshold get a warning.

Every file is written atomically, each input's images after its latent files and the sweep's
record after its grids, so on a re-run the planned files that exist (and fit the options) mean
the input is done and it is skipped.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from . import previews
from .atomic import remove_stale_temps, write_bytes
from .edits import EditSpec, Output, describe
from .engine import INVERSION, Face, FaceWork, Model, Result, Work
from .images import format_of, output_suffix, save_image, save_photo
from .inputs import IMAGE_EXTS, LATENT_EXTS, InputError, InputItem, face_name
from .interrupt import exit_status, stop_on_signals
from .latents import latent_fits, make_record, save_record
from .quality import FaceQuality
from .reasons import short_reason

_DONE = object()


LATENT_MODES = ("full", "codes", "none")


@dataclass(frozen=True)
class Sweep:
    """``--sweep attr=from:to:count``: one edit at evenly spaced strengths, shown as a grid per face."""

    attr: str
    strengths: tuple[float, ...]
    detail: float = 1.0

    @property
    def specs(self) -> list[EditSpec]:
        return [EditSpec(self.attr, s, detail=self.detail) for s in self.strengths]


@dataclass
class RunOptions:
    out_dir: Path
    edits: list[Output]  # empty: plain inversion
    aligned: bool = False
    overwrite: bool = False
    save_crops: bool = False
    max_faces: int | None = None
    faces: list[int] | None = None  # edit only these faces of each photo (reading order)
    min_face: float | None = None  # the detector's smallest face (FFHQ crop px); None: its default
    detector: str = "hog"  # hog (weak hits confirmed by the CNN) | cnn (the CNN everywhere, 2-3.5x slower)
    latents: str = "full"  # full (codes + float16 distortion map) | codes | none
    preview: bool = False  # also OUT/<name>_preview.jpg: original, inversion, each edit
    sweep: Sweep | None = None  # instead of the outputs: one grid per face across strengths
    quality: bool = False  # measure each face's inversion (decoding it for an edit)
    prefetch: int = 8
    io_workers: int = 0  # reader and writer threads each; 0: half the CPU cores, 1..8


@dataclass
class Job:
    """One input file: its work between the stages, its outputs and its outcome (one JSON line)."""

    item: InputItem
    work: Work | None = None
    outputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # non-fatal remarks (skipped tiny faces)
    status: str = "pending"  # pending | ok | skipped | error
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    n_faces: int = 0
    pending_faces: int = 0
    quality: list[tuple[int, FaceQuality]] | None = None  # (face index, its inversion's quality) when measured
    precision: str | None = None  # what the model ran in: fp32 (exact), fp16, bf16

    def report(self) -> dict[str, Any]:
        quality = None if self.quality is None else [{"face": k, **q.to_json()} for k, q in self.quality]
        return {
            "input": self.item.source,
            "outputs": self.outputs,
            "faces": self.n_faces,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "quality": quality,
            "precision": self.precision,
        }

    def warnings(self) -> list[str]:
        """One line per face whose reconstruction does not pass for the same person."""
        return [q.warning(self.item.source, k) for k, q in self.quality or [] if q.suspect]

    def fail(self, message: str) -> None:
        self.status, self.error, self.work = "error", message, None


@dataclass
class RunSummary:
    jobs: list[Job]
    stopped_by: int | None = None
    """The signal that stopped the run (SIGINT, SIGTERM), if one did."""

    @property
    def interrupted(self) -> bool:
        return self.stopped_by is not None

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "error"]

    @property
    def exit_code(self) -> int:
        if self.stopped_by is not None:
            return exit_status(self.stopped_by)
        return 1 if self.failed else 0


class Pipeline:
    """Runs one command (invert or edit) over many inputs with one loaded model; can run again."""

    def __init__(self, model: Model, options: RunOptions) -> None:
        if options.latents not in LATENT_MODES:
            raise ValueError(f"--latents must be one of {', '.join(LATENT_MODES)}, not {options.latents!r}")
        if options.sweep is not None and options.quality:
            raise ValueError("--sweep writes only its grids: drop --quality")
        model.edit_specs(options.sweep.specs if options.sweep else options.edits)  # bad edits fail before any input
        self.model = model
        self.opts = options
        self.outputs: list[Output | None] = list(options.edits) or [None]
        """The edits whose photos (and latent files) are written, in order."""
        if options.sweep is not None:
            self.slots: list[Output | None] = list(options.sweep.specs)
        elif (options.preview or options.quality) and options.edits:
            self.slots = [None, *options.edits]  # the preview shows the inversion; quality measures it
        else:
            self.slots = list(self.outputs)
        self.paste: list[str] | bool = False if options.sweep is not None else [
            INVERSION if slot is None else slot.label for slot in self.slots if slot in self.outputs or options.preview
        ]
        """The labels whose photos are composed: the outputs, and for a preview the inversion too."""

    # ------------------------------------------------------------------ the output layout
    def _detects(self, item: InputItem) -> bool:
        """Photos go through detection and paste-back; crops (--aligned) and latents do not."""
        return not self.opts.aligned and not item.is_latent

    def _stem(self, item: InputItem, suffix: str) -> Path:
        return self.opts.out_dir / item.rel.parent / (item.rel.name + suffix)

    def image_path(self, item: InputItem, slot: Output | None) -> Path:
        stem = self._stem(item, f"_{slot.label}" if slot is not None else "")
        return stem.with_name(stem.name + (output_suffix(item.path.suffix) if self._detects(item) else ".png"))

    def preview_path(self, item: InputItem) -> Path:
        return self._stem(item, "_preview.jpg")

    def sweep_path(self, item: InputItem, index: int, n_faces: int) -> Path:
        assert self.opts.sweep is not None
        return self._stem(item, "").with_name(face_name(f"{item.rel.name}_sweep-{self.opts.sweep.attr}", index,
                                                        n_faces) + ".jpg")

    def sweep_record_path(self, item: InputItem) -> Path:
        assert self.opts.sweep is not None
        return self._stem(item, f"_sweep-{self.opts.sweep.attr}.json")

    def _sweep_record(self) -> dict[str, Any]:
        assert self.opts.sweep is not None
        return {"attr": self.opts.sweep.attr, "strengths": list(self.opts.sweep.strengths), "faces": self.opts.faces,
                "min_face": self.opts.min_face, "max_faces": self.opts.max_faces, "detector": self.opts.detector}

    def planned_outputs(self, item: InputItem) -> list[Path]:
        """The files whose presence means the input is done (each is written last of its kind)."""
        if self.opts.sweep is not None:
            return [self.sweep_record_path(item)]
        planned = [self.image_path(item, slot) for slot in self.outputs]
        if not self._detects(item) and self.opts.latents != "none":
            planned += [path.with_suffix(".pt") for path in planned]
        if self.opts.preview:
            planned.append(self.preview_path(item))
        return planned

    def is_done(self, item: InputItem) -> bool:
        """Every planned output exists and fits this run's options: safe to skip on a re-run.

        A photo's image is written after its faces' latent files, so its presence vouches for them
        once one of them shows they were written as ``--latents`` asks (a run with ``--latents
        none`` or ``codes`` does not count as done for ``full``); a sweep is done when its record
        (written after the grids) holds the same strengths and faces."""
        if self.opts.sweep is not None:
            try:
                with self.fetched(self.sweep_record_path(item)) as record:
                    return json.loads(record.read_text(encoding="utf-8")) == self._sweep_record()
            except (OSError, ValueError):
                return False
        planned = self.planned_outputs(item)
        if not all(self.is_file(p) for p in planned):
            return False
        if self.opts.latents == "none":
            return True
        if self._detects(item):  # one face's file stands for all (face numbers are known after detection)
            image = planned[0]
            planned = self.matches(image.parent, glob.escape(image.stem) + "_*.pt")[:1]
            if not planned:
                return False
        return all(self._fits(p) for p in planned if p.suffix == ".pt")

    def _fits(self, path: Path) -> bool:
        try:
            with self.fetched(path) as local:
                return latent_fits(local, full=self.opts.latents == "full")
        except OSError:
            return False

    # where ``is_done`` looks (a subclass looks elsewhere: ``ray.RemoteOutputs``, outputs on a pyarrow filesystem)
    def is_file(self, path: Path) -> bool:
        return path.is_file()

    def matches(self, folder: Path, pattern: str) -> list[Path]:
        """The files in ``folder`` whose names match ``pattern``, sorted."""
        return sorted(folder.glob(pattern))

    @contextlib.contextmanager
    def fetched(self, path: Path) -> Iterator[Path]:
        """An output, as a local file to read."""
        yield path

    # ------------------------------------------------------------------ stage 1
    def read(self, job: Job) -> None:
        """Skip finished work, refuse to overwrite an input, else run the engine's ``prepare``."""
        item = job.item
        source = item.path.resolve()
        if any(path.resolve() == source for path in self.planned_outputs(item)):
            raise InputError(f"{item.path}: its output would overwrite it; choose another -o folder")
        if not self.opts.overwrite and self.is_done(item):
            job.status = "skipped"
            return
        if item.is_latent:
            job.work = self.model.prepare_latent(item.path)
        else:
            job.work = self.model.prepare(item.path, aligned=self.opts.aligned, max_faces=self.opts.max_faces,
                                          faces=self.opts.faces if self._detects(item) else None,
                                          min_face=self.opts.min_face, detector=self.opts.detector)
        job.notes += job.work.notes

    # ------------------------------------------------------------------ stage 3
    def write(self, job: Job, result: Result) -> None:
        """Save every output of a finished job atomically: per edit the faces' latent files (and
        crops), then the image; then the preview. With --sweep, the grids only."""
        item = job.item
        job.precision = next((face.precision for face in result.faces if face.precision), None)
        if self.opts.sweep is not None:
            self._write_sweep(job, result)
            return
        if self.opts.quality:
            job.quality = [(face.index, face.quality) for face in result.faces if face.quality is not None]
        for slot in self.outputs:
            key = slot.label if slot is not None else INVERSION
            image_path = self.image_path(item, slot)
            if result.photo is None:  # a crop or a latent file: one face, its image and latent side by side
                written = [image_path]
                if self.opts.latents != "none":
                    written.append(image_path.with_suffix(".pt"))
                    save_record(self._record(result, result.faces[0], key, slot), written[1])
                save_image(result.images[key], image_path)
                job.outputs += [str(p) for p in written]
                continue
            for face in result.faces:
                base = image_path.with_name(face_name(image_path.stem, face.index, result.n_faces))
                if self.opts.latents != "none":
                    save_record(self._record(result, face, key, slot), base.with_suffix(".pt"))
                    job.outputs.append(str(base.with_suffix(".pt")))
                if self.opts.save_crops:
                    save_image(face.crops[key], base.with_suffix(".png"))
                    job.outputs.append(str(base.with_suffix(".png")))
            save_photo(result.photo, result.images[key], image_path)
            job.outputs.append(str(image_path))
        if self._detects(item) and output_suffix(item.path.suffix) != item.path.suffix.lower():
            job.notes.append(f"{item.source}: written as JPEG ({format_of(item.path.suffix)} cannot be written here)")
        if self.opts.preview:
            path = self.preview_path(item)
            save_image(self._preview(result), path, quality=88)
            job.outputs.append(str(path))

    def _record(self, result: Result, face: Face, key: str, slot: Output | None) -> dict[str, Any]:
        alignment = face.alignment.to_json() if face.alignment is not None else None
        distortion = face.distortion if self.opts.latents == "full" else None
        return make_record(face.codes[key], face.latent, distortion, edit=slot.label if slot is not None else None,
                           edit_spec=describe(slot) if slot is not None else None, checkpoint=self.model.checkpoint,
                           source=result.meta, face=face.index,
                           alignment=alignment, quality=face.quality.to_json() if face.quality else None,
                           precision=face.precision)

    def _preview(self, result: Result) -> Image.Image:
        """Original (faces boxed and numbered), inversion, then each edit."""
        panels: list[tuple[str, Image.Image]] = []
        boxes = []
        if result.photo is not None:
            panels.append(("original", result.photo.image))
            boxes = [(str(face.index), face.alignment.quad) for face in result.faces if face.alignment is not None]
        elif result.faces[0].input is not None:
            panels.append(("original", result.faces[0].input))
        return previews.strip(panels + list(result.images.items()), boxes)

    def _write_sweep(self, job: Job, result: Result) -> None:
        for face in result.faces:
            cells = [("original", face.input)] if face.input is not None else []
            cells += [(f"{self.opts.sweep.attr} {s.strength:+g}", face.crops[s.label])  # type: ignore[union-attr]
                      for s in self.slots if s is not None]
            path = self.sweep_path(job.item, face.index, result.n_faces)
            save_image(previews.grid(cells), path, quality=90)
            job.outputs.append(str(path))
        record = self.sweep_record_path(job.item)
        write_bytes(record, (json.dumps(self._sweep_record()) + "\n").encode())
        job.outputs.append(str(record))

    # ------------------------------------------------------------------ one job, failures recorded
    def read_job(self, job: Job) -> None:
        """``read``, a failure recorded on the job: a bad input fails only itself."""
        try:
            self.read(job)
        except InputError as exc:
            job.fail(str(exc))
        except Exception as exc:  # a bug or an odd file must not stop the other inputs
            job.fail(f"{job.item.source}: {exc.__class__.__name__}: {exc}")

    def write_job(self, job: Job) -> None:
        """``Model.finish`` and ``write`` for a job whose faces went through the model; a failure is
        recorded on the job. Its work (images and codes) is released either way."""
        try:
            assert job.work is not None
            self.write(job, self.model.finish(job.work, self.slots, paste=self.paste, quality=self.opts.quality))
            job.status = "ok"
        except Exception as exc:
            job.fail(f"{job.item.source}: cannot write output ({exc})")
        job.work = None

    # ------------------------------------------------------------------ driver
    def run(self, items: Sequence[InputItem], on_done: Callable[[Job], None]) -> RunSummary:
        """Process every input; ``on_done`` is called once per job (from a writer or the main thread)."""
        remove_stale_temps(self.opts.out_dir, set(IMAGE_EXTS | LATENT_EXTS))  # half-written files of a killed run
        jobs = [Job(item) for item in items]
        run = _Run(self, jobs, on_done)
        stopped_by = run.start()
        if run.callback_error is not None:
            raise run.callback_error
        return RunSummary(jobs, stopped_by=stopped_by)


class _Run:
    """The threads and queues of one ``Pipeline.run``."""

    def __init__(self, pipeline: Pipeline, jobs: list[Job], on_done: Callable[[Job], None]) -> None:
        self.p = pipeline
        self.model = pipeline.model
        self.on_done = on_done
        self.stop = threading.Event()  # shutting down (end of input, a stop signal, or a failing callback)
        self.signals: list[int] = []  # SIGINT / SIGTERM seen
        self.callback_error: BaseException | None = None
        self.jobs = iter(jobs)
        self.jobs_lock = threading.Lock()
        self.workers = pipeline.opts.io_workers or max(1, min(8, (os.cpu_count() or 2) // 2))
        self.read_q: queue.Queue[Any] = queue.Queue(maxsize=max(2, pipeline.opts.prefetch))
        self.write_q: queue.Queue[Any] = queue.Queue(maxsize=max(2, self.model.batch_size * 2))

    def start(self) -> int | None:
        """Run to the end (or to SIGINT / SIGTERM); returns the signal that stopped it, if one did."""
        readers = [threading.Thread(target=self.reader, daemon=True, name=f"hfgi-reader-{i}")
                   for i in range(self.workers)]
        writers = [threading.Thread(target=self.writer, daemon=True, name=f"hfgi-writer-{i}")
                   for i in range(self.workers)]
        for thread in readers + writers:
            thread.start()
        with stop_on_signals(self.stop, self.signals):
            try:
                for batch in self.batches():
                    try:
                        self.model.forward([face for _, face in batch], self.p.slots)
                    except Exception as exc:  # e.g. out of GPU memory: fail these inputs, go on
                        self.fail_batch(batch, exc)
                    for job in _completed_jobs(batch):
                        self.write_q.put(job)
                    if self.stop.is_set():
                        break
                return self.signals[0] if self.signals else None
            finally:
                self.stop.set()
                for _ in writers:
                    self.write_q.put(_DONE)
                for thread in writers:
                    thread.join()
                while any(thread.is_alive() for thread in readers):  # drain, so readers can exit
                    with contextlib.suppress(queue.Empty):
                        self.read_q.get(timeout=0.1)

    def reader(self) -> None:
        """Prepare jobs taken from the shared iterator."""
        try:
            while not self.stop.is_set():
                with self.jobs_lock:
                    job = next(self.jobs, None)
                if job is None:
                    break
                job.started = time.perf_counter()
                self.p.read_job(job)
                self.read_q.put(job)
        finally:
            self.read_q.put(_DONE)

    def batches(self) -> Iterator[list[tuple[Job, FaceWork]]]:
        """Faces of prepared jobs in model batches; finished or failed jobs are reported here."""
        batch: list[tuple[Job, FaceWork]] = []
        readers_left = self.workers
        while readers_left:
            job = self.read_q.get()
            if job is _DONE:
                readers_left -= 1
                continue
            if job.work is None:  # skipped or failed while reading
                self.done(job)
                continue
            job.pending_faces = job.n_faces = len(job.work.faces)
            for face in job.work.faces:
                batch.append((job, face))
                if len(batch) >= self.model.batch_size:
                    yield batch
                    batch = []
            if self.stop.is_set():
                return
        if batch and not self.stop.is_set():
            yield batch

    def writer(self) -> None:
        while True:
            job = self.write_q.get()
            if job is _DONE:
                return
            self.p.write_job(job)
            self.done(job)

    def done(self, job: Job) -> None:
        job.seconds = time.perf_counter() - job.started
        try:
            self.on_done(job)
        except Exception as exc:  # keep draining: a dead writer would block the main thread forever
            self.callback_error = self.callback_error or exc
            self.stop.set()

    def fail_batch(self, batch: list[tuple[Job, FaceWork]], exc: Exception) -> None:
        for job in {id(job): job for job, _ in batch}.values():  # each once, in order
            if job.status != "error":
                job.fail(model_failure(job, exc))
                self.done(job)


def _completed_jobs(batch: list[tuple[Job, FaceWork]]) -> list[Job]:
    """Jobs whose last face was in this batch, in order."""
    done: list[Job] = []
    for job, _ in batch:
        job.pending_faces -= 1
        if job.pending_faces == 0 and job.status != "error":
            done.append(job)
    return done


def model_failure(job: Job, exc: BaseException) -> str:
    """The one-line error of an input whose model batch failed (e.g. out of GPU memory)."""
    hint = "; try a smaller --batch-size" if "out of memory" in str(exc).lower() else ""
    return f"{job.item.source}: model failed ({failure_reason(exc)}){hint}"


def failure_reason(exc: BaseException) -> str:
    """An exception in a few words for a one-line error: its first line, else its class name."""
    return short_reason(exc, 160) if str(exc).strip() else exc.__class__.__name__
