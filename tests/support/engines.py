"""Shared fixtures for the engine and remote tests: the real default model loaded once per session,
a tiny GGUF writer for crafting good and bad files, and a local llama_cpp.server on loopback.

Import the fixtures into a test module with `from engine_fixtures import ...` (pytest picks
them up from the module namespace).
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loom.engine.engine import Engine
from loom.engine.models import default_model_path

SERVER_KEY = "loom-test-key"
SERVER_LAUNCHER = Path(__file__).with_name("serve_llama_cpp.py")

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
        U64: "<Q", I64: "<q", F64: "<d"}  # fmt: skip


def _gguf_string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _gguf_value(vtype: int, value: Any) -> bytes:
    if vtype == STRING:
        return _gguf_string(value)
    if vtype == ARRAY:
        elem_type, items = value
        out = struct.pack("<IQ", elem_type, len(items))
        return out + b"".join(_gguf_value(elem_type, v) for v in items)
    return struct.pack(_FMT[vtype], value)


def write_gguf(
    path: Path,
    metadata: dict[str, tuple[int, Any]],
    tensors: list[tuple[str, tuple[int, ...], int, bytes]] = (),  # type: ignore[assignment]
    *,
    magic: bytes = b"GGUF",
    version: int = 3,
) -> Path:
    """A minimal GGUF v3 file: metadata (key -> (type, value)) and tensors given as raw bytes."""
    body = bytearray()
    body += magic + struct.pack("<IQQ", version, len(tensors), len(metadata))
    for key, (vtype, value) in metadata.items():
        body += _gguf_string(key) + struct.pack("<I", vtype) + _gguf_value(vtype, value)
    offset = 0
    blobs = []
    for name, shape, ggml_type, data in tensors:
        body += _gguf_string(name) + struct.pack("<I", len(shape))
        body += b"".join(struct.pack("<Q", d) for d in shape)
        body += struct.pack("<IQ", ggml_type, offset)
        blobs.append(data)
        offset += -(-len(data) // 32) * 32
    body += b"\0" * (-len(body) % 32)
    for data in blobs:
        body += data + b"\0" * (-len(data) % 32)
    path.write_bytes(bytes(body))
    return path


@pytest.fixture(scope="session")
def default_gguf() -> Path:
    """The real default model, assembled into the user cache once."""
    return default_model_path()


@pytest.fixture(scope="session")
def engine(default_gguf: Path) -> Iterator[Engine]:
    eng = Engine.load(default_gguf, n_ctx=2048, n_seq_max=16)
    yield eng
    eng.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalServer:
    url: str
    key: str
    log: Path


def _ready(url: str, key: str) -> bool:
    req = urllib.request.Request(url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return bool(json.loads(resp.read()).get("data"))
    except (OSError, ValueError, urllib.error.URLError):
        return False


@pytest.fixture(scope="session")
def llama_server(
    default_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServer]:
    """llama-cpp-python's server (through the AMX-guarding launcher beside this file) on a free
    loopback port with an API key; killed at the end."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    pytest.importorskip("sse_starlette")
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    cmd = [
        sys.executable, str(SERVER_LAUNCHER), "--model", str(default_gguf),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512", "--n_batch", "256",
        "--n_threads", "2", "--n_threads_batch", "2", "--flash_attn", "true",
        "--api_key", SERVER_KEY,
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not _ready(url, SERVER_KEY):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-800:]
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not become ready in 90 s")
            time.sleep(0.3)
        yield LocalServer(url, SERVER_KEY, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def llama_cpp_server(default_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """llama.cpp's own llama-server (tests/support/llama_server.py) with 8 parallel slots and an
    API key on a free loopback port; killed at the end."""
    from support.llama_server import serve

    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    yield from serve(default_gguf, free_port(), log)
