"""StyleGAN2 ops: reference paths vs. naive definitions, the CUDA fallback, and (GPU only) kernels."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.utils.cpp_extension

from hfgi_cli.models import ops

# (in_h, in_w, kh, kw, up, down, (pad_x0, pad_x1, pad_y0, pad_y1))
UPFIRDN_CASES = [
    (5, 6, 4, 4, 1, 1, (1, 1, 1, 1)),  # blur after transposed conv
    (5, 6, 4, 4, 2, 1, (2, 1, 2, 1)),  # ToRGB skip upsample
    (8, 7, 4, 4, 1, 2, (1, 1, 1, 1)),  # blur + downsample
    (5, 6, 3, 5, 3, 2, (2, 0, 1, 3)),  # odd, non-square kernel
    (6, 6, 4, 4, 2, 1, (-1, 2, 0, -2)),  # negative pads crop
    (7, 8, 2, 3, 1, 3, (-2, -1, 3, 0)),
    (4, 4, 8, 8, 4, 1, (4, 3, 4, 3)),  # 8x8 taps, up=4
    (9, 9, 1, 1, 1, 4, (0, 0, 0, 0)),  # pure decimation
]


def naive_upfirdn2d(x: np.ndarray, k: np.ndarray, up: int, down: int, pad: tuple[int, int, int, int]):
    """Explicit loops straight from the definition (float64), independent of the torch path."""
    px0, px1, py0, py1 = pad
    n, c, in_h, in_w = x.shape
    kh, kw = k.shape
    ph, pw = in_h * up + py0 + py1, in_w * up + px0 + px1
    padded = np.zeros((n, c, ph, pw))
    for py in range(ph):
        uy = py - py0  # index in the zero-inserted (upsampled) signal
        if uy < 0 or uy % up or uy // up >= in_h:
            continue
        for px in range(pw):
            ux = px - px0
            if ux < 0 or ux % up or ux // up >= in_w:
                continue
            padded[:, :, py, px] = x[:, :, uy // up, ux // up]
    out_h, out_w = (ph - kh) // down + 1, (pw - kw) // down + 1
    out = np.zeros((n, c, out_h, out_w))
    for oy in range(out_h):
        for ox in range(out_w):
            acc = np.zeros((n, c))
            for i in range(kh):
                for j in range(kw):  # true convolution: flipped kernel
                    acc += padded[:, :, oy * down + i, ox * down + j] * k[kh - 1 - i, kw - 1 - j]
            out[:, :, oy, ox] = acc
    return out


@pytest.mark.parametrize("case", UPFIRDN_CASES, ids=lambda c: f"{c[2]}x{c[3]}-up{c[4]}-down{c[5]}-pad{c[6]}")
def test_upfirdn2d_reference_matches_naive(case):
    in_h, in_w, kh, kw, up, down, pad = case
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, in_h, in_w, generator=gen, dtype=torch.float64)
    k = torch.randn(kh, kw, generator=gen, dtype=torch.float64)
    got = ops.upfirdn2d_reference(x, k, up=up, down=down, pad=pad)
    want = naive_upfirdn2d(x.numpy(), k.numpy(), up, down, pad)
    assert got.shape == want.shape
    px0, px1, py0, py1 = pad
    assert got.shape[2] == (in_h * up + py0 + py1 - kh) // down + 1
    assert got.shape[3] == (in_w * up + px0 + px1 - kw) // down + 1
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", UPFIRDN_CASES, ids=lambda c: f"{c[2]}x{c[3]}-up{c[4]}-down{c[5]}-pad{c[6]}")
def test_upfirdn2d_depthwise_matches_naive(case, channels_last):
    """The CPU fast path (grouped conv / transposed conv) is the same function as the definition."""
    in_h, in_w, kh, kw, up, down, pad = case
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, in_h, in_w, generator=gen, dtype=torch.float64)
    k = torch.randn(kh, kw, generator=gen, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    got = ops.upfirdn2d_depthwise(x, k, up=up, down=down, pad=pad)
    want = naive_upfirdn2d(x.numpy(), k.numpy(), up, down, pad)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


def test_upfirdn2d_cpu_blur_equals_published_path_exactly():
    """Without upsampling the depthwise form adds the same terms in the same order: bit-identical."""
    x = torch.randn(1, 8, 33, 33)
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = (k[None] * k[:, None]) / 16
    assert torch.equal(ops.upfirdn2d(x, k, pad=(1, 1)), ops.upfirdn2d_reference(x, k, pad=(1, 1)))


def test_upfirdn2d_two_element_pad_means_same_on_both_axes():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    k = torch.rand(4, 4, dtype=torch.float64)
    torch.testing.assert_close(
        ops.upfirdn2d_reference(x, k, up=2, pad=(2, 1)), ops.upfirdn2d_reference(x, k, up=2, pad=(2, 1, 2, 1))
    )


@pytest.mark.parametrize("shape", [(4, 8), (2, 5, 3, 3), (1, 3, 2, 2, 2)])
def test_fused_leaky_relu_reference_formula(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    b = torch.randn(shape[1], dtype=torch.float64)
    slope, scale = 0.2, math.sqrt(2.0)
    xb = x.numpy() + b.numpy().reshape(1, -1, *([1] * (len(shape) - 2)))
    want = np.where(xb > 0, xb, xb * slope) * scale
    np.testing.assert_allclose(ops.fused_leaky_relu_reference(x, b, slope, scale).numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(
        ops.fused_leaky_relu_reference(x, None, 0.1, 2.0).numpy(),
        np.where(x.numpy() > 0, x.numpy(), x.numpy() * 0.1) * 2.0,
        rtol=1e-12,
    )


def test_public_functions_on_cpu_use_reference_without_building(monkeypatch):
    monkeypatch.setattr(ops, "_cuda_state", "untried")
    monkeypatch.setattr(torch.utils.cpp_extension, "load", _must_not_build)
    x = torch.randn(2, 3, 6, 6)
    k = torch.rand(4, 4)
    b = torch.randn(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        want = ops.upfirdn2d_reference(x, k, 2, 1, (2, 1))
        for impl in ("ref", "depthwise", "cuda"):  # "cuda" on a CPU tensor: the plain path, nothing built
            torch.testing.assert_close(ops.upfirdn2d(x, k, up=2, pad=(2, 1), impl=impl), want)
        torch.testing.assert_close(ops.fused_leaky_relu(x, b, impl="cuda"), ops.fused_leaky_relu_reference(x, b))
    assert ops.cuda_ops_status() == "untried"


# --- fallback when the CUDA build fails -------------------------------------------------------


class _FakeCuda(torch.Tensor):
    """A CPU tensor that claims to live on CUDA, so the public functions try the CUDA path."""

    @property
    def is_cuda(self) -> bool:  # type: ignore[override]
        return True


def _must_not_build(*args, **kwargs):
    raise AssertionError("the CUDA extension should not be built here")


def _failing_load(*args, **kwargs):
    _failing_load.calls += 1
    raise RuntimeError("Error building extension 'hfgi_stylegan2_ops'\nnvcc: not found")


@pytest.fixture
def failing_build(monkeypatch):
    monkeypatch.setattr(ops, "_cuda_state", "untried")
    monkeypatch.setattr(ops, "_cuda_module", None)
    _failing_load.calls = 0
    monkeypatch.setattr(torch.utils.cpp_extension, "load", _failing_load)
    return _failing_load


@torch.no_grad()
def test_build_failure_falls_back_and_warns_once(failing_build):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 5, generator=gen)
    k = torch.rand(4, 4, generator=gen)
    b = torch.randn(3, generator=gen)
    fx = x.as_subclass(_FakeCuda)
    assert fx.is_cuda

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        up = ops.upfirdn2d(fx, k, up=2, pad=(2, 1), impl="cuda")
        blur = ops.upfirdn2d(fx, k, pad=(1, 1), impl="cuda")
        act = ops.fused_leaky_relu(fx, b, impl="cuda")
        act2 = ops.fused_leaky_relu(fx, b, 0.1, 1.0, impl="cuda")

    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1, [str(w.message) for w in caught]
    assert "could not build the CUDA ops" in str(runtime[0].message)
    assert "Error building extension" in str(runtime[0].message)
    assert failing_build.calls == 1  # no rebuild attempt after the first failure
    assert ops.cuda_ops_status() == "failed"

    torch.testing.assert_close(up.as_subclass(torch.Tensor), ops.upfirdn2d_reference(x, k, 2, 1, (2, 1)))
    torch.testing.assert_close(blur.as_subclass(torch.Tensor), ops.upfirdn2d_reference(x, k, 1, 1, (1, 1)))
    torch.testing.assert_close(act.as_subclass(torch.Tensor), ops.fused_leaky_relu_reference(x, b))
    torch.testing.assert_close(act2.as_subclass(torch.Tensor), ops.fused_leaky_relu_reference(x, b, 0.1, 1.0))


@torch.no_grad()
@pytest.mark.parametrize("impl", ["ref", "depthwise"])
def test_plain_impls_never_build_even_on_cuda_tensors(failing_build, impl):
    x = torch.randn(1, 2, 4, 4).as_subclass(_FakeCuda)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ops.upfirdn2d(x, torch.rand(4, 4), pad=(1, 1), impl=impl)
        ops.modulated_leaky_relu(torch.randn(1, 2, 4, 4).as_subclass(_FakeCuda), None, None, torch.zeros(2))
    assert out.shape == (1, 2, 3, 3)
    assert failing_build.calls == 0
    assert ops.cuda_ops_status() == "untried"


def test_unknown_impl_is_refused():
    with pytest.raises(ValueError, match="impl must be one of"):
        ops.upfirdn2d(torch.zeros(1, 1, 4, 4), torch.ones(2, 2), impl="fast")


def test_autograd_keeps_reference_path(failing_build):
    # Grad needed: never touch the (backward-less) CUDA kernels, so no build attempt, no warning.
    x = torch.randn(1, 2, 4, 4, requires_grad=True).as_subclass(_FakeCuda)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.fused_leaky_relu(x, torch.zeros(2), impl="cuda").sum().backward()
    assert failing_build.calls == 0


# --- CUDA kernels vs. reference (runs only on a GPU machine) ---------------------------------

GPU_UPFIRDN_CASES = [
    # (N, C, H, W, kh, kw, up, down, pad)
    (2, 5, 4, 4, 4, 4, 2, 1, (2, 1, 2, 1)),
    (2, 5, 37, 70, 4, 4, 2, 1, (2, 1, 2, 1)),  # tiled path, ragged tiles
    (2, 5, 33, 65, 4, 4, 1, 1, (1, 1, 1, 1)),
    (2, 5, 64, 64, 4, 4, 1, 2, (1, 1, 1, 1)),
    (2, 5, 64, 64, 4, 4, 1, 2, (2, 2, 2, 2)),
    (2, 5, 17, 19, 4, 4, 2, 1, (-1, 3, 2, -2)),  # tiled path with negative pads
    (1, 3, 20, 23, 3, 5, 3, 2, (2, 0, 1, 3)),  # generic path
    (1, 3, 16, 16, 8, 8, 4, 1, (4, 3, 4, 3)),
    (1, 3, 31, 29, 6, 6, 2, 4, (-3, 2, 1, -1)),
    (1, 3, 13, 13, 1, 1, 1, 3, (0, 0, 0, 0)),
    (1, 2, 9, 9, 7, 2, 4, 3, (5, 4, 0, 6)),
]
TOLS = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-2, 1e-2), torch.bfloat16: (8e-2, 2e-2)}


def _loaded_cuda_ops():
    mod = ops._cuda_ops()
    if mod is None:
        pytest.fail(f"CUDA ops did not build (state={ops.cuda_ops_status()}); see the RuntimeWarning")
    return mod


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", list(TOLS), ids=str)
@pytest.mark.parametrize("case", GPU_UPFIRDN_CASES, ids=lambda c: "{2}x{3}-k{4}x{5}-u{6}d{7}".format(*c))
def test_cuda_upfirdn2d_matches_reference(case, dtype):
    cuda_ops = _loaded_cuda_ops()
    n, c, h, w, kh, kw, up, down, pad = case
    gen = torch.Generator(device="cuda").manual_seed(2)
    x = torch.randn(n, c, h, w, device="cuda", generator=gen).to(dtype)
    k = torch.rand(kh, kw, device="cuda", generator=gen).to(dtype)
    want = ops.upfirdn2d_reference(x.double(), k.double(), up, down, pad)  # fp64: no TF32 in the truth
    got = cuda_ops.upfirdn2d(x, k, up, up, down, down, *pad)
    assert got.dtype == dtype and got.shape == want.shape
    atol, rtol = TOLS[dtype]
    torch.testing.assert_close(got.double(), want, atol=atol * k.double().abs().sum().item(), rtol=rtol)
    with torch.no_grad():  # and through the public dispatch
        torch.testing.assert_close(ops.upfirdn2d(x, k, up, down, pad, impl="cuda"), got, atol=0, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", list(TOLS), ids=str)
@pytest.mark.parametrize("shape", [(8, 512), (3, 7), (2, 5, 9, 11), (1, 3, 2, 2, 2), (0, 4)])
def test_cuda_fused_bias_act_matches_reference(shape, dtype):
    cuda_ops = _loaded_cuda_ops()
    x = torch.randn(*shape, device="cuda").to(dtype)
    b = torch.randn(shape[1], device="cuda").to(dtype)
    for slope, scale in [(0.2, math.sqrt(2.0)), (0.0, 1.0), (1.0, 0.5)]:
        want = ops.fused_leaky_relu_reference(x.double(), b.double(), slope, scale)
        got = cuda_ops.fused_bias_act(x, b, slope, scale)
        assert got.dtype == dtype and got.shape == x.shape
        atol, rtol = TOLS[dtype]
        torch.testing.assert_close(got.double(), want, atol=atol, rtol=rtol)
    with torch.no_grad():
        want = cuda_ops.fused_bias_act(x, b, 0.2, math.sqrt(2.0))
        torch.testing.assert_close(ops.fused_leaky_relu(x, b, impl="cuda"), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_ops_reject_bad_inputs():
    cuda_ops = _loaded_cuda_ops()
    x = torch.randn(1, 2, 4, 4, device="cuda")
    with pytest.raises(RuntimeError, match="kernel dtype"):
        cuda_ops.upfirdn2d(x, torch.ones(2, 2, device="cuda", dtype=torch.float16), 1, 1, 1, 1, 0, 0, 0, 0)
    with pytest.raises(RuntimeError, match="contiguous"):
        cuda_ops.upfirdn2d(x.transpose(2, 3), torch.ones(2, 2, device="cuda"), 1, 1, 1, 1, 0, 0, 0, 0)
    with pytest.raises(RuntimeError, match="smaller than the kernel"):
        cuda_ops.upfirdn2d(x, torch.ones(8, 8, device="cuda"), 1, 1, 1, 1, 0, 0, 0, 0)
    with pytest.raises(RuntimeError, match="bias must be"):
        cuda_ops.fused_bias_act(x, torch.zeros(3, device="cuda"), 0.2, 1.0)
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        cuda_ops.fused_bias_act(x.cpu(), torch.zeros(2), 0.2, 1.0)


def _modulated_tail_unfused(x, demod, noise, bias):
    out = x if demod is None else x * demod.view(*x.shape[:2], 1, 1).to(x.dtype)
    out = out if noise is None else out + noise.to(x.dtype)
    return ops.fused_leaky_relu_reference(out, bias)


@pytest.mark.parametrize("with_demod", [True, False])
@pytest.mark.parametrize("with_noise", [True, False])
def test_modulated_leaky_relu_cpu_in_place_equals_unfused(with_demod, with_noise):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 6, 7, generator=g)
    demod = torch.rand(2, 5, generator=g) + 0.5 if with_demod else None
    noise = torch.randn(1, 1, 6, 7, generator=g) * 0.3 if with_noise else None
    bias = torch.randn(5, generator=g)
    want = _modulated_tail_unfused(x, demod, noise, bias)
    with torch.inference_mode():
        got = ops.modulated_leaky_relu(x.clone(), demod, noise, bias)
    assert torch.equal(got, want)  # same operations in the same order, only in place


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 512, 4, 4), (3, 64, 65, 33), (2, 32, 256, 256)])
def test_cuda_modulated_act_matches_reference(dtype, shape):
    _loaded_cuda_ops()
    g = torch.Generator(device="cuda").manual_seed(5)
    x = torch.randn(shape, device="cuda", generator=g)
    demod = torch.rand(shape[:2], device="cuda", generator=g) + 0.5
    noise = torch.randn(1, 1, *shape[2:], device="cuda", generator=g) * 0.3
    bias = torch.randn(shape[1], device="cuda", generator=g)
    want = _modulated_tail_unfused(x.double(), demod.double(), noise.double(), bias.double())
    with torch.inference_mode():
        # the op works in place: give each call its own copy (x.to(float32) would alias x)
        got = ops.modulated_leaky_relu(x.to(dtype, copy=True), demod, noise, bias, impl="cuda")
        got_plain = ops.modulated_leaky_relu(x.to(dtype, copy=True), None, None, bias, impl="cuda")
    atol, rtol = TOLS[dtype]
    torch.testing.assert_close(got.double(), want, atol=atol * 4, rtol=rtol)
    torch.testing.assert_close(got_plain.double(), ops.fused_leaky_relu_reference(x.double(), bias.double()),
                               atol=atol * 4, rtol=rtol)
