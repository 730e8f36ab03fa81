"""Which precision the model runs in: ``auto`` picks the fastest one whose drift from fp32 is
bounded by a test on that kind of device.

- CUDA GPU: fp16 (measured on an H100: within 0.4 uint8 levels of fp32).
- CPU that computes bf16 natively (x86 AMX-BF16 or AVX512-BF16, read from the CPU's own flags):
  bf16 (``tests/test_precision.py`` bounds its drift; ~2x faster than fp32 on a Xeon with AMX).
- Any other CPU, Apple MPS: fp32. Without native bf16 instructions PyTorch emulates it with
  conversions around fp32 maths, far slower than fp32 itself (on an AMD EPYC Zen 3 with AVX2, a
  full-size generator pass took 28.9 s in bf16 against 1.20 s in fp32, the encoder 7.0 s against
  0.94 s); asked for there, bf16 runs, and its reason says so.

``fp32`` is always the exact reproduction of the published model.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "fp16", "bf16")
CHOICES = ("auto", *PRECISIONS)
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU features that compute bf16 dot products in hardware (Sapphire Rapids and later Xeons,
Zen 4 and later EPYC/Ryzen, Cooper Lake)."""


@lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 features this CPU reports (empty when none, or when it cannot tell).

    PyTorch's own query (``torch.cpu.get_capabilities``, cpuinfo: any OS) where this PyTorch has
    it, else the kernel's flags in /proc/cpuinfo (Linux). Only x86 flags count: bf16 on ARM CPUs
    is not measured here, so those keep fp32."""
    import torch

    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        caps: Any = get_capabilities()
        return tuple(flag for flag in NATIVE_BF16_FLAGS if caps.get(flag) is True)
    return tuple(flag for flag in NATIVE_BF16_FLAGS if flag in kernel_cpu_flags())


def kernel_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first CPU's ``flags`` line of /proc/cpuinfo (Linux x86); empty elsewhere."""
    if platform.system() != "Linux" or not cpuinfo.is_file():
        return set()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def auto_precision(device_type: str) -> tuple[str, str]:
    """(precision, why) for ``--precision auto`` on a device of this type."""
    if device_type == "cuda":
        return "fp16", "auto: fp16 on a CUDA GPU"
    if device_type == "cpu":
        flags = cpu_bf16_flags()
        if flags:
            return "bf16", f"auto: bf16, the CPU computes it natively ({', '.join(flags)})"
        return "fp32", "auto: fp32, the CPU has no native bf16 (no AMX-BF16 or AVX512-BF16)"
    return "fp32", f"auto: fp32 on {device_type}"


def bf16_fp32_blocks(device_type: str) -> tuple[int, ...]:
    """The generator blocks (by resolution) that run in fp32 under bf16 on this device, chosen by
    measurement (one full-size generator pass, bf16 against fp32, same codes and conditions):

    - A CPU with AMX-BF16 (a Xeon): every block in bf16 drifted up to 3 uint8 levels, 99.27 % of
      pixels within one; the 1024 px block in fp32, 3 and 99.68 %; the 512 and 1024 px blocks,
      2 and 99.99 %. The 512 px one alone (64 channels, where bf16 convolutions gain least) keeps
      the whole model within ``tests/test_precision.py``'s bounds; the 1024 px one too made a bf16
      pass ~1.45x as long.
    - A CPU with AVX512-BF16 and no AMX (an AMD EPYC Zen 5): every block in bf16 drifted 2 levels,
      100 % of pixels within one, no more than with the 512 px block in fp32, and a pass took
      0.42-0.45 s instead of 0.50-0.60 s. So none there.
    - Elsewhere (bf16 asked for on a GPU, or emulated): the 512 px block, as on AMX.
    fp16 (CUDA) keeps every block: its 11-bit mantissa drifts ~0.4 levels."""
    from .models.stylegan2 import BF16_FP32_BLOCKS

    if device_type == "cpu":
        flags = cpu_bf16_flags()
        if "avx512_bf16" in flags and "amx_bf16" not in flags:
            return ()
    return BF16_FP32_BLOCKS


def resolve_precision(requested: str, device_type: str) -> tuple[str, str]:
    """(precision, why): ``auto`` resolved for the device, an explicit precision as asked."""
    if requested not in CHOICES:
        raise ValueError(f"--precision must be auto, fp32, fp16 or bf16, not {requested!r}")
    if requested == "auto":
        return auto_precision(device_type)
    if requested == "bf16" and device_type == "cpu" and not cpu_bf16_flags():
        return requested, "asked for; emulated on this CPU (no AMX-BF16 or AVX512-BF16): far slower than fp32"
    return requested, "asked for" + (" (exact)" if requested == "fp32" else "")
