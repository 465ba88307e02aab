"""llama.cpp's own llama-server for the remote tests: where the binary is, and a server on loopback.

The binary comes from `.ci/build-llama-server` (run by `.ci/install-test-deps`), which builds it
from the llama.cpp sources vendored in the installed llama-cpp-python and keeps it in
${LOOM_CI_CACHE:-~/.cache/loom-ci}/llama-server-<version>/bin/. $LOOM_LLAMA_SERVER names another
binary. `llama_server_binary()` is the one place the tests look for it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loom.engine.runtime import weight_repacking

SLOTS = 8
KEY = "loom-test-key-llama-server"


def llama_server_binary() -> Path:
    """The llama-server binary the tests run; fails the test, saying how to get it, if absent."""
    named = os.environ.get("LOOM_LLAMA_SERVER")
    if named:
        path = Path(named)
    else:
        version = importlib.metadata.version("llama-cpp-python")
        cache = Path(os.environ.get("LOOM_CI_CACHE") or Path.home() / ".cache" / "loom-ci")
        path = cache / f"llama-server-{version}" / "bin" / "llama-server"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"no llama-server binary at {path}: run .ci/build-llama-server (or "
                    ".ci/install-test-deps), or set LOOM_LLAMA_SERVER")  # fmt: skip
    return path


@dataclass
class LlamaServer:
    url: str
    key: str
    log: Path
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM killer would (no goodbye on open streams)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=15)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def _ready(url: str, key: str) -> bool:
    req = urllib.request.Request(url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return bool(json.loads(resp.read()).get("data"))
    except (OSError, ValueError, urllib.error.URLError):
        return False


def start_llama_server(
    model: Path, port: int, log: Path, *, slots: int = SLOTS, ctx_per_slot: int = 1024
) -> LlamaServer:
    """llama-server on 127.0.0.1:`port` with `slots` parallel slots and an API key, ready."""
    cmd = [
        str(llama_server_binary()), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
        "--parallel", str(slots), "--ctx-size", str(slots * ctx_per_slot), "--threads", "2",
        "--cont-batching", "--api-key", KEY,
    ]  # fmt: skip
    if not weight_repacking().allowed:
        cmd.append("--no-repack")  # AMX CPUs crash with repacked weights (loom.engine.cpu)
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    server = LlamaServer(url, KEY, log, proc)
    deadline = time.monotonic() + 90
    while not _ready(url, KEY):
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-800:]
            pytest.fail(f"llama-server exited with {proc.returncode}: {tail}")
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail("llama-server did not become ready in 90 s")
        time.sleep(0.2)
    return server


def serve(model: Path, port: int, log: Path, **kwargs: int) -> Iterator[LlamaServer]:
    server = start_llama_server(model, port, log, **kwargs)
    try:
        yield server
    finally:
        server.stop()
