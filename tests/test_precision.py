"""Precision: what ``auto`` picks, where the choice is recorded, and how far bf16 drifts from fp32.

The drift bound is what makes bf16 the default on CPUs that compute it natively: on the shared
faces, with the full-size parity checkpoint, bf16 outputs stay within a few uint8 levels of fp32
(the exact reproduction) and almost every pixel within one.
"""

from __future__ import annotations

import json
import platform
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hfgi_cli import precision
from hfgi_cli.engine import INVERSION, load_model
from hfgi_cli.models.stylegan2 import Form, Generator

from .conftest import DIRECTIONS, FACES, run_cli

NATIVE_BF16 = precision.cpu_bf16_flags()
W_MAX, W_MEAN = 0.02, 0.002
"""bf16's W+ against fp32's: largest and mean absolute difference (measured 0.004 and 0.0005 on a
Xeon with AMX; W+ entries are of order 1)."""


def test_auto_picks_by_device_and_cpu_features(monkeypatch: pytest.MonkeyPatch) -> None:
    assert precision.resolve_precision("auto", "cuda")[0] == "fp16"
    assert precision.resolve_precision("auto", "mps")[0] == "fp32"
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("amx_bf16",))
    chosen, why = precision.resolve_precision("auto", "cpu")
    assert chosen == "bf16" and "amx_bf16" in why
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    chosen, why = precision.resolve_precision("auto", "cpu")
    assert chosen == "fp32" and "no native bf16" in why
    chosen, why = precision.resolve_precision("bf16", "cpu")  # runs as asked, and says what it costs
    assert chosen == "bf16" and "emulated on this CPU" in why
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    assert precision.resolve_precision("bf16", "cpu") == ("bf16", "asked for")
    with pytest.raises(ValueError, match="--precision must be auto"):
        precision.resolve_precision("fp64", "cpu")


def test_blocks_kept_in_fp32_under_bf16_follow_the_hardware(monkeypatch: pytest.MonkeyPatch, small_ckpt: Path) -> None:
    """AMX-BF16 drifts more than AVX512-BF16 alone: the 512 px block stays fp32 there only; the
    model loaded for bf16 computes in the form that says so."""
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    assert precision.bf16_fp32_blocks("cpu") == ()
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("amx_bf16", "avx512_bf16"))
    assert precision.bf16_fp32_blocks("cpu") == (512,)
    assert precision.bf16_fp32_blocks("cuda") == (512,)
    model = load_model(small_ckpt, device="cpu", precision="bf16", resident=False)
    assert model.net.form.bf16_fp32_blocks == (512,)


def test_blocks_named_fp32_run_in_fp32_under_bf16() -> None:
    """The form's bf16_fp32_blocks is what the generator reads: under bf16 autocast the named
    blocks' convolutions compute in fp32, the others in bf16."""
    torch.manual_seed(0)
    gen = Generator(size=64, channel_multiplier=1, channel_max=64).eval()
    latent = torch.randn(1, gen.n_latent, 512)
    seen: dict[int, torch.dtype] = {}
    for index, conv in enumerate(gen.convs):
        res = 2 ** (index // 2 + 3)
        conv.register_forward_hook(lambda module, args, out, res=res: seen.__setitem__(res, out.dtype))
    cpu = Form.for_device("cpu")
    for fp32_blocks in ((), (16, 64)):
        seen.clear()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            image = gen(latent, form=replace(cpu, bf16_fp32_blocks=fp32_blocks))
        assert image.dtype == torch.float32  # the to-RGB sum is fp32 in every block
        assert seen == {res: torch.float32 if res in fp32_blocks else torch.bfloat16 for res in (8, 16, 32, 64)}


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"),
                    reason="/proc/cpuinfo flags are read on x86 Linux only")
def test_detection_agrees_with_the_kernels_cpu_flags() -> None:
    kernel = precision.kernel_cpu_flags()
    assert kernel, "no flags line in /proc/cpuinfo"
    assert set(NATIVE_BF16) == {f for f in precision.NATIVE_BF16_FLAGS if f in kernel}


