"""Model files: which ones exist, where they live, how to fetch them safely and how to check them.

The manifest (``weights_manifest.json``, shipped inside the package so a wheel install has it; the
repository's ``weights/manifest.json`` is a copy kept identical by a test) lists every file with its
official source, size, SHA-256 and git blob id where known, licence note and group: the ``default``
group is what a face model needs and what a bare ``hfgi weights download`` fetches; the others
(``cars``, ``styleclip``) are fetched only when named.

Downloads use the standard library only: urllib gives us Range requests, cookies and redirects,
which is all that resuming and Google Drive's confirmation step need, so a dependency such as
requests or gdown would add install weight without removing any real code.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import http.cookiejar
import importlib.util
import json
import os
import pickle
import shlex
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional

from .reasons import short_reason

# torch (and the model) are imported where a file's contents are checked: `hfgi weights path/list`
# and `hfgi --help` do not need them.

CHECKPOINT = "hfgi_ffhq"
FACE_DIRECTIONS = ("interfacegan_age", "interfacegan_smile", "interfacegan_pose", "ganspace_ffhq")
DEFAULT_GROUP = "default"
ENV_HOME = "HFGI_HOME"
ENV_MIRROR = "HFGI_WEIGHTS_MIRROR"
DRIVE_BASE = "https://drive.google.com"
USER_AGENT = "hfgi-cli (model downloader)"
CHUNK = 1 << 20
MAX_PAGE = 1 << 20  # a Drive confirmation page is a few kB; never buffer more than this as "a page"
KINDS = (
    "checkpoint", "direction", "pca", "w_direction", "classifier", "classifier_params", "style_stats",
    "templates", "channel_directions", "clip",
)
STYLE_DIM = 512
STYLE_CHANNELS = (512,) * 15 + (256,) * 3 + (128,) * 3 + (64,) * 3 + (32,) * 2
"""Channels of the 26 StyleSpace layers of StyleGAN2 FFHQ 1024 (to-RGB layers included)."""
CLIP_SHAPES = {"text_projection": (512, 512), "token_embedding.weight": (49408, 512), "positional_embedding": (77, 512)}
"""The CLIP ViT-B/32 text-tower tensors the structure check looks at."""

ProgressCallback = Callable[[int, Optional[int]], None]
"""Called with (bytes on disk so far, total bytes or None) while a file downloads."""


class WeightsError(Exception):
    """Anything wrong with the model files. The CLI prints the message on one line, exit status 2."""


class WeightsMissingError(WeightsError):
    """A needed file is absent; the message names the expected path and the command that fetches it."""


class DownloadError(WeightsError):
    """A download failed; a resumable ``.part`` file may be kept, a rejected one never is."""


class NetworkError(DownloadError):
    """The source could not be reached at all (offline, DNS, refused); names a manual-download URL.
    ``reason`` is the network's own words (e.g. "Connection refused")."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class VerificationError(WeightsError):
    """A file's size, SHA-256 or structure is not what the model needs."""


class _Interrupted(Exception):
    """A transfer that stopped part-way; the ``.part`` file is kept for the next attempt."""


# ---------------------------------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class WeightFile:
    """One downloadable file; ``path`` is relative to the weights folder, in POSIX form."""

    name: str
    path: str
    kind: str
    url: str
    gdrive_id: str | None
    size: int | None
    sha256: str | None
    source: str
    license: str
    note: str = ""
    group: str = DEFAULT_GROUP
    git_blob: str | None = None
    """Git's id of the file (SHA-1 of ``b"blob <size>\\0"`` + content): what a repository publishes
    even where it does not publish a SHA-256."""
    fallback_url: str | None = None  # a second source, asked when the first one fails

    @property
    def manual_url(self) -> str:
        """The address a person opens in a browser (Drive's view page rather than its API)."""
        if self.gdrive_id:
            return f"https://drive.google.com/file/d/{self.gdrive_id}/view"
        return self.url

    @property
    def manual_urls(self) -> list[str]:
        """Every address a person can fetch the file from by hand, the official one first."""
        return [self.manual_url] + ([self.fallback_url] if self.fallback_url else [])


@dataclass(frozen=True)
class PackagedFile:
    """A model file that a Python package ships (nothing to download)."""

    name: str
    package: str
    module: str
    resource: str
    kind: str
    source: str
    license: str

    def locate(self) -> Path | None:
        """Find the file without importing the module (``face_recognition_models`` needs pkg_resources)."""
        spec = importlib.util.find_spec(self.module)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(folder) / self.resource
            if candidate.is_file():
                return candidate
        return None


