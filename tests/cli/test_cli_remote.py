"""`--remote URL` as a user runs it: `loom` subprocesses against llama.cpp's own llama-server
(8 parallel slots, started from the binary .ci/build-llama-server builds) and small fake servers
for what a real one does not do on demand (a malformed stream). Every failure is one line, exits
non-zero and writes nothing; the API key appears in no loom, export or message; a server killed in
the middle of a generation leaves the branches that arrived, one error, and a sound loom."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.cli import LOOM, PROMPT, cli_env, failed, ids_of, ok, run_loom, snapshot
from support.engines import default_gguf, free_port, llama_cpp_server
from support.llama_server import LlamaServer, start_llama_server

from loom.store.loom import Loom

__all__ = ["default_gguf", "llama_cpp_server"]

pytestmark = pytest.mark.model
EXPORTS = ("loom-json", "openloom", "socketteer", "markdown", "dot", "html")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path / "home")


@pytest.fixture
def work(tmp_path: Path, env: dict[str, str]) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    ok(run_loom("new", "s.loom", "--prompt", PROMPT, cwd=folder, env=env))
    return folder


def test_generate_on_llama_server_records_the_server_and_never_the_key(
    work: Path, env: dict[str, str], llama_cpp_server: LlamaServer
) -> None:
    keyed = dict(env, LOOM_API_KEY=llama_cpp_server.key)
    new = ids_of(ok(run_loom("generate", "s.loom", "-n", "4", "--max-tokens", "6", "--seed", "3",
                             "--remote", llama_cpp_server.url, cwd=work, env=keyed)))  # fmt: skip
    assert len(new) == 4
    # the key may also ride in the URL (user:KEY@host): it is used, and dropped from the record
    host = llama_cpp_server.url.removeprefix("http://")
    ok(run_loom("generate", "s.loom", "-n", "1", "--max-tokens", "2", "--remote",
                f"http://loom:{llama_cpp_server.key}@{host}/v1", cwd=work, env=env))  # fmt: skip
    with Loom.open(work / "s.loom", readonly=True) as loom:
        for index, node_id in enumerate(new):
            node = loom.node(node_id)
            gen = node.generation
            assert gen is not None and node.author == "model" and 1 <= len(node.tokens) <= 6
            assert (gen.batch_index, gen.batch_size, gen.seed) == (index, 4, 3)
            assert gen.model_sha256 == ""
            assert ".gguf (remote " + llama_cpp_server.url in gen.model
            assert ", llama.cpp b" in gen.model  # the server's build, from /props
        models = {loom.node(h.id).generation.model for h in loom.children(loom.root_id)}  # type: ignore[union-attr]
        assert len(models) == 1  # the URL with credentials records the same identity
    key = llama_cpp_server.key
    assert key not in (work / "s.loom").read_bytes().decode("utf-8", errors="replace")
    for fmt in EXPORTS:
        out = ok(run_loom("export", "s.loom", "--format", fmt, cwd=work, env=env))
        assert key not in out.stdout, fmt


def test_bad_remote_input_is_one_line_and_writes_nothing(
    work: Path, env: dict[str, str], llama_cpp_server: LlamaServer
) -> None:
    url = llama_cpp_server.url
    keyed = dict(env, LOOM_API_KEY=llama_cpp_server.key)
    before = snapshot(work)
    gen = ("generate", "s.loom", "-n", "2", "--max-tokens", "2")
    failed(run_loom(*gen, "--remote", f"http://127.0.0.1:{free_port()}", cwd=work, env=keyed),
           "cannot reach")  # fmt: skip
    wrong = dict(env, LOOM_API_KEY="wrong-key-123")
    line = failed(run_loom(*gen, "--remote", url, cwd=work, env=wrong), "HTTP 401", "API key")
    assert "wrong-key-123" not in line
    failed(run_loom(*gen, "--remote", url, "--remote-model", "gpt-17", cwd=work, env=keyed),
           "does not serve model 'gpt-17'")  # fmt: skip
    failed(run_loom(*gen, "--remote", "ftp://example", cwd=work, env=keyed), "not a server URL")
    # llama-server gives no logprobs for prompt tokens: nothing that scores runs on it
    for cmd in (("label", "s.loom", "--personas", "croissant"), ("census", "s.loom"),
                ("forks", "s.loom"), ("transitions", "s.loom"),
                ("grow", "s.loom", "--policy", "explore", "--budget", "8"),
                ("score", "s.loom")):  # fmt: skip
        failed(run_loom(*cmd, "--remote", url, cwd=work, env=keyed), "no logprobs for prompt")
    assert snapshot(work) == before


class _Malformed(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, body: bytes, kind: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._send(json.dumps({"data": [{"id": "m"}]}).encode())
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/tokenize":
            self._send(json.dumps({"tokens": [5]}).encode())
        elif self.path == "/detokenize":
            self._send(json.dumps({"content": "x"}).encode())
        elif self.path == "/v1/completions":
            self._send(b"data: {not json\n\n", "text/event-stream")
        else:
            self.send_error(404)


@pytest.fixture
def malformed_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Malformed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_malformed_stream_is_one_line_and_writes_nothing(
    work: Path, env: dict[str, str], malformed_server: str
) -> None:
    before = snapshot(work)
    failed(run_loom("generate", "s.loom", "-n", "3", "--max-tokens", "4", "--remote",
                    malformed_server, cwd=work, env=env), "malformed stream")  # fmt: skip
    assert snapshot(work) == before


def _busy(server: LlamaServer) -> bool:
    req = urllib.request.Request(
        server.url + "/slots", headers={"Authorization": f"Bearer {server.key}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return any(s.get("is_processing") for s in json.loads(resp.read()))
    except OSError:
        return False


def test_a_server_killed_mid_generation_keeps_the_partial_branches(
    work: Path, env: dict[str, str], default_gguf: Path, tmp_path: Path
) -> None:
    server = start_llama_server(default_gguf, free_port(), tmp_path / "doomed.log")
    try:
        keyed = dict(env, LOOM_API_KEY=server.key)
        with Loom.open(work / "s.loom", readonly=True) as loom:
            before = len(loom.children(loom.root_id))
        proc = subprocess.Popen(
            [str(LOOM), "generate", "s.loom", "-n", "4", "--max-tokens", "900", "--seed", "5",
             "--remote", server.url],
            cwd=work, env=keyed, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not _busy(server):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        time.sleep(5)  # some tokens of every branch (900 of each take far longer)
        server.kill()
        out, err = proc.communicate(timeout=120)
    finally:
        server.stop()
    assert proc.returncode == 1, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("loom: "), err
    assert "Traceback" not in err and out == ""
    assert "connection lost" in lines[0] or "stream ended early" in lines[0], lines[0]
    assert "partial branch(es)" in lines[0]
    with Loom.open(work / "s.loom", readonly=True) as loom:
        kids = loom.children(loom.root_id)[before:]
        assert 1 <= len(kids) <= 4 and f"kept {len(kids)} partial" in lines[0], lines[0]
        for header in kids:
            node = loom.node(header.id)
            assert 1 <= len(node.tokens) < 900 and node.text == node.tokens.text
            assert node.generation is not None and node.generation.seed == 5
    with Loom.open(work / "s.loom") as loom:  # opens for writing: nothing half-written
        assert loom.root_id is not None
