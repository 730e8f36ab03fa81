"""The edit catalogue: names, the families' arithmetic against independent transcriptions of the
published formulas, StyleSpace offsets in the generator, --detail, combined edits, bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hfgi_cli.edits import CATALOG, Combined, EditError, Editor, EditSpec, ModelShape, as_edit_specs, text_spec
from hfgi_cli.models.hfgi import HFGI, SMALL_CONFIG, make_random_checkpoint

from .conftest import DIRECTIONS, REFERENCE, run_cli


@pytest.fixture(scope="module")
def codes() -> torch.Tensor:
    return torch.randn(3, 18, 512, generator=torch.Generator().manual_seed(11))


@pytest.fixture(scope="module")
def editor() -> Editor:
    return Editor(DIRECTIONS, ModelShape(18))


# ------------------------------------------------------------------------------ the catalogue
def test_list_attrs_json_lists_more_than_sixty_edits_with_their_files(tmp_path: Path) -> None:
    res = run_cli("edit", "--list-attrs", "--json", "--directions", str(DIRECTIONS))
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    named = [r for r in rows if r["family"] != "styleclip"]
    assert len(named) >= 60 and len({r["name"] for r in named}) == len(named)
    assert {r["family"] for r in rows} == {"interfacegan", "ganspace", "stit", "gradctrl", "styleclip"}
    for row in named:  # every file a named edit reads is in the shared folder of official files
        assert row["present"], row["name"]
    text = next(r for r in rows if r["family"] == "styleclip")
    assert not text["present"]  # fs3.npy and CLIP's weights are not to be had here
    # the same listing, with an empty folder: nothing is present; and the table form
    empty = run_cli("edit", "--directions", str(tmp_path), "--json", "--list-attrs")
    assert not any(json.loads(line)["present"] for line in empty.stdout.splitlines())
    table = run_cli("edit", "--list-attrs")
    assert table.returncode == 0 and "eyeglasses" in table.stdout and "gradctrl" in table.stdout


def test_ganspace_rows_are_the_authors_named_edits() -> None:
    """Every named edit of ../shared/reference/ganspace_named_edits.tsv is in the catalogue with its
    component, rows and value (under this tool's name where it had one first)."""
    renamed = {"eye_openness": "eyes", "lipstick": "lip", "smile": "ganspace_smile"}
    with open(REFERENCE / "ganspace_named_edits.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == 46
    for row in rows:
        entry = CATALOG[renamed.get(row["name"], row["name"])]
        g = entry.ganspace
        assert entry.family == "ganspace" and entry.domain == row["domain"]
        assert (g.component, g.start, g.end, g.value) == (
            int(row["component"]), int(row["first_layer"]), int(row["end_layer"]), float(row["strength"]))


@pytest.mark.parametrize("name", ["gender", "mouth_open", "yaw", "stit_age", "nose_ratio"])
def test_stit_directions_add_strength_times_row_zero(codes, editor, name) -> None:
    d = np.load(DIRECTIONS / "stit" / f"{name.removeprefix('stit_')}.npy")
    edited = editor.apply(codes, EditSpec(name, 1.5)).codes.double()
    expected = codes.double() + 1.5 * torch.from_numpy(d[0])[None, None, :]
    assert torch.allclose(edited, expected, atol=1e-5)


def test_unknown_names_suggest_the_nearest(tmp_path: Path) -> None:
    res = run_cli("edit", str(tmp_path), "-o", str(tmp_path / "o"), "--attr", "eyeglases",
                  "--checkpoint", str(tmp_path / "absent.pt"))
    assert res.returncode == 2
    assert "unknown attribute 'eyeglases'; did you mean: eyeglasses" in res.stderr
    assert "checkpoint" not in res.stderr  # refused before the model is looked for
    with pytest.raises(EditError, match="did you mean: lip"):
        Editor(DIRECTIONS, ModelShape(18)).check(EditSpec("lipstick", 1.0))


# ------------------------------------------------------------------------------ GradCtrl
def _published_gradctrl(w0: torch.Tensor, attribute: str, strength: float) -> torch.Tensor:
    """GradCtrl's manipulate.py, transcribed independently: nn.Modules per head, one image at a
    time, 9 steps of (masked, normalised gradient) x strength x 4/9, added to the attribute's rows."""
    params = pickle.loads((DIRECTIONS / "gradctrl" / "model_ffhq_params.pkl").read_bytes())
    names = params["attributes"].split(",")
    state = torch.load(DIRECTIONS / "gradctrl" / "model_ffhq.pth", map_location="cpu", weights_only=True)
    heads = {}
    for i, name in enumerate(names):
        head = nn.Sequential(nn.Linear(512, 16), nn.LeakyReLU(0.1), nn.Linear(16, 1))
        head.load_state_dict({k.split(".", 3)[3]: v for k, v in state.items() if k.startswith(f"classifiers.{i}.")})
        heads[name] = head
    table = {"gender": ([("smile", 250), ("eyeglasses", 100), ("age", 100)], (2, 10)),
             "smile": ([("gender", 200), ("eyeglasses", 50), ("age", 100)], (2, 8)),
             "eyeglasses": ([("gender", 200), ("smile", 100), ("age", 250)], (1, 4)),
             "age": ([("gender", 100), ("eyeglasses", 300)], (4, 10))}
    excluded, (lo, hi) = table[attribute]
    out = []
    for image in w0:
        w = image[0].clone().double()
        for _ in range(9):
            grads = {}
            for name in [attribute] + [e for e, _ in excluded]:
                x = w.float().clone().requires_grad_(True)
                torch.sigmoid(heads[name].to(torch.float32)(x[None]))[0, 0].backward()
                grads[name] = x.grad.double()
            g = grads[attribute].clone()
            for name, top in excluded:
                g[np.argsort(grads[name].abs().numpy())[-top:]] = 0
            w = w + strength * 4 / 9 * g / g.norm()
        edited = image.clone().double()
        edited[lo:hi] += w - image[0].double()
        out.append(edited)
    return torch.stack(out)


@pytest.mark.parametrize(("name", "attribute", "strength"),
                         [("eyeglasses", "eyeglasses", 1.0), ("gradctrl_age", "age", -0.5),
                          ("gradctrl_gender", "gender", 1.0)])
def test_gradctrl_matches_an_independent_transcription(codes, editor, name, attribute, strength) -> None:
    edited = editor.apply(codes, EditSpec(name, strength)).codes
    expected = _published_gradctrl(codes, attribute, strength)
    assert (edited.double() - expected).abs().max() < 1e-4
    lo, hi = {"eyeglasses": (1, 4), "age": (4, 10), "gender": (2, 10)}[attribute]
    outside = [r for r in range(18) if not lo <= r < hi]
    assert torch.equal(edited[:, outside], codes[:, outside]) and not torch.equal(edited[:, lo:hi], codes[:, lo:hi])


def test_gradctrl_moves_its_classifier_and_per_row_strengths(codes, editor) -> None:
    from hfgi_cli.edits.gradctrl import load_classifiers

    heads = load_classifiers(DIRECTIONS / "gradctrl" / "model_ffhq.pth",
                             DIRECTIONS / "gradctrl" / "model_ffhq_params.pkl")
    before = heads.probability("eyeglasses", codes[:, 1])
    up = editor.apply(codes, EditSpec("eyeglasses", 1.0)).codes
    down = editor.apply(codes, EditSpec("eyeglasses", -1.0)).codes
    assert (heads.probability("eyeglasses", up[:, 1]) > before).all()
    assert (heads.probability("eyeglasses", down[:, 1]) < before).all()
    rows = editor.apply(codes, [EditSpec("eyeglasses", s) for s in (1.0, -1.0, 1.0)]).codes
    assert torch.allclose(rows[[0, 2]], up[[0, 2]], atol=1e-6) and torch.allclose(rows[1], down[1], atol=1e-6)


# ------------------------------------------------------------------------------ StyleCLIP
class HashEncoder:
    """A stand-in for CLIP's text tower: a seeded random embedding per text."""

    def embed(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            rows.append(torch.randn(512, generator=torch.Generator().manual_seed(seed)) * 3 + 1)
        return torch.stack(rows)


@pytest.fixture(scope="module")
def full_layout() -> tuple[tuple[int, bool], ...]:
    with torch.device("meta"):
        return HFGI().style_layout()


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official S_mean_std and templates, with a seeded fs3.npy of the official shape and an
    (unused) CLIP weights file: what `hfgi weights download styleclip` adds."""
    root = tmp_path_factory.mktemp("styleclip")
    (root / "styleclip").mkdir()
    for name in ("S_mean_std", "templates.txt"):
        (root / "styleclip" / name).write_bytes((DIRECTIONS / "styleclip" / name).read_bytes())
    fs3 = np.random.default_rng(3).standard_normal((6048, 512)).astype(np.float32)
    np.save(root / "styleclip" / "fs3.npy", fs3 / np.linalg.norm(fs3, axis=1, keepdims=True))
    (root / "styleclip" / "ViT-B-32.pt").write_bytes(b"stand-in")
    return root


def _published_styleclip(folder: Path, text: str, neutral: str, beta: float) -> list[np.ndarray]:
    """StyleCLIP global_torch's GetDt, GetBoundary and SplitS, transcribed independently (numpy)."""
    templates = (folder / "styleclip" / "templates.txt").read_text().splitlines()
    assert len(templates) == 79
    encoder = HashEncoder()

    def class_embedding(name: str) -> np.ndarray:
        e = encoder.embed([t.format(name) for t in templates]).numpy().astype(np.float64)
        e /= np.linalg.norm(e, axis=-1, keepdims=True)
        m = e.mean(axis=0)
        return m / np.linalg.norm(m)

    dt = class_embedding(text) - class_embedding(neutral)
    dt /= np.linalg.norm(dt)
    fs3 = np.load(folder / "styleclip" / "fs3.npy").astype(np.float64)
    boundary = fs3 @ dt
    boundary[np.abs(boundary) < beta] = 0
    boundary /= np.abs(boundary).max()
    stds = pickle.loads((folder / "styleclip" / "S_mean_std").read_bytes(), encoding="latin1")[1]
    torgb = set(range(1, 26, 3))
    out, start = [], 0
    for i, std in enumerate(stds):
        if i in torgb:
            out.append(np.zeros_like(std, dtype=np.float64))
            continue
        out.append(boundary[start:start + std.size] * std)
        start += std.size
    assert start == 6048
    return out


@pytest.mark.parametrize("beta", [0.05, 0.12])
def test_text_direction_matches_an_independent_transcription(clip_folder, full_layout, codes, beta) -> None:
    editor = Editor(clip_folder, ModelShape(18, 512, "ffhq", full_layout), text_encoder=HashEncoder())
    spec = text_spec("face with curly hair", 4.0, neutral="face with hair", beta=beta)
    edited = editor.apply(codes, spec)
    assert torch.equal(edited.codes, codes)  # a text edit moves StyleSpace, not W+
    expected = _published_styleclip(clip_folder, "face with curly hair", "face with hair", beta)
    assert len(edited.offsets) == 26
    for layer, (offset, want) in enumerate(zip(edited.offsets, expected)):
        if offset is None:
            assert not want.any(), layer
            continue
        assert offset.shape == (3, want.size)
        assert np.allclose(offset[0].double().numpy(), 4.0 * want, atol=1e-4), layer
    moved = sum(int((o[0] != 0).sum()) for o in edited.offsets if o is not None)
    kept = int((np.abs(np.concatenate(expected)) > 0).sum())
    assert moved == kept > 0


def test_text_edit_refusals(clip_folder, full_layout, tmp_path: Path) -> None:
    editor = Editor(clip_folder, ModelShape(18, 512, "ffhq", full_layout), text_encoder=HashEncoder())
    with pytest.raises(EditError, match="lower --beta"):
        editor.check(text_spec("face with curly hair", 3.0, beta=0.99))
    with pytest.raises(EditError, match="--text is empty"):
        text_spec("  ", 3.0)
    for beta in (0.0, 1.0, 1.5):
        with pytest.raises(EditError, match="--beta must be within"):
            text_spec("a face", 3.0, beta=beta)
    small = Editor(clip_folder, ModelShape(10, 64, "ffhq", ((64, False),) * 3), text_encoder=HashEncoder())
    with pytest.raises(EditError, match="fs3.npy: shape"):
        small.check(text_spec("a face", 3.0))
    with pytest.raises(EditError, match="hfgi weights download styleclip"):
        Editor(tmp_path, ModelShape(18, 512, "ffhq", full_layout)).check(text_spec("a face", 3.0))


# ------------------------------------------------------------------------------ the generator
@pytest.fixture(scope="module")
def small_net() -> HFGI:
    net = HFGI(SMALL_CONFIG)
    net.load_published_state(make_random_checkpoint(None, SMALL_CONFIG, seed=4))
    return net.eval()


def _affine_without_bias(net: HFGI, d: torch.Tensor) -> list[torch.Tensor]:
    """A(d) per style layer: each layer's affine map applied to its W+ row of d, without the bias
    (s0 <- row 0, s1 <- row 1, then per resolution k: rows 2k-1, 2k, 2k+1)."""
    rows = [0, 1]
    for k in range(1, len(net.decoder.to_rgbs) + 1):
        rows += [2 * k - 1, 2 * k, 2 * k + 1]
    return [torch.nn.functional.linear(d[:, r], conv.modulation.weight * conv.modulation.scale)
            for conv, r in zip(net.decoder.style_layers(), rows)]


def test_style_offsets_zero_is_the_w_path_and_affine_offsets_are_the_w_edit(small_net: HFGI) -> None:
    g = torch.Generator().manual_seed(5)
    n, dim = small_net.n_latent, SMALL_CONFIG.style_dim
    w = torch.randn(1, n, dim, generator=g)
    d = torch.randn(1, n, dim, generator=g)
    distortion = 0.1 * torch.randn(1, 3, 256, 256, generator=g)
    with torch.inference_mode():
        plain = small_net.decode(w, distortion)
        zeros = [torch.zeros(1, c) for c, _ in small_net.style_layout()]
        assert torch.equal(small_net.decode(w, distortion, style_offsets=zeros), plain)
        assert torch.equal(small_net.decode(w, distortion, style_offsets=[None] * len(zeros)), plain)
        moved = small_net.decode(w + d, distortion)
        offset = small_net.decode(w, distortion, style_offsets=_affine_without_bias(small_net, d))
    assert (moved - offset).abs().max() < 1e-4 and (moved - plain).abs().max() > 0.05


def test_detail_one_is_published_zero_is_plain_e4e(small_net: HFGI) -> None:
    g = torch.Generator().manual_seed(6)
    w = torch.randn(1, small_net.n_latent, SMALL_CONFIG.style_dim, generator=g)
    distortion = 0.2 * torch.randn(1, 3, 256, 256, generator=g)
    with torch.inference_mode():
        published = small_net.decode(w, distortion)
        assert torch.equal(small_net.decode(w, distortion, detail=1.0), published)
        e4e = small_net.synthesize(w)
        assert torch.equal(small_net.decode(w, distortion, detail=0.0), e4e)
        half = small_net.decode(w, distortion, detail=0.5)
    assert (half - published).abs().max() > 1e-3 and (half - e4e).abs().max() > 1e-3


# ------------------------------------------------------------------------------ specs
def test_combined_edits_and_labels(codes, editor) -> None:
    (combined,) = as_edit_specs({"age": 2, "gender": -1, "bald": 0.5}, combine=True)
    assert isinstance(combined, Combined) and combined.label == "age+2_gender-1_bald+0.5"
    together = editor.apply(codes, combined).codes
    one_by_one = codes
    for name, s in (("age", 2.0), ("gender", -1.0), ("bald", 0.5)):
        one_by_one = editor.apply(one_by_one, EditSpec(name, s)).codes
    assert torch.equal(together, one_by_one)
    (detailed,) = as_edit_specs({"smile": 1}, detail=0.5)
    assert detailed.label == "smile+1_detail0.5"
    with pytest.raises(EditError, match="--detail"):
        as_edit_specs({"smile": 1}, detail=1.5)
    assert text_spec("Face with CURLY hair!", 3).label == "face-with-curly-hair+3"


def test_readme_lists_every_edit() -> None:
    from .conftest import REPO

    readme = (REPO / "README.md").read_text()
    missing = [name for name in CATALOG if f"| `{name}` |" not in readme]
    assert not missing, f"README's edit table lacks {missing}"
