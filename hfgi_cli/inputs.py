"""What the user asked to process: files, folders and ``-`` (paths on stdin) -> input items.

The one input collector of every command (``invert``, ``edit``, ``align``). Each item carries the
place its outputs take under the output folder, so the layout rule lives here only.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .remote import is_uri

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".heic", ".heif", ".hif",
                        ".avif"})
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
    uri: str | None = None  # an input named by a URI (``remote``): the URI; ``path`` is then its path there

    @property
    def source(self) -> str:
        """The input as reports and messages name it: its URI, else its path."""
        return self.uri if self.uri is not None else str(self.path)

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
    exclude: Path | str | None = None,
    latents: bool = True,
    uris: bool = False,
) -> tuple[list[InputItem], list[InputProblem]]:
    """Expand files, folders (their images, sorted, recursively) and ``-`` (paths from stdin);
    with ``uris``, files and folders may be URIs (``s3://``, ``file://``...: ``remote``; ``exclude``
    then a URI too), else a URI is a path that does not exist.

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
    wanted = IMAGE_EXTS | (LATENT_EXTS if latents else frozenset())
    found = [_uri_entry(arg, wanted, exclude) if uris and is_uri(arg) else _path_entry(arg, wanted, exclude)
             for arg in raw]
    several_folders = len({entry.key for entry in found if entry.kind == "folder"}) > 1
    items: list[InputItem] = []
    problems: list[InputProblem] = []
    seen: set[object] = set()
    taken: set[Path] = set()

    for entry in found:
        if entry.problem is not None:
            problems.append(InputProblem(entry.arg, entry.problem))
            continue
        if entry.kind == "folder" and not entry.files:
            problems.append(InputProblem(entry.arg, "folder holds no images"))
        top = Path(entry.name) if entry.kind == "folder" and several_folders else Path()
        for path, uri, inside in entry.files:
            key = uri if uri is not None else path.resolve()
            if key in seen:
                continue
            seen.add(key)
            rel = (top / inside).with_suffix("")
            base, k = rel, 1
            while rel in taken:  # same stem twice (x.jpg and x.png, or two folders' x.jpg given as files)
                rel = base.with_name(f"{base.name}-{k}")
                k += 1
            taken.add(rel)
            items.append(InputItem(path, rel, uri))
    return items, problems


@dataclass
class _Entry:
    """One command-line input: a file or a folder and the files it gives ``(path, uri, place inside)``."""

    arg: Path | str  # a path, or a URI as given
    kind: str = "file"  # file | folder
    files: list[tuple[Path, str | None, Path]] = field(default_factory=list)
    key: object = None  # a folder's identity
    name: str = ""  # a folder's own name
    problem: str | None = None


def _path_entry(arg: str, wanted: frozenset[str], exclude: Path | str | None) -> _Entry:
    path = Path(arg)
    if path.is_dir():
        local_exclude = _on_disk(exclude)
        skip = (local_exclude.resolve() if local_exclude is not None and local_exclude.resolve() != path.resolve()
                else None)
        files = sorted(
            p for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in wanted and not (skip and p.resolve().is_relative_to(skip))
        )
        return _Entry(path, "folder", [(p, None, p.relative_to(path)) for p in files], path.resolve(),
                      path.resolve().name or "root")
    if path.is_file():
        return _Entry(path, "file", [(path, None, Path(path.name))])
    return _Entry(path, problem="not a regular file" if path.exists() else "no such file or folder")


def _uri_entry(arg: str, wanted: frozenset[str], exclude: Path | str | None) -> _Entry:
    """An input named by a URI (pyarrow's filesystems, ``remote``); files under ``exclude`` (the
    output folder's URI) are not inputs."""
    from . import remote

    try:
        kind, files = remote.list_uri(arg, wanted)
        _, base = remote.filesystem(arg)
    except OSError as exc:
        return _Entry(arg, problem=f"cannot be read ({str(exc).removeprefix(arg + ': ')})")
    if kind == "missing":
        return _Entry(arg, problem="no such file or folder")
    skip, local_skip = None, _on_disk(exclude) if arg.startswith("file:") else None
    if isinstance(exclude, str) and exclude.rstrip("/") != arg.rstrip("/"):
        skip = exclude.rstrip("/") + "/"
    if local_skip is not None and local_skip.resolve() != Path(base).resolve():
        local_skip = local_skip.resolve()
    else:
        local_skip = None
    entries = [(Path(base.rstrip("/"), inside) if kind == "folder" else Path(base), uri, Path(inside))
               for uri, inside in files if not (skip and uri.startswith(skip))]
    if local_skip is not None:  # file://: the output folder may be named by its path
        entries = [entry for entry in entries if not entry[0].resolve().is_relative_to(local_skip)]
    return _Entry(arg, kind, entries, arg.rstrip("/"), remote.folder_name(arg))


def _on_disk(folder: Path | str | None) -> Path | None:
    """``folder`` as a local path: a path, or a ``file://`` URI."""
    if isinstance(folder, Path):
        return folder
    if isinstance(folder, str) and folder.startswith("file:"):
        from . import remote

        try:
            return Path(remote.filesystem(folder)[1])
        except OSError:
            return None
    return None


def face_name(stem: str, index: int, n_faces: int) -> str:
    """``<stem>_<k>`` for face ``index`` of a photo with ``n_faces``; zero-padded beyond ten faces
    (``_00`` .. ``_25``) so that a file browser sorts them in order."""
    width = len(str(max(n_faces - 1, 0))) if n_faces > 10 else 1
    return f"{stem}_{index:0{width}d}"
