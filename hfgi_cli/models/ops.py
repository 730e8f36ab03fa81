"""StyleGAN2's two custom ops: upfirdn2d and fused bias + leaky ReLU.

Each op takes ``impl``, chosen by the caller (as NVlabs stylegan3's ``impl='ref'|'cuda'``):

- ``"ref"``: the published plain-PyTorch sequence; runs everywhere (CPU, MPS, CUDA).
- ``"depthwise"`` (upfirdn2d) / ``"inplace"`` (styled-conv tail): the same maths in forms that are
  faster on a CPU (one grouped convolution; in-place updates of a fresh activation).
- ``"cuda"``: a kernel compiled with ninja the first time it is needed on a CUDA tensor. Where it
  cannot run (not a CUDA tensor, autograd needs a backward, the build failed: one warning), the
  op falls back to its faster plain-PyTorch form, so the tool stays correct on every machine.
"""

from __future__ import annotations

import math
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F

from ..reasons import short_reason

_SQRT2 = math.sqrt(2.0)

_cuda_lock = threading.Lock()
_cuda_module: ModuleType | None = None
_cuda_state = "untried"  # "untried" | "ok" | "failed"

_CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _cuda_ops() -> ModuleType | None:
    """Build (once per process) and return the CUDA extension, or None when unavailable."""
    global _cuda_module, _cuda_state
    if _cuda_state == "ok":
        return _cuda_module
    if _cuda_state == "failed":
        return None
    with _cuda_lock:
        if _cuda_state != "untried":
            return _cuda_module
        try:
            from torch.utils.cpp_extension import load

            src = Path(__file__).with_name("cuda")
            # No build_directory: torch builds under its per-user cache
            # ($TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions/<py>_<cu>/<name>) and
            # rebuilds by itself when the sources change.
            _cuda_module = load(
                name="hfgi_stylegan2_ops",
                sources=[str(src / "ops.cpp"), str(src / "ops_kernel.cu")],
                extra_cuda_cflags=["--use_fast_math"],
            )
            _cuda_state = "ok"
        except Exception as exc:  # any build/load failure means: use the reference path
            _cuda_state = "failed"
            _cuda_module = None
            warnings.warn(
                f"hfgi: could not build the CUDA ops ({short_reason(exc)}); using the plain PyTorch path",
                RuntimeWarning,
                stacklevel=3,
            )
        return _cuda_module


def cuda_ops_status() -> str:
    """Which path the CUDA ops took in this process, for benchmarks: untried | ok | failed."""
    return _cuda_state


def _check_impl(impl: str, allowed: tuple[str, ...]) -> None:
    if impl not in allowed:
        raise ValueError(f"impl must be one of {', '.join(allowed)}, not {impl!r}")


def _use_cuda(x: torch.Tensor, *others: torch.Tensor) -> bool:
    """CUDA kernels have no backward, so use them only when autograd will not need one.

    Checking requires_grad (rather than only grad mode) lets frozen-weight inference run the fast
    path even outside torch.no_grad(), while training/optimisation keeps the differentiable path.
    """
    if not x.is_cuda or x.dtype not in _CUDA_DTYPES:
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, *others)):
        return False
    return _cuda_ops() is not None


# ---------------------------------------------------------------------------------------------
# fused bias + leaky ReLU (times sqrt(2), StyleGAN2's gain-preserving activation)
# ---------------------------------------------------------------------------------------------


def fused_leaky_relu_reference(
    x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float = 0.2, scale: float = _SQRT2
) -> torch.Tensor:
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope) * scale


def fused_leaky_relu(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    negative_slope: float = 0.2,
    scale: float = _SQRT2,
    impl: str = "ref",
) -> torch.Tensor:
    """leaky_relu(x + bias) * scale; ``impl`` "ref" or "cuda"."""
    _check_impl(impl, ("ref", "cuda"))
    if impl == "cuda" and bias is not None and x.ndim >= 2 and _use_cuda(x, bias):
        ops = _cuda_ops()
        bias = bias.to(device=x.device, dtype=x.dtype).contiguous()
        return ops.fused_bias_act(x.contiguous(), bias, float(negative_slope), float(scale))
    return fused_leaky_relu_reference(x, bias, negative_slope, scale)


