"""Edits: what an output asks for (``spec``), the catalogue of named edits (``catalog``), one module
per family of edits (``wdirections``: InterFaceGAN, STIT and custom W+ directions; ``ganspace``;
``gradctrl``; ``styleclip``: text prompts), and the ``Editor`` that resolves and applies them.

An edit maps W+ codes [B, n_latent, dim] to edited codes and, for StyleSpace edits, offsets of the
generator's style vectors. Every edit is a pure function of the codes, so an edit computed from a
stored latent equals the edit computed from the image.
"""

from __future__ import annotations

from collections.abc import Sequence

from .catalog import CATALOG, Entry, lookup
from .editor import Editor
from .files import EditError
from .ganspace import GanspaceEdit, ganspace_edit, load_ganspace
from .moves import Edited, ModelShape
from .spec import Combined, Edits, EditSpec, Output, as_edit_specs, describe, text_spec
from .wdirections import add_direction, load_direction

__all__ = [
    "CATALOG", "Combined", "EditError", "EditSpec", "Edited", "Editor", "Edits", "Entry", "GanspaceEdit", "ModelShape",
    "Output", "add_direction", "as_edit_specs", "check_attribute", "check_names", "describe", "ganspace_edit",
    "is_per_image", "list_attributes", "load_direction", "load_ganspace", "lookup", "needed_files", "text_spec",
]


def check_attribute(name: str) -> None:
    """Unknown names fail before anything is loaded, with the nearest known ones."""
    lookup(name)


def check_names(outputs: Sequence[Output]) -> None:
    """What can be checked without reading a file: each named edit is known, text edits need the
    ``text`` extra, and no output is asked for twice (their files would share a name)."""
    labels = [o.label for o in outputs]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise EditError(f"the same edit is asked for twice ({', '.join(twice)})")
    for output in outputs:
        for part in output.parts:
            if part.text is not None:
                from .styleclip import check_extra

                check_extra()
            elif not part.direction_file and part.ganspace is None:
                lookup(part.attr)


def needed_files(parts: Sequence[EditSpec], domain: str = "ffhq") -> list[str]:
    """The files (paths in the directions folder) that these edits read: what must be downloaded."""
    from .catalog import pca_files
    from .styleclip import needed_files as text_files

    files: list[str] = []
    for part in parts:
        if part.text is not None:
            found: Sequence[str] = text_files()
        elif part.ganspace is not None:
            found = pca_files(domain)
        elif part.direction_file:
            found = ()
        else:
            found = lookup(part.attr).files
        files += [f for f in found if f not in files]
    return files


def is_per_image(output: Output) -> bool:
    """Whether the output's move of W+ depends on the image's own codes in a non-linear way
    (GradCtrl): video averages such moves over frames."""
    return any(part.attr in CATALOG and CATALOG[part.attr].family == "gradctrl" for part in output.parts)


def list_attributes() -> list[Entry]:
    """Every named edit, in catalogue order (``hfgi edit --list-attrs``)."""
    return list(CATALOG.values())
