"""`hfgi weights`: manifest, locations, the real download code against a local server, and checks.

The server runs on 127.0.0.1 in a thread, is shut down after each test, and stops by itself after
60 s in any case. It serves copies of the official direction files from ``<repo>/../shared``.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
    """Every direction / PCA file of the manifest at its relative path, as a mirror would serve it."""
    served = {}
    for entry in w.load_manifest().files:
        if entry.kind != "checkpoint":
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


def test_manifest_sizes_and_hashes_match_the_official_direction_files() -> None:
    manifest = w.load_manifest()
    assert manifest.get(w.CHECKPOINT).sha256 is None and manifest.get(w.CHECKPOINT).gdrive_id
    for entry in manifest.files:
        if entry.kind == "checkpoint":
            continue
        data = _shared(entry.path)
        assert entry.size == len(data), entry.name
        assert entry.sha256 == hashlib.sha256(data).hexdigest(), entry.name
        assert entry.url.startswith("https://raw.githubusercontent.com/Tengfei-Wang/HFGI/main/editings/")
    assert manifest.packaged[0].package == "face-recognition-models"


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
    assert w.resolve_directions_dir(None, tmp_path, needed=["smile"]) == tmp_path
    with pytest.raises(w.WeightsMissingError, match=r"ganspace/ffhq_pca\.pt.*download ganspace_ffhq"):
        w.resolve_directions_dir(None, tmp_path, needed=["smile", "eyes"])
    assert w.resolve_directions_dir(DIRECTIONS, None) == DIRECTIONS
    with pytest.raises(w.WeightsMissingError, match="given with --directions"):
        w.resolve_directions_dir(tmp_path / "nope", None)


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


def test_cli_without_network_tries_every_file_then_prints_one_summary(tmp_path: Path) -> None:
    wd = tmp_path / "cache" / "hfgi"
    env = {w.ENV_MIRROR: f"http://127.0.0.1:{_closed_port()}", "COLUMNS": "80"}
    result = runner.invoke(app, ["weights", "download", "-q", "--weights-dir", str(wd)], env=env)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    wanted = [e for e in w.load_manifest().files if e.name not in w.OTHER_DOMAINS]  # a face model's files
    assert "ganspace_cars" in w.OTHER_DOMAINS and "ganspace_cars" not in result.stderr
    assert lines[0].startswith(f"error: no network: could not fetch {len(wanted)} file(s)")
    assert len(lines) == 1 + len(wanted)
    for entry, line in zip(wanted, lines[1:]):  # each with where to get it by hand and where to save it
        assert line == f"  {entry.name}: {' or '.join(entry.manual_urls)} -> {wd / entry.path}"
    assert lines[1] == (
        "  hfgi_ffhq: https://drive.google.com/file/d/19y6pxOiJWB0NoG3fAZO9Eab66zkN9XIL/view or "
        f"{GANINVERTER_ASSET} -> {wd / 'hfgi_ffhq.pt'}"
    )
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
