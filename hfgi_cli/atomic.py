"""Atomic writes: every output goes to a temporary name in its final folder, then is renamed.

A killed run never leaves a half-written file under a real name, so a re-run can trust that any
file it finds is complete. Temporaries are named ``.NAME.XXXXXXXX.part`` so that a later run can
recognise (and remove) the ones a killed run left behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

_TEMP_SUFFIX = ".part"
_TOKEN_LEN = 8


def _create_temp(final: Path, suffix: str) -> Path:
    """A new, empty file beside ``final``, created with the process's umask like any output.

    (``tempfile.mkstemp`` would make it 0600; opening with mode 0o666 lets the kernel apply the
    umask, so nothing has to read or change the process's umask.)
    """
    for _ in range(100):
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(_TOKEN_LEN // 2)}{suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"cannot create a temporary file beside {final}")


@contextlib.contextmanager
def temp_beside(final: Path, suffix: str = _TEMP_SUFFIX) -> Iterator[Path]:
    """A temporary file in ``final``'s folder, removed on exit unless it was renamed away."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(final, suffix)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds."""
    with temp_beside(Path(final)) as tmp:
        yield tmp
        os.replace(tmp, final)


def folder_problem(folder: Path) -> str | None:
    """Why outputs cannot be written into ``folder`` (None when they can): it is a file, or a file
    stands where a folder above it must be created, or creating an entry there fails (no permission,
    a read-only disk). Tried for real (an entry is created and removed), so it is true for root and
    under ACLs alike; nothing is left behind, and a folder that does not exist yet is not created."""
    folder = Path(folder)
    existing = folder
    try:
        while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
            existing = existing.parent
    except OSError as exc:  # a folder above it may not be entered
        return f"cannot be reached ({exc.strerror or exc})"
    if not existing.is_dir():
        if existing == folder:
            return "is a file, not a folder"
        return f"cannot be created: {existing} is a file, not a folder"
    try:
        if existing == folder:
            with temp_beside(folder / "hfgi-write-check"):
                pass
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".hfgi-write-check.", dir=existing))
    except OSError as exc:
        cause = exc.strerror or str(exc)
        return f"cannot write there ({cause})" if existing == folder else f"cannot be created in {existing} ({cause})"
    return None


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` for a temporary file beside ``path``, then rename it into place."""
    with atomic_path(Path(path)) as tmp:
        write(tmp)


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def is_our_temp(p: Path, suffixes: set[str]) -> bool:
    """``.NAME.XXXXXXXX.part`` where NAME ends with one of ``suffixes`` (a temp of ours)."""
    name = p.name
    tail = len(_TEMP_SUFFIX) + _TOKEN_LEN + 1
    if not (name.startswith(".") and name.endswith(_TEMP_SUFFIX) and len(name) > tail + 1 and name[-tail] == "."):
        return False
    return Path(name[1:-tail]).suffix.lower() in suffixes


def remove_stale_temps(folder: Path, suffixes: set[str]) -> int:
    """Delete temporaries of outputs ending with ``suffixes`` left in ``folder`` (recursively) by a
    killed run; returns how many.

    One scan per run, not per file written (a per-write scan costs O(N^2) on big folders). Two
    runs writing into the same folder at the same time are not supported.
    """
    removed = 0
    if not folder.is_dir():
        return 0
    for p in folder.rglob(f".*{_TEMP_SUFFIX}"):
        if is_our_temp(p, suffixes):
            with contextlib.suppress(OSError):
                p.unlink()
                removed += 1
    return removed
