"""What this CPU and this llama.cpp build can do, and whether weights may be repacked.

llama.cpp "repacks" quantized weights at load time into layouts for the CPU's widest matrix
instructions. On CPUs with AMX (Intel Sapphire Rapids and later) a native build repacks Q4_K
weights for AMX, and its AMX matmul crashes the process with SIGSEGV (llama.cpp issue #20824,
unfixed upstream). Loading with `use_extra_bufts = False` skips repacking altogether: measured on
such a machine, no crash and at most 4 % slower. Everywhere else repacking stays on.

The guard is decided at run time rather than by build flags (`-mno-amx-*`) because those flags exist
only on x86 compilers, and pip reuses a cached wheel built without them whatever CMAKE_ARGS say.
`LOOM_WEIGHT_REPACK=on|off` overrides the decision (for measuring, or a future fixed llama.cpp).
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

REPACK_ENV = "LOOM_WEIGHT_REPACK"
# The instruction-set flags worth reporting (Linux /proc/cpuinfo names).
REPORTED_FLAGS = (
    "sse3",
    "ssse3",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "neon",
    "asimd",
    "sve",
)
AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16"})


@dataclass(frozen=True)
class CpuInfo:
    model: str
    cores: int
    flags: frozenset[str]

    @property
    def has_amx(self) -> bool:
        return bool(self.flags & AMX_FLAGS)

    @property
    def reported_flags(self) -> list[str]:
        return [f for f in REPORTED_FLAGS if f in self.flags]


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """The CPU's name, core count and feature flags (flags only where the OS lists them)."""
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return CpuInfo(model=model, cores=os.cpu_count() or 1, flags=frozenset(flags))


def parse_system_info(text: str) -> dict[str, str]:
    """llama_print_system_info()'s "CPU : SSE3 = 1 | AVX2 = 1 | ..." as {"SSE3": "1", ...}."""
    out: dict[str, str] = {}
    for key, value in re.findall(r"([A-Za-z0-9_]+)\s*=\s*([^|\s]+)", text):
        out[key] = value
    return out


@dataclass(frozen=True)
class RepackDecision:
    allowed: bool
    reason: str


def repack_decision(cpu: CpuInfo, build: dict[str, str], env: str | None = None) -> RepackDecision:
    """Whether to let llama.cpp repack weights (`use_extra_bufts`), and why."""
    choice = (env if env is not None else os.environ.get(REPACK_ENV, "")).strip().lower()
    if choice in ("on", "1", "yes", "true"):
        return RepackDecision(True, f"on ({REPACK_ENV}={choice})")
    if choice in ("off", "0", "no", "false"):
        return RepackDecision(False, f"off ({REPACK_ENV}={choice})")
    build_amx = any(k.startswith("AMX") and v != "0" for k, v in build.items())
    if cpu.has_amx or build_amx:
        where = "this CPU has AMX" if cpu.has_amx else "this llama.cpp build uses AMX"
        return RepackDecision(
            False,
            f"off: {where}, and llama.cpp's AMX repacking crashes (llama.cpp #20824); "
            "weights are used as stored (at most ~4 % slower)",
        )
    return RepackDecision(True, "on (no AMX: repacked weights are safe and faster)")
