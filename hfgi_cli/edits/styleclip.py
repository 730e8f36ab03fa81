"""StyleCLIP global directions (Patashnik et al. 2021): a text pair becomes StyleSpace offsets.

1. CLIP ViT-B/32's text tower embeds the target and the neutral text in every prompt template;
   each embedding is L2-normalised, averaged over the templates and normalised again; the
   direction is target minus neutral, normalised.
2. ``fs3.npy`` holds, per StyleSpace channel of the 17 non-to-RGB style layers (6048 for FFHQ
   1024), the CLIP-space direction that moving the channel gives. Its dot product with the text
   direction is each channel's relevance; channels below ``beta`` in absolute value are zeroed and
   the rest divided by the largest absolute relevance.
3. Per channel, that is multiplied by the channel's standard deviation (``S_mean_std``) and by the
   strength, and added to the style vector (the affine layer's output) of its layer; to-RGB layers
   stay as they are.

This is ``orpatashnik/StyleCLIP`` ``global_torch`` (``GetDt``, ``GetBoundary``, ``SplitS``,
``MSCode``) with its 79 prompt templates; the strength is its alpha.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..reasons import short_reason
from .files import EditError, read_array_pickle
from .moves import Edited, ModelShape, Move, scaled

DEFAULT_BETA = 0.15
DEFAULT_NEUTRAL = "face"
"""StyleCLIP wants the text without the change (``face with hair`` for ``face with curly hair``);
without one, the plain ``face`` (as STIT does)."""
TEXT_RANGE = (-10.0, 10.0)
S_MEAN_STD = "styleclip/S_mean_std"
TEMPLATES = "styleclip/templates.txt"
FS3 = "styleclip/fs3.npy"
CLIP_WEIGHTS = "styleclip/ViT-B-32.pt"
FETCH = "hfgi weights download styleclip"
EXTRA = "pip install 'hfgi-cli[text]'"


def needed_files() -> tuple[str, ...]:
    return (S_MEAN_STD, TEMPLATES, FS3, CLIP_WEIGHTS)


def check_extra() -> None:
    """The text tower comes from open_clip (the optional ``text`` extra)."""
    from importlib.util import find_spec

    if find_spec("open_clip") is None:
        raise EditError(f"--text needs CLIP's text encoder from open_clip: {EXTRA}")


def check_files(folder: Path | None, clip: bool = True) -> None:
    """Every file a text edit reads (CLIP's weights too unless ``clip`` is False), present (before
    any model is loaded)."""
    wanted = [f for f in needed_files() if clip or f != CLIP_WEIGHTS]
    missing = [f for f in wanted if folder is None or not (folder / f).is_file()]
    if missing:
        where = f"in {folder}" if folder is not None else "(no directions folder)"
        raise EditError(f"--text needs StyleCLIP's files ({', '.join(Path(f).name for f in missing)} missing "
                        f"{where}): run `{FETCH}`")


class TextEncoder:
    """CLIP's text tower (open_clip's build of OpenAI's weights), run on the CPU in fp32."""

    def __init__(self, weights: Path) -> None:
        check_extra()
        import open_clip

        try:
            with warnings.catch_warnings():  # open_clip tries torch.jit.load first, which torch now deprecates
                warnings.simplefilter("ignore", FutureWarning)
                model = open_clip.load_openai_model(str(weights), precision="fp32", device="cpu")
        except Exception as exc:
            raise EditError(f"{weights}: cannot load CLIP ViT-B/32 ({short_reason(exc, 100)})") from None
        model.visual = torch.nn.Identity()  # only the text tower is used
        self.model = model.eval()
        self.tokenize = open_clip.tokenize
        self.lock = threading.Lock()

    def embed(self, texts: list[str]) -> torch.Tensor:
        """[N, 512] text embeddings."""
        with self.lock, torch.inference_mode():
            return self.model.encode_text(self.tokenize(texts)).float()


@dataclass
class Resources:
    """What every text edit of a run shares: the templates, the channels' CLIP directions and std,
    the text encoder, and the generator's style layers they are laid out on."""

    templates: list[str]
    fs3: torch.Tensor
    s_std: list[torch.Tensor]
    encoder: Any
    shape: ModelShape


