"""Results to look at and choose from (--preview, --sweep), chosen faces (--faces), latent files
(--latents), progress without a terminal, and the shipped example photos (small model)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hfgi_cli.align import photo_mask
from hfgi_cli.commands.common import RunStatus
from hfgi_cli.engine import load_model
from hfgi_cli.inputs import collect_inputs, face_name
from hfgi_cli.pipeline import Job, Pipeline, RunOptions, Sweep
from hfgi_cli.previews import BOX_COLOUR, PREVIEW_HEIGHT, band_height, face_marks, fit_height, line_width, strip

from .conftest import FACES, REPO, run_cli

EXAMPLES = REPO / "examples" / "photos"
GROUP = EXAMPLES / "group.jpg"


@pytest.fixture(scope="module")
def group_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped group photo as PNG, so that untouched pixels can be compared exactly."""
    path = tmp_path_factory.mktemp("group") / "group.png"
    Image.open(GROUP).save(path)
    return path


def common(ckpt: Path, directions: Path) -> list[str]:
    return ["--checkpoint", str(ckpt), "--directions", str(directions), "--quiet", "--device", "cpu"]


def test_readme_main_command_edits_every_face_of_the_example_photos(small_ckpt: Path, small_directions: Path,
                                                                   tmp_path: Path) -> None:
    result = run_cli("edit", str(EXAMPLES), "--attr", "smile", "--strength", "2", "-o", str(tmp_path), "--json",
                     *common(small_ckpt, small_directions))
    assert result.returncode == 0, result.stderr
    faces = {Path(r["input"]).name: r["faces"] for r in map(json.loads, result.stdout.splitlines())}
    assert faces == {"astronaut.jpg": 1, "grace_hopper.jpg": 1, "group.jpg": 4}
    assert (tmp_path / "group_smile+2.jpg").is_file()


def test_preview_strip(small_ckpt: Path, small_directions: Path, tmp_path: Path) -> None:
    result = run_cli("edit", str(FACES / "00044.jpg"), str(EXAMPLES / "astronaut.jpg"), "-o", str(tmp_path),
                     "-a", "smile", "-s", "2", "-a", "age", "-s", "-2", "--preview",
                     *common(small_ckpt, small_directions))
    assert result.returncode == 0, result.stderr
    strip = Image.open(tmp_path / "astronaut_preview.jpg")
    # original, inversion, two edits: four square panels at the preview height, 2 px apart
    assert strip.size == (4 * PREVIEW_HEIGHT + 3 * 2, PREVIEW_HEIGHT) and strip.format == "JPEG"
    assert (tmp_path / "00044_preview.jpg").is_file()
    assert (tmp_path / "astronaut_smile+2.jpg").is_file() and not (tmp_path / "astronaut.jpg").exists()


