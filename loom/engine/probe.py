"""Try a model in a child process first, so a native crash becomes a message, not a dead terminal.

llama.cpp can kill the process outright (SIGSEGV in a CPU kernel: see loom.engine.cpu). Python
cannot catch that, so before the first in-process load of a model with a given llama.cpp build on a
given CPU, a child process (`python -m loom.engine.trial MODEL`) loads it and decodes one token.
If the child dies by a signal or hangs, loading stops with an `EngineCrashError` naming the signal
and pointing to `loom doctor`. A probe that passed is remembered in the cache (keyed by the
library, the model file, the CPU flags and the repacking choice), so it runs once, not every time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loom.engine.errors import DOCTOR_HINT, EngineCrashError
from loom.paths import cache_dir

PROBE_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    summary: str  # one line for a person
    crashed: bool = False  # killed by a signal or timed out: the in-process engine would die too
    load_seconds: float | None = None
    decode_seconds: float | None = None
    token: str | None = None
    repacked: bool | None = None  # whether llama.cpp repacked the weights in the child


def probe_command(model: Path) -> list[str]:
    return [sys.executable, "-m", "loom.engine.trial", str(model)]


def run_probe(
    model: Path, *, command: Sequence[str] | None = None, timeout: float = PROBE_TIMEOUT_S
) -> ProbeResult:
    """Load `model` and decode one token in a child process; what happened, in one line."""
    argv = list(command) if command is not None else probe_command(model)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return ProbeResult(
            False,
            f"loading {model.name} and decoding one token did not finish in {timeout:.0f} s",
            crashed=True,
        )
    except OSError as exc:
        return ProbeResult(False, f"cannot start the check process: {exc}")
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return ProbeResult(
            False,
            f"llama.cpp crashed ({name}) loading {model.name} and decoding one token on this CPU",
            crashed=True,
        )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {done.returncode}"
        return ProbeResult(False, why.removeprefix("loom: error: "))
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return ProbeResult(False, "the check process printed no result")
    repacked = bool(report.get("repacked"))
    return ProbeResult(
        True,
        f"ok: loaded in {report['load_s']:.2f} s, decoded one token in {report['decode_s']:.3f} s, "
        f"weights {'repacked' if repacked else 'used as stored'}",
        load_seconds=float(report["load_s"]),
        decode_seconds=float(report["decode_s"]),
        token=str(report["token"]),
        repacked=repacked,
    )


# --- remembering probes that passed -----------------------------------------------------------


def _checks_file() -> Path:
    return cache_dir() / "engine-checks.json"


def probe_key(model: Path) -> str:
    """What a passed probe vouches for: this library build, this model file, this CPU, this
    repacking choice. Any change makes the probe run again."""
    import llama_cpp

    from loom.engine.cpu import REPACK_ENV, cpu_info

    lib_dir = Path(llama_cpp.__file__).parent
    libs = sorted(lib_dir.rglob("libllama*")) + sorted(lib_dir.rglob("libggml*"))
    parts = [str(getattr(llama_cpp, "__version__", ""))]
    for lib in libs:
        with contextlib.suppress(OSError):
            st = lib.stat()
            parts.append(f"{lib.name}:{st.st_size}:{st.st_mtime_ns}")
    st = model.resolve().stat()
    parts += [str(model.resolve()), str(st.st_size), str(st.st_mtime_ns)]
    parts += sorted(cpu_info().flags)
    parts.append(os.environ.get(REPACK_ENV, ""))
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def _passed() -> set[str]:
    try:
        data = json.loads(_checks_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {str(k) for k in data} if isinstance(data, list) else set()


def record_pass(model: Path) -> None:
    """Remember that `model` ran here (after a probe that passed)."""
    _remember(probe_key(model))


def _remember(key: str) -> None:
    keys = sorted(_passed() | {key})[-64:]
    path = _checks_file()
    with contextlib.suppress(OSError):  # a cache: failing to write it only costs a re-check
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(keys), encoding="utf-8")
        os.replace(tmp, path)


def ensure_model_runs(model: Path) -> None:
    """Raise `EngineCrashError` if loading `model` would crash this process (checked once)."""
    key = probe_key(model)
    if key in _passed():
        return
    result = run_probe(model)
    if result.crashed:
        raise EngineCrashError(f"{result.summary} {DOCTOR_HINT}")
    if result.ok:
        _remember(key)
    # An ordinary failure (bad file, no memory…) is left to the in-process load, which raises
    # the same error with its own message.
