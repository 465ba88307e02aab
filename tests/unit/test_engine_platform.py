"""Running on every CPU: the AMX guard, the child-process check before loading, `loom doctor`,
and the test server launched with the same guard."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support.engines import SERVER_LAUNCHER, default_gguf, free_port

from loom.engine import probe
from loom.engine.cpu import CpuInfo, cpu_info, parse_system_info, repack_decision
from loom.engine.engine import Engine
from loom.engine.errors import EngineCrashError

__all__ = ["default_gguf"]

LOOM = str(Path(sys.executable).with_name("loom"))
AVX512_AMX = frozenset({"avx2", "avx512f", "amx_tile", "amx_int8", "amx_bf16"})
AVX2 = frozenset({"avx", "avx2", "fma", "f16c"})


def _cpu(flags: frozenset[str]) -> CpuInfo:
    return CpuInfo("test cpu", 2, flags)


# --- deciding ---------------------------------------------------------------------------------


def test_amx_cpus_load_weights_as_stored_and_others_repack() -> None:
    assert not repack_decision(_cpu(AVX512_AMX), {}, env="").allowed
    assert "llama.cpp #20824" in repack_decision(_cpu(AVX512_AMX), {}, env="").reason
    assert repack_decision(_cpu(AVX2), {"AVX2": "1", "REPACK": "1"}, env="").allowed
    # a wheel built with AMX kernels copied to another machine: still guarded
    assert not repack_decision(_cpu(AVX2), {"AMX_INT8": "1"}, env="").allowed
    assert repack_decision(_cpu(AVX2), {"AMX_INT8": "0"}, env="").allowed


def test_the_environment_overrides_the_decision() -> None:
    assert repack_decision(_cpu(AVX512_AMX), {}, env="on").allowed
    assert not repack_decision(_cpu(AVX2), {}, env="off").allowed
    assert repack_decision(_cpu(AVX2), {}, env="nonsense").allowed  # unknown: automatic


def test_cpu_flags_and_build_info_are_read(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\n"
        "flags\t\t: fpu avx avx2 avx512f amx_bf16 amx_tile amx_int8\n\n"
        "processor\t: 1\nflags\t\t: fpu\n"
    )
    info = cpu_info(cpuinfo)
    assert info.model == "Intel(R) Xeon(R) Platinum 8488C" and info.has_amx
    assert info.reported_flags == ["avx", "avx2", "avx512f", "amx_tile", "amx_int8", "amx_bf16"]
    assert not cpu_info(tmp_path / "missing").has_amx
    built = parse_system_info("CPU : SSE3 = 1 | AVX2 = 1 | AMX_INT8 = 1 | REPACK = 1 | ")
    assert built == {"SSE3": "1", "AVX2": "1", "AMX_INT8": "1", "REPACK": "1"}


# --- the child-process check ------------------------------------------------------------------


def test_a_crashing_child_is_reported_in_one_line(tmp_path: Path) -> None:
    segv = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    result = probe.run_probe(tmp_path / "m.gguf", command=segv)
    assert result.crashed and not result.ok
    assert "SIGSEGV" in result.summary and "m.gguf" in result.summary
    hung = probe.run_probe(
        tmp_path / "m.gguf", command=[sys.executable, "-c", "import time; time.sleep(30)"],
        timeout=1,
    )  # fmt: skip
    assert hung.crashed and "did not finish in 1 s" in hung.summary
    failed = probe.run_probe(
        tmp_path / "m.gguf",
        command=[sys.executable, "-c", "import sys; sys.exit('loom: error: no memory')"],
    )
    assert not failed.ok and not failed.crashed and failed.summary == "no memory"


@pytest.mark.model
def test_the_real_probe_decodes_one_token(default_gguf: Path) -> None:
    result = probe.run_probe(default_gguf)
    assert result.ok, result.summary
    assert result.token and result.load_seconds is not None and result.load_seconds > 0


def test_a_model_that_would_crash_is_refused_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_gguf: Path
) -> None:
    monkeypatch.setenv("LOOM_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[Path] = []

    def crashed(model: Path) -> probe.ProbeResult:
        calls.append(model)
        return probe.ProbeResult(False, "llama.cpp crashed (SIGSEGV) loading m.gguf", crashed=True)

    monkeypatch.setattr(probe, "run_probe", crashed)
    with pytest.raises(EngineCrashError, match=r"SIGSEGV.*loom doctor"):
        Engine.load(default_gguf)
    with pytest.raises(EngineCrashError):  # a crash is never remembered as a pass
        Engine.load(default_gguf)
    assert len(calls) == 2


def test_a_passed_check_is_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_gguf: Path
) -> None:
    monkeypatch.setenv("LOOM_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[Path] = []

    def passed(model: Path) -> probe.ProbeResult:
        calls.append(model)
        return probe.ProbeResult(True, "ok")

    monkeypatch.setattr(probe, "run_probe", passed)
    probe.ensure_model_runs(default_gguf)
    probe.ensure_model_runs(default_gguf)
    assert len(calls) == 1
    monkeypatch.setenv("LOOM_WEIGHT_REPACK", "off")  # another choice: checked again
    probe.ensure_model_runs(default_gguf)
    assert len(calls) == 2


# --- loom doctor ------------------------------------------------------------------------------


def _doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LOOM, "doctor", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.model
def test_doctor_reports_the_machine_the_build_the_model_and_a_decode(
    tmp_path: Path, default_gguf: Path
) -> None:
    from loom.engine.hashing import sha256_of

    done = _doctor(env={"LOOM_CONFIG": str(tmp_path / "config.toml")})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    topics = "llama-cpp-python|cpu |cpu flags|llama.cpp build|weight repacking|model |model sha256"
    topics += "|config|cache|models dirs|decode check"
    for topic in topics.split("|"):
        assert topic in out, topic
    assert sha256_of(default_gguf) in out
    assert "AMX: yes" in out if cpu_info().has_amx else "AMX: no" in out
    decode = next(line for line in out.splitlines() if "decode check" in line)
    assert decode.startswith("ok ") and "decoded one token" in decode
    assert out.rstrip().endswith("everything checked works")
    assert done.stderr == ""


@pytest.mark.model
def test_doctor_says_which_path_it_took(tmp_path: Path) -> None:
    done = _doctor(env={"LOOM_WEIGHT_REPACK": "off", "LOOM_CONFIG": str(tmp_path / "c.toml")})
    assert done.returncode == 0, done.stderr
    assert "off (LOOM_WEIGHT_REPACK=off)" in done.stdout
    assert "weights used as stored" in done.stdout  # measured in the child, from llama.cpp's log


def test_doctor_fails_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    done = _doctor("--model", str(bad), env={"LOOM_CONFIG": str(tmp_path / "c.toml")})
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("loom: error: doctor found 1 problem(s); first, model:")
    assert "BAD model" in done.stdout

    config = tmp_path / "broken.toml"
    config.write_text("theme = [unclosed")
    done = _doctor("--model", str(bad), env={"LOOM_CONFIG": str(config)})
    assert done.returncode == 1 and "BAD config" in done.stdout


# --- the guard in the test server -------------------------------------------------------------


def _serve(model: Path, repack: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [sys.executable, str(SERVER_LAUNCHER), "--model", str(model), "--host", "127.0.0.1",
            "--port", str(port), "--n_ctx", "256", "--n_threads", "2"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LOOM_WEIGHT_REPACK": repack},
        )
    return proc, f"http://127.0.0.1:{port}"


@pytest.mark.model
def test_the_test_server_loads_without_repacking_when_guarded(
    tmp_path: Path, default_gguf: Path
) -> None:
    logs = {}
    for repack in ("off", "on"):
        log = tmp_path / f"server-{repack}.log"
        proc, url = _serve(default_gguf, repack, log)
        try:
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, log.read_text(errors="replace")[-800:]
                try:
                    with urllib.request.urlopen(url + "/v1/models", timeout=2) as resp:
                        assert resp.status == 200
                        break
                except OSError:
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        logs[repack] = log.read_text(errors="replace")
    assert "CPU_REPACK model buffer" not in logs["off"]
    if platform.machine() in ("x86_64", "AMD64"):  # llama.cpp repacks this model's Q4_K there
        assert "CPU_REPACK model buffer" in logs["on"]
