"""The pipeline as a Ray Data job (``hfgi invert|edit --ray``), and its stages for your own Ray jobs.

    prepare   CPU tasks    ``Pipeline.read_job``: skip-if-done, decode, detect, align   (dlib)
    model     actor pool   ``HFGIEdit``: ``Model.forward`` on batches mixing faces of many inputs,
                           one actor per GPU (CPU actors on a cluster without GPUs)
    write     CPU tasks    ``Pipeline.write_job``: paste-back, encode, atomic writes
    driver    this process iterates the finished jobs: progress, ``--json`` lines, summary

Each stage calls the single-machine pipeline's own methods on the same ``Job`` objects (pickled
between the stages), so the files, their layout, the skip-if-done rule, the reports and the exit
codes are the pipeline's. The CPU stages need the model's shape only (latent size, checkpoint
name), not its weights: ``ModelShape.cpu_model`` is a ``Model`` without them.

INPUT and OUT may be URIs (``s3://``, ``gs://``, ``file://``: ``remote``): ``prepare`` downloads each
input to a temporary file for ``read_job`` (reports still name the URI) and looks for finished
outputs in OUT itself; ``write`` runs ``write_job`` into a temporary folder, then uploads its files
in the order they were written (latent files before the image that says the input is done).

The pools are planned and checked to fit the cluster before anything is submitted, and a run where
nothing finishes says what Ray waits for (``cluster``).

Faults: Ray restarts a killed actor and re-runs its batch, and re-runs a killed task; every output
is written under a temporary name and renamed, so a killed write leaves no partial file under a real
name (the temporaries it left are removed when the run ends). SIGINT and SIGTERM stop the driver at
once: the inputs in flight are left for a re-run, the cluster it started is shut down.

Ray is an optional dependency (``pip install 'hfgi-cli[ray]'``); it is imported here only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import remote
from .atomic import remove_stale_temps
from .cluster import STALL_AFTER, STALL_EVERY, Pools, Watchdog, connect, plan_pools, say_on_stderr
from .inputs import IMAGE_EXTS, LATENT_EXTS, InputError, InputItem
from .interrupt import Stopped, deferred_signals, raise_on_signals
from .pipeline import Job, Pipeline, RunOptions, RunSummary, failure_reason, model_failure

if TYPE_CHECKING:
    from .engine import Model
    from .models.hfgi import ModelConfig

Batch = dict[str, np.ndarray]
INSTALL_HINT = "--ray needs Ray: pip install 'hfgi-cli[ray]'"


def import_ray() -> Any:
    """The ``ray`` package, or ImportError with the install hint."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return ray


# ----------------------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class _NetShape:
    """What ``Model`` reads of its network outside ``forward``: enough for the CPU stages."""

    config: ModelConfig
    source: str

    @property
    def n_latent(self) -> int:
        return self.config.n_latent

    def style_layout(self) -> tuple[tuple[int, bool], ...]:
        from .models.hfgi import style_layout_of

        return style_layout_of(self.config)


@dataclass(frozen=True)
class ModelShape:
    """A loaded model's description, small enough to ship to every CPU task."""

    config: ModelConfig
    checkpoint: str
    directions: str | None = None
    weights_dir: str | None = None

    @classmethod
    def of(cls, model: Model) -> ModelShape:
        return cls(model.net.config, model.checkpoint, str(model.directions.resolve()) if model.directions else None,
                   str(model.weights_dir.resolve()) if model.weights_dir else None)

    def cpu_model(self) -> Model:
        """A ``Model`` for ``prepare``/``prepare_latent``/``finish`` and the edit checks, without weights."""
        from .engine import Model, Runtime, pick_device

        return Model(_NetShape(self.config, self.checkpoint), Runtime(pick_device("cpu")),  # type: ignore[arg-type]
                     directions=self.directions, weights_dir=self.weights_dir)


# ----------------------------------------------------------------------------------------- stages
def _jobs(batch: Batch) -> list[Job]:
    return [pickle.loads(blob) for blob in batch["job"]]


def _rows(batch: Batch, jobs: list[Job]) -> Batch:
    return {"index": np.asarray(batch["index"]), "job": np.array([pickle.dumps(j) for j in jobs], dtype=object)}