def test_latent_files_and_json_record_the_precision(small_ckpt: Path, tmp_path: Path) -> None:
    expected = precision.resolve_precision("auto", "cpu")[0]
    for asked, used in (("fp32", "fp32"), ("auto", expected)):
        out = tmp_path / asked
        result = run_cli("invert", str(FACES / "00044.jpg"), "-o", str(out), "--checkpoint", str(small_ckpt),
                         "--aligned", "--device", "cpu", "--precision", asked, "--json", "--quiet")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["precision"] == used
        assert torch.load(out / "00044.pt", weights_only=True)["precision"] == used


@pytest.mark.slow
@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16 (AMX-BF16 or AVX512-BF16): auto keeps "
                    "fp32 here, and emulated bf16 is slower than fp32")
def test_bf16_drift_from_fp32_is_bounded(seed0_ckpt: Path) -> None:
    """bf16 (what auto picks here) against fp32 on two shared faces: the inversion and an edit.
    Measured on a Xeon with AMX (the 512 px block in fp32): at most 3 levels, mean 0.21-0.25,
    99.64-99.91 % of pixels within one level (every layer in bf16: 4 levels, 97.3 %); on an AMD
    EPYC Zen 5 with AVX512-BF16 (every block in bf16): 2 levels, mean 0.14-0.17, 99.99-100 %.
    See precision.bf16_fp32_blocks and models.stylegan2's ToRGB for the parts kept in fp32."""
    faces = sorted(FACES.glob("*.jpg"))[:2]
    runs = {}
    for name in ("fp32", "bf16"):
        model = load_model(seed0_ckpt, device="cpu", precision=name, directions=DIRECTIONS)
        slots = [None, *model.edit_specs({"smile": 2})]
        runs[name] = []
        for face in faces:
            work = model.prepare(face, aligned=True)
            model.forward(work.faces, slots)
            runs[name].append(model.finish(work, slots, paste=False).faces[0])
    for face, exact, fast in zip(faces, runs["fp32"], runs["bf16"]):
        assert fast.precision == "bf16" and exact.precision == "fp32"
        latent = (fast.latent - exact.latent).abs()
        assert latent.max() < W_MAX and latent.mean() < W_MEAN, f"{face.name}: W+ {latent.max():.4f}"
        for label in (INVERSION, "smile+2"):
            diff = np.abs(np.asarray(fast.crops[label], np.int16) - np.asarray(exact.crops[label], np.int16))
            within = (diff <= 1).all(axis=-1).mean()
            assert diff.max() <= 3 and diff.mean() < 0.3 and within >= 0.995, (
                f"{face.name} {label}: max {diff.max()}, mean {diff.mean():.3f}, {within:.5f} within one level")


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_conv_weights_held_as_read_give_the_same_outputs(small_ckpt: Path, small_directions: Path,
                                                          name: str) -> None:
    """The background thread holds the encoders' conv weights NHWC (the CPU form's activations) and,
    under bf16, in bf16 (autocast would convert them at every call): the outputs stay bit for bit
    those of converting at every call."""
    model = load_model(small_ckpt, device="cpu", precision=name, directions=small_directions, resident=False)
    slots = [None, *model.edit_specs({"smile": 2})]

    def run() -> tuple[torch.Tensor, list[np.ndarray]]:
        work = model.prepare(FACES / "00044.jpg", aligned=True)
        model.forward(work.faces, slots)
        face = model.finish(work, slots, paste=False).faces[0]
        return face.latent, [np.asarray(face.crops[label]) for label in (INVERSION, "smile+2")]

    convs = [m for m in model.net.encoder.modules() if type(m) is torch.nn.Conv2d]
    assert convs and all(m.weight.dtype == torch.float32 for m in convs)
    latent, crops = run()
    model.net.hold_conv_weights(torch.bfloat16 if name == "bf16" else None)
    dtype = torch.bfloat16 if name == "bf16" else torch.float32
    assert all(m.weight.dtype == dtype and m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    held_latent, held_crops = run()
    assert torch.equal(latent, held_latent)
    assert all(np.array_equal(a, b) for a, b in zip(crops, held_crops))
