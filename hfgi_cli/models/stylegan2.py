"""StyleGAN2 generator in rosinality's parameter layout, with HFGI's 64x64 feature conditions.

The state-dict keys (``style.N``, ``input.input``, ``conv1``, ``convs.N``, ``to_rgb1``,
``to_rgbs.N``, ``noises.noise_N``, blur/upsample ``kernel`` buffers) match the published
checkpoint so it loads with ``strict=True``.

Modulated convolutions are computed by modulating the *activations* and convolving with one
weight shared by the whole batch, then demodulating the output. That is the same function as
the published grouped convolution with a per-sample weight, but it lets a batch run as one
ordinary convolution (and lets cuDNN pick fast kernels). On a CPU, where batches bring nothing
(the 1024 px activations outgrow the caches), the literal per-sample weights are faster: they skip
the two activation-sized multiplications; there activations are also kept channels-last (NHWC).

Which of these forms runs is a ``Form`` value passed to ``Generator.forward`` (``Form.for_device``
gives the measured best one per device, ``PUBLISHED_FORM`` the published sequence of ops); the
modules themselves hold weights only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .ops import fused_leaky_relu, in_layout_of, memory_layout, modulated_leaky_relu, upfirdn2d

BLUR_KERNEL = (1, 3, 3, 1)
BF16_FP32_BLOCKS = (512,)
"""The blocks a form keeps in fp32 under bf16 unless told otherwise: what AMX-BF16 needs
(``precision.bf16_fp32_blocks`` gives the measured choice per kind of hardware)."""


@dataclass(frozen=True)
class Form:
    """How the generator computes its (one) function; in fp32 every form gives the same outputs.

    - ``modulation``: "shared" (one weight for the batch, modulated activations) or "grouped"
      (per-sample modulated weights, the published form).
    - ``channels_last``: NHWC activations (oneDNN's native layout) instead of NCHW.
    - ``upfirdn2d``: the blur/upsample op's ``impl`` ("ref", "depthwise" or "cuda", see ``ops``).
    - ``tail``: the styled conv's demod + noise + bias + activation: "ref" (the published
      separate ops), "inplace" or "cuda" (fused, see ``ops.modulated_leaky_relu``).
    - ``bf16_fp32_blocks``: the resolutions whose blocks run in fp32 under bf16 autocast: where
      bf16 drifts most on some hardware (``precision.bf16_fp32_blocks`` picks them by measurement
      per kind of CPU). The to-RGB sum, the styles and the demodulation are fp32 in every block.
    """

    modulation: str = "shared"
    channels_last: bool = False
    upfirdn2d: str = "depthwise"
    tail: str = "inplace"
    bf16_fp32_blocks: tuple[int, ...] = BF16_FP32_BLOCKS

    def __post_init__(self) -> None:
        if self.modulation not in ("shared", "grouped") or self.tail not in ("ref", "inplace", "cuda"):
            raise ValueError(f"unknown generator form {self}")

    @classmethod
    def for_device(cls, device_type: str) -> Form:
        """The measured fastest form per device. CPU: per-sample weights on NHWC activations
        with the depthwise blur (1.08 s -> ~0.6 s per 1024 px pass). CUDA: one shared weight
        for the batch, NCHW (the CUDA kernels read NCHW). Elsewhere (MPS): shared, plain ops."""
        if device_type == "cpu":
            return cls("grouped", True, "depthwise", "inplace")
        if device_type == "cuda":
            return cls("shared", False, "cuda", "cuda")
        return cls("shared", False, "depthwise", "inplace")


PUBLISHED_FORM = Form("grouped", False, "ref", "ref")
"""The published code's sequence of ops (rosinality's plain-PyTorch upfirdn2d on a CPU), for baselines."""


def make_kernel(taps: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """The normalised 2-D FIR kernel (outer product of the taps) times ``gain``, computed on the
    CPU and then put on the current default device: on the meta device (models built for
    loading) arithmetic runs Python meta kernels that import torch._dynamo (~1.5 s of start-up)."""
    k = torch.tensor(taps, dtype=torch.float32, device="cpu")
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return (k / k.sum() * gain).to(torch.empty(0).device)


def randn_param(*shape: int, divisor: float = 1.0) -> torch.Tensor:
    """Standard-normal initial values (``torch.randn(shape) / divisor``, the same random stream);
    on the meta device only the shape (its ``normal_`` imports torch._dynamo, ~1.5 s)."""
    value = torch.empty(*shape)
    if value.is_meta:
        return value
    value.normal_()
    return value.div_(divisor) if divisor != 1.0 else value


def stylegan_channels(size: int, channel_multiplier: int = 2, channel_max: int = 512) -> dict[int, int]:
    """Feature width per resolution (the official table, optionally capped for small configs)."""
    table = {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * channel_multiplier,
        128: 128 * channel_multiplier,
        256: 64 * channel_multiplier,
        512: 32 * channel_multiplier,
        1024: 16 * channel_multiplier,
        2048: 8 * channel_multiplier,
    }
    return {res: min(ch, channel_max) for res, ch in table.items() if res <= size}


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with the equalised learning-rate scale applied at run time."""

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation: bool = False
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(randn_param(out_dim, in_dim, divisor=lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)


class EqualConv2d(nn.Module):
    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(randn_param(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)


class ScaledLeakyReLU(nn.Module):
    def __init__(self, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope) * math.sqrt(2)


class Blur(nn.Module):
    def __init__(self, pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        self.register_buffer("kernel", make_kernel(BLUR_KERNEL, upsample_factor**2))
        self.pad = pad

    def forward(self, x: torch.Tensor, impl: str = "depthwise") -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad, impl=impl)


class Upsample(nn.Module):
    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(BLUR_KERNEL, factor**2))
        p = len(BLUR_KERNEL) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor, impl: str = "depthwise") -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad, impl=impl)


