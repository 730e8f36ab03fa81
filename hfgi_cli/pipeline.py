"""The streaming batch pipeline: read -> (align) -> model -> edit -> (paste back) -> write.

A reader thread decodes inputs ahead of the model, the main thread runs the networks on batches
that mix faces from many inputs, and a writer thread encodes and renames outputs into place.
The queues between them are bounded, so memory does not grow with the number of inputs.

Per face the encoder and the first generator pass run once, whatever the number of edits:
``HFGI.encode`` gives W+, the distortion map and the first low-res image, and each edit is one
``HFGI.decode`` of its edited codes.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import io as hio
from .align import align_faces, detect_faces, paste_back
from .edits import Editor, EditSpec
from .models.hfgi import HFGI
from .photo import Photo, open_photo, save_photo

_DONE = object()
FFHQ_SIZE = 1024  # faces are aligned as FFHQ was made, then resized to the encoder's 256 px


@dataclass
class Face:
    """One face crop on its way through the model, and where its results go."""

    job: Job
    index: int
    x: torch.Tensor | None = None  # [3,256,256] in [-1,1]; None when the codes come from a latent file
    latent: torch.Tensor | None = None
    distortion: torch.Tensor | None = None
    alignment: Any = None  # align.AlignedFace when the face was found in a photo
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # edit label -> image + codes


@dataclass
class Job:
    """One input file: its faces, its outputs and its outcome (one JSON line per job)."""

    item: hio.InputItem
    faces: list[Face] = field(default_factory=list)
    photo: Photo | None = None  # the original, for paste-back (detection mode)
    notes: list[str] = field(default_factory=list)  # non-fatal remarks (skipped tiny faces)
    source_meta: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    status: str = "pending"  # pending | ok | skipped | error
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    pending_faces: int = 0
    n_faces: int = 0

    def report(self) -> dict[str, Any]:
        return {
            "input": str(self.item.path),
            "outputs": self.outputs,
            "faces": self.n_faces,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class RunOptions:
    out_dir: Path
    edits: list[EditSpec]  # empty: plain inversion
    batch_size: int = 1
    aligned: bool = True
    overwrite: bool = False
    save_crops: bool = False
    precision: str = "fp32"
    prefetch: int = 8
    max_faces: int | None = None
    io_workers: int = 0  # reader and writer threads each; 0: half the CPU cores, 1..8


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


def pick_device(name: str = "auto") -> torch.device:
    """auto: CUDA, else Apple MPS, else the CPU; an explicit device must exist."""
    if name not in ("auto", "cpu", "cuda", "mps") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ValueError(f"--device must be auto, cpu, cuda, cuda:N or mps, not {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps: Apple MPS is not available")
    return torch.device(name)


def configure_backends(device: torch.device, precision: str) -> None:
    """fp32 means true fp32 (no TF32). cuDNN autotuning stays off: on an H100 it cost ~16 s per
    run (every conv shape of every batch size is tuned) for a few percent of steady-state speed."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        exact = precision == "fp32"
        torch.backends.cudnn.allow_tf32 = not exact
        torch.backends.cuda.matmul.allow_tf32 = not exact


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """fp32 runs exactly; fp16/bf16 use autocast (GPU), bf16 also on CPU."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("--precision fp16 needs a GPU; use fp32 or bf16 on the CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)


def output_name(job: Job, label: str | None, suffix: str = ".png") -> Path:
    """OUT-relative name of a job's image for one edit: <stem>[_<label>]<suffix>."""
    stem = job.item.rel
    return stem.parent / (stem.name + (f"_{label}" if label else "") + suffix)


