"""dlib's CNN (MMOD) face detector, ``mmod_human_face_detector.dat``, run by PyTorch.

dlib computes this network with its own convolutions on one core and holds the GIL (~150 ms for a
192 px crop on a 2-core CPU); PyTorch's convolutions compute the same in a few milliseconds, on
every core, in batches. Everything here follows dlib (``dlib/dnn``): the file is read in dlib's
serialization format, the input is dlib's tiled image pyramid (``input_rgb_image_pyramid`` with
``pyramid_down<6>``: each level 5/6 of the last, bilinear with corners aligned, packed into one
image), and the score map is decoded as ``loss_mmod`` does (a window centred where a score is over
the threshold, mapped back to the photo, then dlib's non-maximum suppression). So the detections
are dlib's, up to float rounding (``tests/test_mmod.py`` compares both on the same images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PYRAMID_RATE = 5.0 / 6.0
"""``pyramid_down<6>``: each pyramid level is this fraction of the one above; a point one level
down maps back up as ``p * PYRAMID_UP + 0.3`` (dlib's ``point_up``)."""
PYRAMID_UP = 6.0 / 5.0
PYRAMID_MIN_HEIGHT = 5


@dataclass(frozen=True)
class Conv:
    weight: torch.Tensor  # [out, in, kh, kw]
    bias: torch.Tensor  # [out]
    stride: int
    padding: int


@dataclass(frozen=True)
class Affine:
    gamma: torch.Tensor  # [channels]
    beta: torch.Tensor


@dataclass(frozen=True)
class MMODFile:
    """What ``mmod_human_face_detector.dat`` holds: the layers from the input up (``Conv``,
    ``Affine`` and ``"relu"``), the detection window, the suppression thresholds and the input's
    mean colour and pyramid padding."""

    layers: tuple[Conv | Affine | str, ...]
    window: tuple[int, int]  # (width, height)
    nms_iou: float
    nms_covered: float
    mean_rgb: tuple[float, float, float]
    pyramid_padding: int
    pyramid_outer_padding: int


class _Reader:
    """dlib's serialization format: integers as a size byte (0x80: negative) and that many
    little-endian bytes, floats as an integer mantissa and exponent, strings as a length and
    bytes, bools as '0'/'1', tensors as four sizes and raw little-endian float32."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.pos, self.name = data, 0, name

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{self.name}: not a dlib MMOD model file ({what} at byte {self.pos})")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail("the file ends early")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte {control:#x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail("an old text-format float")
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:  # dlib's codes for inf, -inf and NaN
            return (math.inf, -math.inf)[exponent - 32000] if exponent < 32002 else math.nan
        return math.ldexp(float(mantissa), exponent)

    def string(self) -> str:
        return self.take(self.int()).decode("latin-1")

    def peek_string(self) -> str:
        """The string at the read position, or "" when none is there; the position stays."""
        start = self.pos
        try:
            return self.string()
        except ValueError:
            return ""
        finally:
            self.pos = start

    def bool(self) -> bool:
        char = self.take(1)
        if char not in (b"0", b"1"):
            raise self.fail("a bad bool")
        return char == b"1"

    def expect(self, *versions: str) -> str:
        version = self.string()
        if version not in versions:
            raise self.fail(f"{version!r} where {' or '.join(versions)} was expected")
        return version

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise self.fail("a tensor of an unknown version")
        shape = tuple(self.int() for _ in range(4))
        count = math.prod(shape)
        return np.frombuffer(self.take(4 * count), dtype="<f4").reshape(shape)

    def alias(self) -> tuple[int, ...]:
        if self.int() != 1:
            raise self.fail("an alias tensor of an unknown version")
        return tuple(self.int() for _ in range(4))


def _read_conv(r: _Reader) -> Conv:
    version = r.expect("con_4", "con_5", "con_6")
    params = r.tensor().reshape(-1)
    filters, rows, cols = r.int(), r.int(), r.int()
    stride_y, stride_x, pad_y, pad_x = r.int(), r.int(), r.int(), r.int()
    weight_shape, bias_shape = r.alias(), r.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.float()
    use_bias = r.bool() if version in ("con_5", "con_6") else True
    if version == "con_6" and r.bool():
        raise r.fail("a convolution with a fused ReLU")
    if stride_y != stride_x or pad_y != pad_x or rows != cols:
        raise r.fail("a non-square convolution")
    n = math.prod(weight_shape)
    weight = torch.from_numpy(params[:n].copy()).reshape(weight_shape[0], weight_shape[1], rows, cols)
    if weight.shape[0] != filters:
        raise r.fail("a convolution whose filters do not match its size")
    bias = torch.from_numpy(params[n:n + math.prod(bias_shape)].copy()) if use_bias else torch.zeros(filters)
    return Conv(weight, bias, stride_y, pad_y)


def _read_affine(r: _Reader) -> Affine:
    version = r.expect("affine_", "affine_2", "bn_con2")
    params = r.tensor().reshape(-1)
    gamma_shape, beta_shape = r.alias(), r.alias()
    n = math.prod(gamma_shape)
    gamma = torch.from_numpy(params[:n].copy())
    beta = torch.from_numpy(params[n:n + math.prod(beta_shape)].copy())
    if version == "bn_con2":  # batch norm, folded into an affine layer as dlib does on loading
        r.tensor(), r.tensor()  # the last batch's means and inverse deviations
        means = torch.from_numpy(r.tensor().reshape(-1).copy())
        variances = torch.from_numpy(r.tensor().reshape(-1).copy())
        r.int(), r.int()  # updates seen, the running statistics' window
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float()
        eps = r.float()
        gamma = gamma / torch.sqrt(variances + eps)
        beta = beta - gamma * means
        return Affine(gamma, beta)
    if r.int() != 0:  # layer mode: 0 is per channel (CONV_MODE), 1 per element
        raise r.fail("an affine layer that is not per channel")
    if version == "affine_2" and r.bool():
        raise r.fail("a disabled affine layer")
    return Affine(gamma, beta)


def _read_relu(r: _Reader) -> str:
    if r.expect("relu_", "relu_2") == "relu_2" and r.bool():
        raise r.fail("a disabled ReLU")
    return "relu"


def _read_layer(r: _Reader) -> Conv | Affine | str:
    name = r.peek_string()
    if name.startswith("con_"):
        return _read_conv(r)
    if name.startswith(("affine_", "bn_con")):
        return _read_affine(r)
    if name.startswith("relu_"):
        return _read_relu(r)
    raise r.fail(f"a layer {name!r} this network does not have")


def read_mmod(path: Path) -> MMODFile:
    """The layers and settings of a dlib MMOD face detector file (ValueError when it is not one)."""
    r = _Reader(path.read_bytes(), str(path))
    if r.int() != 1:
        raise r.fail("a loss layer of an unknown version")
    r.expect("loss_mmod_")
    options_version = r.int()
    if options_version == 1:
        windows = [(r.int(), r.int())]
    elif options_version in (2, 3, 4):
        windows = []
        for _ in range(r.int()):
            window_version = r.int()
            windows.append((r.int(), r.int()))
            if window_version == 2:
                r.string()
    else:
        raise r.fail("detector options of an unknown version")
    if len(windows) != 1:
        raise r.fail(f"{len(windows)} detection windows (a face detector has one)")
    for _ in range(3):  # training losses and the truth-match threshold
        r.float()
    nms_iou, nms_covered = r.float(), r.float()
    r.float(), r.float()  # the overlaps ignored in training
    if options_version >= 3:
        r.take(1)  # whether the input is a pyramid (it is here)
    if options_version >= 4 and r.bool():
        raise r.fail("bounding-box regression, which this reader does not decode")
    if options_version >= 4:
        r.float()
    # The layers nest from the output down: first every layer's version, then the input layer,
    # then each layer's settings from the input up (the innermost one also closes the input's).
    versions = []
    while not r.peek_string().startswith("input_rgb_image_pyramid"):
        versions.append(r.int())
    if not versions:
        raise r.fail("a network without layers")
    input_version = r.expect("input_rgb_image_pyramid", "input_rgb_image_pyramid2")
    mean_rgb = (r.float(), r.float(), r.float())
    padding, outer_padding = (r.int(), r.int()) if input_version == "input_rgb_image_pyramid2" else (10, 11)
    layers = []
    for i, version in enumerate(reversed(versions)):
        layers.append(_read_layer(r))
        for _ in range(3):  # set-up and gradient flags
            r.bool()
        r.tensor(), r.tensor()  # the gradient and output buffers (empty in a saved model)
        if i == 0:
            r.tensor()  # the input's gradient buffer
            if version >= 3:
                r.int()  # samples per input
        elif version == 2:
            r.tensor()  # the parameters' gradient buffer
    if r.pos != len(r.data):
        raise r.fail("bytes after the network")
    if not isinstance(layers[-1], Conv) or layers[-1].weight.shape[0] != 1:
        raise r.fail("a network whose last layer is not one score map")
    return MMODFile(tuple(layers), windows[0], nms_iou, nms_covered, mean_rgb, padding, outer_padding)


@dataclass(frozen=True)
class Rect:
    """dlib's integer rectangle: both edges included."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left + 1

    @property
    def height(self) -> int:
        return self.bottom - self.top + 1

    def area(self) -> int:
        """0 for an empty rectangle (an intersection of rectangles that do not meet)."""
        return max(0, self.width) * max(0, self.height)

    def intersect(self, o: Rect) -> Rect:
        return Rect(max(self.left, o.left), max(self.top, o.top), min(self.right, o.right), min(self.bottom, o.bottom))

    def contains(self, x: float, y: float) -> bool:
        return self.left <= x <= self.right and self.top <= y <= self.bottom

    def distance(self, x: float, y: float) -> float:
        nx, ny = min(max(x, self.left), self.right), min(max(y, self.top), self.bottom)
        return math.hypot(nx - x, ny - y)


@dataclass(frozen=True)
class Detection(Rect):
    """A face the network found: dlib's rectangle (edges included) and its score."""

    confidence: float


def pyramid_layout(rows: int, cols: int, padding: int, outer_padding: int) -> tuple[list[Rect], int, int]:
    """Where each level of dlib's tiled pyramid of a ``rows`` x ``cols`` image lies, and the tiled
    image's size (dlib's ``compute_tiled_image_pyramid_details``): the levels down a first column
    until the rest fit beside them, then up a second column from the bottom right."""
    sizes = [(cols, rows)]
    while True:
        rows, cols = math.floor(PYRAMID_RATE * rows), math.floor(PYRAMID_RATE * cols)
        if rows * cols == 0 or rows < PYRAMID_MIN_HEIGHT:
            break
        sizes.append((cols, rows))
    total = sum(h + padding for _, h in sizes) - 2 * padding
    width, first_height = sizes[0]
    height = prev_width = 0
    for w, h in sizes:
        if w <= width - prev_width - padding and (height - first_height) * 2 >= total - first_height:
            break
        height += h + padding
        prev_width = w
    height -= padding
    rects: list[Rect] = []
    y = outer_padding
    while y < height + outer_padding and len(rects) < len(sizes):
        w, h = sizes[len(rects)]
        rects.append(Rect(outer_padding, y, outer_padding + w - 1, y + h - 1))
        y += h + padding
    y -= padding
    while len(rects) < len(sizes):
        w, h = sizes[len(rects)]
        right, bottom = outer_padding + width - 1, y - 1
        rect = Rect(right - (w - 1), bottom - (h - 1), right, bottom)
        if rects[0].intersect(rect).area():  # the last levels would cover the first
            break
        rects.append(rect)
        y -= h + padding
    return rects, height + 2 * outer_padding, width + 2 * outer_padding


class MMODDetector:
    """dlib's ``cnn_face_detection_model_v1`` on PyTorch: ``detector(images)`` finds the faces of
    a batch of same-sized RGB images (uint8 [H, W, 3]), as ``dlib_detector(image, 0)`` does.

    Each affine layer is folded into the convolution before it (the same maths; rounding differs
    by about one part in a million)."""

    def __init__(self, model: MMODFile, device: str | torch.device = "cpu") -> None:
        self.model = model
        self.device = torch.device(device)
        self.convs: list[tuple[torch.Tensor, torch.Tensor, int, int, bool]] = []
        layers = list(model.layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Conv):
                continue
            weight, bias = layer.weight, layer.bias
            after = layers[i + 1:i + 3]
            if after and isinstance(after[0], Affine):
                weight = weight * after[0].gamma[:, None, None, None]
                bias = bias * after[0].gamma + after[0].beta
            relu = "relu" in after
            self.convs.append((weight.to(self.device), bias.to(self.device), layer.stride, layer.padding, relu))
        # a score at output (x, y) is a window centred at input (scale * x + offset, ...)
        self.scale, self.offset = 1, 0
        for layer in layers:
            if isinstance(layer, Conv):
                self.offset += self.scale * (layer.weight.shape[-1] // 2 - layer.padding)
                self.scale *= layer.stride
        self.mean = torch.tensor(model.mean_rgb, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def from_file(cls, path: Path, device: str | torch.device = "cpu") -> MMODDetector:
        return cls(read_mmod(path), device)

    def tiled(self, images: np.ndarray) -> tuple[torch.Tensor, list[Rect]]:
        """The network's input for a batch [N, H, W, 3] of uint8 images: each image's pyramid
        tiled into one image, in dlib's layout, the mean colour taken away and divided by 256."""
        n, rows, cols, _ = images.shape
        rects, height, width = pyramid_layout(rows, cols, self.model.pyramid_padding, self.model.pyramid_outer_padding)
        data = torch.zeros((n, 3, height, width), dtype=torch.float32, device=self.device)
        first = torch.as_tensor(np.array(images, dtype=np.uint8), device=self.device).permute(0, 3, 1, 2).float()
        r0 = rects[0]
        data[:, :, r0.top:r0.bottom + 1, r0.left:r0.right + 1] = (first - self.mean) / 256.0
        for above, level in zip(rects, rects[1:]):
            source = data[:, :, above.top:above.bottom + 1, above.left:above.right + 1]
            data[:, :, level.top:level.bottom + 1, level.left:level.right + 1] = F.interpolate(
                source, size=(level.height, level.width), mode="bilinear", align_corners=True)
        return data, rects

    @torch.inference_mode()
    def scores(self, data: torch.Tensor) -> torch.Tensor:
        """The score map [N, 1, h, w] of a tiled input."""
        x = data
        for weight, bias, stride, padding, relu in self.convs:
            x = F.conv2d(x, weight, bias, stride=stride, padding=padding)
            if relu:
                x = F.relu_(x)
        return x

    def __call__(self, images: np.ndarray | list[np.ndarray], threshold: float = 0.0) -> list[list[Detection]]:
        """Each image's faces scoring over ``threshold``, best first, one per face (dlib's
        non-maximum suppression)."""
        batch = np.stack(images) if isinstance(images, list) else images
        if batch.ndim == 3:
            batch = batch[None]
        data, rects = self.tiled(batch)
        scores = self.scores(data)[:, 0].float().cpu().numpy()
        return [self._decode(s, rects, threshold) for s in scores]

    def _decode(self, scores: np.ndarray, rects: list[Rect], threshold: float) -> list[Detection]:
        """dlib's ``loss_mmod`` decoding: a window centred at every score over the threshold,
        mapped from its pyramid level back to the image, then kept unless it overlaps a better one
        kept already."""
        win_w, win_h = self.model.window
        found = []
        rows, cols = np.nonzero(scores > threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            x, y = self.scale * c + self.offset, self.scale * r + self.offset
            level = next((i for i, rect in enumerate(rects) if rect.contains(x, y)), None)
            if level is None:
                level = min(range(len(rects)), key=lambda i: rects[i].distance(x, y))
            corners = [x - (win_w - 1) / 2 - rects[level].left, y - (win_h - 1) / 2 - rects[level].top,
                       x + (win_w - 1) / 2 - rects[level].left, y + (win_h - 1) / 2 - rects[level].top]
            for _ in range(level):
                corners = [v * PYRAMID_UP + 0.3 for v in corners]
            rect = Rect(*(_round(v) for v in corners))
            found.append((float(scores[r, c]), rect))
        found.sort(key=lambda d: -d[0])
        kept: list[Detection] = []
        for score, rect in found:
            if not any(self._overlap(k, rect) for k in kept):
                kept.append(Detection(rect.left, rect.top, rect.right, rect.bottom, score))
        return kept

    def _overlap(self, a: Rect, b: Rect) -> bool:
        """dlib's ``test_box_overlap`` with the file's suppression thresholds."""
        inner = a.intersect(b).area()
        if inner == 0:
            return False
        outer = Rect(min(a.left, b.left), min(a.top, b.top), max(a.right, b.right), max(a.bottom, b.bottom)).area()
        covered = self.model.nms_covered
        return inner / outer > self.model.nms_iou or inner / a.area() > covered or inner / b.area() > covered


def _round(v: float) -> int:
    """``std::lround``: halves away from zero."""
    return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))
