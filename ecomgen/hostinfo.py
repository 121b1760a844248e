"""What machine this is: the CPU model and its ISA flags (standard library only).

Results name the machine they were measured on; the CPU runtime calibration keys its
cache on the CPU model and the flags that change which kernels run.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
from pathlib import Path


@functools.cache
def cpu_model() -> str:
    """``lscpu``'s model name (falls back to /proc/cpuinfo, then the platform module)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


@functools.cache
def cpu_flags() -> frozenset[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_bf16() -> bool:
    """bf16 hardware (AVX512-BF16 or AMX): only then is OpenVINO's bf16 worth trying."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def isa_summary() -> str:
    """The flags that decide which CPU kernels run, e.g. ``avx2 avx512f avx512_bf16 amx_bf16``."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
    return " ".join(f for f in wanted if f in cpu_flags()) or "no AVX2"


def machine_description() -> str:
    """CPU model, ISA and logical CPUs: the line every result file carries."""
    return f"{cpu_model()} ({isa_summary()}), {os.cpu_count()} logical CPUs, {platform.system()}"


def machine_slug() -> str:
    """A file-name-safe key for this CPU model and ISA (the calibration cache key)."""
    return re.sub(r"[^a-z0-9]+", "-", f"{cpu_model()} {isa_summary()}".lower()).strip("-")