@contextlib.contextmanager
def _in_folder(folder: str | None) -> Iterator[None]:
    """Relative input and output paths mean what they mean to the driver: its working folder, where a
    node has it (nodes share the disk the paths are on); a worker runs one task at a time."""
    if folder is None or not os.path.isdir(folder):
        yield
        return
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


_URI_ROOT = Path("/hfgi-out-uri")
"""``out_dir`` of a run whose OUT is a URI: a name only, never a folder (``RemoteOutputs`` maps it to OUT)."""


class RemoteOutputs(Pipeline):
    """A ``Pipeline`` whose skip-if-done looks for the outputs in a folder on a pyarrow filesystem
    (``remote.Folder``): the planned files under ``options.out_dir`` are those under the folder."""

    def __init__(self, model: Model, options: RunOptions, folder: remote.Folder) -> None:
        super().__init__(model, options)
        self.folder = folder

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.opts.out_dir).as_posix()

    def is_file(self, path: Path) -> bool:
        return self.folder.is_file(self._rel(path))

    def matches(self, folder: Path, pattern: str) -> list[Path]:
        return [folder / name for name in self.folder.names(self._rel(folder), pattern)]

    @contextlib.contextmanager
    def fetched(self, path: Path) -> Iterator[Path]:
        with self.folder.fetched(self._rel(path)) as local:
            yield local


def _read_job(pipeline: Pipeline, job: Job) -> None:
    """``pipeline.read_job``; an input named by a URI is read from a temporary copy (skipped first if
    done), and its work, notes and error name the URI."""
    item = job.item
    if item.uri is None:
        pipeline.read_job(job)
        return
    try:
        if isinstance(pipeline, RemoteOutputs) and item.uri in {
                pipeline.folder.uri_of(pipeline._rel(p)) for p in pipeline.planned_outputs(item)}:
            raise InputError(f"{item.uri}: its output would overwrite it; choose another -o folder")
        if not pipeline.opts.overwrite and pipeline.is_done(item):
            job.status = "skipped"
            return
        with remote.downloaded(item.uri, item.path.suffix) as local:
            copy = Job(InputItem(local, item.rel))
            pipeline.read_job(copy)
    except InputError as exc:
        job.fail(str(exc))
        return
    except OSError as exc:
        job.fail(f"{item.uri}: cannot be read ({exc})")
        return

    def named(text: str) -> str:
        return text.replace(str(local), item.uri or "")

    job.status, job.work, job.notes = copy.status, copy.work, [named(n) for n in copy.notes]
    if copy.error is not None:
        job.fail(named(copy.error))
    if job.work is not None:
        job.work.source = item.uri
        job.work.notes = [named(n) for n in job.work.notes]
        job.work.meta = {k: named(v) if isinstance(v, str) else v for k, v in job.work.meta.items()}
        for face in job.work.faces:  # recorded in the latent files
            if face.alignment is not None and face.alignment.source is not None:
                face.alignment.source = named(face.alignment.source)


def prepare_jobs(batch: Batch, *, shape: ModelShape, options: RunOptions, cwd: str | None = None,
                 out_uri: str | None = None) -> Batch:
    """CPU stage: ``Pipeline.read_job`` per row (``job``: a pickled ``pipeline.Job``); ``cwd``: the
    folder relative paths start from; ``out_uri``: OUT, when it is a URI."""
    jobs = _jobs(batch)
    with _in_folder(cwd):
        model = shape.cpu_model()
        pipeline = Pipeline(model, options) if out_uri is None else RemoteOutputs(model, options,
                                                                                   remote.Folder(out_uri))
        for job in jobs:
            job.started = time.time()  # wall clock: the stages run in different processes
            _read_job(pipeline, job)
            if job.work is not None:
                job.n_faces = len(job.work.faces)
    return _rows(batch, jobs)


def write_jobs(batch: Batch, *, shape: ModelShape, options: RunOptions, cwd: str | None = None,
               out_uri: str | None = None) -> Batch:
    """CPU stage: ``Pipeline.write_job`` for the jobs the model finished (others pass through); with
    ``out_uri``, into a temporary folder, then uploaded."""
    jobs = _jobs(batch)
    with _in_folder(cwd), tempfile.TemporaryDirectory(prefix="hfgi-out-") as staging:
        if out_uri is not None:
            options = replace(options, out_dir=Path(staging))
        pipeline = Pipeline(shape.cpu_model(), options)
        folder = remote.Folder(out_uri) if out_uri is not None else None
        for job in jobs:
            if job.work is not None:
                pipeline.write_job(job)
                if folder is not None:
                    _upload(job, Path(staging), folder)
            job.seconds = time.time() - job.started
    return _rows(batch, jobs)


