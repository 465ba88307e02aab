"""sha256 of model files, remembered in a small JSON file keyed by path, size and mtime.

Hashing a 250 MB model takes about a second; listing models or opening a loom must not pay that
every run. An entry is trusted only while the file's size and mtime are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loom.paths import cache_dir

_CHUNK = 1 << 20
_lock = threading.Lock()

ProgressCallback = Callable[[int, int], None]


def cache_file() -> Path:
    return cache_dir() / "sha256.json"


def file_sha256(path: Path, progress: ProgressCallback | None = None) -> str:
    """Hash the file's bytes (no cache)."""
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def _key(path: Path) -> tuple[str, int, int]:
    resolved = path.resolve()
    st = resolved.stat()
    return str(resolved), st.st_size, st.st_mtime_ns


def _load() -> dict[str, Any]:
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_sha256(path: Path) -> str | None:
    """The remembered hash if the file is unchanged since it was recorded, else None."""
    name, size, mtime = _key(path)
    with _lock:
        entry = _load().get(name)
    if (
        isinstance(entry, dict)
        and entry.get("size") == size
        and entry.get("mtime_ns") == mtime
        and isinstance(entry.get("sha256"), str)
    ):
        return str(entry["sha256"])
    return None


def remember_sha256(path: Path, sha256: str) -> None:
    """Record a hash for the file as it is now (atomic replace: readers never see half a file)."""
    name, size, mtime = _key(path)
    target = cache_file()
    with _lock:
        data = _load()
        data[name] = {"size": size, "mtime_ns": mtime, "sha256": sha256}
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            tmp.replace(target)
        except OSError:
            pass  # a read-only cache only costs a re-hash next time


def sha256_of(path: Path, progress: ProgressCallback | None = None) -> str:
    """The file's sha256: from the cache if the file is unchanged, else computed and remembered."""
    cached = cached_sha256(path)
    if cached is not None:
        return cached
    digest = file_sha256(path, progress)
    remember_sha256(path, digest)
    return digest