def test_preview_layout_numbers_readable_inside_the_picture_boxes_on_the_original_only() -> None:
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8))
    edited = Image.fromarray(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8))
    over_top = np.array([[300, -80], [500, -80], [500, 120], [300, 120]], dtype=np.float64)  # as on the astronaut
    right = np.array([[700, 300], [900, 300], [900, 500], [700, 500]], dtype=np.float64)
    tilted = np.array([[100, 350], [220, 300], [270, 420], [150, 470]], dtype=np.float64)
    boxes = [("0", over_top), ("1", right), ("2", tilted)]
    height = PREVIEW_HEIGHT
    scale, size, top = height / photo.height, (round(photo.width * height / photo.height), height), band_height(height)
    marks = face_marks(boxes, scale, size, top)
    assert [m.name for m in marks] == ["0", "1", "2"]
    for mark in marks:
        x0, y0, x1, y1 = mark.tag
        assert 0 <= x0 < x1 <= size[0] and top <= y0 < y1 <= size[1]  # the number is wholly visible
        assert y1 - y0 >= height // 20  # about 29 px of a 512 px preview: readable without zooming
        assert all(0 <= x <= size[0] - 1 and top <= y <= size[1] - 1 for x, y in mark.outline)
    # the square's edge beyond the photo's top is drawn along the band's bottom, its right edge on the border
    assert min(y for _, y in marks[0].outline) == pytest.approx(top + line_width(height) / 2)
    assert max(x for x, _ in marks[1].outline) == pytest.approx(size[0] - 1 - line_width(height) / 2)
    assert len(marks[2].outline) == 4  # a face inside the picture keeps its whole square
    # tags of separate faces do not cover each other
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        ta, tb = marks[a].tag, marks[b].tag
        assert ta[2] <= tb[0] or tb[2] <= ta[0] or ta[3] <= tb[1] or tb[3] <= ta[1]

    picture = strip([("original", photo), ("inversion", edited), ("smile+2", edited)], boxes, height)
    pixels = np.asarray(picture)
    width = size[0]
    panels = [pixels[:, i * (width + 2):i * (width + 2) + width] for i in range(3)]
    plain = np.asarray(fit_height(edited, height))
    for panel in panels[1:]:  # the edits are shown as they are: no box, no number
        assert np.array_equal(panel[top:], plain[top:])
    yellow = np.all(panels[0] == BOX_COLOUR, axis=-1)
    row = round(top + line_width(height) / 2)
    x_from, x_to = round(300 * scale) + 4, round(500 * scale) - 4
    assert yellow[row, x_from:x_to].mean() > 0.9  # the top edge of the face over the top is visible
    assert not yellow[:top].any()  # nothing under the label band


def test_sweep_encodes_each_face_once(small_ckpt: Path, small_directions: Path, tmp_path: Path) -> None:
    model = load_model(small_ckpt, device="cpu", directions=small_directions, batch_size=1)
    calls = {"encoder": 0}
    real = model.net.encoder.forward

    def counting(*args, **kwargs):
        calls["encoder"] += 1
        return real(*args, **kwargs)

    model.net.encoder.forward = counting  # type: ignore[method-assign]
    items, _ = collect_inputs([str(EXAMPLES / "astronaut.jpg")])
    sweep = Sweep("smile", (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0))
    done: list[Job] = []
    Pipeline(model, RunOptions(tmp_path, [], sweep=sweep)).run(items, done.append)
    assert [j.status for j in done] == ["ok"] and calls["encoder"] == 1  # one encoding, seven strengths
    grid = Image.open(tmp_path / "astronaut_sweep-smile_0.jpg")
    assert grid.size == (8 * 256 + 7 * 2, 256)  # the face as given, then seven strengths
    assert sorted(p.name for p in tmp_path.iterdir()) == ["astronaut_sweep-smile.json", "astronaut_sweep-smile_0.jpg"]
    # done: a re-run with the same sweep skips it, another range redoes it
    again = Pipeline(model, RunOptions(tmp_path, [], sweep=sweep)).run(items, done.append)
    assert [j.status for j in again.jobs] == ["skipped"]
    other = Pipeline(model, RunOptions(tmp_path, [], sweep=Sweep("smile", (-1.0, 1.0)))).run(items, done.append)
    assert [j.status for j in other.jobs] == ["ok"] and calls["encoder"] == 2


def test_chosen_faces_only(small_ckpt: Path, small_directions: Path, group_png: Path, tmp_path: Path) -> None:
    result = run_cli("edit", str(group_png), "-o", str(tmp_path), "-a", "smile", "-s", "2", "--faces", "0,2",
                     "--json", *common(small_ckpt, small_directions))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["faces"] == 2
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["group_smile+2_0.pt", "group_smile+2_2.pt"]
    src = np.asarray(Image.open(group_png).convert("RGB"), dtype=np.int16)
    out = np.asarray(Image.open(tmp_path / "group_smile+2.png").convert("RGB"), dtype=np.int16)
    edited = np.zeros(src.shape[:2], bool)
    for k in (0, 2):
        record = torch.load(tmp_path / f"group_smile+2_{k}.pt", weights_only=True)
        from hfgi_cli.align import AlignedFace

        face = AlignedFace.from_json(record["alignment"], Image.new("RGB", (1024, 1024)))
        (x0, y0, x1, y1), weight = photo_mask(face)
        edited[y0:y1, x0:x1] |= weight > 0
    assert np.array_equal(out[~edited], src[~edited])  # faces 1 and 3 (and all else) untouched
    assert not np.array_equal(out[edited], src[edited])


