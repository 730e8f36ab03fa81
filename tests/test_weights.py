"""`hfgi weights`: manifest, locations, the real download code against a local server, and checks.

The server runs on 127.0.0.1 in a thread, is shut down after each test, and stops by itself after
60 s in any case. It serves copies of the official direction files from ``<repo>/../shared``.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import socket
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hfgi_cli import weights as w
from hfgi_cli.cli import app
from hfgi_cli.models.hfgi import SMALL_CONFIG, ModelConfig, expected_shapes, make_random_checkpoint

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # beside the repository, here and in CI
DIRECTIONS = SHARED / "data" / "directions"
DRIVE_UUID = "0b6e-test-uuid"
GANINVERTER_ASSET = "https://github.com/caopulan/GANInverter/releases/download/v0.1/hfgi_ffhq_official.pt"
DRIVE_TOKEN = "Xq9_token"


# ---------------------------------------------------------------------------------------------- server
class _Handler(BaseHTTPRequestHandler):
    """Static files with Range, a connection drop on demand, and a stand-in for Google Drive."""

    server: _Server
    timeout = 5

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.requests.append((url.path, query, self.headers.get("Range"), self.headers.get("Cookie")))
        if url.path == "/uc":
            self._drive_start(query)
        elif url.path == "/download":
            ok = query.get("confirm") == "t" and query.get("uuid") == DRIVE_UUID and query.get("id")
            self._send_file("drive", self.server.files["drive"]) if ok else self._plain(400, b"bad form")
        elif url.path.lstrip("/") in self.server.files:
            name = url.path.lstrip("/")
            self._send_file(name, self.server.files[name])
        else:
            self._plain(404, b"not found")

    def _plain(self, code: int, body: bytes, ctype: str = "text/plain", cookie: str | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(body)

    def _drive_start(self, query: dict[str, str]) -> None:
        if self.server.drive_mode == "quota":
            self._plain(200, DRIVE_QUOTA_PAGE.encode(), "text/html; charset=utf-8")
        elif self.server.drive_mode == "form":
            page = DRIVE_FORM_PAGE.format(action=f"{self.server.base}/download", id=query.get("id", ""))
            self._plain(200, page.encode(), "text/html; charset=utf-8")
        elif query.get("confirm") == DRIVE_TOKEN and f"download_warning_7={DRIVE_TOKEN}" in (
            self.headers.get("Cookie") or ""
        ):
            self._send_file("drive", self.server.files["drive"])
        else:
            cookie = f"download_warning_7={DRIVE_TOKEN}; Path=/"
            self._plain(200, DRIVE_COOKIE_PAGE.encode(), "text/html; charset=utf-8", cookie)

    def _send_file(self, name: str, data: bytes) -> None:
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            if start >= len(data):
                self._plain(416, b"")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if name in self.server.drop_first:
            self.server.drop_first.discard(name)
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # mid-file: the client sees a short body
            return
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.drop_first: set[str] = set()
        self.requests: list[tuple[str, dict[str, str], str | None, str | None]] = []
        self.drive_mode = "form"
        self.base = f"http://127.0.0.1:{self.server_address[1]}"


DRIVE_FORM_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>
<body><div class="uc-main"><p class="uc-warning-caption">Google Drive can't scan this file for
viruses.</p><form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" class="goog-inline-block" value="Download anyway"/>
<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="0b6e-test-uuid">
</form></div></body></html>"""

DRIVE_QUOTA_PAGE = """<html><head><title>Google Drive - Quota exceeded</title></head><body>
<p>Too many users have viewed or downloaded this file recently.</p></body></html>"""

DRIVE_COOKIE_PAGE = """<html><head><title>Google Drive - Virus scan warning</title></head><body>
<p>Google Drive can't scan this file for viruses.</p><a href="/other">Back</a></body></html>"""


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    guard = threading.Timer(60, srv.shutdown)  # bounded even if a test hangs
    guard.daemon = True
    guard.start()
    try:
        yield srv
    finally:
        guard.cancel()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _shared(rel: str) -> bytes:
    path = DIRECTIONS / rel
    if not path.is_file():
        pytest.skip(f"shared data missing: {path}")
    return path.read_bytes()


def _serve_manifest_directions(srv: _Server) -> dict[str, bytes]:
    """Every edit file of the default and cars groups at its relative path, as a mirror would serve
    it (the styleclip group is not in the shared folder: tests serve stand-ins for it)."""
    served = {}
    for entry in w.load_manifest().files:
        if entry.kind != "checkpoint" and entry.group != "styleclip":
            served[entry.path] = _shared(entry.path)
    srv.files.update(served)
    return served


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    make_random_checkpoint(path, SMALL_CONFIG)
    return path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's own weights, cache or mirror."""
    for name in (w.ENV_HOME, w.ENV_MIRROR):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.chdir(tmp_path)


# ---------------------------------------------------------------------------------------------- manifest
def test_manifest_copies_are_identical() -> None:
    assert (REPO / "weights" / "manifest.json").read_text(encoding="utf-8") == w.manifest_text()


UPSTREAM = {  # the repository (and its default branch) each folder's files come from
    "interfacegan": "Tengfei-Wang/HFGI/main/editings/interfacegan_directions/",
    "ganspace": "Tengfei-Wang/HFGI/main/editings/ganspace_pca/",
    "stit": "rotemtzaban/STIT/main/editings/w_directions/",
    "gradctrl": "zikuncshelly/GradCtrl/main/model_",
    "styleclip": "",
}


