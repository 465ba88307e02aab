"""GGUF header parsing, model discovery, the sha256 cache and the default model (no weights loaded,
except where the default model is assembled into a temporary cache)."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest
from support.engines import ARRAY, BOOL, F32, STRING, U32, default_gguf, write_gguf

from loom.engine import hashing
from loom.engine.default_model import default_model_path
from loom.engine.errors import ModelError
from loom.engine.gguf import GGUFArray, read_header
from loom.engine.models import discover_models, guess_kind, inspect_model, resolve_model

__all__ = ["default_gguf"]

EXPECTED_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def _tiny(path: Path, name: str = "Tiny", **extra: tuple[int, object]) -> Path:
    meta: dict[str, tuple[int, object]] = {
        "general.architecture": (STRING, "llama"),
        "general.name": (STRING, name),
        "llama.context_length": (U32, 4096),
        "general.alignment": (U32, 32),
        "tokenizer.ggml.tokens": (ARRAY, (STRING, [f"t{i}" for i in range(100)])),
        "tokenizer.ggml.add_bos_token": (BOOL, True),
        "general.some_float": (F32, 0.5),
    }
    meta.update(extra)
    # one F32 tensor of 8 values (32 bytes): the header's size check must account for it
    return write_gguf(path, meta, [("w", (8,), 0, b"\x00" * 32)])


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LOOM_DATA_DIR", str(tmp_path / "data"))


def test_header_of_synthetic_file(tmp_path: Path) -> None:
    h = read_header(_tiny(tmp_path / "tiny.gguf"))
    assert h.version == 3
    assert h.get("general.architecture") == "llama"
    assert h.get("llama.context_length") == 4096
    assert h.get("general.some_float") == pytest.approx(0.5)
    tokens = h.get("tokenizer.ggml.tokens")
    assert isinstance(tokens, GGUFArray) and tokens.length == 100 and tokens.values is None
    assert [t.name for t in h.tensors] == ["w"]
    assert h.required_size == h.file_size


def test_header_of_default_model(default_gguf: Path) -> None:
    info = inspect_model(default_gguf)
    assert info.architecture == "gemma3"
    assert info.n_ctx_train == 32768
    assert info.n_vocab == 262144
    assert info.looks_like == "base"
    assert info.quantization == "Q4_K_M"
    assert info.size_bytes == default_gguf.stat().st_size
    assert read_header(default_gguf).required_size == info.size_bytes


def test_missing_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        inspect_model(tmp_path / "nope.gguf")


def test_random_bytes_are_not_gguf(tmp_path: Path) -> None:
    p = tmp_path / "random.gguf"
    p.write_bytes(os.urandom(4096))
    with pytest.raises(ModelError, match="bad magic") as err:
        inspect_model(p)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("keep", [10, 200, 600])
def test_truncated_header_or_data(tmp_path: Path, keep: int) -> None:
    full = _tiny(tmp_path / "full.gguf").read_bytes()
    assert keep < len(full)
    p = tmp_path / "cut.gguf"
    p.write_bytes(full[:keep])
    with pytest.raises(ModelError, match="truncated"):
        inspect_model(p)


def test_truncated_copy_of_default_model(default_gguf: Path, tmp_path: Path) -> None:
    p = tmp_path / "cut.gguf"
    with default_gguf.open("rb") as src:
        p.write_bytes(src.read(50_000_000))
    with pytest.raises(ModelError, match=r"truncated GGUF file \(50000000 of 253113024 bytes\)"):
        inspect_model(p)


@pytest.mark.parametrize(
    ("name", "template", "kind"),
    [
        ("gemma-3-270m", False, "base"),
        ("gemma-3-1b-it", False, "instruct"),
        ("Qwen2.5-0.5B-Instruct", False, "instruct"),
        ("SmolLM2 135M chat", False, "instruct"),
        ("mystery", True, "instruct"),
        ("Qwen2.5-0.5B base", True, "base"),
        ("base-instruct", False, "unknown"),
    ],
)
def test_base_or_instruct(tmp_path: Path, name: str, template: bool, kind: str) -> None:
    extra: dict[str, tuple[int, object]] = {}
    if template:
        extra["tokenizer.chat_template"] = (STRING, "{{ messages }}")
    h = read_header(_tiny(tmp_path / "m.gguf", name=name, **extra))
    assert guess_kind(h, "m.gguf") == kind


def test_discover_lists_good_and_reports_bad(tmp_path: Path) -> None:
    d = tmp_path / "models"
    (d / "sub").mkdir(parents=True)
    _tiny(d / "a.gguf", name="A")
    _tiny(d / "sub" / "b-it.gguf", name="B")
    (d / "broken.gguf").write_bytes(b"nope" * 10)
    (d / "notes.txt").write_text("not a model")
    errors: list[tuple[Path, ModelError]] = []
    found = discover_models(d, include_default=False, on_error=lambda p, e: errors.append((p, e)))
    assert sorted(m.name for m in found) == ["A", "B"]
    assert {m.name: m.looks_like for m in found} == {"A": "base", "B": "instruct"}
    assert all(m.n_ctx_train == 4096 and m.n_vocab == 100 for m in found)
    assert [p.name for p, _ in errors] == ["broken.gguf"]


def test_resolve_model_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "data" / "models"
    d.mkdir(parents=True)
    p = _tiny(d / "my-model.gguf")
    assert resolve_model("my-model") == p
    assert resolve_model(str(p)) == p
    with pytest.raises(ModelError, match="model not found: other"):
        resolve_model("other")


def test_sha256_is_cached_by_path_size_and_mtime(tmp_path: Path) -> None:
    p = _tiny(tmp_path / "m.gguf")
    first = inspect_model(p).sha256
    assert first == hashing.file_sha256(p)
    assert hashing.cached_sha256(p) == first
    # an unchanged file is not re-read: a poisoned cache entry proves the cache is used
    hashing.remember_sha256(p, "f" * 64)
    assert inspect_model(p).sha256 == "f" * 64
    # changing the file (size and mtime) invalidates the entry
    with p.open("ab") as f:
        f.write(b"\0" * 32)
    os.utime(p, ns=(1, 1))
    assert hashing.cached_sha256(p) is None
    assert inspect_model(p).sha256 == hashing.file_sha256(p) != first


def test_default_model_assembles_once_with_progress(tmp_path: Path, default_gguf: Path) -> None:
    calls: list[tuple[int, int]] = []
    p = default_model_path(lambda done, total: calls.append((done, total)))
    assert p.parent == tmp_path / "cache" / "models"
    assert p.stat().st_size == default_gguf.stat().st_size
    assert calls and calls[-1][0] == calls[-1][1] == p.stat().st_size
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))
    assert hashing.cached_sha256(p) == EXPECTED_SHA256
    assert not list(p.parent.glob("*.part"))
    calls.clear()
    assert default_model_path(lambda d, t: calls.append((d, t))) == p
    assert calls == []  # cached sha256: neither assembled nor re-hashed


def test_default_model_repairs_a_damaged_copy(tmp_path: Path, default_gguf: Path) -> None:
    target = tmp_path / "cache" / "models" / default_gguf.name
    target.parent.mkdir(parents=True)
    shutil.copyfile(default_gguf, target)
    with target.open("r+b") as f:
        f.seek(1000)
        f.write(b"corrupt")
    p = default_model_path()
    assert hashing.file_sha256(p) == hashing.cached_sha256(p)
    assert p.read_bytes()[1000:1007] != b"corrupt"


def test_model_info_to_json(tmp_path: Path) -> None:
    info = inspect_model(_tiny(tmp_path / "tiny.gguf"))
    data = info.to_json()
    assert data["name"] == "Tiny" and data["architecture"] == "llama"
    assert data["n_ctx_train"] == 4096 and data["looks_like"] == "base"
    assert "sha256" not in data
    assert info.to_json(with_sha256=True)["sha256"] == hashing.file_sha256(info.path)
