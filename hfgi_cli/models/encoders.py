"""The three encoders of HFGI, in the published parameter layout.

- ``Encoder4Editing``: e4e on an IR-SE-50 body; one base code w0 plus per-layer offsets -> W+.
- ``ResidualEncoder`` (the paper's consultation encoder E_c, ``residue.*``): distortion map ->
  (scale, shift) maps for the generator's 64x64 features.
- ``ResidualAligner`` (ADA, ``grid_align.*``): (distortion, edited image) -> aligned distortion.

Widths are parameters only so tests can build a small model; the defaults are the published ones.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .stylegan2 import EqualConv2d, EqualLinear, ScaledLeakyReLU

IR_SE_50_UNITS = (3, 4, 14, 3)


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.adaptive_avg_pool2d(x, 1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class BottleneckIR(nn.Module):
    """ArcFace-style pre-activation residual unit (``shortcut_layer`` + ``res_layer``)."""

    def __init__(self, in_ch: int, depth: int, stride: int, squeeze_excite: bool = False) -> None:
        super().__init__()
        self.stride = stride
        if in_ch == depth:
            self.shortcut_layer = None  # the published MaxPool2d(1, stride): plain subsampling
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_ch, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if squeeze_excite:
            layers.append(SEModule(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut_layer is None:
            shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        else:
            shortcut = self.shortcut_layer(x)
        return self.res_layer(x) + shortcut


def _stem(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch), nn.PReLU(out_ch))


def _stage(in_ch: int, depth: int, units: int, squeeze_excite: bool = False) -> list[BottleneckIR]:
    """A ResNet stage: the first unit halves the resolution, the rest keep it."""
    first = BottleneckIR(in_ch, depth, 2, squeeze_excite)
    return [first] + [BottleneckIR(depth, depth, 1, squeeze_excite) for _ in range(units - 1)]


class GradualStyleBlock(nn.Module):
    """Strided 3x3 convs down to 1x1, then an equalised linear layer: one style vector."""

    def __init__(self, in_ch: int, out_ch: int, spatial: int) -> None:
        super().__init__()
        num_pools = spatial.bit_length() - 1
        layers: list[nn.Module] = []
        for i in range(num_pools):
            layers += [nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_ch, out_ch, lr_mul=1.0)
        self.out_ch = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).reshape(-1, self.out_ch))


def _upsample_add(top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class Encoder4Editing(nn.Module):
    """e4e: W+ = w0 repeated, plus an offset for every layer after the first (FPN features)."""

    coarse_ind = 3
    middle_ind = 7

    def __init__(self, style_count: int = 18, style_dim: int = 512, width: int = 64, input_size: int = 256) -> None:
        super().__init__()
        widths = (width, width * 2, width * 4, width * 8)
        self.input_layer = _stem(3, width)
        units: list[BottleneckIR] = []
        in_ch = width
        for depth, n in zip(widths, IR_SE_50_UNITS):
            units += _stage(in_ch, depth, n, squeeze_excite=True)
            in_ch = depth
        self.body = nn.Sequential(*units)
        # feature taps of the FPN: end of stage 2 (c1), 3 (c2) and 4 (c3)
        self.taps = (sum(IR_SE_50_UNITS[:2]) - 1, sum(IR_SE_50_UNITS[:3]) - 1, sum(IR_SE_50_UNITS) - 1)
        self.style_count = style_count
        # coarse styles read the 16x16 features, middle ones 32x32, fine ones 64x64 (for 256px input)
        def spatial(i: int) -> int:
            return input_size // (16 if i < self.coarse_ind else 8 if i < self.middle_ind else 4)

        self.styles = nn.ModuleList(GradualStyleBlock(widths[3], style_dim, spatial(i)) for i in range(style_count))
        self.latlayer1 = nn.Conv2d(widths[2], widths[3], 1)
        self.latlayer2 = nn.Conv2d(widths[1], widths[3], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_layer(x)
        feats = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.taps:
                feats[i] = x
        c1, c2, c3 = (feats[t] for t in self.taps)
        w0 = self.styles[0](c3)
        offsets = [torch.zeros_like(w0)]
        features = c3
        p2 = None
        for i in range(1, self.style_count):
            if i == self.coarse_ind:
                p2 = _upsample_add(c3, self.latlayer1(c2))
                features = p2
            elif i == self.middle_ind:
                features = _upsample_add(p2, self.latlayer2(c1))
            offsets.append(self.styles[i](features))
        return w0.unsqueeze(1) + torch.stack(offsets, dim=1)


class ResidualEncoder(nn.Module):
    """Consultation encoder: distortion (256px) -> (scale, shift) at the generator's 64x64 block."""

    def __init__(self, condition_channels: int = 512, condition_size: int = 64) -> None:
        super().__init__()
        self.condition_size = condition_size
        self.conv_layer1 = _stem(3, 32)
        self.conv_layer2 = nn.Sequential(*_stage(32, 48, 3))
        self.conv_layer3 = nn.Sequential(*_stage(48, 64, 3))

        def head() -> nn.Sequential:
            return nn.Sequential(
                EqualConv2d(64, condition_channels, 3, padding=1),
                ScaledLeakyReLU(0.2),
                EqualConv2d(condition_channels, condition_channels, 3, padding=1),
            )

        self.condition_scale3 = head()
        self.condition_shift3 = head()

    def forward(self, distortion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.conv_layer3(self.conv_layer2(self.conv_layer1(distortion)))
        size = (self.condition_size, self.condition_size)
        scale = F.interpolate(self.condition_scale3(feat), size=size, mode="bilinear")
        shift = F.interpolate(self.condition_shift3(feat), size=size, mode="bilinear")
        return scale, shift


class ResidualAligner(nn.Module):
    """ADA: a small U-Net mapping (distortion, edited low-res image) to an aligned distortion."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_layer1 = _stem(6, 16)
        self.conv_layer2 = nn.Sequential(*_stage(16, 32, 3))
        self.conv_layer3 = nn.Sequential(*_stage(32, 48, 3))
        self.conv_layer4 = nn.Sequential(*_stage(48, 64, 3))
        self.dconv_layer1 = nn.Sequential(BottleneckIR(112, 64, 1), BottleneckIR(64, 32, 1), BottleneckIR(32, 32, 1))
        self.dconv_layer2 = nn.Sequential(BottleneckIR(64, 32, 1), BottleneckIR(32, 16, 1), BottleneckIR(16, 16, 1))
        self.dconv_layer3 = nn.Sequential(BottleneckIR(32, 16, 1), BottleneckIR(16, 3, 1), BottleneckIR(3, 3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat1 = self.conv_layer1(x)
        feat2 = self.conv_layer2(feat1)
        feat3 = self.conv_layer3(feat2)
        feat4 = self.conv_layer4(feat3)
        up = F.interpolate(feat4, size=feat3.shape[-2:], mode="bilinear")
        d1 = F.interpolate(self.dconv_layer1(torch.cat((up, feat3), 1)), size=feat2.shape[-2:], mode="bilinear")
        d2 = F.interpolate(self.dconv_layer2(torch.cat((d1, feat2), 1)), size=feat1.shape[-2:], mode="bilinear")
        return self.dconv_layer3(torch.cat((d2, feat1), 1))
