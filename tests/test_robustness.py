"""Issue 7: hostile inputs, interruptions and shell pipelines, through the real CLI.

One folder of good faces mixed with every kind of broken or odd file is inverted once (module
fixture) and several tests check that run; the kill / Ctrl-C / re-run tests use their own folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hfgi_cli.cli import app
from hfgi_cli.images import read_image
from hfgi_cli.latents import LATENT_FORMAT, is_complete_latent

from .conftest import FACES, run_cli

FACE_FILES = sorted(FACES.glob("*.jpg"))
pytestmark = pytest.mark.skipif(len(FACE_FILES) < 3, reason=f"needs the shared faces in {FACES}")

# bad file name -> the words its one stderr line must contain (besides the file's path)
BAD_CAUSES: dict[str, str] = {
    "empty.jpg": "empty file",
    "truncated.jpg": "unreadable image",
    "text.jpg": "not an image",
    "one pixel.png": "image too small (1x1",
    "bomb.png": "image too large",
    "not a latent.pt": "not a latent file",
    "other model.pt": "does not fit this model",
    "[draft] broken.png": "not an image",
}
# good inputs -> processed whatever their encoding
GOOD = ["00044.jpg", "00051.jpg", "über face.jpg", "gray.png", "rgba.png", "palette.png", "sixteen bit.png",
        "cmyk.jpg", "rotated.jpg", "sub dir/ünïcødé.jpg"]
NO_READ = "no read.jpg"  # chmod 000: "permission denied" as a user; root reads it anyway (see as_a_user)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 60000, height: int = 60000) -> bytes:
    """A tiny, valid-looking PNG whose header claims width x height pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def build_corpus(root: Path) -> None:
    """Good faces in every encoding, plus one file of each broken kind (see BAD_CAUSES)."""
    root.mkdir(parents=True, exist_ok=True)
    face = Image.open(FACE_FILES[0]).convert("RGB")
    for src in FACE_FILES[:2]:
        shutil.copy(src, root / src.name)
    shutil.copy(FACE_FILES[2], root / "über face.jpg")
    (root / "sub dir").mkdir()
    shutil.copy(FACE_FILES[2], root / "sub dir" / "ünïcødé.jpg")
    face.convert("L").save(root / "gray.png")
    rgba = face.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(face.size))
    rgba.save(root / "rgba.png")
    face.convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette.png")
    sixteen = (np.asarray(face.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(sixteen).save(root / "sixteen bit.png")
    assert Image.open(root / "sixteen bit.png").mode.startswith("I")
    face.convert("CMYK").save(root / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    face.crop((0, 0, 256, 200)).save(root / "rotated.jpg", exif=exif)
    shutil.copy(FACE_FILES[0], root / NO_READ)
    os.chmod(root / NO_READ, 0)

    (root / "empty.jpg").write_bytes(b"")
    data = FACE_FILES[1].read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "text.jpg").write_text("this is not a picture\n")
    Image.new("RGB", (1, 1), (200, 100, 50)).save(root / "one pixel.png")
    (root / "bomb.png").write_bytes(bomb_png())
    (root / "[draft] broken.png").write_text("[bold]markup[/bold] in a name must not vanish\n")
    (root / "not a latent.pt").write_bytes(b"PK\x03\x04 not a torch file")
    other = {"latent": torch.zeros(8, 64), "distortion": torch.zeros(3, 256, 256), "format": LATENT_FORMAT}
    torch.save(other, root / "other model.pt")


def tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            mode = p.stat().st_mode
            os.chmod(p, mode | 0o400)
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() + oct(mode)
            os.chmod(p, mode)
    return out


def assert_outputs_valid(out: Path) -> list[Path]:
    """No temp files; every image opens and every latent loads. Returns the images."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".") or p.suffix == ".part"], files
    images = [p for p in files if p.suffix == ".png"]
    for p in images:
        with Image.open(p) as im:
            im.load()
        assert is_complete_latent(p.with_suffix(".pt")), p
    assert len([p for p in files if p.suffix == ".pt"]) == len(images)
    return images


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def as_a_user() -> tuple[list[str], bool]:
    """A command prefix under which a chmod-000 file is unreadable, and whether there is one.

    Tests run as root in CI, where file modes do not stop reads; dropping root's file-access
    capabilities with setpriv (where the container allows it) makes it read files as a user would.
    """
    if not running_as_root():
        return [], True
    setpriv = shutil.which("setpriv")
    if setpriv:
        caps = "-dac_override,-dac_read_search"
        prefix = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix, True
    return [], False


def parse_json_lines(stdout: str) -> list[dict]:
    records = [json.loads(line) for line in stdout.splitlines()]  # every stdout line is a JSON object
    for r in records:
        assert set(r) == {"input", "outputs", "faces", "status", "error", "seconds", "quality", "precision",
                          "edits"}, r
    return records


def cli_args(ckpt: Path, *args: str) -> list[str]:
    return [*args, "--checkpoint", str(ckpt), "--aligned", "--quiet"]


def face_folder(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        shutil.copy(FACE_FILES[i % len(FACE_FILES)], root / f"face {i:02d}.jpg")
    return root


# ------------------------------------------------------------------------------ the hostile corpus
def run_prefixed(prefix: list[str], args: list[str]) -> subprocess.CompletedProcess[str]:
    """run_cli, under a command prefix (see as_a_user)."""
    return subprocess.run([*prefix, sys.executable, "-m", "hfgi_cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})


class CorpusRun:
    def __init__(self, src: Path, out: Path, before: dict[str, str], proc: subprocess.CompletedProcess[str],
                 unreadable: bool, prefix: list[str]):
        self.src, self.out, self.before, self.proc, self.prefix = src, out, before, proc, prefix
        self.records = parse_json_lines(proc.stdout)
        self.by_input = {Path(r["input"]).relative_to(src).as_posix(): r for r in self.records}
        # the chmod-000 file: denied as a user; as root without setpriv it may be read (either is right)
        self.no_read_ok = not unreadable and self.by_input[NO_READ]["status"] == "ok"
        self.bad = {**BAD_CAUSES, **({} if self.no_read_ok else {NO_READ: "permission denied"})}
        self.good = GOOD + ([NO_READ] if self.no_read_ok else [])


@pytest.fixture(scope="module")
def corpus(small_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> CorpusRun:
    root = tmp_path_factory.mktemp("corpus")
    src, out = root / "in", root / "out"
    build_corpus(src)
    before = tree_hashes(src)
    prefix, unreadable = as_a_user()
    proc = run_prefixed(prefix, cli_args(small_ckpt, "invert", str(src), "-o", str(out), "--json", "-b", "3"))
    return CorpusRun(src, out, before, proc, unreadable, prefix)


def test_corpus_exit_status_and_one_stderr_line_per_bad_input(corpus: CorpusRun) -> None:
    assert corpus.proc.returncode == 1, corpus.proc.stderr
    lines = corpus.proc.stderr.splitlines()
    assert "Traceback" not in corpus.proc.stderr
    bad = corpus.bad
    for name, cause in bad.items():
        path = str(corpus.src / name)
        mine = [line for line in lines if path in line]
        assert len(mine) == 1, (name, lines)
        assert mine[0].startswith(f"error: {path}: ") and cause in mine[0], (name, mine[0])
    error_lines = [line for line in lines if line.startswith("error:")]
    assert len(error_lines) == len(bad), lines
    faces = len(corpus.good)  # one aligned face each
    assert lines[-1] == f"{len(corpus.good)} done, {len(bad)} failed; {faces} faces in {corpus.out}", lines


def test_corpus_every_good_input_is_processed(corpus: CorpusRun) -> None:
    for name in corpus.good:
        record = corpus.by_input[name]
        assert record["status"] == "ok" and record["faces"] == 1 and record["error"] is None, record
        stem = Path(name).with_suffix("")
        assert record["outputs"] == [str(corpus.out / f"{stem}.png"), str(corpus.out / f"{stem}.pt")]
    for name, cause in corpus.bad.items():
        record = corpus.by_input[name]
        assert record["status"] == "error" and record["outputs"] == [] and cause in record["error"], record


def test_corpus_json_stdout_has_one_object_per_input_and_nothing_else(corpus: CorpusRun) -> None:
    n_inputs = sum(1 for p in corpus.src.rglob("*") if p.is_file())
    assert len(corpus.records) == n_inputs == len(GOOD) + len(BAD_CAUSES) + 1
    assert sorted(corpus.by_input) == sorted(GOOD + list(BAD_CAUSES) + [NO_READ])


def test_corpus_outputs_complete_and_inputs_untouched(corpus: CorpusRun) -> None:
    images = assert_outputs_valid(corpus.out)
    assert len(images) == sum(r["status"] == "ok" for r in corpus.records)
    umask = os.umask(0)
    os.umask(umask)
    for p in images:  # not mkstemp's private 0600
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p
    assert tree_hashes(corpus.src) == corpus.before


def test_odd_encodings_decode_upright_rgb(corpus: CorpusRun) -> None:
    rotated = read_image(corpus.src / "rotated.jpg")
    assert rotated.size == (200, 256)  # EXIF orientation 6 applied
    face = np.asarray(Image.open(FACE_FILES[0]).convert("L"), dtype=np.float64)
    for name in ("gray.png", "sixteen bit.png", "cmyk.jpg", "palette.png"):
        img = read_image(corpus.src / name)
        assert img.mode == "RGB" and img.size == (256, 256)
        assert np.abs(np.asarray(img.convert("L"), dtype=np.float64) - face).mean() < 12, name


def test_rerun_skips_finished_work_and_overwrite_redoes_it(corpus: CorpusRun, small_ckpt: Path) -> None:
    out = corpus.out
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    stale = out / ".00044.png.abcd1234.part"  # as if a run was killed while overwriting 00044.png
    stale.write_bytes(b"half")
    proc = run_cli(*cli_args(out.parent / "ckpt-missing.pt", "invert", str(corpus.src), "-o", str(out)))
    assert proc.returncode == 2 and "checkpoint" in proc.stderr  # a usage error: nothing was read
    proc = run_prefixed(corpus.prefix, cli_args(small_ckpt, "invert", str(corpus.src), "-o", str(out), "--json"))
    assert proc.returncode == 1
    records = {Path(r["input"]).relative_to(corpus.src).as_posix(): r for r in parse_json_lines(proc.stdout)}
    for name, record in records.items():
        expected = "ok" if name in corpus.good else "error"
        assert record["status"] == ("skipped" if expected == "ok" else "error"), record
    assert all(r["faces"] == 0 and r["outputs"] == [] for r in records.values())
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes
    assert "already done" in proc.stderr and not stale.exists()

    proc = run_cli(*cli_args(small_ckpt, "invert", str(corpus.src / "00044.jpg"), "-o", str(out), "--overwrite",
                             "--json"))
    assert proc.returncode == 0, proc.stderr
    (record,) = parse_json_lines(proc.stdout)
    assert record["status"] == "ok" and record["faces"] == 1
    assert (out / "00044.png").stat().st_mtime_ns > mtimes[out / "00044.png"]
    assert_outputs_valid(out)


def test_usage_errors_exit_2(tmp_path: Path, small_ckpt: Path, small_directions: Path) -> None:
    proc = run_cli(*cli_args(small_ckpt, "edit", str(FACE_FILES[0]), "-o", str(tmp_path / "o"), "--attr", "nosuch",
                             "--directions", str(small_directions)))
    assert proc.returncode == 2 and "unknown attribute 'nosuch'" in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ kills and Ctrl-C
def _start(ckpt: Path, src: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    args = cli_args(ckpt, "invert", str(src), "-o", str(out), "--batch-size", "1", "--json", *extra)
    return subprocess.Popen([sys.executable, "-m", "hfgi_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for_output(proc: subprocess.Popen[str], out: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not list(out.glob("*.png")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no output appeared"
        time.sleep(0.01)


def test_sigkill_mid_run_then_rerun_completes(tmp_path: Path, small_ckpt: Path) -> None:
    src, out = face_folder(tmp_path / "in", 12), tmp_path / "out"
    proc = _start(small_ckpt, src, out)
    _wait_for_output(proc, out)
    proc.kill()
    proc.communicate(timeout=30)
    # whatever the kill left, plus temps as a kill during a write leaves them
    (out / ".face 11.png.k1ll3d_x.part").write_bytes(b"\x89PNG half")
    (out / ".face 00.pt.k1ll3d_y.part").write_bytes(b"PK half")
    keep = out / ".notes.txt.abcd1234.part"  # not an output of ours: left alone
    keep.write_bytes(b"x")
    proc2 = run_cli(*cli_args(small_ckpt, "invert", str(src), "-o", str(out), "--json"))
    assert proc2.returncode == 0, proc2.stderr
    statuses = [r["status"] for r in parse_json_lines(proc2.stdout)]
    assert len(statuses) == 12 and set(statuses) <= {"ok", "skipped"} and "ok" in statuses  # killed mid-way
    keep.unlink()
    assert len(assert_outputs_valid(out)) == 12


def test_ctrl_c_stops_after_the_current_batch(tmp_path: Path, small_ckpt: Path) -> None:
    n = 36
    src, out = face_folder(tmp_path / "in", n), tmp_path / "out"
    proc = _start(small_ckpt, src, out)
    _wait_for_output(proc, out)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "not started (interrupted)" in stderr.splitlines()[-1]
    records = parse_json_lines(stdout)
    assert 1 <= len(records) < n and all(r["status"] == "ok" for r in records)
    assert len(assert_outputs_valid(out)) == len(records)


def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path: Path, small_ckpt: Path) -> None:
    """A batch scheduler's stop (SIGTERM, here sent by the run to itself): the run ends after the
    current batch, with the shell's status for SIGTERM."""
    from hfgi_cli.engine import load_model
    from hfgi_cli.inputs import collect_inputs
    from hfgi_cli.pipeline import Job, Pipeline, RunOptions

    assert threading.current_thread() is threading.main_thread()  # where the handler is installed
    src, out = face_folder(tmp_path / "in", 8), tmp_path / "out"
    items, _ = collect_inputs([str(src)])
    done: list[Job] = []

    def on_done(job: Job) -> None:
        done.append(job)
        if len(done) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    summary = Pipeline(load_model(small_ckpt, device="cpu"), RunOptions(out, [], aligned=True)).run(items, on_done)
    assert summary.exit_code == 143 and 1 <= len(done) < len(items)
    assert len(assert_outputs_valid(out)) == len(done) and all(j.status == "ok" for j in done)


# ------------------------------------------------------------------------------ shell use
def test_paths_from_stdin_with_spaces(tmp_path: Path, small_ckpt: Path) -> None:
    src = tmp_path / "my faces"
    src.mkdir()
    names = ["a b.jpg", "ç d .jpg"]  # the second one ends with a space before the suffix
    for name, face in zip(names, FACE_FILES):
        shutil.copy(face, src / name)
    stdin = "".join(f"{src / name}\n" for name in names) + "\n"
    proc = run_cli(*cli_args(small_ckpt, "invert", "-", "-o", str(tmp_path / "out"), "--json"), stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    assert [r["input"] for r in parse_json_lines(proc.stdout)] == [str(src / n) for n in names]
    assert sorted(p.name for p in assert_outputs_valid(tmp_path / "out")) == ["a b.png", "ç d .png"]


def test_same_names_in_two_folders_do_not_collide(tmp_path: Path, small_ckpt: Path) -> None:
    for folder, face in (("A", FACE_FILES[0]), ("B", FACE_FILES[1])):
        (tmp_path / folder / "sub").mkdir(parents=True)
        shutil.copy(face, tmp_path / folder / "a.jpg")
        shutil.copy(face, tmp_path / folder / "sub" / "a.jpg")
    Image.open(FACE_FILES[2]).save(tmp_path / "A" / "a.png")  # same stem in one folder
    out = tmp_path / "out"
    proc = run_cli(*cli_args(small_ckpt, "invert", str(tmp_path / "A"), str(tmp_path / "B"), str(tmp_path / "none"),
                             "-o", str(out), "--json"))
    assert proc.returncode == 1 and f"error: {tmp_path / 'none'}: no such file or folder" in proc.stderr
    records = parse_json_lines(proc.stdout)
    assert len(records) == 6 and records[0]["input"] == str(tmp_path / "none")
    layout = {Path(r["input"]).relative_to(tmp_path).as_posix(): Path(r["outputs"][0]).relative_to(out).as_posix()
              for r in records[1:]}
    assert layout == {"A/a.jpg": "A/a.png", "A/a.png": "A/a-1.png", "A/sub/a.jpg": "A/sub/a.png",
                      "B/a.jpg": "B/a.png", "B/sub/a.jpg": "B/sub/a.png"}
    sources = {torch.load(out / f"{o[:-4]}.pt", weights_only=True)["source"] for o in layout.values()}
    assert len(sources) == 5 and len(assert_outputs_valid(out)) == 5


def test_json_reader_going_away_does_not_break_the_run(tmp_path: Path, small_ckpt: Path) -> None:
    src, out = face_folder(tmp_path / "in", 8), tmp_path / "out"
    proc = _start(small_ckpt, src, out)
    assert proc.stdout is not None and json.loads(proc.stdout.readline())["status"] == "ok"
    proc.stdout.close()  # like `| head -n1`
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    assert len(assert_outputs_valid(out)) == 8


@pytest.mark.parametrize("command", ["invert", "edit"])
def test_help_shows_an_example(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert f"Example: hfgi {command} " in result.output
    if command == "invert":  # the output layout rule is documented
        words = " ".join(w for w in result.output.split() if w != "│")  # unwrap the rich panel
        assert "under the folder's name when several folders are given" in words
