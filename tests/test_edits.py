"""Edit arithmetic against hand-computed codes, on the official direction files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hfgi_cli.edits import CATALOG, EditError, Editor, EditSpec, ModelShape, load_direction

from .conftest import DIRECTIONS


@pytest.fixture(scope="module")
def codes() -> torch.Tensor:
    return torch.randn(3, 18, 512, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def editor() -> Editor:
    return Editor(DIRECTIONS, ModelShape(18))


@pytest.mark.parametrize("attr", ["age", "smile"])
def test_interfacegan_adds_strength_times_direction_to_every_row(codes, editor, attr) -> None:
    d = torch.load(DIRECTIONS / "interfacegan" / f"{attr}.pt", map_location="cpu")  # [1, 512]
    edited = editor.apply(codes, EditSpec(attr, -1.5)).codes
    for b in range(codes.shape[0]):
        for row in range(18):
            assert torch.allclose(edited[b, row], codes[b, row] - 1.5 * d[0], atol=1e-6)


def test_pose_direction_is_per_row(codes, editor) -> None:
    d = torch.load(DIRECTIONS / "interfacegan" / "pose.pt", map_location="cpu")[0]  # [18, 512]
    edited = editor.apply(codes, EditSpec("pose", 2.0)).codes
    assert torch.allclose(edited, codes + 2.0 * d, atol=1e-6)


@pytest.mark.parametrize("attr", sorted(n for n, e in CATALOG.items() if e.family == "ganspace" and e.domain == "ffhq"))
@pytest.mark.parametrize("strength", [1.0, 0.5, -1.0])
def test_ganspace_moves_the_coordinate_to_the_value_on_its_rows(codes, editor, attr, strength) -> None:
    pca = torch.load(DIRECTIONS / "ganspace" / "ffhq_pca.pt", map_location="cpu")
    g = CATALOG[attr].ganspace
    comp = pca["comp"][g.component].reshape(-1).double()
    std = float(pca["std"][g.component])
    mean = pca["mean"].reshape(-1).double()
    edited = editor.apply(codes, EditSpec(attr, strength)).codes
    for b in range(codes.shape[0]):
        w = codes[b].double()
        coord = float(((w[0] - mean) * comp).sum()) / std  # measured on row 0, as published
        expected = w.clone()
        expected[g.start : g.end] += (strength * g.value - coord) * comp * std
        assert torch.allclose(edited[b].double(), expected, atol=1e-4)
        rows = list(range(g.start, g.end))
        others = [r for r in range(18) if r not in rows]
        assert torch.equal(edited[b, others], codes[b, others])
        # on an edited row that started at row 0's coordinate, the coordinate is now the target value
        moved = float(((edited[b, g.start].double() - w[g.start] + w[0] - mean) * comp).sum()) / std
        assert moved == pytest.approx(strength * g.value, abs=1e-3)


def test_custom_direction_files(tmp_path: Path, codes) -> None:
    d = torch.randn(512)
    np.save(tmp_path / "d.npy", d.numpy())
    torch.save(d.view(1, 512), tmp_path / "d1.pt")
    torch.save(d.expand(18, 512).clone(), tmp_path / "d18.pt")
    for name in ("d.npy", "d1.pt", "d18.pt"):
        editor = Editor(None, ModelShape(18))
        edited = editor.apply(codes, EditSpec("custom", 0.7, str(tmp_path / name))).codes
        assert torch.allclose(edited, codes + 0.7 * d, atol=1e-6)


@pytest.mark.parametrize("shape", [(511,), (2, 512), (17, 512), (1, 1, 1, 512)])
def test_bad_direction_shapes_are_rejected(tmp_path: Path, shape) -> None:
    torch.save(torch.zeros(shape), tmp_path / "bad.pt")
    with pytest.raises(EditError, match="bad.pt"):
        load_direction(tmp_path / "bad.pt", 18)


def test_unknown_attribute_and_missing_folder() -> None:
    with pytest.raises(EditError, match="unknown attribute 'grin'"):
        Editor(DIRECTIONS, ModelShape(18)).check(EditSpec("grin", 1.0))
    with pytest.raises(EditError, match="not found"):
        Editor(Path("/nonexistent"), ModelShape(18)).check(EditSpec("smile", 1.0))
