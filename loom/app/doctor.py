"""`loom doctor`: what this machine, this llama.cpp build and this model are, and whether they work.

Every check is a `Finding`; the last one loads the model and decodes one token in a child
process (loom.engine.probe), so that a native crash in llama.cpp is reported here as a finding
instead of killing the terminal. UI-free: the CLI prints `Finding.line()`.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from loom import __version__
from loom.paths import cache_dir, config_path, data_dir, model_dirs


@dataclass(frozen=True)
class Finding:
    topic: str
    detail: str
    ok: bool = True

    def line(self) -> str:
        mark = "ok " if self.ok else "BAD"
        return f"{mark} {self.topic:<16} {self.detail}"


def _software() -> list[Finding]:
    import llama_cpp

    lib = Path(llama_cpp.__file__).parent
    return [
        Finding("loom", f"{__version__} on Python {platform.python_version()} ({sys.executable})"),
        Finding("llama-cpp-python", f"{getattr(llama_cpp, '__version__', '?')} in {lib}"),
    ]


def _machine() -> tuple[list[Finding], bool]:
    from loom.engine.cpu import cpu_info, repack_decision
    from loom.engine.runtime import system_info

    cpu = cpu_info()
    build = system_info()
    built = " ".join(k for k, v in build.items() if v == "1") or "nothing reported"
    flags = " ".join(cpu.reported_flags) or "not listed by this OS"
    amx = "yes" if cpu.has_amx else "no"
    decision = repack_decision(cpu, build)
    return [
        Finding("cpu", f"{cpu.model}, {cpu.cores} cores, {platform.machine()}; AMX: {amx}"),
        Finding("cpu flags", flags),
        Finding("llama.cpp build", built),
        Finding("weight repacking", decision.reason),
    ], decision.allowed


def _model(spec: str | None) -> tuple[list[Finding], Path | None]:
    from loom.engine.errors import EngineError
    from loom.engine.models import inspect_model, resolve_model

    try:
        path = resolve_model(spec)
        info = inspect_model(path)
    except EngineError as exc:
        return [Finding("model", str(exc), ok=False)], None
    size = f"{info.size_bytes / 1e6:.0f} MB"
    desc = f"{info.name} ({info.architecture}, {info.quantization or '?'}, {size}, "
    desc += f"{info.looks_like}, context {info.n_ctx_train})"
    return [
        Finding("model", f"{desc} at {info.path}"),
        Finding("model sha256", info.sha256),
    ], info.path


def _paths() -> list[Finding]:
    from loom.config import ConfigError, load_config

    config = config_path()
    try:
        load_config(config)
        config_state = "exists" if config.exists() else "not written yet: the defaults apply"
        config_finding = Finding("config", f"{config} ({config_state})")
    except ConfigError as exc:
        config_finding = Finding("config", str(exc), ok=False)
    found = []
    for folder in model_dirs():
        n = len(list(folder.rglob("*.gguf"))) if folder.is_dir() else 0
        found.append(f"{folder} ({n} GGUF)" if folder.is_dir() else f"{folder} (absent)")
    return [
        config_finding,
        Finding("cache", str(cache_dir())),
        Finding("data", str(data_dir())),
        Finding("models dirs", "; ".join(found)),
    ]


def diagnose(model: str | None = None) -> list[Finding]:
    """Every finding, the child-process decode last (it takes a few seconds)."""
    from loom.engine.probe import record_pass, run_probe

    findings = _software()
    machine, repack_allowed = _machine()
    findings += machine
    model_findings, model_path = _model(model)
    findings += model_findings
    findings += _paths()
    if model_path is not None:
        probe = run_probe(model_path)
        if probe.ok:
            record_pass(model_path)
        findings.append(Finding("decode check", f"{probe.summary} (in a child process)", probe.ok))
        if probe.repacked and not repack_allowed:
            findings.append(
                Finding("weight repacking", "weights were repacked despite the guard", ok=False)
            )
    return findings
