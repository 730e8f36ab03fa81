"""The machine a benchmark ran on, printed beside its figures (speeds mean something only next to
the CPU that gave them: compare them as ratios measured in one run)."""

from __future__ import annotations

import os
import platform
import subprocess


def _lscpu() -> dict[str, str]:
    """lscpu's fields (empty where there is no lscpu)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def cpu_name() -> str:
    """lscpu's model name, with its family and model numbers (a bare "AMD EPYC" names no generation)."""
    fields = _lscpu()
    if "Model name" not in fields:
        return platform.processor() or platform.machine() or "unknown CPU"
    numbers = ", ".join(f"{key.lower()} {fields[key]}" for key in ("CPU family", "Model") if key in fields)
    return f"{fields['Model name']} ({numbers})" if numbers else fields["Model name"]


def cpu_description() -> str:
    """The CPU's name, cores, bf16/AMX features and every flag (what bench_cpu's figures depend on)."""
    flags = _lscpu().get("Flags", "").split()
    bf16 = [f for f in flags if "bf16" in f or f.startswith("amx")]
    return (f"CPU: {cpu_name()}, {os.cpu_count()} cores; bf16/AMX flags: {' '.join(bf16) or 'none'}\n"
            f"flags: {' '.join(flags) or '(no lscpu)'}")