def _git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_manifest_sizes_and_hashes_match_the_official_direction_files() -> None:
    manifest = w.load_manifest()
    assert manifest.get(w.CHECKPOINT).sha256 is None and manifest.get(w.CHECKPOINT).gdrive_id
    for entry in manifest.files:
        if entry.kind == "checkpoint" or entry.group == "styleclip":
            continue
        data = _shared(entry.path)
        assert entry.size == len(data), entry.name
        assert entry.sha256 == hashlib.sha256(data).hexdigest(), entry.name
        assert entry.git_blob == _git_blob(data), entry.name
        folder = entry.path.split("/")[0]
        assert entry.url.startswith("https://raw.githubusercontent.com/" + UPSTREAM[folder]), entry.name
        assert entry.source and entry.license, entry.name
    assert manifest.packaged[0].package == "face-recognition-models"


def test_manifest_local_names_and_the_styleclip_group() -> None:
    manifest = w.load_manifest()
    assert manifest.get("gradctrl_ffhq").path == "gradctrl/model_ffhq.pth"  # upstream model_ffhq/model.pth
    assert manifest.get("gradctrl_ffhq").url.endswith("/GradCtrl/main/model_ffhq/model.pth")
    assert manifest.get("gradctrl_cars_params").url.endswith("/GradCtrl/main/model_car/model_params.pkl")
    assert manifest.get("styleclip_s_mean_std").url.endswith("/STIT/main/editings/styleclip_global/S_mean_std")
    assert manifest.get("styleclip_templates").url == (
        "https://raw.githubusercontent.com/hamzapehlivan/StyleRes/master/editings/styleclip_directions/"
        "styleclip_directions/global_directions/templates.txt"
    )
    fs3, clip = manifest.group("styleclip")
    assert (fs3.path, fs3.size, fs3.sha256) == ("styleclip/fs3.npy", None, None)
    assert fs3.git_blob == "ef9dc0a49a4e2ffe1c81b8632baab6e3a4466726"
    assert fs3.url == "https://raw.githubusercontent.com/orpatashnik/StyleCLIP/main/global_torch/npy/ffhq/fs3.npy"
    assert clip.path == "styleclip/ViT-B-32.pt" and clip.url.split("/")[-2] == clip.sha256  # OpenAI names it so
    assert len(manifest.select(["stit_gender", "styleclip", "styleclip_fs3"])) == 3


def test_groups_keep_cars_and_text_files_out_of_the_default_download(tmp_path: Path) -> None:
    manifest = w.load_manifest()
    assert manifest.groups == ("default", "cars", "styleclip")
    assert [e.name for e in manifest.group("cars")] == ["ganspace_cars", "gradctrl_cars", "gradctrl_cars_params"]
    assert [e.name for e in manifest.group("styleclip")] == ["styleclip_fs3", "clip_vit_b32"]
    default = [e.path for e in manifest.group("default")]
    assert len([p for p in default if p.startswith("stit/")]) == 16
    for path in ("hfgi_ffhq.pt", "interfacegan/pose.pt", "ganspace/ffhq_pca.pt", "gradctrl/model_ffhq.pth",
                 "gradctrl/model_ffhq_params.pkl", "styleclip/S_mean_std", "styleclip/templates.txt"):
        assert path in default
    assert w.missing_names(tmp_path) == [e.name for e in manifest.group("default")]
    assert w.missing_names(tmp_path, groups=["styleclip"]) == ["styleclip_fs3", "clip_vit_b32"]
    with pytest.raises(w.WeightsError, match="unknown model file 'stylecli'.*did you mean: styleclip"):
        manifest.select(["stylecli"])


# ---------------------------------------------------------------------------------------------- locations
def test_weights_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = tmp_path / "xdg-cache" / "hfgi"
    assert w.resolve_weights_dir() == cache
    (tmp_path / "weights").mkdir()
    assert w.resolve_weights_dir() == cache  # ./weights without the checkpoint does not count
    (tmp_path / "weights" / "hfgi_ffhq.pt").write_bytes(b"x")
    assert w.resolve_weights_dir() == tmp_path / "weights"
    monkeypatch.setenv(w.ENV_HOME, str(tmp_path / "home"))
    assert w.resolve_weights_dir() == tmp_path / "home"
    assert w.resolve_weights_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv(w.ENV_HOME)
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    (tmp_path / "weights" / "hfgi_ffhq.pt").unlink()
    assert w.resolve_weights_dir() == tmp_path / "user" / ".cache" / "hfgi"


def test_missing_checkpoint_names_path_and_command(tmp_path: Path) -> None:
    with pytest.raises(w.WeightsMissingError) as info:
        w.resolve_checkpoint(None, tmp_path / "wd")
    message = str(info.value)
    assert str(tmp_path / "wd" / "hfgi_ffhq.pt") in message
    assert f"hfgi weights download hfgi_ffhq --weights-dir {tmp_path / 'wd'}" in message
    (tmp_path / "wd").mkdir()
    (tmp_path / "wd" / "hfgi_ffhq.pt").write_bytes(b"x")
    assert w.resolve_checkpoint(None, tmp_path / "wd") == tmp_path / "wd" / "hfgi_ffhq.pt"
    with pytest.raises(w.WeightsMissingError, match="given with --checkpoint"):
        w.resolve_checkpoint(tmp_path / "nope.pt", None)