@dataclass(frozen=True)
class Manifest:
    files: tuple[WeightFile, ...]
    packaged: tuple[PackagedFile, ...]
    groups: tuple[str, ...] = (DEFAULT_GROUP,)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.files]

    def get(self, name: str) -> WeightFile:
        for entry in self.files:
            if entry.name == name:
                return entry
        raise WeightsError(f"unknown model file '{name}'{self._suggest(name)}")

    def group(self, group: str) -> list[WeightFile]:
        """The files of one group, in manifest order."""
        return [e for e in self.files if e.group == group]

    def select(self, names: Iterable[str]) -> list[WeightFile]:
        """File or group names (``styleclip``) as files, each once, in the order named."""
        chosen: list[WeightFile] = []
        for name in names:
            for entry in self.group(name) if name in self.groups else [self.get(name)]:
                if entry not in chosen:
                    chosen.append(entry)
        return chosen

    def by_path(self, path: str) -> WeightFile | None:
        """The entry of a path relative to the weights folder (``stit/gender.npy``)."""
        return next((e for e in self.files if e.path == path), None)

    def _suggest(self, name: str) -> str:
        near = difflib.get_close_matches(name, self.names + list(self.groups), n=3, cutoff=0.6)
        hint = f"did you mean: {', '.join(near)}? " if near else ""
        return f" ({hint}groups: {', '.join(self.groups)}; `hfgi weights list` shows every file)"


def manifest_text() -> str:
    """The manifest exactly as shipped in the package (the test compares it with weights/manifest.json)."""
    return resources.files("hfgi_cli").joinpath("weights_manifest.json").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def load_manifest() -> Manifest:
    data = json.loads(manifest_text())
    groups = tuple(data.get("groups", {DEFAULT_GROUP: ""}))
    files = []
    for item in data["files"]:
        if item["kind"] not in KINDS:
            raise WeightsError(f"manifest: {item['name']} has unknown kind {item['kind']!r}")
        if item.get("group", DEFAULT_GROUP) not in groups:
            raise WeightsError(f"manifest: {item['name']} has unknown group {item['group']!r}")
        files.append(WeightFile(**item))
    return Manifest(tuple(files), tuple(PackagedFile(**item) for item in data.get("packaged", [])), groups)


# ---------------------------------------------------------------------------------------------- locations
def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/hfgi``, else ``~/.cache/hfgi`` (XDG says to ignore a relative value)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return root / "hfgi"


def locate_weights_dir(explicit: Path | None = None) -> tuple[Path, str]:
    """The weights folder in use and why: ``--weights-dir`` > ``$HFGI_HOME`` > ``./weights`` > cache."""
    if explicit is not None:
        return Path(explicit).expanduser().absolute(), "--weights-dir"
    env = os.environ.get(ENV_HOME, "")
    if env:
        return Path(env).expanduser().absolute(), f"${ENV_HOME}"
    local = Path.cwd() / "weights"
    if (local / load_manifest().get(CHECKPOINT).path).is_file():
        return local, "./weights (holds the checkpoint)"
    return user_cache_dir().absolute(), "user cache"


def resolve_weights_dir(explicit: Path | None = None) -> Path:
    """The folder model files are read from and downloaded to (it may not exist yet)."""
    return locate_weights_dir(explicit)[0]


def fetch_command(names: Iterable[str], weights_dir: Path | None = None) -> str:
    """The exact command that downloads ``names`` into the folder the caller resolved against."""
    parts = ["hfgi", "weights", "download", *names]
    if weights_dir is not None:
        parts += ["--weights-dir", str(weights_dir)]
    return " ".join(shlex.quote(p) for p in parts)