def modulated_leaky_relu(
    x: torch.Tensor,
    demod: torch.Tensor | None,
    noise: torch.Tensor | None,
    bias: torch.Tensor,
    negative_slope: float = 0.2,
    gain: float = _SQRT2,
    impl: str = "inplace",
) -> torch.Tensor:
    """The tail of a styled conv: leaky_relu(x * demod[n,c] + noise + bias[c]) * gain.

    ``x`` must be a fresh activation the caller no longer needs (a conv output): outside autograd
    it is updated in place ("inplace"), so the tail costs no new buffers on the CPU and one pass
    over memory with the "cuda" kernel. ``noise`` is the already-weighted noise map, [1, 1, H, W]
    (or per sample [N, 1, H, W]).
    """
    _check_impl(impl, ("inplace", "cuda"))
    n, c = x.shape[:2]
    optional = [t for t in (demod, noise) if t is not None]
    shared_noise = noise is None or noise.shape[0] == 1
    if impl == "cuda" and x.ndim == 4 and x.is_contiguous() and shared_noise and _use_cuda(x, bias, *optional):
        empty = x.new_empty(0, dtype=torch.float32)
        return _cuda_ops().modulated_act(
            x,
            empty if demod is None else demod.float().contiguous().view(-1),
            empty if noise is None else noise.float().contiguous().view(-1),
            bias.to(device=x.device, dtype=x.dtype).contiguous(),
            float(negative_slope),
            float(gain),
        )
    if torch.is_grad_enabled():
        out = x if demod is None else x * demod.view(n, c, 1, 1).to(x.dtype)
        out = out if noise is None else out + noise.to(x.dtype)
        return fused_leaky_relu_reference(out, bias, negative_slope, gain)
    if demod is not None:
        x.mul_(demod.view(n, c, 1, 1).to(x.dtype))
    if noise is not None:
        x.add_(noise.to(x.dtype))
    x.add_(bias.view(1, -1, 1, 1).to(x.dtype))
    return F.leaky_relu_(x, negative_slope).mul_(gain)


# ---------------------------------------------------------------------------------------------
# upfirdn2d: upsample by zero insertion, pad, FIR filter, downsample
# ---------------------------------------------------------------------------------------------


def _pad4(pad: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(pad) == 2:
        return pad[0], pad[1], pad[0], pad[1]
    return pad  # type: ignore[return-value]


def upfirdn2d_reference(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, ...] = (0, 0)
) -> torch.Tensor:
    """Same maths as the published op: a true convolution (flipped kernel), per channel."""
    pad_x0, pad_x1, pad_y0, pad_y1 = _pad4(tuple(pad))
    batch, channels, in_h, in_w = x.shape
    out = x.reshape(batch * channels, 1, in_h, in_w)
    if up > 1:
        out = out.view(-1, 1, in_h, 1, in_w, 1)
        out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1])
        out = out.view(-1, 1, in_h * up, in_w * up)
    out = F.pad(out, [max(pad_x0, 0), max(pad_x1, 0), max(pad_y0, 0), max(pad_y1, 0)])
    out = out[
        :,
        :,
        max(-pad_y0, 0) : out.shape[2] - max(-pad_y1, 0),
        max(-pad_x0, 0) : out.shape[3] - max(-pad_x1, 0),
    ]
    k = torch.flip(kernel, [0, 1]).view(1, 1, *kernel.shape).to(out.dtype)
    out = F.conv2d(out, k)
    if down > 1:
        out = out[:, :, ::down, ::down]
    return out.reshape(batch, channels, out.shape[2], out.shape[3])