def test_resolve_directions_dir(tmp_path: Path) -> None:
    with pytest.raises(w.WeightsMissingError, match="hfgi weights download interfacegan_age") as missing:
        w.resolve_directions_dir(None, tmp_path)
    for option in ("--directions DIR", "--weights-dir DIR", "$HFGI_HOME"):  # the folder you may already have
        assert option in str(missing.value)
    (tmp_path / "interfacegan").mkdir()
    (tmp_path / "interfacegan" / "smile.pt").write_bytes(_shared("interfacegan/smile.pt"))
    assert w.resolve_directions_dir(None, tmp_path) == tmp_path
    assert w.resolve_directions_dir(None, tmp_path, needed=["smile"]) == tmp_path  # an attribute name
    assert w.resolve_directions_dir(None, tmp_path, needed=["interfacegan/smile.pt"]) == tmp_path  # a path
    with pytest.raises(w.WeightsMissingError, match=r"ganspace/ffhq_pca\.pt.*download ganspace_ffhq"):
        w.resolve_directions_dir(None, tmp_path, needed=["smile", "ganspace/ffhq_pca.pt"])
    assert w.resolve_directions_dir(DIRECTIONS, None) == DIRECTIONS
    with pytest.raises(w.WeightsMissingError, match="given with --directions"):
        w.resolve_directions_dir(tmp_path / "nope", None)


TEXT_EDIT_FILES = ["styleclip/S_mean_std", "styleclip/templates.txt", "styleclip/fs3.npy", "styleclip/ViT-B-32.pt"]


def test_resolve_directions_dir_names_the_command_for_catalogue_files(tmp_path: Path) -> None:
    """The edit catalogue passes its entries' files; the error says exactly what to download."""
    wd = tmp_path / "wd"
    gradctrl = ["gradctrl/model_ffhq.pth", "gradctrl/model_ffhq_params.pkl"]
    with pytest.raises(w.WeightsMissingError) as info:
        w.resolve_directions_dir(None, wd, needed=["stit/gender.npy", *gradctrl])
    assert str(wd / "stit" / "gender.npy") in str(info.value)
    assert (f"`hfgi weights download stit_gender gradctrl_ffhq gradctrl_ffhq_params --weights-dir {wd}`"
            in str(info.value))
    for rel in ["stit/gender.npy", *gradctrl, "styleclip/S_mean_std", "styleclip/templates.txt"]:
        (wd / rel).parent.mkdir(parents=True, exist_ok=True)
        (wd / rel).write_bytes(_shared(rel))
    assert w.resolve_directions_dir(None, wd, needed=["stit/gender.npy", *gradctrl]) == wd
    with pytest.raises(w.WeightsMissingError, match=r"fs3\.npy.*`hfgi weights download styleclip --weights-dir"):
        w.resolve_directions_dir(None, wd, needed=TEXT_EDIT_FILES)  # a text edit: the opt-in group by name
    # the cars classifiers are two of the three cars files: named one by one, not as the group
    with pytest.raises(w.WeightsMissingError, match="download gradctrl_cars gradctrl_cars_params --weights-dir"):
        w.resolve_directions_dir(None, wd, needed=["gradctrl/model_car.pth", "gradctrl/model_car_params.pkl"])
    # an explicit --directions folder has the same layout: the command downloads into it
    with pytest.raises(w.WeightsMissingError, match=f"download styleclip --weights-dir {wd}`$"):
        w.resolve_directions_dir(wd, None, needed=TEXT_EDIT_FILES)
    assert w.resolve_directions_dir(wd, None, needed=TEXT_EDIT_FILES[:2]) == wd


# ---------------------------------------------------------------------------------------------- download
def test_full_download_through_mirror(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = _serve_manifest_directions(server)
    monkeypatch.setenv(w.ENV_MIRROR, server.base + "/")
    seen: list[tuple[int, int | None]] = []
    entry = w.load_manifest().get("interfacegan_pose")
    path = w.download(entry, tmp_path / "wd", on_progress=lambda d, t: seen.append((d, t))).path
    assert path == tmp_path / "wd" / "interfacegan" / "pose.pt"
    assert path.read_bytes() == served["interfacegan/pose.pt"]
    assert seen[-1] == (entry.size, entry.size)
    assert [r[0] for r in server.requests] == ["/interfacegan/pose.pt"]
    assert not list((tmp_path / "wd").rglob("*.part"))


def test_interrupted_download_resumes_on_next_call(server: _Server, tmp_path: Path) -> None:
    served = _serve_manifest_directions(server)
    server.drop_first.add("ganspace/ffhq_pca.pt")
    entry = w.load_manifest().get("ganspace_ffhq")
    dest = tmp_path / "ganspace" / "ffhq_pca.pt"
    with pytest.raises(w.DownloadError, match="run the same command again to resume"):
        w.download(entry, tmp_path, mirror=server.base, retries=0)
    part = dest.with_name("ffhq_pca.pt.part")
    assert not dest.exists() and 0 < part.stat().st_size < entry.size
    kept = part.stat().st_size
    assert w.download(entry, tmp_path, mirror=server.base).path == dest
    assert dest.read_bytes() == served[entry.path] and not part.exists()
    assert server.requests[-1][2] == f"bytes={kept}-"


def test_interruption_is_retried_within_one_call(server: _Server, tmp_path: Path) -> None:
    served = _serve_manifest_directions(server)
    server.drop_first.add("interfacegan/pose.pt")
    entry = w.load_manifest().get("interfacegan_pose")
    assert w.download(entry, tmp_path, mirror=server.base).path.read_bytes() == served[entry.path]
    assert [r[2] is not None for r in server.requests] == [False, True]


def test_default_download_fetches_every_small_face_file_and_checks_its_sha256(
    server: _Server, tmp_path: Path, small_ckpt: Path
) -> None:
    served = _serve_manifest_directions(server)
    server.files["hfgi_ffhq.pt"] = small_ckpt.read_bytes()
    wd = tmp_path / "wd"
    env = {w.ENV_MIRROR: server.base}
    result = runner.invoke(app, ["weights", "download", "-q", "--weights-dir", str(wd)], env=env)
    assert result.exit_code == 0, result.output
    default = w.load_manifest().group("default")
    assert sorted(r[0].lstrip("/") for r in server.requests) == sorted(e.path for e in default)  # nothing else
    for entry in default:
        path = wd / entry.path
        status = "structure ok" if entry.kind == "checkpoint" else "sha ok"
        assert f"{entry.name}: saved {path} ({status}" in result.stdout
        if entry.kind != "checkpoint":
            assert path.read_bytes() == served[entry.path], entry.name
    assert not (wd / "ganspace" / "cars_pca.pt").exists() and not (wd / "gradctrl" / "model_car.pth").exists()
    assert not (wd / "styleclip" / "fs3.npy").exists() and not list(wd.rglob("*.part"))
    again = runner.invoke(app, ["weights", "download", "-q", "--weights-dir", str(wd)], env=env)
    assert again.exit_code == 0 and again.stdout.startswith("all model files are present")


def _standin_fs3(rows: int = 6048) -> bytes:
    """Seeded floats of fs3.npy's shape (the real file cannot be fetched here)."""
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).standard_normal((rows, 512)).astype(np.float32))
    return buffer.getvalue()


