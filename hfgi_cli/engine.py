"""The engine: one loaded model, and the three stages that every entry point runs.

    prepare(photo)   CPU     decode; find and FFHQ-align every face (or take an aligned crop,
                             or read the codes of a latent file)                      -> Work
    forward(faces)   model   encode the faces that have no codes yet (e4e + first generator
                             pass -> W+, distortion map), then per edit: move W+, second pass
                             with the consulted distortion (``HFGI.decode``)           -> on the faces
    finish(work)     CPU     paste every edited crop back into its photo; measure how
                             faithful each face's inversion is (``quality``)          -> Result

``Model.invert`` / ``edit`` / ``edit_latents`` run the three stages in a row for one input. The
streaming pipeline (``hfgi invert|edit``) runs the same stages for many inputs, ``prepare`` in
reader threads, ``forward`` on batches that mix faces of several inputs, ``finish`` in writer
threads; ``hfgi video`` runs ``forward``'s two halves on its tracked crops (``encode_faces``, a
moving average of W+ over frames, ``decode_faces``) and ``finish`` per frame. So every door gives
the same pixels for the same input and options (an edit from a latent file, whose distortion map is
stored in float16, within one level). Device, precision and the backend settings they need are set
here, for the duration of each model call, and restored after it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image

from .align import MIN_QSIZE, AlignedFace, paste_back
from .detect import find_faces
from .edits import (
    Combined,
    Edited,
    Editor,
    Edits,
    EditSpec,
    ModelShape,
    Output,
    as_edit_specs,
    check_names,
    needed_files,
)
from .images import Photo, PictureLike, image_to_tensor, load_crop, load_picture, tensor_to_image
from .inputs import InputError
from .latents import read_latent
from .models.hfgi import ENCODER_INPUT_SIZE, HFGI
from .models.stylegan2 import Form
from .precision import PRECISIONS, bf16_fp32_blocks, resolve_precision
from .quality import FaceQuality, face_quality

FFHQ_SIZE = 1024
"""Faces are aligned as FFHQ was made (at 1024 px), then resized to the encoder's 256 px."""
INVERSION = "inversion"
"""The label of the unedited reconstruction in ``Result.images`` and ``Face.crops``."""

Slot = Union[Output, Sequence[EditSpec], None]
"""One output of ``Model.forward``: an edit (or a combined edit) for every face, one edit per face
(the same edit at per-face strengths), or None for the inversion itself."""


# ----------------------------------------------------------------------------------------- runtime
def pick_device(name: str = "auto") -> torch.device:
    """auto: CUDA, else Apple MPS, else the CPU; an explicit device must exist."""
    if name not in ("auto", "cpu", "cuda", "mps") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ValueError(f"--device must be auto, cpu, cuda, cuda:N or mps, not {name!r}")
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available")
    if name == "mps" and not has_mps:
        raise ValueError("--device mps: Apple MPS is not available")
    return torch.device(name)


@dataclass(frozen=True)
class Runtime:
    """Where and in what precision the model runs; ``session`` applies it to a block of model calls.
    ``reason`` says why this precision (``precision.resolve_precision``), for reports."""

    device: torch.device
    precision: str = "fp32"
    reason: str = "asked for (exact)"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be fp32, fp16 or bf16, not {self.precision!r}")
        if self.device.type == "cpu" and self.precision == "fp16":
            raise ValueError("--precision fp16 needs a GPU; use fp32 or bf16 on the CPU")

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Inference mode; autocast for fp16/bf16 (fp32 runs exactly); on CUDA, TF32 off for fp32
        and no cuDNN autotuning (on an H100 it cost ~16 s per run, every conv shape of every
        batch size being tuned, for a few percent of steady-state speed). The backend flags are
        process-wide, so they are restored when the block ends."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self.device.type == "cuda":
                stack.enter_context(_cuda_backend_flags(tf32=self.precision != "fp32"))
            if self.precision != "fp32":
                dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
                stack.enter_context(torch.autocast(device_type=self.device.type, dtype=dtype))
            yield