def resolve_checkpoint(checkpoint: Path | None = None, weights_dir: Path | None = None) -> Path:
    """An explicit ``--checkpoint`` if it exists, else the published one in the weights folder."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsMissingError(
                f"checkpoint not found: {path.absolute()} (given with --checkpoint); to use the published "
                f"model instead, leave --checkpoint out and run `{fetch_command([CHECKPOINT], weights_dir)}`"
            )
        return path
    entry = load_manifest().get(CHECKPOINT)
    path = resolve_weights_dir(weights_dir) / entry.path
    if not path.is_file():
        raise WeightsMissingError(
            f"HFGI checkpoint missing: expected at {path}; fetch it with "
            f"`{fetch_command([CHECKPOINT], weights_dir)}`"
        )
    return path


def _needed_paths(needed: Iterable[str], manifest: Manifest) -> list[str]:
    """Relative paths for what an edit needs: paths inside the weights folder (``stit/gender.npy``,
    what the edit catalogue lists), manifest file or group names, or the InterFaceGAN attribute
    names (``smile``) older callers pass; anything else is left to the edit step to report."""
    paths: list[str] = []
    for item in needed:
        if "/" in item:
            found = [item]
        elif item in manifest.groups:
            found = [e.path for e in manifest.group(item)]
        elif item in manifest.names:
            found = [manifest.get(item).path]
        elif f"interfacegan_{item}" in manifest.names:
            found = [manifest.get(f"interfacegan_{item}").path]
        else:
            found = []
        paths += [p for p in found if p not in paths]
    return paths


def download_names(paths: Iterable[str], manifest: Manifest | None = None) -> list[str]:
    """The names ``hfgi weights download`` takes for these relative paths: a group's name where
    every file of an opt-in group is among them (``styleclip`` for a text edit), else file names."""
    manifest = manifest or load_manifest()
    entries = [e for e in (manifest.by_path(p) for p in paths) if e is not None]
    names: list[str] = []
    for entry in entries:
        group = manifest.group(entry.group)
        whole = entry.group != DEFAULT_GROUP and all(e in entries for e in group)
        name = entry.group if whole else entry.name
        if name not in names:
            names.append(name)
    return names


def resolve_directions_dir(
    directions: Path | None = None, weights_dir: Path | None = None, needed: Iterable[str] = ()
) -> Path:
    """The folder holding the edit files, laid out as the weights folder is (``interfacegan/``,
    ``ganspace/``, ``stit/``, ``gradctrl/``, ``styleclip/``).

    ``needed``: the edit files to be used, as paths inside that folder (an edit catalogue entry's
    ``files``), manifest file or group names, or InterFaceGAN attribute names. Each must be there,
    in the explicit ``--directions`` folder or else in the weights folder; the error names the
    files and the ``hfgi weights download`` command that fetches them. With ``needed`` empty, the
    weights folder must hold at least one of the face direction files (an explicit folder must
    exist): the edit step then reports a missing file itself.
    """
    manifest = load_manifest()
    needed = list(needed)
    if directions is not None:
        folder = Path(directions).expanduser()
        if not folder.is_dir():
            raise WeightsMissingError(
                f"directions folder not found: {folder.absolute()} (given with --directions)"
            )
        fetch_into: Path | None = folder
        wanted = _needed_paths(needed, manifest)
    else:
        folder = resolve_weights_dir(weights_dir)
        fetch_into = weights_dir
        wanted = _needed_paths(needed, manifest) or [manifest.get(n).path for n in FACE_DIRECTIONS]
    missing = [p for p in wanted if not (folder / p).is_file()]
    if missing and (needed or len(missing) == len(wanted)):
        where = ", ".join(str(folder / p) for p in missing)
        names = download_names(missing, manifest)
        fetch = f"fetch them with `{fetch_command(names, fetch_into)}`" if names else "no download provides them"
        elsewhere = (
            "" if directions is not None else
            ", or, if you have them in another folder, point --directions DIR (a folder laid out like "
            f"the weights folder: interfacegan/, ganspace/, stit/, ...), --weights-dir DIR or ${ENV_HOME} at it"
        )
        raise WeightsMissingError(f"edit files missing: expected {where}; {fetch}{elsewhere}")
    return folder


# ---------------------------------------------------------------------------------------------- checks
@dataclass(frozen=True)
class CheckResult:
    """What ``verify_file`` established about one file."""

    path: Path
    kind: str
    sha_checked: bool
    detail: str
    structure_checked: bool = True
    blob_checked: bool = False
    source: str = ""  # the URL a download came from; "" for a file already in place
    size_checked: bool = True

    @property
    def status(self) -> str:
        if self.sha_checked:
            return "sha ok"
        if self.blob_checked:
            return "git blob ok"
        if self.structure_checked:
            return "structure ok"
        # a file whose size the manifest does not pin (the checkpoint) has passed no check yet
        return "size ok" if self.size_checked else "unchecked: see verify"


def sha256_of(path: Path) -> str:
    return file_digests(path, git_blob=False)[0]


def git_blob_of(path: Path) -> str:
    """Git's object id of a file: SHA-1 of ``b"blob <size>\\0"`` followed by the content."""
    return file_digests(path, sha256=False)[1]


def file_digests(path: Path, sha256: bool = True, git_blob: bool = True) -> tuple[str, str]:
    """(SHA-256, git blob id) in one read of the file; "" for one not asked for."""
    sha = hashlib.sha256() if sha256 else None
    blob = hashlib.sha1(f"blob {path.stat().st_size}\0".encode()) if git_blob else None
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            for digest in (sha, blob):
                if digest is not None:
                    digest.update(block)
    return (sha.hexdigest() if sha else ""), (blob.hexdigest() if blob else "")


def _torch_load(path: Path) -> Any:
    """Tensors only; memory-mapped where the format allows, so a 1.2 GB checkpoint is not read in full.

    Raises pickle.UnpicklingError only for a well-formed torch file that pickles Python objects
    (old training code did that in ``opts``); any other unreadable file is a VerificationError.
    """
    import torch

    is_zip = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError:
        if is_zip:
            raise
        reason = "not a PyTorch file"
    except Exception as exc:
        reason = f"not a PyTorch file ({short_reason(exc)})"
    raise VerificationError(f"{path}: {reason}")


def check_checkpoint(path: Path) -> Any:
    """Every key and tensor shape of an HFGI checkpoint against this model; returns its ModelConfig."""
    from .models.hfgi import CheckpointError, check_published_state, read_checkpoint

    path = Path(path)
    try:
        ckpt = _torch_load(path)
    except pickle.UnpicklingError:
        try:  # older training code pickled plain objects in opts; read_checkpoint knows that case
            ckpt = read_checkpoint(path)
        except CheckpointError as exc:
            raise VerificationError(str(exc)) from None
    if not isinstance(ckpt, dict):
        raise VerificationError(f"{path}: not an HFGI checkpoint (no 'state_dict' dict inside)")
    try:
        return check_published_state(ckpt, str(path))
    except CheckpointError as exc:
        raise VerificationError(str(exc)) from None


