"""The streaming pipeline: the engine's three stages over many inputs (``hfgi invert|edit``).

    reader threads   Model.prepare / prepare_latent     decode, detect, align      (I/O, dlib)
    main thread      Model.forward                      batches mixing faces of many inputs
    writer threads   Model.finish, then the files       paste-back, encode, rename into place

The queues between them are bounded, so memory does not grow with the number of inputs; decoding
and PNG/JPEG encoding release the GIL, so a few reader and writer threads keep a GPU fed, and on
a 2-core CPU one of each overlaps I/O with the model without competing for it.

Outputs of one input (``item.rel`` is its place under OUT, see ``inputs.collect_inputs``), per
edit label (none for an inversion):

- a photo: ``OUT/<rel>[_<label>].<its suffix>`` with every face pasted back, and one latent file
  ``OUT/<rel>[_<label>]_<k>.pt`` per face k (``--save-crops``: also ``..._<k>.png``);
- an aligned crop or a latent file: ``OUT/<rel>[_<label>].png`` and ``.pt``.

Every file is written atomically, the image last, so on a re-run an existing image means its
outputs are complete and the input is skipped.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import remove_stale_temps
from .edits import EditSpec
from .engine import INVERSION, FaceWork, Model, Result, Work
from .images import save_image, save_photo
from .inputs import IMAGE_EXTS, LATENT_EXTS, InputError, InputItem
from .interrupt import stop_on_sigint
from .latents import is_complete_latent, make_record, save_record

_DONE = object()


@dataclass
class RunOptions:
    out_dir: Path
    edits: list[EditSpec]  # empty: plain inversion
    aligned: bool = False
    overwrite: bool = False
    save_crops: bool = False
    max_faces: int | None = None
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

    def report(self) -> dict[str, Any]:
        return {
            "input": str(self.item.path),
            "outputs": self.outputs,
            "faces": self.n_faces,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }

    def fail(self, message: str) -> None:
        self.status, self.error, self.work = "error", message, None


@dataclass
class RunSummary:
    jobs: list[Job]
    interrupted: bool = False

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "error"]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed else 0


class Pipeline:
    """Runs one command (invert or edit) over many inputs with one loaded model; can run again."""

    def __init__(self, model: Model, options: RunOptions) -> None:
        self.model = model
        self.opts = options
        self.slots: list[EditSpec | None] = list(options.edits) or [None]

    # ------------------------------------------------------------------ the output layout
    def _detects(self, item: InputItem) -> bool:
        """Photos go through detection and paste-back; crops (--aligned) and latents do not."""
        return not self.opts.aligned and not item.is_latent

    def planned_outputs(self, item: InputItem) -> list[tuple[Path, Path]]:
        """(image, first latent file) per edit, in the order of the edits."""
        planned = []
        for slot in self.slots:
            stem = item.rel.name + (f"_{slot.label}" if slot is not None else "")
            if self._detects(item):
                image = self.opts.out_dir / item.rel.parent / (stem + item.path.suffix.lower())
                planned.append((image, image.with_name(f"{stem}_0.pt")))
            else:
                image = self.opts.out_dir / item.rel.parent / (stem + ".png")
                planned.append((image, image.with_suffix(".pt")))
        return planned

    def is_done(self, item: InputItem) -> bool:
        """Every image output exists and its latent loads: safe to skip on a re-run."""
        return all(img.is_file() and is_complete_latent(pt) for img, pt in self.planned_outputs(item))

    # ------------------------------------------------------------------ stage 1
    def read(self, job: Job) -> None:
        """Skip finished work, refuse to overwrite an input, else run the engine's ``prepare``."""
        item = job.item
        source = item.path.resolve()
        if any(path.resolve() == source for pair in self.planned_outputs(item) for path in pair):
            raise InputError(f"{item.path}: its output would overwrite it; choose another -o folder")
        if not self.opts.overwrite and self.is_done(item):
            job.status = "skipped"
            return
        if item.is_latent:
            job.work = self.model.prepare_latent(item.path)
        else:
            job.work = self.model.prepare(item.path, aligned=self.opts.aligned, max_faces=self.opts.max_faces)
        job.notes += job.work.notes

    # ------------------------------------------------------------------ stage 3
    def write(self, job: Job, result: Result) -> None:
        """Save every output of a finished job (latents first, the image last), atomically."""
        for slot, (image_path, _) in zip(self.slots, self.planned_outputs(job.item)):
            key = slot.label if slot is not None else INVERSION
            edit = slot.label if slot is not None else None
            if result.photo is None:
                face = result.faces[0]
                latent_path = image_path.with_suffix(".pt")
                self._save_latent(result, face.index, key, edit, latent_path)
                save_image(result.images[key], image_path)
                job.outputs += [str(image_path), str(latent_path)]
                continue
            for face in result.faces:
                latent_path = image_path.with_name(f"{image_path.stem}_{face.index}.pt")
                self._save_latent(result, face.index, key, edit, latent_path)
                job.outputs.append(str(latent_path))
                if self.opts.save_crops:
                    crop_path = latent_path.with_suffix(".png")
                    save_image(face.crops[key], crop_path)
                    job.outputs.append(str(crop_path))
            save_photo(result.photo, result.images[key], image_path)
            job.outputs.append(str(image_path))

    def _save_latent(self, result: Result, index: int, key: str, edit: str | None, path: Path) -> None:
        face = result.faces[index]
        alignment = face.alignment.to_json() if face.alignment is not None else None
        record = make_record(face.codes[key], face.latent, face.distortion, edit=edit,
                             checkpoint=self.model.checkpoint, source=result.meta, face=face.index,
                             alignment=alignment)
        save_record(record, path)

    # ------------------------------------------------------------------ driver
    def run(self, items: Sequence[InputItem], on_done: Callable[[Job], None]) -> RunSummary:
        """Process every input; ``on_done`` is called once per job (from a writer or the main thread)."""
        remove_stale_temps(self.opts.out_dir, set(IMAGE_EXTS | LATENT_EXTS))  # half-written files of a killed run
        jobs = [Job(item) for item in items]
        run = _Run(self, jobs, on_done)
        interrupted = run.start()
        if run.callback_error is not None:
            raise run.callback_error
        return RunSummary(jobs, interrupted=interrupted)