def _standin_clip(tmp_path: Path, shapes: dict[str, tuple[int, ...]] = w.CLIP_SHAPES) -> bytes:
    """A state dict with CLIP ViT-B/32's text-tower shapes; each tensor is one value broadcast, so
    the file is a few kB (the check reads shapes only)."""
    path = tmp_path / "clip-standin.pt"
    torch.save({k: torch.zeros(1, dtype=torch.half).expand(*v) for k, v in shapes.items()}, path)
    data = path.read_bytes()
    path.unlink()
    return data


def _manifest_for_standins(monkeypatch: pytest.MonkeyPatch, fs3: bytes, clip: bytes) -> w.Manifest:
    """The real manifest with the styleclip group's git blob id and SHA-256 replaced by the stand-ins'
    (no stand-in can match the real files' hashes); every other field, the URLs included, is kept."""
    manifest = w.load_manifest()
    pins = {"styleclip_fs3": {"git_blob": _git_blob(fs3)}, "clip_vit_b32": {"sha256": hashlib.sha256(clip).hexdigest()}}
    patched = replace(manifest, files=tuple(replace(e, **pins.get(e.name, {})) for e in manifest.files))
    monkeypatch.setattr(w, "load_manifest", lambda: patched)
    return patched


def test_styleclip_group_is_fetched_on_request(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs3, clip = _standin_fs3(), _standin_clip(tmp_path)
    _manifest_for_standins(monkeypatch, fs3, clip)
    server.files.update({"styleclip/fs3.npy": fs3, "styleclip/ViT-B-32.pt": clip})
    wd = tmp_path / "wd"
    env = {w.ENV_MIRROR: server.base}
    result = runner.invoke(app, ["weights", "download", "styleclip", "-q", "--weights-dir", str(wd)], env=env)
    assert result.exit_code == 0, result.output
    assert [r[0] for r in server.requests] == ["/styleclip/fs3.npy", "/styleclip/ViT-B-32.pt"]
    assert f"styleclip_fs3: saved {wd / 'styleclip' / 'fs3.npy'} (git blob ok" in result.stdout
    assert f"clip_vit_b32: saved {wd / 'styleclip' / 'ViT-B-32.pt'} (sha ok" in result.stdout
    assert (wd / "styleclip" / "fs3.npy").read_bytes() == fs3
    result = runner.invoke(app, ["weights", "verify", "styleclip", "--weights-dir", str(wd)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "styleclip_fs3: git blob ok (channel_directions, 6048 channels x 512)",
        "clip_vit_b32: sha ok (clip, ViT-B/32 text tower shapes)",
    ]
    assert w.missing_names(wd, groups=["styleclip"]) == []


def test_fs3_that_is_not_the_published_blob_is_rejected(server: _Server, tmp_path: Path) -> None:
    server.files["styleclip/fs3.npy"] = _standin_fs3()  # right shape, wrong content
    entry = w.load_manifest().get("styleclip_fs3")
    with pytest.raises(w.VerificationError, match="rejected and deleted.*git blob id [0-9a-f]{40} differs"):
        w.download(entry, tmp_path, mirror=server.base)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("damage", ["flipped", "short"])
def test_corrupted_download_leaves_nothing(server: _Server, tmp_path: Path, damage: str) -> None:
    good = _shared("interfacegan/age.pt")
    bad = bytes(b ^ 0xFF for b in good[:100]) + good[100:] if damage == "flipped" else good[:-10]
    server.files["interfacegan/age.pt"] = bad
    entry = w.load_manifest().get("interfacegan_age")
    with pytest.raises(w.VerificationError, match="rejected"):
        w.download(entry, tmp_path, mirror=server.base)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_wrong_structure_is_rejected_when_no_hash_is_known(server: _Server, tmp_path: Path) -> None:
    server.files["hfgi_ffhq.pt"] = _shared("interfacegan/age.pt")  # a direction posing as the checkpoint
    with pytest.raises(w.VerificationError, match="not an HFGI checkpoint"):
        w.download(w.load_manifest().get(w.CHECKPOINT), tmp_path, mirror=server.base)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("mode", ["form", "cookie"])
def test_google_drive_confirmation(server: _Server, tmp_path: Path, small_ckpt: Path, mode: str) -> None:
    server.files["drive"] = small_ckpt.read_bytes()
    server.drive_mode = mode
    entry = w.load_manifest().get(w.CHECKPOINT)
    result = w.download(entry, tmp_path, mirror="", drive_base=server.base)
    path = result.path
    assert result.status == "structure ok"  # checked once, before the rename
    assert path.read_bytes() == small_ckpt.read_bytes()
    first, second = server.requests[0], server.requests[1]
    assert first[0] == "/uc" and first[1]["id"] == entry.gdrive_id
    if mode == "form":
        assert second[0] == "/download" and second[1]["uuid"] == DRIVE_UUID and second[1]["confirm"] == "t"
    else:
        assert second[1]["confirm"] == DRIVE_TOKEN and DRIVE_TOKEN in (second[3] or "")
    assert w.verify_file(path, entry).status == "structure ok"


def _with_fallback(server: _Server, served: bytes | None) -> w.WeightFile:
    """The checkpoint's entry with its second source on the local server (serving ``served``)."""
    if served is not None:
        server.files["gh/hfgi_ffhq_official.pt"] = served
    return replace(w.load_manifest().get(w.CHECKPOINT), fallback_url=f"{server.base}/gh/hfgi_ffhq_official.pt")


def test_manifest_names_the_ganinverter_release_as_second_source() -> None:
    assert w.load_manifest().get(w.CHECKPOINT).fallback_url == GANINVERTER_ASSET
    assert w.source_urls(w.load_manifest().get(w.CHECKPOINT), mirror="") == [
        "https://drive.google.com/uc?export=download&id=19y6pxOiJWB0NoG3fAZO9Eab66zkN9XIL", GANINVERTER_ASSET
    ]


def test_checkpoint_comes_from_the_second_source_when_drive_refuses(
    server: _Server, tmp_path: Path, small_ckpt: Path
) -> None:
    server.drive_mode = "quota"
    entry = _with_fallback(server, small_ckpt.read_bytes())
    notes: list[str] = []
    result = w.download(entry, tmp_path / "wd", mirror="", drive_base=server.base, on_note=notes.append)
    assert result.source == entry.fallback_url and result.status == "structure ok"
    assert result.path.read_bytes() == small_ckpt.read_bytes()
    assert [r[0] for r in server.requests] == ["/uc", "/gh/hfgi_ffhq_official.pt"]
    assert len(notes) == 1 and "quota" in notes[0] and notes[0].endswith(f"trying {entry.fallback_url}")
    assert sorted(p.name for p in (tmp_path / "wd").iterdir()) == ["hfgi_ffhq.pt"]


def test_the_structure_check_decides_for_the_second_source(server: _Server, tmp_path: Path) -> None:
    server.drive_mode = "quota"
    entry = _with_fallback(server, _shared("interfacegan/age.pt"))  # not an HFGI checkpoint
    with pytest.raises(w.DownloadError, match=r"no source gave the file \(127\.0\.0\.1: .*quota.*; "
                                              r"127\.0\.0\.1: downloaded file rejected .*not an HFGI checkpoint"):
        w.download(entry, tmp_path / "wd", mirror="", drive_base=server.base)
    assert not (tmp_path / "wd").exists()


def test_an_interrupted_second_source_keeps_its_own_partial_file(
    server: _Server, tmp_path: Path, small_ckpt: Path
) -> None:
    server.drive_mode = "quota"
    entry = _with_fallback(server, small_ckpt.read_bytes())
    server.drop_first.add("gh/hfgi_ffhq_official.pt")
    with pytest.raises(w.DownloadError, match="run the same command again to resume"):
        w.download(entry, tmp_path, mirror="", drive_base=server.base, retries=0)
    kept = tmp_path / "hfgi_ffhq.pt.127.0.0.1.part"
    assert [p.name for p in tmp_path.iterdir()] == [kept.name]  # not the first source's .part
    result = w.download(entry, tmp_path, mirror="", drive_base=server.base)
    assert result.path.read_bytes() == small_ckpt.read_bytes() and not kept.exists()
    assert server.requests[-1][2] == f"bytes={kept_size(small_ckpt)}-"


def kept_size(ckpt: Path) -> int:
    """What the test server sends before it drops a connection (a third of the file)."""
    return ckpt.stat().st_size // 3


def test_the_mirror_alone_is_asked_when_set(server: _Server, tmp_path: Path, small_ckpt: Path) -> None:
    entry = _with_fallback(server, small_ckpt.read_bytes())
    with pytest.raises(w.DownloadError, match="HTTP 404"):
        w.download(entry, tmp_path, mirror=f"{server.base}/mirror", drive_base=server.base)
    assert [r[0] for r in server.requests] == ["/mirror/hfgi_ffhq.pt"]
    assert not any(tmp_path.iterdir())


def test_cli_says_which_source_served_the_checkpoint(
    server: _Server, tmp_path: Path, small_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = replace(_with_fallback(server, small_ckpt.read_bytes()), gdrive_id=None, url=f"{server.base}/gone.pt")
    manifest = w.load_manifest()
    patched = replace(manifest, files=tuple(entry if e.name == w.CHECKPOINT else e for e in manifest.files))
    monkeypatch.setattr(w, "load_manifest", lambda: patched)
    result = runner.invoke(app, ["weights", "download", "hfgi_ffhq", "-q", "--weights-dir", str(tmp_path)],
                           env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"hfgi_ffhq: 127.0.0.1 did not give the file ({server.base}/gone.pt answered HTTP "
                             f"404 Not Found); trying {entry.fallback_url}\n")
    assert result.stdout == (f"hfgi_ffhq: saved {tmp_path / 'hfgi_ffhq.pt'} (structure ok; from "
                             f"{entry.fallback_url})\n")


def test_drive_page_parsing() -> None:
    page = DRIVE_FORM_PAGE.format(action="https://drive.usercontent.google.com/download", id="ABC")
    url, body = w.drive_confirm_request(page, "https://drive.google.com/uc?export=download&id=ABC")
    assert body is None
    parts = urllib.parse.urlsplit(url)
    assert parts.netloc == "drive.usercontent.google.com" and parts.path == "/download"
    assert dict(urllib.parse.parse_qsl(parts.query)) == {
        "id": "ABC", "export": "download", "confirm": "t", "uuid": DRIVE_UUID
    }
    link_page = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=Zz&amp;id=ABC">Download</a>'
    url, _ = w.drive_confirm_request(link_page, "https://drive.google.com/uc?id=ABC")
    assert url == "https://drive.google.com/uc?export=download&confirm=Zz&id=ABC"
    with pytest.raises(w.DownloadError, match="quota"):
        w.drive_confirm_request("<html><body>Too many users</body></html>", "https://drive.google.com/uc")


def test_no_network_names_manual_url(tmp_path: Path) -> None:
    entry = w.load_manifest().get("interfacegan_smile")
    with pytest.raises(w.NetworkError) as info:
        w.download(entry, tmp_path, mirror=f"http://127.0.0.1:{_closed_port()}", timeout=2)
    assert entry.url in str(info.value) and str(tmp_path / entry.path) in str(info.value)
    assert not list(tmp_path.rglob("*.*"))


# ---------------------------------------------------------------------------------------------- checks
def test_verify_small_checkpoint(small_ckpt: Path) -> None:
    assert w.check_checkpoint(small_ckpt) == SMALL_CONFIG
    result = w.verify_file(small_ckpt)
    assert (result.kind, result.status) == ("checkpoint", "structure ok")


def test_verify_rejects_damaged_and_foreign_checkpoints(small_ckpt: Path, tmp_path: Path) -> None:
    ckpt = torch.load(small_ckpt, weights_only=True)
    key = sorted(ckpt["state_dict"])[5]
    dropped = tmp_path / "dropped.pt"
    torch.save({**ckpt, "state_dict": {k: v for k, v in ckpt["state_dict"].items() if k != key}}, dropped)
    with pytest.raises(w.VerificationError, match=f"missing 1 keys: {re.escape(key)}"):
        w.check_checkpoint(dropped)
    reshaped = tmp_path / "reshaped.pt"
    weight = next(k for k, v in ckpt["state_dict"].items() if v.ndim == 4)
    torch.save({**ckpt, "state_dict": {**ckpt["state_dict"], weight: torch.zeros(1, 2, 3, 3)}}, reshaped)
    with pytest.raises(w.VerificationError, match="tensor shapes differ"):
        w.check_checkpoint(reshaped)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(small_ckpt.read_bytes()[:4096])
    with pytest.raises(w.VerificationError, match="not a PyTorch file"):
        w.check_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, foreign)
    with pytest.raises(w.VerificationError, match="no 'state_dict'"):
        w.check_checkpoint(foreign)


def test_direction_and_pca_shapes(tmp_path: Path) -> None:
    for shape in [(512,), (1, 512), (18, 512), (1, 18, 512)]:
        torch.save(torch.zeros(shape), tmp_path / "d.pt")
        assert w.verify_file(tmp_path / "d.pt").kind == "direction"
    torch.save(torch.zeros(3, 512), tmp_path / "d.pt")
    with pytest.raises(w.VerificationError, match="expected 512, 1x512 or 18x512"):
        w.verify_file(tmp_path / "d.pt")
    torch.save({"mean": torch.zeros(1, 512), "comp": torch.zeros(4, 1, 512)}, tmp_path / "p.pt")
    with pytest.raises(w.VerificationError, match="not a GANSpace PCA"):
        w.verify_file(tmp_path / "p.pt")


def test_git_blob_check(tmp_path: Path) -> None:
    manifest = w.load_manifest()
    gender = DIRECTIONS / "stit" / "gender.npy"
    if not gender.is_file():
        pytest.skip(f"shared data missing: {gender}")
    assert w.git_blob_of(gender) == manifest.get("stit_gender").git_blob == _git_blob(gender.read_bytes())
    data = _standin_fs3()
    path = tmp_path / "fs3.npy"
    path.write_bytes(data)
    entry = replace(manifest.get("styleclip_fs3"), git_blob=_git_blob(data))
    result = w.verify_file(path, entry)
    assert (result.status, result.kind, result.sha_checked) == ("git blob ok", "channel_directions", False)
    path.write_bytes(data[:-4] + bytes(4))  # same size and shape, other content
    with pytest.raises(w.VerificationError, match=f"git blob id {_git_blob(path.read_bytes())} differs"):
        w.verify_file(path, entry)
    with pytest.raises(w.VerificationError, match="git blob id"):
        w.verify_file(path, manifest.get("styleclip_fs3"))  # the published id


def _evil_pickle(marker: Path) -> bytes:
    """A pickle that would create ``marker`` if its callable were resolved."""
    code = f"open({str(marker)!r}, 'w').close()"
    return b"cbuiltins\nexec\n(" + pickle.dumps(code, protocol=0)[:-1] + b"tR."


def test_npy_checks(tmp_path: Path) -> None:
    for name, shape, ok in [("d.npy", (18, 512), True), ("d.npy", (17, 512), False),
                            ("fs3.npy", (6048, 512), True), ("fs3.npy", (6000, 512), False)]:
        np.save(tmp_path / name, np.zeros(shape))
        if ok:
            assert w.verify_file(tmp_path / name).kind == ("w_direction" if name == "d.npy" else "channel_directions")
        else:
            with pytest.raises(w.VerificationError, match="expected a"):
                w.verify_file(tmp_path / name)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(w.VerificationError, match="not a plain .npy array"):
        w.check_channel_directions(tmp_path / "obj.npy")


def test_gradctrl_checks(tmp_path: Path) -> None:
    model = DIRECTIONS / "gradctrl" / "model_ffhq.pth"
    if not model.is_file():
        pytest.skip(f"shared data missing: {model}")
    assert not zipfile.is_zipfile(model)  # PyTorch's legacy format, which weights_only still reads
    result = w.verify_file(model)
    assert (result.kind, result.detail) == ("classifier", "5 classifier heads, hidden size 16")
    state = torch.load(model, map_location="cpu", weights_only=True)  # saved from CUDA tensors
    torch.save({k: v for k, v in state.items() if k != "classifiers.3.classifier.2.bias"}, tmp_path / "m.pth")
    with pytest.raises(w.VerificationError, match="not GradCtrl classifiers.*classifiers.3.classifier.2.bias"):
        w.check_classifier(tmp_path / "m.pth")
    assert w.check_classifier_params(DIRECTIONS / "gradctrl" / "model_ffhq_params.pkl") == [
        "gender", "smile", "eyeglasses", "age", "pose"]
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"attributes": "a,b", "n_attributes": 3, "hidden_size": 16}))
    with pytest.raises(w.VerificationError, match="not GradCtrl classifier parameters"):
        w.verify_file(tmp_path / "p.pkl")
    (tmp_path / "evil.pkl").write_bytes(_evil_pickle(tmp_path / "ran"))
    with pytest.raises(w.VerificationError, match="refusing builtins.exec"):
        w.verify_file(tmp_path / "evil.pkl")
    assert not (tmp_path / "ran").exists()