def check_direction(path: Path, value: Any = None, style_dim: int = 512) -> tuple[int, ...]:
    """An InterFaceGAN direction: 512, 1x512, Nx512 or 1xNx512 with N one of the W+ row counts."""
    import torch

    value = _torch_load(Path(path)) if value is None else value
    if not torch.is_tensor(value):
        raise VerificationError(f"{path}: a direction file holds one tensor, not a {type(value).__name__}")
    shape = tuple(value.shape)
    rows = shape[:-1]
    if len(rows) == 2 and rows[0] == 1:
        rows = rows[1:]
    if not shape or shape[-1] != style_dim or len(rows) > 1 or (rows and rows[0] not in (1, 14, 16, 18)):
        raise VerificationError(
            f"{path}: direction of shape {shape}; expected {style_dim}, 1x{style_dim} or 18x{style_dim}"
        )
    return shape


def check_pca(path: Path, value: Any = None, style_dim: int = 512) -> int:
    """A GANSpace PCA dict: mean (..512), comp (K..512), std (K); returns K."""
    import torch

    value = _torch_load(Path(path)) if value is None else value
    if not isinstance(value, dict) or not {"mean", "comp", "std"} <= set(value):
        raise VerificationError(f"{path}: not a GANSpace PCA file (needs 'mean', 'comp', 'std')")
    mean, comp, std = (value[k] for k in ("mean", "comp", "std"))
    if not all(torch.is_tensor(t) for t in (mean, comp, std)):
        raise VerificationError(f"{path}: GANSpace 'mean', 'comp' and 'std' must be tensors")
    if mean.numel() != style_dim or comp.shape[-1] != style_dim or comp.numel() != comp.shape[0] * style_dim:
        raise VerificationError(f"{path}: GANSpace shapes mean {tuple(mean.shape)}, comp {tuple(comp.shape)}")
    if std.numel() != comp.shape[0]:
        raise VerificationError(f"{path}: GANSpace std has {std.numel()} values, comp {comp.shape[0]} rows")
    return int(comp.shape[0])


def check_w_direction(path: Path) -> tuple[int, ...]:
    """A STIT W direction: an 18x512 float ``.npy`` (one row per W+ code), read without pickle."""
    array = _load_npy(path)
    if array.shape != (18, STYLE_DIM) or array.dtype.kind != "f":
        raise VerificationError(f"{path}: {_describe(array)}; expected an 18x{STYLE_DIM} float W direction")
    return tuple(array.shape)


def check_channel_directions(path: Path) -> int:
    """StyleCLIP's ``fs3.npy``: one 512-d CLIP direction per StyleSpace channel of the 17 style
    layers that are not to-RGB (6048 rows for StyleGAN2 FFHQ 1024); returns the row count."""
    array = _load_npy(path)
    rows = sum(c for i, c in enumerate(STYLE_CHANNELS) if i % 3 != 1)  # every third layer is to-RGB
    if array.shape != (rows, STYLE_DIM) or array.dtype.kind != "f":
        raise VerificationError(f"{path}: {_describe(array)}; expected a {rows}x{STYLE_DIM} float array")
    return rows


def _load_npy(path: Path) -> Any:
    import numpy as np

    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as exc:  # numpy says ValueError for a pickled array, others for junk
        raise VerificationError(f"{path}: not a plain .npy array ({short_reason(exc)})") from None


def _describe(array: Any) -> str:
    return f"array of shape {'x'.join(str(s) for s in array.shape) or 'scalar'} ({array.dtype})"


def check_classifier(path: Path, value: Any = None) -> tuple[int, int]:
    """GradCtrl's attribute classifiers: heads ``classifiers.{i}.classifier.{0,2}`` of Linear(512, H)
    and Linear(H, 1); returns (heads, H). The file is PyTorch's legacy format, read tensors-only."""
    import torch

    value = _torch_load(Path(path)) if value is None else value
    if not isinstance(value, dict) or not all(torch.is_tensor(v) for v in value.values()):
        raise VerificationError(f"{path}: not a state dict of tensors (GradCtrl classifiers)")
    heads = len({k.split(".")[1] for k in value if k.startswith("classifiers.") and k.count(".") >= 2})
    hidden = value.get("classifiers.0.classifier.0.bias")
    hidden_size = int(hidden.numel()) if hidden is not None else 0
    expected = {}
    for i in range(heads):
        head = f"classifiers.{i}.classifier"
        expected.update({f"{head}.0.weight": (hidden_size, STYLE_DIM), f"{head}.0.bias": (hidden_size,),
                         f"{head}.2.weight": (1, hidden_size), f"{head}.2.bias": (1,)})
    got = {k: tuple(v.shape) for k, v in value.items()}
    if not heads or not hidden_size or got != expected:
        wrong = sorted(set(got) ^ set(expected)) or sorted(k for k in got if got[k] != expected[k])
        raise VerificationError(
            f"{path}: not GradCtrl classifiers (Linear({STYLE_DIM}, H) -> Linear(H, 1) per attribute); "
            f"unexpected: {', '.join(wrong[:3])}"
        )
    return heads, hidden_size