class _Run:
    """The threads and queues of one ``Pipeline.run``."""

    def __init__(self, pipeline: Pipeline, jobs: list[Job], on_done: Callable[[Job], None]) -> None:
        self.p = pipeline
        self.model = pipeline.model
        self.on_done = on_done
        self.stop = threading.Event()  # shutting down (end of input, Ctrl-C, or a failing callback)
        self.interrupt = threading.Event()  # Ctrl-C seen
        self.callback_error: BaseException | None = None
        self.jobs = iter(jobs)
        self.jobs_lock = threading.Lock()
        self.workers = pipeline.opts.io_workers or max(1, min(8, (os.cpu_count() or 2) // 2))
        self.read_q: queue.Queue[Any] = queue.Queue(maxsize=max(2, pipeline.opts.prefetch))
        self.write_q: queue.Queue[Any] = queue.Queue(maxsize=max(2, self.model.batch_size * 2))

    def start(self) -> bool:
        """Run to the end (or to Ctrl-C); returns whether it was interrupted."""
        readers = [threading.Thread(target=self.reader, daemon=True, name=f"hfgi-reader-{i}")
                   for i in range(self.workers)]
        writers = [threading.Thread(target=self.writer, daemon=True, name=f"hfgi-writer-{i}")
                   for i in range(self.workers)]
        for thread in readers + writers:
            thread.start()
        with stop_on_sigint(self.stop, self.interrupt):
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
                return self.interrupt.is_set()
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
                try:
                    self.p.read(job)
                except InputError as exc:
                    job.fail(str(exc))
                except Exception as exc:  # a bug or an odd file must not stop the other inputs
                    job.fail(f"{job.item.path}: {exc.__class__.__name__}: {exc}")
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
            try:
                assert job.work is not None
                self.p.write(job, self.model.finish(job.work, self.p.slots))
                job.status = "ok"
            except Exception as exc:
                job.fail(f"{job.item.path}: cannot write output ({exc})")
            job.work = None  # release images and codes
            self.done(job)

    def done(self, job: Job) -> None:
        job.seconds = time.perf_counter() - job.started
        try:
            self.on_done(job)
        except Exception as exc:  # keep draining: a dead writer would block the main thread forever
            self.callback_error = self.callback_error or exc
            self.stop.set()

    def fail_batch(self, batch: list[tuple[Job, FaceWork]], exc: Exception) -> None:
        hint = "; try a smaller --batch-size" if "out of memory" in str(exc).lower() else ""
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        for job in {id(job): job for job, _ in batch}.values():  # each once, in order
            if job.status != "error":
                job.fail(f"{job.item.path}: model failed ({reason}){hint}")
                self.done(job)


def _completed_jobs(batch: list[tuple[Job, FaceWork]]) -> list[Job]:
    """Jobs whose last face was in this batch, in order."""
    done: list[Job] = []
    for job, _ in batch:
        job.pending_faces -= 1
        if job.pending_faces == 0 and job.status != "error":
            done.append(job)
    return done
