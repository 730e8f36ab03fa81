"""The networks and checkpoint loading: strict load of the published format, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hfgi_cli.models.hfgi import (
    HFGI,
    SMALL_CONFIG,
    CheckpointError,
    ModelConfig,
    make_random_checkpoint,
    read_checkpoint,
)
from hfgi_cli.models.stylegan2 import PUBLISHED_FORM, Form, Generator, ModulatedConv2d

from .conftest import REFERENCE, run_cli


def _published_keys() -> dict[str, tuple[int, ...]]:
    keys = {}
    lines = (REFERENCE / "hfgi_ffhq_checkpoint_keys.tsv").read_text().splitlines()[1:]
    for line in lines:
        key, shape, _ = line.split("\t")
        keys[key] = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
    return keys


def test_model_has_exactly_the_published_keys_and_shapes() -> None:
    with torch.device("meta"):
        model = HFGI(ModelConfig())
    ours = {("state_dict." + k if k != "latent_avg" else k): tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == _published_keys()


@pytest.mark.slow
def test_full_size_random_checkpoint_loads_strictly(tmp_path: Path) -> None:
    path = tmp_path / "full.pt"
    ckpt = make_random_checkpoint(path, ModelConfig(), seed=3)
    model = HFGI.from_checkpoint(path)
    path.unlink()  # 1.2 GB: not left in pytest's kept temp folders
    assert model.config == ModelConfig()
    sd = model.state_dict()
    for key in ("encoder.styles.17.linear.weight", "decoder.noises.noise_16", "residue.condition_shift3.2.bias",
                "grid_align.dconv_layer3.2.res_layer.4.running_var", "decoder.to_rgbs.7.upsample.kernel"):
        assert torch.equal(sd[key], ckpt["state_dict"][key]), key
    assert torch.equal(model.latent_avg, ckpt["latent_avg"])


@pytest.mark.parametrize("shape", [(64,), (1, 64), (10, 64), (18, 64)])
def test_latent_avg_shapes_broadcast(tmp_path: Path, shape: tuple[int, ...]) -> None:
    ckpt = make_random_checkpoint(None, SMALL_CONFIG, seed=2)
    row = torch.randn(64)
    ckpt["latent_avg"] = row.expand(*shape).clone() if len(shape) > 1 else row.clone()
    torch.save(ckpt, tmp_path / "c.pt")
    model = HFGI.from_checkpoint(tmp_path / "c.pt")
    assert model.latent_avg.shape == (SMALL_CONFIG.n_latent, 64)
    assert torch.equal(model.latent_avg, row.expand(SMALL_CONFIG.n_latent, 64))


def test_cars_domain_crops_output_rows(tmp_path: Path) -> None:
    cars = ModelConfig(**{**SMALL_CONFIG.__dict__, "domain": "cars"})
    make_random_checkpoint(tmp_path / "cars.pt", cars, seed=4)
    model = HFGI.from_checkpoint(tmp_path / "cars.pt")
    assert model.config.domain == "cars" and model.n_latent == 10
    with torch.inference_mode():
        enc = model.encode(torch.zeros(1, 3, 256, 256))
        out = model.decode(enc["latent"], enc["distortion"])
    assert out.shape == (1, 3, 48, 64)  # rows 8:56 of 64, as 64:448 of 512


def test_wrong_keys_are_named(tmp_path: Path) -> None:
    ckpt = make_random_checkpoint(None, SMALL_CONFIG, seed=2)
    del ckpt["state_dict"]["residue.conv_layer1.0.weight"]
    ckpt["state_dict"]["decoder.extra.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        HFGI.from_checkpoint(tmp_path / "bad.pt")
    assert "missing 1 keys: residue.conv_layer1.0.weight" in str(err.value)
    assert "unexpected 1 keys: decoder.extra.weight" in str(err.value)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        HFGI.from_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("name", ["missing.pt", "text.pt"])
def test_cli_bad_checkpoint_exits_2_without_traceback(tmp_path: Path, name: str) -> None:
    (tmp_path / "text.pt").write_text("hello")
    (tmp_path / "in").mkdir()
    result = run_cli("invert", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--checkpoint",
                     str(tmp_path / name), "--aligned")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert name in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_shared_weight_modulation_equals_grouped_convolution() -> None:
    torch.manual_seed(0)
    for upsample, demod in [(False, True), (True, True), (False, False)]:
        conv = ModulatedConv2d(16, 8, 3 if demod else 1, 32, demodulate=demod, upsample=upsample)
        x, style = torch.randn(3, 16, 8, 8), torch.randn(3, 32)
        shared = conv(x, style, Form(modulation="shared"))
        grouped = conv(x, style, Form(modulation="grouped"))
        assert torch.allclose(shared, grouped, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_modulated_conv_on_channels_last_activations(kernel_size: int) -> None:
    """NHWC input (the CPU form; 1x1 convs become a batched matmul) computes the same function."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(16, 8, kernel_size, 32, demodulate=kernel_size == 3)
    x, style = torch.randn(2, 16, 8, 8), torch.randn(2, 32)
    want = conv(x, style)
    for modulation in ("shared", "grouped"):
        got = conv(x.contiguous(memory_format=torch.channels_last), style, Form(modulation=modulation))
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("batch", [1, 3])
def test_generator_device_forms_equal_the_published_form(batch: int) -> None:
    """Form.for_device("cpu") (per-sample weights, NHWC, depthwise upfirdn2d, in-place tail) and
    for_device("cuda") (shared weight, NCHW; plain ops off the GPU) compute the published
    generator's function, conditions included."""
    torch.manual_seed(0)
    gen = Generator(size=128, channel_multiplier=1, channel_max=64, condition_res=64).eval()
    with torch.no_grad():  # non-zero noise strengths and biases, so the fused tail is exercised
        for param_name, param in gen.named_parameters():
            if param_name.endswith(("noise.weight", "activate.bias")) or param_name.endswith("rgbs.0.bias"):
                param.normal_(0, 0.2)
    latent = torch.randn(batch, gen.n_latent, 512)
    conditions = (torch.randn(batch, 64, 64, 64) * 0.1, torch.randn(batch, 64, 64, 64) * 0.1)
    with torch.inference_mode():
        published = gen(latent, conditions, form=PUBLISHED_FORM)
        for device_type in ("cpu", "cuda", "mps"):
            got = gen(latent, conditions, form=Form.for_device(device_type))
            torch.testing.assert_close(got, published, atol=2e-5, rtol=1e-4)