def read_templates(path: Path) -> list[str]:
    templates = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not templates or not all("{}" in t for t in templates):
        raise EditError(f"{path}: not a list of prompt templates (one a line, each with {{}})")
    return templates


def load_resources(folder: Path | None, shape: ModelShape, encoder: Any = None) -> Resources:
    """Read and check StyleCLIP's files against the generator's style layers; ``encoder`` stands
    in for CLIP (tests), else it is loaded from the weights file."""
    check_files(folder, clip=encoder is None)
    assert folder is not None
    conv_channels = [c for c, to_rgb in shape.style_layers if not to_rgb]
    fs3_path = folder / FS3
    try:
        fs3 = torch.from_numpy(np.load(fs3_path, allow_pickle=False)).float()
    except Exception as exc:
        raise EditError(f"{fs3_path}: cannot read ({short_reason(exc, 100)})") from None
    if fs3.shape != (sum(conv_channels), fs3.shape[-1]) or fs3.ndim != 2:
        raise EditError(f"{fs3_path}: shape {tuple(fs3.shape)}; this generator has {sum(conv_channels)} "
                        f"StyleSpace channels outside its to-RGB layers")
    stats = read_array_pickle(folder / S_MEAN_STD)
    if not (isinstance(stats, (list, tuple)) and len(stats) == 2 and len(stats[1]) == len(shape.style_layers)):
        raise EditError(f"{folder / S_MEAN_STD}: expected (means, stds) for {len(shape.style_layers)} style layers")
    s_std = [torch.as_tensor(np.asarray(a, dtype=np.float32)).reshape(-1) for a in stats[1]]
    wrong = [i for i, (s, (c, _)) in enumerate(zip(s_std, shape.style_layers)) if s.numel() != c]
    if wrong:
        raise EditError(f"{folder / S_MEAN_STD}: layer {wrong[0]} has {s_std[wrong[0]].numel()} channels, "
                        f"the generator {shape.style_layers[wrong[0]][0]}")
    templates = read_templates(folder / TEMPLATES)
    return Resources(templates, fs3, s_std, encoder or TextEncoder(folder / CLIP_WEIGHTS), shape)


def text_embedding(encoder: Any, text: str, templates: list[str]) -> torch.Tensor:
    """Normalised mean of the normalised embeddings of ``text`` in every template."""
    embeddings = encoder.embed([t.format(text) for t in templates])
    embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
    mean = embeddings.mean(dim=0)
    return mean / mean.norm()


def text_direction(resources: Resources, text: str, neutral: str) -> torch.Tensor:
    """The CLIP-space direction from the neutral text to the target, unit length [512]."""
    delta = text_embedding(resources.encoder, text, resources.templates) - text_embedding(
        resources.encoder, neutral, resources.templates)
    return delta / delta.norm().clamp_min(1e-12)


def channel_offsets(resources: Resources, direction: torch.Tensor, beta: float, text: str = "") -> list:
    """Per style layer: the offset at strength 1 ([channels]), or None for to-RGB layers."""
    relevance = resources.fs3 @ direction.to(resources.fs3)
    relevance = torch.where(relevance.abs() < beta, torch.zeros_like(relevance), relevance)
    peak = relevance.abs().max()
    if float(peak) == 0.0:
        raise EditError(f"--text {text!r}: no StyleSpace channel is relevant above --beta {beta:g}; "
                        f"lower --beta")
    relevance = relevance / peak
    offsets: list[torch.Tensor | None] = []
    start = 0
    for (channels, to_rgb), std in zip(resources.shape.style_layers, resources.s_std):
        if to_rgb:
            offsets.append(None)
            continue
        part = relevance[start:start + channels]
        start += channels
        offsets.append(part * std if bool(part.any()) else None)
    return offsets


def text_move(resources: Resources, text: str, neutral: str, beta: float) -> Move:
    offsets = channel_offsets(resources, text_direction(resources, text, neutral), beta, text)
    return lambda latent, strength: Edited(latent, scaled(offsets, strength, latent))
