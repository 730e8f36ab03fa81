"""What an output asks for: one edit (``EditSpec``) or several applied together (``Combined``).

Specs are plain values: parsing them reads no file, so a bad name or option fails before any
model is loaded; ``Editor`` resolves them against the edit files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from .files import EditError
from .ganspace import GanspaceEdit

DIRECTION_SUFFIXES = (".pt", ".npy")
TEXT_LABEL_CHARS = 40
"""A text edit's output name is its prompt, squeezed to this many characters."""


def _text_slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:TEXT_LABEL_CHARS].rstrip("-") or "text"


def check_detail(detail: float) -> float:
    if not 0.0 <= detail <= 1.0:
        raise EditError(f"--detail must be within 0..1 (1: the published model, 0: the plain e4e edit), not {detail:g}")
    return float(detail)


@dataclass(frozen=True)
class EditSpec:
    """One edit at one strength: a catalogue name, a direction file, a GANSpace tuple (component,
    first row, end row, value) or a text prompt (StyleCLIP global direction, with its neutral text
    and ``beta``). ``detail`` scales HFGI's consultation (1: the published model, 0: plain e4e)."""

    attr: str
    strength: float
    direction_file: str | None = None
    ganspace: GanspaceEdit | None = None
    text: str | None = None
    neutral: str | None = None
    beta: float | None = None
    detail: float = 1.0

    @property
    def parts(self) -> tuple[EditSpec, ...]:
        return (self,)

    @property
    def move_label(self) -> str:
        if self.text is not None:
            name = _text_slug(self.text)
        else:
            name = Path(self.direction_file).stem if self.direction_file else self.attr
        return f"{name}{self.strength:+g}"

    @property
    def label(self) -> str:
        """The output's name part: ``smile+2``, ``curly-hair+3``, ``smile+2_detail0.5``."""
        return self.move_label + ("" if self.detail == 1.0 else f"_detail{self.detail:g}")

    @property
    def move_key(self) -> str:
        """What the edit moves along in the codes (the same for every strength and detail)."""
        if self.ganspace is not None:
            return f"ganspace:{self.ganspace}"
        if self.text is not None:
            return f"text:{self.text}|{self.neutral}|{self.beta}"
        return self.direction_file or self.attr

    @property
    def key(self) -> str:
        """The edit whatever its strength: its move and its detail."""
        return self.move_key + ("" if self.detail == 1.0 else f"@detail{self.detail:g}")

    def at(self, strength: float) -> EditSpec:
        """The same edit at another strength (sweeps, strength ramps)."""
        return EditSpec(self.attr, float(strength), self.direction_file, self.ganspace, self.text, self.neutral,
                        self.beta, self.detail)


@dataclass(frozen=True)
class Combined:
    """Several edits in one output, applied in order (W+ moves one after another; StyleSpace
    offsets add up): ``age+2_smile+1.5``."""

    edits: tuple[EditSpec, ...]
    detail: float = 1.0

    def __post_init__(self) -> None:
        if len(self.edits) < 2:
            raise EditError("a combined edit needs at least two edits")

    @property
    def parts(self) -> tuple[EditSpec, ...]:
        return self.edits

    @property
    def label(self) -> str:
        return "_".join(e.move_label for e in self.edits) + ("" if self.detail == 1.0 else f"_detail{self.detail:g}")

    @property
    def key(self) -> str:
        return "+".join(e.key for e in self.edits) + ("" if self.detail == 1.0 else f"@detail{self.detail:g}")


Output = Union[EditSpec, Combined]
"""One edited output of an input."""

Edits = Union[Mapping[Union[str, Path, tuple], float], Sequence[Output], Output, None]
"""Edits as the Python API takes them: ``{"smile": 2, "age": -1}`` (catalogue names; paths of
direction files; ``(component, start, end, value)`` GANSpace tuples; ``"text:face with curly hair"``
for a text prompt), specs, or None (inversion)."""

