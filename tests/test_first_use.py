"""What a new user meets first: a bad -o refused before the model loads, help texts at 80 columns,
the time left and the last line of a run, tables that keep file names whole, and the exit status
when nothing is left to process (small model)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hfgi_cli.commands import common
from hfgi_cli.commands.common import RunStatus
from hfgi_cli.inputs import collect_inputs
from hfgi_cli.pipeline import Job

from .conftest import FACES, REPO, run_cli

PHOTO = REPO / "examples" / "photos" / "astronaut.jpg"
NO_CHECKPOINT = "/nonexistent/ckpt.pt"  # a run that got past the -o check would fail on this instead


# ---------------------------------------------------------------------------------------------- -o
def _bad_outs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    a_file = tmp_path / "taken.txt"
    a_file.write_text("not a folder")
    return {
        "a file": (a_file, "is a file, not a folder"),
        "under a file": (a_file / "out", f"cannot be created: {a_file} is a file, not a folder"),
    }


@pytest.mark.parametrize("case", ["a file", "under a file"])
@pytest.mark.parametrize("command", ["invert", "edit", "align"])
def test_a_bad_out_folder_is_refused_before_the_model_loads(command: str, case: str, tmp_path: Path) -> None:
    out, cause = _bad_outs(tmp_path)[case]
    extra = {"invert": ["--checkpoint", NO_CHECKPOINT], "edit": ["--checkpoint", NO_CHECKPOINT, "-a", "smile"],
             "align": []}[command]
    result = run_cli(command, str(PHOTO), "-o", str(out), *extra)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: -o {out}: {cause}\n"  # one line: the folder and the cause, no input blamed


@pytest.mark.parametrize("case", ["a file", "under a file", "a folder"])
def test_a_bad_video_output_is_refused_before_the_model_loads(case: str, tmp_path: Path) -> None:
    if case == "a folder":
        out, cause = tmp_path / "clip.mp4", "is a folder, not a file"
        out.mkdir()
    else:
        folder, folder_cause = _bad_outs(tmp_path)[case]
        out, cause = folder / "clip.mp4", f"its folder {folder}: {folder_cause}"
    result = run_cli("video", str(PHOTO), "-o", str(out), "-a", "smile", "-s", "1", "--checkpoint", NO_CHECKPOINT)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: -o {out}: {cause}\n"


def _run_cli_as(user: int | None, *args: str) -> tuple[int, str]:
    """``run_cli`` in a forked child that first becomes ``user`` (a uid): permissions belong to the
    process, and root may write anywhere. The child reads nothing new from disk (this interpreter and
    its modules are loaded already), so no file has to be readable by that user."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report (exit status, stderr) through the pipe, never return into pytest
        try:
            if user is not None:
                os.setgid(user)
                os.setuid(user)
            result = run_cli(*args)
            os.write(write_end, json.dumps([result.returncode, result.stderr]).encode())
        except BaseException as exc:
            os.write(write_end, json.dumps([-1, repr(exc)]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert data, f"the child died (wait status {status})"
    code, stderr = json.loads(data)
    return code, stderr


def test_a_folder_without_write_permission_is_refused_before_the_model_loads() -> None:
    user = 65534 if os.geteuid() == 0 else None  # nobody, when the tests run as root
    # the same command once in this process first, so that every module it imports lazily is loaded
    # before the child (which may not read the interpreter's own folders) runs it
    root = Path(tempfile.mkdtemp(prefix="hfgi-test-"))  # in /tmp: pytest's own temp folders are root's only
    try:
        warm = run_cli("edit", str(PHOTO), "-o", str(root / "warm"), "-a", "smile", "--checkpoint", NO_CHECKPOINT)
        assert warm.returncode == 2 and "checkpoint not found" in warm.stderr
        readonly, closed = root / "readonly", root / "closed"
        readonly.mkdir(mode=0o555)
        closed.mkdir(mode=0o700)  # as another user: not even entered
        root.chmod(0o755)
        cases = [(readonly, "cannot write there (Permission denied)"),
                 (readonly / "new" / "out", f"cannot be created in {readonly} (Permission denied)")]
        if user is not None:
            cases.append((closed / "out", "cannot be reached (Permission denied)"))
        for out, cause in cases:
            code, stderr = _run_cli_as(user, "edit", str(PHOTO), "-o", str(out), "-a", "smile",
                                       "--checkpoint", NO_CHECKPOINT)
            assert code == 2, stderr
            assert stderr == f"error: -o {out}: {cause}\n"
        assert list(readonly.iterdir()) == [] and list(closed.iterdir()) == []  # the check left nothing
    finally:
        for folder in (root / "readonly", root / "closed"):
            if folder.exists():
                folder.chmod(0o755)
        shutil.rmtree(root)


def test_the_out_check_creates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    assert common.check_out_folder(out) is None
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- help
TYPE_LABELS = re.compile(r"<(bool|str|path|int|float|list\[[a-zA-Z]+\]|int range|float range)>|\{[a-z_]+\}")


@pytest.mark.parametrize("command", [[], ["invert"], ["edit"], ["align"], ["video"], ["eval"], ["weights"],
                                     ["weights", "download"], ["weights", "verify"], ["weights", "list"]])
def test_help_names_values_by_metavars_and_keeps_paths_whole_at_80_columns(command: list[str]) -> None:
    result = run_cli(*command, "--help", env={"COLUMNS": "80"})
    assert result.returncode == 0
    assert not TYPE_LABELS.search(result.stdout), TYPE_LABELS.search(result.stdout)
    assert "…" not in result.stdout  # nothing cut short
    words = {w.strip("│,;:()") for w in result.stdout.split()}
    if command[:1] in (["invert"], ["edit"], ["align"]):
        assert re.search(r"Usage: .* \[OPTIONS\] INPUT\.\.\.", result.stdout)
    if command == ["edit"]:
        assert {"OUT/<name>_preview.jpg", "OUT/<name>_sweep-ATTR_<k>.jpg", "OUT/x_smile+2.jpg"} <= words
    if command == ["invert"]:
        assert "OUT/x.jpg" in words and "OUT/x.png" not in words  # a photo keeps its own format


# ---------------------------------------------------------------------------------------------- progress
def test_time_left_counts_down_and_does_not_grow_while_an_input_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(common.time, "monotonic", lambda: clock[0])
    status = RunStatus("edit", total=3)
    clock[0] = 105.0
    assert status.text() == "edit: 0/3 inputs, 0 faces, 5 s so far (time left: after the first input)"
    status.count(Job(collect_inputs([str(FACES / "00044.jpg")])[0][0], status="ok", n_faces=2))  # at 105: 5 s each
    assert status.text().endswith("1/3 inputs, 2 faces, 5 s an input, ~10 s left")
    clock[0] = 109.0
    assert status.text().endswith("~6 s left")
    clock[0] = 160.0  # the second input is slow: the estimate does not grow, it says what is left after it
    assert status.text().endswith("over the estimate: ~5 s left after the input under way")
    status.count(Job(collect_inputs([str(FACES / "00044.jpg")])[0][0], status="ok", n_faces=1))
    clock[0] = 400.0
    assert status.text().endswith("over the estimate, on the last input")


def test_the_last_line_names_the_output_folder_and_the_faces(small_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("invert", str(FACES / "00044.jpg"), str(FACES / "00051.jpg"), "-o", str(out), "--aligned",
                     "--checkpoint", str(small_ckpt), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == f"2 done; 2 faces in {out}"


# ---------------------------------------------------------------------------------------------- tables
def test_tables_keep_file_names_whole_at_80_columns(tmp_path: Path) -> None:
    from hfgi_cli import weights as w

    result = run_cli("weights", "list", "--weights-dir", str(tmp_path / "wd"), env={"COLUMNS": "80"})
    assert result.returncode == 0
    cells = {c.strip() for line in result.stdout.splitlines() for c in line.split("│")}
    assert {e.path for e in w.load_manifest().files} <= cells
    originals, results = tmp_path / "originals", tmp_path / "results"
    originals.mkdir()
    results.mkdir()
    rng = np.random.default_rng(0)
    for name in ("grace_hopper", "astronaut_84", "grace_hopper_at_the_univac_in_1960"):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(originals / f"{name}.png")
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(results / f"{name}_smile+2.png")
    result = run_cli("eval", str(originals), str(results), env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    cells = [c.strip() for line in lines for c in line.split("│")]
    # whole names where they fit (no name broken across two lines); the too long one keeps its edit
    assert {"grace_hopper_smile+2.png", "astronaut_84_smile+2.png"} <= set(cells)
    cut = [c for c in cells if "…" in c]
    assert len(cut) == 1 and cut[0].startswith("grace_h") and cut[0].endswith("1960_smile+2.png")
    assert not [c for c in cells if c.endswith((".pn", "png")) and not c.endswith(".png")]


# ---------------------------------------------------------------------------------------------- no inputs
def test_no_inputs_to_process_exit_status(small_ckpt: Path, tmp_path: Path) -> None:
    args = ["-o", str(tmp_path / "out"), "--checkpoint", str(small_ckpt)]
    result = run_cli("invert", str(tmp_path / "missing.jpg"), *args)  # an input given, and it failed: 1
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'missing.jpg'}: no such file or folder",
                                          "error: no inputs to process: the input above failed"]
    result = run_cli("invert", "-", *args, stdin="")  # no input given at all: a usage error, 2
    assert result.returncode == 2
    assert result.stderr == "error: no inputs to process: no paths were given (stdin held none)\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("align", str(empty), "-o", str(tmp_path / "crops"))  # the same rule for align
    assert result.returncode == 1 and "no inputs to process" in result.stderr


# ---------------------------------------------------------------------------------------------- one rule each
def test_min_face_has_one_lower_bound_for_the_api_and_the_cli(tmp_path: Path) -> None:
    from hfgi_cli.align import MIN_QSIZE
    from hfgi_cli.detect import find_faces

    assert common.MinFaceOpt.min == MIN_QSIZE
    with pytest.raises(ValueError, match="min_face 64 px is under 80 px"):
        find_faces(Image.open(PHOTO), min_face=64)  # what Model.invert/edit(min_face=64) reach
    result = run_cli("edit", str(PHOTO), "-o", str(tmp_path), "-a", "smile", "--min-face", "64")
    assert result.returncode == 2 and "80" in result.stderr


def test_quoted_library_messages_are_cut_at_a_sentence_or_a_word() -> None:
    from hfgi_cli.reasons import short_reason

    torch_says = ("PytorchStreamReader failed reading zip archive: failed finding central directory. This is an "
                  "internal miniz error. If you're seeing this, please report it\nsecond line")
    assert short_reason(torch_says) == ("PytorchStreamReader failed reading zip archive: failed finding central "
                                        "directory. This is an internal miniz error.")
    assert short_reason("word " * 40, 30) == "word word word word word word…"
    assert short_reason("short\nmore") == "short"
    assert short_reason(EOFError()) == "EOFError"  # a message-less exception still says what it was
    assert short_reason("") == ""