def test_form_is_a_value_not_module_state(small_ckpt: Path) -> None:
    """with_form shares the weights and changes only how they are computed."""
    model = HFGI.from_checkpoint(small_ckpt)
    assert model.form == Form.for_device("cpu")
    published = model.with_form(PUBLISHED_FORM)
    assert published.form == PUBLISHED_FORM and model.form == Form.for_device("cpu")
    assert published.decoder is model.decoder
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    with torch.inference_mode():
        a, b = model.encode(x), published.encode(x)
    torch.testing.assert_close(a["latent"], b["latent"])
    torch.testing.assert_close(a["low_res"], b["low_res"], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="unknown generator form"):
        Form(modulation="per-pixel")


def test_batch_size_does_not_change_results(small_ckpt: Path) -> None:
    model = HFGI.from_checkpoint(small_ckpt)
    x = torch.rand(4, 3, 256, 256) * 2 - 1
    with torch.inference_mode():
        enc = model.encode(x)
        together = model.decode(enc["latent"], enc["distortion"], enc["low_res"])
        alone = []
        for i in range(4):
            e = model.encode(x[i : i + 1])
            alone.append(model.decode(e["latent"], e["distortion"], e["low_res"]))
    assert (together - torch.cat(alone)).abs().max() < 1e-4


def test_mapped_weights_made_resident_keep_their_values_and_the_file(small_ckpt: Path) -> None:
    before = small_ckpt.read_bytes()
    model = HFGI.from_checkpoint(small_ckpt)  # memory-mapped
    model.make_resident()  # one write per page: the private mapping's pages become process memory
    state = torch.load(small_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    ours = model.state_dict()
    for key, value in state.items():
        assert torch.equal(ours[key], value), key
    assert small_ckpt.read_bytes() == before


def test_building_for_loading_does_not_import_the_compiler() -> None:
    """The meta-device build of the model (every load) must not pull in torch._dynamo (~1.5 s)."""
    code = ("import sys, torch\nfrom hfgi_cli.models.hfgi import HFGI, ModelConfig\n"
            "with torch.device('meta'):\n    HFGI(ModelConfig())\n"
            "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
