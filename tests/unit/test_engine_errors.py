"""Loading bad model files fails with a one-line ModelError, and llama.cpp's stderr noise stays
silent. Also: invalid requests on a loaded engine fail before any decoding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.engines import STRING, U32, default_gguf, engine, write_gguf

from loom.engine.engine import Engine
from loom.engine.errors import ModelError
from loom.engine.sampling import SamplerSettings

__all__ = ["default_gguf", "engine"]


def _load_error(path: Path, capfd: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(ModelError) as err:
        Engine.load(path)
    message = str(err.value)
    assert "\n" not in message
    out, errout = capfd.readouterr()
    assert out == "" and errout == ""  # llama.cpp's logging is silenced
    return message


def test_missing_path(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert "model file not found" in _load_error(tmp_path / "missing.gguf", capfd)


def test_random_bytes(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "random.gguf"
    p.write_bytes(os.urandom(1 << 16))
    assert "not a GGUF file (bad magic" in _load_error(p, capfd)


def test_empty_file(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "empty.gguf"
    p.write_bytes(b"")
    assert "not a GGUF file (0 bytes)" in _load_error(p, capfd)


def test_truncated_copy_of_a_real_model(
    default_gguf: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "truncated.gguf"
    with default_gguf.open("rb") as src:
        p.write_bytes(src.read(default_gguf.stat().st_size - 1000))
    assert "truncated GGUF file" in _load_error(p, capfd)


def test_gguf_the_runtime_cannot_load(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    p = write_gguf(
        tmp_path / "alien.gguf",
        {"general.architecture": (STRING, "alien-arch"), "alien-arch.context_length": (U32, 64)},
    )
    message = _load_error(p, capfd)
    assert message.startswith("llama.cpp cannot load alien.gguf")
    assert "unknown model architecture: 'alien-arch'" in message


def test_gguf_missing_hyperparameters(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    p = write_gguf(tmp_path / "hollow.gguf", {"general.architecture": (STRING, "llama")})
    assert "key not found in model: llama." in _load_error(p, capfd)


@pytest.mark.model
def test_invalid_requests(engine: Engine) -> None:
    prompt = engine.tokenize("Hello")
    with pytest.raises(ValueError, match="n must be between 1 and 16"):
        engine.generate(prompt, 17, SamplerSettings(max_tokens=1))
    with pytest.raises(ValueError, match="n must be between"):
        engine.generate(prompt, 0, SamplerSettings(max_tokens=1))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.generate([engine.n_vocab + 5], 1, SamplerSettings(max_tokens=1))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.score(prompt, [[-1]])
    (b,) = engine.generate(
        prompt, 1, SamplerSettings(max_tokens=0), forced=engine.tokenize(" world")
    )
    assert b.finish_reason == "length" and b.text == " world" and b.n_forced == len(b.tokens)


@pytest.mark.model
def test_a_closed_engine_refuses_calls(default_gguf: Path) -> None:
    from loom.engine.errors import EngineError

    eng = Engine.load(default_gguf, n_ctx=256, n_seq_max=2)
    assert eng.tokenize("hi")
    eng.close()
    eng.close()  # twice is fine
    with pytest.raises(EngineError, match="closed"):
        eng.tokenize("hi")
    with pytest.raises(EngineError, match="closed"):
        eng.generate([], 1)
