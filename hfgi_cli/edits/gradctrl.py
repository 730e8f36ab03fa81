"""GradCtrl (Chen et al. 2022): per-image, non-linear directions from the gradients of small
classifiers on W, with channel masking so that one attribute moves without the others.

Each head is ``Linear(512, 16) -> LeakyReLU(0.1) -> Linear(16, 1) -> sigmoid``. One edit takes
``STEPS`` steps from the image's W (W+ row 0): the gradient of the target head's probability, with
the ``top_k`` largest-gradient channels of each excluded attribute zeroed, normalised to unit
length, times ``STEP_LENGTH``; gradients and masks are recomputed at every step. The move of W is
added to the attribute's W+ rows (the rows' own codes stay, as StyleRes applies GradCtrl to
inversions). Strength 1 is the published edit (9 steps of 4/9); a strength s takes the same 9
steps of s x 4/9, towards a higher probability for s > 0.

Settings per attribute follow ``zikuncshelly/GradCtrl`` ``manipulate.py`` (FFHQ: excluded heads,
top channels, W+ rows; cars and other domains: rows 6:14, no masking). The numbers of top channels
are the published ones for 512-D codes, scaled for a model with another W size (test models).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from .files import EditError, read_plain_pickle, read_tensor_file
from .moves import Edited, ModelShape, Move, Strength

STEPS = 9
STEP_LENGTH = 4.0 / 9.0
LEAKY_SLOPE = 0.1
PUBLISHED_DIM = 512


@dataclass(frozen=True)
class Setting:
    excluded: tuple[tuple[str, int], ...]
    """(attribute, top channels of its gradient to zero) for each attribute kept still."""
    rows: tuple[int, int]


FFHQ_SETTINGS = {
    "gender": Setting((("smile", 250), ("eyeglasses", 100), ("age", 100)), (2, 10)),
    "smile": Setting((("gender", 200), ("eyeglasses", 50), ("age", 100)), (2, 8)),
    "eyeglasses": Setting((("gender", 200), ("smile", 100), ("age", 250)), (1, 4)),
    "age": Setting((("gender", 100), ("eyeglasses", 300)), (4, 10)),
}
OTHER_DOMAIN_ROWS = (6, 14)


class Classifiers:
    """The published multi-head classifier, as plain tensors (one set of weights per head)."""

    def __init__(self, state: dict[str, torch.Tensor], attributes: list[str], origin: str) -> None:
        self.attributes = attributes
        self.heads: dict[str, tuple[torch.Tensor, ...]] = {}
        for i, name in enumerate(attributes):
            keys = [f"classifiers.{i}.classifier.{j}.{p}" for j in (0, 2) for p in ("weight", "bias")]
            missing = [k for k in keys if k not in state]
            if missing:
                raise EditError(f"{origin}: not a GradCtrl classifier (no {missing[0]})")
            w1, b1, w2, b2 = (state[k].float() for k in keys)
            if w1.ndim != 2 or w2.shape != (1, w1.shape[0]) or b1.shape != (w1.shape[0],) or b2.shape != (1,):
                raise EditError(f"{origin}: head {i} ({name}) has shapes {tuple(w1.shape)}, {tuple(w2.shape)}")
            self.heads[name] = (w1, b1, w2, b2)
        self.input_dim = int(next(iter(self.heads.values()))[0].shape[1])

    def probability(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """[B, dim] -> [B]: the head's sigmoid output."""
        # copies: weights read under the engine's inference mode cannot take part in autograd
        w1, b1, w2, b2 = (t.to(w, copy=True) for t in self.heads[name])
        hidden = F.leaky_relu(F.linear(w, w1, b1), LEAKY_SLOPE)
        return torch.sigmoid(F.linear(hidden, w2, b2))[:, 0]

    def gradient(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """d probability / d w per row (rows are independent, so one backward serves the batch)."""
        # outside the engine's inference mode and autocast: a float32 gradient of a tiny network
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(w.device.type, enabled=False):
            leaf = w.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.probability(name, leaf).sum(), leaf)
        return grad


def load_classifiers(weights: Path, params: Path) -> Classifiers:
    config = read_plain_pickle(params)
    if not isinstance(config, dict) or not isinstance(config.get("attributes"), str):
        raise EditError(f"{params}: not GradCtrl's model_params.pkl (no 'attributes')")
    state = read_tensor_file(weights)
    if not isinstance(state, dict):
        raise EditError(f"{weights}: not a GradCtrl state dict")
    return Classifiers(state, config["attributes"].split(","), str(weights))


def setting_for(attribute: str, domain: str, n_latent: int) -> Setting:
    if domain == "ffhq":
        return FFHQ_SETTINGS[attribute]
    return Setting((), (min(OTHER_DOMAIN_ROWS[0], n_latent - 1), min(OTHER_DOMAIN_ROWS[1], n_latent)))


def gradctrl_edit(latent: torch.Tensor, classifiers: Classifiers, attribute: str, setting: Setting,
                  strength: Strength) -> torch.Tensor:
    """Edited W+ [B, n_latent, dim]: the masked-gradient walk from row 0, added to the setting's rows."""
    if torch.is_tensor(strength):
        step = strength.to(latent).view(-1, 1) * STEP_LENGTH
    else:
        step = torch.full((latent.shape[0], 1), float(strength) * STEP_LENGTH, dtype=latent.dtype)
    start = latent[:, 0].float()
    w = start.clone()
    for _ in range(STEPS):
        grad = classifiers.gradient(attribute, w)
        for other, top in setting.excluded:
            other_grad = classifiers.gradient(other, w).abs()
            count = round(top * other_grad.shape[1] / PUBLISHED_DIM)  # the published counts are per 512 channels
            channels = other_grad.topk(count, dim=1).indices
            grad = grad.scatter(1, channels, 0.0)
        grad = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
        w = w + step.float() * grad
    lo, hi = setting.rows
    out = latent.clone()
    out[:, lo:hi] = out[:, lo:hi] + (w - start).to(latent)[:, None, :]
    return out


def gradctrl_move(weights: Path, params: Path, attribute: str, shape: ModelShape) -> Move:
    classifiers = load_classifiers(weights, params)
    if attribute not in classifiers.attributes:
        raise EditError(f"{weights}: has no '{attribute}' head (heads: {', '.join(classifiers.attributes)})")
    if classifiers.input_dim != shape.style_dim:
        raise EditError(f"{weights}: classifiers of {classifiers.input_dim}-D codes; this model's W is "
                        f"{shape.style_dim}-D")
    setting = setting_for(attribute, shape.domain, shape.n_latent)
    missing = [name for name, _ in setting.excluded if name not in classifiers.attributes]
    if missing:
        raise EditError(f"{weights}: has no '{missing[0]}' head, which the '{attribute}' edit keeps still")
    return lambda latent, strength: Edited(gradctrl_edit(latent, classifiers, attribute, setting, strength))