class ModulatedConv2d(nn.Module):
    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        if upsample:
            factor = 2
            p = (len(BLUR_KERNEL) - factor) - (kernel_size - 1)
            self.blur = Blur(pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(randn_param(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, form: Form = Form(), offset: torch.Tensor | None = None
    ) -> torch.Tensor:
        out, demod = self.forward_undemodulated(x, style, form, offset)
        if demod is not None:
            out = out * demod.view(-1, self.out_ch, 1, 1).to(out.dtype)
        return out

    def forward_undemodulated(
        self, x: torch.Tensor, style: torch.Tensor, form: Form = Form(), offset: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The convolution and, separately, the [B, out] demodulation factors still to apply
        (None when already applied), so the caller can fuse them into the activation.

        ``offset`` [B, in_ch] moves the style vector (StyleSpace, the affine layer's output) before
        it modulates the weights: StyleCLIP's edits."""
        weight = self.weight[0] * self.scale  # [out, in, k, k], shared by the batch
        # styles and demodulation stay in fp32 under autocast: they are tiny and precision-critical
        with torch.autocast(device_type=x.device.type, enabled=False):
            style = self.modulation(style.float())  # [B, in_ch]
            if offset is not None:
                style = style + offset.float()
            demod = None
            if self.demodulate:
                # sum over (in, k, k) of (w * s)^2 == (s^2) @ sum_k(w^2)^T
                demod = torch.rsqrt(style.pow(2) @ weight.pow(2).sum(dim=(2, 3)).t() + 1e-8)  # [B, out]
        if self.kernel_size == 1 and memory_layout(x) == torch.channels_last:
            return self._forward_pointwise_nhwc(x, style, weight, demod), None
        if form.modulation == "grouped":
            return self._forward_grouped(x, style, form.upfirdn2d), None
        x = x * style.view(-1, self.in_ch, 1, 1).to(x.dtype)
        w = in_layout_of(weight.to(x.dtype), x)
        if self.upsample:
            out = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
            out = self.blur(out, form.upfirdn2d)
        else:
            out = F.conv2d(x, w, padding=self.padding)
        return out, demod

    def _forward_pointwise_nhwc(
        self, x: torch.Tensor, style: torch.Tensor, weight: torch.Tensor, demod: torch.Tensor | None
    ) -> torch.Tensor:
        """A 1x1 modulated conv on NHWC activations is a batched matmul over pixels: no reorder,
        one read of the activation (oneDNN's 1x1 path reorders a 3-channel output at 4x the cost)."""
        batch, in_ch, height, width = x.shape
        w = weight[:, :, 0, 0].t()[None] * style.view(batch, in_ch, 1)  # [B, in, out]
        if demod is not None:
            w = w * demod.view(batch, 1, self.out_ch)
        pixels = x.permute(0, 2, 3, 1).reshape(batch, height * width, in_ch)  # a view: NHWC is contiguous
        out = torch.bmm(pixels, w.to(x.dtype))
        return out.view(batch, height, width, self.out_ch).permute(0, 3, 1, 2)

    def _forward_grouped(self, x: torch.Tensor, style: torch.Tensor, blur_impl: str) -> torch.Tensor:
        batch, in_ch, height, width = x.shape
        if batch > 1 and memory_layout(x) == torch.channels_last:
            # folding the batch into channels would break NHWC (a copy, then slow NCHW convs)
            parts = []
            for i in range(batch):
                part = self._forward_grouped(x[i : i + 1], style[i : i + 1], blur_impl)
                _, c, h, w = part.shape  # a batch of one: give its (free) batch stride the NHWC value
                if part.is_contiguous(memory_format=torch.channels_last):
                    part = part.as_strided(part.shape, (h * w * c, 1, w * c, c))
                parts.append(part)
            return torch.cat(parts)  # so that cat keeps NHWC
        # modulation and demodulation in fp32 (as the styles), one cast to the activations' dtype
        weight = self.scale * self.weight * style.view(batch, 1, in_ch, 1, 1)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.view(batch, self.out_ch, 1, 1, 1)
        weight = weight.to(x.dtype)
        k = self.kernel_size
        x = x.reshape(1, batch * in_ch, height, width)
        if self.upsample:
            weight = in_layout_of(weight.transpose(1, 2).reshape(batch * in_ch, self.out_ch, k, k), x)
            out = F.conv_transpose2d(x, weight, stride=2, groups=batch)
            out = out.view(batch, self.out_ch, out.shape[2], out.shape[3])
            return self.blur(out, blur_impl)
        weight = in_layout_of(weight.view(batch * self.out_ch, in_ch, k, k), x)
        out = F.conv2d(x, weight, padding=self.padding, groups=batch)
        return out.view(batch, self.out_ch, out.shape[2], out.shape[3])


class NoiseInjection(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            noise = x.new_empty(x.shape[0], 1, x.shape[2], x.shape[3]).normal_()
        return x + self.weight.to(x.dtype) * noise.to(x.dtype)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class StyledConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel_size, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None, form: Form = Form(),
        offset: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if form.tail == "ref":  # the published sequence of separate, out-of-place ops
            return self.activate(self.noise(self.conv(x, style, form, offset), noise))
        out, demod = self.conv.forward_undemodulated(x, style, form, offset)
        if noise is None:
            noise = out.new_empty(out.shape[0], 1, out.shape[2], out.shape[3]).normal_()
        # demodulation, noise, bias and activation in one fused step (one pass on CUDA)
        return modulated_leaky_relu(out, demod, self.noise.weight * noise, self.activate.bias, impl=form.tail)


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None, form: Form = Form(),
        offset: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # the RGB image is summed over all resolutions: kept in fp32 under autocast (3 channels,
        # ~1 % of a pass; in bf16 the running sum drifts by a level or more)
        out = self.conv(x, style, form, offset).float() + self.bias
        if skip is not None:
            with torch.autocast(device_type=skip.device.type, enabled=False):
                out = out + self.upsample(skip, form.upfirdn2d)
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(randn_param(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class Generator(nn.Module):
    """StyleGAN2 synthesis (+ mapping) network.

    ``condition_res`` is the resolution whose first (upsampling) conv output HFGI modulates with
    the consultation encoder's (scale, shift) maps: ``x * (1 + scale) + shift``.
    """

    def __init__(
        self,
        size: int = 1024,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        channel_max: int = 512,
        lr_mlp: float = 0.01,
        condition_res: int = 64,
    ) -> None:
        super().__init__()
        self.size = size
        self.style_dim = style_dim
        self.condition_res = condition_res
        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)],
        )
        self.channels = stylegan_channels(size, channel_multiplier, channel_max)
        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2

        self.input = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(self.channels[4], self.channels[4], 3, style_dim)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False)

        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = 2 ** ((layer_idx + 5) // 2)
            self.noises.register_buffer(f"noise_{layer_idx}", randn_param(1, 1, res, res))
        in_ch = self.channels[4]
        for i in range(3, self.log_size + 1):
            out_ch = self.channels[2**i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim))
            self.to_rgbs.append(ToRGB(out_ch, style_dim))
            in_ch = out_ch

    @property
    def condition_channels(self) -> int:
        return self.channels[self.condition_res]

    def style_layers(self) -> list[ModulatedConv2d]:
        """The modulated convs in StyleSpace order: conv1, to_rgb1, then per resolution the
        upsampling conv, the conv and the to-RGB (26 layers at 1024 px)."""
        layers = [self.conv1.conv, self.to_rgb1.conv]
        for conv_up, conv, to_rgb in zip(self.convs[::2], self.convs[1::2], self.to_rgbs):
            layers += [conv_up.conv, conv.conv, to_rgb.conv]
        return layers

    def stored_noise(self) -> list[torch.Tensor]:
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def forward(
        self,
        latent: torch.Tensor,
        conditions: tuple[torch.Tensor, torch.Tensor] | None = None,
        randomize_noise: bool = False,
        form: Form = Form(),
        style_offsets: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Synthesize from W+ codes ``[B, n_latent, style_dim]`` (always ``input_is_latent``);
        ``style_offsets``: per layer of ``style_layers``, [B, channels] added to its style vector
        (None: unchanged)."""
        offsets = list(style_offsets) if style_offsets is not None else [None] * (2 + 3 * len(self.to_rgbs))
        noise: list[torch.Tensor | None]
        noise = [None] * self.num_layers if randomize_noise else list(self.stored_noise())
        out = self.input(latent.shape[0]).to(latent.dtype)
        if form.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        out = self.conv1(out, latent[:, 0], noise[0], form, offsets[0])
        skip = self.to_rgb1(out, latent[:, 1], None, form, offsets[1])
        i = 1
        for block, (conv_up, conv, to_rgb) in enumerate(zip(self.convs[::2], self.convs[1::2], self.to_rgbs)):
            res = 2 ** (block + 3)
            s = 2 + 3 * block
            exact = res in form.bf16_fp32_blocks and out.dtype == torch.bfloat16
            with torch.autocast(device_type=out.device.type, enabled=False) if exact else contextlib.nullcontext():
                out = out.float() if exact else out
                out = conv_up(out, latent[:, i], noise[1 + 2 * block], form, offsets[s])
                if conditions is not None and res == self.condition_res:
                    scale, shift = conditions
                    out = out * (1 + scale.to(out.dtype)) + shift.to(out.dtype)
                out = conv(out, latent[:, i + 1], noise[2 + 2 * block], form, offsets[s + 1])
                skip = to_rgb(out, latent[:, i + 2], skip, form, offsets[s + 2])
            i += 2
        return skip

    def map(self, z: torch.Tensor) -> torch.Tensor:
        """Z -> W through the mapping network (for sampling; inversion never needs it)."""
        return self.style(z)
