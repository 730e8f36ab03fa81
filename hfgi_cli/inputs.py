"""What the user asked to process: files, folders and ``-`` (paths on stdin) -> input items.

The one input collector of every command (``invert``, ``edit``, ``align``). Each item carries the
place its outputs take under the output folder, so the layout rule lives here only.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
LATENT_EXTS = frozenset({".pt"})


class InputError(Exception):
    """An input that cannot be used; the message names the file and the cause."""


class InputProblem(str):
    """A command-line input that gave nothing to process: the message, with the input in ``.path``."""

    path: str

    def __new__(cls, path: Path | str, cause: str) -> InputProblem:
        problem = super().__new__(cls, f"{path}: {cause}")
        problem.path = str(path)
        return problem


@dataclass(frozen=True)
class InputItem:
    """One input file and where its outputs go, relative to the output folder."""

    path: Path
    rel: Path  # output stem (no suffix), mirroring the input layout under OUT

    @property
    def is_latent(self) -> bool:
        return self.path.suffix.lower() in LATENT_EXTS


def _stdin_paths(stream: IO[str]) -> list[str]:
    paths = []
    for line in stream:
        exact = line.rstrip("\r\n")  # keep spaces that belong to the name
        if exact.strip():
            paths.append(exact if os.path.lexists(exact) else exact.strip())
    return paths


def collect_inputs(
    inputs: list[str],
    stdin: IO[str] | None = None,
    exclude: Path | None = None,
    latents: bool = True,
) -> tuple[list[InputItem], list[InputProblem]]:
    """Expand files, folders (their images, sorted, recursively) and ``-`` (paths from stdin).

    Files under ``exclude`` (the output folder, when it lies inside an input folder) are not
    inputs: a second run must not pick up the first run's results. ``latents`` admits ``.pt``
    files found in folders.

    Returns the items and the problems found (missing paths), so the run can go on without them.
    Output locations (as ``hfgi invert --help`` says): a file given by path -> its name; a file found in a
    folder -> its path inside that folder, under the folder's own name when several folders are
    given, so ``a/x.jpg`` and ``b/x.jpg`` never overwrite each other; any remaining clash (``x.jpg``
    and ``x.png``) -> ``x``, ``x-1``, ``x-2``... in input order.
    """
    raw: list[str] = []
    for arg in inputs:
        raw.extend(_stdin_paths(stdin if stdin is not None else sys.stdin) if arg == "-" else [arg])
    several_folders = len({Path(arg).resolve() for arg in raw if Path(arg).is_dir()}) > 1
    wanted = IMAGE_EXTS | (LATENT_EXTS if latents else frozenset())
    items: list[InputItem] = []
    problems: list[InputProblem] = []
    seen: set[Path] = set()
    taken: set[Path] = set()

    def add(path: Path, rel: Path) -> None:
        resolved = path.resolve()
        if resolved in seen:
            return
        seen.add(resolved)
        rel = rel.with_suffix("")
        base, k = rel, 1
        while rel in taken:  # same stem twice (x.jpg and x.png, or two folders' x.jpg given as files)
            rel = base.with_name(f"{base.name}-{k}")
            k += 1
        taken.add(rel)
        items.append(InputItem(path, rel))

    for arg in raw:
        path = Path(arg)
        if path.is_dir():
            skip = exclude.resolve() if exclude is not None and exclude.resolve() != path.resolve() else None
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in wanted and not (skip and p.resolve().is_relative_to(skip))
            )
            if not found:
                problems.append(InputProblem(path, "folder holds no images"))
            top = Path(path.resolve().name or "root") if several_folders else Path()
            for p in found:
                add(p, top / p.relative_to(path))
        elif path.is_file():
            add(path, Path(path.name))
        elif path.exists():
            problems.append(InputProblem(path, "not a regular file"))
        else:
            problems.append(InputProblem(path, "no such file or folder"))
    return items, problems


def face_name(stem: str, index: int, n_faces: int) -> str:
    """``<stem>_<k>`` for face ``index`` of a photo with ``n_faces``; zero-padded beyond ten faces
    (``_00`` .. ``_25``) so that a file browser sorts them in order."""
    width = len(str(max(n_faces - 1, 0))) if n_faces > 10 else 1
    return f"{stem}_{index:0{width}d}"