@pytest.mark.parametrize("mode", ["full", "codes", "none"])
def test_latent_file_modes(mode: str, small_ckpt: Path, small_directions: Path, tmp_path: Path) -> None:
    result = run_cli("invert", str(FACES / "00044.jpg"), "-o", str(tmp_path), "--aligned", "--latents", mode,
                     "--checkpoint", str(small_ckpt), "--quiet")
    assert result.returncode == 0, result.stderr
    pt = tmp_path / "00044.pt"
    assert (tmp_path / "00044.png").is_file() and pt.exists() == (mode != "none")
    if mode == "none":
        return
    record = torch.load(pt, weights_only=True)
    assert ("distortion" in record) == (mode == "full")
    if mode == "full":
        assert record["distortion"].dtype == torch.float16
        return
    again = run_cli("edit", str(pt), "-o", str(tmp_path / "e"), "-a", "smile", *common(small_ckpt, small_directions))
    assert again.returncode == 1 and "codes only" in again.stderr and "--latents full" in again.stderr


def test_a_run_without_latent_files_is_not_done_for_one_that_wants_them(small_ckpt: Path, tmp_path: Path) -> None:
    args = ["invert", str(EXAMPLES / "astronaut.jpg"), "-o", str(tmp_path), "--checkpoint", str(small_ckpt), "--json"]
    status = [json.loads(run_cli(*args, *extra).stdout)["status"] for extra in (["--latents", "none"], [], [])]
    assert status == ["ok", "ok", "skipped"]
    assert torch.is_tensor(torch.load(tmp_path / "astronaut_0.pt", weights_only=True)["distortion"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faces", "one"], "--faces takes face indices"),
        (["--faces", "-1"], "--faces takes face indices from 0"),
        (["--latents", "half"], "--latents must be one of"),
        (["--sweep", "smile=-3:3"], "--sweep takes ATTR=FROM:TO:COUNT"),
        (["--sweep", "smile=-3:3:99"], "COUNT must be 2..25"),
        (["--sweep", "grin=-1:1:3"], "unknown attribute 'grin'"),
        (["--sweep", "smile=-1:1:3", "-a", "age"], "give --sweep alone"),
        (["--sweep", "smile=1:1:3"], "FROM and TO must differ"),
        (["--sweep", "smile=-1:1:3", "--preview"], "--sweep writes only its grids"),
        (["--faces", "0", "--aligned"], "--faces picks faces of photos"),
    ],
)
def test_bad_option_values_are_usage_errors(args: list[str], message: str, small_ckpt: Path, tmp_path: Path) -> None:
    edit = [] if "--sweep" in args else ["-a", "smile"]
    result = run_cli("edit", str(FACES / "00044.jpg"), "-o", str(tmp_path / "out"), "--checkpoint", str(small_ckpt),
                     *edit, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_status_lines_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    status = RunStatus("edit", total=3, every=0.05)
    with status.ticking(silent=False):
        job = Job(collect_inputs([str(FACES / "00044.jpg")])[0][0], status="ok", n_faces=2)
        with status.lock:
            status.count(job)
        time.sleep(0.3)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("edit:")]
    assert len(lines) >= 2
    assert "1/3 inputs, 2 faces" in lines[-1] and "img/s" in lines[-1] and "left" in lines[-1]


def test_face_names_sort() -> None:
    assert [face_name("p", k, 3) for k in (0, 2)] == ["p_0", "p_2"]
    names = [face_name("p", k, 26) for k in range(26)]
    assert names[:2] == ["p_00", "p_01"] and sorted(names) == names