def upfirdn2d_depthwise(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, ...] = (0, 0)
) -> torch.Tensor:
    """The reference's maths as one depthwise (grouped) convolution per call.

    The published CPU path folds channels into the batch and runs a 1-channel convolution, which
    oneDNN executes 10-15x slower than a depthwise one (0.55 of a 1.1 s generator pass went there).
    Upsampling is a strided transposed convolution (no zero-filled intermediate) and downsampling
    a strided convolution. Without upsampling the sums are the reference's, term for term.
    """
    pad_x0, pad_x1, pad_y0, pad_y1 = _pad4(tuple(pad))
    channels, (in_h, in_w) = x.shape[1], x.shape[2:]
    kernel_h, kernel_w = kernel.shape
    if up > 1:
        # zero insertion + pad + correlation with the flipped kernel == the full transposed
        # convolution with the kernel itself, read from offset (kernel - 1 - pad)
        weight = in_layout_of(kernel.to(x.dtype).expand(channels, 1, kernel_h, kernel_w), x)
        out_h = in_h * up + pad_y0 + pad_y1 - kernel_h + 1
        out_w = in_w * up + pad_x0 + pad_x1 - kernel_w + 1
        full_h, full_w = (in_h - 1) * up + kernel_h, (in_w - 1) * up + kernel_w
        y0, x0 = kernel_h - 1 - pad_y0, kernel_w - 1 - pad_x0
        y1, x1 = full_h - y0 - out_h, full_w - x0 - out_w  # rows/columns to crop at the far end
        if y0 == y1 >= 0 and x0 == x1 >= 0:  # a symmetric crop: convT's own padding does it
            out = F.conv_transpose2d(x, weight, stride=up, padding=(y0, x0), groups=channels)
        else:
            out = F.conv_transpose2d(x, weight, stride=up, groups=channels)
            out = F.pad(out, [-x0, -x1, -y0, -y1]).contiguous(memory_format=memory_layout(x))
        return out[:, :, ::down, ::down] if down > 1 else out
    weight = torch.flip(kernel, [0, 1]).to(x.dtype).expand(channels, 1, kernel_h, kernel_w)
    if pad_x0 == pad_x1 >= 0 and pad_y0 == pad_y1 >= 0:  # zero padding the convolution does itself
        return F.conv2d(x, in_layout_of(weight, x), stride=down, padding=(pad_y0, pad_x0), groups=channels)
    out = F.pad(x, [pad_x0, pad_x1, pad_y0, pad_y1]).contiguous(memory_format=memory_layout(x))
    return F.conv2d(out, in_layout_of(weight, x), stride=down, groups=channels)


def memory_layout(x: torch.Tensor) -> torch.memory_format:
    """NHWC when ``x`` is channels-last (and not also plain contiguous), else NCHW."""
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def in_layout_of(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A weight in the activation's layout, so oneDNN/cuDNN keep that layout and skip reorders."""
    return weight.contiguous(memory_format=memory_layout(x))


def upfirdn2d(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, ...] = (0, 0),
    impl: str = "depthwise",
) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR filter, downsample; ``impl`` "ref", "depthwise" or "cuda"."""
    _check_impl(impl, ("ref", "depthwise", "cuda"))
    if impl == "cuda" and x.ndim == 4 and _use_cuda(x, kernel):
        ops = _cuda_ops()
        pad_x0, pad_x1, pad_y0, pad_y1 = (int(p) for p in _pad4(tuple(pad)))
        kernel = kernel.to(device=x.device, dtype=x.dtype).contiguous()
        return ops.upfirdn2d(
            x.contiguous(), kernel, int(up), int(up), int(down), int(down), pad_x0, pad_x1, pad_y0, pad_y1
        )
    if impl in ("depthwise", "cuda") and x.ndim == 4:  # "cuda" where the kernel cannot run: the faster plain form
        return upfirdn2d_depthwise(x, kernel, up, down, pad)
    return upfirdn2d_reference(x, kernel, up, down, pad)