def check_classifier_params(path: Path) -> list[str]:
    """GradCtrl's ``model_params.pkl``: a dict of strings and numbers naming the classifier heads;
    read with an unpickler that admits no callable. Returns the attribute names."""
    value = _read_pickle(path, plain=True)
    attributes = value.get("attributes") if isinstance(value, dict) else None
    count = value.get("n_attributes") if isinstance(value, dict) else None
    names = attributes.split(",") if isinstance(attributes, str) else []
    if not names or not all(names) or count != len(names) or not isinstance(value.get("hidden_size"), int):
        raise VerificationError(
            f"{path}: not GradCtrl classifier parameters (needs 'attributes', 'n_attributes', 'hidden_size')"
        )
    return names


def check_style_stats(path: Path) -> int:
    """StyleCLIP's ``S_mean_std``: a pickle of (mean, std), each 26 float arrays with the StyleSpace
    layers' channel counts; read with an unpickler that admits numpy arrays only."""
    import numpy as np

    value = _read_pickle(path, plain=False)
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(part, (list, tuple)) and len(part) == len(STYLE_CHANNELS)
        and all(isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.shape == (c,)
                for a, c in zip(part, STYLE_CHANNELS))
        for part in value
    )
    if not ok:
        raise VerificationError(
            f"{path}: not StyleCLIP's S_mean_std (a pair of lists of {len(STYLE_CHANNELS)} float arrays "
            f"of {'/'.join(str(c) for c in sorted(set(STYLE_CHANNELS), reverse=True))} channels)"
        )
    if not all(np.isfinite(a).all() for part in value for a in part) or any((a < 0).any() for a in value[1]):
        raise VerificationError(f"{path}: S_mean_std holds non-finite values or a negative std")
    return len(STYLE_CHANNELS)


def _read_pickle(path: Path, plain: bool) -> Any:
    from .safe_pickle import load_arrays, load_plain

    try:
        data = Path(path).read_bytes()
        return load_plain(data) if plain else load_arrays(data)
    except Exception as exc:  # refused callables, truncation, not a pickle at all
        raise VerificationError(f"{path}: not a safe pickle of plain data ({short_reason(exc)})") from None


def check_templates(path: Path) -> int:
    """StyleCLIP's prompt templates: UTF-8 lines, each with one ``{}`` for the text; returns the count."""
    try:
        lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, OSError) as exc:
        raise VerificationError(f"{path}: not a UTF-8 text file ({short_reason(exc)})") from None
    bad = [line for line in lines if line.count("{}") != 1]
    if not lines or bad:
        raise VerificationError(f"{path}: prompt templates need one '{{}}' per line; {len(bad)} of "
                                f"{len(lines)} lines do not")
    return len(lines)