_CUDA_FLAGS_LOCK = threading.RLock()  # re-entrant: a session may run inside another one


@contextlib.contextmanager
def _cuda_backend_flags(tf32: bool) -> Iterator[None]:
    """The flags are process-wide: CUDA sessions of several threads take turns, so an fp32 session
    never runs with another thread's TF32."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    with _CUDA_FLAGS_LOCK:
        saved = (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
        cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = False, tf32, tf32
        try:
            yield
        finally:
            cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


# ----------------------------------------------------------------------------------------- work
@dataclass
class FaceWork:
    """One face on its way through the model (what ``forward`` reads and fills in)."""

    index: int
    crop: torch.Tensor | None = None
    """[3, 256, 256] in [-1, 1], the encoder's input; None once encoded (or for stored codes)."""
    alignment: AlignedFace | None = None
    """Where the crop came from in its photo (None for crops and latent files)."""
    picture: Image.Image | None = None
    """The aligned face as given to the model (before resizing to 256 px); None for latent files."""
    latent: torch.Tensor | None = None
    """The inversion's W+ [n_latent, style_dim], float32 on the CPU."""
    distortion: torch.Tensor | None = None
    """The distortion map [3, 256, 256], float32 on the CPU."""
    outputs: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    """Per slot of ``forward``: (image [3, H, W] in [-1, 1], W+ codes that made it), on the CPU."""
    precision: str | None = None
    """The precision the model stage ran in for this face (recorded in latent files and reports)."""


@dataclass
class Work:
    """One input between the stages: its faces and, for a photo, the photo to paste them into."""

    source: str
    faces: list[FaceWork]
    photo: Photo | None = None
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # recorded in latent files: source, from_latent
    n_faces: int = 1  # faces found in the photo (``faces`` may hold only the chosen ones)


@dataclass
class Face:
    """One face of a ``Result``."""

    index: int
    latent: torch.Tensor
    """W+ of the inversion, before any edit [n_latent, style_dim]."""
    distortion: torch.Tensor
    """The distortion map HFGI's second pass consults [3, 256, 256]."""
    alignment: AlignedFace | None
    input: Image.Image | None
    """The aligned face as it went into the model (the 1024 px FFHQ crop of a photo, or the crop
    given); None for a latent file."""
    crops: dict[str, Image.Image]
    """Per label: the face as the model made it (aligned crop, full model resolution)."""
    codes: dict[str, torch.Tensor]
    """Per label: the W+ codes that made it."""
    quality: FaceQuality | None = None
    """How faithful the inversion is to ``input`` (identity distance, PSNR, SSIM); None when the
    inversion was not decoded or there is no input (a latent file)."""
    precision: str | None = None
    """The precision the model ran in for this face: fp32 (exact), fp16 or bf16."""

    @property
    def quad(self) -> np.ndarray | None:
        """(4, 2) photo coordinates of the crop corners (top-left, bottom-left, bottom-right, top-right)."""
        return None if self.alignment is None else self.alignment.quad

    @property
    def landmarks(self) -> np.ndarray | None:
        return None if self.alignment is None else self.alignment.landmarks


@dataclass
class Result:
    """What one input became: ``images[label]`` (the whole photo with every face edited and pasted
    back; the crop for an aligned crop or a latent file) and ``faces``, in reading order."""

    source: str
    images: dict[str, Image.Image]
    faces: list[Face]
    photo: Photo | None = None
    """The input photo (its format, mode, orientation and metadata), for writing results alike."""
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    n_faces: int = 1
    """Faces found in the photo; ``faces`` holds the chosen ones (all unless ``faces=`` picked some)."""

    @property
    def image(self) -> Image.Image:
        """The one image of a single-edit (or inversion) result."""
        if len(self.images) != 1:
            raise ValueError(f"{len(self.images)} images; pick one of {', '.join(self.images)}")
        return next(iter(self.images.values()))