TEXT_PREFIX = "text:"


def spec_from_key(key: str | Path | tuple, strength: float, detail: float = 1.0, beta: float | None = None,
                  neutral: str | None = None) -> EditSpec:
    """One mapping entry of ``Edits`` as a spec."""
    if isinstance(key, tuple):
        try:
            component, start, end, value = key
            g = GanspaceEdit(int(component), int(start), int(end), float(value))
        except (TypeError, ValueError):
            raise EditError(f"a GANSpace edit is (component, start, end, value), not {key!r}") from None
        return EditSpec(f"ganspace{g.component}_{g.start}-{g.end}", float(strength), ganspace=g, detail=detail)
    text = str(key)
    if text.startswith(TEXT_PREFIX):
        return text_spec(text[len(TEXT_PREFIX):], float(strength), neutral=neutral, beta=beta, detail=detail)
    if text.lower().endswith(DIRECTION_SUFFIXES):
        return EditSpec(Path(text).stem, float(strength), direction_file=text, detail=detail)
    return EditSpec(text, float(strength), detail=detail)


def text_spec(text: str, strength: float, neutral: str | None = None, beta: float | None = None,
              detail: float = 1.0) -> EditSpec:
    """A StyleCLIP text edit, checked: a text, a neutral text, and ``0 < beta < 1``."""
    from .styleclip import DEFAULT_BETA, DEFAULT_NEUTRAL

    text = text.strip()
    if not text:
        raise EditError("--text is empty: describe the target, e.g. --text \"face with curly hair\"")
    beta = DEFAULT_BETA if beta is None else float(beta)
    if not 0.0 < beta < 1.0:
        raise EditError(f"--beta must be within (0, 1) (channels whose relevance is below it stay still), not {beta:g}")
    neutral = DEFAULT_NEUTRAL if neutral is None or not neutral.strip() else neutral.strip()
    return EditSpec("text", float(strength), text=text, neutral=neutral, beta=beta, detail=detail)


def as_edit_specs(edits: Edits, combine: bool = False, detail: float = 1.0) -> list[Output]:
    """Every accepted form of ``Edits`` as outputs, in order; nothing is loaded here. ``combine``:
    all of them in one output; ``detail``: for the mapping form (specs carry their own)."""
    check_detail(detail)
    if edits is None:
        return []
    if isinstance(edits, (EditSpec, Combined)):
        specs: list[Any] = [edits]
    elif isinstance(edits, Mapping):
        specs = [spec_from_key(key, strength, detail) for key, strength in edits.items()]
    else:
        specs = list(edits)
        if not all(isinstance(s, (EditSpec, Combined)) for s in specs):
            raise EditError("edits must be a mapping {name: strength} or a list of EditSpec / Combined")
    for spec in specs:
        check_detail(spec.detail)
    if combine and len(specs) > 1:
        if any(isinstance(s, Combined) for s in specs):
            raise EditError("combine=True takes single edits")
        return [Combined(tuple(specs), detail=specs[0].detail)]
    return specs


def describe(output: Output) -> dict[str, Any]:
    """What an output's edit was, for latent files and --json lines: its label, ``detail`` and,
    per edit, family, name (or text, neutral text and beta), strength."""
    from .catalog import CATALOG

    parts = []
    for part in output.parts:
        entry: dict[str, Any] = {"strength": part.strength}
        if part.text is not None:
            entry.update(family="styleclip", text=part.text, neutral=part.neutral, beta=part.beta)
        elif part.direction_file:
            entry.update(family="direction", name=part.attr, file=part.direction_file)
        elif part.ganspace is not None:
            g = part.ganspace
            entry.update(family="ganspace", name=part.attr, component=g.component, rows=[g.start, g.end],
                         value=g.value)
        else:
            entry.update(family=CATALOG[part.attr].family if part.attr in CATALOG else "unknown", name=part.attr)
        parts.append(entry)
    return {"label": output.label, "detail": output.detail, "edits": parts}