def check_clip(path: Path) -> dict[str, tuple[int, ...]]:
    """CLIP ViT-B/32: a TorchScript archive (OpenAI's file) or a state dict, with the text tower's
    tensors of ViT-B/32's shapes. Only the archive's ``data.pkl`` is read, with tensors reduced to
    their shapes: neither the 340 MB of weights nor any code in the archive is loaded."""
    from .safe_pickle import load_tensor_shapes

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
            if member is None:
                raise VerificationError(f"{path}: a zip archive without data.pkl, not a PyTorch file")
            shapes = load_tensor_shapes(archive.read(member))
    except zipfile.BadZipFile:
        raise VerificationError(f"{path}: not a TorchScript or PyTorch zip archive") from None
    except pickle.UnpicklingError as exc:
        raise VerificationError(f"{path}: {short_reason(exc)}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise VerificationError(f"{path}: unreadable data.pkl ({short_reason(exc)})") from None
    found = {k: shapes.get(k) for k in CLIP_SHAPES}
    if found != CLIP_SHAPES:
        wrong = ", ".join(f"{k} {'x'.join(map(str, v)) if v else 'absent'}" for k, v in found.items()
                          if v != CLIP_SHAPES[k])
        raise VerificationError(f"{path}: not CLIP ViT-B/32's text tower ({wrong})")
    return {k: tuple(v) for k, v in found.items() if v is not None}


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _kind_from_name(path: Path) -> str | None:
    """The kind of a file given without a manifest entry, where its name tells (torch files are
    told from their content instead)."""
    if path.suffix.lower() == ".npy":
        return "w_direction" if _load_npy(path).shape == (18, STYLE_DIM) else "channel_directions"
    if path.suffix.lower() == ".txt":
        return "templates"
    if path.suffix.lower() == ".pkl":
        return "classifier_params"
    if path.name == "S_mean_std":
        return "style_stats"
    if _is_torchscript(path):
        return "clip"
    return None


def _check_structure(path: Path, kind: str | None) -> tuple[str, str]:
    """(kind, detail); with no kind given it is told from the name or the content."""
    kind = kind or _kind_from_name(path)
    if kind == "checkpoint":
        config = check_checkpoint(path)
        return kind, f"{config.domain} {config.size}px, {config.style_count} styles"
    if kind == "w_direction":
        return kind, "shape " + "x".join(str(s) for s in check_w_direction(path))
    if kind == "channel_directions":
        return kind, f"{check_channel_directions(path)} channels x {STYLE_DIM}"
    if kind == "classifier_params":
        return kind, "attributes " + ", ".join(check_classifier_params(path))
    if kind == "style_stats":
        return kind, f"mean and std of {check_style_stats(path)} style layers"
    if kind == "templates":
        return kind, f"{check_templates(path)} prompt templates"
    if kind == "clip":
        check_clip(path)
        return kind, "ViT-B/32 text tower shapes"
    try:
        value = _torch_load(path)
    except pickle.UnpicklingError:
        if kind is None:  # maybe a checkpoint whose opts hold plain Python objects
            return _check_structure(path, "checkpoint")
        raise VerificationError(f"{path}: holds Python objects, not plain tensors") from None
    if kind is None:
        if isinstance(value, dict) and "state_dict" in value:
            return _check_structure(path, "checkpoint")
        if isinstance(value, dict) and any(str(k).startswith("classifiers.") for k in value):
            kind = "classifier"
        else:
            kind = "pca" if isinstance(value, dict) else "direction"
    if kind == "classifier":
        heads, hidden = check_classifier(path, value)
        return kind, f"{heads} classifier heads, hidden size {hidden}"
    if kind == "pca":
        return kind, f"{check_pca(path, value)} components"
    return kind, "shape " + "x".join(str(s) for s in check_direction(path, value))


def verify_file(path: Path, entry: WeightFile | None = None, structure: bool = True) -> CheckResult:
    """Size, SHA-256 and git blob id (those the manifest knows, all in one read), then
    (``structure``) the contents: keys and shapes of a checkpoint or classifier, shapes of a
    direction or array, the layout of a pickle read safely; raises VerificationError."""
    path = Path(path)
    if not path.is_file():
        raise WeightsMissingError(f"file not found: {path}")
    if entry is not None and entry.size is not None and path.stat().st_size != entry.size:
        raise VerificationError(f"{path}: {path.stat().st_size} bytes, expected {entry.size}")
    want_sha = bool(entry and entry.sha256)
    want_blob = bool(entry and entry.git_blob)
    if entry is not None and (want_sha or want_blob):
        sha, blob = file_digests(path, sha256=want_sha, git_blob=want_blob)
        if want_sha and sha != str(entry.sha256).lower():
            raise VerificationError(f"{path}: SHA-256 {sha} differs from the manifest's {entry.sha256}")
        if want_blob and blob != str(entry.git_blob).lower():
            raise VerificationError(f"{path}: git blob id {blob} differs from the manifest's {entry.git_blob}")
    kind = entry.kind if entry else "?"
    if not structure:
        return CheckResult(path, kind, want_sha, "", structure_checked=False, blob_checked=want_blob,
                           size_checked=entry is not None and entry.size is not None)
    kind, detail = _check_structure(path, entry.kind if entry else None)
    return CheckResult(path, kind, want_sha, detail, blob_checked=want_blob)


@dataclass(frozen=True)
class FileState:
    """One row of ``hfgi weights list``."""

    name: str
    path: Path | None
    kind: str
    present: bool
    size: int | None
    verified: str
    group: str = DEFAULT_GROUP


def list_files(weights_dir: Path | None = None) -> list[FileState]:
    """Every manifest file with its state: size, SHA-256 and git blob id where known (cheap: all but
    CLIP's 340 MB are small, and hashing that takes about a second); the contents are left
    to ``hfgi weights verify``, so listing needs no torch."""
    folder = resolve_weights_dir(weights_dir)
    manifest = load_manifest()
    rows: list[FileState] = []
    for entry in manifest.files:
        path = folder / entry.path
        if not path.is_file():
            rows.append(FileState(entry.name, path, entry.kind, False, entry.size, "-", entry.group))
            continue
        try:
            verified = verify_file(path, entry, structure=False).status
        except WeightsError as exc:
            verified = f"BAD: {exc}".replace(f"{path}: ", "")
        rows.append(FileState(entry.name, path, entry.kind, True, path.stat().st_size, verified, entry.group))
    for packaged in manifest.packaged:
        found = packaged.locate()
        size = found.stat().st_size if found else None
        state = "installed by pip" if found else f"install {packaged.package}"
        rows.append(FileState(packaged.name, found, packaged.kind, found is not None, size, state))
    return rows


# ---------------------------------------------------------------------------------------------- download
def source_urls(entry: WeightFile, mirror: str | None = None, drive_base: str = DRIVE_BASE) -> list[str]:
    """Where the file is fetched from, in the order tried: ``$HFGI_WEIGHTS_MIRROR/<path>`` alone when
    set (a mirror is chosen to replace the internet, so nothing else is asked); else the official
    source, then the manifest's second source when it has one."""
    mirror = os.environ.get(ENV_MIRROR, "") if mirror is None else mirror
    if mirror:
        return [mirror.rstrip("/") + "/" + urllib.parse.quote(entry.path)]
    if entry.gdrive_id:
        first = f"{drive_base.rstrip('/')}/uc?export=download&id={urllib.parse.quote(entry.gdrive_id)}"
    else:
        first = entry.url
    return [first] + ([entry.fallback_url] if entry.fallback_url else [])


class _PageScan(HTMLParser):
    """Forms (action, method, named inputs) and links of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, str, dict[str, str]]] = []
        self.links: list[str] = []
        self._form: tuple[str, str, dict[str, str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = (a.get("action", ""), a.get("method", "get").lower(), {})
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name"):
            if a.get("type", "text").lower() not in ("submit", "button", "image", "reset"):
                self._form[2][a["name"]] = a.get("value", "")
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def drive_confirm_request(
    page: str, page_url: str, cookies: Iterable[http.cookiejar.Cookie] = ()
) -> tuple[str, bytes | None]:
    """The request that gets past Google Drive's "can't scan this file for viruses" page.

    Three generations of that page are handled: a form with hidden ``id``/``confirm``/``uuid`` inputs
    (drive.usercontent.google.com/download), a ``download_warning*`` cookie whose value is the
    ``confirm`` token, and a plain link carrying ``confirm=``. Returns (url, POST body or None).
    """
    scan = _PageScan()
    scan.feed(page)
    for action, method, inputs in scan.forms:
        if "confirm" in inputs or "download" in action:
            target = urllib.parse.urljoin(page_url, action or page_url)
            query = urllib.parse.urlencode(inputs)
            if method == "post":
                return target, query.encode()
            return target + ("&" if "?" in target else "?") + query, None
    for cookie in cookies:
        if cookie.name.startswith("download_warning") and cookie.value:
            parts = urllib.parse.urlsplit(page_url)
            query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "confirm"]
            query.append(("confirm", cookie.value))
            return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query))), None
    for href in scan.links:
        if "confirm=" in href:
            return urllib.parse.urljoin(page_url, href), None
    raise DownloadError(
        "Google Drive answered with a web page instead of the file (download quota exceeded or no "
        "access?); try again later or download it by hand"
    )


def _content_range(value: str | None) -> tuple[int, int | None]:
    """``bytes 100-199/200`` -> (100, 200); total None for ``*``."""
    try:
        unit, spec = (value or "").split(" ", 1)
        first, total = spec.split("-", 1)[0], spec.rsplit("/", 1)[1]
        if unit != "bytes":
            raise ValueError(unit)
        return int(first), None if total.strip() == "*" else int(total)
    except (ValueError, IndexError):
        raise _Interrupted(f"unreadable Content-Range {value!r}") from None


def _reject(part: Path, entry: WeightFile, reason: str) -> VerificationError:
    """Delete the temporary file: a rejected download leaves nothing behind."""
    part.unlink(missing_ok=True)
    return VerificationError(f"{entry.name}: downloaded file rejected and deleted ({reason})")


def _stream(
    resp: http.client.HTTPResponse,
    part: Path,
    start: int,
    entry: WeightFile,
    on_progress: ProgressCallback | None,
) -> None:
    """Append (206) or write (200) the body to ``part``; a short body raises _Interrupted."""
    length = resp.headers.get("Content-Length")
    if resp.status == 206:
        first, total = _content_range(resp.headers.get("Content-Range"))
        if first != start:
            part.unlink(missing_ok=True)
            raise _Interrupted(f"server resumed at byte {first}, not {start}; starting again")
    else:
        start = 0
        total = int(length) if length and length.isdigit() else None
    if entry.size is not None and total is not None and total != entry.size:
        raise _reject(part, entry, f"the server offers {total} bytes, the manifest says {entry.size}")
    done = start
    try:
        with open(part, "ab" if start else "wb") as fh:
            if on_progress:
                on_progress(done, total)
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                fh.write(chunk)
                done += len(chunk)
                if on_progress:
                    on_progress(done, total)
                if entry.size is not None and done > entry.size:
                    raise VerificationError(f"more than the expected {entry.size} bytes")
    except VerificationError as exc:
        raise _reject(part, entry, str(exc)) from None
    except (http.client.HTTPException, OSError) as exc:
        raise _Interrupted(f"{exc.__class__.__name__}: {exc}") from None
    if total is not None and done < total:
        raise _Interrupted(f"connection closed after {done} of {total} bytes")


def _fetch(url: str, part: Path, entry: WeightFile, on_progress: ProgressCallback | None, timeout: float,
           drive: bool) -> None:
    """One attempt: request (with Range when a .part exists), follow Drive's page, stream the body."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    data: bytes | None = None
    for _hop in range(4):
        start = part.stat().st_size if part.is_file() else 0
        headers = {"User-Agent": USER_AGENT}
        if start:
            headers["Range"] = f"bytes={start}-"
        request = urllib.request.Request(url, data=data, headers=headers)
        try:
            resp = opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and start:  # the .part is already whole (or longer than the file)
                if entry.size is None or start == entry.size:
                    return
                part.unlink(missing_ok=True)
                raise _Interrupted("stale partial file discarded") from None
            raise DownloadError(f"{entry.name}: {url} answered HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise NetworkError(str(getattr(exc.reason, "strerror", None) or exc.reason)) from None
        except (http.client.HTTPException, OSError) as exc:
            raise _Interrupted(f"{exc.__class__.__name__}: {exc}") from None
        with resp:
            if drive and resp.headers.get_content_type() == "text/html":
                page = resp.read(MAX_PAGE).decode("utf-8", "replace")
                url, data = drive_confirm_request(page, resp.geturl(), list(jar))
                continue
            _stream(resp, part, start, entry, on_progress)
            return
    raise DownloadError(f"{url}: Google Drive kept answering with web pages instead of the file")


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or url


def _part_path(dest: Path, url: str, first: bool) -> Path:
    """The temporary file of one source. Each source has its own, so a transfer resumed later never
    appends one server's bytes to another's (a second source may serve a different file)."""
    return dest.with_name(dest.name + (".part" if first else f".{_host(url)}.part"))


def _new_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def download(
    entry: WeightFile,
    weights_dir: Path,
    *,
    mirror: str | None = None,
    force: bool = False,
    on_progress: ProgressCallback | None = None,
    on_note: Callable[[str], None] | None = None,
    drive_base: str = DRIVE_BASE,
    timeout: float = 30.0,
    retries: int = 2,
) -> CheckResult:
    """Fetch one file into ``weights_dir``; returns the checks it passed (``.path``: where it is,
    ``.source``: the URL that served it).

    The sources (``source_urls``) are tried in order until one gives a file that passes the checks;
    ``on_note`` hears why one failed before the next is asked. Bytes go to a ``.part`` file per
    source; an interrupted transfer keeps it and the next attempt (in this call, up to ``retries``
    more times, or the next call) resumes with an HTTP Range request. Only a file that passes the
    size, SHA-256 and structure checks is renamed into place; a rejected one is deleted, and so are
    the folders this call created when nothing was saved. ``mirror`` None reads
    ``$HFGI_WEIGHTS_MIRROR``, "" ignores it. ``drive_base`` exists so tests can stand in for Google
    Drive.
    """
    dest = Path(weights_dir) / entry.path
    if dest.is_file() and not force:
        return verify_file(dest, entry)
    mirror = os.environ.get(ENV_MIRROR, "") if mirror is None else mirror
    urls = source_urls(entry, mirror, drive_base)
    created = _new_folders(dest.parent)
    failures: list[tuple[str, WeightsError]] = []
    try:
        for i, url in enumerate(urls):
            part = _part_path(dest, url, first=i == 0)
            if force:
                part.unlink(missing_ok=True)
            try:
                result = _download_from(url, part, dest, entry, on_progress, timeout, retries,
                                        drive=bool(i == 0 and entry.gdrive_id and not mirror))
            except WeightsError as exc:
                failures.append((url, exc))
                if on_note and i + 1 < len(urls):
                    on_note(f"{entry.name}: {_host(url)} did not give the file ({_reason(exc, entry)}); "
                            f"trying {urls[i + 1]}")
                continue
            return result
    finally:
        if not dest.is_file():
            for folder in created:  # deepest first; a kept .part keeps its folder
                with contextlib.suppress(OSError):
                    folder.rmdir()
    raise _all_failed(entry, dest, failures)


def _reason(exc: WeightsError, entry: WeightFile) -> str:
    return str(exc.reason if isinstance(exc, NetworkError) else exc).removeprefix(f"{entry.name}: ")


def _all_failed(entry: WeightFile, dest: Path, failures: list[tuple[str, WeightsError]]) -> WeightsError:
    """One error for every source that failed: a no-network error when none could be reached
    (naming every address to fetch the file from by hand), else the one source's own error, or one
    line with each source's reason."""
    if all(isinstance(exc, NetworkError) for _, exc in failures):
        reasons = "; ".join(f"{url} ({exc})" for url, exc in failures)
        by_hand = " or ".join(entry.manual_urls)
        return NetworkError(
            f"no network: cannot reach {reasons}; download {by_hand} by hand and save it as {dest}",
            reason="; ".join(f"cannot reach {_host(url)}: {exc}" for url, exc in failures),
        )
    if len(failures) == 1:
        return failures[0][1]
    reasons = "; ".join(f"{_host(url)}: {_reason(exc, entry)}" for url, exc in failures)
    return DownloadError(f"{entry.name}: no source gave the file ({reasons})")


def _download_from(url: str, part: Path, dest: Path, entry: WeightFile, on_progress: ProgressCallback | None,
                   timeout: float, retries: int, drive: bool) -> CheckResult:
    """One source: fetch into ``part`` (with retries that resume), check, rename to ``dest``."""
    part.parent.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        try:
            _fetch(url, part, entry, on_progress, timeout, drive=drive)
            break
        except _Interrupted as exc:
            if attempt >= retries:
                raise DownloadError(
                    f"{entry.name}: download interrupted ({exc}); the partial file {part} is kept, "
                    f"run the same command again to resume"
                ) from None
            attempt += 1
    try:
        checked = verify_file(part, entry)
    except WeightsError as exc:
        raise _reject(part, entry, str(exc)) from None
    os.replace(part, dest)
    return CheckResult(dest, checked.kind, checked.sha_checked, checked.detail, blob_checked=checked.blob_checked,
                       source=url)


def missing_names(weights_dir: Path | None = None, groups: Iterable[str] = (DEFAULT_GROUP,)) -> list[str]:
    """Files of ``groups`` absent from the weights folder: by default what a face model needs and
    ``hfgi weights download`` fetches with no names (the ``cars`` and ``styleclip`` groups only
    when named)."""
    folder = resolve_weights_dir(weights_dir)
    wanted = set(groups)
    return [e.name for e in load_manifest().files if e.group in wanted and not (folder / e.path).is_file()]