def slot_label(slot: Slot) -> str:
    if slot is None:
        return INVERSION
    return slot.label if isinstance(slot, (EditSpec, Combined)) else f"{slot[0].key}:per-face"


def slot_detail(slot: Slot) -> float:
    """How much of the consultation the slot's second pass keeps (1: the published model)."""
    if slot is None:
        return 1.0
    return slot.detail if isinstance(slot, (EditSpec, Combined)) else slot[0].detail


# ----------------------------------------------------------------------------------------- model
class Model:
    """A loaded HFGI model with its runtime and edit directions; see the module docstring."""

    def __init__(
        self,
        net: HFGI,
        runtime: Runtime,
        directions: str | os.PathLike[str] | None = None,
        weights_dir: str | os.PathLike[str] | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.net = net
        self.runtime = runtime
        self.directions = Path(directions) if directions else None
        self.weights_dir = Path(weights_dir) if weights_dir else None
        self.batch_size = batch_size or (1 if runtime.device.type == "cpu" else 8)
        """Faces per forward: 1 on a CPU (measured: batching brings nothing there), else 8."""
        self._editor: Editor | None = None
        self._editor_lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def n_latent(self) -> int:
        return self.net.n_latent

    @property
    def style_dim(self) -> int:
        return self.net.config.style_dim

    @property
    def checkpoint(self) -> str:
        """The checkpoint's file name (recorded in every latent file)."""
        return self.net.source

    # ------------------------------------------------------------------ edits
    def edit_specs(self, edits: Edits, combine: bool = False, detail: float = 1.0) -> list[Output]:
        """Parse and check edits before any input is touched: unknown attributes, missing or
        ill-shaped edit files raise EditError / weights.WeightsMissingError. ``combine``: all the
        edits in one output; ``detail``: see ``HFGI.decode`` (for edits given as a mapping)."""
        specs = as_edit_specs(edits, combine=combine, detail=detail)
        check_names(specs)
        editor = self._editor_for(specs)
        for spec in specs:
            editor.check(spec)
        return specs

    @property
    def domain(self) -> str:
        return self.net.config.domain

    @property
    def model_shape(self) -> ModelShape:
        config = self.net.config
        return ModelShape(self.n_latent, config.style_dim, config.domain, self.net.style_layout())

    def _editor_for(self, outputs: Sequence[Output]) -> Editor:
        """The editor, its directions folder resolved when an edit first needs it."""
        parts = [p for o in outputs for p in o.parts]
        needs_folder = any(not p.direction_file for p in parts)
        with self._editor_lock:
            if self._editor is None or (self._editor.directions_dir is None and needs_folder):
                from .weights import resolve_directions_dir

                folder = resolve_directions_dir(self.directions, self.weights_dir, needed_files(parts, self.domain)) \
                    if needs_folder else None
                self._editor = Editor(folder, self.model_shape)
            return self._editor

    def apply_edit(self, latent: torch.Tensor, slot: Slot) -> Edited:
        """W+ codes [B, n_latent, dim] moved by one slot's edit (unchanged for None), with the
        StyleSpace offsets of a text edit."""
        if slot is None:
            return Edited(latent)
        outputs = [slot] if isinstance(slot, (EditSpec, Combined)) else list(slot)
        return self._editor_for(outputs).apply(latent, slot)

    # ------------------------------------------------------------------ stage 1: prepare (CPU)
    def prepare(
        self,
        source: PictureLike,
        *,
        aligned: bool = False,
        max_faces: int | None = None,
        min_qsize: float = MIN_QSIZE,
        min_face: float | None = None,
        faces: Sequence[int] | None = None,
        detector: str = "hog",
    ) -> Work:
        """Decode an input into faces ready for ``forward``; raises InputError naming the cause.

        ``faces`` picks faces by index (reading order, as ``hfgi align`` numbers them): the others
        stay untouched in the output. ``min_face`` and ``detector`` (``hog``: HOG, its weak hits
        confirmed by the CNN; ``cnn``: the CNN everywhere, 2-3.5x slower) are the detector's (see
        ``detect.detect_faces``).
        """
        name = str(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"
        meta = {"source": name}
        if aligned:
            crop = load_crop(source, name)
            face = FaceWork(0, crop=image_to_tensor(crop, ENCODER_INPUT_SIZE), picture=crop)
            return Work(name, [face], meta=meta)
        photo = load_picture(source, name)
        found = find_faces(photo.image, FFHQ_SIZE, max_faces=max_faces, min_qsize=min_qsize, min_face=min_face,
                           source=name, detector=detector)
        problem = found.problem(name)
        if problem:
            raise InputError(problem)
        notes = found.notes(name)
        chosen = range(len(found.faces)) if faces is None else sorted(set(faces))
        missing = [k for k in chosen if not 0 <= k < len(found.faces)]
        if missing:
            notes.append(f"{name}: has {len(found.faces)} face(s), no face {', '.join(map(str, missing))}")
        work = [FaceWork(k, crop=image_to_tensor(found.faces[k].image, ENCODER_INPUT_SIZE), alignment=found.faces[k],
                         picture=found.faces[k].image) for k in chosen if 0 <= k < len(found.faces)]
        if not work:
            raise InputError(f"{name}: none of the chosen faces is in it ({len(found.faces)} face(s) found)")
        return Work(name, work, photo=photo, notes=notes, meta=meta, n_faces=len(found.faces))

    def prepare_latent(self, path: str | os.PathLike[str]) -> Work:
        """A latent file written by ``hfgi invert``/``edit``: its codes, no encoder needed."""
        data = read_latent(Path(path), self.n_latent, self.style_dim)
        face = FaceWork(0, latent=data["latent"].float(), distortion=data["distortion"].float())
        meta = {"source": data.get("source"), "from_latent": str(path)}
        return Work(str(path), [face], meta=meta)

    # ------------------------------------------------------------------ stage 2: forward (model)
    def encode_faces(self, faces: Sequence[FaceWork]) -> torch.Tensor | None:
        """Encode the faces that have no codes yet; returns the first pass's 256 px images (on the
        device) when every face was encoded now, so an inversion can reuse them."""
        todo = [f for f in faces if f.latent is None]
        if not todo:
            return None
        with self.runtime.session():
            enc = self.net.encode(torch.stack([f.crop for f in todo]).to(self.device))
        latent, distortion = enc["latent"].float().cpu(), enc["distortion"].float().cpu()
        for i, face in enumerate(todo):  # own copies: a row of the batch would keep (and save) all of it
            face.latent, face.distortion, face.crop = latent[i].clone(), distortion[i].clone(), None
        return enc["low_res"] if len(todo) == len(faces) else None

    def decode_faces(
        self, faces: Sequence[FaceWork], slots: Sequence[Slot], low_res: torch.Tensor | None = None
    ) -> None:
        """Per slot: edit the faces' codes and run HFGI's second pass; appends to ``face.outputs``."""
        with self.runtime.session():
            latent = torch.stack([f.latent for f in faces]).to(self.device)
            distortion = torch.stack([f.distortion for f in faces]).to(self.device)
            for slot in slots:
                # no edit: the first pass already made the edited image's low-res version
                self.decode_codes(faces, self.apply_edit(latent, slot), slot_detail(slot),
                                  low_res if slot is None else None, distortion)

    def decode_codes(self, faces: Sequence[FaceWork], edited: Edited, detail: float = 1.0,
                     low_res: torch.Tensor | None = None, distortion: torch.Tensor | None = None) -> None:
        """HFGI's second pass for codes already edited (``apply_edit``; video smooths them over
        frames first); appends one output to each face. ``distortion``: the faces' maps stacked on
        the device, when the caller has them (one stack for all of a batch's slots)."""
        with self.runtime.session():
            if distortion is None:
                distortion = torch.stack([f.distortion for f in faces]).to(self.device)
            images = self.net.decode(edited.codes.to(self.device), distortion, low_res, edited.offsets, detail)
            images, codes = images.float().cpu(), edited.codes.float().cpu()
        for i, face in enumerate(faces):  # every face is decoded, codes from a latent file too
            face.outputs.append((images[i].clone(), codes[i].clone()))
            face.precision = self.runtime.precision

    def forward(self, faces: Sequence[FaceWork], slots: Sequence[Slot]) -> None:
        """The model stage for a batch of faces (from any number of inputs): one encoding per
        face, then one decoding per slot (``[None]`` for an inversion)."""
        low_res = self.encode_faces(faces)
        self.decode_faces(faces, list(slots) or [None], low_res)

    # ------------------------------------------------------------------ stage 3: finish (CPU)
    def finish(
        self, work: Work, slots: Sequence[Slot], paste: bool | Sequence[str] = True, quality: bool = False
    ) -> Result:
        """Outputs per label: crops as images (``Face.crops``), and ``Result.images`` for the labels
        in ``paste`` (True: all; False: none, e.g. a sweep shows crops only): each photo with its
        faces pasted back, or the crop itself for an aligned crop or a latent file.

        ``quality``: when the inversion is among the slots, measure each face against its input
        (``quality.face_quality``; ~0.2 s a face on a CPU core)."""
        labels = [slot_label(s) for s in (list(slots) or [None])]
        faces = []
        for face in work.faces:
            assert face.latent is not None and face.distortion is not None
            crops = {label: tensor_to_image(image) for label, (image, _) in zip(labels, face.outputs)}
            codes = {label: c for label, (_, c) in zip(labels, face.outputs)}
            measured = None
            if quality and INVERSION in crops and face.picture is not None:
                measured = face_quality(face.picture, crops[INVERSION])
            faces.append(Face(face.index, face.latent, face.distortion, face.alignment, face.picture, crops, codes,
                              measured, face.precision))
        images: dict[str, Image.Image] = {}
        for label in labels:
            if paste is not True and (paste is False or label not in paste):
                continue
            if work.photo is None:
                images[label] = faces[0].crops[label]
            else:
                pasted = [(f.crops[label], f.alignment) for f in faces if f.alignment is not None]
                images[label] = paste_back(work.photo.image, pasted)
        return Result(work.source, images, faces, work.photo, work.notes, work.meta, work.n_faces)

    # ------------------------------------------------------------------ one input, start to end
    def run(self, work: Work, edits: Sequence[Output], quality: bool = False) -> Result:
        """``forward`` over the input's faces in batches of ``batch_size``, then ``finish``.
        ``quality``: also decode the inversion of an edit and measure it (``Face.quality``)."""
        slots: list[Slot] = [None, *edits] if quality and edits else list(edits)
        for start in range(0, len(work.faces), self.batch_size):
            self.forward(work.faces[start : start + self.batch_size], slots)
        shown = [slot_label(s) for s in edits] if quality and edits else True  # the inversion is measured only
        return self.finish(work, slots, paste=shown, quality=quality)

    def invert(
        self,
        source: PictureLike,
        *,
        aligned: bool = False,
        faces: Sequence[int] | None = None,
        max_faces: int | None = None,
        min_face: float | None = None,
        quality: bool = False,
        detector: str = "hog",
    ) -> Result:
        """Reconstruct every face of a photo (or an aligned crop with ``aligned=True``):
        ``result.images["inversion"]``; ``quality``: measure how faithful each face is
        (``result.faces[k].quality``). ``faces``, ``max_faces``, ``min_face``, ``detector``: see
        ``prepare``."""
        return self.edit(source, None, aligned=aligned, faces=faces, max_faces=max_faces, min_face=min_face,
                         quality=quality, detector=detector)

    def edit(
        self,
        source: PictureLike,
        edits: Edits,
        *,
        aligned: bool = False,
        faces: Sequence[int] | None = None,
        max_faces: int | None = None,
        min_face: float | None = None,
        quality: bool = False,
        combine: bool = False,
        detail: float = 1.0,
        detector: str = "hog",
    ) -> Result:
        """Edit every face of a photo (path, PIL image or HxWx3 uint8 array), one output per edit
        from one encoding: ``edit("group.jpg", {"smile": 2, "age": -1}).images["smile+2"]``;
        ``combine=True``: one output with all of them (``images["smile+2_age-1"]``); ``detail``:
        how much of the photo's own detail HFGI brings back (1 published, 0 plain e4e); ``detector``:
        see ``prepare``. ``quality=True`` measures each face's inversion (``faces[k].quality``), decoding it for an
        edit (one more generator pass a face)."""
        specs = self.edit_specs(edits, combine=combine, detail=detail)
        work = self.prepare(source, aligned=aligned, faces=faces, max_faces=max_faces, min_face=min_face,
                            detector=detector)
        return self.run(work, specs, quality=quality)

    def edit_latents(
        self, path: str | os.PathLike[str], edits: Edits, *, combine: bool = False, detail: float = 1.0
    ) -> Result:
        """Edit from a latent file written by ``hfgi invert``/``edit``: no encoder, crop out."""
        specs = self.edit_specs(edits, combine=combine, detail=detail)
        return self.run(self.prepare_latent(path), specs)


def _start_resident(net: HFGI, runtime: Runtime) -> None:
    """In a background thread that a process exit stops and joins (a thread still inside numpy
    when the interpreter ends is torn down mid-call, and the process aborts): the encoders'
    weights held as their convolutions read them (``net.hold_conv_weights``), then
    ``net.make_resident``."""
    stop = threading.Event()

    def work() -> None:
        net.hold_conv_weights(torch.bfloat16 if runtime.precision == "bf16" else None, stop)
        net.make_resident(stop)

    thread = threading.Thread(target=work, name="hfgi-resident-weights", daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join()

    atexit.register(finish)


def load_model(
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    directions: str | os.PathLike[str] | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    form: Form | None = None,
    resident: bool = True,
) -> Model:
    """Load an HFGI checkpoint (a path, else the published one in the weights folder).

    ``device`` auto | cpu | cuda | cuda:N | mps; ``precision`` auto | fp32 (exact) | fp16 | bf16,
    auto being the fastest one whose drift is bounded on this kind of device (``precision``);
    ``directions`` the folder of edit directions (default: the weights folder); ``form`` how the
    generator computes (default: the device's fastest, see ``models.stylegan2.Form``, with the
    blocks kept in fp32 under bf16 measured for this kind of CPU, ``precision.bf16_fp32_blocks``).

    The checkpoint is memory-mapped, so the model is ready at once; on a CPU ``resident`` (the
    default) then copies its weights into process memory in a background thread while the first
    inputs are prepared and run (``HFGI.make_resident``: mapped pages can be reclaimed between
    passes, which made passes up to 3x slower on a busy machine), the encoders' in the layout
    and (under bf16) the dtype their convolutions read (``HFGI.hold_conv_weights``: the same
    values, no conversion at every call).
    ``resident=False`` keeps the mapping: the least memory, shared by processes that load the
    same file.
    """
    from .weights import resolve_checkpoint

    where = pick_device(device)
    runtime = Runtime(where, *resolve_precision(precision, where.type))
    path = resolve_checkpoint(Path(checkpoint) if checkpoint else None, Path(weights_dir) if weights_dir else None)
    if form is None:  # the device's fastest form, its bf16 blocks those measured for this hardware
        form = replace(Form.for_device(where.type), bf16_fp32_blocks=bf16_fp32_blocks(where.type))
    net = HFGI.from_checkpoint(path, device=runtime.device, form=form)
    if resident and runtime.device.type == "cpu":  # elsewhere .to(device) made a copy already
        _start_resident(net, runtime)
    return Model(net, runtime, directions=directions, weights_dir=weights_dir, batch_size=batch_size)