def test_styleclip_table_checks(tmp_path: Path) -> None:
    stats = DIRECTIONS / "styleclip" / "S_mean_std"
    if not stats.is_file():
        pytest.skip(f"shared data missing: {stats}")
    assert w.verify_file(stats).detail == "mean and std of 26 style layers"
    arrays = [np.zeros(c, np.float32) for c in w.STYLE_CHANNELS]
    (tmp_path / "S_mean_std").write_bytes(pickle.dumps((arrays, arrays[:-1])))
    with pytest.raises(w.VerificationError, match="not StyleCLIP's S_mean_std"):
        w.verify_file(tmp_path / "S_mean_std")
    (tmp_path / "S_mean_std").write_bytes(_evil_pickle(tmp_path / "ran"))
    with pytest.raises(w.VerificationError, match="refusing builtins.exec"):
        w.check_style_stats(tmp_path / "S_mean_std")
    assert not (tmp_path / "ran").exists()
    assert w.verify_file(DIRECTIONS / "styleclip" / "templates.txt").detail == "79 prompt templates"
    (tmp_path / "t.txt").write_text("a photo of a {}.\na photo of nothing\n")
    with pytest.raises(w.VerificationError, match="1 of 2 lines"):
        w.check_templates(tmp_path / "t.txt")


