"""HFGI: e4e inversion + distortion consultation, loading the published checkpoint strictly.

The data path of one batch (all tensors in [-1, 1]):

    x (B,3,256,256) --encoder--> W+ = e4e(x) + latent_avg
    image0 = G(W+)                                    # first pass, stored noise
    distortion = x - down256(clamp(image0))
    edit0 = down256(clamp(G(W', dS)))  (or down256(clamp(image0)) when W' == W+, dS == 0)
    aligned = ADA(cat(distortion, edit0))
    conditions = detail * consultation(aligned)       # (scale, shift) at 64x64; detail 1 is published
    output = G(W', conditions, dS)                    # full resolution

W' is the (edited) W+ code and dS the StyleSpace offsets of a text edit (none otherwise).

``encode`` covers the first three lines once per image; ``decode`` covers the rest once per edit,
so any number of edits share one encoding.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import threading
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..reasons import short_reason
from .encoders import Encoder4Editing, ResidualAligner, ResidualEncoder
from .stylegan2 import Form, Generator

ENCODER_INPUT_SIZE = 256
PAGE_BYTES = 4096
"""The smallest memory page (x86, most ARM): ``make_resident`` writes one byte in each."""


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or of another architecture (CLI exit code 2)."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one checkpoint. The defaults are the published FFHQ model."""

    size: int = 1024
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    channel_max: int = 512
    encoder_width: int = 64
    style_count: int = 18
    domain: str = "ffhq"

    @property
    def n_latent(self) -> int:
        return 2 * int(math.log2(self.size)) - 2

    @property
    def output_rows(self) -> tuple[int, int]:
        """Rows of the square generator output that make the picture (cars are 384x512)."""
        if self.domain == "cars":
            return (self.size // 8, self.size - self.size // 8)
        return (0, self.size)


# Keys of ``opts`` that a project-made small checkpoint uses to describe its architecture.
ARCH_OPTS_KEY = "hfgi_arch"


def config_from_checkpoint(ckpt: dict[str, Any]) -> ModelConfig:
    opts = ckpt.get("opts") or {}
    if not isinstance(opts, dict):
        opts = vars(opts) if hasattr(opts, "__dict__") else {}
    dataset_type = str(opts.get("dataset_type", "ffhq_encode"))
    domain = "cars" if "car" in dataset_type else "ffhq"
    size = int(opts.get("stylegan_size") or (512 if domain == "cars" else 1024))
    arch = dict(opts.get(ARCH_OPTS_KEY) or {})
    sd = ckpt["state_dict"]
    style_count = len({k.split(".")[2] for k in sd if k.startswith("encoder.styles.")}) or 2 * int(
        math.log2(size)
    ) - 2
    return ModelConfig(size=size, domain=domain, style_count=style_count, **arch)


def _load_tensors(path: Path) -> Any:
    """torch.load of tensors only, memory-mapped: the file's pages are the tensors' storage, so
    loading reads nothing up front (0.07 s for the 1.2 GB checkpoint instead of ~4 s) and the
    pages come in from the page cache as the first pass reads them. The engine then copies the
    weights into process memory in the background (``engine.load_model``'s ``resident``): mapped
    pages can be reclaimed by the kernel between passes and faulted back in, which on a busy CI
    machine made generator passes 1.2-3.5 s instead of a steady 1.1 s. Files in PyTorch's legacy
    (pre-zip) format cannot be mapped and are read as before."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file into CPU memory, with errors a user can act on (its structure is
    checked by ``check_published_state``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = _load_tensors(path)
    except pickle.UnpicklingError:
        # Training code may pickle Python objects (e.g. an argparse Namespace) in opts. Unpickling
        # those can run code from the file, so only a user who trusts the file may allow it.
        if os.environ.get("HFGI_TRUST_CHECKPOINT") != "1":
            raise CheckpointError(
                f"{path}: holds Python objects besides tensors; loading it could run code from the file. "
                "If you trust it, set HFGI_TRUST_CHECKPOINT=1"
            ) from None
        warnings.warn(f"{path}: loading with full unpickling (HFGI_TRUST_CHECKPOINT=1)", stacklevel=2)
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({exc.__class__.__name__})") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({short_reason(exc)})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not an HFGI checkpoint (no 'state_dict' dict inside)")
    return ckpt


def _describe_keys(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


@lru_cache(maxsize=4)
def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the published state dict for an architecture (built on the meta device)."""
    with torch.device("meta"):
        model = HFGI(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "latent_avg"}


@lru_cache(maxsize=4)
def style_layout_of(config: ModelConfig) -> tuple[tuple[int, bool], ...]:
    """Per StyleSpace layer of an architecture's generator (``Generator.style_layers`` order):
    (channels, whether it is a to-RGB layer). Built on the meta device: no weights needed."""
    with torch.device("meta"):
        decoder = Generator(config.size, config.style_dim, config.n_mlp, config.channel_multiplier,
                            config.channel_max)
    return tuple((conv.in_ch, not conv.demodulate) for conv in decoder.style_layers())


def check_published_state(ckpt: dict[str, Any], origin: str = "checkpoint") -> ModelConfig:
    """The one structure check of a checkpoint (loading and ``hfgi weights verify`` both use it):
    every key and tensor shape of ``state_dict`` and the shape of ``latent_avg`` against the
    architecture the file describes. Returns that architecture; raises CheckpointError."""
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{origin}: not an HFGI checkpoint (no 'state_dict' dict inside)")
    if not torch.is_tensor(ckpt.get("latent_avg")):
        raise CheckpointError(f"{origin}: not an HFGI checkpoint (no 'latent_avg' tensor)")
    try:
        config = config_from_checkpoint(ckpt)
        want = expected_shapes(config)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{origin}: unsupported architecture options ({exc})") from None
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    if missing or unexpected:
        parts = [f"missing {len(missing)} keys: {_describe_keys(missing)}"] if missing else []
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_describe_keys(unexpected)}")
        raise CheckpointError(f"{origin}: not a checkpoint of this model ({'; '.join(parts)})")
    wrong = [
        f"{k} {tuple(state[k].shape) if torch.is_tensor(state[k]) else type(state[k]).__name__} vs {s}"
        for k, s in sorted(want.items())
        if not torch.is_tensor(state[k]) or tuple(state[k].shape) != s
    ]
    if wrong:
        raise CheckpointError(f"{origin}: tensor shapes differ from this model ({_describe_keys(wrong, 3)})")
    avg = ckpt["latent_avg"]
    rows = 1 if avg.ndim == 1 else avg.shape[0]
    if avg.ndim > 2 or avg.shape[-1] != config.style_dim or not (rows == 1 or rows >= config.n_latent):
        raise CheckpointError(f"{origin}: latent_avg has shape {tuple(avg.shape)}")
    return config