class Pipeline:
    """Runs one command (invert or edit) over many inputs with one loaded model."""

    def __init__(self, model: HFGI, editor: Editor | None, options: RunOptions) -> None:
        self.model = model
        self.editor = editor
        self.opts = options
        self.device = model.device
        self._stop = threading.Event()  # shutting down (end of input, Ctrl-C, or a failing callback)
        self._interrupt = threading.Event()  # Ctrl-C seen
        self._callback_error: BaseException | None = None
        configure_backends(self.device, options.precision)

    # ------------------------------------------------------------------ planning
    def labels(self) -> list[str | None]:
        return [spec.label for spec in self.opts.edits] or [None]

    def _detects(self, job: Job) -> bool:
        """Photos go through detection and paste-back; crops (--aligned) and latents do not."""
        return not self.opts.aligned and not job.item.is_latent

    def planned_outputs(self, job: Job) -> list[tuple[Path, Path]]:
        """(image, first latent) per edit label."""
        planned = []
        for label in self.labels():
            if self._detects(job):
                image = self.opts.out_dir / output_name(job, label, suffix=job.item.path.suffix.lower())
                planned.append((image, image.with_name(f"{image.stem}_0.pt")))
            else:
                image = self.opts.out_dir / output_name(job, label)
                planned.append((image, image.with_suffix(".pt")))
        return planned

    def is_done(self, job: Job) -> bool:
        """Every image output exists and its latent loads: safe to skip on a re-run."""
        return all(img.is_file() and hio.is_complete_latent(pt) for img, pt in self.planned_outputs(job))

    # ------------------------------------------------------------------ stage 1: read
    def prepare(self, job: Job) -> None:
        """Decode one input into faces (raises InputError for a bad input)."""
        item = job.item
        if item.is_latent:
            data = hio.read_latent(item.path, self.model.n_latent, self.model.config.style_dim)
            job.source_meta = {"source": data.get("source"), "from_latent": str(item.path)}
            job.faces = [Face(job, 0, latent=data["latent"].float(), distortion=data["distortion"].float())]
            return
        job.source_meta = {"source": str(item.path)}
        if not self._detects(job):
            image = hio.read_image(item.path)
            job.faces = [Face(job, 0, x=hio.image_to_tensor(image))]
            return
        with hio.decode_errors(item.path):
            photo = open_photo(item.path)
        hio.check_size(item.path, photo.image)
        found = detect_faces(photo.image)
        aligned, skipped = align_faces(photo.image, found, FFHQ_SIZE, max_faces=self.opts.max_faces,
                                       source=str(item.path))
        job.notes += [f"{item.path}: skipped a face: {s.reason}" for s in skipped]
        if not aligned:
            raise hio.InputError(f"no face found in {item.path}" if not found else
                                 f"no face large enough in {item.path}")
        job.photo = photo
        job.faces = [Face(job, k, x=hio.image_to_tensor(face.image), alignment=face) for k, face in enumerate(aligned)]

    def _reader(self, jobs: Iterator[Job], out_q: queue.Queue[Any]) -> None:
        """Decode (and detect/align) jobs taken from a shared iterator; several readers may run."""
        try:
            while not self._stop.is_set():
                with self._jobs_lock:
                    job = next(jobs, None)
                if job is None:
                    break
                job.started = time.perf_counter()
                try:
                    self._read_one(job)
                except hio.InputError as exc:
                    job.status, job.error = "error", str(exc)
                except Exception as exc:  # a bug or an odd file must not stop the other inputs
                    job.status, job.error = "error", f"{job.item.path}: {exc.__class__.__name__}: {exc}"
                out_q.put(job)
        finally:
            out_q.put(_DONE)

    def _read_one(self, job: Job) -> None:
        planned = self.planned_outputs(job)
        source = job.item.path.resolve()
        if any(path.resolve() == source for pair in planned for path in pair):
            raise hio.InputError(f"{job.item.path}: its output would overwrite it; choose another -o folder")
        if not self.opts.overwrite and self.is_done(job):
            job.status = "skipped"
            return
        self.prepare(job)

    # ------------------------------------------------------------------ stage 2: model
    @torch.inference_mode()
    def run_batch(self, faces: list[Face]) -> None:
        """Encode (once) and decode every edit for a batch of faces; results stay on the faces."""
        device, model = self.device, self.model
        with autocast_context(device, self.opts.precision):
            to_encode = [f for f in faces if f.x is not None]
            low_res: dict[int, torch.Tensor] = {}
            if to_encode:
                x = torch.stack([f.x for f in to_encode]).to(device)
                enc = model.encode(x)
                for i, f in enumerate(to_encode):
                    f.latent = enc["latent"][i].float().cpu()
                    f.distortion = enc["distortion"][i].float().cpu()
                    low_res[id(f)] = enc["low_res"][i]
            latent = torch.stack([f.latent for f in faces]).to(device)
            distortion = torch.stack([f.distortion for f in faces]).to(device)
            for spec in self.opts.edits or [None]:
                if spec is None:
                    # no edit: the first pass is the edited image; reuse it where we have it
                    if len(low_res) == len(faces):
                        edit_low = torch.stack([low_res[id(f)] for f in faces])
                    else:
                        edit_low = None
                    codes = latent
                else:
                    assert self.editor is not None
                    codes = self.editor.apply(latent, spec)
                    edit_low = None
                images = model.decode(codes, distortion, edit_low).float().cpu()
                label = spec.label if spec is not None else None
                for i, f in enumerate(faces):
                    f.results[label or ""] = {"image": images[i], "latent": codes[i].float().cpu()}
            for f in faces:
                f.x = None  # free the input tensor early

    # ------------------------------------------------------------------ stage 3: write
    def write(self, job: Job) -> None:
        """Save every output of a finished job (images + latents), atomically."""
        for (img_path, _), label in zip(self.planned_outputs(job), self.labels()):
            key = label or ""
            if job.photo is None:
                face = job.faces[0]
                result = face.results[key]
                latent_path = img_path.with_suffix(".pt")
                hio.save_torch(self.latent_record(job, face, label, result), latent_path)
                hio.save_image(hio.tensor_to_image(result["image"]), img_path)
                job.outputs += [str(img_path), str(latent_path)]
                continue
            crops = [(hio.tensor_to_image(face.results[key]["image"]), face.alignment) for face in job.faces]
            for face, (crop, _) in zip(job.faces, crops):
                latent_path = img_path.with_name(f"{img_path.stem}_{face.index}.pt")
                hio.save_torch(self.latent_record(job, face, label, face.results[key]), latent_path)
                job.outputs.append(str(latent_path))
                if self.opts.save_crops:
                    crop_path = latent_path.with_suffix(".png")
                    hio.save_image(crop, crop_path)
                    job.outputs.append(str(crop_path))
            # the photo goes last: on a re-run, its presence means every file of this edit is complete
            save_photo(job.photo, paste_back(job.photo.image, crops), img_path)
            job.outputs.append(str(img_path))

    def latent_record(self, job: Job, face: Face, label: str | None, result: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "format": hio.LATENT_FORMAT,
            "latent": result["latent"].contiguous(),
            "inversion_latent": face.latent.contiguous(),
            "distortion": face.distortion.contiguous(),
            "edit": label,
            "checkpoint": self.model.source,
            "n_latent": self.model.n_latent,
            **job.source_meta,
        }
        if face.alignment is not None:
            record["alignment"] = face.alignment.to_json()
            record["face"] = face.index
        return record

    def _writer(self, in_q: queue.Queue[Any], on_done: Callable[[Job], None]) -> None:
        while True:
            job = in_q.get()
            if job is _DONE:
                return
            try:
                self.write(job)
                job.status = "ok"
            except Exception as exc:
                job.status, job.error = "error", f"{job.item.path}: cannot write output ({exc})"
            job.faces = []  # release images and codes
            job.photo = None
            job.seconds = time.perf_counter() - job.started
            try:
                on_done(job)
            except Exception as exc:  # keep draining: a dead writer would block the main thread forever
                self._callback_error = self._callback_error or exc
                self._stop.set()

    # ------------------------------------------------------------------ driver
    def run(self, jobs: list[Job], on_done: Callable[[Job], None]) -> RunSummary:
        """Process every job; ``on_done`` is called once per job (from a writer or the main thread).

        Decoding and PNG/JPEG encoding release the GIL, so a few reader and writer threads keep a
        GPU fed; on a 2-core CPU one of each overlaps I/O with the model without competing for it.
        """
        hio.remove_stale_temps(self.opts.out_dir)  # half-written files of a killed run
        workers = self.opts.io_workers or max(1, min(8, (os.cpu_count() or 2) // 2))
        read_q: queue.Queue[Any] = queue.Queue(maxsize=max(2, self.opts.prefetch))
        write_q: queue.Queue[Any] = queue.Queue(maxsize=max(2, self.opts.batch_size * 2))
        self._jobs_lock = threading.Lock()
        job_iter = iter(jobs)
        readers = [threading.Thread(target=self._reader, args=(job_iter, read_q), daemon=True, name=f"hfgi-reader-{i}")
                   for i in range(workers)]
        writers = [threading.Thread(target=self._writer, args=(write_q, on_done), daemon=True, name=f"hfgi-writer-{i}")
                   for i in range(workers)]
        for thread in readers + writers:
            thread.start()
        self._readers_left = workers
        interrupted = False
        with _stop_on_sigint(self._stop, self._interrupt):
            try:
                for batch in self._batches(read_q, on_done):
                    try:
                        self.run_batch(batch)
                    except Exception as exc:  # e.g. out of GPU memory: fail these inputs, go on
                        self._fail_batch(batch, exc, on_done)
                    for job in _completed_jobs(batch):
                        write_q.put(job)
                    if self._stop.is_set():
                        break
                interrupted = self._interrupt.is_set()
            finally:
                self._stop.set()
                for _ in writers:
                    write_q.put(_DONE)
                for thread in writers:
                    thread.join()
                # drain the readers so they can exit
                while any(thread.is_alive() for thread in readers):
                    with contextlib.suppress(queue.Empty):
                        read_q.get(timeout=0.1)
        if self._callback_error is not None:
            raise self._callback_error
        return RunSummary(jobs, interrupted=interrupted)

    def _fail_batch(self, batch: list[Face], exc: Exception, on_done: Callable[[Job], None]) -> None:
        hint = "; try a smaller --batch-size" if "out of memory" in str(exc).lower() else ""
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        jobs = list({id(face.job): face.job for face in batch}.values())  # each once, in order
        for job in jobs:
            if job.status != "error":
                job.status, job.error = "error", f"{job.item.path}: model failed ({reason}){hint}"
                job.faces, job.photo = [], None
                job.seconds = time.perf_counter() - job.started
                on_done(job)

    def _batches(self, read_q: queue.Queue[Any], on_done: Callable[[Job], None]) -> Iterator[list[Face]]:
        batch: list[Face] = []
        while True:
            job = read_q.get()
            if job is _DONE:
                self._readers_left -= 1
                if self._readers_left == 0:
                    break
                continue
            if job.status in ("error", "skipped"):
                job.seconds = time.perf_counter() - job.started
                on_done(job)
                continue
            job.pending_faces = job.n_faces = len(job.faces)
            for face in job.faces:
                batch.append(face)
                if len(batch) >= self.opts.batch_size:
                    yield batch
                    batch = []
            if self._stop.is_set():
                break
        if batch and not self._stop.is_set():
            yield batch


def _completed_jobs(batch: list[Face]) -> list[Job]:
    """Jobs whose last face was in this batch, in order."""
    done: list[Job] = []
    for face in batch:
        face.job.pending_faces -= 1
        if face.job.pending_faces == 0 and face.job.status != "error":
            done.append(face.job)
    return done


@contextlib.contextmanager
def _stop_on_sigint(stop: threading.Event, interrupt: threading.Event) -> Iterator[None]:
    """First Ctrl-C: finish the current batch, write what is done, then stop. Second: stop at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if interrupt.is_set():
            raise KeyboardInterrupt
        interrupt.set()
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