class _TextTower(torch.nn.Module):
    """CLIP's text-tower tensor names and ViT-B/32 shapes, each a broadcast value (a tiny file)."""

    def __init__(self, width: int = 512) -> None:
        super().__init__()
        z = torch.zeros(1, dtype=torch.half)
        self.register_buffer("text_projection", z.expand(width, 512))
        self.register_buffer("positional_embedding", z.expand(77, width))
        self.token_embedding = torch.nn.Embedding(1, 1)
        del self.token_embedding.weight
        self.token_embedding.register_buffer("weight", z.expand(49408, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.text_projection


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace/save are deprecated, OpenAI's file is one
def test_clip_checks_read_shapes_only(tmp_path: Path) -> None:
    scripted = tmp_path / "ViT-B-32.pt"
    torch.jit.save(torch.jit.trace(_TextTower(), torch.zeros(1, 512, dtype=torch.half)), scripted)
    result = w.verify_file(scripted)
    assert (result.kind, result.detail) == ("clip", "ViT-B/32 text tower shapes")
    assert w.check_clip(scripted)["token_embedding.weight"] == (49408, 512)
    (tmp_path / "sd.pt").write_bytes(_standin_clip(tmp_path))
    assert w.check_clip(tmp_path / "sd.pt")["text_projection"] == (512, 512)
    torch.jit.save(torch.jit.trace(_TextTower(768), torch.zeros(1, 768, dtype=torch.half)), tmp_path / "L.pt")
    with pytest.raises(w.VerificationError, match="not CLIP ViT-B/32's text tower .*text_projection 768x512"):
        w.check_clip(tmp_path / "L.pt")
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as archive:
        archive.writestr("evil/data.pkl", _evil_pickle(tmp_path / "ran"))
    with pytest.raises(w.VerificationError, match="refusing builtins.exec"):
        w.check_clip(tmp_path / "evil.pt")
    assert not (tmp_path / "ran").exists()
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(w.VerificationError, match="not a TorchScript or PyTorch zip"):
        w.check_clip(tmp_path / "junk.pt")


# ---------------------------------------------------------------------------------------------- CLI
runner = CliRunner()


def test_cli_path(tmp_path: Path) -> None:
    result = runner.invoke(app, ["weights", "path", "--weights-dir", str(tmp_path / "x")])
    assert result.exit_code == 0 and result.stdout.strip() == str(tmp_path / "x")
    result = runner.invoke(app, ["weights", "path"], env={w.ENV_HOME: str(tmp_path / "h")})
    assert result.stdout.strip() == str(tmp_path / "h")


def test_cli_download_list_verify(server: _Server, tmp_path: Path) -> None:
    _serve_manifest_directions(server)
    wd = str(tmp_path / "wd")
    env = {w.ENV_MIRROR: server.base, "COLUMNS": "200"}
    args = ["weights", "download", "interfacegan_smile", "ganspace_ffhq", "--weights-dir", wd]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert f"interfacegan_smile: saved {wd}/interfacegan/smile.pt (sha ok; from {server.base}/interfacegan/smile.pt)" \
        in result.stdout
    result = runner.invoke(app, ["weights", "list", "--weights-dir", wd], env=env)
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│")}
    assert "present" in rows["interfacegan_smile"] and "sha ok" in rows["interfacegan_smile"]
    assert "missing" in rows["hfgi_ffhq"] and "missing" in rows["interfacegan_age"]
    assert "opt-in" in rows["clip_vit_b32"] and "group styleclip" in rows["clip_vit_b32"]
    assert "opt-in" in rows["ganspace_cars"] and "group cars" in rows["ganspace_cars"]
    assert "hfgi weights download cars | styleclip" in " ".join(result.stdout.split())  # the caption says how
    result = runner.invoke(app, ["weights", "verify", "--weights-dir", wd])
    assert result.exit_code == 0 and result.stdout.count("sha ok") == 2
    (tmp_path / "wd" / "interfacegan" / "smile.pt").write_bytes(b"oops")
    result = runner.invoke(app, ["weights", "verify", "interfacegan_smile", "--weights-dir", wd])
    assert result.exit_code == 2 and "bytes, expected 2808" in result.stderr


def test_cli_verify_checkpoint_file(small_ckpt: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["weights", "verify", str(small_ckpt)])
    assert result.exit_code == 0 and "structure ok (checkpoint" in result.stdout
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["weights", "verify", str(junk)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "not a PyTorch file" in result.stderr


@pytest.mark.parametrize("group", ["default", "styleclip"])
def test_cli_without_network_tries_every_file_then_prints_one_summary(tmp_path: Path, group: str) -> None:
    wd = tmp_path / "cache" / "hfgi"
    env = {w.ENV_MIRROR: f"http://127.0.0.1:{_closed_port()}", "COLUMNS": "80"}
    names = [] if group == "default" else [group]
    result = runner.invoke(app, ["weights", "download", *names, "-q", "--weights-dir", str(wd)], env=env)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    files = w.load_manifest().group(group)  # a bare download: the default group only, no cars files
    assert lines[0].startswith(f"error: no network: could not fetch {len(files)} file(s)")
    assert len(lines) == 1 + len(files)
    for entry, line in zip(files, lines[1:]):  # each with where to get it by hand and where to save it
        assert line == f"  {entry.name}: {' or '.join(entry.manual_urls)} -> {wd / entry.path}"
    if group == "default":
        assert lines[1] == (
            "  hfgi_ffhq: https://drive.google.com/file/d/19y6pxOiJWB0NoG3fAZO9Eab66zkN9XIL/view or "
            f"{GANINVERTER_ASSET} -> {wd / 'hfgi_ffhq.pt'}"
        )
        assert "cars" not in result.stderr and "fs3" not in result.stderr
    else:
        assert lines[2].startswith("  clip_vit_b32: https://openaipublic.azureedge.net/clip/models/")
    assert not (tmp_path / "cache").exists()  # no file and no empty folder left behind


@pytest.mark.parametrize("command", ["path", "list", "download", "verify"])
def test_every_command_help_has_an_example(command: str) -> None:
    result = runner.invoke(app, ["weights", command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "Example: hfgi weights " + command in result.stdout


def test_reference_shapes_match_the_published_checkpoint_key_list() -> None:
    """The structure check would accept the real file: same keys and shapes as the published list."""
    listing = SHARED / "reference" / "hfgi_ffhq_checkpoint_keys.tsv"
    if not listing.is_file():
        pytest.skip(f"shared reference missing: {listing}")
    published = {}
    for line in listing.read_text().splitlines()[1:]:
        key, shape, _dtype = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
        published[key.removeprefix("state_dict.")] = dims
    assert expected_shapes(ModelConfig()) == {k: v for k, v in published.items() if k != "latent_avg"}


def test_cli_unknown_name(tmp_path: Path) -> None:
    result = runner.invoke(app, ["weights", "download", "nope", "--weights-dir", str(tmp_path)])
    assert result.exit_code == 2 and "unknown model file 'nope'" in result.stderr
