"""Inputs and outputs named by URIs that pyarrow understands (``s3://``, ``gs://``, ``file://``...).

``hfgi invert|edit --ray`` reads such inputs and writes such an output folder: each input is
downloaded to a temporary local file for the pipeline, and each output is written to a temporary
local folder by the pipeline, then uploaded. An upload is one object written at once (atomic on an
object store); on a local disk (``file://``) it is written under a temporary name and renamed, as
the pipeline writes. Credentials are pyarrow's: what it (or the cloud SDK) reads from the
environment.

pyarrow is imported here only, when a URI is used.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from .atomic import atomic_write
from .reasons import short_reason

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
_CHUNK = 1 << 20


def is_uri(text: str | os.PathLike[str]) -> bool:
    """``scheme://...`` (or ``file:...``): not a plain local path."""
    text = str(text)
    return bool(_SCHEME.match(text)) or text.startswith("file:")


def filesystem(uri: str) -> tuple[Any, str]:
    """``(pyarrow.fs.FileSystem, path on it)`` for ``uri``; OSError (naming the URI) when pyarrow
    cannot make sense of it."""
    try:
        from pyarrow import fs
    except ImportError as exc:
        raise OSError(f"{uri}: URIs need pyarrow: pip install pyarrow") from exc
    try:
        return fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        raise OSError(f"{uri}: {short_reason(exc)}") from None


def join(uri: str, rel: str) -> str:
    """``uri`` + ``/rel`` (``rel``: a POSIX path, quoted as a URI path), keeping its query (``?region=``)."""
    parts = urlsplit(uri)
    path = parts.path.rstrip("/") + "/" + quote(rel, safe="/+=,;:@!$&'()*~")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def _is_local(fs: Any) -> bool:
    return fs.type_name == "local"


def list_uri(uri: str, exts: frozenset[str]) -> tuple[str, list[tuple[str, PurePosixPath]]]:
    """What ``uri`` names: ``("file", [(uri, name)])``, ``("folder", [(uri, path inside it)...])``
    (files ending with ``exts``, recursively, sorted) or ``("missing", [])``. OSError when it cannot
    be read."""
    from pyarrow import fs as pafs

    filesys, path = filesystem(uri)
    info = filesys.get_file_info(path)
    if info.type == pafs.FileType.File:
        return "file", [(uri, PurePosixPath(PurePosixPath(path).name))]
    if info.type != pafs.FileType.Directory:
        return "missing", []
    base = path.rstrip("/")
    found = []
    for entry in filesys.get_file_info(pafs.FileSelector(base, recursive=True)):
        if entry.type != pafs.FileType.File or PurePosixPath(entry.path).suffix.lower() not in exts:
            continue
        rel = PurePosixPath(entry.path).relative_to(base)
        found.append((join(uri, rel.as_posix()), rel))
    return "folder", sorted(found, key=lambda f: f[1])


def folder_name(uri: str) -> str:
    """The last name in ``uri``'s path (``root`` for a bucket's top)."""
    return PurePosixPath(urlsplit(uri).path.rstrip("/")).name or urlsplit(uri).netloc or "root"


def exists(uri: str) -> bool:
    from pyarrow import fs as pafs

    filesys, path = filesystem(uri)
    return filesys.get_file_info(path).type == pafs.FileType.File


@contextlib.contextmanager
def downloaded(uri: str, suffix: str = "") -> Iterator[Path]:
    """The object at ``uri`` in a temporary local file (with ``suffix``), removed on exit."""
    filesys, path = filesystem(uri)
    with tempfile.TemporaryDirectory(prefix="hfgi-in-") as folder:
        local = Path(folder) / ("input" + suffix)
        with filesys.open_input_stream(path) as source, open(local, "wb") as target:
            shutil.copyfileobj(source, target, _CHUNK)
        yield local


class Folder:
    """A folder on a pyarrow filesystem (an output folder): look up, fetch and upload files by their
    path inside it."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, path = filesystem(uri)
        self.base = path.rstrip("/") or path

    def path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if self.base else rel

    def uri_of(self, rel: str) -> str:
        return join(self.uri, rel)

    def is_file(self, rel: str) -> bool:
        from pyarrow import fs as pafs

        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.File

    def names(self, rel_folder: str, pattern: str) -> list[str]:
        """The files directly in ``rel_folder`` whose names match ``pattern`` (fnmatch), sorted."""
        from pyarrow import fs as pafs

        folder = self.path(rel_folder) if rel_folder not in ("", ".") else self.base
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        except OSError:
            return []
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.File
                      and fnmatch.fnmatchcase(i.base_name, pattern))

    @contextlib.contextmanager
    def fetched(self, rel: str) -> Iterator[Path]:
        """The file ``rel`` in a temporary local file, removed on exit (OSError if it cannot be read)."""
        with downloaded(self.uri_of(rel), PurePosixPath(rel).suffix) as local:
            yield local

    def upload(self, local: Path, rel: str) -> str:
        """Copy ``local`` to ``rel``; returns its URI. One output stream per object (an object
        appears whole or not at all); on a local disk a temporary name renamed into place."""
        target = self.path(rel)
        if _is_local(self.fs):  # the pipeline's own atomic writer (and its temporaries' names)
            atomic_write(Path(target), lambda tmp: shutil.copyfile(local, tmp))
        else:
            with open(local, "rb") as source, self.fs.open_output_stream(target) as sink:
                shutil.copyfileobj(source, sink, _CHUNK)
        return self.uri_of(rel)

    def local_path(self) -> Path | None:
        """The folder on this machine's disk (``file://``), else None."""
        return Path(self.base) if _is_local(self.fs) else None