class HFGI(nn.Module):
    """The four published networks plus ``latent_avg``; loads and runs the published checkpoint.

    ``form`` is how the generator computes (see ``stylegan2.Form``); it is a value given at
    construction (``from_checkpoint`` picks the device's best one) and ``with_form`` makes a view
    of the same weights that computes in another form.
    """

    def __init__(self, config: ModelConfig = ModelConfig(), form: Form = Form()) -> None:
        super().__init__()
        self.config = config
        self.form = form
        self.encoder = Encoder4Editing(config.style_count, config.style_dim, config.encoder_width)
        self.decoder = Generator(
            config.size, config.style_dim, config.n_mlp, config.channel_multiplier, config.channel_max
        )
        self.residue = ResidualEncoder(self.decoder.condition_channels)
        self.grid_align = ResidualAligner()
        self.register_buffer("latent_avg", torch.zeros(config.n_latent, config.style_dim))
        self.source = "unloaded"

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", form: Form | None = None
    ) -> HFGI:
        """Load a checkpoint strictly onto ``device``; ``form`` defaults to the device's best one."""
        ckpt = read_checkpoint(path)
        config = check_published_state(ckpt, str(path))  # the one structure check
        device = torch.device(device)
        with torch.device("meta"):  # no random init: every tensor comes from the file
            model = cls(config, form or Form.for_device(device.type))
        model._adopt_state(ckpt, str(path), assign=True)
        model.source = Path(path).name
        return model.to(device).eval()

    def make_resident(self, stop: threading.Event | None = None) -> None:
        """Move memory-mapped weights into process memory, in place: one write of an unchanged
        byte per page makes the kernel copy each page of the private mapping into anonymous
        memory, which it cannot reclaim between passes (the file is never written, the tensors
        keep their addresses and values, so passes may run meanwhile). A no-op for weights
        already in memory apart from the page walk (~0.2 s for the 1.2 GB model). A set ``stop``
        ends the walk at the next tensor (the process is exiting)."""
        import numpy as np

        for tensor in (*self.parameters(), *self.buffers()):
            if stop is not None and stop.is_set():
                return
            if tensor.device.type != "cpu" or not tensor.is_contiguous() or tensor.numel() == 0:
                continue
            data = tensor.detach().reshape(-1).view(torch.uint8).numpy()
            np.bitwise_or(data[::PAGE_BYTES], 0, out=data[::PAGE_BYTES])  # numpy: one thread, no GIL
            data[-1:] |= 0

    def hold_conv_weights(self, dtype: torch.dtype | None = None, stop: threading.Event | None = None) -> None:
        """Hold the plain convolutions' weights of the encoder, the consultation encoder and the
        aligner as the passes read them, so that no call converts them again: in the activations'
        layout (NHWC in the CPU form: each call of a convolution on NHWC activations otherwise
        copies an NCHW weight, for e4e ~1 GB and ~0.15 s per encoding on a 2-core CPU) and, for a
        model that runs under autocast to ``dtype`` from then on (``engine.Runtime.session``), in
        that dtype (autocast casts them at every call). The convolutions compute the same numbers
        either way. The generator's weights stay: its modulated weights are made per call. Passes
        may run meanwhile (each layer holds the old or the new weight, the same values); a set
        ``stop`` ends it at the next layer."""
        layout = torch.channels_last if self.form.channels_last else torch.contiguous_format
        for part in (self.encoder, self.residue, self.grid_align):
            for module in part.modules():
                if stop is not None and stop.is_set():
                    return
                if type(module) is not nn.Conv2d:
                    continue
                weight = module.weight.detach()
                held = weight.to(dtype=dtype or weight.dtype, memory_format=layout)
                if held is not weight:
                    module.weight = nn.Parameter(held, requires_grad=False)
                if module.bias is not None and dtype is not None and module.bias.dtype != dtype:
                    module.bias = nn.Parameter(module.bias.detach().to(dtype), requires_grad=False)

    def with_form(self, form: Form) -> HFGI:
        """The same weights (shared, not copied), computed in another form."""
        view = copy.copy(self)
        view.__dict__["form"] = form
        return view

    def _encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """NHWC inputs where the generator runs NHWC (the CPU form): oneDNN's convs then keep that
        layout (e4e ~0.55 -> ~0.43 s). The weights are made NHWC after loading, in the background
        (``hold_conv_weights``; at load, ~1 GB of them would cost a second)."""
        return x.contiguous(memory_format=torch.channels_last) if self.form.channels_last else x

    def load_published_state(self, ckpt: dict[str, Any], origin: str = "checkpoint", assign: bool = False) -> None:
        """Strictly load ``encoder.* decoder.* residue.* grid_align.*`` and ``latent_avg``.

        ``assign`` adopts the checkpoint's tensors instead of copying them (for a model built on the
        meta device: no random initialisation, no second copy of 1.2 GB).
        """
        config = check_published_state(ckpt, origin)
        if config != self.config:
            raise CheckpointError(f"{origin}: a checkpoint of another architecture ({config})")
        self._adopt_state(ckpt, origin, assign)

    def _adopt_state(self, ckpt: dict[str, Any], origin: str, assign: bool) -> None:
        """``load_published_state`` for a checkpoint already checked against this architecture."""
        state = ckpt["state_dict"]
        for prefix in ("encoder", "decoder", "residue", "grid_align"):
            module: nn.Module = getattr(self, prefix)
            sub = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
            module.load_state_dict(sub, strict=True, assign=assign)
        rows = self._latent_avg_rows(ckpt["latent_avg"], origin)
        if assign:
            self.latent_avg = rows.clone()
        else:
            self.latent_avg.copy_(rows)

    def _latent_avg_rows(self, latent_avg: torch.Tensor, origin: str) -> torch.Tensor:
        """The published file stores [18, 512]; older ones [512] or [1, 512]; all broadcast."""
        avg = latent_avg.float()
        if avg.ndim == 1:
            avg = avg.unsqueeze(0)
        if avg.shape[-1] != self.config.style_dim or avg.ndim != 2:
            raise CheckpointError(f"{origin}: latent_avg has shape {tuple(latent_avg.shape)}")
        if avg.shape[0] == 1:
            avg = avg.expand(self.config.style_count, -1)
        if avg.shape[0] < self.config.n_latent:
            raise CheckpointError(f"{origin}: latent_avg has {avg.shape[0]} rows, need {self.config.n_latent}")
        return avg[: self.config.n_latent]

    # ------------------------------------------------------------------ inference
    @property
    def n_latent(self) -> int:
        return self.config.n_latent

    @property
    def device(self) -> torch.device:
        return self.latent_avg.device

    def synthesize(
        self,
        latent: torch.Tensor,
        conditions: tuple[torch.Tensor, torch.Tensor] | None = None,
        style_offsets: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        return self.decoder(latent, conditions, randomize_noise=False, form=self.form, style_offsets=style_offsets)

    def style_layout(self) -> tuple[tuple[int, bool], ...]:
        """Per StyleSpace layer of the generator: (channels, whether it is a to-RGB layer)."""
        return style_layout_of(self.config)

    @staticmethod
    def to_low_res(image: torch.Tensor) -> torch.Tensor:
        return F.interpolate(
            torch.clamp(image, -1.0, 1.0), size=(ENCODER_INPUT_SIZE, ENCODER_INPUT_SIZE), mode="bilinear"
        )

    def latent_codes(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,3,256,256] in [-1,1] -> W+ codes (e4e + latent_avg)."""
        return self.encoder(self._encoder_input(x))[:, : self.n_latent] + self.latent_avg.to(x.dtype)

    def consult(self, distortion: torch.Tensor, edit_low_res: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ADA aligns the distortion map to the (edited) low-res image; the consultation encoder
        turns it into the (scale, shift) conditions of the 64x64 generator features."""
        pair = torch.cat((distortion.to(edit_low_res.dtype), edit_low_res), 1)
        return self.residue(self.grid_align(self._encoder_input(pair)))

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: [B,3,256,256] in [-1,1] -> W+ codes, distortion map and the first pass low-res image."""
        codes = self.latent_codes(x)
        image0 = self.to_low_res(self.synthesize(codes))
        return {"latent": codes, "distortion": x - image0, "low_res": image0}

    def decode(
        self,
        latent: torch.Tensor,
        distortion: torch.Tensor,
        edit_low_res: torch.Tensor | None = None,
        style_offsets: Sequence[torch.Tensor | None] | None = None,
        detail: float = 1.0,
    ) -> torch.Tensor:
        """Second pass for codes W' (edited or not; ``style_offsets`` move its StyleSpace):
        full-resolution output in [-1, 1] (unclamped). ``detail`` scales the consultation's
        conditions: 1 is the published model, 0 the plain e4e image G(W') (no consultation run)."""
        if detail == 0.0:
            image = self.synthesize(latent, None, style_offsets)
        else:
            if edit_low_res is None:
                edit_low_res = self.to_low_res(self.synthesize(latent, None, style_offsets))
            scale, shift = self.consult(distortion, edit_low_res)
            if detail != 1.0:
                scale, shift = scale * detail, shift * detail
            image = self.synthesize(latent, (scale, shift), style_offsets)
        top, bottom = self.config.output_rows
        return image[:, :, top:bottom, :]


def make_random_checkpoint(
    path: str | Path | None,
    config: ModelConfig = ModelConfig(),
    seed: int = 0,
    dataset_type: str | None = None,
) -> dict[str, Any]:
    """A checkpoint in the published format with seeded random weights (for tests and benchmarks).

    Weights follow the published initialisation scales closely enough to give finite, image-like
    outputs. The architecture of a non-default config is recorded in ``opts`` so it loads back.
    """
    gen = torch.Generator().manual_seed(seed)
    model = HFGI(config)
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key == "latent_avg":
            continue
        if value.dtype == torch.int64:
            state[key] = torch.zeros_like(value)
        elif key.endswith(".kernel"):
            state[key] = value.clone()
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=gen)
        elif key.endswith("modulation.bias"):
            state[key] = 1.0 + 0.1 * torch.randn(value.shape, generator=gen)
        elif key.endswith("bias") or key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn(value.shape, generator=gen)
        elif value.ndim >= 2:
            equalized = key.startswith("decoder.") or ".linear." in key or "condition_" in key
            noise = torch.randn(value.shape, generator=gen)
            if "to_rgb" in key and key.endswith("conv.weight"):
                state[key] = 0.02 * noise
            elif equalized:
                state[key] = noise
            else:
                fan_in = math.prod(value.shape[1:])
                state[key] = (torch.rand(value.shape, generator=gen) * 2 - 1) / math.sqrt(fan_in)
        else:
            state[key] = 1.0 + 0.1 * torch.randn(value.shape, generator=gen)
    latent_avg = torch.randn(1, config.style_dim, generator=gen).repeat(config.style_count, 1)
    opts: dict[str, Any] = {
        "dataset_type": dataset_type or ("cars_encode" if config.domain == "cars" else "ffhq_encode"),
        "encoder_type": "Encoder4Editing",
        "start_from_latent_avg": True,
        "stylegan_size": config.size,
    }
    arch = {k: v for k, v in asdict(config).items() if k not in ("size", "domain", "style_count")}
    if arch != {k: v for k, v in asdict(ModelConfig()).items() if k in arch}:
        opts[ARCH_OPTS_KEY] = arch
    ckpt = {"state_dict": state, "latent_avg": latent_avg, "opts": opts}
    if path is not None:
        torch.save(ckpt, path)
    return ckpt


SMALL_CONFIG = ModelConfig(
    size=64, style_dim=64, n_mlp=2, channel_multiplier=1, channel_max=32, encoder_width=16, style_count=10
)
"""A tiny architecture of the same shape (every network, every code path) for fast tests."""

