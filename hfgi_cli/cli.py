"""The `hfgi` program: the command groups of ``commands`` under one Typer app, and ``main``.

Each command module parses and reports only; the work is the library's. Heavy modules (torch, the
model, dlib) are imported inside the commands that need them, so ``hfgi --help`` and ``hfgi
weights list`` start at once.
"""

from __future__ import annotations

import os
import sys

import typer

from . import __version__
from .commands import evaluate, photos, video, weights
from .commands.common import Group, note
from .interrupt import Stopped

app = typer.Typer(
    cls=Group,
    add_completion=False,
    no_args_is_help=True,
    help="Edit faces in photos and videos with HFGI (High-Fidelity GAN Inversion, CVPR 2022).",
)
for group in (photos, video, evaluate):
    app.registered_commands.extend(group.app.registered_commands)
app.add_typer(weights.app, name="weights")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"hfgi {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_version_callback, help="Print the version and exit."
    ),
) -> None:
    """Edit faces in photos and videos with HFGI (High-Fidelity GAN Inversion, CVPR 2022)."""
    # here, not in main: `hfgi --help` never gets here, and needs neither PIL nor numpy
    from PIL import Image

    from .images import MAX_IMAGE_PIXELS

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def main() -> None:
    """The `hfgi` program. As the process's owner (not as a library) it sets, unless the user did:

    - ``THP_MEM_ALLOC_ENABLE=1``: PyTorch's CPU allocator backs large tensors with transparent huge
      pages; a 1024 px generator pass allocates and frees hundreds of MB per layer, and with 4 KB
      pages the page faults cost as much as the arithmetic. Read at torch's first allocation, so
      it is set before torch is imported.
    - PIL's decompression-bomb limit raised to ``images.MAX_IMAGE_PIXELS`` (~16k x 16k), which
      ``images.open_image`` enforces itself with a clear message (in ``_root``, before any command).
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    try:
        app()
    except KeyboardInterrupt as exc:
        note("interrupted")
        sys.exit(exc.exit_code if isinstance(exc, Stopped) else 130)