def _upload(job: Job, staging: Path, folder: remote.Folder) -> None:
    """Upload a written job's files (in the order they were written), then remove them here."""
    written, job.outputs = [Path(p) for p in job.outputs], []
    try:
        for path in written:
            if job.status == "ok":
                job.outputs.append(folder.upload(path, path.relative_to(staging).as_posix()))
    except Exception as exc:
        job.fail(f"{job.item.source}: cannot write output ({exc})")
    finally:
        for path in written:
            path.unlink(missing_ok=True)
    if job.error is not None:
        job.error = job.error.replace(str(staging), folder.uri)


class HFGIEdit:
    """The model stage for ``Dataset.map_batches(HFGIEdit, compute=ActorPoolStrategy(size=N),
    num_gpus=1, batch_size=B, fn_constructor_kwargs=...)``: the model is loaded once per actor.

    Rows with ``bytes`` and/or ``path`` (what ``ray.data.read_binary_files(..., include_paths=True)``
    gives): the whole edit of each photo (or aligned crop, ``aligned=True``), returned as
    ``path``, ``faces``, ``error`` ("" when it worked; a bad input fails only its row),
    ``image_<label>`` (PNG bytes per label: ``inversion``, ``smile+2``...; the photo with its faces
    pasted back, or the crop) and ``latent`` (float32 [faces, n_latent, style_dim], the inversion's W+).

    Rows with ``job`` (from ``prepare_jobs``, as ``hfgi --ray`` runs it): the model only, for ``write_jobs``.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] | None = None,
        edits: Any = None,
        *,
        device: str = "auto",
        precision: str = "auto",
        directions: str | os.PathLike[str] | None = None,
        weights_dir: str | os.PathLike[str] | None = None,
        batch_size: int | None = None,
        aligned: bool = False,
        max_faces: int | None = None,
        min_face: float | None = None,
        detector: str = "hog",
        options: RunOptions | None = None,
    ) -> None:
        from .engine import load_model

        self.model = load_model(checkpoint, device=device, precision=precision, directions=directions,
                                weights_dir=weights_dir, batch_size=batch_size)
        if options is not None:
            self.slots = Pipeline(self.model, options).slots
        else:
            self.slots = list(self.model.edit_specs(edits or [])) or [None]
        self.prepare_args = dict(aligned=aligned, max_faces=max_faces, min_face=min_face, detector=detector)

    def __call__(self, batch: Batch) -> Batch:
        if "job" in batch:
            jobs = _jobs(batch)
            self.forward_jobs(jobs)
            return _rows(batch, jobs)
        return self.edit_rows(batch)

    def forward_jobs(self, jobs: Sequence[Job]) -> None:
        """``Model.forward`` over the faces of prepared jobs, ``batch_size`` faces at a time; a failing
        batch fails its inputs only (as in ``Pipeline.run``)."""
        faces = [(job, face) for job in jobs if job.work is not None for face in job.work.faces]
        for start in range(0, len(faces), self.model.batch_size):
            chunk = [(job, face) for job, face in faces[start : start + self.model.batch_size] if job.work is not None]
            if not chunk:
                continue
            try:
                self.model.forward([face for _, face in chunk], self.slots)
            except Exception as exc:
                for job, _ in chunk:
                    if job.status != "error":
                        job.fail(model_failure(job, exc))

    def edit_rows(self, batch: Batch) -> Batch:
        """The whole edit of raw rows (see the class docstring)."""
        from .engine import slot_label

        n = len(batch["bytes"] if "bytes" in batch else batch["path"])
        paths = [str(p) for p in batch["path"]] if "path" in batch else [f"row {i}" for i in range(n)]
        labels = [slot_label(s) for s in self.slots]
        out: dict[str, list[Any]] = {"path": paths, "faces": [], "error": [], "latent": []}
        out.update({f"image_{label}": [] for label in labels})
        shape = (0, self.model.n_latent, self.model.style_dim)
        for i, path in enumerate(paths):
            try:
                with _as_file(batch["bytes"][i] if "bytes" in batch else None, path) as source:
                    try:
                        work = self.model.prepare(source, **self.prepare_args)  # type: ignore[arg-type]
                    except InputError as exc:
                        raise InputError(str(exc).replace(source, path)) from None
                for start in range(0, len(work.faces), self.model.batch_size):
                    self.model.forward(work.faces[start : start + self.model.batch_size], self.slots)
                result = self.model.finish(work, self.slots)
            except Exception as exc:  # a bad input fails only its row
                message = str(exc) if isinstance(exc, InputError) else f"{path}: {exc.__class__.__name__}: {exc}"
                out["faces"].append(0)
                out["error"].append(message)
                out["latent"].append(np.zeros(shape, np.float32))
                for label in labels:
                    out[f"image_{label}"].append(b"")
                continue
            out["faces"].append(len(result.faces))
            out["error"].append("")
            out["latent"].append(np.stack([f.latent.numpy() for f in result.faces]).astype(np.float32))
            for label in labels:
                buffer = io.BytesIO()
                result.images[label].save(buffer, format="PNG")
                out[f"image_{label}"].append(buffer.getvalue())
        return {k: _column(v) for k, v in out.items()}


@contextlib.contextmanager
def _as_file(data: bytes | None, path: str) -> Iterator[str]:
    """``path``, or ``data`` in a temporary file with its suffix: the engine decodes files (orientation,
    modes, size limits and their messages) one way only."""
    if data is None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="hfgi-") as folder:
        file = Path(folder) / ("input" + Path(path).suffix.lower())
        file.write_bytes(bytes(data))
        yield str(file)


def _column(values: list[Any]) -> np.ndarray:
    if values and isinstance(values[0], (bytes, str, np.ndarray)):
        column = np.empty(len(values), dtype=object)
        column[:] = values
        return column
    return np.asarray(values)


# ----------------------------------------------------------------------------------------- driver
def run_on_ray(
    model: Model,
    options: RunOptions,
    items: Sequence[InputItem],
    on_done: Callable[[Job], None],
    *,
    model_args: dict[str, Any],
    address: str | None = None,
    workers: int | None = None,
    model_stage: type[HFGIEdit] = HFGIEdit,
    prepare_stage: Callable[..., Batch] = prepare_jobs,
    write_stage: Callable[..., Batch] = write_jobs,
    out_uri: str | None = None,
    on_stall: Callable[[str], None] = say_on_stderr,
    stall_after: float = STALL_AFTER,
    stall_every: float = STALL_EVERY,
) -> RunSummary:
    """``Pipeline(model, options).run(items, on_done)`` on a Ray cluster.

    ``model`` (loaded here, on the CPU) has checked the checkpoint and the edits; the actors load it
    again from ``model_args`` (``load_model``'s arguments, with the device and precision they run).
    ``on_done`` is called here, once per input, as the jobs finish. ``model_stage``: an ``HFGIEdit``
    subclass to run instead, and ``prepare_stage`` / ``write_stage``: functions that call
    ``prepare_jobs`` / ``write_jobs`` (a test's that records its process, a custom model call).
    ``out_uri``: the output folder as a URI (``remote``), instead of ``options.out_dir``; OSError if
    pyarrow cannot use it. ``on_stall``: gets the watchdog's lines (stderr by default).

    ClusterError before anything is submitted when the pools cannot fit the cluster. SIGINT and
    SIGTERM stop the run at once (the inputs in flight are left for a re-run), shut down the
    cluster this call started, remove the temporaries; the summary's exit code is 130 or 143.
    """
    ray = import_ray()
    Pipeline(model, options)  # bad options fail before the cluster starts
    temps = set(IMAGE_EXTS | LATENT_EXTS | {".json"})
    if out_uri is not None:
        options = replace(options, out_dir=_URI_ROOT)
        local_out = remote.Folder(out_uri).local_path()  # file://: an upload's temporaries may be left there
    else:
        local_out = options.out_dir
    if local_out is not None:
        remove_stale_temps(local_out, temps)
    jobs = [Job(item) for item in items]
    stages = (prepare_stage, model_stage, write_stage)
    checkpoint = _checkpoint(model_args)
    started = connect(ray, address)
    stopped_by: int | None = None
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)  # its per-run notes would mix with ours on stderr
    with deferred_signals():  # a signal during the clean-up below does not cut it short
        try:
            with raise_on_signals():
                nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
                pools = plan_pools(nodes, model_args.get("device") or "auto", workers, model_args.get("batch_size"),
                                   _actor_memory(checkpoint))
                dataset = _dataset(ray, jobs, model, options, model_args, pools, stages, checkpoint, out_uri)
                with Watchdog(ray, on_stall, stall_after, stall_every) as watchdog:
                    _collect(ray, dataset, jobs, on_done, watchdog)
        except Stopped as exc:
            stopped_by = exc.signum
        except KeyboardInterrupt:
            stopped_by = signal.SIGINT
        finally:
            data_logger.setLevel(level)
            if started:
                ray.shutdown()
            if local_out is not None:
                remove_stale_temps(local_out, temps)  # those of a killed worker whose batch was redone
    return RunSummary(jobs, stopped_by=stopped_by)


def _collect(ray: Any, dataset: Any, jobs: list[Job], on_done: Callable[[Job], None], watchdog: Watchdog) -> None:
    """Iterate the finished jobs into ``jobs`` and ``on_done``; the iterator is closed however this
    ends, so that Ray Data's executor stops before the cluster does."""
    reported = set()
    rows = iter(dataset.iter_rows())
    try:
        for row in rows:
            job = pickle.loads(row["job"])
            jobs[int(row["index"])] = job
            reported.add(int(row["index"]))
            watchdog.progressed()
            on_done(job)
    except ray.exceptions.RayError as exc:  # beyond Ray's retries (a node lost for good): fail what is left
        reason = failure_reason(exc)
        for i, job in enumerate(jobs):
            if i not in reported:
                job.fail(f"{job.item.source}: the Ray job failed ({reason})")
                on_done(job)
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()


def _checkpoint(model_args: dict[str, Any]) -> Path:
    """The checkpoint file the actors load (resolved here, where its path means what the user meant)."""
    from .weights import resolve_checkpoint

    checkpoint, weights_dir = model_args.get("checkpoint"), model_args.get("weights_dir")
    return resolve_checkpoint(Path(checkpoint) if checkpoint else None,
                              Path(weights_dir) if weights_dir else None).resolve()


def _actor_memory(checkpoint: Path) -> int:
    """Host memory a model actor needs (bytes): the checkpoint read, the model built from it, and room
    for a batch. Requesting it keeps Ray from packing more actors onto a node than fit, and (Ray
    Data fuses stages only when their requests are equal) keeps detection off the model actors."""
    return 2 * checkpoint.stat().st_size + (512 << 20)


def _dataset(ray: Any, jobs: list[Job], model: Model, options: RunOptions, model_args: dict[str, Any], pools: Pools,
             stages: tuple[Callable[..., Batch], type[HFGIEdit], Callable[..., Batch]], checkpoint: Path,
             out_uri: str | None = None) -> Any:
    """items -> prepare tasks -> model actors -> write tasks, streamed."""
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    prepare_stage, model_stage, write_stage = stages
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI shows its own
    shape = ModelShape.of(model)
    actor_args = dict(
        checkpoint=str(checkpoint), device=pools.device, precision=model_args.get("precision") or "auto",
        directions=shape.directions, weights_dir=shape.weights_dir, batch_size=pools.batch_size, options=options,
    )
    rows = [{"index": i, "job": pickle.dumps(job)} for i, job in enumerate(jobs)]
    cpu_stage = dict(batch_size=1, batch_format="numpy", num_cpus=pools.cpus_per_task,
                     compute=TaskPoolStrategy(size=pools.cpu_tasks),
                     fn_kwargs=dict(shape=shape, options=options, cwd=os.getcwd(), out_uri=out_uri))
    return (
        ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 100_000)))
        .map_batches(prepare_stage, **cpu_stage)
        .map_batches(model_stage, batch_size=pools.batch_size, batch_format="numpy",
                     compute=ActorPoolStrategy(size=pools.actors), num_gpus=pools.gpus_per_actor,
                     num_cpus=pools.cpus_per_actor, memory=pools.actor_memory, fn_constructor_kwargs=actor_args)
        .map_batches(write_stage, **cpu_stage)
    )
